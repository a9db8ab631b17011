"""Wake-ups for OOM kills in memory cgroups, so `oomlens watch` sees a container's
kill when it happens, also where the kernel log is unreadable (a container without
/dev/kmsg) or has wrapped.

The `oom_kill` counter is the truth; a notification only says "read it again".
mm/oom_kill.c: __oom_kill_process() counts every kill with
memcg_memory_event_mm(victim's mm, MEMCG_OOM_KILL); the counter exists since 4.13
(commit 8e675f7af507, "mm/oom_kill: count global and memory cgroup oom kills"). The
counter's file, what wakes us and what the counter counts differ per version:

cgroup v2 (`memory.events`): memcg_memory_event() (include/linux/memcontrol.h;
__memcg_memory_event() in mm/memcontrol.c on recent kernels) increments the counter
and *then* calls cgroup_file_notify() on the file, which kernfs delivers as inotify
IN_MODIFY, so the count has moved when we wake. kernel/cgroup/cgroup.c:
cgroup_file_notify() sends at most one notification per file per 10 ms
(CGROUP_FILE_NOTIFY_MIN_INTV) and defers the rest with a timer: late, never lost.
The counter is hierarchical (the loop walks up to the root unless the hierarchy is
mounted with memory_localevents): a kill in a child moves its ancestors' counters.
Removal: kernfs removes a cgroup's files without a word to the inotify watches on
them (measured on 6.18: after rmdir, watches on the files and on the directory get
nothing); only the parent directory sees IN_DELETE with the name (fs/namei.c:
vfs_rmdir() -> d_delete_notify()). So each cgroup's parent directory is watched too.

cgroup v1 (`memory.oom_control`): an eventfd registered through
`cgroup.event_control` (mm/memcontrol-v1.c, mm/memcontrol.c before 6.11:
memcg_write_event_control(), mem_cgroup_oom_register_event()). It is signalled at
the OOM, *before* the kill: memcg1_oom_prepare() (mem_cgroup_oom() on older
kernels) calls mem_cgroup_oom_notify(), which signals the OOMing memcg and every
descendant, and only then does mem_cgroup_out_of_memory() choose and kill.
Measured here (6.18): at the wake-up the counter had not moved in 7 of 8 OOMs; it
moved about 0.3 ms later. So every signal schedules re-reads (`V1_RECHECK_S` after
it) through a timerfd in the same epoll set. An OOM without a kill
(oom_kill_disable: the tasks wait in mem_cgroup_oom_synchronize(), which notifies
as well; or a victim already exiting) leaves the counter alone and reports nothing.
The counter is local: v1 counts a kill only in the victim's own memcg. Removal:
memcg1_css_offline() queues memcg_event_remove(), which signals the eventfd once
more; closing our eventfd unregisters it (memcg_event_wake() on EPOLLHUP).
"""

from __future__ import annotations

import ctypes
import errno
import os
import select
import struct
import time
from collections.abc import Iterator
from dataclasses import dataclass

from oomlens.errors import NotFound, OomlensError, Unsupported
from oomlens.system.memcg import MemcgMount
from oomlens.system.meminfo import parse_flat
from oomlens.system.procfs import translate_os_error

V1_COUNTER_FILE = "memory.oom_control"
V2_COUNTER_FILE = "memory.events"
# Seconds after a v1 signal at which the counter is read again: the kill follows
# the signal by well under a millisecond here, but waits for oom_lock while another
# OOM holds it (mm/memcontrol.c: mem_cgroup_out_of_memory()).
V1_RECHECK_S = (0.002, 0.02, 0.2, 1.0, 5.0)

# include/uapi/linux/inotify.h; IN_NONBLOCK/IN_CLOEXEC are the O_ flags.
IN_MODIFY = 0x00000002
IN_DELETE = 0x00000200
IN_Q_OVERFLOW = 0x00004000
IN_ONLYDIR = 0x01000000
TFD_TIMER_ABSTIME = 1  # include/uapi/linux/timerfd.h
_INOTIFY_EVENT = struct.Struct("iIII")  # struct inotify_event: wd, mask, cookie, len
_READ_SIZE = 65536
# kernfs answers ENODEV for a file whose cgroup was removed after it was opened.
_GONE_ERRNOS = frozenset({errno.ENOENT, errno.ENODEV})

_libc = ctypes.CDLL(None, use_errno=True)
_libc.inotify_init1.argtypes = (ctypes.c_int,)
_libc.inotify_add_watch.argtypes = (ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32)
_libc.inotify_rm_watch.argtypes = (ctypes.c_int, ctypes.c_int)
_libc.timerfd_create.argtypes = (ctypes.c_int, ctypes.c_int)


class _Timespec(ctypes.Structure):
    _fields_ = (("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long))


class _Itimerspec(ctypes.Structure):
    _fields_ = (("it_interval", _Timespec), ("it_value", _Timespec))


_libc.timerfd_settime.argtypes = (ctypes.c_int, ctypes.c_int, ctypes.POINTER(_Itimerspec),
                                  ctypes.c_void_p)


def _checked(result: int, call: str, path: str | None = None) -> int:
    """A libc call's result, or its errno as OSError (what os.* calls would raise)."""
    if result < 0:
        code = ctypes.get_errno()
        raise OSError(code, f"{call}: {os.strerror(code)}", path)
    return result


def _inotify_events(data: bytes) -> Iterator[tuple[int, int, str]]:
    """(wd, mask, name) of each `struct inotify_event` in one read()."""
    offset = 0
    while offset < len(data):
        wd, mask, _cookie, length = _INOTIFY_EVENT.unpack_from(data, offset)
        start = offset + _INOTIFY_EVENT.size
        yield wd, mask, os.fsdecode(data[start : start + length].split(b"\0", 1)[0])
        offset = start + length


def _read_fd(fd: int) -> str:
    chunks = []
    while chunk := os.read(fd, _READ_SIZE):
        chunks.append(chunk)
    return b"".join(chunks).decode("utf-8", "replace")


def _oom_kill(text: str) -> int | None:
    return parse_flat(text).get("oom_kill")


def _counter_file(mount: MemcgMount) -> str:
    return V1_COUNTER_FILE if mount.version == 1 else V2_COUNTER_FILE


def _open_counter(mount: MemcgMount, cgroup_path: str) -> int:
    """Open the cgroup's counter file. NotFound without the cgroup; Unsupported for a
    cgroup without the file (a v2 root, or a v2 cgroup whose parent does not enable
    the memory controller)."""
    directory = mount.fs_path(cgroup_path)
    path = os.path.join(directory, _counter_file(mount))
    try:
        return os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError as err:
        if not os.path.isdir(directory):
            raise NotFound(f"memory cgroup {cgroup_path} does not exist "
                           f"(looked in {directory})") from err
        raise Unsupported(f"memory cgroup {cgroup_path} has no {os.path.basename(path)}") from err
    except OSError as err:
        raise translate_os_error(err, path) from err


def oom_kill_count(mount: MemcgMount, cgroup_path: str) -> int | None:
    """The cgroup's `oom_kill` counter (v2 memory.events, v1 memory.oom_control), or
    None where the kernel keeps none (before 4.13; no counter file). Raises NotFound
    for a cgroup that does not exist."""
    try:
        fd = _open_counter(mount, cgroup_path)
    except Unsupported:
        return None
    try:
        return _oom_kill(_read_fd(fd))
    except OSError as err:
        raise translate_os_error(err, mount.fs_path(cgroup_path)) from err
    finally:
        os.close(fd)


@dataclass(frozen=True, slots=True)
class _InotifyWatch:
    file_wd: int
    parent_wd: int | None
    name: str


class _InotifyWakeups:
    """v2: IN_MODIFY on each cgroup's memory.events, IN_DELETE on its parent directory
    (the only event a removal makes on cgroupfs, see the module doc). The counters
    are not its business: it only says which cgroups to read again."""

    def __init__(self, mount_root: str) -> None:
        self._root = os.path.normpath(mount_root)
        self._fd = _checked(_libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC), "inotify_init1")
        self._watches: dict[str, _InotifyWatch] = {}
        self._files: dict[int, str] = {}  # wd of a memory.events -> cgroup path
        self._children: dict[int, dict[str, str]] = {}  # wd of a parent -> name -> path

    def fileno(self) -> int:
        return self._fd

    def _add_watch(self, path: str, mask: int) -> int:
        try:
            return _checked(_libc.inotify_add_watch(self._fd, os.fsencode(path), mask),
                            "inotify_add_watch", path)
        except OSError as err:
            if err.errno == errno.ENOSPC:
                raise OomlensError(f"cannot watch {path}: no inotify watches left "
                                   "(sysctl fs.inotify.max_user_watches)") from err
            raise translate_os_error(err, path) from err

    def watch(self, path: str, directory: str, counter_fd: int) -> None:
        file_wd = self._add_watch(os.path.join(directory, V2_COUNTER_FILE), IN_MODIFY)
        self._files[file_wd] = path
        parent, name = os.path.split(os.path.normpath(directory))
        parent_wd = None
        if os.path.normpath(directory) != self._root:  # the mount's root has no parent here
            try:
                parent_wd = self._add_watch(parent, IN_DELETE | IN_ONLYDIR)
            except OomlensError:
                self._drop_wd(file_wd)
                raise
            self._children.setdefault(parent_wd, {})[name] = path
        self._watches[path] = _InotifyWatch(file_wd, parent_wd, name)

    def _drop_wd(self, wd: int) -> None:
        """inotify_rm_watch, whose one failure on our own fd is EINVAL: the kernel
        dropped the watch already (IN_IGNORED). Its IN_IGNORED may still be queued:
        events of unknown wds are skipped."""
        self._files.pop(wd, None)
        _libc.inotify_rm_watch(self._fd, wd)

    def unwatch(self, path: str) -> None:
        watch = self._watches.pop(path, None)
        if watch is None:
            return
        self._drop_wd(watch.file_wd)
        if watch.parent_wd is not None:
            children = self._children[watch.parent_wd]
            del children[watch.name]
            if not children:  # a parent directory is watched once for all its children
                del self._children[watch.parent_wd]
                self._drop_wd(watch.parent_wd)

    def signalled(self) -> set[str]:
        """Drain the queue: the cgroups any event was about."""
        found: set[str] = set()
        while True:
            try:
                data = os.read(self._fd, _READ_SIZE)
            except BlockingIOError:
                return found
            for wd, mask, name in _inotify_events(data):
                found |= self._paths_of(wd, mask, name)

    def _paths_of(self, wd: int, mask: int, name: str) -> set[str]:
        """A counter file's cgroup (IN_MODIFY; or IN_IGNORED, where a plain filesystem
        deleted it), a parent's deleted child, or every cgroup after lost events."""
        if mask & IN_Q_OVERFLOW:
            return set(self._watches)
        if wd in self._files:
            return {self._files[wd]}
        children = self._children.get(wd, {})
        return {children[name]} if name in children else set()

    def close(self) -> None:
        os.close(self._fd)  # and with it every watch


def _arm_timer(fd: int, deadline: float) -> None:
    """Let the timerfd expire at `deadline` (CLOCK_MONOTONIC seconds); 0 disarms it."""
    seconds, fraction = divmod(deadline, 1.0)
    spec = _Itimerspec(_Timespec(0, 0), _Timespec(int(seconds), int(fraction * 1e9)))
    _checked(_libc.timerfd_settime(fd, TFD_TIMER_ABSTIME, ctypes.byref(spec), None),
             "timerfd_settime")


class _EventfdWakeups:
    """v1: one eventfd per cgroup registered for memory.oom_control, and a timerfd for
    the re-reads after each signal, all in one epoll set (see the module doc)."""

    def __init__(self) -> None:
        self._epoll = select.epoll()
        self._timer = _checked(_libc.timerfd_create(
            time.CLOCK_MONOTONIC, os.O_NONBLOCK | os.O_CLOEXEC), "timerfd_create")
        self._epoll.register(self._timer, select.EPOLLIN)
        self._eventfds: dict[str, int] = {}
        self._paths: dict[int, str] = {}
        self._rechecks: dict[str, tuple[float, int]] = {}  # path -> (signalled at, step)

    def fileno(self) -> int:
        return self._epoll.fileno()

    def watch(self, path: str, directory: str, counter_fd: int) -> None:
        """`<eventfd> <fd of memory.oom_control>` to cgroup.event_control."""
        control = os.path.join(directory, "cgroup.event_control")
        try:
            eventfd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        except OSError as err:  # EMFILE: one eventfd per cgroup, against RLIMIT_NOFILE
            raise _registration_error(err, path, control) from err
        try:
            fd = os.open(control, os.O_WRONLY | os.O_CLOEXEC)
            try:
                os.write(fd, f"{eventfd} {counter_fd}".encode())
            finally:
                os.close(fd)
            self._epoll.register(eventfd, select.EPOLLIN)
        except OSError as err:
            os.close(eventfd)
            raise _registration_error(err, path, control) from err
        self._eventfds[path] = eventfd
        self._paths[eventfd] = path

    def unwatch(self, path: str) -> None:
        eventfd = self._eventfds.pop(path, None)
        if eventfd is None:
            return
        del self._paths[eventfd]
        self._rechecks.pop(path, None)
        self._epoll.unregister(eventfd)
        os.close(eventfd)

    def signalled(self) -> set[str]:
        """The cgroups signalled since the last call, and those due for a re-read; then
        the timer is set for the next re-read."""
        now = time.clock_gettime(time.CLOCK_MONOTONIC)
        found: set[str] = set()
        for fd, _mask in self._epoll.poll(0, len(self._paths) + 1):
            try:
                os.read(fd, 8)  # resets the eventfd; consumes the timer's expiry
            except BlockingIOError:
                continue
            if fd in self._paths:
                found.add(self._paths[fd])
        due = {path for path, (since, step) in self._rechecks.items()
               if since + V1_RECHECK_S[step] <= now}
        for path in due - found:
            since, step = self._rechecks.pop(path)
            if step + 1 < len(V1_RECHECK_S):
                self._rechecks[path] = (since, step + 1)
        for path in found:  # each signal starts the schedule again
            self._rechecks[path] = (now, 0)
        deadlines = [since + V1_RECHECK_S[step] for since, step in self._rechecks.values()]
        _arm_timer(self._timer, min(deadlines, default=0.0))
        return found | due

    def close(self) -> None:
        for eventfd in self._paths:
            os.close(eventfd)
        os.close(self._timer)
        self._epoll.close()


def _registration_error(err: OSError, path: str, control: str) -> OomlensError:
    if err.errno in _GONE_ERRNOS:
        return NotFound(f"memory cgroup {path} does not exist (no {control})")
    if err.errno == errno.EOPNOTSUPP:  # CONFIG_PREEMPT_RT kernels refuse all v1 events
        return Unsupported(f"this kernel refuses cgroup v1 event notifications ({control})")
    error = translate_os_error(err, control)
    if type(error) is OomlensError:
        error = OomlensError(f"cannot register an OOM eventfd with {control}: {err.strerror}")
    return error


class MemcgOomEvents:
    """Watches memory cgroups for OOM kills: `fileno()` becomes readable when one may
    have happened; `changed()` then says whose `oom_kill` counter moved, and `gone`
    which cgroups vanished. Call `changed()` at every wake-up: on v1 the fd also
    wakes for the re-reads after an OOM, and the kill is often counted only then.

    What a count means differs per version (module doc): v2 counts a cgroup's whole
    subtree, v1 only its own tasks. A context manager. Each cgroup costs one inotify
    watch on v2 (plus one per parent directory) and one eventfd on v1, against
    fs.inotify.max_user_watches and RLIMIT_NOFILE respectively.
    """

    def __init__(self, mount: MemcgMount) -> None:
        self._mount = mount
        self._wakeups: _EventfdWakeups | _InotifyWakeups = (
            _EventfdWakeups() if mount.version == 1 else _InotifyWakeups(mount.root)
        )
        self._counts: dict[str, int] = {}
        self._inodes: dict[str, int] = {}  # of the counter file: a cgroup made anew differs
        self.gone: list[str] = []
        self._closed = False

    def add(self, cgroup_path: str) -> int:
        """Start watching a cgroup; returns its oom_kill count now (the baseline the
        next change is measured from; for a cgroup already watched, that baseline).

        The watch is set before the counter is read, so no kill falls in between.
        Raises NotFound (no such cgroup), Unsupported (no counter: a v2 root, a v2
        cgroup without the memory controller, a kernel before 4.13)."""
        if cgroup_path in self._counts:
            return self._counts[cgroup_path]
        fd = _open_counter(self._mount, cgroup_path)
        try:
            self._wakeups.watch(cgroup_path, self._mount.fs_path(cgroup_path), fd)
            try:
                count = _oom_kill(_read_fd(fd))
                if count is None:
                    raise Unsupported(f"memory cgroup {cgroup_path} has no oom_kill counter "
                                      "(Linux 4.13 added it)")
                self._inodes[cgroup_path] = os.fstat(fd).st_ino
            except OSError as err:
                self._wakeups.unwatch(cgroup_path)
                raise translate_os_error(err, self._mount.fs_path(cgroup_path)) from err
            except OomlensError:
                self._wakeups.unwatch(cgroup_path)
                raise
        finally:
            os.close(fd)
        self._counts[cgroup_path] = count
        return count

    def remove(self, cgroup_path: str) -> None:
        """Stop watching a cgroup (nothing to do if it is not watched, e.g. gone)."""
        self._wakeups.unwatch(cgroup_path)
        self._counts.pop(cgroup_path, None)
        self._inodes.pop(cgroup_path, None)

    def fileno(self) -> int:
        """The one fd to poll for every watched cgroup (v2: inotify; v1: epoll)."""
        return self._wakeups.fileno()

    def changed(self) -> list[tuple[str, int, int]]:
        """Drain the notifications without blocking and re-read every cgroup they were
        about: (cgroup path, old count, new count) for each counter that moved, in
        path order. A notification whose counter did not move (an OOM without a kill,
        another memory event) reports nothing. Cgroups found removed (or made anew
        under the same name) stop being watched and are listed in `gone`, which this
        call resets."""
        self.gone = []
        moved: list[tuple[str, int, int]] = []
        for path in sorted(self._wakeups.signalled()):
            text = self._reread(path)
            if text is None:
                self.remove(path)
                self.gone.append(path)
                continue
            old, new = self._counts[path], _oom_kill(text)
            if new is not None and new != old:
                self._counts[path] = new
                moved.append((path, old, new))
        return moved

    def _reread(self, path: str) -> str | None:
        """The counter file's text, or None if the cgroup we watch is gone: removed,
        made anew under its name (another inode: kernfs never reuses its node ids),
        or left without its counter file (memory controller disabled above it)."""
        try:
            fd = _open_counter(self._mount, path)
        except (NotFound, Unsupported):
            return None
        try:
            if os.fstat(fd).st_ino != self._inodes[path]:
                return None
            return _read_fd(fd)
        except OSError as err:
            if err.errno in _GONE_ERRNOS:
                return None
            raise translate_os_error(err, self._mount.fs_path(path)) from err
        finally:
            os.close(fd)

    def paths(self) -> list[str]:
        return sorted(self._counts)

    def close(self) -> None:
        """Close every fd (closing a v1 eventfd also unregisters it in the kernel)."""
        if self._closed:
            return
        self._closed = True
        self._wakeups.close()
        self._counts.clear()
        self._inodes.clear()

    def __enter__(self) -> MemcgOomEvents:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
