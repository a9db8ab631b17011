"""oomlens's prediction against the kernel's choice. Pure.

Two checks per kill. The prediction itself: the domain's ranking as oomlens saw it
before the kill (the last sample of a running command, or an estimate made before a
trigger) names the victim, or not. And the rules alone: oomlens's badness applied to
the numbers the kernel printed in its task table at the kill (`report` recomputes
them: Diagnosis.choice_checks_out) names the kernel's victim, or not. When only the
second holds, the processes changed between the prediction and the kill (a grower
grew past another) and the rules were right: `moved`, not `mismatch`.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from oomlens.ranking import RankedProcess
from oomlens.report.diagnose import Diagnosis
from oomlens.report.model import OomEvent
from oomlens.system.mmshare import MmGroups


class Verdict(StrEnum):
    MATCHED = "matched"
    MOVED = "moved"
    MISMATCH = "mismatch"
    UNVERIFIED = "unverified"


VERDICT_TEXT = {
    Verdict.MATCHED: "the prediction named the kernel's victim",
    Verdict.MOVED: "the prediction named another process, but oomlens's rules on the "
                   "kernel's own numbers at the kill name the kernel's victim: the "
                   "processes changed after the prediction",
    Verdict.MISMATCH: "the kernel killed another process than oomlens's rules name",
    Verdict.UNVERIFIED: "no prediction was made before the kill and the kernel printed no "
                        "task table to check the rules against",
}


@dataclass(frozen=True, slots=True)
class Prediction:
    """The eligible members of the domain in the order oomlens expected the kernel to
    kill them. `basis`: `sample` (the running processes as last read), `estimate`
    (a grower's final size estimated) or `snapshot`; `taken_at`: CLOCK_MONOTONIC
    seconds when it was read; `mm`: which of them share an mm."""

    ranking: tuple[RankedProcess, ...]
    basis: str
    taken_at: float
    mm: MmGroups = field(default_factory=dict)

    def victim(self, dead: Collection[int] = ()) -> RankedProcess | None:
        """The first in the order that is not among `dead` (killed since) nor died
        with one of them (mm/oom_kill.c: __oom_kill_process() kills every process
        on the victim's mm)."""
        gone = set(dead).union(*(self.mm.get(pid, ()) for pid in dead))
        return next((r for r in self.ranking if r.process.pid not in gone), None)


def eligible(ranking: Sequence[RankedProcess]) -> tuple[RankedProcess, ...]:
    return tuple(r for r in ranking if r.ranked.rank is not None)


def judge(predicted_pid: int | None, killed_pid: int, checks_out: bool | None) -> Verdict:
    """`checks_out`: whether the rules on the kernel's task table name `killed_pid`
    (None: the report had no table, e.g. rate-limited)."""
    if predicted_pid == killed_pid:
        return Verdict.MATCHED
    if checks_out is True:
        return Verdict.MOVED
    if checks_out is False or predicted_pid is not None:
        return Verdict.MISMATCH
    return Verdict.UNVERIFIED


@dataclass(frozen=True, slots=True)
class KillCheck:
    """One kill the kernel made, its report (`diagnosis`: `oomlens report`'s analysis
    of it), what was predicted for it and the verdict."""

    event: OomEvent
    diagnosis: Diagnosis
    predicted: RankedProcess | None
    prediction: Prediction | None
    verdict: Verdict

    @property
    def victim_pid(self) -> int:
        assert self.event.victim is not None
        return self.event.victim.pid


def check_kill(event: OomEvent, diagnosis: Diagnosis, prediction: Prediction | None,
               dead: Collection[int] = ()) -> KillCheck:
    """The verdict on one kill (an event with a victim). `dead`: processes killed
    after `prediction` was made and before this kill."""
    assert event.victim is not None
    predicted = None if prediction is None else prediction.victim(dead)
    verdict = judge(None if predicted is None else predicted.process.pid, event.victim.pid,
                    diagnosis.choice_checks_out)
    return KillCheck(event, diagnosis, predicted, prediction, verdict)


def concerns(event: OomEvent, cgroup: str, pids: Collection[int]) -> bool:
    """Whether `event` is a kill in the OOM domain of memory cgroup `cgroup`: the
    report names it as `oom_memcg`, or (a rate-limited kill prints only its line)
    the victim is one of `pids`, the processes seen in it."""
    if event.victim is None:
        return False
    memcg = event.memcg
    if memcg is not None and memcg.oom_memcg is not None:
        return memcg.oom_memcg == cgroup
    return event.victim.pid in pids


def overall(checks: Sequence[KillCheck]) -> Verdict | None:
    """The worst verdict of a run (None: no kill)."""
    order = (Verdict.MISMATCH, Verdict.UNVERIFIED, Verdict.MOVED, Verdict.MATCHED)
    found = {c.verdict for c in checks}
    return next((v for v in order if v in found), None)
