"""oomlens's predicted `/proc/<pid>/oom_score` against the kernel's, for every process
on the machine (and with 2,000 extra ones), and the EACCES path of lowering
oom_score_adj without CAP_SYS_RESOURCE.

A scan reads `status` and then `oom_score` of each process, so a process whose
memory changes in between can disagree; such a mismatch must be *explained* by
re-reading (the values moved), never waved through.
"""

from __future__ import annotations

import dataclasses
import errno
import os
from collections.abc import Callable
from dataclasses import dataclass

import pytest

from oomlens.errors import AccessDenied, OomlensError
from oomlens.kernel.badness import proc_oom_score
from oomlens.ranking import RankedProcess, era_of, rank_domain
from oomlens.system.procfs import parse_status, read_bytes, translate_os_error
from oomlens.system.sandbox import MIB, SandboxMemcg
from oomlens.system.snapshot import Snapshot, take_snapshot

pytestmark = pytest.mark.kernel
SandboxFactory = Callable[..., SandboxMemcg]  # the `sandbox` fixture (tests/conftest.py)

MIN_MATCH_RATIO = 0.99
EXTRA_PROCESSES = 2000
SLEEPERS_PER_SANDBOX = 500  # ~175 KiB charged per `sleep`: ~90 MiB per 256 MiB sandbox
CAP_SYS_RESOURCE = 24
# /proc/<pid>/status sums the per-CPU parts of the rss counters; oom_badness() on
# this kernel reads only the central count (see test_victim_prediction.py), so the
# two can differ by up to this many pages per counter.
_CPUS = os.cpu_count() or 1
PERCPU_COUNTER_SLACK = _CPUS * (max(32, 2 * _CPUS) - 1)


@dataclass
class Comparison:
    compared: int
    matches: int
    not_readable: int
    explained: dict[int, str]
    unexplained: dict[int, str]

    @property
    def ratio(self) -> float:
        return self.matches / self.compared

    def summary(self) -> str:
        lines = [f"{self.matches}/{self.compared} match ({self.ratio:.4%}), "
                 f"{self.not_readable} oom_score not readable"]
        lines += [f"  explained {pid}: {why}" for pid, why in self.explained.items()]
        lines += [f"  UNEXPLAINED {pid}: {why}" for pid, why in self.unexplained.items()]
        return "\n".join(lines)


def _fresh(pid: int) -> tuple[bytes, int, int] | None:
    """(status, oom_score, oom_score_adj) read with status unchanged around the
    oom_score read, or None if the process is gone."""
    for _ in range(10):
        try:
            before = read_bytes(f"/proc/{pid}/status")
            score = int(read_bytes(f"/proc/{pid}/oom_score"))
            adj = int(read_bytes(f"/proc/{pid}/oom_score_adj"))
            after = read_bytes(f"/proc/{pid}/status")
        except (OSError, ValueError):
            return None
        if _memory(before) == _memory(after):
            return after, score, adj
    return None


def _memory(status: bytes) -> tuple[int, ...]:
    s = parse_status(status)
    return (s.rss_anon_kib, s.rss_file_kib, s.rss_shmem_kib, s.swap_kib, s.pte_kib)


def explain(snapshot: Snapshot, r: RankedProcess) -> tuple[bool, str]:
    """(explained?, why) for a process whose predicted oom_score was wrong."""
    task, kernel_score = r.process.task, r.process.oom_score
    era, total = era_of(snapshot), snapshot.global_domain.totalpages
    head = (f"{r.process.comm}: predicted {r.predicted_oom_score}, kernel {kernel_score} "
            f"(rss {task.rss_pages} swap {task.swapents} pt {task.pgtables_pages} "
            f"adj {task.oom_score_adj})")
    fresh = _fresh(task.pid)
    if fresh is None:
        return True, f"{head}; exited (or never held still) while re-reading"
    status, score, adj = fresh
    s, kib = parse_status(status), snapshot.page_size // 1024
    now = dataclasses.replace(
        task, oom_score_adj=adj, rss_anon_pages=s.rss_anon_kib // kib,
        rss_file_pages=s.rss_file_kib // kib, rss_shmem_pages=s.rss_shmem_kib // kib,
        swapents=s.swap_kib // kib, pgtables_bytes=s.pte_kib * 1024)
    predicted_now = proc_oom_score(now, total, era)
    tail = (f"; re-read: rss {now.rss_pages} swap {now.swapents} pt {now.pgtables_pages} "
            f"adj {adj} -> predicted {predicted_now}, kernel {score}")
    changed = (now.rss_pages, now.swapents, now.pgtables_pages, adj) != (
        task.rss_pages, task.swapents, task.pgtables_pages, task.oom_score_adj)
    if predicted_now == score and changed:
        return True, head + tail + " (memory changed between the scan's reads)"
    slack = 3 * PERCPU_COUNTER_SLACK
    low, high = (proc_oom_score(dataclasses.replace(now, rss_anon_pages=max(
        now.rss_anon_pages + d, 0)), total, era) for d in (-slack, slack))
    if low <= score <= high and predicted_now != score:
        return True, head + tail + f" (within the per-CPU rss counter slack of {slack} pages)"
    return False, head + tail


def compare(snapshot: Snapshot) -> Comparison:
    result = Comparison(0, 0, 0, {}, {})
    for r in rank_domain(snapshot, snapshot.global_domain):
        if r.process.oom_score is None:
            result.not_readable += 1
            continue
        result.compared += 1
        if r.predicted_oom_score == r.process.oom_score:
            result.matches += 1
            continue
        ok, why = explain(snapshot, r)
        (result.explained if ok else result.unexplained)[r.process.pid] = why
    return result


def _report(request: pytest.FixtureRequest, line: str) -> None:
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if capture is not None:
        with capture.global_and_fixture_disabled():
            print(f"\n{line}")


class TestPredictedOomScoreAgainstProc:
    def test_every_process(self, request: pytest.FixtureRequest) -> None:
        snapshot = take_snapshot()
        result = compare(snapshot)
        _report(request, f"oom_score oracle, {len(snapshot.processes)} processes: "
                         + result.summary())
        assert result.compared >= 10, result.summary()
        assert result.ratio >= MIN_MATCH_RATIO, result.summary()
        assert not result.unexplained, result.summary()

    def test_with_2000_extra_processes(
        self, sandbox: SandboxFactory, request: pytest.FixtureRequest
    ) -> None:
        boxes = [sandbox(256 * MIB) for _ in range(EXTRA_PROCESSES // SLEEPERS_PER_SANDBOX)]
        children = [box.spawn(["sleep", "600"]) for box in boxes
                    for _ in range(SLEEPERS_PER_SANDBOX)]
        for box in boxes:
            box.wait_procs(SLEEPERS_PER_SANDBOX)
        snapshot = take_snapshot()
        seen = {p.pid for p in snapshot.processes}
        assert {c.pid for c in children} <= seen
        result = compare(snapshot)
        _report(request, f"oom_score oracle, {len(snapshot.processes)} processes "
                         f"(+{EXTRA_PROCESSES} sleepers): " + result.summary())
        for box in boxes:
            box.close()
        assert all(c.returncode is not None for c in children), "sleepers not reaped"
        assert not any(os.path.isdir(box.directory) for box in boxes)
        assert result.compared >= EXTRA_PROCESSES, result.summary()
        assert result.ratio >= MIN_MATCH_RATIO, result.summary()
        assert not result.unexplained, result.summary()


def _has_cap_sys_resource() -> bool:
    status = parse_status(read_bytes("/proc/self/status"))
    return bool(status.cap_eff >> CAP_SYS_RESOURCE & 1)


def _write(path: str, value: str) -> None:
    with open(path, "w") as f:
        f.write(value)


class TestLoweringOomScoreAdjWithoutCapSysResource:
    @pytest.fixture(autouse=True)
    def _no_cap(self) -> None:
        if _has_cap_sys_resource():
            pytest.skip("this process has CAP_SYS_RESOURCE: lowering oom_score_adj is allowed")

    def test_negative_write_is_eacces_positive_works(self, sandbox: SandboxFactory) -> None:
        box = sandbox(64 * MIB)
        child = box.spawn(["sleep", "60"])
        box.wait_procs(1)
        path = f"/proc/{child.pid}/oom_score_adj"
        with pytest.raises(PermissionError) as refused:
            _write(path, "-100")
        assert refused.value.errno == errno.EACCES
        assert int(read_bytes(path)) == 0
        error = translate_os_error(refused.value, path, child.pid)
        assert isinstance(error, AccessDenied) and error.pid == child.pid
        _write(path, "100")
        assert int(read_bytes(path)) == 100
        _write(path, "0")  # back down to the floor (oom_score_adj_min) needs nothing
        assert int(read_bytes(path)) == 0

    def test_sandbox_reports_access_denied_for_a_negative_hog(
        self, sandbox: SandboxFactory
    ) -> None:
        box = sandbox(64 * MIB)
        with pytest.raises(AccessDenied) as denied:
            box.start_hog(1, -100)
        assert "CAP_SYS_RESOURCE" in str(denied.value)
        assert isinstance(denied.value, OomlensError)
