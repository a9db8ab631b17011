"""Reads and writes of `oom_score_adj` that cannot land on the wrong process.

A process is (pid, start time in clock ticks since boot, boot id). Between a scan
and a write the pid can be reused, so a handle opens the `/proc/<pid>` directory
once, checks the start time in `stat` through that fd, and does every later read
and write relative to the same fd. The directory's inode holds the struct pid it
was created for (fs/proc/base.c: proc_pid_make_inode(), get_proc_task()): once
that process is reaped, every openat() through the fd fails -- with ESRCH on 6.18
(measured: `stat` and `oom_score_adj` both) -- even after the number was given to
another process (measured: with the pid reused via ns_last_pid, the old fd still
refuses and the new process keeps its value). A zombie that was not reaped yet
still accepts the write, which is harmless.

The start-time check at open() is weaker than the fd: start time counts in
USER_HZ ticks (10 ms), and a pid reused at once usually starts on the same tick
(measured: 19 of 20 immediate reuses here). It catches a reuse between an earlier
scan and open() only when the two processes started on different ticks; to be
sure across that gap, open the handle at scan time and keep it.

The kernel's rule (fs/proc/base.c: __set_oom_adj(), v6.18): a value below the
process's `oom_score_adj_min` (0 unless a privileged writer set a floor) needs
CAP_SYS_RESOURCE, else EACCES; a writer that has it also sets the floor. Raising
the value, or lowering it down to the floor, needs no capability. The change also
applies to every other process that shares the mm (CLONE_VM without CLONE_THREAD:
MMF_MULTIPROCESS), except vfork children, which keep their own value.
"""

from __future__ import annotations

import errno
import os

from oomlens.errors import AccessDenied, OomlensError, ProcessGone, UsageError
from oomlens.system.procfs import (
    PF_KTHREAD,
    has_cap,
    parse_stat,
    parse_status,
    read_bytes,
    read_record,
    translate_os_error,
)

CAP_SYS_RESOURCE = 24  # include/uapi/linux/capability.h
KCMP_VM = 1  # include/uapi/linux/kcmp.h: enum kcmp_type
_SYS_KCMP = {"x86_64": 312, "aarch64": 272}
_LOWER_NEEDS_CAP = (
    "lowering oom_score_adj below the process's oom_score_adj_min needs "
    "CAP_SYS_RESOURCE, which this process lacks (root inside a container or sandbox "
    "may lack it)"
)
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC


def boot_id(proc_root: str = "/proc") -> str:
    """This boot's random id (drivers/char/random.c): with pid and start time it
    names a process across reboots, so a journal never undoes onto a stranger."""
    path = f"{proc_root}/sys/kernel/random/boot_id"
    try:
        return read_record(path).decode("ascii").strip()
    except OSError as err:
        raise translate_os_error(err, path) from err


def has_cap_sys_resource(proc_root: str = "/proc") -> bool:
    """Whether this process may lower oom_score_adj below a floor (CapEff bit 24)."""
    path = f"{proc_root}/self/status"
    try:
        status = parse_status(read_record(path))
    except OSError as err:
        raise translate_os_error(err, path) from err
    return has_cap(status.cap_eff, CAP_SYS_RESOURCE)


class PidReused(ProcessGone):
    """The pid now names another process than the one that was planned for."""

    def __init__(self, pid: int, comm: str | None, start_time_ticks: int,
                 expected_ticks: int) -> None:
        super().__init__(pid, comm)
        self.start_time_ticks = start_time_ticks
        self.expected_ticks = expected_ticks
        self.args = (f"pid {pid} now belongs to another process (started at "
                     f"{start_time_ticks}, expected {expected_ticks})",)


class ProcessHandle:
    """One process, pinned by an open `/proc/<pid>` directory (see the module doc).
    Use as a context manager, or call close()."""

    __slots__ = ("_fd", "comm", "is_kthread", "path", "pid", "start_time_ticks")

    def __init__(self, fd: int, pid: int, path: str, comm: str, start_time_ticks: int,
                 is_kthread: bool) -> None:
        self._fd = fd
        self.pid = pid
        self.path = path
        self.comm = comm
        self.start_time_ticks = start_time_ticks
        self.is_kthread = is_kthread

    @classmethod
    def open(cls, pid: int, proc_root: str = "/proc",
             start_time_ticks: int | None = None) -> ProcessHandle:
        """Open `pid`; with `start_time_ticks` (from an earlier scan) refuse a
        process that started at another time. Raises ProcessGone or PidReused."""
        path = f"{proc_root}/{pid}"
        try:
            fd = os.open(path, _DIR_FLAGS)
        except OSError as err:
            raise translate_os_error(err, path, pid) from err
        try:
            stat = parse_stat(_read_once(fd, "stat").decode("utf-8", "replace"))
        except OSError as err:
            os.close(fd)
            raise translate_os_error(err, f"{path}/stat", pid) from err
        except BaseException:
            os.close(fd)
            raise
        if start_time_ticks is not None and stat.start_time_ticks != start_time_ticks:
            os.close(fd)
            raise PidReused(pid, stat.comm, stat.start_time_ticks, start_time_ticks)
        return cls(fd, pid, path, stat.comm, stat.start_time_ticks,
                   bool(stat.flags & PF_KTHREAD))

    def __enter__(self) -> ProcessHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"ProcessHandle(pid={self.pid}, comm={self.comm!r}, start={self.start_time_ticks})"

    def read(self, name: str) -> bytes:
        """The whole file `name` of this process (`status`, `cgroup`, `cmdline`),
        read until EOF through the directory. Raises ProcessGone, AccessDenied."""
        try:
            return read_bytes(name, dir_fd=self._fd)
        except OSError as err:
            raise self._read_error(err, f"{self.path}/{name}") from err

    def readlink(self, name: str) -> str | None:
        """The target of the link `name` (`exe`, `cwd`); None when there is none
        (kernel threads, zombies) or the kernel refuses it (another user's process
        without CAP_SYS_PTRACE). Raises ProcessGone once the process was reaped."""
        try:
            return os.readlink(name, dir_fd=self._fd)
        except OSError as err:
            if err.errno == errno.ESRCH:
                raise ProcessGone(self.pid, self.comm) from err
            return None

    def oom_score_adj(self) -> int:
        """The current value (-1000..1000). Raises ProcessGone once it was reaped."""
        try:
            return int(_read_once(self._fd, "oom_score_adj"))
        except OSError as err:
            raise self._read_error(err, f"{self.path}/oom_score_adj") from err

    def set_oom_score_adj(self, value: int) -> None:
        """Write `value` to this very process (and, by the kernel, to the processes
        sharing its mm). Raises AccessDenied (EACCES: below the floor without
        CAP_SYS_RESOURCE), ProcessGone, UsageError (out of -1000..1000)."""
        path = f"{self.path}/oom_score_adj"
        try:
            fd = os.open("oom_score_adj", os.O_WRONLY | os.O_CLOEXEC, dir_fd=self._fd)
            try:
                os.write(fd, str(value).encode("ascii"))
            finally:
                os.close(fd)
        except OSError as err:
            raise self._write_error(err, path, value) from err

    def _read_error(self, err: OSError, path: str) -> OomlensError:
        error = translate_os_error(err, path, self.pid)
        return ProcessGone(self.pid, self.comm) if isinstance(error, ProcessGone) else error

    def _write_error(self, err: OSError, path: str, value: int) -> OomlensError:
        if err.errno == errno.EINVAL:
            return UsageError(f"oom_score_adj {value} is out of range (-1000..1000)")
        error = self._read_error(err, path)
        if isinstance(error, AccessDenied) and err.errno == errno.EACCES:
            return AccessDenied(path, self.pid, hint=_LOWER_NEEDS_CAP)
        return error

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def _read_once(dir_fd: int, name: str) -> bytes:
    """One read() of a file the kernel hands out whole on the first read (`stat`
    via single_open(), `oom_score_adj` via simple_read_from_buffer(); fs/proc/base.c)."""
    fd = os.open(name, os.O_RDONLY | os.O_CLOEXEC, dir_fd=dir_fd)
    try:
        return os.read(fd, 4096)
    finally:
        os.close(fd)


def shares_mm(pid_a: int, pid_b: int) -> bool | None:
    """Whether two processes share one address space (kernel/kcmp.c, KCMP_VM). Then
    a write to one's oom_score_adj changes the other's too. None when the kernel
    cannot say: no kcmp on this architecture or kernel (CONFIG_KCMP), not allowed
    (PTRACE_MODE_READ on both), or a process is gone."""
    number = _SYS_KCMP.get(os.uname().machine)
    if number is None:
        return None
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    result = libc.syscall(ctypes.c_long(number), ctypes.c_long(pid_a), ctypes.c_long(pid_b),
                          ctypes.c_long(KCMP_VM), ctypes.c_ulong(0), ctypes.c_ulong(0))
    if result < 0:
        return None
    return int(result) == 0  # 1 and 2 order different mms, 3 is "not equal"
