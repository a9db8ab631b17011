"""system/mmshare.py: processes that may share an mm (equal counters and layout),
confirmed one pair at a time within a budget, and the mm layout from
/proc/<pid>/stat."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from oomlens.kernel.task import Task
from oomlens.system.mmshare import confirm_mm_groups, mm_layout, mm_suspects, shared_mm_groups
from oomlens.system.snapshot import Process

PAGE = 4096


def proc(pid: int, anon: int, ptes: int = 40, **flags: bool) -> Process:
    task = Task(pid=pid, comm=f"p{pid}", oom_score_adj=0, rss_anon_pages=anon,
                rss_file_pages=0, rss_shmem_pages=0, swapents=0, pgtables_bytes=ptes * PAGE,
                **flags)
    return Process(task=task, ppid=1, cmdline="", uid=0, user="root", state="S",
                   start_time_ticks=pid, oom_score=None, memcg=None, unit=None)


BIG, SMALL = proc(100, 40_000), proc(101, 10_000)
TWIN_A, TWIN_B = proc(102, 20_000), proc(103, 20_000)
KTHREAD = proc(2, 0, 0, is_kthread=True, has_mm=False)
TWINS = {102: frozenset({102, 103}), 103: frozenset({102, 103})}




def stat(pid: int, comm: str, code: int, end: int, stack: int) -> str:
    # Fields 3..25, then 26 start_code, 27 end_code, 28 start_stack, then the rest.
    before = ["S", "1", str(pid), str(pid)] + ["0"] * 19
    return f"{pid} ({comm}) " + " ".join([*before, str(code), str(end), str(stack),
                                          *(["0"] * 24)]) + "\n"


def test_fields_26_to_28(tmp_path: Path) -> None:
    (tmp_path / "42").mkdir()
    (tmp_path / "42" / "stat").write_text(stat(42, "a) 1 2 (b", 4096, 8192, 140_000))
    assert mm_layout(str(tmp_path), 42) == (4096, 8192, 140_000)


def test_gone(tmp_path: Path) -> None:
    assert mm_layout(str(tmp_path), 42) is None


def test_two_runs_of_one_program_differ_but_a_process_equals_itself() -> None:
    """Address space layout randomisation: two `sleep`s load at different addresses."""
    with open("/proc/sys/kernel/randomize_va_space") as f:
        randomized = f.read().strip() != "0"
    one = subprocess.Popen(["sleep", "30"])
    two = subprocess.Popen(["sleep", "30"])
    try:
        assert mm_layout("/proc", one.pid) == mm_layout("/proc", one.pid)
        assert mm_layout("/proc", os.getpid()) is not None
        if randomized:
            assert mm_layout("/proc", one.pid) != mm_layout("/proc", two.pid)
    finally:
        one.kill()
        two.kill()
        one.wait()
        two.wait()


class TestSharedMm:
    def test_suspects_have_equal_nonzero_counters(self) -> None:
        zero_a, zero_b = proc(300, 0), proc(301, 0)
        groups = mm_suspects([BIG, SMALL, TWIN_A, TWIN_B, zero_a, zero_b, KTHREAD])
        assert [[p.pid for p in g] for g in groups] == [[102, 103]]

    def test_a_layout_splits_lookalikes(self) -> None:
        twin_c = proc(104, 20_000, ptes=40)
        layouts = {102: (1, 2, 3), 103: (1, 2, 3), 104: (7, 8, 9)}
        groups = mm_suspects([TWIN_A, TWIN_B, twin_c], layouts.__getitem__)
        assert [[p.pid for p in g] for g in groups] == [[102, 103]]

    def test_confirmed_by_the_kernel(self) -> None:
        pairs = {(102, 103)}
        suspects = [[TWIN_A, TWIN_B, proc(104, 20_000, ptes=40)]]
        groups, unconfirmed = confirm_mm_groups(suspects, lambda a, b: (a, b) in pairs)
        assert groups == TWINS and unconfirmed == []

    def test_unanswered_pairs_are_reported(self) -> None:
        groups, unconfirmed = confirm_mm_groups([[TWIN_A, TWIN_B]], lambda a, b: None)
        assert groups == {} and unconfirmed == [(102, 103)]

    def test_questions_stop_at_the_budget(self) -> None:
        many = [proc(400 + n, 5_000) for n in range(5)]
        asked: list[tuple[int, int]] = []

        def same(a: int, b: int) -> bool:
            asked.append((a, b))
            return False

        groups, unconfirmed = confirm_mm_groups([many], same, budget=3)
        assert asked == [(400, 401), (400, 402), (400, 403)]
        assert groups == {}
        assert (400, 404) in unconfirmed and len(unconfirmed) == 1 + 3 + 2 + 1

    def test_another_proc_root_confirms_nothing(self, tmp_path: Path) -> None:
        groups, unconfirmed = shared_mm_groups([TWIN_A, TWIN_B], str(tmp_path))
        assert groups == {} and unconfirmed == [(102, 103)]
