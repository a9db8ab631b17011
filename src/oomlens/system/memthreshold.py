"""Event-driven wake-ups for a guarded cgroup v1 memory cgroup: an eventfd the kernel
signals when the cgroup's usage crosses a threshold.

Documentation/admin-guide/cgroup-v1/memory.rst, "Memory thresholds": write
`<eventfd> <fd of memory.usage_in_bytes> <threshold>` to the cgroup's
`cgroup.event_control` (memory.memsw.usage_in_bytes for memory+swap). mm/memcontrol-v1.c
(6.18; mm/memcontrol.c before 6.11):
- memcg1_check_events() runs mem_cgroup_threshold() on charges and uncharges, rate
  limited to once per THRESHOLDS_EVENTS_TARGET (128) page events per CPU, so a
  crossing is seen within about 512 KiB of further (un)charging;
- __mem_cgroup_threshold() signals every threshold between the usage it saw last and
  the usage now, in *either* direction: a wake-up means "usage is on the other side
  now", and which side is for the reader to find out from the usage itself;
- mem_cgroup_threshold() walks up to the root: a child's charge crosses an
  ancestor's threshold too (usage is hierarchical);
- registration places the threshold against the usage at that moment
  (__mem_cgroup_usage_register_event()): a cgroup already above it gets no event
  (measured), so read the usage after registering;
- memcg_event_remove() signals the eventfd once more when the cgroup is removed, and
  closing the eventfd unregisters it (memcg_event_wake(), EPOLLHUP).
Measured here (6.18): a hog adding 1 MiB every 5 ms past a 32 MiB threshold woke us
with the usage 0.2-1.0 MiB above it (10 runs); its exit signalled the way down.

cgroup v2 has no thresholds: memory.events notifies only at `high`/`max` events and
OOMs, and PSI (`memory.pressure`, system/psitrigger.py) tells of stalls, not of
usage, so a guarded v2 cgroup's usage is polled (`memory.current`).
"""

from __future__ import annotations

import errno
import os
import sys

from oomlens.errors import NotFound, OomlensError, Unsupported, UsageError
from oomlens.system.procfs import translate_os_error

USAGE_FILE = "memory.usage_in_bytes"
MEMSW_USAGE_FILE = "memory.memsw.usage_in_bytes"
_CONTROL_FILE = "cgroup.event_control"
# kernfs answers ENODEV for a file whose cgroup was removed after it was opened.
_GONE = frozenset({errno.ENOENT, errno.ENODEV})


class UsageThreshold:
    """One usage threshold on one v1 memory cgroup: `fileno()` polls readable (POLLIN)
    at each crossing; `drain()` consumes them. A context manager."""

    def __init__(self, cgroup_dir: str, threshold_bytes: int, *, memsw: bool = False) -> None:
        """`cgroup_dir`: the cgroup's directory on the v1 memory hierarchy; `memsw`:
        watch memory+swap instead of memory. Raises UsageError (threshold not
        positive), NotFound (no such cgroup), Unsupported (not a v1 memory cgroup --
        e.g. cgroup v2 -- or no swap accounting for `memsw`; a kernel refusing v1
        events, CONFIG_PREEMPT_RT)."""
        if threshold_bytes <= 0:
            raise UsageError(f"usage threshold must be a positive number of bytes, "
                             f"not {threshold_bytes}")
        self.cgroup_dir = cgroup_dir
        self.threshold_bytes = threshold_bytes
        self.counter = MEMSW_USAGE_FILE if memsw else USAGE_FILE
        usage_fd = self._open_counter()
        try:
            self._fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        except OSError as err:  # EMFILE, ENFILE
            os.close(usage_fd)
            raise OomlensError(f"cannot make an eventfd: {err.strerror}") from err
        try:
            self._register(usage_fd)
        except BaseException:
            os.close(self._fd)
            raise
        finally:
            os.close(usage_fd)  # the kernel keeps its own reference to the file

    def _open_counter(self) -> int:
        path = os.path.join(self.cgroup_dir, self.counter)
        try:
            return os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError as err:
            if not os.path.isdir(self.cgroup_dir):
                raise NotFound(f"memory cgroup {self.cgroup_dir} does not exist") from err
            need = ("memory+swap thresholds need a cgroup v1 memory cgroup with swap "
                    "accounting" if self.counter == MEMSW_USAGE_FILE else
                    "usage thresholds need a cgroup v1 memory cgroup (v2 has none)")
            raise Unsupported(f"no {self.counter} in {self.cgroup_dir}: {need}") from err
        except OSError as err:
            raise translate_os_error(err, path) from err

    def _register(self, usage_fd: int) -> None:
        control = os.path.join(self.cgroup_dir, _CONTROL_FILE)
        line = f"{self._fd} {usage_fd} {self.threshold_bytes}".encode("ascii")
        try:
            fd = os.open(control, os.O_WRONLY | os.O_CLOEXEC)
            try:
                os.write(fd, line)
            finally:
                os.close(fd)
        except OSError as err:
            raise self._register_error(err, control) from err

    def _register_error(self, err: OSError, control: str) -> OomlensError:
        if err.errno in _GONE:
            return NotFound(f"memory cgroup {self.cgroup_dir} went away")
        if err.errno == errno.EOPNOTSUPP:
            return Unsupported(f"this kernel refuses cgroup v1 event notifications ({control})")
        error = translate_os_error(err, control)
        if type(error) is OomlensError:
            error = OomlensError(f"cannot register a usage threshold with {control}: "
                                 f"{err.strerror}")
        return error

    def fileno(self) -> int:
        return self._fd

    def drain(self) -> int:
        """The crossings signalled since the last drain (0 if none); never blocks."""
        try:
            return int.from_bytes(os.read(self._fd, 8), sys.byteorder)
        except BlockingIOError:
            return 0

    def close(self) -> None:
        """Close the eventfd, which also unregisters the threshold."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> UsageThreshold:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"UsageThreshold({self.cgroup_dir!r}, {self.threshold_bytes}, {self.counter})"
