"""`oomlens watch`: every OOM kill becomes a stored, diagnosed event within
milliseconds, and none goes unnoticed.

Three sources, one truth:
- the kernel log (`/dev/kmsg`, else `journalctl -k -f`): each report is assembled
  by the `report` parser and stored at its `Killed process` line (mm/oom_kill.c:
  __oom_kill_process() prints it for every kill, rate limit or not; only the
  report above it, dump_header(), is rate-limited);
- memory cgroups' own kill counters (system/cgroupevents.py): a wake-up when a
  watched cgroup kills, and the events themselves where no log is followed;
- `/proc/vmstat` oom_kill, counted by the kernel right before it prints the kill
  line (__oom_kill_process(): count_vm_event(OOM_KILL)). When it is ahead of
  what the store accounts for this boot and stays ahead past a short grace
  period, the difference is stored as one "lost" event: a ring buffer that
  overran, a reader that got EPIPE, kills from before the watcher started.

Only records the kernel itself logged count: a line written to /dev/kmsg from
user space (facility != 0) can never fake a kill.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from oomlens.daemons.selfcare import HostInfo
from oomlens.errors import OomlensError
from oomlens.report.diagnose import diagnose
from oomlens.report.model import LogLine, OomEvent
from oomlens.report.parser import ReportParser
from oomlens.store.fromreport import event_cgroup, kernel_record
from oomlens.store.record import EventRecord, StoredEvent, lost_record, memcg_record
from oomlens.system.kmsg import KmsgRecord, parse_killed_process
from oomlens.system.meminfo import read_vmstat

if TYPE_CHECKING:
    from oomlens.store.db import Store
    from oomlens.system.cgroupevents import MemcgOomEvents

# Seconds without a new log record before a report still waiting for its kill
# line is closed as it is (the kernel prints a report in one go under oom_lock).
QUIET = 0.25
# Seconds the kernel's kill counter must stay ahead of the store before the
# difference is recorded as lost: the counter is bumped microseconds before the
# kill line is logged, so a deficit that lasts this long is not a line in flight.
LOST_GRACE = 0.5
# Seconds between checks of /proc/vmstat when nothing wakes the watcher.
CHECK_EVERY = 10.0
# Seconds between rescans for newly limited memory cgroups (containers that start).
RESCAN_EVERY = 60.0
_UNREAPED_MEMORY = 64


def kmsg_lines(records: Iterable[KmsgRecord], source: str = "/dev/kmsg") -> list[LogLine]:
    """Records as the parser's lines. `kernel` is False for records user space wrote
    (facility != 0): the parser ignores them."""
    return [
        LogLine(text, source, record.seq, "", record.ts_us / 1e6, None, record.seq,
                record.facility == 0)
        for record in records
        for text in record.message.split("\n")
    ]


class LogReader(Protocol):
    """A followed kernel log (system/kmsg.py KmsgReader adapted, system/journalk.py)."""

    @property
    def source(self) -> str: ...
    @property
    def lost(self) -> int: ...
    @property
    def overruns(self) -> int: ...

    def fileno(self) -> int: ...
    def read_lines(self) -> list[LogLine]: ...
    def close(self) -> None: ...


class KmsgLog:
    """`/dev/kmsg` as a LogReader."""

    def __init__(self, path: str = "/dev/kmsg") -> None:
        from oomlens.system.kmsg import KmsgReader

        self.source = path
        self._reader = KmsgReader(path)

    @property
    def lost(self) -> int:
        return self._reader.lost

    @property
    def overruns(self) -> int:
        return self._reader.overruns

    def fileno(self) -> int:
        return self._reader.fileno()

    def read_lines(self) -> list[LogLine]:
        return kmsg_lines(self._reader.read_available(), self.source)

    def close(self) -> None:
        self._reader.close()


class Watcher:
    """Turns log lines and counters into stored events. `emit(stored, live)` is
    called for every event new to the store (`live` False while backfilling);
    `log` gets one dict per notable happening."""

    def __init__(self, store: Store, host: HostInfo, *, clock: Callable[[], float],
                 emit: Callable[[StoredEvent, bool], None],
                 log: Callable[[dict[str, Any]], None],
                 victim_cgroup: Callable[[int, str], str | None] | None = None) -> None:
        self.store = store
        self._victim_cgroup = victim_cgroup
        self.host = host
        self._clock = clock
        self._emit = emit
        self.log = log
        self._parser = ReportParser()
        self._previous: OomEvent | None = None
        self._unreaped: OrderedDict[str, OomEvent] = OrderedDict()
        self._checked: int | None = None
        self._deficit_since: float | None = None
        self.stored = 0
        self.duplicates = 0
        self.lost_kills = 0
        self.skipped_kills = 0

    @property
    def report_open(self) -> bool:
        """A report is waiting for its kill line."""
        return self._parser.open

    @property
    def deficit_pending(self) -> bool:
        """The kernel counted kills the store does not have yet (grace running)."""
        return self._deficit_since is not None

    def feed(self, lines: Sequence[LogLine], *, live: bool) -> None:
        for line in lines:
            for event in self._parser.feed(line):
                self._store_event(event, live)

    def settle(self, *, live: bool, everything: bool = False) -> None:
        """Store the reports that reached their kill line; `everything`: also the
        ones still waiting for it (after a quiet period, at the end)."""
        for event in self._parser.flush() if everything else self._parser.settle():
            self._store_event(event, live)
        self._mark_reaped()

    def memcg_kills(self, changes: Sequence[tuple[str, int, int]], *,
                    hierarchical: bool) -> None:
        """Kills cgroups' own counters show, for when no kernel log is followed.
        `hierarchical` (cgroup v2): a kill counts in every ancestor too
        (mm/memcontrol.c: memcg_memory_event() walks up), so a cgroup's own kills
        are its rise less that of the changed cgroups nearest below it."""
        rises = {path: after - before for path, before, after in changes}
        for path, before, after in changes:
            kills = rises[path]
            if hierarchical:
                below = [p for p in rises if _under(p, path)]
                kills -= sum(rises[p] for p in below if not any(_under(p, q) for q in below))
            if kills > 0:
                self._add(memcg_record(host=self.host.name, boot_id=self.host.boot_id,
                                       detected_at=self._clock(), cgroup=path,
                                       counter_from=before, counter_to=after, kills=kills),
                          live=True)

    def skip(self, lines: Sequence[LogLine]) -> None:
        """Lines not to store (the ring buffer, when not backfilling): their kills
        are left out of what counts as lost, so that a later run that backfills
        them does not count them twice."""
        self.skipped_kills += sum(1 for line in lines
                                  if line.kernel and parse_killed_process(line.text))

    def check_kills(self, kernel_count: int, reason: str, *, at_once: bool = False) -> None:
        """Compare the kernel's kill counter with what the store accounts for this
        boot; a deficit that outlasts LOST_GRACE (or any, `at_once`) is stored as
        lost kills."""
        if kernel_count == self._checked and self._deficit_since is None:
            return
        self._checked = kernel_count
        accounted = self.store.accounted_kills(self.host.name, self.host.boot_id)
        accounted += self.skipped_kills
        if kernel_count <= accounted:
            self._deficit_since = None
            return
        now = self._clock()
        if not at_once and (self._deficit_since is None or now - self._deficit_since < LOST_GRACE):
            self._deficit_since = self._deficit_since or now
            return
        self._deficit_since = None
        record = lost_record(host=self.host.name, boot_id=self.host.boot_id, detected_at=now,
                             counter_from=accounted, counter_to=kernel_count, reason=reason)
        if self._add(record, live=True) is not None:
            self.lost_kills += record.kills

    def _store_event(self, event: OomEvent, live: bool) -> None:
        if event.victim is None and not (event.has_header or event.no_killable or event.panic):
            return  # a stray body line (a late memory.oom.group notice): nothing to record
        diagnosis = diagnose(event, self._previous)
        self._previous = event
        cgroup = None
        if live and self._victim_cgroup is not None and event.victim is not None and (
                event_cgroup(event) is None):
            cgroup = self._victim_cgroup(event.victim.pid, event.victim.comm)
        record = kernel_record(event, diagnosis, host=self.host.name,
                               boot_id=self.host.boot_id, boot_time=self.host.boot_time,
                               detected_at=self._clock(), victim_cgroup=cgroup)
        self._add(record, live)
        if event.victim is not None and not event.victim.reaped:
            self._unreaped[record.key] = event
            while len(self._unreaped) > _UNREAPED_MEMORY:
                self._unreaped.popitem(last=False)

    def _add(self, record: EventRecord, live: bool) -> StoredEvent | None:
        stored = self.store.add(record, now=self._clock())
        if stored is None:
            self.duplicates += 1
            return None
        self.stored += 1
        self._emit(stored, live)
        return stored

    def _mark_reaped(self) -> None:
        for key, event in list(self._unreaped.items()):
            if event.victim is not None and event.victim.reaped:
                self.store.mark_reaped(key)
                del self._unreaped[key]


def _under(path: str, ancestor: str) -> bool:
    """`path` is a cgroup strictly below `ancestor` ("/" is above every other path)."""
    return path != ancestor and path.startswith(ancestor.rstrip("/") + "/")


def victim_cgroup_reader(proc_root: str,
                         memcg_version: int) -> Callable[[int, str], str | None]:
    """Reads a victim's memory cgroup while it is still dying: the kill line is
    logged before the victim exits, so a watcher that reads at once often finds
    it (the pid pinned by its /proc directory, only if its comm still matches).
    A task already exiting reads as the root cgroup (kernel/exit.c: do_exit() sets
    PF_EXITING, then cgroup_exit() moves it), so the cgroup only counts if the
    task was not exiting yet when it was read."""
    from oomlens.system.oomadj import ProcessHandle
    from oomlens.system.procfs import PF_EXITING, parse_proc_cgroup, parse_stat

    def read(pid: int, comm: str) -> str | None:
        try:
            with ProcessHandle.open(pid, proc_root) as handle:
                if handle.comm != comm:
                    return None
                text = handle.read("cgroup").decode("utf-8", "replace")
                stat = parse_stat(handle.read("stat").decode("utf-8", "replace"))
        except OomlensError:
            return None
        if stat.flags & PF_EXITING:
            return None
        return parse_proc_cgroup(text, memcg_version)

    return read


def kernel_kill_count(proc_root: str) -> int | None:
    """/proc/vmstat oom_kill (4.13+), or None where the kernel has no such counter."""
    return read_vmstat(proc_root).get("oom_kill")


@dataclass(frozen=True, slots=True)
class WatchOptions:
    proc_root: str = "/proc"
    backfill: bool = True
    once: bool = False
    # Watch every limited memcg (rescanned), or only `cgroups` when given.
    all_limited: bool = True
    # cgroup v2 counts a kill in the victim's cgroup and every ancestor.
    hierarchical_counters: bool = False


@dataclass(slots=True)
class _Loop:
    """What the loop remembers between wake-ups."""

    last_record: float
    next_check: float
    next_rescan: float
    overruns: int = 0


def serve(watcher: Watcher, options: WatchOptions, log: LogReader | None,
          cgroups: MemcgOomEvents | None, clock: Callable[[], float],
          ready: Callable[[], None], reopen: Callable[[], Store],
          rescan: Callable[[MemcgOomEvents], None]) -> None:
    """Backfill (or read past what the log holds), reconcile the counters, call
    `ready`, then follow until SIGTERM/SIGINT (with `once`: return after the
    reconciliation). SIGHUP reopens the store through `reopen`."""
    import select

    from oomlens.daemons.signals import Signals

    with Signals() as signals:
        poller = select.poll()
        for pollable in (signals, log, cgroups):
            if pollable is not None:
                poller.register(pollable.fileno(), select.POLLIN)
        if log is not None and options.backfill:
            watcher.feed(log.read_lines(), live=False)
            watcher.settle(live=False, everything=True)
        elif log is not None:
            watcher.skip(log.read_lines())
        _check(watcher, options, log, at_once=True,
               reason="before oomlens watch started: " + (
                   "no kernel log is followed" if log is None else "no longer in the kernel log"))
        ready()
        now = clock()
        state = _Loop(now, now + CHECK_EVERY, now + RESCAN_EVERY)
        while not (signals.stop or options.once):
            timeout = min(state.next_check, state.next_rescan) - clock()
            if watcher.report_open:
                timeout = min(timeout, state.last_record + QUIET - clock())
            poller.poll(max(0, int(timeout * 1000) + 1))
            signals.drain()
            if signals.reload:
                signals.reload = False
                watcher.store.close()
                watcher.store = reopen()
                watcher.log({"event": "reopened", "store": watcher.store.display})
            _wake(watcher, options, log, cgroups, clock, state, rescan)
        watcher.settle(live=True, everything=True)


def _wake(watcher: Watcher, options: WatchOptions, log: LogReader | None,
          cgroups: MemcgOomEvents | None, clock: Callable[[], float], state: _Loop,
          rescan: Callable[[MemcgOomEvents], None]) -> None:
    now = clock()
    if log is not None:
        lines = log.read_lines()
        if lines:
            watcher.feed(lines, live=True)
            watcher.settle(live=True)
            state.last_record = now
            state.next_check = min(state.next_check, now + LOST_GRACE)
        if log.overruns > state.overruns:
            watcher.log({"event": "overrun", "source": log.source, "records_lost": log.lost,
                          "message": "the kernel log overran before it was read"})
            state.overruns = log.overruns
            state.next_check = now
    if cgroups is not None:
        changes = cgroups.changed()
        if changes:
            if log is None:
                watcher.memcg_kills(changes, hierarchical=options.hierarchical_counters)
            state.next_check = min(state.next_check, now + LOST_GRACE)
        for cgroup in cgroups.gone:
            watcher.log({"event": "cgroup_gone", "cgroup": cgroup})
        if options.all_limited and now >= state.next_rescan:
            rescan(cgroups)
            state.next_rescan = now + RESCAN_EVERY
    if watcher.report_open and now - state.last_record >= QUIET:
        watcher.settle(live=True, everything=True)
    if now >= state.next_check:
        _check(watcher, options, log, reason=_lost_reason(log))
        state.next_check = now + (LOST_GRACE if watcher.deficit_pending else CHECK_EVERY)


def _lost_reason(log: LogReader | None) -> str:
    if log is None:
        return "no kernel log is followed"
    if log.overruns:
        return f"{log.source} overran ({log.lost} records lost)"
    return f"not in {log.source}"


def _check(watcher: Watcher, options: WatchOptions, log: LogReader | None, *, reason: str,
           at_once: bool = False) -> None:
    count = kernel_kill_count(options.proc_root)
    if count is not None:
        watcher.check_kills(count, reason, at_once=at_once)
