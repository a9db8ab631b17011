"""The findings of one OOM event: stable codes (alerts key on them), a severity,
one sentence, the evidence (numbers and the lines they came from) and the fix.
Pure rules over `Facts`."""

from __future__ import annotations

from dataclasses import dataclass, field

from oomlens.kernel.badness import Era
from oomlens.report.facts import (
    UNLIMITED_KB,
    Consumer,
    RankedRow,
    adj_free_choice,
    allowed_nodes,
    scope,
    victim_kb,
)
from oomlens.report.model import CounterLine, OomEvent
from oomlens.units import format_bytes

CRITICAL, WARNING, INFO = "critical", "warning", "info"

# Shares of the domain above which a consumer is worth a finding.
SLAB_SHARE = 0.20
PAGE_TABLES_SHARE = 0.10
SHMEM_SHARE = 0.20
HUGEPAGES_SHARE = 0.20
RUNAWAY_SHARE = 0.50
GROUP_SHARE = 0.30
GROUP_MIN_PROCESSES = 3
SWAP_EXHAUSTED_SHARE = 0.05
SWAP_UNUSED_SHARE = 0.50
COLLATERAL_RATIO = 0.5
# Free memory (outside DMA) within this factor of the high watermarks: reclaim had
# nothing left to give (the allocator's own test is per zone, with lowmem_reserve).
EXHAUSTED_HIGH_FACTOR = 1.5

# Which finding is the event's main one when several apply: the cause before the
# consequence, the specific before the general.
PRIORITY = (
    "no_killable_process", "panic_on_oom", "manual_trigger", "kill_allocating_task",
    "memsw_limit", "swap_limit", "memcg_limit", "fragmentation", "numa_binding", "lowmem",
    "kernel_slab", "hugepages_reserved", "shmem_tmpfs", "page_tables", "runaway_process",
    "process_group", "swap_exhausted", "system_exhausted", "adj_decided",
    "collateral_victim", "no_swap", "swap_unused", "ratelimited",
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Finding:
    code: str
    severity: str
    message: str
    evidence: dict[str, object] = field(default_factory=dict)
    fix: str | None = None


@dataclass(frozen=True, slots=True)
class Facts:
    event: OomEvent
    pkb: int
    breakdown: dict[str, int] | None
    domain_kb: int | None
    totalpages: int | None
    era: Era | None
    ranking: list[RankedRow]
    predicted: int | None
    chosen: int | None
    processes: list[Consumer]
    groups: list[Consumer]
    previous: OomEvent | None


def _lines(event: OomEvent, *needles: str) -> list[str]:
    """`source:line` of the event's lines that contain any of `needles`."""
    found = []
    for line in event.lines:
        if any(needle in line.text for needle in needles):
            found.append(f"{line.source}:{line.lineno}")
    return found[:5]


def _pct(share: float) -> str:
    return f"{share * 100:.0f} %"


def findings_of(f: Facts) -> list[Finding]:
    out: list[Finding] = []
    for check in (_trigger_findings, _memcg_findings, _system_findings,
                  _consumer_findings, _choice_findings, _partial_findings):  # fmt: skip
        out.extend(check(f))
    return out


def _trigger_findings(f: Facts) -> list[Finding]:
    event, out = f.event, []
    if event.no_killable:
        out.append(Finding(
            "no_killable_process", CRITICAL,
            "The OOM killer found no process it was allowed to kill"
            + (", and the kernel panicked." if event.panic else "."),
            {"panic": event.panic, "lines": _lines(event, "no killable", "Kernel panic")},
            "Leave something killable: fewer oom_score_adj=-1000 protections "
            "(`oomlens ls` shows them), or give the protected services a memory limit.",
        ))
    if event.panic and "panic_on_oom" in event.panic:
        out.append(Finding(
            "panic_on_oom", CRITICAL,
            "vm.panic_on_oom is set: the kernel panicked instead of killing a process.",
            {"panic": event.panic, "lines": _lines(event, "panic_on_oom")},
            "`sysctl -w vm.panic_on_oom=0` (and in /etc/sysctl.d/) unless panics are "
            "the intended failover; then make sure kdump saves a vmcore.",
        ))
    if event.trigger.order == -1:
        out.append(Finding(
            "manual_trigger", INFO,
            "order=-1: someone triggered this OOM by hand (SysRq-f or "
            "/proc/sysrq-trigger); it is not a memory shortage.",
            {"order": -1, "trigger": event.trigger.comm, "lines": _lines(event, "order=-1")},
            "Try OOMs in a sandbox instead: `oomlens simulate run --limit 512M -- CMD`.",
        ))
    if event.kill_message and "oom_kill_allocating_task" in event.kill_message:
        out.append(Finding(
            "kill_allocating_task", WARNING,
            "vm.oom_kill_allocating_task is set: the kernel killed the task that "
            "happened to allocate, not the one using the most memory.",
            {"lines": _lines(event, "oom_kill_allocating_task")},
            "`sysctl -w vm.oom_kill_allocating_task=0` so the badness ranking decides.",
        ))
    return out


def _memcg_findings(f: Facts) -> list[Finding]:
    memcg = f.event.memcg
    if memcg is None or memcg.memory is None:
        return []
    out = []
    path = memcg.oom_memcg or memcg.stats_path or "the cgroup"
    v2 = memcg.swap is not None or "anon" in memcg.stats
    mem = memcg.memory
    lines = _lines(f.event, "memory: usage", "memory+swap: usage", "swap: usage")
    evidence: dict[str, object] = {
        "cgroup": path, "usage_kb": mem.usage_kb, "limit_kb": mem.limit_kb,
        "failcnt": mem.failcnt, "lines": lines,
    }
    memsw, swap = memcg.memsw, memcg.swap
    if memsw is not None and memsw.limit_kb > mem.limit_kb and _at_limit(memsw):
        out.append(Finding(
            "memsw_limit", WARNING,
            f"{path} reached its memory+swap limit of {format_bytes(memsw.limit_kb * 1024)}.",
            {**evidence, "memsw_usage_kb": memsw.usage_kb, "memsw_limit_kb": memsw.limit_kb},
            f"Raise memory.memsw.limit_in_bytes of {path} (cgroup v1) or cut the "
            "workload; the top consumers are listed below.",
        ))
    elif _at_limit(swap) and swap is not None and swap.limit_kb > 0:
        out.append(Finding(
            "swap_limit", WARNING,
            f"{path} used all of its swap allowance ({format_bytes(swap.limit_kb * 1024)}).",
            {**evidence, "swap_usage_kb": swap.usage_kb, "swap_limit_kb": swap.limit_kb},
            f"Raise memory.swap.max of {path}, or its memory.max.",
        ))
    else:
        knob = "memory.max" if v2 else "memory.limit_in_bytes"
        out.append(Finding(
            "memcg_limit", WARNING,
            f"{path} reached its memory limit of {format_bytes(mem.limit_kb * 1024)}; "
            "a cgroup limit, not a machine-wide shortage.",
            evidence,
            f"If the workload needs more, raise {knob} of {path} (for a service: "
            "`systemctl set-property UNIT MemoryMax=SIZE`); if it should not, fix "
            "the top consumer below.",
        ))
    return out


def _at_limit(counter: CounterLine | None) -> bool:
    """Usage at a finite limit (within one 64 kB charge batch)."""
    return (
        counter is not None
        and counter.limit_kb < UNLIMITED_KB
        and counter.usage_kb >= counter.limit_kb - 64
    )


def _system_findings(f: Facts) -> list[Finding]:
    event, b, total = f.event, f.breakdown, f.domain_kb
    memory, out = event.memory, []
    is_memcg = scope(event) == "memcg"
    if b is not None and total:
        out.extend(_category_findings(f, b, total))
    if is_memcg or not event.has_mem_info:
        return out
    swap_total, swap_free = memory.swap_total_kb, memory.swap_free_kb
    out.extend(_shortage_findings(f))
    if swap_total == 0:
        out.append(Finding(
            "no_swap", INFO,
            "There is no swap, so cold anonymous memory could not be moved out of RAM.",
            {"swap_total_kb": 0, "lines": _lines(event, "Total swap")},
            "A modest swap file or zram gives headroom and time: `fallocate -l 4G "
            "/swapfile && chmod 600 /swapfile && mkswap /swapfile && swapon /swapfile`.",
        ))
    elif swap_total is not None and swap_free is not None:
        swap_evidence: dict[str, object] = {
            "swap_total_kb": swap_total, "swap_free_kb": swap_free,
            "lines": _lines(event, "Free swap", "Total swap"),
        }
        if swap_free <= swap_total * SWAP_EXHAUSTED_SHARE:
            out.append(Finding(
                "swap_exhausted", WARNING,
                f"Swap was full as well ({format_bytes(swap_free * 1024)} free of "
                f"{format_bytes(swap_total * 1024)}).",
                swap_evidence,
                "More swap only delays this; find what grew (the top consumers below).",
            ))
        elif swap_free >= swap_total * SWAP_UNUSED_SHARE:
            out.append(Finding(
                "swap_unused", INFO,
                f"{format_bytes(swap_free * 1024)} of swap was still free: this "
                "allocation could not use it.",
                swap_evidence,
                "Check `sysctl vm.swappiness` (0 avoids swap), the cgroup's swap "
                "limits, and the gfp flags (no __GFP_IO means no swap-out).",
            ))
    return out


def _category_findings(f: Facts, b: dict[str, int], total: int) -> list[Finding]:
    event, out = f.event, []
    where = "of the cgroup's limit" if scope(event) == "memcg" else "of RAM"

    def share_of(key: str) -> float:
        return b.get(key, 0) / total

    def evidence(key: str, *needles: str) -> dict[str, object]:
        return {f"{key}_kb": b.get(key, 0), "domain_kb": total, "lines": _lines(event, *needles)}

    if share_of("slab_unreclaimable") >= SLAB_SHARE:
        slab = sorted(event.memory.unreclaimable_slab, key=lambda s: -s[2])[:3]
        caches = ", ".join(f"{name} {format_bytes(kb * 1024)}" for name, _, kb in slab)
        out.append(Finding(
            "kernel_slab", WARNING,
            f"Unreclaimable kernel slab held {_pct(share_of('slab_unreclaimable'))} {where}"
            + (f" (largest: {caches})." if caches else "."),
            evidence("slab_unreclaimable", "slab_unreclaimable"),
            "A kernel leak, not a process: `slabtop -o -s c` names the cache; look "
            "for the driver or feature that owns it and update or disable it.",
        ))
    if share_of("page_tables") >= PAGE_TABLES_SHARE:
        out.append(Finding(
            "page_tables", WARNING,
            f"Page tables held {_pct(share_of('page_tables'))} {where}: many processes or "
            "huge sparse mappings.",
            evidence("page_tables", "pagetables"),
            "Fewer processes (or threads with shared memory), or huge pages for the "
            "large mappings.",
        ))
    if share_of("shmem") >= SHMEM_SHARE:
        out.append(Finding(
            "shmem_tmpfs", WARNING,
            f"Shared memory and tmpfs held {_pct(share_of('shmem'))} {where}; killing "
            "processes does not free files in tmpfs.",
            evidence("shmem", "shmem"),
            "`df -h -t tmpfs` and `ipcs -m` show where; remove stale files in /dev/shm "
            "or /tmp and cap tmpfs sizes (`mount -o remount,size=...`).",
        ))
    if share_of("hugepages_reserved") >= HUGEPAGES_SHARE:
        out.append(Finding(
            "hugepages_reserved", WARNING,
            f"HugeTLB pages reserved {_pct(share_of('hugepages_reserved'))} {where}, "
            "which nothing else can use.",
            evidence("hugepages_reserved", "hugepages_total"),
            "Reserve only what the application uses: `sysctl -w vm.nr_hugepages=N` "
            "(or `hugepages=` on the kernel command line).",
        ))
    return out


def _shortage_findings(f: Facts) -> list[Finding]:
    event, memory, out = f.event, f.event.memory, []
    order = event.trigger.order or 0
    zones = memory.zones
    free_kb = sum(z.free_kb for z in zones)
    # The DMA zone is kept for devices (lowmem_reserve): it does not serve an
    # ordinary allocation, so its free pages do not count as headroom.
    usable_zones = [z for z in zones if z.name != "DMA"] or zones
    usable_free_kb = sum(z.free_kb for z in usable_zones)
    min_kb = sum(z.min_kb or 0 for z in usable_zones)
    high_kb = sum(z.high_kb or 0 for z in usable_zones)
    if order > 0 and memory.buddy and usable_free_kb > high_kb:
        block_kb = f.pkb << order
        usable = sum(n * kb for line in memory.buddy if line.zone != "DMA"
                     for n, kb in line.blocks if kb >= block_kb)  # fmt: skip
        if usable < block_kb * 4:
            out.append(Finding(
                "fragmentation", WARNING,
                f"An order-{order} allocation ({format_bytes(block_kb * 1024)} contiguous) "
                f"failed although {format_bytes(free_kb * 1024)} was free: memory was "
                "fragmented.",
                {"order": order, "free_kb": free_kb, "free_in_blocks_large_enough_kb": usable,
                 "lines": _lines(event, "*4kB", "*64kB", "*16kB")},
                "`echo 1 > /proc/sys/vm/compact_memory` now; raise vm.min_free_kbytes; "
                "find the driver or feature asking for high-order pages "
                f"(the trigger was {event.trigger.comm}).",
            ))
    if scope(event) in ("cpuset", "mempolicy"):
        nodes = allowed_nodes(event)
        other_free = sum(z.free_kb for z in zones if z.node not in nodes)
        out.append(Finding(
            "numa_binding", WARNING,
            f"The allocation was limited to NUMA node(s) {sorted(nodes)} by a "
            f"{'cpuset' if scope(event) == 'cpuset' else 'memory policy'}"
            + (f" while other nodes had {format_bytes(other_free * 1024)} free." if other_free
               else "."),
            {"nodes": sorted(nodes), "free_elsewhere_kb": other_free,
             "constraint": event.constraint, "lines": _lines(event, "oom-kill:", "cpuset=")},
            "Check the binding of the trigger (`numactl --show`, cpuset.mems of its "
            "cgroup); bind to more nodes or use a preferred policy instead of bind.",
        ))
    highmem = [z for z in zones if z.name == "HighMem"]
    normal = [z for z in zones if z.name == "Normal"]
    if (memory.highmem_pages or highmem) and normal and all(
        z.free_kb <= (z.min_kb or 0) for z in normal
    ) and sum(z.free_kb for z in highmem) > sum(z.min_kb or 0 for z in normal):
        out.append(Finding(
            "lowmem", WARNING,
            "Low memory (the 32-bit kernel's directly mapped Normal zone) ran out while "
            "HighMem still had free pages.",
            {"normal_free_kb": sum(z.free_kb for z in normal),
             "highmem_free_kb": sum(z.free_kb for z in highmem),
             "lines": _lines(event, "Normal free:", "HighMem free:")},
            "Move to a 64-bit kernel; until then reduce kernel memory use (slab, page "
            "tables, network buffers).",
        ))
    already_specific = {x.code for x in out}
    if zones and not already_specific and usable_free_kb <= high_kb * EXHAUSTED_HIGH_FACTOR:
        out.append(Finding(
            "system_exhausted", WARNING,
            f"The whole system ran out of memory: {format_bytes(usable_free_kb * 1024)} "
            f"free, near the zones' watermarks (min {format_bytes(min_kb * 1024)}, high "
            f"{format_bytes(high_kb * 1024)}).",
            {"free_kb": usable_free_kb, "min_watermark_kb": min_kb, "high_watermark_kb": high_kb,
             "lines": _lines(event, " free:")[:3]},
            "Reduce the workload or add memory; cap the largest consumers with memory "
            "cgroups so that one of them cannot take the machine down.",
        ))
    return out


def _consumer_findings(f: Facts) -> list[Finding]:
    event, out = f.event, []
    total = f.domain_kb
    where = "the cgroup's limit" if scope(event) == "memcg" else "RAM"
    # rss + swap against the domain with its swap: the badness domain (totalpages).
    domain_with_swap_kb = f.totalpages * f.pkb if f.totalpages else total
    if f.processes and domain_with_swap_kb:
        top = f.processes[0]
        share = (top.rss_kb + top.swap_kb) / domain_with_swap_kb
        if share >= RUNAWAY_SHARE:
            out.append(Finding(
                "runaway_process", WARNING,
                f"One process, {top.name} (pid {top.pids[0]}), held {_pct(share)} of the "
                "memory it could use (" + ("the cgroup's limit" if scope(event) == "memcg"
                                           else "RAM and swap") + ").",
                {"pid": top.pids[0], "comm": top.name, "rss_kb": top.rss_kb,
                 "swap_kb": top.swap_kb, "domain_kb": domain_with_swap_kb},
                f"Find out why {top.name} grew (a leak or an unbounded input; `oomlens "
                "history` shows growth between kills) and cap it: `systemd-run --scope "
                "-p MemoryMax=SIZE CMD`.",
            ))
    for group in f.groups[:3]:
        if len(group.pids) >= GROUP_MIN_PROCESSES and total:
            share = (group.rss_kb + group.swap_kb) / total
            if share >= GROUP_SHARE:
                out.append(Finding(
                    "process_group", WARNING,
                    f"{len(group.pids)} × {group.name} = {_pct(min(share, 1.0))} of {where} "
                    f"({format_bytes(group.rss_kb * 1024)} of RSS summed over the "
                    "processes; shared pages count in each).",
                    {"comm": group.name, "processes": len(group.pids), "rss_kb": group.rss_kb,
                     "swap_kb": group.swap_kb, "domain_kb": total},
                    f"Limit how many {group.name} processes run (e.g. a worker pool's "
                    "maximum) or put them in one memory cgroup with a limit.",
                ))
                break
    return out


def _choice_findings(f: Facts) -> list[Finding]:
    event, out = f.event, list[Finding]()
    victim = event.victim
    if victim is None:
        return out
    if f.totalpages is not None and f.era is not None and f.ranking:
        without_adj = adj_free_choice(event, f.totalpages, f.era, f.pkb)
        if without_adj is not None and f.chosen is not None and without_adj != f.chosen:
            row = next((r for r in event.tasks if r.pid == f.chosen), None)
            other = next((r for r in event.tasks if r.pid == without_adj), None)
            out.append(Finding(
                "adj_decided", INFO,
                f"oom_score_adj decided the victim: without it, {other.name if other else '?'} "
                f"(pid {without_adj}) would have been killed instead of "
                f"{victim.comm} (pid {f.chosen}).",
                {"chosen_pid": f.chosen,
                 "chosen_oom_score_adj": row.oom_score_adj if row else None,
                 "without_adj_pid": without_adj,
                 "without_adj_oom_score_adj": other.oom_score_adj if other else None},
                "Review the oom_score_adj values (`oomlens ls`); protect what must "
                "survive with `oomlens protect` rather than raising others.",
            ))
    if f.processes:
        top = f.processes[0]
        held_kb = victim_kb(event)
        if (
            held_kb is not None
            and top.pids[0] not in (victim.pid, f.chosen)
            and held_kb < (top.rss_kb + top.swap_kb) * COLLATERAL_RATIO
        ):
            out.append(Finding(
                "collateral_victim", WARNING,
                f"The victim {victim.comm} (pid {victim.pid}) held "
                f"{format_bytes(held_kb * 1024)}, but {top.name} (pid {top.pids[0]}) held "
                f"{format_bytes((top.rss_kb + top.swap_kb) * 1024)} and survived.",
                {"victim_pid": victim.pid, "victim_kb": held_kb,
                 "largest_pid": top.pids[0], "largest_comm": top.name,
                 "largest_kb": top.rss_kb + top.swap_kb},
                f"If {victim.comm} matters, protect it (`oomlens protect --pid "
                f"{victim.pid}`) and cap {top.name} instead.",
            ))
    return out


def _partial_findings(f: Facts) -> list[Finding]:
    event = f.event
    if event.has_header or event.victim is None or event.task_columns:
        return []
    previous = f.previous
    burst = (
        previous is not None
        and previous.monotonic is not None
        and event.monotonic is not None
        and 0 <= event.monotonic - previous.monotonic <= 5.0
    )
    why = (
        "it came within 5 s of the previous kill, and the kernel prints the report "
        "at most 10 times per 5 s (oom_rs in mm/oom_kill.c)"
        if burst
        else "the kernel rate-limits reports (10 per 5 s), or the log lost those lines"
    )
    return [Finding(
        "ratelimited", INFO,
        f"Only the kill line of this OOM is in the log: {why}.",
        {"lines": _lines(event, "Killed process"), "burst": burst},
        None,
    )]
