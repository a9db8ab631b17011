"""Checks of memory cgroups: the version, limits at or near usage, v1's
oom_kill_disable, v2's memory.oom.group and memory.high throttling."""

from __future__ import annotations

import os

from oomlens.doctor.facts import Facts
from oomlens.doctor.finding import Evidence, Finding, Severity
from oomlens.system.memcg import Memcg
from oomlens.system.tunables import MemcgControls
from oomlens.units import format_bytes, format_share

NEAR_LIMIT_SHARE = 0.90
HIGH_NEAR_SHARE = 0.90


def _file(f: Facts, path: str, name: str) -> str:
    """The cgroup's file `name` on disk (its cgroup path where no mount is known)."""
    directory = path if f.memcg_mount is None else f.memcg_mount.fs_path(path)
    return os.path.join(directory, name)


def check_memcg_version(f: Facts) -> list[Finding]:
    mount = f.memcg_mount
    if mount is None or mount.version != 1:
        return []
    return [Finding(
        "memcg-v1", Severity.INFO, f"memory cgroups are cgroup v1 ({mount.root})",
        (Evidence(f.proc("self", "mountinfo"), f"cgroup (v1) with the memory controller at "
                  f"{mount.root}"),),
        "cgroup v1's memory controller is deprecated upstream and has no memory.high, "
        "memory.oom.group, memory.min/low or per-cgroup PSI; systemd-oomd and oomd need v2. "
        "Its memsw limit also makes an OOM domain of memory and swap together.",
        "Move to cgroup v2 (systemd.unified_cgroup_hierarchy=1 on older distributions) "
        "when the workloads allow.")]


def _working_set(memcg: Memcg, controls: MemcgControls | None) -> int | None:
    if controls is None or controls.inactive_file_bytes is None:
        return None
    return max(memcg.usage_bytes - controls.inactive_file_bytes, 0)


def _near_limit(f: Facts, memcg: Memcg) -> Finding | None:
    if not memcg.limit_bytes or memcg.usage_bytes < memcg.limit_bytes * NEAR_LIMIT_SHARE:
        return None
    controls = (f.memcg_controls or {}).get(memcg.path)
    working = _working_set(memcg, controls)
    v1 = memcg.version == 1
    evidence = [
        Evidence(_file(f, memcg.path, "memory.limit_in_bytes" if v1 else "memory.max"),
                 str(memcg.limit_bytes)),
        Evidence(_file(f, memcg.path, "memory.usage_in_bytes" if v1 else "memory.current"),
                 str(memcg.usage_bytes)),
    ]
    cache_only = working is not None and working < memcg.limit_bytes * NEAR_LIMIT_SHARE
    if working is not None and controls is not None:
        evidence.append(Evidence(
            f"{_file(f, memcg.path, 'memory.stat')} "
            f"{'total_inactive_file' if v1 else 'inactive_file'}",
            f"{controls.inactive_file_bytes} (working set {working})"))
    share = memcg.usage_bytes / memcg.limit_bytes
    return Finding(
        "memcg-near-limit", Severity.INFO if cache_only else Severity.WARNING,
        f"memory cgroup {memcg.path} uses {format_share(share)} of its "
        f"{format_bytes(memcg.limit_bytes)} limit"
        + (" (mostly page cache the kernel can reclaim)" if cache_only else ""),
        tuple(evidence),
        "At its limit the kernel reclaims inside the cgroup, then runs the OOM killer "
        "within it (mm/memcontrol.c: mem_cgroup_out_of_memory()), which picks by the "
        "cgroup's own totalpages, not the machine's. Page cache counts in the usage but is "
        "reclaimed first: the working set (usage - inactive file) decides.",
        "Raise the limit if the workload needs the memory, or find what grows in it "
        f"(`oomlens ls --cgroup {memcg.path}`).")


def check_memcg_limits(f: Facts) -> list[Finding]:
    out = []
    for memcg in f.memcgs:
        near = _near_limit(f, memcg)
        if near is not None:
            out.append(near)
        if memcg.oom_kill_disable:
            out.append(_oom_kill_disabled(f, memcg))
    return out


def _oom_kill_disabled(f: Facts, memcg: Memcg) -> Finding:
    controls = (f.memcg_controls or {}).get(memcg.path)
    under = bool(controls and controls.under_oom)
    path = _file(f, memcg.path, "memory.oom_control")
    return Finding(
        "memcg-oom-kill-disabled", Severity.CRITICAL if under else Severity.WARNING,
        f"memory cgroup {memcg.path} has oom_kill_disable = 1: at its limit its tasks hang "
        "instead of one being killed" + (", and tasks are waiting now (under_oom 1)"
                                         if under else ""),
        (Evidence(path, "oom_kill_disable 1"),
         Evidence(path, "under_oom " + ("?" if controls is None or controls.under_oom is None
                                        else str(int(under))))),
        "mm/memcontrol.c: mem_cgroup_oom() skips the OOM killer for such a cgroup: a task "
        "that faults at the limit sleeps until something frees memory. Unless a userspace "
        "OOM handler is registered and acts, the cgroup's tasks hang for good.",
        f"`echo 0 > {path}`, unless a userspace OOM handler is meant to act; cgroup v2 has "
        "no such switch.")


def check_memcg_controls(f: Facts) -> list[Finding]:
    """memory.oom.group and memory.high, from every cgroup's controls (v2)."""
    out = []
    for path, controls in sorted((f.memcg_controls or {}).items()):
        if controls.oom_group:
            out.append(Finding(
                "memcg-oom-group", Severity.INFO,
                f"memory cgroup {path} has memory.oom.group = 1: an OOM kills all of its "
                "processes together",
                (Evidence(_file(f, path, "memory.oom.group"), "1"),),
                "mm/memcontrol.c: mem_cgroup_get_oom_group() finds the highest ancestor of "
                "the victim (within the OOM domain) with memory.oom.group set, and every "
                "task in it is killed (except those at -1000), so a workload never runs "
                "half-killed.",
                "Right for one workload per cgroup (a container, a service); `echo 0` into "
                "it where the cgroup holds independent processes."))
        throttled = _high_throttling(f, path, controls)
        if throttled is not None:
            out.append(throttled)
    return out


def _high_throttling(f: Facts, path: str, controls: MemcgControls) -> Finding | None:
    high, usage, events = controls.high_bytes, controls.usage_bytes, controls.high_events
    if high is None:
        return None
    near = usage is not None and usage >= high * HIGH_NEAR_SHARE
    if not near and not events:
        return None
    state = (f"uses {format_bytes(usage)} of its memory.high {format_bytes(high)}" if near
             else f"went over its memory.high ({format_bytes(high)}) {events} time(s)")
    return Finding(
        "memcg-high-throttling", Severity.WARNING if near else Severity.INFO,
        f"memory cgroup {path} {state}: it is throttled, not killed",
        (Evidence(_file(f, path, "memory.high"), str(high)),
         Evidence(_file(f, path, "memory.current"), str(usage)),
         Evidence(f"{_file(f, path, 'memory.events')} high", str(events))),
        "Above memory.high the kernel reclaims from the cgroup on each allocation and then "
        "makes its tasks sleep (mm/memcontrol.c: mem_cgroup_handle_over_high(), up to 2 s "
        "each time): the workload crawls instead of being killed, and neither the OOM "
        "killer nor a limit-based monitor sees a problem.",
        "Raise memory.high (or set it to `max`) if the workload needs the memory; keep "
        "memory.max as the hard stop.")


CGROUP_CHECKS = (check_memcg_version, check_memcg_limits, check_memcg_controls)
