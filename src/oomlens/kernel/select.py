"""Victim order: which task `select_bad_process` picks, then the next, and so on.

mm/oom_kill.c: oom_evaluate_task() keeps a candidate unless `points <
chosen_points`, so among equal scores the task scanned *later* wins. The global scan
(`for_each_process`) walks tasks in creation order; a memcg scan
(`mem_cgroup_scan_tasks`) walks the memcg's subtree. Repeating the choice after each
kill gives the kill order: highest points first, ties to the later-scanned task.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from oomlens.kernel.badness import CURRENT_ERA, BadnessTerms, Era, oom_badness
from oomlens.kernel.task import (
    OOM_SCORE_ADJ_MAX,
    OOM_SCORE_ADJ_MIN,
    Ineligible,
    Task,
    ineligible_reason,
)


@dataclass(frozen=True, slots=True)
class Ranked:
    """One task's place in a domain: `rank` 1 dies first; ineligible tasks have no rank."""

    task: Task
    rank: int | None
    terms: BadnessTerms | None
    ineligible: Ineligible | None

    @property
    def points(self) -> int | None:
        return None if self.terms is None else self.terms.points


def _kill_order_key(item: tuple[Task, BadnessTerms]) -> tuple[int, int]:
    task, terms = item
    return (-terms.points, -task.scan_order)


def rank_tasks(tasks: Iterable[Task], totalpages: int, era: Era = CURRENT_ERA) -> list[Ranked]:
    """Every task in kill order for a domain of `totalpages`; ineligible ones last."""
    eligible: list[tuple[Task, BadnessTerms]] = []
    ineligible: list[Ranked] = []
    for task in tasks:
        terms = oom_badness(task, totalpages, era)
        if terms is None:
            ineligible.append(Ranked(task, None, None, ineligible_reason(task)))
        else:
            eligible.append((task, terms))
    eligible.sort(key=_kill_order_key)
    ranked = [Ranked(task, i, terms, None) for i, (task, terms) in enumerate(eligible, 1)]
    ineligible.sort(key=lambda r: r.task.pid)
    return ranked + ineligible


def select_bad_process(
    tasks: Iterable[Task], totalpages: int, era: Era = CURRENT_ERA
) -> Task | None:
    """The task the kernel would kill now, or None if nothing is killable."""
    best: tuple[Task, int] | None = None
    for task in sorted(tasks, key=lambda t: t.scan_order):
        terms = oom_badness(task, totalpages, era)
        if terms is not None and (best is None or terms.points >= best[1]):
            best = (task, terms.points)
    return None if best is None else best[0]


@dataclass(frozen=True, slots=True)
class AdjBounds:
    """The oom_score_adj values that move a task to either end of the kill order.

    `first`: the lowest adj that makes it the first victim (None: even 1000 is not
    enough). `last`: the highest adj (above -1000) that makes it die after every
    other eligible task (None: only -1000, "never", would).
    """

    first: int | None
    last: int | None


def _scanned_later(task: Task, rival: Task) -> bool:
    return task.scan_order > rival.scan_order


def adj_bounds(task: Task, others: Sequence[Task], totalpages: int) -> AdjBounds:
    """Solve `base + adj * (totalpages / 1000)` against every rival's points (5.9+ rules).

    A task beats a rival with equal points only if it is scanned later (see
    module docstring), so the inequalities are strict or not per rival.
    """
    unit = totalpages // 1000
    base = task.rss_pages + task.swapents + task.pgtables_pages
    rivals = [
        (rival, terms.points)
        for rival in others
        if rival.pid != task.pid and (terms := oom_badness(rival, totalpages)) is not None
    ]
    candidates = range(OOM_SCORE_ADJ_MIN + 1, OOM_SCORE_ADJ_MAX + 1)

    def beats_all(adj: int) -> bool:
        mine = base + adj * unit
        return all(
            mine > pts or (mine == pts and _scanned_later(task, rival)) for rival, pts in rivals
        )

    def loses_all(adj: int) -> bool:
        mine = base + adj * unit
        return all(
            mine < pts or (mine == pts and _scanned_later(rival, task)) for rival, pts in rivals
        )

    first = _first_true(candidates, beats_all)
    last = _first_true(candidates[::-1], loses_all)
    return AdjBounds(first, last)


def _first_true(values: range, predicate: Callable[[int], bool]) -> int | None:
    """Binary search on a range where `predicate` is monotone (False... then True...)."""
    lo, hi = 0, len(values)
    while lo < hi:
        mid = (lo + hi) // 2
        if predicate(values[mid]):
            hi = mid
        else:
            lo = mid + 1
    return values[lo] if lo < len(values) else None
