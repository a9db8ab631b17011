"""policy/plan.py on processes built directly (no I/O): descendants, steps in pid
order with kernel threads set aside, the oom_score_adj bounds, and the processes
suspected of sharing a target's mm."""

from __future__ import annotations

import pytest

from oomlens.kernel.task import Task
from oomlens.policy.plan import (
    Plan,
    Step,
    build_plan,
    check_score,
    shared_mm_suspects,
    with_descendants,
)
from oomlens.system.snapshot import Process

PAGE = 4096


def proc(pid: int, pages: int = 100, *, ppid: int = 1, adj: int = 0, file_pages: int = 0,
         shmem_pages: int = 0, swapents: int = 0, pgtables_bytes: int = 0,
         **flags: bool) -> Process:
    task = Task(
        pid=pid, comm=f"p{pid}", oom_score_adj=adj, rss_anon_pages=pages,
        rss_file_pages=file_pages, rss_shmem_pages=shmem_pages, swapents=swapents,
        pgtables_bytes=pgtables_bytes, page_size=PAGE, scan_order=pid, **flags,
    )
    return Process(task=task, ppid=ppid, cmdline=f"/bin/p{pid}", uid=0, user="root",
                   state="S", start_time_ticks=pid, oom_score=None, memcg="/", unit=None)


def kthread(pid: int) -> Process:
    return proc(pid, 0, ppid=2, is_kthread=True, has_mm=False)


# 1 -> 10 -> (11, 12 -> 13); 1 -> 20; 2 -> 30 (a kernel thread)
TREE = (proc(1, is_global_init=True), proc(10), proc(11, ppid=10), proc(12, ppid=10),
        proc(13, ppid=12), proc(20), kthread(2), kthread(30))


class TestWithDescendants:
    @pytest.mark.parametrize(("roots", "expected"), [
        ([10], {10, 11, 12, 13}),
        ([12], {12, 13}),
        ([13], {13}),
        ([12, 20], {12, 13, 20}),
        ([10, 12], {10, 11, 12, 13}),  # overlapping roots: each once
        ([2], {2, 30}),
        ([], set()),
    ])
    def test_subtrees(self, roots: list[int], expected: set[int]) -> None:
        assert with_descendants(TREE, roots) == expected

    def test_everything_below_init(self) -> None:
        assert with_descendants(TREE, [1]) == {1, 10, 11, 12, 13, 20}

    def test_a_root_missing_from_the_snapshot_is_kept_alone(self) -> None:
        """The selector reports unknown pids; this only walks the tree."""
        assert with_descendants(TREE, [99]) == {99}

    def test_a_parent_loop_ends(self) -> None:
        """ppid values come from a scan that is not atomic: never loop forever."""
        loop = (proc(40, ppid=41), proc(41, ppid=40))
        assert with_descendants(loop, [40]) == {40, 41}


class TestCheckScore:
    @pytest.mark.parametrize("value", [-1000, -1, 0, 1, 1000])
    def test_in_range(self, value: int) -> None:
        assert check_score(value) == value

    @pytest.mark.parametrize("value", [-1001, 1001, -10**6])
    def test_out_of_range(self, value: int) -> None:
        with pytest.raises(ValueError, match=f"must be in -1000..1000, not {value}"):
            check_score(value)

    def test_build_plan_checks_the_value(self) -> None:
        with pytest.raises(ValueError, match="not 1001"):
            build_plan([proc(10)], 1001)


class TestBuildPlan:
    def test_steps_in_pid_order_kernel_threads_aside(self) -> None:
        selected = [proc(20), kthread(30), proc(10, adj=300), kthread(2), proc(11, adj=-5)]
        plan = build_plan(selected, 300)
        assert [s.process.pid for s in plan.steps] == [10, 11, 20]
        assert [p.pid for p in plan.kernel_threads] == [2, 30]
        assert [(s.old, s.new, s.changes) for s in plan.steps] == [
            (300, 300, False), (-5, 300, True), (0, 300, True)]

    def test_only_kernel_threads(self) -> None:
        plan = build_plan([kthread(2)], -1000)
        assert plan.steps == ()
        assert [p.pid for p in plan.kernel_threads] == [2]

    def test_nothing_selected(self) -> None:
        assert build_plan([], 0) == Plan((), ())

    def test_zombie_is_a_step(self) -> None:
        """A zombie has no mm but is no kernel thread: the kernel still takes the
        write (harmless), so it is planned like any process."""
        zombie = proc(50, 0, has_mm=False)
        assert build_plan([zombie], 5).steps == (Step(zombie, 5),)


class TestSharedMmSuspects:
    def test_equal_counters_outside_the_plan_are_suspected(self) -> None:
        target = proc(10, 500, file_pages=20, pgtables_bytes=8192)
        twin = proc(11, 500, file_pages=20, pgtables_bytes=8192)
        other = proc(12, 501, file_pages=20, pgtables_bytes=8192)
        plan = build_plan([target], 300)
        assert shared_mm_suspects(plan, [target, twin, other]) == {10: [twin]}

    def test_every_counter_must_be_equal(self) -> None:
        def with_counters(pid: int, bump: str = "") -> Process:
            counters = {"pages": 500, "file_pages": 20, "shmem_pages": 3, "swapents": 7,
                        "pgtables_bytes": 8192}
            if bump:
                counters[bump] += PAGE
            return proc(pid, counters["pages"], file_pages=counters["file_pages"],
                        shmem_pages=counters["shmem_pages"], swapents=counters["swapents"],
                        pgtables_bytes=counters["pgtables_bytes"])

        target = with_counters(10)
        differing = [with_counters(20 + i, key) for i, key in enumerate(
            ["pages", "file_pages", "shmem_pages", "swapents", "pgtables_bytes"])]
        plan = build_plan([target], 300)
        assert shared_mm_suspects(plan, [target, *differing]) == {}
        twin = with_counters(30)
        assert shared_mm_suspects(plan, [target, *differing, twin]) == {10: [twin]}

    def test_peers_in_the_plan_are_not_suspects(self) -> None:
        a, b = proc(10, 500), proc(11, 500)
        assert shared_mm_suspects(build_plan([a, b], 300), [a, b]) == {}

    def test_zero_rss_is_not_evidence(self) -> None:
        """Many processes read all-zero counters (zombies, tiny ones): no match."""
        target, peer = proc(10, 0), proc(11, 0)
        assert shared_mm_suspects(build_plan([target], 300), [target, peer]) == {}

    def test_kernel_threads_and_processes_without_mm_are_never_suspects(self) -> None:
        target = proc(10, 500)
        no_mm = proc(11, 500, has_mm=False)
        kernel = proc(12, 500, is_kthread=True)
        plan = build_plan([target], 300)
        assert shared_mm_suspects(plan, [target, no_mm, kernel]) == {}

    def test_several_targets(self) -> None:
        a, a_twin = proc(10, 500), proc(11, 500)
        b, b_twin1, b_twin2 = proc(20, 900), proc(21, 900), proc(22, 900)
        plan = build_plan([a, b], -500)
        found = shared_mm_suspects(plan, [a, a_twin, b, b_twin1, b_twin2])
        assert found == {10: [a_twin], 20: [b_twin1, b_twin2]}
