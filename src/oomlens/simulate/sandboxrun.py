"""`oomlens simulate run`: a command in a throwaway memory cgroup, followed until it
exits, every OOM kill in it reported with `oomlens report`'s analysis and checked
against oomlens's prediction.

The shell around `system/sandbox.py` (the cgroup, the command joining it before it
runs), `follow.py` (the kernel's reports) and the pure checks (`verdict.py`).

The prediction for a kill is the sandbox's ranking as last sampled before it: a
sample reads the cgroup's own oom_kill counter before and after reading its
processes, and counts only if the two agree, so it is known to be from before kill
N + 1 exactly, whatever the clocks (the kernel's log stamps are not CLOCK_MONOTONIC).
Samples come every `interval` seconds and every 10 ms once usage is within 10 % of
the limit, where a kill is near.

Cleanup: SIGINT and SIGTERM only set a flag (daemons/signals.py) that the loop sees
at once; every way out of the loop, errors included, kills what is left in the
cgroup and removes it (SandboxMemcg.close()). Only SIGKILL of oomlens itself leaves
the cgroup behind.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import select
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from oomlens.daemons.signals import Signals
from oomlens.errors import AccessDenied, OomlensError, ProcessGone
from oomlens.kernel.domain import OomDomain
from oomlens.ranking import rank_domain
from oomlens.report.diagnose import diagnose
from oomlens.report.model import OomEvent
from oomlens.simulate.follow import OomFollower
from oomlens.simulate.verdict import KillCheck, Prediction, check_kill, concerns, eligible
from oomlens.system.memcg import MemcgMount
from oomlens.system.mmshare import shared_mm_groups
from oomlens.system.procfs import UserNames
from oomlens.system.sandbox import SandboxMemcg
from oomlens.system.snapshot import Process, ScanNotes, Snapshot, read_process

PREFIX = "oomlens-simulate-"
NEAR_LIMIT = 0.9
NEAR_LIMIT_INTERVAL_S = 0.01
# After the command: time for the last report's lines and the oom_reaper's.
SETTLE_S = 0.2


@dataclass(frozen=True, slots=True)
class RunOptions:
    """`command_stdout`: where the command's stdout goes (None: ours; 2: our stderr,
    so that `--json` keeps stdout for the document)."""

    argv: tuple[str, ...]
    limit_bytes: int
    swap_bytes: int = 0
    interval_s: float = 0.1
    command_stdout: int | None = None
    kmsg_path: str = "/dev/kmsg"
    proc_root: str = "/proc"


@dataclass
class RunResult:
    """What happened. `returncode`: the command's (negative: the signal that ended
    it; None: interrupted before it ended). `oom_kills`: the cgroup's own counter;
    `checks`: the kills found in the kernel log, in order. `peak_source` names the
    file the peak was read from (`sampled`: the highest usage the samples saw)."""

    path: str
    version: int
    domain: OomDomain
    limit_bytes: int
    swap_bytes: int
    pid: int | None = None
    returncode: int | None = None
    interrupted: bool = False
    checks: list[KillCheck] = field(default_factory=list)
    oom_kills: int = 0
    peak_bytes: int | None = None
    peak_source: str = "sampled"
    samples: int = 0
    notes: list[str] = field(default_factory=list)
    duration_s: float = 0.0


class Sampler:
    """The sandbox's processes and ranking, read now and then (see the module doc)."""

    def __init__(self, box: SandboxMemcg, base: Snapshot, domain: OomDomain,
                 proc_root: str, clock: Callable[[], float]) -> None:
        self.box = box
        self.base = base
        self.domain = domain
        self.proc_root = proc_root
        self.clock = clock
        self.predictions: dict[int, Prediction] = {}
        self.seen: set[int] = set()
        self.usage_bytes = 0
        self.peak_bytes = 0
        self.count = 0
        self._users = UserNames()

    def take(self) -> None:
        before = self.box.oom_kill_count()
        pids = self.box.procs()
        processes = self._read(pids)
        self.usage_bytes = self.box.usage_bytes()
        self.peak_bytes = max(self.peak_bytes, self.usage_bytes)
        after = self.box.oom_kill_count()
        self.seen.update(pids)
        self.count += 1
        if before != after or not processes:
            return
        ranking = rank_domain(dataclasses.replace(self.base, processes=tuple(processes)),
                              self.domain)
        mm, _ = shared_mm_groups(processes, self.proc_root)
        self.predictions[before] = Prediction(eligible(ranking), "sample", self.clock(), mm)

    def _read(self, pids: list[int]) -> list[Process]:
        owners = dict.fromkeys(pids, self.box.path)
        notes = ScanNotes()
        found = []
        for pid in pids:
            try:
                found.append(read_process(self.proc_root, pid, owners, self.box.mount.version,
                                          self._users, notes))
            except (ProcessGone, AccessDenied):
                continue
        return found

    def interval(self, base_s: float) -> float:
        limit = self.box.limit_bytes or 0
        near = limit and self.usage_bytes >= limit * NEAR_LIMIT
        return min(base_s, NEAR_LIMIT_INTERVAL_S) if near else base_s


def prediction_for(predictions: Mapping[int, Prediction], index: int) -> Prediction | None:
    """The prediction for kill number `index` (0 = the first): the last sample taken
    with `index` kills counted, else the last one before (the kernel killed twice
    between two samples). Earlier victims may still show in it, dying: the check
    leaves them out."""
    return next((predictions[n] for n in range(index, -1, -1) if n in predictions), None)


def run_sandboxed(options: RunOptions, base: Snapshot, mount: MemcgMount,
                  clock: Callable[[], float] = time.monotonic) -> RunResult:
    """Run the command; raise nothing for what the command or the kernel does."""
    box = SandboxMemcg(mount, PREFIX, options.limit_bytes, swap_limit_bytes=options.swap_bytes,
                       kmsg_path=options.kmsg_path,
                       max_limit_bytes=max(options.limit_bytes, options.swap_bytes))
    start = clock()
    with Signals() as signals, contextlib.ExitStack() as cleanup:
        box.create()
        cleanup.callback(box.close)
        domain = box.state().domain(base.total_swap_pages)
        result = RunResult(box.path, mount.version, domain, options.limit_bytes,
                           options.swap_bytes)
        follower = _follower(options, result.notes)
        if follower is not None:
            cleanup.enter_context(follower)
        sampler = Sampler(box, base, domain, options.proc_root, clock)
        if not signals.stop:
            _follow(box, options, sampler, follower, signals, result)
        result.interrupted = signals.stop
        _conclude(box, sampler, follower, result)
    result.duration_s = clock() - start
    return result


def _follower(options: RunOptions, notes: list[str]) -> OomFollower | None:
    try:
        return OomFollower(options.kmsg_path, options.proc_root)
    except OomlensError as err:
        notes.append(f"the kernel log cannot be read ({err}): kills are counted, not "
                     "analysed")
        return None


def _follow(box: SandboxMemcg, options: RunOptions, sampler: Sampler,
            follower: OomFollower | None, signals: Signals, result: RunResult) -> None:
    """Start the command and sample until it exits or a signal asks to stop."""
    child = box.spawn(options.argv, stdin=None, stdout=options.command_stdout, stderr=None)
    result.pid = child.pid
    poller = select.poll()
    poller.register(signals.fileno(), select.POLLIN)
    if follower is not None:
        poller.register(follower.fileno(), select.POLLIN)
    pidfd = _pidfd(child.pid)
    if pidfd is not None:
        poller.register(pidfd, select.POLLIN)
    try:
        while child.poll() is None and not signals.stop:
            sampler.take()
            if follower is not None:
                follower.poll()
            poller.poll(int(sampler.interval(options.interval_s) * 1000) + 1)
            signals.drain()
    finally:
        if pidfd is not None:
            os.close(pidfd)
    result.returncode = child.returncode


def _pidfd(pid: int) -> int | None:
    """A pidfd that polls readable when `pid` exits (Linux 5.3+), else None: the
    loop then notices the exit at its next sample."""
    try:
        return os.pidfd_open(pid)
    except OSError:
        return None


def _conclude(box: SandboxMemcg, sampler: Sampler, follower: OomFollower | None,
              result: RunResult) -> None:
    """Read what the kernel logged and counted, and the peak, before the cgroup goes."""
    if follower is not None:
        if not result.interrupted:
            time.sleep(SETTLE_S)
        follower.finish()
        if follower.lost:
            result.notes.append(f"{follower.lost} kernel log records were overwritten before "
                                "they were read")
    result.oom_kills = box.oom_kill_count()
    peak = box.peak_usage_bytes()
    if peak is not None:
        result.peak_bytes = peak
        result.peak_source = ("memory.max_usage_in_bytes" if box.mount.version == 1
                              else "memory.peak")
    else:
        result.peak_bytes = sampler.peak_bytes
    result.samples = sampler.count
    events = [] if follower is None else follower.events
    result.checks = checks_of(events, box.path, sampler)


def checks_of(events: list[OomEvent], cgroup: str, sampler: Sampler) -> list[KillCheck]:
    """The kills of the sandbox among `events`, each with its report's analysis and
    the verdict on the prediction made before it."""
    ours = [e for e in events if concerns(e, cgroup, sampler.seen)]
    checks: list[KillCheck] = []
    victims: list[int] = []
    previous: OomEvent | None = None
    for index, event in enumerate(ours):
        prediction = prediction_for(sampler.predictions, index)
        checks.append(check_kill(event, diagnose(event, previous), prediction, victims))
        assert event.victim is not None
        victims.append(event.victim.pid)
        previous = event
    return checks
