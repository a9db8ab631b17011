"""`oomlens simulate oom` and `simulate sysrq`: a real OOM kill made on purpose, the
predicted victim shown first, the kernel's choice checked after.

`simulate oom CGROUP`: a helper process joins a new child cgroup of CGROUP and
allocates 1 MiB at a time until the kernel's memcg OOM killer acts in CGROUP, then
stops (it watches /proc/vmstat's oom_kill, so it stops after one kill wherever the
victim was; the kernel may still kill twice). The kernel sees the helper as one more
candidate, so the prediction includes it, grown by what the cgroup has left to fill
(its limit less its working set: `guard`'s MemcgProbe; plus the swap it may still
use). The helper keeps oomlens's own oom_score_adj: any other value would be one more
way for the prediction to differ from what the kernel does without it. When the
helper is the worst, the kernel kills the helper and nothing of yours dies: the
prediction says so first.

Its child cgroup: on v1 it gets the target's limit plus 1 MiB (the target's, lower,
decides; the child's bounds the helper even where the hierarchy would not), on v2 no
limit and no controller of its own (the target may hold processes, which forbids
delegating the memory controller; the helper is charged to the target anyway). It
and the helper are removed on every way out.

`simulate sysrq`: writes `f` to /proc/sysrq-trigger (drivers/tty/sysrq.c:
moom_callback(): a global OOM with order -1, which never panics for want of a
victim, mm/oom_kill.c: out_of_memory()); the kernel's global OOM killer picks among
every process of the machine.
"""

from __future__ import annotations

import contextlib
import os
import select
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from oomlens.daemons.signals import Signals
from oomlens.errors import UsageError
from oomlens.kernel.domain import DomainKind, OomDomain
from oomlens.kernel.task import Task
from oomlens.ranking import find_domain, members, rank_domain
from oomlens.report.diagnose import diagnose
from oomlens.report.model import OomEvent
from oomlens.simulate.follow import OomFollower
from oomlens.simulate.safety import Refused, check_trigger_target, room_refusal
from oomlens.simulate.verdict import KillCheck, Prediction, check_kill, concerns, eligible
from oomlens.simulate.whatif import with_grower
from oomlens.system.memcg import Memcg, MemcgMount
from oomlens.system.mmshare import shared_mm_groups
from oomlens.system.procfs import parse_proc_cgroup, read_record, read_text, translate_os_error
from oomlens.system.sandbox import MIB, Hog, SandboxMemcg
from oomlens.system.snapshot import Process, Snapshot, take_snapshot

HELPER_PREFIX = "oomlens-simulate-helper-"
DEFAULT_TIMEOUT_S = 20.0
SETTLE_S = 0.2
_POLL_S = 0.05
# Stands for the helper before it exists: no process has pid 0 in /proc.
HELPER_PLACEHOLDER_PID = 0


@dataclass(frozen=True, slots=True)
class Target:
    """What `simulate oom` knows before it does anything: the domain, its cgroup, the
    room left in it, the prediction with the helper in it, and why it must not go
    ahead (None: it may)."""

    domain: OomDomain
    memcg: Memcg
    room_bytes: int
    prediction: Prediction
    helper: Process
    refusal: str | None


@dataclass
class Trial:
    """What a trigger did. `checks`: the kills in the domain, in order."""

    prediction: Prediction
    helper_pid: int | None = None
    helper_cgroup: str | None = None
    checks: list[KillCheck] = field(default_factory=list)
    no_killable: bool = False
    interrupted: bool = False
    timed_out: bool = False
    notes: list[str] = field(default_factory=list)


def assess_memcg(snapshot: Snapshot, path: str, mount: MemcgMount,
                 helper: Process | None = None, proc_root: str = "/proc") -> Target:
    """The target of `simulate oom PATH` with the helper predicted (`helper`: the
    running one; None: one about to start, not in the snapshot)."""
    check_trigger_target(path)
    domain = find_domain(snapshot, path)
    memcg = next(m for m in snapshot.memcgs if m.path == domain.path)
    room = room_bytes(mount, memcg, snapshot)
    grower = helper if helper is not None else _placeholder(snapshot, domain.path)
    grown = with_grower(snapshot, grower, room // snapshot.page_size)
    mm, _ = shared_mm_groups(members(snapshot, domain), proc_root)
    prediction = Prediction(eligible(rank_domain(grown, domain)), "estimate", time.monotonic(),
                            mm)
    refusal = room_refusal(memcg, room, snapshot.meminfo)
    if refusal is None and not prediction.ranking:
        refusal = (f"nothing in {domain.path} can be killed (every process is exempt): the "
                   "OOM would kill nothing and its allocations would fail")
    return Target(domain, memcg, room, prediction, grower, refusal)


def room_bytes(mount: MemcgMount, memcg: Memcg, snapshot: Snapshot) -> int:
    """What a grower can still fill in `memcg`: its limit less its working set (inactive
    file pages are reclaimed before the OOM killer runs), plus the swap it may still
    use where the kernel would swap (swappiness not 0)."""
    from oomlens.daemons.guard import MemcgProbe

    if memcg.limit_bytes is None:
        raise UsageError(f"{memcg.path} has a memory+swap limit only: simulate oom needs a "
                         "memory limit")
    probe = MemcgProbe(mount, memcg.path)
    try:
        room = probe.sample(time.monotonic()).available_bytes
    finally:
        probe.close()
    swap_free = snapshot.meminfo.swap_free_kib * 1024
    if memcg.swappiness and swap_free and memcg.swap_limit_bytes is not None:
        room += max(min(memcg.swap_limit_bytes - (memcg.swap_usage_bytes or 0), swap_free), 0)
    return room


def _placeholder(snapshot: Snapshot, memcg: str) -> Process:
    """The helper before it starts: nothing resident yet, oomlens's own oom_score_adj
    (which it will have: it keeps the value it inherits)."""
    task = Task(pid=HELPER_PLACEHOLDER_PID, comm="(helper)", oom_score_adj=own_oom_score_adj(),
                rss_anon_pages=0, rss_file_pages=0, rss_shmem_pages=0, swapents=0,
                pgtables_bytes=0, page_size=snapshot.page_size)
    return Process(task=task, ppid=os.getpid(), cmdline="oomlens simulate oom helper",
                   uid=os.getuid(), user="oomlens", state="R", start_time_ticks=0,
                   oom_score=None, memcg=memcg, unit=None)


def own_oom_score_adj() -> int:
    """This process's oom_score_adj, which the helper inherits (kernel/fork.c:
    copy_signal())."""
    path = "/proc/self/oom_score_adj"
    try:
        return int(read_record(path))
    except OSError as err:
        raise translate_os_error(err, path) from err


def trigger_memcg_oom(target: Target, mount: MemcgMount, *, proc_root: str = "/proc",
                      kmsg_path: str = "/dev/kmsg", timeout: float = DEFAULT_TIMEOUT_S,
                      ) -> Trial:
    """Start the helper, predict again with it running, let it grow until the kernel
    kills in the domain; the helper and its cgroup are gone when this returns."""
    domain, memcg = target.domain, target.memcg
    limit = None if mount.version == 2 or memcg.limit_bytes is None else memcg.limit_bytes + MIB
    box = SandboxMemcg(mount, HELPER_PREFIX, limit, parent=domain.path,
                       max_limit_bytes=limit or MIB)
    with Signals() as signals, OomFollower(kmsg_path, proc_root) as follower, \
            contextlib.ExitStack() as cleanup:
        box.create()
        cleanup.callback(box.close)
        adj = target.helper.task.oom_score_adj
        helper = box.start_hog(0, adj, counter_file=os.path.join(proc_root, "vmstat"))
        _check_joined(helper.pid, box.path, mount.version)
        snapshot = take_snapshot(proc_root)
        running = assess_memcg(snapshot, domain.path, mount, snapshot.process(helper.pid),
                               proc_root)
        trial = Trial(running.prediction, helper.pid, box.path)
        if running.refusal is not None:
            raise Refused(f"not triggered: {running.refusal}")
        pids = {p.pid for p in members(snapshot, domain)}
        helper.send("grow")
        _await(lambda: _kills(follower, domain.path, pids), helper, signals, timeout, trial)
        trial.checks = _checks(follower, domain.path, pids, trial.prediction, trial.interrupted)
    return trial


def _check_joined(pid: int, path: str, version: int) -> None:
    """The kernel puts the helper in its cgroup, or it does not grow: outside a
    limited cgroup it would take the host's memory."""
    where = f"/proc/{pid}/cgroup"
    try:
        joined = parse_proc_cgroup(read_text(where), version)
    except OSError as err:
        raise translate_os_error(err, where, pid) from err
    if joined != path:
        raise Refused(f"not triggered: the helper is in memory cgroup {joined}, not in "
                      f"{path}, so nothing would limit it")


def _await(found: Callable[[], bool], helper: Hog | None, signals: Signals, timeout: float,
           trial: Trial) -> None:
    """Until a kill is found (and the helper, which stops at the first OOM kill of the
    machine, stopped or died), a signal, or `timeout`. A helper stopped by a kill
    elsewhere grows again."""
    deadline = time.monotonic() + timeout
    while not signals.stop:
        stopped = helper is None or _stopped(helper)
        if found() and stopped:
            return
        if helper is not None and stopped:
            time.sleep(SETTLE_S)
            if found() or helper.process.poll() is not None:
                return
            trial.notes.append("an OOM kill elsewhere on this machine stopped the helper; "
                               "it grew again")
            helper.send("grow")
        if time.monotonic() > deadline:
            trial.timed_out = True
            return
        time.sleep(_POLL_S)
        signals.drain()
    trial.interrupted = True


def _stopped(helper: Hog) -> bool:
    """The helper said "stopped" (the line is consumed) or died (end of its output)."""
    stream = helper.process.stdout
    if stream is None or not select.select([stream], [], [], 0)[0]:
        return False
    os.read(stream.fileno(), 64)
    return True


def _kills(follower: OomFollower, cgroup: str, pids: set[int]) -> bool:
    follower.poll()
    return any(concerns(e, cgroup, pids) for e in follower.events)


def _checks(follower: OomFollower, cgroup: str | None, pids: set[int],
            prediction: Prediction, interrupted: bool) -> list[KillCheck]:
    """The kills in the domain (`cgroup` None: global ones), each checked against the
    prediction (later ones against its order with the earlier victims gone)."""
    if not interrupted:
        time.sleep(SETTLE_S)
    follower.finish()
    checks: list[KillCheck] = []
    dead: list[int] = []
    previous: OomEvent | None = None
    for event in follower.events:
        if not (concerns(event, cgroup, pids) if cgroup is not None else _is_global(event)):
            continue
        assert event.victim is not None
        checks.append(check_kill(event, diagnose(event, previous), prediction, dead))
        dead.append(event.victim.pid)
        previous = event
    return checks


def _is_global(event: OomEvent) -> bool:
    return event.victim is not None and not event.memcg_scope


def assess_global(snapshot: Snapshot, proc_root: str = "/proc") -> Prediction:
    """The global domain's kill order now (what SysRq-f would act on)."""
    domain = find_domain(snapshot, None)
    assert domain.kind is DomainKind.GLOBAL
    mm, _ = shared_mm_groups(snapshot.processes, proc_root)
    return Prediction(eligible(rank_domain(snapshot, domain)), "snapshot", time.monotonic(),
                      mm)


def trigger_sysrq(prediction: Prediction, *, proc_root: str = "/proc",
                  kmsg_path: str = "/dev/kmsg", timeout: float = DEFAULT_TIMEOUT_S) -> Trial:
    """SysRq-f, and the global kill it makes (or the kernel's "no killable processes")."""
    trial = Trial(prediction)
    path = os.path.join(proc_root, "sysrq-trigger")
    with Signals() as signals, OomFollower(kmsg_path, proc_root) as follower:
        try:
            with open(path, "w") as trigger:
                trigger.write("f")
        except OSError as err:
            raise translate_os_error(err, path) from err

        def found() -> bool:
            follower.poll()
            trial.no_killable = any(e.no_killable for e in follower.events)
            return trial.no_killable or any(_is_global(e) for e in follower.events)

        _await(found, None, signals, timeout, trial)
        trial.checks = _checks(follower, None, set(), prediction, trial.interrupted)
    return trial
