"""`oomlens enforce`: keep a policy applied to every process, from the moment each
program starts.

Tick: read (one process through a pinned `/proc/<pid>` handle) -> decide (the
policy's first matching rule, the safety cap) -> act (journal intent, write,
outcome). New programs come from the kernel's process events (an exec event per
program start, system/cnproc.py) or, where those are not available, from polling the
list of pids in /proc. Imports only what that needs: this runs for months as root.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from oomlens.errors import AccessDenied, OomlensError, ProcessGone
from oomlens.kernel.task import OOM_SCORE_ADJ_MIN
from oomlens.policy.journal import Batch, BatchKind, ChangeKind, ChangeState, Intent, Journal
from oomlens.policy.load import load_policy
from oomlens.policy.match import Need, Subject
from oomlens.policy.rules import Action, Policy, Rule
from oomlens.system.oomadj import ProcessHandle
from oomlens.system.procfs import (
    UserNames,
    parse_cgroup_paths,
    parse_cmdline,
    parse_status,
    pids,
)
from oomlens.units import format_share

if TYPE_CHECKING:
    from oomlens.system.cnproc import ExecEvents

Log = Callable[[dict[str, Any]], None]


@dataclass(frozen=True, slots=True)
class Machine:
    """What decisions need about the host, read once at start."""

    proc_root: str
    boot_id: str
    mem_total_kib: int


@dataclass
class Counters:
    applied: int = 0
    failed: int = 0
    denied: int = 0
    refused: int = 0
    seen: int = 0


@dataclass
class Enforcer:
    """Applies one policy; `journal` None means a dry run (decisions are only logged)."""

    policy: Policy
    machine: Machine
    journal: Journal | None
    log: Log
    actor: str
    command_line: str
    counters: Counters = field(default_factory=Counters)
    _batch: Batch | None = None
    _users: UserNames = field(default_factory=UserNames)
    _refused: set[tuple[int, int]] = field(default_factory=set)

    def set_policy(self, policy: Policy) -> None:
        self.policy = policy
        self._batch = None
        self._refused.clear()

    def sweep(self) -> None:
        """Every process that exists now; then the policy's `min_killable_share` is
        checked over the result (a daemon cannot refuse a whole set up front the way
        `oomlens protect` does, so it warns)."""
        killable = total = 0
        for pid in pids(self.machine.proc_root):
            held = self.evaluate(pid)
            if held is not None:
                total += held[0]
                killable += held[0] if held[1] != OOM_SCORE_ADJ_MIN else 0
        share = killable / total if total else 1.0
        if share < self.policy.limits.min_killable_share:
            self.log({"event": "warning", "killable_share": round(share, 4),
                      "message": f"processes that can never be killed hold "
                      f"{format_share(1 - share)} of process memory; at least "
                      f"{format_share(self.policy.limits.min_killable_share)} should stay "
                      "killable so an OOM has something to free"})

    def evaluate(self, pid: int) -> tuple[int, int] | None:
        """Apply the policy to one process; a process that exits meanwhile is normal.
        Returns (KiB the OOM killer weighs, oom_score_adj now), None if not a candidate."""
        self.counters.seen += 1
        try:
            with ProcessHandle.open(pid, self.machine.proc_root) as handle:
                return None if handle.is_kthread else self._evaluate(handle)
        except ProcessGone:
            return None
        except OomlensError as err:  # one unreadable process must not stop the daemon
            self.log({"event": "error", "pid": pid, "error": str(err)})
            return None

    def _evaluate(self, handle: ProcessHandle) -> tuple[int, int] | None:
        status = parse_status(handle.read("status"))
        if not status.has_mm:
            return None
        held_kib = status.rss_anon_kib + status.rss_file_kib + status.rss_shmem_kib \
            + status.swap_kib + status.pte_kib
        current = handle.oom_score_adj()
        rule = self.policy.first_match(self._subject(handle, status.uid))
        if rule is None or current == rule.oom_score_adj \
                or self._too_big(handle, rule, held_kib):
            return held_kib, current
        applied = self._apply(handle, rule, current)
        return held_kib, rule.oom_score_adj if applied else current

    def _subject(self, handle: ProcessHandle, uid: int) -> Subject:
        needs = self.policy.needs()
        cgroups = parse_cgroup_paths(handle.read("cgroup").decode("utf-8", "replace")) \
            if needs & Need.CGROUP else None
        from oomlens.policy.targets import unit_of

        return Subject(
            pid=handle.pid, comm=handle.comm, uid=uid, user=self._users(uid),
            cmdline=parse_cmdline(handle.read("cmdline")) if needs & Need.CMDLINE else None,
            exe=handle.readlink("exe") if needs & Need.EXE else None,
            cgroups=cgroups, unit=unit_of(cgroups, None),
        )

    def _too_big(self, handle: ProcessHandle, rule: Rule, held_kib: int) -> bool:
        """The safety cap of policy/safety.py for one process: protecting (-1000) a
        process that holds more than `max_protected_share` of RAM needs `force`."""
        limits = self.policy.limits
        share = held_kib / self.machine.mem_total_kib
        if rule.action is not Action.PROTECT or rule.force or share <= limits.max_protected_share:
            return False
        key = (handle.pid, handle.start_time_ticks)
        if key not in self._refused:
            self._refused.add(key)
            self.counters.refused += 1
            self.log({"event": "refused", "pid": handle.pid, "comm": handle.comm,
                      "rule": rule.describe(self.policy.path), "share": round(share, 4),
                      "message": f"holds {format_share(share)} of RAM, more than the "
                      f"{format_share(limits.max_protected_share)} that may be made unkillable "
                      "(force = true on the rule to allow it)"})
        return True

    def _apply(self, handle: ProcessHandle, rule: Rule, current: int) -> bool:
        entry: dict[str, Any] = {
            "pid": handle.pid, "comm": handle.comm, "old": current,
            "new": rule.oom_score_adj, "rule": rule.describe(self.policy.path)}
        if self.journal is None:
            self.log({"event": "would_apply", **entry})
            return False
        [change_id] = self.journal.record_intents(self._current_batch(self.journal), [Intent(
            kind=ChangeKind.OOM_SCORE_ADJ, target=str(handle.pid), old=str(current),
            new=str(rule.oom_score_adj), cause=entry["rule"], pid=handle.pid,
            start_time_ticks=handle.start_time_ticks, boot_id=self.machine.boot_id,
            comm=handle.comm, cmdline=_cmdline(handle))])
        entry["change_id"] = change_id
        try:
            handle.set_oom_score_adj(rule.oom_score_adj)
        except OomlensError as err:
            self.journal.record_outcome(change_id, ChangeState.FAILED, str(err))
            self._count_failure(err, entry)
            return False
        self.journal.record_outcome(change_id, ChangeState.APPLIED)
        self.counters.applied += 1
        self.log({"event": "applied", **entry})
        return True

    def _count_failure(self, err: OomlensError, entry: dict[str, Any]) -> None:
        """A process that exited before the write is normal (event `gone`); the kernel
        refusing is `denied`; anything else `failed`."""
        if isinstance(err, ProcessGone):
            event = "gone"
        elif isinstance(err, AccessDenied):
            event = "denied"
            self.counters.denied += 1
        else:
            event = "failed"
            self.counters.failed += 1
        self.log({"event": event, **entry, "error": str(err)})

    def _current_batch(self, journal: Journal) -> Batch:
        if self._batch is None:
            self._batch = journal.begin_batch(self.actor, self.command_line, BatchKind.POLICY)
        return self._batch


def _cmdline(handle: ProcessHandle) -> str:
    try:
        return parse_cmdline(handle.read("cmdline"))
    except ProcessGone:
        return ""


def machine_of(proc_root: str) -> Machine:
    from oomlens.system.meminfo import read_meminfo
    from oomlens.system.oomadj import boot_id

    return Machine(proc_root, boot_id(proc_root), read_meminfo(proc_root).mem_total_kib)


@dataclass(frozen=True, slots=True)
class Options:
    policy_path: str
    poll: bool  # poll /proc instead of process events
    interval: float  # polling interval, seconds
    rescan: float | None  # full sweep every so often, seconds


class PidPoller:
    """New pids since the last poll; each new pid is looked at again for a few polls,
    since fork() and exec() are usually close but not always within one interval."""

    RECHECKS = 3

    def __init__(self, proc_root: str) -> None:
        self.proc_root = proc_root
        self.known = set(pids(proc_root))
        self.young: dict[int, int] = {}

    def due(self) -> list[int]:
        now = set(pids(self.proc_root))
        new = now - self.known
        self.known = now
        again = [pid for pid in self.young if pid in now]
        self.young = {pid: left - 1 for pid, left in self.young.items()
                      if pid in now and left > 1}
        self.young.update(dict.fromkeys(new, self.RECHECKS))
        return sorted(new.union(again))


def serve(enforcer: Enforcer, options: Options, events: ExecEvents | None,
          clock: Callable[[], float], ready: Callable[[], None]) -> None:
    """Run until SIGTERM/SIGINT: sweep once, call `ready` (the signals are handled
    from then on), then follow new programs.

    `events`: a subscribed system/cnproc.ExecEvents, or None to poll /proc."""
    import select

    from oomlens.daemons.signals import Signals
    from oomlens.system.cnproc import Overrun

    with Signals() as signals:
        poller = select.poll()
        poller.register(signals.fileno(), select.POLLIN)
        pid_poller = None if events is not None else PidPoller(enforcer.machine.proc_root)
        if events is not None:
            poller.register(events.fileno(), select.POLLIN)
        enforcer.sweep()
        ready()
        next_rescan = clock() + options.rescan if options.rescan else None
        while not signals.stop:
            timeouts = [t for t in (options.interval if pid_poller else None,
                                    next_rescan - clock() if next_rescan else None)
                        if t is not None]
            poller.poll(max(0, int(min(timeouts) * 1000)) if timeouts else None)
            signals.drain()
            if signals.reload:
                signals.reload = False
                _reload(enforcer, options.policy_path)
            if events is not None:
                try:
                    for tgid in dict.fromkeys(e.tgid for e in events.read()):
                        enforcer.evaluate(tgid)
                except Overrun as err:
                    enforcer.log({"event": "overrun", "message": f"{err}: rescanning /proc"})
                    enforcer.sweep()
            if pid_poller is not None:
                for pid in pid_poller.due():
                    enforcer.evaluate(pid)
            if next_rescan is not None and clock() >= next_rescan:
                enforcer.sweep()
                next_rescan = clock() + (options.rescan or 0)


def _reload(enforcer: Enforcer, path: str) -> None:
    """SIGHUP: the new policy if it is valid (then a sweep), else keep the old one."""
    try:
        policy = load_policy(path)
    except OomlensError as err:
        enforcer.log({"event": "reload_failed", "error": str(err),
                      "message": "keeping the policy in force"})
        return
    enforcer.set_policy(policy)
    enforcer.log({"event": "reloaded", "policy": path, "rules": len(policy.rules)})
    enforcer.sweep()
