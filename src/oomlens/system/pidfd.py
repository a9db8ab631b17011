"""Kills that cannot land on a reused pid: a pidfd opened at scan time, signals sent
through it, the exit awaited on it, and the victim's memory released through it.

A pidfd (kernel/pid.c: pidfd_open(); fs/pidfs.c on recent kernels) holds the struct
pid of one process. The number can be given to another process once the first is
reaped, the struct pid never: pidfd_send_signal() (kernel/signal.c) then finds no
task and fails with ESRCH, so the stranger is never signalled.

The pidfd is only as good as the moment it was opened. `Victim.open()` therefore
checks, *after* pidfd_open(), that `/proc/<pid>/stat` still shows the start time the
scan saw; a difference means the number was reused before we had the fd (PidReused).
The check is in USER_HZ ticks (10 ms), and an immediate reuse usually starts on the
same tick (measured in system/oomadj.py: 19 of 20), so a reuse *between the scan's
read of `stat` and pidfd_open()* can pass unseen when both fall in one tick. Open the
Victim right after the scan read the process, not when the kill is decided, and that
gap is microseconds against the seconds of the grace period it protects.

Exit: the pidfd polls readable (POLLIN) once the process has exited, zombie or
reaped (kernel/pid.c, fs/pidfs.c: pidfd_poll()), so a wait needs no polling loop.

Memory: process_mrelease(2) (mm/oom_kill.c: SYSCALL_DEFINE2(process_mrelease), Linux
5.15) reaps a dying process's address space from our context, as the kernel's
oom_reaper does, instead of waiting for the victim to run its own exit_mmap(). It
only accepts a process that is already dying (task_will_free_mem(): a SIGKILL sets
SIGNAL_GROUP_EXIT at send time, so right after our SIGKILL is fine); a live one is
EINVAL, one without an mm left (exited, zombie, reaped) ESRCH, and one whose memory
the kernel already released (MMF_OOM_SKIP) a success that does nothing. Measured
here (6.18, 2 cores), SIGKILL to 56 of 64 MiB uncharged from the victim's memcg:
- idle machine: median 5.4 ms by the victim's own exit, 4.5 ms with the call, which
  raced the exit and lost half the time (ESRCH: no mm left, nothing to do);
- victim at nice 19 sharing its CPU with two nice -20 busy loops: median 48.7 s
  (max 66 s) by its own exit, 5.3 ms with the call (10 of 10 reaped by it);
- victim frozen (v1 freezer): never, until thawed; 4.6 ms with the call.
So the call is what gives memory back at once when the victim cannot run soon: a
process stuck, frozen, or losing the CPU to others, as under heavy pressure.
"""

from __future__ import annotations

import ctypes
import errno
import functools
import math
import os
import select
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass

from oomlens.errors import OomlensError, ProcessGone, Unsupported, UsageError
from oomlens.system.oomadj import PidReused
from oomlens.system.procfs import parse_stat, read_record, translate_os_error

# __NR_process_mrelease: 448 in arch/x86/entry/syscalls/syscall_64.tbl and in
# include/uapi/asm-generic/unistd.h (arm64's table); every architecture has used one
# shared number for new system calls since pidfd_send_signal (424).
SYS_PROCESS_MRELEASE = {"x86_64": 448, "aarch64": 448}
# pidfd_open() fails for a number that names no process (ESRCH), or one that names
# only a thread of another process: ENOENT on 6.18 (measured), EINVAL on older
# kernels (pidfd_create(): !pid_has_task(pid, PIDTYPE_TGID)). For a pid from a scan
# of processes each means ours is gone.
_OPEN_GONE = frozenset({errno.ESRCH, errno.ENOENT, errno.EINVAL})
# process_mrelease(): nothing (left) to release, see the module doc.
_NOTHING_TO_RELEASE = frozenset({errno.ESRCH, errno.EINVAL})


@functools.cache
def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def _process_mrelease(pidfd: int) -> int:
    """process_mrelease(pidfd, 0): 0, or the errno of its failure."""
    machine = os.uname().machine
    number = SYS_PROCESS_MRELEASE.get(machine)
    if number is None:
        return errno.ENOSYS
    result = _libc().syscall(ctypes.c_long(number), ctypes.c_int(pidfd), ctypes.c_uint(0))
    return 0 if result == 0 else ctypes.get_errno()


class Victim:
    """One process, held by a pidfd opened at scan time (see the module doc). A
    context manager; `close()` drops the fd (the process is not touched)."""

    __slots__ = ("_fd", "comm", "pid", "start_time_ticks")

    def __init__(self, fd: int, pid: int, comm: str, start_time_ticks: int) -> None:
        self._fd = fd
        self.pid = pid
        self.comm = comm
        self.start_time_ticks = start_time_ticks

    @classmethod
    def open(cls, pid: int, start_time_ticks: int, proc_root: str = "/proc") -> Victim:
        """Hold the process the scan saw as `pid`, started at `start_time_ticks`.
        Raises ProcessGone (it exited, or exited and is a zombie), PidReused (the
        number names another process now), Unsupported (no pidfd_open: Linux < 5.3)."""
        if pid <= 0:
            raise UsageError(f"not a process id: {pid}")
        try:
            fd = os.pidfd_open(pid)
        except OSError as err:
            if err.errno in _OPEN_GONE:
                raise ProcessGone(pid) from err
            if err.errno == errno.ENOSYS:
                raise Unsupported("pidfd_open() is missing: a kernel before 5.3") from err
            raise _failed(err, "pidfd_open", pid) from err
        try:
            victim = cls(fd, pid, *_identity(pid, proc_root))
        except BaseException:
            os.close(fd)
            raise
        if victim.start_time_ticks != start_time_ticks:
            victim.close()
            raise PidReused(pid, victim.comm, victim.start_time_ticks, start_time_ticks)
        if victim.has_exited():
            victim.close()
            raise ProcessGone(pid, victim.comm)
        return victim

    def __enter__(self) -> Victim:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Victim(pid={self.pid}, comm={self.comm!r}, start={self.start_time_ticks})"

    def has_exited(self) -> bool:
        """Whether the process has exited (zombie or reaped)."""
        return self.wait_exit(0)

    def signal(self, signo: int) -> bool:
        """Send `signo` to this very process; False (and nothing sent) once it has
        exited, whatever process has its number now. Raises AccessDenied (EPERM)."""
        if self.has_exited():
            return False  # a zombie would accept the signal, and it means nothing
        try:
            signal.pidfd_send_signal(self._fd, signo)
        except ProcessLookupError:
            return False  # reaped since the check: the struct pid has no task
        except OSError as err:
            raise _failed(err, f"signal {signo}", self.pid) from err
        return True

    def wait_exit(self, timeout: float) -> bool:
        """Whether the process exits within `timeout` seconds (0: just look)."""
        poller = select.poll()
        poller.register(self._fd, select.POLLIN)
        return bool(poller.poll(max(0, math.ceil(timeout * 1000))))

    def release_memory(self) -> bool:
        """process_mrelease(): reap the address space of this process, which must be
        dying (send SIGKILL first). True when the kernel released it (or had already);
        False with no error when there is nothing it may release (ESRCH: it has no mm
        left; EINVAL: it is not dying). Raises Unsupported (no such system call:
        Linux < 5.15 or an unknown architecture), OomlensError otherwise (EAGAIN:
        part of the address space could not be reaped; the exit frees it anyway)."""
        code = _process_mrelease(self._fd)
        if code == 0:
            return True
        if code in _NOTHING_TO_RELEASE:
            return False
        if code == errno.ENOSYS:
            raise Unsupported("process_mrelease() is missing: a kernel before 5.15, or "
                              f"an architecture without a known number ({os.uname().machine})")
        err = OSError(code, os.strerror(code))
        raise _failed(err, "process_mrelease", self.pid) from err

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def _failed(err: OSError, call: str, pid: int) -> OomlensError:
    """The translator's error (AccessDenied for EPERM/EACCES), or one that names the
    call where it has nothing better than "cannot read"."""
    error = translate_os_error(err, f"pid {pid} ({call})", pid)
    if type(error) is OomlensError:
        return OomlensError(f"{call} of pid {pid} failed: {err.strerror}")
    return error


def _identity(pid: int, proc_root: str) -> tuple[str, int]:
    """(comm, start time in ticks) of `pid` from `/proc/<pid>/stat`."""
    path = f"{proc_root}/{pid}/stat"
    try:
        stat = parse_stat(read_record(path).decode("utf-8", "replace"))
    except OSError as err:
        raise translate_os_error(err, path, pid) from err
    return stat.comm, stat.start_time_ticks


@dataclass(frozen=True, slots=True)
class KillOutcome:
    """What `terminate()` did. At most one of `gone_before` (it had exited before
    SIGTERM), `exited_on_term` (it exited within the grace, or at its very end) and
    `killed` (SIGKILL sent) is set; none is when memory recovered during the grace
    and the process was left running. `released`: process_mrelease() gave its memory
    back; `release_error` says why it could not (the kill itself stands).
    `seconds`: from SIGTERM to the last step taken."""

    exited_on_term: bool
    killed: bool
    released: bool
    gone_before: bool
    seconds: float
    release_error: str | None = None


def terminate(victim: Victim, grace: float, *, still_needed: Callable[[], bool] = lambda: True,
              clock: Callable[[], float] = time.monotonic) -> KillOutcome:
    """SIGTERM, up to `grace` seconds for the exit, then -- only if `still_needed()`
    says the kill is still needed -- SIGKILL and process_mrelease().

    The wait is one poll() on the pidfd, which wakes at the exit. `still_needed()` is
    asked once, when the grace ends: memory that recovered during the grace and fell
    again must still end in SIGKILL, so no earlier answer may decide it."""
    start = clock()
    if not victim.signal(signal.SIGTERM):
        return KillOutcome(False, False, False, True, clock() - start)
    if victim.wait_exit(grace):
        return KillOutcome(True, False, False, False, clock() - start)
    if not still_needed():
        return KillOutcome(False, False, False, False, clock() - start)
    if not victim.signal(signal.SIGKILL):
        return KillOutcome(True, False, False, False, clock() - start)
    try:
        released, error = victim.release_memory(), None
    except OomlensError as err:
        released, error = False, str(err)
    return KillOutcome(False, True, released, False, clock() - start, error)
