"""What one kernel OOM report says, as plain data.

Every field is what the kernel printed, in the kernel's units and words; a fact
the log did not show is None (or empty), never a guess. The parser
(`report/parser.py`) fills these; the diagnosis (`report/diagnose.py`) reads them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime


@dataclass(frozen=True, slots=True)
class LogLine:
    """One kernel message with its log prefix removed.

    `stream` separates writers whose lines can interleave in one file (the syslog
    host name; "" when the log does not say). `monotonic` is seconds since boot
    (`[  123.456789]` or a /dev/kmsg timestamp), `wallclock` the time of day if the
    prefix had one (timezone-aware when the prefix said which zone). `kernel` is
    False for a syslog line that another program wrote: it is never part of a report.
    """

    text: str
    source: str = ""
    lineno: int = 0
    stream: str = ""
    monotonic: float | None = None
    wallclock: datetime | None = None
    seq: int | None = None
    kernel: bool = True


@dataclass(slots=True)
class Trigger:
    """The task whose allocation invoked the OOM killer (dump_header())."""

    pid: int | None = None
    comm: str | None = None
    uid: int | None = None
    cpu: int | None = None
    gfp_mask: str | None = None
    gfp_flags: str | None = None
    order: int | None = None
    oom_score_adj: int | None = None
    oom_adj: int | None = None
    nodemask: str | None = None


@dataclass(slots=True)
class Victim:
    """The killed task: the `Kill process` and `Killed process` lines (and the
    oom_reaper's line once it freed the memory)."""

    pid: int
    comm: str
    score: int | None = None
    total_vm_kb: int | None = None
    anon_rss_kb: int | None = None
    file_rss_kb: int | None = None
    shmem_rss_kb: int | None = None
    uid: int | None = None
    pgtables_kb: int | None = None
    oom_score_adj: int | None = None
    reaped: bool = False
    reaped_anon_rss_kb: int | None = None


@dataclass(frozen=True, slots=True)
class Selection:
    """`Kill process P (x) score S or sacrifice child` (kernels before 5.1): the task
    select_bad_process() chose. The victim may be one of its children."""

    pid: int
    comm: str
    score: int


@dataclass(slots=True)
class CounterLine:
    """`memory: usage 403996kB, limit 403996kB, failcnt 0` and its siblings."""

    usage_kb: int
    limit_kb: int
    failcnt: int


@dataclass(slots=True)
class MemcgReport:
    """What a memory cgroup OOM prints (mem_cgroup_print_oom_context/_meminfo)."""

    oom_memcg: str | None = None
    task_memcg: str | None = None
    memory: CounterLine | None = None
    memsw: CounterLine | None = None
    swap: CounterLine | None = None
    kmem: CounterLine | None = None
    stats_path: str | None = None
    # memory.stat as printed: v2 and multi-line v1 in bytes, old one-line v1
    # ("cache:0KB rss:...KB") converted to bytes.
    stats: dict[str, int] = field(default_factory=dict)


@dataclass(slots=True)
class Zone:
    """`Node 0 Normal free:36692kB min:36784kB low:... high:... present:...`."""

    node: int
    name: str
    free_kb: int
    min_kb: int | None
    high_kb: int | None
    present_kb: int | None


@dataclass(slots=True)
class BuddyLine:
    """`Node 0 Normal: 1231*4kB (UEM) 391*8kB ... = 38260kB` (free blocks by order)."""

    node: int
    zone: str
    blocks: tuple[tuple[int, int], ...]  # (count, block size in kB) by order


@dataclass(slots=True)
class MemoryReport:
    """The Mem-Info block (show_mem()/__show_free_areas()) of a system-wide report."""

    page_size_kb: int | None = None
    ram_pages: int | None = None
    reserved_pages: int | None = None
    highmem_pages: int | None = None
    cma_reserved_pages: int | None = None
    swap_total_kb: int | None = None
    swap_free_kb: int | None = None
    pagecache_pages: int | None = None
    swapcache_pages: int | None = None
    # The first lines after "Mem-Info:", in pages: active_anon, slab_unreclaimable, ...
    meminfo: dict[str, int] = field(default_factory=dict)
    zones: list[Zone] = field(default_factory=list)
    buddy: list[BuddyLine] = field(default_factory=list)
    # (node, hugepages_total, hugepages_free, hugepages_size_kb)
    hugepages: list[tuple[int, int, int, int]] = field(default_factory=list)
    # dump_unreclaimable_slab(): (cache name, used kB, total kB)
    unreclaimable_slab: list[tuple[str, int, int]] = field(default_factory=list)


@dataclass(slots=True)
class TaskRow:
    """One row of the task table (dump_task()), in pages as the kernel prints it.
    Columns that this kernel's table does not have are None."""

    pid: int
    uid: int | None
    tgid: int | None
    total_vm: int | None
    rss: int | None
    name: str
    rss_anon: int | None = None
    rss_file: int | None = None
    rss_shmem: int | None = None
    nr_ptes: int | None = None
    nr_pmds: int | None = None
    pgtables_bytes: int | None = None
    swapents: int | None = None
    oom_score_adj: int | None = None
    oom_adj: int | None = None
    cpu: int | None = None


@dataclass(slots=True)
class OomEvent:
    """One OOM report: everything the kernel printed for one invocation of the
    OOM killer, or as much of it as the log kept (`missing` says what is not there).
    """

    source: str
    first_lineno: int
    stream: str = ""
    monotonic: float | None = None
    wallclock: datetime | None = None
    seq: int | None = None
    kernel_version: str | None = None
    # "invoked oom-killer" header seen; the event is then at least a head.
    has_header: bool = False
    trigger: Trigger = field(default_factory=Trigger)
    constraint: str | None = None  # CONSTRAINT_NONE, _CPUSET, _MEMORY_POLICY, _MEMCG
    # The oom-kill: summary line's fields, as printed (nodemask, cpuset, ...).
    oom_kill_fields: dict[str, str] = field(default_factory=dict)
    cpuset: str | None = None
    mems_allowed: str | None = None
    memcg: MemcgReport | None = None
    memory: MemoryReport = field(default_factory=MemoryReport)
    has_mem_info: bool = False
    task_columns: tuple[str, ...] = ()
    tasks: list[TaskRow] = field(default_factory=list)
    # The prefix of the kill line: "Out of memory", "Memory cgroup out of memory",
    # "Out of memory (oom_kill_allocating_task)", or another caller's message.
    kill_message: str | None = None
    selection: Selection | None = None
    victim: Victim | None = None
    # memory.oom.group: the cgroup whose tasks all died, and the others killed.
    oom_group: str | None = None
    group_victims: list[Victim] = field(default_factory=list)
    no_killable: bool = False
    panic: str | None = None
    lines: list[LogLine] = field(default_factory=list)

    @property
    def memcg_scope(self) -> bool:
        return (
            self.constraint == "CONSTRAINT_MEMCG"
            or self.memcg is not None
            or (self.kill_message or "").startswith("Memory cgroup")
        )
