"""The environment a command runs in: streams, terminal facts and the proc root.

Built once in `main()` and passed down, so tests run commands in-process with
captured streams and a fake /proc.
"""

from __future__ import annotations

import os
import shutil
import sys
from dataclasses import dataclass
from enum import IntEnum
from typing import BinaryIO, TextIO


class ExitStatus(IntEnum):
    """Exit codes (README, `--help`): documented and stable."""

    OK = 0
    PROBLEM = 1  # a check found something (status warnings with --check)
    USAGE = 2  # bad option, unknown pid or cgroup, bad input
    PERMISSION = 3  # the kernel refused (EACCES/EPERM)
    UNSUPPORTED = 4  # this system lacks what the command needs
    INTERRUPTED = 130


@dataclass(frozen=True)
class Env:
    stdout: TextIO
    stderr: TextIO
    stdout_isatty: bool
    colour: bool
    columns: int
    proc_root: str = "/proc"
    # Where `oomlens report` looks without arguments (a host's logs mounted into a
    # container: OOMLENS_LOG_DIR=/host/var/log).
    log_dir: str = "/var/log"
    kmsg: str = "/dev/kmsg"
    stdin: BinaryIO | None = None

    @classmethod
    def from_process(cls) -> Env:
        tty = sys.stdout.isatty()
        colour = tty and "NO_COLOR" not in os.environ and os.environ.get("TERM") != "dumb"
        return cls(sys.stdout, sys.stderr, tty, colour, shutil.get_terminal_size().columns,
                   os.environ.get("OOMLENS_PROC_ROOT", "/proc"),
                   os.environ.get("OOMLENS_LOG_DIR", "/var/log"),
                   os.environ.get("OOMLENS_KMSG", "/dev/kmsg"),
                   sys.stdin.buffer)
