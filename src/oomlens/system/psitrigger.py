"""Wake-ups on memory pressure: a PSI trigger, an fd that polls POLLPRI when tasks
stalled on memory for `stall_us` within a `window_us` window.

Documentation/accounting/psi.rst, "Monitoring for pressure thresholds": open the
pressure file (`/proc/pressure/memory`, or a cgroup v2's `memory.pressure`) for
writing, write `<some|full> <stall us> <window us>`, poll. kernel/sched/psi.c
(v6.18) decides:
- psi_write() copies at most 32 bytes and overwrites the *last byte written* with
  NUL, so the text must carry its own terminator (measured: `some 150000 2000000`
  without one is read as a 200 ms window and refused);
- psi_trigger_create(): EINVAL unless 0 < window <= 10 s (WINDOW_MAX_US; older
  kernels also want >= 500 ms, WINDOW_MIN_US, dropped in 2023 by "psi: remove 500ms
  min window size limitation for triggers") and 0 < stall <= window; since 6.5 (commit
  "sched/psi: allow unprivileged polling of N*2s period"), EINVAL for a window that is
  not a multiple of 2 s when the opener lacks CAP_SYS_RESOURCE. Such a trigger is
  served by the 2 s averaging work (PSI_AVGS), not the real-time psimon thread, so it
  fires at most every 2 s. Before 6.5, a writable open without CAP_SYS_RESOURCE was
  EPERM (psi_open(); cgroup_pressure_open() for a cgroup's file). Both refusals are
  AccessDenied here.
- one trigger per open file (EBUSY for a second write); an event fires at most once
  per window; psi_trigger_poll() answers POLLERR|POLLPRI when the trigger is gone (a
  cgroup removed under a `memory.pressure` trigger, or a file without one);
- false events: psi_trigger_create() seeds every trigger's window from
  total[PSI_POLL], which only moves while a privileged (rtpoll) trigger exists, but an
  unprivileged trigger is measured against total[PSI_AVGS]; so the first stall after
  creation, of any size, looks like all the stall since boot and fires, and the
  window after it fires again through the interpolated previous growth (measured:
  a 1 s-in-2 s trigger fired after 11 ms of stall, twice, then behaved; the same
  analysis: oven-sh/bun#42783). A POLLPRI is therefore a reason to look, never a
  verdict: read the pressure and the memory before acting.
Measured here (6.18, root without CAP_SYS_RESOURCE): `some 150000 2000000` is
accepted and a 1 s window is EINVAL; a process rereading 80 MiB of file pages in a
64 MiB v1 memcg raised `some 10000 2000000` on /proc/pressure/memory 0.8-1.6 s after
it started (4 runs), then every 2-4 s.
"""

from __future__ import annotations

import errno
import os

from oomlens.errors import AccessDenied, NotFound, OomlensError, Unsupported, UsageError
from oomlens.system.oomadj import has_cap_sys_resource
from oomlens.system.procfs import translate_os_error

KINDS = ("some", "full")
WINDOW_MAX_US = 10_000_000  # kernel/sched/psi.c
UNPRIVILEGED_WINDOW_STEP_US = 2_000_000  # psi_trigger_create(), 6.5+
_WINDOW_NEEDS_CAP = (
    "a PSI window that is not a multiple of 2 s needs CAP_SYS_RESOURCE, which this "
    "process lacks (kernel/sched/psi.c: psi_trigger_create())"
)
_TRIGGERS_NEED_CAP = "PSI triggers need CAP_SYS_RESOURCE before Linux 6.5"


def round_up_window(window_us: int) -> int:
    """The smallest window an unprivileged trigger may have that is >= `window_us`."""
    steps = -(-window_us // UNPRIVILEGED_WINDOW_STEP_US)
    return steps * UNPRIVILEGED_WINDOW_STEP_US


def _check(kind: str, stall_us: int, window_us: int) -> None:
    """The rules every kernel with triggers (5.2+) shares, checked before the write
    so a mistake gets its own words, not the kernel's bare EINVAL (and a negative
    number never reaches sscanf("%u"), which would wrap it)."""
    if kind not in KINDS:
        raise UsageError(f"PSI trigger kind must be 'some' or 'full', not {kind!r}")
    if not 0 < window_us <= WINDOW_MAX_US:
        raise UsageError(f"PSI window must be 1 us..10 s, not {window_us} us")
    if not 0 < stall_us <= window_us:
        raise UsageError(f"PSI stall must be 1 us..the window ({window_us} us), "
                         f"not {stall_us} us")


class PressureTrigger:
    """One PSI trigger (see the module doc); poll `fileno()` for POLLPRI. A context
    manager; closing the fd destroys the trigger (psi_fop_release())."""

    def __init__(self, path: str, kind: str, stall_us: int, window_us: int) -> None:
        """Raises Unsupported (no such pressure file, or PSI disabled), NotFound (the
        cgroup went away), AccessDenied (the window or the trigger needs
        CAP_SYS_RESOURCE), UsageError (numbers the kernel refuses)."""
        _check(kind, stall_us, window_us)
        self.path = path
        self.kind = kind
        self.stall_us = stall_us
        self.window_us = window_us
        try:
            self._fd = os.open(path, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as err:
            raise self._error(err) from err
        try:
            os.write(self._fd, f"{kind} {stall_us} {window_us}\0".encode("ascii"))
        except OSError as err:
            os.close(self._fd)
            raise self._error(err) from err

    def _error(self, err: OSError) -> OomlensError:
        text = f"{self.kind} {self.stall_us} {self.window_us}"
        if err.errno == errno.ENOENT:
            return Unsupported(f"no {self.path}: no pressure stall information here "
                               "(a kernel without CONFIG_PSI, booted with psi=0, or a "
                               "cgroup without memory.pressure)")
        if err.errno == errno.EOPNOTSUPP:
            return Unsupported(f"PSI is disabled ({self.path}: psi=0, or cgroup.pressure 0)")
        if err.errno == errno.ENODEV:  # kernfs: the cgroup was removed
            return NotFound(f"{self.path} went away (its cgroup was removed)")
        if err.errno == errno.EPERM:  # EACCES is the file's mode, left to the translator
            return AccessDenied(self.path, hint=_TRIGGERS_NEED_CAP)
        if err.errno == errno.EINVAL:
            if self.window_us % UNPRIVILEGED_WINDOW_STEP_US and not has_cap_sys_resource():
                return AccessDenied(self.path, hint=_WINDOW_NEEDS_CAP)
            return UsageError(f"the kernel refused the PSI trigger '{text}' on {self.path} "
                              "(older kernels also refuse windows under 500 ms)")
        error = translate_os_error(err, self.path)
        if type(error) is OomlensError:
            error = OomlensError(f"cannot set the PSI trigger '{text}' on {self.path}: "
                                 f"{err.strerror}")
        return error

    def fileno(self) -> int:
        return self._fd

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> PressureTrigger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"PressureTrigger({self.path!r}, '{self.kind} {self.stall_us} {self.window_us}')"


def open_trigger(path: str, kind: str, stall_us: int, window_us: int,
                 ) -> tuple[PressureTrigger | None, str | None]:
    """The trigger, or None and why not (to say once before falling back to polling).
    A window refused for lack of CAP_SYS_RESOURCE is tried once more rounded up to a
    multiple of 2 s; the trigger then comes with the reason. UsageError (numbers no
    kernel accepts) is raised: that is the user's to fix, not ours to work around."""
    try:
        return PressureTrigger(path, kind, stall_us, window_us), None
    except UsageError:
        raise
    except AccessDenied as err:
        if window_us % UNPRIVILEGED_WINDOW_STEP_US == 0:
            return None, str(err)
        first = err
    except OomlensError as err:
        return None, str(err)
    window = round_up_window(window_us)
    try:
        trigger = PressureTrigger(path, kind, stall_us, window)
    except OomlensError as err:
        return None, f"{first}; with a {window / 1e6:g} s window: {err}"
    return trigger, (f"PSI window {window_us / 1e6:g} s refused ({first}); "
                     f"using {window / 1e6:g} s")
