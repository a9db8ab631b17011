"""`oomlens guard`: look at each guarded domain (the system, memory cgroups) as
often as its headroom requires, and when a kill threshold is crossed, kill the
one process the domain's own kill order and the policy pick, through a pidfd.

When to look (guard/triggers.py: next_look): with headroom H above the kill level
and a fill rate R no faster than memory can plausibly be filled, the next look is
due before H/R; PSI triggers and cgroup v1 usage thresholds wake the loop at once
where the kernel offers them. What to kill (guard/victim.py: choose): the kernel's
badness in that domain (kernel/), never pid 1, kernel threads, the guard, a -1000
process, an avoided one; nothing acceptable means an alert, never a bystander.
How (system/pidfd.py): the pidfd is opened right after the scan and checked
against the scanned start time, so a pid reused since is never signalled;
SIGTERM, the grace period, SIGKILL, process_mrelease.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol, TypeVar

from oomlens.errors import OomlensError, UsageError
from oomlens.guard.triggers import (
    DEFAULT_CEILING,
    DEFAULT_FLOOR,
    DEFAULT_MAX_FILL_RATE,
    Assessor,
    Level,
    Sample,
    Thresholds,
    Trend,
    Verdict,
    next_look,
)
from oomlens.guard.victim import Candidate, Choice, Preferences, choose
from oomlens.system.procfs import read_text

if TYPE_CHECKING:
    from oomlens.policy.rules import Policy
    from oomlens.store.record import EventRecord
    from oomlens.system.memcg import MemcgMount

Log = Callable[[dict[str, Any]], None]
_T = TypeVar("_T")
_KIB = 1024


class SystemProbe:
    """The whole machine: MemAvailable and SwapFree from /proc/meminfo (one fd kept
    open and re-read from offset 0: the kernel regenerates it on every read), PSI
    from /proc/pressure/memory when a trigger needs it."""

    name = "system"
    cgroup: str | None = None

    def __init__(self, proc_root: str, with_psi: bool) -> None:
        self._path = f"{proc_root}/meminfo"
        self._proc_root = proc_root
        self._with_psi = with_psi
        try:
            self._fd = os.open(self._path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as err:
            from oomlens.system.procfs import translate_os_error

            raise translate_os_error(err, self._path) from err

    def sample(self, now: float) -> Sample:
        data = os.pread(self._fd, 16384, 0)
        some = full = None
        if self._with_psi:
            from oomlens.system.psi import read_memory_pressure

            pressure = read_memory_pressure(self._proc_root)
            if pressure is not None:
                some = pressure.some.avg10
                full = None if pressure.full is None else pressure.full.avg10
        return Sample(now, _kib(data, b"MemAvailable:") * _KIB, _kib(data, b"MemTotal:") * _KIB,
                      _kib(data, b"SwapFree:") * _KIB, _kib(data, b"SwapTotal:") * _KIB,
                      some, full)

    def quick(self) -> tuple[int, int]:
        """(MemAvailable, MemTotal) in bytes: the quiet look's one read."""
        data = os.pread(self._fd, 16384, 0)
        return _kib(data, b"MemAvailable:") * _KIB, _kib(data, b"MemTotal:") * _KIB

    def close(self) -> None:
        os.close(self._fd)


def _kib(meminfo: bytes, key: bytes) -> int:
    """One `/proc/meminfo` value (kB) by `bytes.find`: the guard reads it twice a
    second when idle, so it parses only what it uses (fs/proc/meminfo.c prints each
    line as `Key:   N kB`)."""
    start = meminfo.find(key)
    if start < 0:
        return 0
    return int(meminfo[start + len(key):meminfo.index(b"k", start)])


_NO_LIMIT_BYTES = (1 << 63) - 4096
"""A memory cgroup's limit once it has none: what v1 shows (PAGE_COUNTER_MAX pages,
mm/page_counter.c), v2's "max" likewise, so that a limit removed while guarded
reads as endless headroom, never as none."""


class MemcgProbe:
    """One memory cgroup against its own limit: available = limit - working set,
    the working set being usage less inactive file pages (which reclaim frees
    before the cgroup's OOM killer runs: mm/vmscan.c shrinks the inactive lists
    first). Usage and limit are read through fds held open, one pread each. On v2,
    with `with_psi`, the cgroup's own pressure too (memory.pressure; v1 has none)."""

    def __init__(self, mount: MemcgMount, path: str, with_psi: bool = False) -> None:
        self.name = path
        self.cgroup = path
        self.mount = mount
        self.directory = mount.fs_path(path)
        v1 = mount.version == 1
        self._with_psi = with_psi and not v1
        self._inactive = "total_inactive_file" if v1 else "inactive_file"
        self._fds: dict[str, int] = {}
        self._usage = "memory.usage_in_bytes" if v1 else "memory.current"
        self._limit = "memory.limit_in_bytes" if v1 else "memory.max"
        try:
            for name in (self._usage, self._limit):
                self._fds[name] = self._io(
                    name, lambda path: os.open(path, os.O_RDONLY | os.O_CLOEXEC))
            if self.limit_bytes() is None:
                raise UsageError(f"--cgroup {path}: this memory cgroup has no limit to guard")
        except OomlensError:
            self.close()
            raise

    def _io(self, name: str, call: Callable[[str], _T]) -> _T:
        from oomlens.system.procfs import translate_os_error

        path = os.path.join(self.directory, name)
        try:
            return call(path)
        except OSError as err:
            raise translate_os_error(err, path) from err

    def _value(self, name: str) -> bytes:
        fd = self._fds[name]
        return self._io(name, lambda _: os.pread(fd, 64, 0)).strip()

    def limit_bytes(self) -> int | None:
        text = self._value(self._limit)
        # v1 shows "no limit" as PAGE_COUNTER_MAX pages in bytes (~2^63), v2 as "max".
        return None if text == b"max" or int(text) >= 1 << 60 else int(text)

    def quick(self) -> tuple[int, int]:
        """(limit - usage, limit) in bytes from two preads: a lower bound of what
        `sample` calls available, usage including the inactive file pages."""
        limit = self.limit_bytes() or _NO_LIMIT_BYTES
        return limit - int(self._value(self._usage)), limit

    def sample(self, now: float) -> Sample:
        limit = self.limit_bytes() or _NO_LIMIT_BYTES
        usage = int(self._value(self._usage))
        stat = self._io("memory.stat", read_text)
        inactive = next((int(line.split()[1]) for line in stat.splitlines()
                         if line.startswith(self._inactive + " ")), 0)
        some = full = None
        if self._with_psi:
            from oomlens.system.psi import parse_psi

            pressure = parse_psi(self._io("memory.pressure", read_text))
            some = pressure.some.avg10
            full = None if pressure.full is None else pressure.full.avg10
        return Sample(now, max(limit - (usage - inactive), 0), limit, psi_some_avg10=some,
                      psi_full_avg10=full)

    def close(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()


Probe = SystemProbe | MemcgProbe


class Quiet(NamedTuple):
    """A domain whose last look found it plainly OK stays so while its total is
    `total_bytes` and a quick read shows more than `above_bytes` available."""

    total_bytes: int
    above_bytes: int


@dataclass(slots=True)
class Domain:
    """One guarded domain and what the loop remembers of it."""

    probe: Probe
    thresholds: Thresholds
    assessor: Assessor
    trend: Trend = field(default_factory=Trend)
    level: Level = Level.OK
    next_at: float = 0.0
    last_kill: float | None = None
    alerted: bool = False
    quiet: Quiet | None = None


@dataclass(frozen=True, slots=True)
class GuardOptions:
    proc_root: str = "/proc"
    dry_run: bool = False
    explain: bool = False
    grace: float = 2.0
    kill_interval: float = 1.0
    kill_group: bool = False
    before_kill: str | None = None
    hook_timeout: float = 10.0
    max_fill_rate: float = DEFAULT_MAX_FILL_RATE
    floor: float = DEFAULT_FLOOR
    ceiling: float = DEFAULT_CEILING


@dataclass(slots=True)
class Counters:
    looks: int = 0
    warnings: int = 0
    kills: int = 0
    refusals: int = 0


class Guard:
    """The decisions. `record` stores a kill (kind guard) and notifies; `log`
    gets one dict per decision."""

    def __init__(self, domains: Sequence[Domain], prefs: Preferences, policy: Policy | None,
                 options: GuardOptions, log: Log,
                 record: Callable[[EventRecord], None] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.domains = list(domains)
        self.prefs = prefs
        self.policy = policy
        self.options = options
        self.log = log
        self.record = record
        self.clock = clock
        self.counters = Counters()

    def warm_up(self) -> None:
        """Rank every domain once: the kill path's code and data are then paged in
        (and locked, see lock_memory) before memory is short, and a domain that
        cannot be ranked fails at start, not at the first kill."""
        for domain in self.domains:
            self._choose(domain)

    def due(self) -> float:
        """When the next look at any domain is due (monotonic seconds)."""
        return min(d.next_at for d in self.domains)

    def look_all(self, *, woken: bool = False) -> None:
        """Look at every domain that is due (every one after a wake-up)."""
        now = self.clock()
        for domain in self.domains:
            if woken or now >= domain.next_at:
                self.look(domain)

    def look_quietly(self) -> bool:
        """The idle look, as little work as a look can be: when every domain was
        plainly OK at its last look (Domain.quiet), read each the quick way and say
        whether every one still is (then the next look is a ceiling away). False:
        some domain needs a proper look (`look_all`), and is due for one now."""
        domains = self.domains
        for domain in domains:
            quiet = domain.quiet
            if quiet is None:
                return False
            available, total = domain.probe.quick()
            if total != quiet.total_bytes or available <= quiet.above_bytes:
                domain.quiet, domain.next_at = None, 0.0
                return False
        self.counters.looks += len(domains)
        return True

    def look(self, domain: Domain) -> None:
        now = self.clock()
        sample = domain.probe.sample(now)
        self.counters.looks += 1
        domain.trend.add(sample)
        domain.quiet = self._quiet(domain, sample)
        if domain.quiet is not None:
            domain.next_at = now + self.options.ceiling
            return
        verdict = domain.assessor.assess(sample, domain.trend)
        if verdict.level is not domain.level:
            self._level_changed(domain, sample, verdict)
        if verdict.level is Level.KILL and self._may_kill(domain, now):
            self._kill(domain, sample, verdict)
        thresholds = domain.thresholds
        swap_level = None
        if thresholds.swap_kill_below is not None and sample.swap_total_bytes:
            swap_level = thresholds.swap_kill_below.resolve(sample.swap_total_bytes)
        domain.next_at = self.clock() + next_look(
            sample, thresholds.kill_below.resolve(sample.total_bytes), domain.trend,
            swap_kill_level_bytes=swap_level, max_fill_rate=self.options.max_fill_rate,
            floor=self.options.floor, ceiling=self.options.ceiling)

    def _quiet(self, domain: Domain, sample: Sample) -> Quiet | None:
        """The idle case, decided without a verdict: a domain at level OK, no
        pressure threshold, a trend no faster than max_fill_rate, and so far above
        its warn level (plus the hysteresis margin) that no verdict can be other
        than OK, and above the kill level by at least what the highest plausible
        fill rate takes in two ceilings (next_look would sleep the ceiling). A quick
        read above that bound later means the same (Guard.look_quietly)."""
        thresholds, options = domain.thresholds, self.options
        if (domain.level is not Level.OK or sample.psi_some_avg10 is not None
                or 1.5 * domain.trend.decline_rate() > options.max_fill_rate):
            return None
        total = sample.total_bytes
        warn = thresholds.warn_below or thresholds.kill_below
        above = max(warn.resolve(total) + int(thresholds.recover_margin * total),
                    thresholds.kill_below.resolve(total)
                    + int(2 * options.ceiling * options.max_fill_rate))
        return Quiet(total, above) if sample.available_bytes > above else None

    def _level_changed(self, domain: Domain, sample: Sample, verdict: Verdict) -> None:
        domain.level = verdict.level
        if verdict.level is Level.WARN:
            self.counters.warnings += 1
        if verdict.level is Level.OK:
            domain.alerted = False
        self.log({"event": {Level.OK: "ok", Level.WARN: "warn", Level.KILL: "kill_level"}[
            verdict.level], "domain": domain.probe.name,
            "available_bytes": sample.available_bytes, "total_bytes": sample.total_bytes,
            "triggers": list(verdict.triggers), "reasons": list(verdict.reasons)})

    def _may_kill(self, domain: Domain, now: float) -> bool:
        return domain.last_kill is None or now - domain.last_kill >= self.options.kill_interval

    def _kill(self, domain: Domain, sample: Sample, verdict: Verdict) -> None:
        from oomlens.system.oomadj import PidReused
        from oomlens.system.pidfd import Victim

        choice, candidates = self._choose(domain)
        victim = choice.victim
        if victim is None:
            self.counters.refusals += 1
            if not domain.alerted:  # once per episode: loud, then quiet until recovery
                domain.alerted = True
                self.log({"event": "nothing_to_kill", "domain": domain.probe.name,
                          "available_bytes": sample.available_bytes,
                          "reasons": list(verdict.reasons), "why": list(choice.why)})
            return
        try:
            handle = Victim.open(victim.pid, victim.start_time_ticks, self.options.proc_root)
        except (PidReused, OomlensError) as err:
            self.log({"event": "victim_gone", "domain": domain.probe.name, "pid": victim.pid,
                      "comm": victim.comm, "message": str(err)})
            return
        with handle:
            self._before_kill(victim)
            sent = self.clock()
            entry: dict[str, Any] = {
                "event": "kill", "domain": domain.probe.name, "pid": victim.pid,
                "comm": victim.comm, "signal": "SIGTERM", "time": sent,
                "available_bytes": sample.available_bytes,
                "threshold_bytes": domain.thresholds.kill_below.resolve(sample.total_bytes),
                "total_bytes": sample.total_bytes, "rss_bytes": victim.rss_bytes,
                "oom_score_adj": victim.oom_score_adj, "triggers": list(verdict.triggers),
                "reasons": list(verdict.reasons), "dry_run": self.options.dry_run,
                "candidates": len(candidates)}
            if self.options.explain:
                entry["why"] = list(choice.why)
            group = self._group_of(victim) if self.options.kill_group else []
            if group:
                entry["group"] = {"cgroup": victim.cgroup, "pids": [g.pid for g in group]}
            try:
                outcome = None if self.options.dry_run else self._terminate(handle, domain,
                                                                             group)
            finally:
                for member in group:
                    member.close()
        domain.last_kill = self.clock()
        domain.assessor.reset_after_kill()
        self.counters.kills += 1
        after = domain.probe.sample(self.clock())
        entry["outcome"] = None if outcome is None else {
            "exited_on_term": outcome.exited_on_term, "sigkill": outcome.killed,
            "memory_released": outcome.released, "seconds": round(outcome.seconds, 3)}
        entry["available_after_bytes"] = after.available_bytes
        self.log(entry)
        if self.record is not None and not self.options.dry_run:
            self.record(self._record(domain, victim, entry, choice))

    def _terminate(self, handle: Any, domain: Domain, group: Sequence[Any]) -> Any:
        """The victim (system/pidfd.py: terminate) and, with --kill-group, the rest
        of its cgroup alongside: SIGTERM to all, one grace period, SIGKILL to those
        left when memory is still short."""
        import signal

        from oomlens.system.pidfd import terminate

        level = domain.thresholds.kill_below

        def still_needed() -> bool:
            sample = domain.probe.sample(self.clock())
            return sample.available_bytes < level.resolve(sample.total_bytes)

        for member in group:
            member.signal(signal.SIGTERM)
        outcome = terminate(handle, self.options.grace, still_needed=still_needed)
        for member in group:
            if not member.wait_exit(0) and (outcome.killed or still_needed()):
                member.signal(signal.SIGKILL)
                member.release_memory()
        return outcome

    def _group_of(self, victim: Candidate) -> list[Any]:
        """The other processes of the victim's leaf memory cgroup, each pinned by a
        pidfd; none when that cgroup is the root or holds the guard itself (a group
        kill must never take the guard or its spared processes with it)."""
        from oomlens.system.memcg import find_memcg_mount
        from oomlens.system.pidfd import Victim
        from oomlens.system.procfs import parse_stat

        mount = find_memcg_mount(self.options.proc_root)
        if mount is None or victim.cgroup in (None, "/"):
            return []
        try:
            pids = [int(p) for p in read_text(
                os.path.join(mount.fs_path(victim.cgroup), "cgroup.procs")).split()]
        except OSError:
            return []
        if self.prefs.self_pid in pids or self.prefs.spare_pids & set(pids):
            self.log({"event": "group_refused", "cgroup": victim.cgroup,
                      "message": "the guard or a spared process is in it: one process only"})
            return []
        group = []
        for pid in pids:
            if pid == victim.pid:
                continue
            try:
                stat = parse_stat(read_text(f"{self.options.proc_root}/{pid}/stat"))
                group.append(Victim.open(pid, stat.start_time_ticks, self.options.proc_root))
            except (OSError, OomlensError):
                continue  # exited since the listing: nothing to kill
        return group

    def _before_kill(self, victim: Candidate) -> None:
        """The evidence-saving hook (a heap or thread dump) before the signal."""
        command = self.options.before_kill
        if command is None:
            return
        import shlex

        from oomlens.notify.command import run_with_timeout
        from oomlens.notify.core import DeliveryFailed

        text = command.replace("{pid}", str(victim.pid)).replace(
            "{comm}", shlex.quote(victim.comm))
        try:
            status, error = run_with_timeout(["/bin/sh", "-c", text], b"",
                                             self.options.hook_timeout, env=dict(os.environ))
        except DeliveryFailed as err:
            status, error = -1, str(err)
        self.log({"event": "hook", "pid": victim.pid, "command": text, "status": status,
                  "message": error})

    def _choose(self, domain: Domain) -> tuple[Choice, list[Candidate]]:
        candidates = candidates_in(domain.probe.cgroup, self.options.proc_root, self.policy)
        return choose(candidates, self.prefs, domain=domain.probe.name), candidates

    def _record(self, domain: Domain, victim: Candidate, entry: dict[str, Any],
                choice: Choice) -> EventRecord:
        from oomlens.daemons.selfcare import host_info
        from oomlens.store.record import EventKind, EventRecord

        host = host_info(self.options.proc_root)
        return EventRecord(
            key=f"{host.boot_id}:guard:{victim.pid}:{victim.start_time_ticks}",
            kind=EventKind.GUARD, host=host.name, boot_id=host.boot_id, time=time.time(),
            scope="memcg" if domain.probe.cgroup else "global",
            cgroup=domain.probe.cgroup or victim.cgroup, victim_pid=victim.pid,
            victim_comm=victim.comm, victim_uid=victim.uid,
            victim_oom_score_adj=victim.oom_score_adj, victim_rss_kb=victim.rss_bytes // _KIB,
            complete=True, kills=1, main_finding=f"guard_{entry['triggers'][0]}"
            if entry["triggers"] else None,
            detail={**entry, "why": list(choice.why)})


def candidates_in(cgroup: str | None, proc_root: str, policy: Policy | None) -> list[Candidate]:
    """The domain's processes in the kernel's kill order, as plain candidates."""
    from oomlens.ranking import find_domain, rank_domain
    from oomlens.system.snapshot import take_snapshot

    snapshot = take_snapshot(proc_root)
    domain = find_domain(snapshot, cgroup)
    needs = policy.needs() if policy is not None else None
    out = []
    for ranked in rank_domain(snapshot, domain):
        process = ranked.process
        action = None
        if policy is not None and needs is not None:
            from oomlens.policy.targets import subject_of

            rule = policy.first_match(subject_of(process, needs, proc_root))
            action = None if rule is None else str(rule.action)
        task = process.task
        out.append(Candidate(
            pid=process.pid, comm=process.comm, cmdline=process.cmdline, uid=process.uid,
            start_time_ticks=process.start_time_ticks, points=ranked.ranked.points,
            rank=ranked.ranked.rank, oom_score_adj=task.oom_score_adj,
            rss_bytes=task.rss_pages * task.page_size, cgroup=process.memcg,
            kthread=task.is_kthread, policy_action=action))
    return out


class _Pollable(Protocol):
    def fileno(self) -> int: ...
    def close(self) -> None: ...


class Waker:
    """A file descriptor that means "look now": a PSI trigger (POLLPRI) or a cgroup
    v1 usage threshold (an eventfd, drained after each wake). Owns its source."""

    def __init__(self, source: _Pollable, events: int,
                 drain: Callable[[], object] | None = None) -> None:
        self.source = source
        self.fd = source.fileno()
        self.events = events
        self.drain = drain

    def close(self) -> None:
        self.source.close()


def serve(guard: Guard, wakers: Sequence[Waker], ready: Callable[[], None],
          reload: Callable[[], None]) -> None:
    """Look at every domain now, call `ready`, then look whenever a domain is due or
    a waker fires, until SIGTERM/SIGINT. SIGHUP calls `reload`."""
    import select

    from oomlens.daemons.signals import Signals

    with Signals() as signals:
        poller = select.poll()
        poller.register(signals.fileno(), select.POLLIN)
        for waker in wakers:
            poller.register(waker.fd, waker.events)
        guard.look_all(woken=True)
        ready()
        quiet_ms = int(guard.options.ceiling * 1000)
        signal_fd = signals.fileno()
        while not signals.stop:
            fired = poller.poll(max(0, int((guard.due() - guard.clock()) * 1000) + 1))
            while not fired and guard.look_quietly():  # idle: nothing else to do
                fired = poller.poll(quiet_ms)
            woken = False
            for fd, _ in fired:
                if fd == signal_fd:
                    signals.drain()
                    if signals.reload:
                        signals.reload = False
                        reload()
                    continue
                woken = True
                for waker in wakers:
                    if waker.fd == fd and waker.drain is not None:
                        waker.drain()
            if not signals.stop:
                guard.look_all(woken=woken)


def lock_memory() -> str | None:
    """mlockall(MCL_CURRENT | MCL_FUTURE | MCL_ONFAULT): every page the guard has
    touched, and every one it touches later, stays in RAM when memory runs short,
    without making resident what it never uses (ONFAULT, Linux 4.4+: without it
    every mapping would be populated, libraries and arenas alike). The kill path is
    touched once at start (Guard.warm_up) so it is locked too. Why not, if not."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)  # the interpreter's own libc (not ctypes.util: 2 MB)
    # include/uapi/asm-generic/mman-common.h
    mcl_current, mcl_future, mcl_onfault = 1, 2, 4
    if libc.mlockall(mcl_current | mcl_future | mcl_onfault) == 0:
        return None
    return f"memory not locked: {os.strerror(ctypes.get_errno())}"
