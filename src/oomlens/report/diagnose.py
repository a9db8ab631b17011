"""Root cause of one OOM event: where memory went, what kind of shortage it was,
culprit vs victim, the kernel's choice recomputed, and what to change.

Pure: reads an `OomEvent`, returns a `Diagnosis`. Every finding has a stable code
(alerts key on it), a severity, one sentence, the evidence it rests on (numbers
and the lines they came from) and, where there is one, the fix.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field, replace

from oomlens.kernel.badness import ERAS, Era, era_for, parse_kernel_version
from oomlens.kernel.select import rank_tasks
from oomlens.kernel.task import OOM_SCORE_ADJ_MIN, Task
from oomlens.report.model import CounterLine, OomEvent, TaskRow
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
# mm/page_alloc.c: PAGE_ALLOC_COSTLY_ORDER; the OOM killer is not invoked above it.
COSTLY_ORDER = 3
# A cgroup limit this large is "max" (PAGE_COUNTER_MAX in kB on 64-bit).
UNLIMITED_KB = 1 << 50

# Which finding is the event's main one when several apply: the cause before the
# consequence, the specific before the general.
_PRIORITY = (
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
class Consumer:
    """A process or a group of processes with the same name, by memory."""

    name: str
    pids: tuple[int, ...]
    rss_kb: int
    swap_kb: int
    share: float | None


@dataclass(frozen=True, slots=True)
class RankedRow:
    """A task-table row with the badness the kernel computed for it (recomputed)."""

    pid: int
    name: str
    points: int | None
    rank: int | None


@dataclass(frozen=True, slots=True)
class Diagnosis:
    # kB per category ("user_anon", "page_cache", ...); None when the report had
    # no memory breakdown.
    breakdown: dict[str, int] | None
    domain_kb: int | None
    totalpages: int | None
    era: str | None
    ranking: tuple[RankedRow, ...]
    # pid the recomputation picks, and whether it is the pid the kernel chose
    # (None: the report does not allow the check).
    predicted_pid: int | None
    choice_checks_out: bool | None
    top_processes: tuple[Consumer, ...]
    top_groups: tuple[Consumer, ...]
    findings: tuple[Finding, ...]

    @property
    def main(self) -> Finding | None:
        return self.findings[0] if self.findings else None


def page_kb(event: OomEvent) -> int:
    """The page size the report shows in its buddy lines, else the usual 4 kB."""
    return event.memory.page_size_kb or 4


def scope(event: OomEvent) -> str:
    """global | memcg | cpuset | mempolicy | unknown (from the constraint, or the
    lines printed on kernels without the oom-kill: summary)."""
    by_constraint = {
        "CONSTRAINT_NONE": "global",
        "CONSTRAINT_MEMCG": "memcg",
        "CONSTRAINT_CPUSET": "cpuset",
        "CONSTRAINT_MEMORY_POLICY": "mempolicy",
    }
    if event.constraint in by_constraint:
        return by_constraint[event.constraint]
    if event.memcg_scope:
        return "memcg"
    if event.has_mem_info:
        return "global"
    return "unknown"


def missing_parts(event: OomEvent) -> list[str]:
    """What a full report has and this one lacks: header, mem_info, task_table,
    victim (a panic or "no killable processes" report has no victim to lack)."""
    missing: list[str] = []
    if not event.has_header:
        missing.append("header")
    memcg_counters = event.memcg is not None and event.memcg.memory is not None
    if not event.has_mem_info and not memcg_counters:
        missing.append("mem_info")
    if not event.task_columns:
        missing.append("task_table")
    if event.victim is None and not event.no_killable and event.panic is None:
        missing.append("victim")
    return missing


def diagnose(event: OomEvent, previous: OomEvent | None = None) -> Diagnosis:
    """`previous` is the event before this one in the same stream (for a burst)."""
    pkb = page_kb(event)
    breakdown, domain_kb = _breakdown(event, pkb)
    totalpages = _totalpages(event, pkb)
    era = _era(event)
    ranking = _ranking(event, totalpages, era, pkb)
    predicted = next((row.pid for row in ranking if row.rank == 1), None)
    chosen = _chosen_pid(event)
    checks_out = None if predicted is None or chosen is None else predicted == chosen
    processes, groups = _consumers(event, pkb, domain_kb)
    facts = _Facts(event, pkb, breakdown, domain_kb, totalpages, era, ranking, predicted,
                   chosen, processes, groups, previous)  # fmt: skip
    findings = sorted(_findings(facts), key=lambda f: _PRIORITY.index(f.code))
    return Diagnosis(
        breakdown=breakdown,
        domain_kb=domain_kb,
        totalpages=totalpages,
        era=None if era is None else era.name,
        ranking=tuple(ranking),
        predicted_pid=predicted,
        choice_checks_out=checks_out,
        top_processes=tuple(processes[:5]),
        top_groups=tuple(groups[:5]),
        findings=tuple(findings),
    )


def _chosen_pid(event: OomEvent) -> int | None:
    """The task select_bad_process() picked: the `Kill process` line's (kernels
    that could sacrifice a child), else the victim."""
    if event.selection is not None:
        return event.selection.pid
    if event.victim is not None:
        return event.victim.pid
    return None


# -- where memory went -------------------------------------------------------


def _breakdown(event: OomEvent, pkb: int) -> tuple[dict[str, int] | None, int | None]:
    memcg = event.memcg
    if memcg is not None and memcg.memory is not None:
        return _memcg_breakdown(event), memcg.memory.limit_kb
    memory = event.memory
    info = memory.meminfo
    if not info or memory.ram_pages is None:
        return None, None

    def pages(*keys: str) -> int:
        return sum(info.get(key, 0) for key in keys) * pkb

    total = (memory.ram_pages - (memory.reserved_pages or 0)) * pkb
    shmem = pages("shmem")
    anon = pages("active_anon", "inactive_anon", "isolated_anon")
    parts = {
        # shmem pages sit on the anon LRU lists (mm/shmem.c; split LRU since 2.6.28).
        "user_anon": max(anon - shmem, 0),
        "page_cache": pages("active_file", "inactive_file", "isolated_file"),
        "shmem": shmem,
        "unevictable": pages("unevictable"),
        "slab_unreclaimable": pages("slab_unreclaimable"),
        "slab_reclaimable": pages("slab_reclaimable"),
        "page_tables": pages("pagetables", "sec_pagetables"),
        "hugepages_reserved": sum(total_ * size for _, total_, _, size in memory.hugepages),
        "free": pages("free"),
    }
    parts["unaccounted"] = max(total - sum(parts.values()), 0)
    return parts, total


def _memcg_breakdown(event: OomEvent) -> dict[str, int]:
    """From the memcg's memory.stat as printed (bytes). v2 counts shmem inside
    `file`; v1 counts it inside `cache`; v1 `total_*` keys are hierarchical."""
    memcg = event.memcg
    assert memcg is not None and memcg.memory is not None
    stats = memcg.stats

    def kb(*keys: str) -> int:
        for key in keys:
            if key in stats:
                return stats[key] // 1024
        return 0

    shmem = kb("total_shmem", "shmem")
    if "anon" in stats:  # cgroup v2
        parts = {
            "user_anon": kb("anon"),
            "page_cache": max(kb("file") - shmem, 0),
            "shmem": shmem,
            "slab_unreclaimable": kb("slab_unreclaimable"),
            "slab_reclaimable": kb("slab_reclaimable"),
            "page_tables": kb("pagetables"),
            "kernel_stack": kb("kernel_stack"),
            "sock": kb("sock"),
        }
    else:
        parts = {
            "user_anon": kb("total_rss", "rss"),
            "page_cache": max(kb("total_cache", "cache") - shmem, 0),
            "shmem": shmem,
            "kernel": memcg.kmem.usage_kb if memcg.kmem is not None else 0,
        }
    parts["unaccounted"] = max(memcg.memory.usage_kb - sum(parts.values()), 0)
    return parts


def _totalpages(event: OomEvent, pkb: int) -> int | None:
    """The domain size the kernel used for badness (mm/oom_kill.c:
    constrained_alloc(); mm/memcontrol.c: mem_cgroup_get_max())."""
    memory = event.memory
    swap_pages = (memory.swap_total_kb or 0) // pkb
    memcg = event.memcg
    if memcg is not None and memcg.memory is not None:
        limit = memcg.memory.limit_kb
        swap_kb = 0
        if memcg.memsw is not None and memcg.memsw.limit_kb < UNLIMITED_KB:
            swap_kb = max(memcg.memsw.limit_kb - limit, 0)
        elif memcg.swap is not None and memcg.swap.limit_kb < UNLIMITED_KB:
            swap_kb = memcg.swap.limit_kb
        if memory.swap_total_kb is not None:
            swap_kb = min(swap_kb, memory.swap_total_kb)
        return max((limit + swap_kb) // pkb, 1)
    if scope(event) in ("cpuset", "mempolicy"):
        nodes = _allowed_nodes(event)
        present = sum(zone.present_kb or 0 for zone in memory.zones if zone.node in nodes)
        if nodes and present:
            return present // pkb + swap_pages
    if memory.ram_pages is None:
        return None
    return memory.ram_pages - (memory.reserved_pages or 0) + swap_pages


def _allowed_nodes(event: OomEvent) -> set[int]:
    """Nodes of the nodemask (mempolicy) or mems_allowed (cpuset): "0-1,3"."""
    text = event.oom_kill_fields.get("nodemask")
    if not text or text == "(null)" or scope(event) == "cpuset":
        text = event.mems_allowed
    nodes: set[int] = set()
    for part in (text or "").split(","):
        first, _, last = part.partition("-")
        if first.isdigit() and (not last or last.isdigit()):
            nodes.update(range(int(first), int(last or first) + 1))
    return nodes


# -- the kernel's choice, recomputed -----------------------------------------


def _era(event: OomEvent) -> Era | None:
    """The badness rules of the kernel that printed the report: by its version when
    the report names it, else by the task table's columns (introduced with them)."""
    if event.kernel_version:
        try:
            return era_for(parse_kernel_version(event.kernel_version))
        except ValueError:
            pass
    columns = set(event.task_columns)
    by_name = {era.name: era for era in ERAS}
    if "rss_anon" in columns:
        return by_name["5.9"]
    if "pgtables_bytes" in columns:
        return by_name["4.17"]
    if "nr_pmds" in columns:
        return by_name["3.14"]
    if "nr_ptes" in columns and "oom_score_adj" in columns:
        return by_name["3.5"]
    return None


def _task(row: TaskRow, order: int, pkb: int) -> Task | None:
    if row.rss is None and row.rss_anon is None:
        return None
    if row.pgtables_bytes is not None:
        pgtables = row.pgtables_bytes
    else:
        pgtables = ((row.nr_ptes or 0) + (row.nr_pmds or 0)) * pkb * 1024
    split = row.rss_anon is not None
    return Task(
        pid=row.pid,
        comm=row.name,
        oom_score_adj=row.oom_score_adj or 0,
        rss_anon_pages=(row.rss_anon or 0) if split else (row.rss or 0),
        rss_file_pages=row.rss_file or 0,
        rss_shmem_pages=row.rss_shmem or 0,
        swapents=row.swapents or 0,
        pgtables_bytes=pgtables,
        page_size=pkb * 1024,
        # pid 1 of the initial namespace is never picked; the table cannot show
        # namespaces, so a container's pid 1 (only in a host log) counts as init too.
        is_global_init=row.pid == 1,
        # The root bonus of 2.6.36-4.16 needs CAP_SYS_ADMIN; uid 0 stands in for it.
        cap_sys_admin=row.uid == 0,
        scan_order=order,
    )


def _ranking(
    event: OomEvent, totalpages: int | None, era: Era | None, pkb: int
) -> list[RankedRow]:
    if totalpages is None or era is None or not event.tasks:
        return []
    tasks = [t for i, row in enumerate(event.tasks) if (t := _task(row, i, pkb)) is not None]
    return [
        RankedRow(r.task.pid, r.task.comm, r.points, r.rank)
        for r in rank_tasks(tasks, totalpages, era)
    ]


def _adj_free_choice(event: OomEvent, totalpages: int, era: Era, pkb: int) -> int | None:
    """Who would have died if no oom_score_adj were set (other than -1000, which
    is not a score but an exemption)."""
    tasks = []
    for i, row in enumerate(event.tasks):
        task = _task(row, i, pkb)
        if task is not None:
            adj = task.oom_score_adj if task.oom_score_adj == OOM_SCORE_ADJ_MIN else 0
            tasks.append(replace(task, oom_score_adj=adj))
    ranked = rank_tasks(tasks, totalpages, era)
    return ranked[0].task.pid if ranked and ranked[0].rank == 1 else None


# -- culprits ------------------------------------------------------------------


def _consumers(
    event: OomEvent, pkb: int, domain_kb: int | None
) -> tuple[list[Consumer], list[Consumer]]:
    def share(kb: int) -> float | None:
        return kb / domain_kb if domain_kb else None

    processes: list[Consumer] = []
    by_name: dict[str, list[TaskRow]] = defaultdict(list)
    for row in event.tasks:
        rss = _row_rss(row)
        if rss is None:
            continue
        rss_kb, swap_kb = rss * pkb, (row.swapents or 0) * pkb
        processes.append(Consumer(row.name, (row.pid,), rss_kb, swap_kb, share(rss_kb)))
        by_name[row.name].append(row)
    processes.sort(key=lambda c: -(c.rss_kb + c.swap_kb))
    groups = []
    for name, rows in by_name.items():
        rss_kb = sum((_row_rss(row) or 0) for row in rows) * pkb
        swap_kb = sum((row.swapents or 0) for row in rows) * pkb
        groups.append(Consumer(name, tuple(r.pid for r in rows), rss_kb, swap_kb, share(rss_kb)))
    groups.sort(key=lambda c: -(c.rss_kb + c.swap_kb))
    return processes, groups


def _row_rss(row: TaskRow) -> int | None:
    if row.rss_anon is not None:
        return (row.rss_anon or 0) + (row.rss_file or 0) + (row.rss_shmem or 0)
    return row.rss


# -- findings ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Facts:
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


def _findings(f: _Facts) -> list[Finding]:
    out: list[Finding] = []
    for check in (_trigger_findings, _memcg_findings, _system_findings,
                  _consumer_findings, _choice_findings, _partial_findings):  # fmt: skip
        out.extend(check(f))
    return out


def _trigger_findings(f: _Facts) -> list[Finding]:
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


def _memcg_findings(f: _Facts) -> list[Finding]:
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


def _system_findings(f: _Facts) -> list[Finding]:
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


def _category_findings(f: _Facts, b: dict[str, int], total: int) -> list[Finding]:
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


def _shortage_findings(f: _Facts) -> list[Finding]:
    event, memory, out = f.event, f.event.memory, []
    order = event.trigger.order or 0
    zones = memory.zones
    free_kb = sum(z.free_kb for z in zones)
    min_kb = sum(z.min_kb or 0 for z in zones)
    high_kb = sum(z.high_kb or 0 for z in zones)
    if order > 0 and memory.buddy and free_kb > high_kb:
        block_kb = f.pkb << order
        usable = sum(n * kb for line in memory.buddy for n, kb in line.blocks if kb >= block_kb)
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
        nodes = _allowed_nodes(event)
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
    if zones and not already_specific and free_kb <= max(min_kb, 1) * 2:
        out.append(Finding(
            "system_exhausted", WARNING,
            f"The whole system ran out of memory: {format_bytes(free_kb * 1024)} free, "
            f"near the zones' min watermarks ({format_bytes(min_kb * 1024)}).",
            {"free_kb": free_kb, "min_watermark_kb": min_kb,
             "lines": _lines(event, " free:")[:3]},
            "Reduce the workload or add memory; cap the largest consumers with memory "
            "cgroups so that one of them cannot take the machine down.",
        ))
    return out


def _consumer_findings(f: _Facts) -> list[Finding]:
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


def _choice_findings(f: _Facts) -> list[Finding]:
    event, out = f.event, list[Finding]()
    victim = event.victim
    if victim is None:
        return out
    if f.totalpages is not None and f.era is not None and f.ranking:
        without_adj = _adj_free_choice(event, f.totalpages, f.era, f.pkb)
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
        victim_kb = _victim_kb(event)
        if (
            victim_kb is not None
            and top.pids[0] not in (victim.pid, f.chosen)
            and victim_kb < (top.rss_kb + top.swap_kb) * COLLATERAL_RATIO
        ):
            out.append(Finding(
                "collateral_victim", WARNING,
                f"The victim {victim.comm} (pid {victim.pid}) held "
                f"{format_bytes(victim_kb * 1024)}, but {top.name} (pid {top.pids[0]}) held "
                f"{format_bytes((top.rss_kb + top.swap_kb) * 1024)} and survived.",
                {"victim_pid": victim.pid, "victim_kb": victim_kb,
                 "largest_pid": top.pids[0], "largest_comm": top.name,
                 "largest_kb": top.rss_kb + top.swap_kb},
                f"If {victim.comm} matters, protect it (`oomlens protect --pid "
                f"{victim.pid}`) and cap {top.name} instead.",
            ))
    return out


def _victim_kb(event: OomEvent) -> int | None:
    victim = event.victim
    if victim is None or victim.anon_rss_kb is None:
        row = next((r for r in event.tasks if victim and r.pid == victim.pid), None)
        rss = None if row is None else _row_rss(row)
        return None if rss is None else rss * page_kb(event)
    return victim.anon_rss_kb + (victim.file_rss_kb or 0) + (victim.shmem_rss_kb or 0)


def _partial_findings(f: _Facts) -> list[Finding]:
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
