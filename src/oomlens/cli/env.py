"""The environment a command runs in: streams, terminal facts and the proc root.

Built once in `main()` and passed down, so tests run commands in-process with
captured streams and a fake /proc.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Mapping
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
    CANNOT_EXECUTE = 126  # `oomlens run`: the command is not executable (as env(1))
    COMMAND_NOT_FOUND = 127  # `oomlens run`: no such command (as env(1))
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
    # Where the change journal lives (`--state-dir` overrides); see default_state_dir.
    state_dir: str = "/var/lib/oomlens"
    # Who runs oomlens, as the journal records it ("alice via sudo (uid 0)").
    actor: str = "root (uid 0)"
    # Where `systemd-dropin` writes (`OOMLENS_SYSTEMD_DIR`, for a chroot or a test).
    systemd_dir: str = "/etc/systemd/system"
    # Where `oomlens apply` persists sysctls (`OOMLENS_SYSCTL_DIR`; `--sysctl-dir`).
    sysctl_dir: str = "/etc/sysctl.d"
    # Where `oomlens doctor` reads /sys (`OOMLENS_SYS_ROOT`: a fake tree, a host's /sys).
    sys_root: str = "/sys"

    @classmethod
    def from_process(cls) -> Env:
        tty = sys.stdout.isatty()
        colour = tty and "NO_COLOR" not in os.environ and os.environ.get("TERM") != "dumb"
        return cls(sys.stdout, sys.stderr, tty, colour, shutil.get_terminal_size().columns,
                   os.environ.get("OOMLENS_PROC_ROOT", "/proc"),
                   os.environ.get("OOMLENS_LOG_DIR", "/var/log"),
                   os.environ.get("OOMLENS_KMSG", "/dev/kmsg"),
                   sys.stdin.buffer,
                   default_state_dir(os.environ, os.geteuid()),
                   actor(os.environ, os.getuid()),
                   os.environ.get("OOMLENS_SYSTEMD_DIR", "/etc/systemd/system"),
                   os.environ.get("OOMLENS_SYSCTL_DIR", "/etc/sysctl.d"),
                   os.environ.get("OOMLENS_SYS_ROOT", "/sys"))


def default_state_dir(environ: Mapping[str, str], euid: int) -> str:
    """`$OOMLENS_STATE_DIR`, else `/var/lib/oomlens` for root, else
    `$XDG_STATE_HOME/oomlens` (`~/.local/state/oomlens` by the XDG default)."""
    if environ.get("OOMLENS_STATE_DIR"):
        return environ["OOMLENS_STATE_DIR"]
    if euid == 0:
        return "/var/lib/oomlens"
    home = environ.get("HOME") or os.path.expanduser("~")
    xdg = environ.get("XDG_STATE_HOME") or os.path.join(home, ".local", "state")
    return os.path.join(xdg, "oomlens")


def actor(environ: Mapping[str, str], uid: int) -> str:
    """The person behind a change: the login name, and who sudo'ed."""
    import pwd

    try:
        name = pwd.getpwuid(uid).pw_name
    except KeyError:
        name = str(uid)
    sudo_user = environ.get("SUDO_USER")
    if sudo_user and sudo_user != name:
        return f"{sudo_user} via sudo ({name}, uid {uid})"
    return f"{name} (uid {uid})"
