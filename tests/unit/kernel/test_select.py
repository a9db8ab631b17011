"""kernel/select.py: kill order, the kernel's choice, and the adj that moves a task to
either end. mm/oom_kill.c: oom_evaluate_task() keeps the later-scanned task on a tie
(`points < chosen_points` skips, equal replaces)."""

from __future__ import annotations

import itertools
import random
from dataclasses import replace

import pytest

from oomlens.kernel.badness import ERAS, oom_badness
from oomlens.kernel.select import AdjBounds, adj_bounds, rank_tasks, select_bad_process
from oomlens.kernel.task import Ineligible, Task

T = 100_000  # totalpages: one adj unit = 100 pages


def task(pid: int, pages: int = 0, *, adj: int = 0, scan: int | None = None,
         swap: int = 0, pgtables_bytes: int = 0, **flags: bool) -> Task:
    return Task(
        pid=pid, comm=f"p{pid}", oom_score_adj=adj, rss_anon_pages=pages, rss_file_pages=0,
        rss_shmem_pages=0, swapents=swap, pgtables_bytes=pgtables_bytes,
        scan_order=pid if scan is None else scan, **flags,
    )


def order(tasks: list[Task], totalpages: int = T) -> list[int]:
    return [r.task.pid for r in rank_tasks(tasks, totalpages)]


def rank_of(pid: int, tasks: list[Task], totalpages: int = T) -> int | None:
    return next(r.rank for r in rank_tasks(tasks, totalpages) if r.task.pid == pid)


# --- rank_tasks ------------------------------------------------------------------------


def test_highest_points_first() -> None:
    tasks = [task(1, 100), task(2, 5000), task(3, 2000)]
    ranked = rank_tasks(tasks, T)
    assert [r.task.pid for r in ranked] == [2, 3, 1]
    assert [r.rank for r in ranked] == [1, 2, 3]
    assert [r.points for r in ranked] == [5000, 2000, 100]


def test_tie_goes_to_the_later_scanned_task() -> None:
    # Same points: the task with the higher scan_order dies first, whatever its pid.
    tasks = [task(10, 3000, scan=2), task(20, 3000, scan=1), task(30, 3000, scan=3)]
    assert order(tasks) == [30, 10, 20]


def test_adj_moves_a_small_task_ahead() -> None:
    # 1000 + 30 * 100 = 4000 > 3500.
    assert order([task(1, 3500), task(2, 1000, adj=30)]) == [2, 1]


def test_ineligible_tasks_come_last_without_rank_sorted_by_pid() -> None:
    tasks = [
        task(9, 10_000, adj=-1000),
        task(2, 0, is_kthread=True, has_mm=False),
        task(5, 100),
        task(1, 50_000, is_global_init=True),
        task(7, 0, has_mm=False),
    ]
    ranked = rank_tasks(tasks, T)
    assert [r.task.pid for r in ranked] == [5, 1, 2, 7, 9]
    assert [r.rank for r in ranked] == [1, None, None, None, None]
    assert [r.ineligible for r in ranked] == [
        None, Ineligible.GLOBAL_INIT, Ineligible.KTHREAD, Ineligible.NO_MM,
        Ineligible.OOM_SCORE_ADJ_MIN,
    ]
    assert all(r.points is None for r in ranked[1:])


def test_negative_points_still_rank() -> None:
    # 5.9+: badness is signed; -999 still beats -1000 (ineligible) and ranks.
    ranked = rank_tasks([task(1, 10, adj=-500), task(2, 10, adj=-999)], T)
    assert [(r.task.pid, r.points) for r in ranked] == [(1, -49_990), (2, -99_890)]


def test_empty() -> None:
    assert rank_tasks([], T) == []
    assert select_bad_process([], T) is None


# The expected kill order, first victim first. Neighbours differ in one way each:
# adj against memory, swap and page tables counting as memory, ties by scan order.
KILL_ORDER = [
    task(1, 100, adj=1000, scan=50),        # 100 + 100_000
    task(2, 60_000, swap=30_000, scan=1),   # 90_000
    task(3, 50_000, adj=300, scan=2),       # 80_000
    task(4, 80_000, scan=40),               # 80_000, tie with 3 but scanned later than 5
    task(5, 80_000, scan=30),               # 80_000
    task(6, 79_000, pgtables_bytes=4 * 4096 * 250, scan=3),  # 79_000 + 1000 = 80_000
    task(7, 70_000, scan=4),
    task(8, 1, scan=60),
    task(9, 0, scan=70),
    task(10, 50_000, adj=-500, scan=5),     # 0
    task(11, 20_000, adj=-999, scan=6),     # 20_000 - 99_900
]
# 3, 4, 5 and 6 all have 80_000 points: scan order 40 > 30 > 3 > 2 decides.
EXPECTED_PIDS = [1, 2, 4, 5, 6, 3, 7, 8, 9, 10, 11]


def test_kill_order_fixture() -> None:
    assert order(list(reversed(KILL_ORDER))) == EXPECTED_PIDS


@pytest.mark.parametrize(("i", "j"), list(itertools.combinations(range(len(EXPECTED_PIDS)), 2)))
def test_pairwise_order_in_both_input_orders(i: int, j: int) -> None:
    """Every pair of the ordered list, given in both orders, keeps its relative order
    (earlyoom's permute_is_larger): the ranking depends on the tasks, not the input."""
    by_pid = {t.pid: t for t in KILL_ORDER}
    first, second = by_pid[EXPECTED_PIDS[i]], by_pid[EXPECTED_PIDS[j]]
    assert order([first, second]) == [first.pid, second.pid]
    assert order([second, first]) == [first.pid, second.pid]
    assert select_bad_process([second, first], T) is first
    assert select_bad_process([first, second], T) is first


def test_every_permutation_of_a_tie_group() -> None:
    group = [t for t in KILL_ORDER if t.pid in (3, 4, 5, 6)]
    for perm in itertools.permutations(group):
        assert order(list(perm)) == [4, 5, 6, 3]


# --- select_bad_process ----------------------------------------------------------------


def random_tasks(rng: random.Random, n: int) -> list[Task]:
    tasks = []
    for pid in range(2, n + 2):
        tasks.append(task(
            pid, rng.choice([0, 10, 500, 500, 3000, 3000, 20_000]),
            adj=rng.choice([-1000, -999, -300, 0, 0, 0, 10, 500, 1000]),
            scan=rng.randrange(1_000), swap=rng.choice([0, 0, 100]),
            has_mm=rng.random() > 0.1,
        ))
    return tasks


@pytest.mark.parametrize("seed", range(40))
def test_select_bad_process_is_rank_1(seed: int) -> None:
    rng = random.Random(seed)
    tasks = random_tasks(rng, rng.randrange(1, 12))
    totalpages = rng.choice([500, 999, 1000, 100_000, 6_291_456])
    chosen = select_bad_process(tasks, totalpages)
    ranked = rank_tasks(tasks, totalpages)
    if ranked and ranked[0].rank == 1:
        assert chosen is ranked[0].task
    else:
        assert chosen is None


def test_select_bad_process_follows_the_era() -> None:
    # 3.14 gives root 3 %: 10_000 -> 9_700 < 9_800, so the non-root task is chosen.
    rules = next(e for e in ERAS if e.name == "3.14")
    root, user = task(1, 10_000, cap_sys_admin=True, scan=5), task(2, 9_800, scan=1)
    assert select_bad_process([root, user], T, rules) is user
    assert select_bad_process([root, user], T) is root


def test_nothing_killable() -> None:
    tasks = [task(1, 100, is_global_init=True), task(2, 100, adj=-1000)]
    assert select_bad_process(tasks, T) is None


# --- adj_bounds ------------------------------------------------------------------------

RIVALS = [
    task(10, 30_000, scan=10),
    task(11, 12_000, adj=100, scan=11),   # 22_000
    task(12, 5_000, adj=-20, scan=12),    # 3_000
    task(13, 40_000, adj=-1000, scan=13),  # ineligible: never a rival
]


def with_adj(t: Task, adj: int) -> Task:
    return replace(t, oom_score_adj=adj)


def eligible_count(tasks: list[Task]) -> int:
    return sum(oom_badness(t, T) is not None for t in tasks)


@pytest.mark.parametrize(
    "me",
    [
        task(20, 8_000, scan=20),    # scanned after every rival: wins ties
        task(5, 8_000, scan=5),      # scanned before every rival: loses ties
        task(21, 25_000, scan=21),
        task(6, 3_000, scan=6),      # ties with pid 12 at adj 0
        task(22, 3_000, scan=22),
    ],
    ids=["later", "earlier", "big", "tie-earlier", "tie-later"],
)
def test_adj_bounds_really_reorder(me: Task) -> None:
    bounds = adj_bounds(me, RIVALS, T)
    assert bounds.first is not None and bounds.last is not None
    everyone = [*RIVALS, me]

    assert rank_of(me.pid, [*RIVALS, with_adj(me, bounds.first)]) == 1
    if bounds.first > -999:
        assert rank_of(me.pid, [*RIVALS, with_adj(me, bounds.first - 1)]) != 1

    last_rank = eligible_count(everyone)
    assert rank_of(me.pid, [*RIVALS, with_adj(me, bounds.last)]) == last_rank
    if bounds.last < 1000:
        assert rank_of(me.pid, [*RIVALS, with_adj(me, bounds.last + 1)]) != last_rank


def test_adj_bounds_hand_computed() -> None:
    # First: beat 30_000 -> 8_000 + 100 * adj > 30_000 -> adj 221 (220 ties, scanned later
    # wins the tie: 8_000 + 22_000 = 30_000 == 30_000 and scan 20 > 10 -> 220).
    # Last: lose to 3_000 -> 8_000 + 100 * adj < 3_000 -> adj <= -51; at -50 it ties with
    # pid 12 and, scanned later, would die before it.
    assert adj_bounds(task(20, 8_000, scan=20), RIVALS, T) == AdjBounds(first=220, last=-51)
    # Scanned first, a tie loses: first needs 221, and -50 already makes it last.
    assert adj_bounds(task(5, 8_000, scan=5), RIVALS, T) == AdjBounds(first=221, last=-50)


def test_adj_bounds_first_none_when_1000_is_not_enough() -> None:
    giant = task(30, 90_000, adj=1000, scan=99)  # 190_000
    bounds = adj_bounds(task(31, 10_000, scan=1), [giant], T)  # at most 110_000
    assert bounds.first is None
    assert bounds.last == 1000  # it loses to the giant whatever its adj


def test_adj_bounds_last_none_when_minus_999_is_not_enough() -> None:
    tiny = task(40, 0, adj=-999, scan=99)  # -99_900
    bounds = adj_bounds(task(41, 10_000, scan=1), [tiny], T)  # at least -89_900
    assert bounds.last is None
    assert bounds.first == -999


def test_adj_bounds_without_rivals() -> None:
    assert adj_bounds(task(1, 10), [], T) == AdjBounds(first=-999, last=1000)
    # The task itself in `others` is not its own rival.
    me = task(1, 10)
    assert adj_bounds(me, [me], T) == AdjBounds(first=-999, last=1000)


def test_adj_bounds_below_1000_pages_adj_cannot_help() -> None:
    # totalpages 999: adj counts 0 pages, so only memory decides.
    rival = task(2, 500, scan=2)
    assert adj_bounds(task(1, 400, scan=1), [rival], 999) == AdjBounds(first=None, last=1000)
    assert adj_bounds(task(3, 600, scan=3), [rival], 999) == AdjBounds(first=-999, last=None)
