"""simulate/verdict.py (a prediction against the kernel's choice) and the pure parts
of simulate/sandboxrun.py (which sample predicted which kill)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from oomlens.kernel.badness import CURRENT_ERA
from oomlens.kernel.domain import DomainKind, OomDomain
from oomlens.kernel.select import Ranked
from oomlens.kernel.task import Task
from oomlens.ranking import RankedProcess
from oomlens.report.diagnose import Diagnosis, diagnose
from oomlens.report.model import MemcgReport, OomEvent, Victim
from oomlens.simulate.sandboxrun import prediction_for
from oomlens.simulate.verdict import (
    Prediction,
    Verdict,
    check_kill,
    concerns,
    judge,
    overall,
)
from oomlens.system.snapshot import Process

DOMAIN = OomDomain(DomainKind.MEMCG, "/box", 65_536)


def ranked(pid: int, rank: int) -> RankedProcess:
    task = Task(pid=pid, comm=f"p{pid}", oom_score_adj=0, rss_anon_pages=1000 - rank,
                rss_file_pages=0, rss_shmem_pages=0, swapents=0, pgtables_bytes=0)
    process = Process(task=task, ppid=1, cmdline="", uid=0, user="root", state="S",
                      start_time_ticks=0, oom_score=None, memcg="/box", unit=None)
    return RankedProcess(process, Ranked(task, rank, None, None), DOMAIN, 666, CURRENT_ERA)


def prediction(*pids: int) -> Prediction:
    return Prediction(tuple(ranked(pid, n) for n, pid in enumerate(pids, 1)), "sample", 0.0)


def event(victim: int, oom_memcg: str | None = None) -> OomEvent:
    found = OomEvent(source="kmsg", first_lineno=1, victim=Victim(victim, f"p{victim}"))
    if oom_memcg is not None:
        found.memcg = MemcgReport(oom_memcg=oom_memcg, task_memcg=oom_memcg)
    return found


def diagnosis(checks_out: bool | None) -> Diagnosis:
    return replace(diagnose(event(1)), choice_checks_out=checks_out)


@pytest.mark.parametrize(("predicted", "checks_out", "verdict"), [
    (7, True, Verdict.MATCHED),
    (7, None, Verdict.MATCHED),
    (7, False, Verdict.MATCHED),
    (8, True, Verdict.MOVED),
    (8, False, Verdict.MISMATCH),
    (8, None, Verdict.MISMATCH),
    (None, True, Verdict.MOVED),
    (None, False, Verdict.MISMATCH),
    (None, None, Verdict.UNVERIFIED),
])
def test_judge(predicted: int | None, checks_out: bool | None, verdict: Verdict) -> None:
    assert judge(predicted, 7, checks_out) is verdict


def test_later_kills_are_checked_against_the_order_without_earlier_victims() -> None:
    made = prediction(10, 11, 12)
    first = check_kill(event(10), diagnosis(None), made)
    second = check_kill(event(11), diagnosis(None), made, dead=[10])
    wrong = check_kill(event(12), diagnosis(None), made, dead=[10])
    assert (first.verdict, second.verdict, wrong.verdict) == (
        Verdict.MATCHED, Verdict.MATCHED, Verdict.MISMATCH)
    assert wrong.predicted is not None and wrong.predicted.process.pid == 11
    assert first.victim_pid == 10


def test_processes_on_the_victims_mm_died_with_it() -> None:
    made = replace(prediction(10, 11, 12), mm={10: frozenset({10, 11}),
                                               11: frozenset({10, 11})})
    first = made.victim()
    assert first is not None and first.process.pid == 10
    after = check_kill(event(12), diagnosis(None), made, dead=[10])
    assert after.verdict is Verdict.MATCHED


def test_no_prediction_falls_back_on_the_kernel_table() -> None:
    check = check_kill(event(10), diagnosis(True), None)
    assert check.verdict is Verdict.MOVED and check.predicted is None


def test_overall_is_the_worst() -> None:
    made = prediction(10, 11)
    matched = check_kill(event(10), diagnosis(True), made)
    moved = check_kill(event(11), diagnosis(True), made)
    mismatch = check_kill(event(11), diagnosis(False), made)
    assert overall([]) is None
    assert overall([matched]) is Verdict.MATCHED
    assert overall([matched, moved]) is Verdict.MOVED
    assert overall([moved, mismatch, matched]) is Verdict.MISMATCH


class TestConcerns:
    def test_by_the_reports_oom_memcg(self) -> None:
        assert concerns(event(5, "/box"), "/box", set())
        assert not concerns(event(5, "/box/child"), "/box", {5})
        assert not concerns(event(5, "/other"), "/box", {5})

    def test_a_lone_kill_line_by_its_victim(self) -> None:
        assert concerns(event(5), "/box", {4, 5})
        assert not concerns(event(6), "/box", {4, 5})

    def test_no_victim_no_kill(self) -> None:
        assert not concerns(OomEvent(source="kmsg", first_lineno=1, no_killable=True),
                            "/box", {5})


class TestPredictionFor:
    def test_the_last_sample_before_each_kill(self) -> None:
        before_first, before_second = prediction(1), prediction(2)
        made = {0: before_first, 1: before_second}
        assert prediction_for(made, 0) is before_first
        assert prediction_for(made, 1) is before_second

    def test_two_kills_between_samples_use_the_earlier_order(self) -> None:
        only = prediction(1, 2, 3)
        assert prediction_for({0: only}, 1) is only
        assert prediction_for({0: only}, 2) is only

    def test_no_sample_before(self) -> None:
        assert prediction_for({}, 0) is None
        assert prediction_for({3: prediction(1)}, 1) is None

    def test_a_dying_victim_in_a_later_sample_is_left_out(self) -> None:
        """A sample taken after kill 1 may still list its victim, exiting."""
        after_first = prediction(1, 2)
        check = check_kill(event(2), diagnosis(None), prediction_for({1: after_first}, 1),
                           dead=[1])
        assert check.verdict is Verdict.MATCHED
