"""What a simulation may take from the host, and the refusals. Pure.

A sandbox or a trigger is only safe while the memory it lets a process fill is memory
the host can spare: a cgroup limit above what is available does not contain anything,
the host runs out first and its OOM killer picks among every process of the machine.
So a simulation refuses to let anything grow past MemAvailable less a reserve (5 % of
RAM, at least 256 MiB), and never into swap the cgroup could use without bound.
"""

from __future__ import annotations

from oomlens.errors import OomlensError, UsageError
from oomlens.system.memcg import Memcg
from oomlens.system.meminfo import MemInfo
from oomlens.units import format_bytes

RESERVE_SHARE = 20  # 1/20 of RAM
RESERVE_MIN_BYTES = 256 << 20
_KIB = 1024


class Refused(OomlensError):
    """A safety rule refused the simulation (exit 1)."""


def reserve_bytes(meminfo: MemInfo) -> int:
    return max(meminfo.mem_total_kib * _KIB // RESERVE_SHARE, RESERVE_MIN_BYTES)


def spare_bytes(meminfo: MemInfo) -> int:
    """What the host can give a simulation now: MemAvailable less the reserve."""
    return max(meminfo.mem_available_kib * _KIB - reserve_bytes(meminfo), 0)


def _spare_text(meminfo: MemInfo) -> str:
    return (f"{format_bytes(spare_bytes(meminfo))} (MemAvailable "
            f"{format_bytes(meminfo.mem_available_kib * _KIB)} less a reserve of "
            f"{format_bytes(reserve_bytes(meminfo))})")


def check_sandbox_limits(limit_bytes: int, swap_bytes: int, meminfo: MemInfo) -> None:
    """`simulate run --limit/--swap`: UsageError unless the host can spare both."""
    if limit_bytes > spare_bytes(meminfo):
        raise UsageError(f"--limit {format_bytes(limit_bytes)} is more than this host can "
                         f"spare now, {_spare_text(meminfo)}: it would run out before the "
                         "sandbox")
    swap_free = meminfo.swap_free_kib * _KIB
    if swap_bytes > swap_free:
        raise UsageError(f"--swap {format_bytes(swap_bytes)} is more than the "
                         f"{format_bytes(swap_free)} of swap free on this host")


def room_refusal(memcg: Memcg, room_bytes: int, meminfo: MemInfo) -> str | None:
    """Why a grower may not fill `room_bytes` in `memcg` (None: it may).

    - v1 `oom_kill_disable`: the OOM killer does not act there, tasks hang instead
      (mm/memcontrol.c: mem_cgroup_oom()), so the grower would never stop;
    - room the host cannot spare: the host would run out first;
    - a cgroup that may swap without a limit of its own on a host with swap: the
      grower would push the cgroup's pages into the host's swap until it is full.
    """
    if memcg.oom_kill_disable:
        return (f"{memcg.path} has oom_kill_disable set: its OOM killer does not kill, "
                "tasks wait for memory instead, so an OOM there hangs")
    if room_bytes > spare_bytes(meminfo):
        return (f"filling {memcg.path} takes {format_bytes(room_bytes)} more, more than this "
                f"host can spare now, {_spare_text(meminfo)}: the host would run out first")
    if memcg.swap_limit_bytes is None and memcg.swappiness and meminfo.swap_total_kib:
        return (f"{memcg.path} may use swap without a limit of its own: the grower would "
                "push its pages into the host's swap until it is full; set a swap limit")
    return None


def check_trigger_target(path: str) -> None:
    """`simulate oom` works on a memory cgroup, never on the whole machine."""
    if path.strip("/") in ("", "global"):
        raise UsageError("simulate oom needs a memory cgroup with a limit, not the root: "
                         "a global OOM is `oomlens simulate sysrq`")
