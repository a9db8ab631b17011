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

from oomlens.report.fields import (
    COUNTER,
    CPU_LINE,
    CPUSET,
    HEADER,
    KEY_PAGES,
    KILLED,
    NO_KILLABLE,
    OOM_GROUP,
    OOM_KILL,
    PAGES_LINE,
    PANIC,
    PID_LINE,
    PID_LINE_SHORT,
    REAPED,
    SELECT,
    SLAB_ROW,
    STAT_LINE,
    STAT_ONELINE,
    STATS_FOR,
    SWAP_LINE,
    TASK_HEADER,
    TASK_IN,
    TASK_ROW,
    ZONE_NAMES,
    take_header,
    take_node_line,
    take_pages_line,
    take_summary,
    take_task_line,
    task_row,
    victim_from,
)
from oomlens.report.model import (
    CounterLine,
    LogLine,
    MemcgReport,
    OomEvent,
    Selection,
)

# A report without its victim line gives up after this many lines that are no part
# of it (a cut log): a full report's unrecognised lines (call trace, registers) are
# about 100.
_STALE_AFTER = 600
# Lines kept per event for evidence and for the stored report.
_MAX_EVENT_LINES = 5000
# mem_cgroup_print_oom_meminfo()'s counter lines -> the MemcgReport field they set.
_COUNTER_FIELDS = {"memory": "memory", "memory+swap": "memsw", "swap": "swap", "kmem": "kmem"}
# Emitted events remembered per stream to give them their oom_reaper line.
_REAPER_MEMORY = 64

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
    `flush()` returns the rest. Events are complete objects when returned, except
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

    @property
    def open(self) -> bool:
        """A report has started and not been closed yet."""
        return any(stream.event is not None for stream in self._streams.values())

    def settle(self) -> list[OomEvent]:
        """For a live follower that has read everything logged so far: close the
        events that reached their kill line (or "no killable processes"), so they
        are acted on now, not when the next report starts. Kill lines of a
        memory.oom.group that the kernel logs after this point make events of
        their own (mm/oom_kill.c: oom_kill_process() kills the victim first, then
        the group)."""
        closed: list[OomEvent] = []
        for stream in self._streams.values():
            event = stream.event
            if event is not None and (event.victim is not None or event.no_killable):
                closed.extend(_close(stream))
        return closed

    def flush(self) -> list[OomEvent]:
        """Close every open event: at the end of a log, or for a live follower
        after a quiet period. A report still waiting for its kill line is emitted
        as it is."""
        closed: list[OomEvent] = []
        for stream in self._streams.values():
            closed.extend(_close(stream))
        return closed


def parse_lines(lines: Iterable[LogLine]) -> Iterator[OomEvent]:
    """Every OOM event in `lines`, in the order their reports started."""
    parser = ReportParser()
    for line in lines:
        yield from parser.feed(line)
    yield from parser.flush()


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

    if "invoked oom-killer:" in text and (match := HEADER.match(text)):
        event, closed = _open(stream, line)
        take_header(event, match)
        _keep(event, line)
        return closed

    if event is not None and _take_section_line(stream, event, text):
        _keep(event, line)
        stream.idle_lines = 0
        return closed

    section = stream.section
    handled, closed = _take_report_line(stream, line, text)
    if handled:
        if stream.section == section:  # a report line that opens no section ends one
            stream.section = ""
        return closed
    if stream.event is None:
        return closed
    stream.idle_lines += 1
    if stream.idle_lines > _STALE_AFTER:
        return [*closed, *_close(stream)]
    head = _head_event(stream)
    if head is not None:  # after the kill line only the lines matched above belong
        _keep(head, line)
    return closed


def _take_section_line(stream: _Stream, event: OomEvent, text: str) -> bool:
    """Lines whose meaning depends on the section they are in: Mem-Info counters,
    memcg stats, slab rows, task-table rows. Returns True if the line was one. An
    unrelated line (another CPU's message) does not end a section; the next
    report line does."""
    section = stream.section
    if not section or _head_event(stream) is not event:
        return False
    if section == "tasks":
        if (row := TASK_ROW.match(text)) is not None:
            task = task_row(stream.columns, int(row.group("pid")), row.group("rest"))
            if task is not None:
                event.tasks.append(task)
                return True
        return False
    if section == "stats":
        if (stat := STAT_LINE.match(text)) is not None and event.memcg is not None:
            event.memcg.stats.setdefault(stat.group("key"), int(stat.group("value")))
            return True
        return False
    if section == "slab":
        if (slab := SLAB_ROW.match(text)) is not None:
            event.memory.unreclaimable_slab.append(
                (slab.group("name"), int(slab.group("used")), int(slab.group("total")))
            )
            return True
        return text.startswith("Name") and "Used" in text
    # "meminfo": the counters right after "Mem-Info:" until the per-node lines;
    # 2.6.x prints per-cpu pagesets first ("Node 0 DMA per-cpu:", "CPU    0: hi: ...").
    if text.endswith(" per-cpu:") or (text.startswith("CPU") and " hi:" in text):
        return True
    if text.startswith(("Node ", *ZONE_NAMES)) or "=" in text or text[0].isdigit():
        return False
    pairs = KEY_PAGES.findall(text)
    if not pairs:
        return False
    for key, value in pairs:
        event.memory.meminfo.setdefault(key, int(value))
    return True


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

    if text.startswith("oom-kill:") and (summary := OOM_KILL.match(text)):
        event, closed = _body_event(stream, line)
        take_summary(event, summary)
        _keep(event, line)
        return True, closed

    if "process" in text:
        taken = _take_process_line(stream, line, text)
        if taken is not None:
            return True, taken

    if text.startswith("Tasks in ") and (group := OOM_GROUP.match(text)):
        if stream.event is not None and stream.event.victim is not None:
            event = stream.event
        else:
            event, closed = _body_event(stream, line)
        event.oom_group = group.group("path")
        _keep(event, line)
        return True, closed

    if text.startswith("Kernel panic") and (panic := PANIC.match(text)):
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

    if text.startswith("Tasks state") or TASK_HEADER.match(text):
        event, closed = _body_event(stream, line)
        if (header := TASK_HEADER.match(text)) is not None:
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
    if (select := SELECT.match(text)) is not None:
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
    if (killed := KILLED.match(text)) is not None:
        return _take_killed(stream, line, killed)
    if (reaped := REAPED.match(text)) is not None:
        _take_reaped(stream, reaped)
        return closed
    if text.startswith(NO_KILLABLE):
        event, closed = _body_event(stream, line)
        event.no_killable = True
        _keep(event, line)
        return closed
    return None


def _is_memcg_line(text: str) -> bool:
    if not text.startswith(("Task in ", "memory", "swap: ", "kmem: ", "Memory cgroup stats")):
        return False
    return any(regex.match(text) for regex in (COUNTER, STATS_FOR, TASK_IN))


def _take_memcg_line(stream: _Stream, event: OomEvent, text: str) -> None:
    memcg = event.memcg
    if memcg is None:
        memcg = event.memcg = MemcgReport()
    if (task_in := TASK_IN.match(text)) is not None:
        memcg.task_memcg = task_in.group("task")
        memcg.oom_memcg = task_in.group("oom")
    elif (counter := COUNTER.match(text)) is not None:
        value = CounterLine(
            int(counter.group("usage")), int(counter.group("limit")), int(counter.group("failcnt"))
        )
        setattr(memcg, _COUNTER_FIELDS[counter.group("name")], value)
    elif (stats := STATS_FOR.match(text)) is not None:
        # Old v1 prints one line per cgroup of the hierarchy; the first is the
        # OOM memcg itself (mem_cgroup_print_oom_info(): for_each_mem_cgroup_tree).
        first = memcg.stats_path is None
        if first:
            memcg.stats_path = stats.group("path")
        inline = stats.group("inline")
        if inline:
            if first:
                for key, kib in STAT_ONELINE.findall(inline):
                    memcg.stats.setdefault(key, int(kib) * 1024)
        elif first:
            stream.section = "stats"


def _take_head_line(stream: _Stream, event: OomEvent, text: str) -> bool:
    """Lines that only mean something inside a report that has not reached its
    kill line (they also appear in other kernel messages: oopses, SysRq-m)."""
    first = text[0]
    if first == "C":
        if (cpu := CPU_LINE.match(text)) is not None:
            take_task_line(event, cpu)
            event.trigger.cpu = int(cpu.group("cpu"))
            if cpu.group("uid") is not None:
                event.trigger.uid = int(cpu.group("uid"))
            return True
        return False
    if first == "P":
        if (pid := PID_LINE.match(text) or PID_LINE_SHORT.match(text)) is not None:
            take_task_line(event, pid)
            return True
        return False
    if first == "M" and text.startswith(("Mem-Info:", "Mem-info:")):
        event.has_mem_info = True
        stream.section = "meminfo"
        return True
    if first == "N" or text.startswith(ZONE_NAMES):
        return take_node_line(event, text)
    if first.isdigit():
        if (pages := PAGES_LINE.match(text)) is not None:
            take_pages_line(event, pages.group("what"), int(pages.group("n")))
            return True
        return False
    if first in "FT" and (swap := SWAP_LINE.match(text)) is not None:
        kb = int(swap.group("kb"))
        if swap.group("what") == "Free swap":
            event.memory.swap_free_kb = kb
        else:
            event.memory.swap_total_kb = kb
        return True
    if text.startswith("Unreclaimable slab info"):
        stream.section = "slab"
        return True
    cpuset = CPUSET.match(text) if " cpuset=" in text else None
    if cpuset is not None and cpuset.group("comm") == event.trigger.comm:
        event.cpuset = cpuset.group("cpuset")
        event.mems_allowed = cpuset.group("mems")
        return True
    return False


def _take_killed(stream: _Stream, line: LogLine, match: re.Match[str]) -> list[OomEvent]:
    victim = victim_from(match)
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


