"""Assemble kernel OOM reports from a stream of log lines.

Formats are recognised by line content, never by kernel version: vendors backport
(RHEL 6's 2.6.32 prints 3.x lines). The lines come from these kernel functions:
- mm/oom_kill.c: dump_header() ("invoked oom-killer"), dump_tasks()/dump_task()
  (the task table), dump_oom_summary() ("oom-kill:constraint=..."),
  oom_kill_process() ("Kill process N (x) score S or sacrifice child", < 5.1;
  "Tasks in X are going to be killed due to memory.oom.group set", 4.19+),
  __oom_kill_process() ("Killed process N (x) total-vm:..."), oom_reap_task_mm()
  ("oom_reaper: reaped process"), out_of_memory() ("Out of memory and no
  killable processes..."), check_panic_on_oom() (the panic_on_oom panic);
- lib/dump_stack.c: dump_stack_print_info() ("CPU: N PID: P Comm: x ... version"),
  older arch code "Pid: N, comm: x ... version";
- mm/page_alloc.c / mm/show_mem.c: show_mem(), __show_free_areas() (Mem-Info,
  zones, buddy lists, hugepages, "N pages RAM"), mm/slab_common.c:
  dump_unreclaimable_slab();
- mm/memcontrol.c: mem_cgroup_print_oom_context() ("Task in A killed as a result
  of limit of B", < 4.19), mem_cgroup_print_oom_meminfo() ("memory: usage ...",
  "Memory cgroup stats for /A:" one-line (old v1) or multi-line (v1 4.19+, v2)).

One OOM invocation prints its lines under oom_lock, so a stream (one host) never
interleaves two reports' core lines; other kernel messages may interleave, and the
oom_reaper's line comes asynchronously, possibly after the next report started.
Lines that belong to no report (a lone "Killed process" of a rate-limited kill, the
tail of a cut report) make partial events; a value is never taken from a
neighbouring report.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from oomlens.report.model import (
    BuddyLine,
    CounterLine,
    LogLine,
    MemcgReport,
    OomEvent,
    Selection,
    TaskRow,
    Victim,
    Zone,
)

# A report without its victim line gives up after this many lines that are no part
# of it (a cut log): a full report's unrecognised lines (call trace, registers) are
# about 100.
_STALE_AFTER = 600
# Lines kept per event for evidence and for the stored report.
_MAX_EVENT_LINES = 5000
# Emitted events remembered per stream to give them their oom_reaper line.
_REAPER_MEMORY = 64

_HEADER = re.compile(r"^(?P<comm>.*?) invoked oom-killer: (?P<fields>.*)$")
_GFP = re.compile(r"gfp_mask=(?P<mask>0x[0-9a-fA-F]+)(?:\((?P<flags>[^)]*)\))?")
_HEADER_INT = re.compile(r"\b(order|oom_score_adj|oom_adj|oomkilladj)=(-?\d+)")
_CPUSET = re.compile(r"^(?P<comm>.*) cpuset=(?P<cpuset>\S+) mems_allowed=(?P<mems>\S*)$")
# "Tainted: G           OE      6.1.1-arch1-1 #1": taint letters and blanks, then
# the release, which starts with a digit.
_TAINT_VERSION = r"(?:Not tainted|Tainted:[A-Z ]*?)\s*(?P<version>\d[^\s]*)"
_CPU_LINE = re.compile(
    r"^CPU: (?P<cpu>\d+) (?:UID: (?P<uid>\d+) )?PID: (?P<pid>\d+) Comm: (?P<comm>.*?) "
    + _TAINT_VERSION
)
_PID_LINE = re.compile(r"^Pid: (?P<pid>\d+), comm: (?P<comm>.*?) " + _TAINT_VERSION)
_PID_LINE_SHORT = re.compile(r"^Pid: (?P<pid>\d+), comm: (?P<comm>.*?)$")

_KEY_PAGES = re.compile(r"([A-Za-z_()]+):(\d+)(?![\dkKmM])")
_ZONE = re.compile(r"^Node (?P<node>\d+) (?P<zone>\w+) free:(?P<free>\d+)kB")
_ZONE_FIELD = re.compile(r"\b(min|low|high|present|managed):(\d+)kB")
_BUDDY = re.compile(r"^Node (?P<node>\d+) (?P<zone>\w+): (?P<blocks>.*?) = (?P<total>\d+)kB$")
_BLOCK = re.compile(r"(\d+)\*(\d+)kB")
_HUGEPAGES = re.compile(
    r"^Node (\d+) hugepages_total=(\d+) hugepages_free=(\d+) hugepages_surp=\d+ "
    r"hugepages_size=(\d+)kB"
)
_PAGES_LINE = re.compile(
    r"^(?P<n>\d+) (?P<what>pages RAM|pages HighMem/MovableOnly|pages reserved|"
    r"pages cma reserved|total pagecache pages|pages in swap cache)$"
)
_SWAP_LINE = re.compile(r"^(?P<what>Free swap|Total swap)\s*=\s*(?P<kb>\d+)kB$")
_SLAB_ROW = re.compile(r"^(?P<name>\S+)\s+(?P<used>\d+)KB\s+(?P<total>\d+)KB$")

_TASK_IN = re.compile(r"^Task in (?P<task>.*) killed as a result of limit of (?P<oom>.*)$")
_COUNTER = re.compile(
    r"^(?P<name>memory|memory\+swap|swap|kmem): usage (?P<usage>\d+)kB, "
    r"limit (?P<limit>\d+)kB, failcnt (?P<failcnt>\d+)"
)
_STATS_FOR = re.compile(r"^Memory cgroup stats for (?P<path>.*?):(?P<inline> .*)?$")
_STAT_ONELINE = re.compile(r"(\w+):(\d+)KB")
_STAT_LINE = re.compile(r"^(?P<key>[a-z_]\w*) (?P<value>\d+)$")

_TASK_HEADER = re.compile(r"^\[\s*pid\s*\]\s+(?P<columns>.*\bname)$")
_TASK_ROW = re.compile(r"^\[\s*(?P<pid>\d+)\]\s+(?P<rest>.*)$")

_OOM_KILL = re.compile(
    r"^oom-kill:constraint=(?P<constraint>[^,]*),(?P<fields>.*?),?task=(?P<task>.*),"
    r"pid=(?P<pid>\d+),uid=(?P<uid>\d+)$"
)
_SELECT = re.compile(
    r"^(?:(?P<message>.*?): )?[Kk]ill process (?P<pid>\d+) \((?P<comm>.*)\) "
    r"score (?P<score>-?\d+) or (?:sacrifice child|a child)"
)
_KILLED = re.compile(
    r"^(?:(?P<message>.*?): )?Killed process (?P<pid>\d+)(?:, UID (?P<uid_rhel6>\d+),)? "
    r"\((?P<comm>.*)\)(?P<rest>(?:,? (?:UID \d+, )?total-vm:.*)?)\.?$"
)
_KILLED_KB = re.compile(r"\b(total-vm|anon-rss|file-rss|shmem-rss|pgtables):(\d+)kB")
_KILLED_UID = re.compile(r"\bUID[: ](\d+)")
_KILLED_ADJ = re.compile(r"\boom_score_adj:(-?\d+)")
_REAPED = re.compile(
    r"^oom_reaper: reaped process (?P<pid>\d+) \((?P<comm>.*)\), now anon-rss:(?P<anon>\d+)kB"
)
_OOM_GROUP = re.compile(r"^Tasks in (?P<path>.*) are going to be killed due to memory\.oom\.group")
_NO_KILLABLE = "Out of memory and no killable processes"
_PANIC = re.compile(r"^Kernel panic - not syncing: (?P<text>.*)$")

_TASK_COLUMNS = frozenset(
    {
        "uid", "tgid", "total_vm", "rss", "rss_anon", "rss_file", "rss_shmem", "nr_ptes",
        "nr_pmds", "pgtables_bytes", "swapents", "oom_score_adj", "oom_adj", "cpu",
    }
)  # fmt: skip


@dataclass(slots=True)
class _Stream:
    """Parser state of one writer (one host)."""

    event: OomEvent | None = None
    # What the next unrecognised lines are: "meminfo" (Mem-Info counters),
    # "stats" (memcg memory.stat lines), "slab" (unreclaimable slab rows), "tasks".
    section: str = ""
    columns: tuple[str, ...] = ()
    idle_lines: int = 0
    recent: OrderedDict[int, OomEvent] = field(default_factory=OrderedDict)


class ReportParser:
    """Streaming assembler: `feed(line)` returns the events that the line closed;
    `finish()` returns the rest. Events are complete objects when returned, except
    that a later `oom_reaper` line may still mark their victim reaped."""

    def __init__(self) -> None:
        self._streams: dict[str, _Stream] = {}

    def feed(self, line: LogLine) -> list[OomEvent]:
        if not line.kernel:
            return []
        stream = self._streams.get(line.stream)
        if stream is None:
            stream = self._streams[line.stream] = _Stream()
        return _feed(stream, line)

    def flush(self, stream_name: str | None = None) -> list[OomEvent]:
        """Close open events (of one stream, or all): for a live follower after a
        quiet period. A report still waiting for its kill line is emitted as it is."""
        closed: list[OomEvent] = []
        for name, stream in self._streams.items():
            if stream_name is None or name == stream_name:
                closed.extend(_close(stream))
        return closed

    def finish(self) -> list[OomEvent]:
        return self.flush()


def parse_lines(lines: Iterable[LogLine]) -> Iterator[OomEvent]:
    """Every OOM event in `lines`, in the order their reports started."""
    parser = ReportParser()
    for line in lines:
        yield from parser.feed(line)
    yield from parser.finish()


def _close(stream: _Stream) -> list[OomEvent]:
    event = stream.event
    stream.event = None
    stream.section = ""
    stream.columns = ()
    stream.idle_lines = 0
    if event is None:
        return []
    if event.victim is not None:
        stream.recent[event.victim.pid] = event
        while len(stream.recent) > _REAPER_MEMORY:
            stream.recent.popitem(last=False)
    return [event]


def _open(stream: _Stream, line: LogLine) -> tuple[OomEvent, list[OomEvent]]:
    closed = _close(stream)
    event = OomEvent(
        source=line.source,
        first_lineno=line.lineno,
        stream=line.stream,
        monotonic=line.monotonic,
        wallclock=line.wallclock,
        seq=line.seq,
    )
    stream.event = event
    return event, closed


def _keep(event: OomEvent, line: LogLine) -> None:
    if len(event.lines) < _MAX_EVENT_LINES:
        event.lines.append(line)


def _head_event(stream: _Stream) -> OomEvent | None:
    """The open event if it is still before its kill line (can take body lines)."""
    event = stream.event
    if event is None or event.victim is not None or event.no_killable:
        return None
    return event


def _body_event(stream: _Stream, line: LogLine) -> tuple[OomEvent, list[OomEvent]]:
    """The event an OOM-specific body line belongs to: the open one before its
    kill line, else a new partial event (the tail of a report whose head is lost)."""
    event = _head_event(stream)
    if event is not None:
        return event, []
    return _open(stream, line)


def _feed(stream: _Stream, line: LogLine) -> list[OomEvent]:
    text = line.text.strip()
    if not text:
        return []
    closed: list[OomEvent] = []
    event = stream.event

    if "invoked oom-killer:" in text and (match := _HEADER.match(text)):
        event, closed = _open(stream, line)
        _take_header(event, match)
        _keep(event, line)
        return closed

    if event is not None and _take_section_line(stream, event, text):
        _keep(event, line)
        stream.idle_lines = 0
        return closed

    handled, closed = _take_report_line(stream, line, text)
    if handled:
        return closed
    event = stream.event
    if event is None:
        return closed
    if _head_event(stream) is None:
        # After the kill line only the lines matched above still belong to it.
        stream.idle_lines += 1
        if stream.idle_lines > _STALE_AFTER:
            closed.extend(_close(stream))
        return closed
    stream.idle_lines += 1
    if stream.idle_lines > _STALE_AFTER:
        return _close(stream)
    _keep(event, line)
    return closed


def _take_header(event: OomEvent, match: re.Match[str]) -> None:
    event.has_header = True
    trigger = event.trigger
    trigger.comm = match.group("comm")
    fields = match.group("fields")
    if gfp := _GFP.search(fields):
        trigger.gfp_mask = gfp.group("mask")
        trigger.gfp_flags = gfp.group("flags")
    for key, value in _HEADER_INT.findall(fields):
        if key == "order":
            trigger.order = int(value)
        elif key == "oom_score_adj":
            trigger.oom_score_adj = int(value)
        else:  # oom_adj (2.6.32-3.x), oomkilladj (2.6.18)
            trigger.oom_adj = int(value)


def _take_section_line(stream: _Stream, event: OomEvent, text: str) -> bool:
    """Lines whose meaning depends on the line before: Mem-Info counters, memcg
    stats, slab rows, task-table rows. Returns True if the line was one."""
    section = stream.section
    if not section or _head_event(stream) is not event:
        return False
    if section == "tasks":
        if (row := _TASK_ROW.match(text)) is not None:
            task = _task_row(stream.columns, int(row.group("pid")), row.group("rest"))
            if task is not None:
                event.tasks.append(task)
                return True
        stream.section = ""
        return False
    if section == "stats":
        if (stat := _STAT_LINE.match(text)) is not None and event.memcg is not None:
            event.memcg.stats.setdefault(stat.group("key"), int(stat.group("value")))
            return True
        stream.section = ""
        return False
    if section == "slab":
        if (slab := _SLAB_ROW.match(text)) is not None:
            event.memory.unreclaimable_slab.append(
                (slab.group("name"), int(slab.group("used")), int(slab.group("total")))
            )
            return True
        if text.startswith("Name") and "Used" in text:
            return True
        stream.section = ""
        return False
    # "meminfo": the counters right after "Mem-Info:" until the per-node lines;
    # 2.6.x prints per-cpu pagesets first ("Node 0 DMA per-cpu:", "CPU    0: hi: ...").
    if text.endswith(" per-cpu:") or (text.startswith("CPU") and " hi:" in text):
        return True
    if text.startswith("Node ") or "=" in text or text[0].isdigit():
        stream.section = ""
        return False
    pairs = _KEY_PAGES.findall(text)
    if not pairs:
        stream.section = ""
        return False
    for key, value in pairs:
        event.memory.meminfo.setdefault(key, int(value))
    return True


def _task_row(columns: tuple[str, ...], pid: int, rest: str) -> TaskRow | None:
    """dump_task(): the numeric columns of the header in order, then the name (which
    may contain spaces, so it is whatever follows the last number)."""
    numeric = columns[:-1]
    parts = rest.split(None, len(numeric) - 1 if numeric else 0)
    if len(parts) != len(numeric):
        return None
    *numbers, last = parts
    last_value, _, name = last.partition(" ")
    values: dict[str, int] = {}
    try:
        for column, value in zip(numeric, [*numbers, last_value], strict=True):
            values[column] = int(value)
    except ValueError:
        return None
    name = name.strip()
    return TaskRow(
        pid=pid,
        uid=values.get("uid"),
        tgid=values.get("tgid"),
        total_vm=values.get("total_vm"),
        rss=values.get("rss"),
        name=name,
        rss_anon=values.get("rss_anon"),
        rss_file=values.get("rss_file"),
        rss_shmem=values.get("rss_shmem"),
        nr_ptes=values.get("nr_ptes"),
        nr_pmds=values.get("nr_pmds"),
        pgtables_bytes=values.get("pgtables_bytes"),
        swapents=values.get("swapents"),
        oom_score_adj=values.get("oom_score_adj"),
        oom_adj=values.get("oom_adj"),
        cpu=values.get("cpu"),
    )


def _take_report_line(
    stream: _Stream, line: LogLine, text: str
) -> tuple[bool, list[OomEvent]]:
    """Lines that are a report's parts on their own. Returns (was one, closed)."""
    head = _head_event(stream)
    closed: list[OomEvent] = []

    if head is not None and _take_head_line(stream, head, text):
        _keep(head, line)
        stream.idle_lines = 0
        return True, closed

    if text.startswith("oom-kill:") and (summary := _OOM_KILL.match(text)):
        event, closed = _body_event(stream, line)
        _take_summary(event, summary)
        _keep(event, line)
        return True, closed

    if "process" in text:
        taken = _take_process_line(stream, line, text)
        if taken is not None:
            return True, taken

    if text.startswith("Tasks in ") and (group := _OOM_GROUP.match(text)):
        if stream.event is not None and stream.event.victim is not None:
            event = stream.event
        else:
            event, closed = _body_event(stream, line)
        event.oom_group = group.group("path")
        _keep(event, line)
        return True, closed

    if text.startswith("Kernel panic") and (panic := _PANIC.match(text)):
        panic_text = panic.group("text")
        current = stream.event
        if current is not None and ("memory" in panic_text or "oom" in panic_text):
            current.panic = panic_text
            _keep(current, line)
            return True, _close(stream)
        return False, closed

    if _is_memcg_line(text):
        event, closed = _body_event(stream, line)
        _take_memcg_line(stream, event, text)
        _keep(event, line)
        stream.idle_lines = 0
        return True, closed

    if text.startswith("Tasks state") or _TASK_HEADER.match(text):
        event, closed = _body_event(stream, line)
        if (header := _TASK_HEADER.match(text)) is not None:
            columns = tuple(header.group("columns").split())
            event.task_columns = columns
            stream.columns = columns
            stream.section = "tasks"
        _keep(event, line)
        stream.idle_lines = 0
        return True, closed

    return False, closed


def _take_process_line(stream: _Stream, line: LogLine, text: str) -> list[OomEvent] | None:
    """The kill lines: selection, kill, reaper, "no killable processes". Returns the
    events closed, or None if the line is none of them."""
    closed: list[OomEvent] = []
    if (select := _SELECT.match(text)) is not None:
        head = _head_event(stream)
        if head is None or head.selection is not None:
            event, closed = _open(stream, line)
        else:
            event = head
        event.kill_message = select.group("message") or event.kill_message
        event.selection = Selection(
            int(select.group("pid")), select.group("comm"), int(select.group("score"))
        )
        _keep(event, line)
        stream.idle_lines = 0
        return closed
    if (killed := _KILLED.match(text)) is not None:
        return _take_killed(stream, line, killed)
    if (reaped := _REAPED.match(text)) is not None:
        _take_reaped(stream, reaped)
        return closed
    if text.startswith(_NO_KILLABLE):
        event, closed = _body_event(stream, line)
        event.no_killable = True
        _keep(event, line)
        return closed
    return None


def _is_memcg_line(text: str) -> bool:
    if not text.startswith(("Task in ", "memory", "swap: ", "kmem: ", "Memory cgroup stats")):
        return False
    return any(regex.match(text) for regex in (_COUNTER, _STATS_FOR, _TASK_IN))


def _take_memcg_line(stream: _Stream, event: OomEvent, text: str) -> None:
    memcg = event.memcg
    if memcg is None:
        memcg = event.memcg = MemcgReport()
    if (task_in := _TASK_IN.match(text)) is not None:
        memcg.task_memcg = task_in.group("task")
        memcg.oom_memcg = task_in.group("oom")
    elif (counter := _COUNTER.match(text)) is not None:
        value = CounterLine(
            int(counter.group("usage")), int(counter.group("limit")), int(counter.group("failcnt"))
        )
        name = counter.group("name")
        if name == "memory":
            memcg.memory = value
        elif name == "memory+swap":
            memcg.memsw = value
        elif name == "swap":
            memcg.swap = value
        else:
            memcg.kmem = value
    elif (stats := _STATS_FOR.match(text)) is not None:
        # Old v1 prints one line per cgroup of the hierarchy; the first is the
        # OOM memcg itself (mem_cgroup_print_oom_info(): for_each_mem_cgroup_tree).
        first = memcg.stats_path is None
        if first:
            memcg.stats_path = stats.group("path")
        inline = stats.group("inline")
        if inline:
            if first:
                for key, kib in _STAT_ONELINE.findall(inline):
                    memcg.stats.setdefault(key, int(kib) * 1024)
        elif first:
            stream.section = "stats"


def _take_head_line(stream: _Stream, event: OomEvent, text: str) -> bool:
    """Lines that only mean something inside a report that has not reached its
    kill line (they also appear in other kernel messages: oopses, SysRq-m)."""
    first = text[0]
    if first == "C":
        if (cpu := _CPU_LINE.match(text)) is not None:
            _take_task_line(event, cpu)
            event.trigger.cpu = int(cpu.group("cpu"))
            if cpu.group("uid") is not None:
                event.trigger.uid = int(cpu.group("uid"))
            return True
        return False
    if first == "P":
        if (pid := _PID_LINE.match(text) or _PID_LINE_SHORT.match(text)) is not None:
            _take_task_line(event, pid)
            return True
        return False
    if first == "M" and text.startswith(("Mem-Info:", "Mem-info:")):
        event.has_mem_info = True
        stream.section = "meminfo"
        return True
    if first == "N":
        return _take_node_line(event, text)
    if first.isdigit():
        if (pages := _PAGES_LINE.match(text)) is not None:
            _take_pages_line(event, pages.group("what"), int(pages.group("n")))
            return True
        return False
    if first in "FT" and (swap := _SWAP_LINE.match(text)) is not None:
        kb = int(swap.group("kb"))
        if swap.group("what") == "Free swap":
            event.memory.swap_free_kb = kb
        else:
            event.memory.swap_total_kb = kb
        return True
    if text.startswith("Unreclaimable slab info"):
        stream.section = "slab"
        return True
    cpuset = _CPUSET.match(text) if " cpuset=" in text else None
    if cpuset is not None and cpuset.group("comm") == event.trigger.comm:
        event.cpuset = cpuset.group("cpuset")
        event.mems_allowed = cpuset.group("mems")
        return True
    return False


def _take_task_line(event: OomEvent, match: re.Match[str]) -> None:
    """The dump_stack() identification line: the trigger's pid and the kernel."""
    trigger = event.trigger
    if trigger.pid is None:
        trigger.pid = int(match.group("pid"))
    if trigger.comm is None:
        trigger.comm = match.group("comm")
    version = match.groupdict().get("version")
    if version and event.kernel_version is None:
        event.kernel_version = version


def _take_node_line(event: OomEvent, text: str) -> bool:
    memory = event.memory
    if (zone := _ZONE.match(text)) is not None:
        fields = dict(_ZONE_FIELD.findall(text))
        memory.zones.append(
            Zone(
                node=int(zone.group("node")),
                name=zone.group("zone"),
                free_kb=int(zone.group("free")),
                min_kb=_opt_int(fields.get("min")),
                low_kb=_opt_int(fields.get("low")),
                high_kb=_opt_int(fields.get("high")),
                present_kb=_opt_int(fields.get("present")),
                managed_kb=_opt_int(fields.get("managed")),
            )
        )
        return True
    if (buddy := _BUDDY.match(text)) is not None:
        blocks = tuple((int(n), int(kb)) for n, kb in _BLOCK.findall(buddy.group("blocks")))
        memory.buddy.append(
            BuddyLine(
                int(buddy.group("node")), buddy.group("zone"), blocks, int(buddy.group("total"))
            )
        )
        if blocks:
            smallest = min(kb for _, kb in blocks)
            if memory.page_size_kb is None or smallest < memory.page_size_kb:
                memory.page_size_kb = smallest
        return True
    if (huge := _HUGEPAGES.match(text)) is not None:
        node, total, free, size = (int(huge.group(i)) for i in range(1, 5))
        memory.hugepages.append((node, total, free, size))
        return True
    return False


def _take_pages_line(event: OomEvent, what: str, count: int) -> None:
    memory = event.memory
    if what == "pages RAM":
        memory.ram_pages = count
    elif what == "pages HighMem/MovableOnly":
        memory.highmem_pages = count
    elif what == "pages reserved":
        memory.reserved_pages = count
    elif what == "pages cma reserved":
        memory.cma_reserved_pages = count
    elif what == "total pagecache pages":
        memory.pagecache_pages = count
    else:
        memory.swapcache_pages = count


def _take_summary(event: OomEvent, match: re.Match[str]) -> None:
    """dump_oom_summary(): "oom-kill:constraint=C,nodemask=..,cpuset=..,
    mems_allowed=..,global_oom|oom_memcg=..,task_memcg=..,task=..,pid=..,uid=..".
    A mems_allowed list ("0-1,3") contains commas: a piece without "=" belongs to
    the value before it."""
    event.constraint = match.group("constraint")
    fields: dict[str, str] = {"constraint": event.constraint}
    last_key: str | None = None
    for piece in match.group("fields").split(","):
        key, sep, value = piece.partition("=")
        if sep:
            fields[key] = value
            last_key = key
        elif piece == "global_oom":
            fields[piece] = ""
            last_key = None
        elif last_key is not None:
            fields[last_key] += "," + piece
    fields.update(task=match.group("task"), pid=match.group("pid"), uid=match.group("uid"))
    event.oom_kill_fields = fields
    if event.cpuset is None and "cpuset" in fields:
        event.cpuset = fields["cpuset"]
    if event.mems_allowed is None and "mems_allowed" in fields:
        event.mems_allowed = fields["mems_allowed"]
    if "oom_memcg" in fields or "task_memcg" in fields:
        memcg_fields_ok = "oom_memcg" in fields
        if memcg_fields_ok and event.memcg is None:
            event.memcg = MemcgReport()
        if event.memcg is not None:
            if event.memcg.oom_memcg is None and "oom_memcg" in fields:
                event.memcg.oom_memcg = fields["oom_memcg"]
            if event.memcg.task_memcg is None and "task_memcg" in fields:
                event.memcg.task_memcg = fields["task_memcg"]


def _victim(match: re.Match[str]) -> Victim:
    rest = match.group("rest") or ""
    sizes = dict(_KILLED_KB.findall(rest))
    uid = match.group("uid_rhel6")
    if uid is None and (found := _KILLED_UID.search(rest)) is not None:
        uid = found.group(1)
    adj = _KILLED_ADJ.search(rest)
    return Victim(
        pid=int(match.group("pid")),
        comm=match.group("comm"),
        total_vm_kb=_opt_int(sizes.get("total-vm")),
        anon_rss_kb=_opt_int(sizes.get("anon-rss")),
        file_rss_kb=_opt_int(sizes.get("file-rss")),
        shmem_rss_kb=_opt_int(sizes.get("shmem-rss")),
        uid=_opt_int(uid),
        pgtables_kb=_opt_int(sizes.get("pgtables")),
        oom_score_adj=None if adj is None else int(adj.group(1)),
    )


def _take_killed(stream: _Stream, line: LogLine, match: re.Match[str]) -> list[OomEvent]:
    victim = _victim(match)
    message = match.group("message")
    closed: list[OomEvent] = []
    event = stream.event
    if event is not None and event.victim is not None and event.oom_group is not None:
        # memory.oom.group: every other task of the group dies with the victim.
        event.group_victims.append(victim)
        _keep(event, line)
        return closed
    if event is None or event.victim is not None or event.no_killable:
        event, closed = _open(stream, line)
    if event.selection is not None and event.selection.pid == victim.pid:
        victim.score = event.selection.score
    if message is not None:
        event.kill_message = message
    event.victim = victim
    stream.section = ""
    stream.idle_lines = 0
    _keep(event, line)
    return closed


def _take_reaped(stream: _Stream, match: re.Match[str]) -> None:
    """oom_reap_task_mm(): matched to the event whose victim has this pid and comm,
    never to a neighbour's."""
    pid, comm = int(match.group("pid")), match.group("comm")
    candidates = [stream.event, *reversed(stream.recent.values())]
    for event in candidates:
        if event is None:
            continue
        for victim in (event.victim, *event.group_victims):
            if victim is not None and victim.pid == pid and victim.comm == comm:
                victim.reaped = True
                victim.reaped_anon_rss_kb = int(match.group("anon"))
                return


def _opt_int(value: str | None) -> int | None:
    return None if value is None else int(value)
