"""What an OOM event's numbers say, computed the kernel's way: its scope, what is
missing, where memory went, the badness domain (totalpages) and the kill order
recomputed from the task table, and the biggest consumers. Pure."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, replace

from oomlens.kernel.badness import ERAS, Era, era_for, parse_kernel_version
from oomlens.kernel.select import rank_tasks
from oomlens.kernel.task import OOM_SCORE_ADJ_MIN, Task
from oomlens.report.model import OomEvent, TaskRow

# A cgroup limit this large is "max" (PAGE_COUNTER_MAX in kB on 64-bit).
UNLIMITED_KB = 1 << 50


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
        # 4.8-4.18 print no constraint, but the header's nodemask: one that leaves
        # out a node with memory is a memory policy (mm/oom_kill.c: constrained_alloc()).
        policy = _node_list(event.trigger.nodemask)
        present = {zone.node for zone in event.memory.zones} | _node_list(event.mems_allowed)
        if policy and policy < present:
            return "mempolicy"
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


def chosen_pid(event: OomEvent) -> int | None:
    """The task select_bad_process() picked: the `Kill process` line's (kernels
    that could sacrifice a child), else the victim."""
    if event.selection is not None:
        return event.selection.pid
    if event.victim is not None:
        return event.victim.pid
    return None


# -- where memory went -------------------------------------------------------


def memory_breakdown(event: OomEvent, pkb: int) -> tuple[dict[str, int] | None, int | None]:
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


def domain_totalpages(event: OomEvent, pkb: int) -> int | None:
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
        nodes = allowed_nodes(event)
        present = sum(zone.present_kb or 0 for zone in memory.zones if zone.node in nodes)
        if nodes and present:
            return present // pkb + swap_pages
    if memory.ram_pages is None:
        return None
    return memory.ram_pages - (memory.reserved_pages or 0) + swap_pages


def allowed_nodes(event: OomEvent) -> set[int]:
    """Nodes of the nodemask (mempolicy) or mems_allowed (cpuset)."""
    text = event.oom_kill_fields.get("nodemask") or event.trigger.nodemask
    if not text or text == "(null)" or scope(event) == "cpuset":
        text = event.mems_allowed
    return _node_list(text)


def _node_list(text: str | None) -> set[int]:
    """`0-1,3` -> {0, 1, 3}; "(null)" or None -> empty."""
    nodes: set[int] = set()
    for part in (text or "").split(","):
        first, _, last = part.partition("-")
        if first.isdigit() and (not last or last.isdigit()):
            nodes.update(range(int(first), int(last or first) + 1))
    return nodes


# -- the kernel's choice, recomputed -----------------------------------------


def era_of_report(event: OomEvent) -> Era | None:
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


def table_tasks(event: OomEvent, pkb: int) -> list[Task]:
    """The task table as the OOM killer's view of each task, in scan order
    (dump_tasks() walks the tasks the way select_bad_process() does); rows without
    any rss column are left out."""
    rows = enumerate(event.tasks)
    return [task for i, row in rows if (task := _task(row, i, pkb)) is not None]


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


def recomputed_ranking(
    event: OomEvent, totalpages: int | None, era: Era | None, pkb: int
) -> list[RankedRow]:
    if totalpages is None or era is None or not event.tasks:
        return []
    return [
        RankedRow(r.task.pid, r.task.comm, r.points, r.rank)
        for r in rank_tasks(table_tasks(event, pkb), totalpages, era)
    ]


def adj_free_choice(event: OomEvent, totalpages: int, era: Era, pkb: int) -> int | None:
    """Who would have died if no oom_score_adj were set (other than -1000, which
    is not a score but an exemption)."""
    tasks = [
        task if task.oom_score_adj == OOM_SCORE_ADJ_MIN else replace(task, oom_score_adj=0)
        for task in table_tasks(event, pkb)
    ]
    ranked = rank_tasks(tasks, totalpages, era)
    return ranked[0].task.pid if ranked and ranked[0].rank == 1 else None


# -- culprits ------------------------------------------------------------------


def top_consumers(
    event: OomEvent, pkb: int, domain_kb: int | None
) -> tuple[list[Consumer], list[Consumer]]:
    def share(kb: int) -> float | None:
        return kb / domain_kb if domain_kb else None

    processes: list[Consumer] = []
    by_name: dict[str, list[TaskRow]] = defaultdict(list)
    for row in event.tasks:
        rss = row_rss(row)
        if rss is None:
            continue
        rss_kb, swap_kb = rss * pkb, (row.swapents or 0) * pkb
        processes.append(Consumer(row.name, (row.pid,), rss_kb, swap_kb, share(rss_kb)))
        by_name[row.name].append(row)
    processes.sort(key=lambda c: -(c.rss_kb + c.swap_kb))
    groups = []
    for name, rows in by_name.items():
        rss_kb = sum((row_rss(row) or 0) for row in rows) * pkb
        swap_kb = sum((row.swapents or 0) for row in rows) * pkb
        groups.append(Consumer(name, tuple(r.pid for r in rows), rss_kb, swap_kb, share(rss_kb)))
    groups.sort(key=lambda c: -(c.rss_kb + c.swap_kb))
    return processes, groups


def row_rss(row: TaskRow) -> int | None:
    if row.rss_anon is not None:
        return (row.rss_anon or 0) + (row.rss_file or 0) + (row.rss_shmem or 0)
    return row.rss


def victim_kb(event: OomEvent) -> int | None:
    """Memory the victim held when killed (anon + file + shmem RSS) as its kill
    line printed it, else as its task-table row did."""
    victim = event.victim
    if victim is None or victim.anon_rss_kb is None:
        row = next((r for r in event.tasks if victim and r.pid == victim.pid), None)
        rss = None if row is None else row_rss(row)
        return None if rss is None else rss * page_kb(event)
    return victim.anon_rss_kb + (victim.file_rss_kb or 0) + (victim.shmem_rss_kb or 0)
