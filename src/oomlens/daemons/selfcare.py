"""What every oomlens daemon (watch, guard) does for itself, kept lean: which
machine and boot it runs on, and lowering its own oom_score_adj."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

from oomlens.errors import OomlensError

# A daemon's own oom_score_adj where permitted: far below any workload, but not
# -1000, so a daemon that leaked memory could still be killed instead of a panic.
SELF_OOM_SCORE_ADJ = -900


@dataclass(frozen=True, slots=True)
class HostInfo:
    """`boot_time`: the wall-clock time of kernel timestamp 0 (CLOCK_MONOTONIC,
    what /dev/kmsg stamps records with), to the millisecond, unlike /proc/stat btime."""

    name: str
    boot_id: str
    boot_time: float


def host_info(proc_root: str = "/proc") -> HostInfo:
    from oomlens.system.oomadj import boot_id

    boot_time = time.time() - time.clock_gettime(time.CLOCK_MONOTONIC)
    return HostInfo(os.uname().nodename, boot_id(proc_root), boot_time)


def protect_self(proc_root: str = "/proc") -> str | None:
    """Lower the daemon's own oom_score_adj; why not, if it could not."""
    from oomlens.system.oomadj import ProcessHandle

    try:
        with ProcessHandle.open(os.getpid(), proc_root) as handle:
            if handle.oom_score_adj() > SELF_OOM_SCORE_ADJ:
                handle.set_oom_score_adj(SELF_OOM_SCORE_ADJ)
    except OomlensError as err:
        return str(err)
    return None
