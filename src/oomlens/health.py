"""Short warnings for the status screen, each with a stable code. Pure: reads a
Snapshot. (`oomlens doctor`, a later command, goes deeper with evidence and fixes.)"""

from __future__ import annotations

from dataclasses import dataclass

from oomlens.system.memcg import Memcg
from oomlens.system.snapshot import Snapshot

PROTECTED_SHARE_WARN = 0.10  # a -1000 process above this share of RAM is a panic risk
LOW_AVAILABLE_SHARE = 0.10
MEMCG_NEAR_LIMIT = 0.90


@dataclass(frozen=True, slots=True)
class Finding:
    """One finding: `code` is stable (for --json consumers), `message` for humans."""

    code: str
    severity: str  # "info" | "warning"
    message: str


def memcg_usage_share(memcg: Memcg) -> float | None:
    if memcg.limit_bytes is None or memcg.limit_bytes == 0:
        return None
    return memcg.usage_bytes / memcg.limit_bytes


def assess(snapshot: Snapshot, oom_kills_since_boot: int | None) -> list[Finding]:
    out: list[Finding] = []
    mem, sysctl = snapshot.meminfo, snapshot.sysctls
    if mem.swap_total_kib == 0:
        out.append(Finding("no-swap", "info",
                            "no swap: anonymous memory can never be paged out, OOMs come sooner"))
    if mem.mem_available_kib < mem.mem_total_kib * LOW_AVAILABLE_SHARE:
        out.append(Finding("low-available", "warning",
                            f"only {mem.mem_available_kib * 100 // mem.mem_total_kib}% of "
                            "memory is available"))
    if sysctl.get("vm.panic_on_oom", 0):
        out.append(Finding("panic-on-oom", "warning",
                            f"vm.panic_on_oom = {sysctl['vm.panic_on_oom']}: an OOM panics "
                            "the kernel instead of killing a process"))
    if sysctl.get("vm.oom_kill_allocating_task", 0):
        out.append(Finding("kill-allocating-task", "warning",
                            "vm.oom_kill_allocating_task = 1: the OOM killer kills whoever "
                            "allocates, not the biggest process"))
    if sysctl.get("vm.oom_dump_tasks", 1) == 0:
        out.append(Finding("no-task-dump", "info",
                            "vm.oom_dump_tasks = 0: OOM reports will lack the task table"))
    if snapshot.pressure is None:
        out.append(Finding("no-psi", "info", "no memory pressure information (PSI) here"))
    out += _protected_hogs(snapshot)
    out += _memcgs_near_limit(snapshot)
    if oom_kills_since_boot:
        out.append(Finding("oom-kills", "warning",
                            f"{oom_kills_since_boot} OOM kill(s) since boot "
                            "(/proc/vmstat oom_kill)"))
    return out


def _protected_hogs(snapshot: Snapshot) -> list[Finding]:
    total_pages = snapshot.meminfo.mem_total_kib // (snapshot.page_size // 1024)
    out = []
    for proc in snapshot.processes:
        task = proc.task
        share = task.rss_pages / total_pages if total_pages else 0.0
        if task.oom_score_adj == -1000 and share > PROTECTED_SHARE_WARN:
            out.append(Finding(
                "protected-hog", "warning",
                f"{proc.pid} {proc.comm} has oom_score_adj -1000 and holds {share:.0%} of RAM: "
                "if it grows the kernel may have nothing else to kill and panic"))
    return out


def _memcgs_near_limit(snapshot: Snapshot) -> list[Finding]:
    out = []
    for memcg in snapshot.memcgs:
        share = memcg_usage_share(memcg)
        if share is not None and share >= MEMCG_NEAR_LIMIT:
            out.append(Finding("memcg-near-limit", "warning",
                                f"memory cgroup {memcg.path} uses {share:.0%} of its limit"))
        if memcg.oom_kill_disable:
            out.append(Finding("memcg-oom-kill-disabled", "warning",
                                f"memory cgroup {memcg.path} has oom_kill_disable=1: its tasks "
                                "hang instead of being killed at the limit"))
    return out
