"""The kernel's messages from the systemd journal, for `oomlens watch` where
`/dev/kmsg` cannot be read (a container that sees the host's journal).

`journalctl -o json` gives each message with `_SOURCE_MONOTONIC_TIMESTAMP` (the
kernel's own timestamp, µs) and `_TRANSPORT=kernel`; there is no kernel sequence
number, so events from the journal are keyed by that timestamp. The backfill is
one `journalctl -k -b` run; the follower then starts after its last cursor, so
nothing falls between them and nothing is read twice.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Sequence
from typing import Any

from oomlens.errors import OomlensError, Unsupported
from oomlens.report.model import LogLine

SOURCE = "journal"


def journalctl_available() -> bool:
    return shutil.which("journalctl") is not None


def journal_lines(entry: dict[str, Any]) -> list[LogLine]:
    """One `journalctl -o json` entry as parser lines: one per line of its MESSAGE
    (a kernel message may hold several: mm/show_mem.c prints Mem-Info's counters
    in one printk), none without a message. MESSAGE is a list of byte values when
    it is not valid UTF-8."""
    message = entry.get("MESSAGE")
    if isinstance(message, list):
        message = bytes(message).decode("utf-8", "replace")
    if not isinstance(message, str):
        return []
    stamp = entry.get("_SOURCE_MONOTONIC_TIMESTAMP") or entry.get("__MONOTONIC_TIMESTAMP")
    monotonic = int(stamp) / 1e6 if isinstance(stamp, str) and stamp.isdigit() else None
    kernel = entry.get("_TRANSPORT") == "kernel"
    return [LogLine(text, SOURCE, 0, "", monotonic, None, None, kernel)
            for text in message.split("\n")]


class JournalLog:
    """A LogReader (daemons/watch.py) over `journalctl -k -f -o json`."""

    source = SOURCE

    def __init__(self, *, backfill: bool, command: Sequence[str] = ("journalctl",)) -> None:
        self.lost = 0
        self.overruns = 0
        self._carry = b""
        self._pending: list[LogLine] = []
        base = [*command, "-k", "-b", "-o", "json", "--no-pager"]
        cursor = None
        if backfill:
            done = _run(base)
            if done.returncode != 0:
                raise OomlensError(_failure(done.returncode, done.stderr))
            entries = _entries(done.stdout.splitlines())
            self._pending = [line for e in entries for line in journal_lines(e)]
            cursor = next((e["__CURSOR"] for e in reversed(entries) if "__CURSOR" in e), None)
        after = ["--after-cursor", cursor] if cursor else ["-n", "0"]
        try:
            self._process = subprocess.Popen([*base, "-f", *after], stdout=subprocess.PIPE,
                                             stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
        except OSError as err:
            raise Unsupported(f"cannot run {command[0]}: {err.strerror}") from err
        assert self._process.stdout is not None
        self._fd = self._process.stdout.fileno()
        os.set_blocking(self._fd, False)

    def fileno(self) -> int:
        return self._fd

    def read_lines(self) -> list[LogLine]:
        lines, self._pending = self._pending, []
        while True:
            try:
                data = os.read(self._fd, 65536)
            except BlockingIOError:
                break
            if not data:  # journalctl ended: hand on what it said, then say why
                if lines:
                    return lines
                status = self._process.wait()
                assert self._process.stderr is not None
                raise OomlensError(_failure(status, self._process.stderr.read()))
            chunk = self._carry + data
            complete, _, self._carry = chunk.rpartition(b"\n")
            lines += [line for e in _entries(complete.split(b"\n"))
                      for line in journal_lines(e)]
        return lines

    def close(self) -> None:
        if self._process.poll() is None:
            self._process.terminate()
            self._process.wait()
        for stream in (self._process.stdout, self._process.stderr):
            if stream is not None:
                stream.close()


def _run(argv: list[str]) -> subprocess.CompletedProcess[bytes]:
    try:
        return subprocess.run(argv, capture_output=True, check=False)
    except OSError as err:
        raise Unsupported(f"cannot run {argv[0]}: {err.strerror}") from err


def _entries(raw_lines: Sequence[bytes]) -> list[dict[str, Any]]:
    entries = []
    for raw in raw_lines:
        try:
            entry = json.loads(raw)
        except ValueError:
            continue
        if isinstance(entry, dict):
            entries.append(entry)
    return entries


def _failure(status: int, stderr: bytes) -> str:
    first = stderr.decode("utf-8", "replace").strip().splitlines()[:1]
    return f"journalctl exited with status {status}" + (f": {first[0]}" if first else "")
