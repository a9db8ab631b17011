"""Helpers for the tests that run inside the kernel lab guest (never on the host).

What is lab-specific lives here; the rest is the project's own: sandbox memcgs and
hogs of known size are `oomlens.system.sandbox.SandboxMemcg` (the `sandbox` fixture
of tests/conftest.py, with the guest's cgroup v2 mount), the kernel log is
`oomlens.system.kmsg`, and the OOM report is read by `oomlens.report`
(tests/fixtures/kernelreport.py).

- `in_lab()`: both marks of the guest are there (OOMLENS_IN_LAB=1 from the guest's
  run script and `oomlens_lab=1` on the guest kernel's command line), so nothing
  here can run on a real machine by accident;
- `await_oom` / `OomCapture`: the kernel log records of one OOM kill, also of a
  global one that no sandbox triggered (SysRq-f, a real out-of-memory);
- swap on/off (zram, set up by the guest's /init) through libc.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from kernelreport import event_of_kill, report_tasks

from oomlens.kernel.task import Task
from oomlens.system.kmsg import KilledProcess, KmsgReader, KmsgRecord, parse_killed_process
from oomlens.system.meminfo import read_meminfo
from oomlens.system.sandbox import OomKill, SandboxMemcg

# Named like tests/conftest.py's sandboxes, so its end-of-session check covers them.
MEMCG_PREFIX = "oomlens-test-lab-"
ZRAM = b"/dev/zram0"
CAP_SYS_RESOURCE = 24
WAIT_S = 60.0

Record = Callable[[str, object], None]  # pytest's record_property
SandboxFactory = Callable[..., SandboxMemcg]  # the `sandbox` fixture (guest/conftest.py)

_LIBC = ctypes.CDLL(None, use_errno=True)


def in_lab() -> bool:
    if os.environ.get("OOMLENS_IN_LAB") != "1":
        return False
    try:
        return "oomlens_lab=1" in Path("/proc/cmdline").read_text().split()
    except OSError:
        return False


def wait_for(condition: Callable[[], bool], what: str, timeout: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.01)


# -- swap -----------------------------------------------------------------------------


def swap_total_kib() -> int:
    return read_meminfo().swap_total_kib


def set_swap(on: bool) -> None:
    """swapon/swapoff the guest's zram device (formatted by /init)."""
    if (swap_total_kib() > 0) == on:
        return
    rc = _LIBC.swapon(ZRAM, 0) if on else _LIBC.swapoff(ZRAM)
    if rc != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{'swapon' if on else 'swapoff'} {ZRAM.decode()}: "
                      f"{os.strerror(err)}")


@contextlib.contextmanager
def swap_state(on: bool) -> Iterator[None]:
    """Swap on (or off) for the block; the previous state afterwards."""
    before = swap_total_kib() > 0
    set_swap(on)
    try:
        yield
    finally:
        set_swap(before)


# -- processes ------------------------------------------------------------------------


def stop(process: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        process.kill()
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.communicate(timeout=WAIT_S)


def died_of_sigkill(process: subprocess.Popen[bytes], timeout: float = WAIT_S) -> bool:
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        return False
    return process.returncode == -signal.SIGKILL


def read_sysctl(name: str) -> int:
    return int(Path("/proc/sys", name.replace(".", "/")).read_text())


# -- the kernel log of an OOM ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class OomCapture:
    """The records of one OOM kill, from `invoked oom-killer` to `Killed process`."""

    records: tuple[KmsgRecord, ...]
    killed: KilledProcess
    everything: tuple[KmsgRecord, ...] = ()  # all records read, from before the header

    @classmethod
    def of(cls, records: Iterable[KmsgRecord], killed: KilledProcess) -> OomCapture:
        """From the records read up to the kill: those from its last header on."""
        everything = tuple(records)
        starts = [i for i, r in enumerate(everything) if "invoked oom-killer" in r.message]
        return cls(everything[starts[-1] if starts else 0:], killed, everything)

    @classmethod
    def of_kill(cls, kill: OomKill) -> OomCapture:
        """From what `SandboxMemcg.trigger_oom()` saw."""
        return cls.of(kill.records, kill.killed)

    @property
    def messages(self) -> list[str]:
        return [r.message for r in self.records]

    def line(self, prefix: str) -> str:
        for message in self.messages:
            if message.startswith(prefix):
                return message
        raise AssertionError(f"no {prefix!r} line in the OOM report")

    def tasks(self) -> list[Task]:
        """The kernel's task table for this OOM, as oomlens.report reads it
        (tests/fixtures/kernelreport.py)."""
        event = event_of_kill(self.records, self.killed.pid)
        if event is None or not event.task_columns:
            raise AssertionError("no 'Tasks state' table in the OOM report")
        return report_tasks(event)


@contextlib.contextmanager
def kmsg_from_now() -> Iterator[KmsgReader]:
    with KmsgReader() as reader:
        reader.follow_from_end()
        yield reader


def await_oom(reader: KmsgReader, is_ours: Callable[[KilledProcess], bool],
              timeout: float = WAIT_S) -> OomCapture:
    """Read the log until a `Killed process` line that `is_ours`; return the records
    of that OOM (from its `invoked oom-killer` header on)."""
    records: list[KmsgRecord] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for record in reader.read_available():
            records.append(record)
            killed = parse_killed_process(record.message)
            if killed is not None and is_ours(killed):
                return OomCapture.of(records, killed)
        time.sleep(0.01)
    tail = "\n".join(r.message for r in records[-20:])
    raise TimeoutError(f"no matching 'Killed process' line within {timeout} s; log tail:\n{tail}")
