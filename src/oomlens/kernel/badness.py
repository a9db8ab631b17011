"""The kernel's badness formula and `/proc/<pid>/oom_score`, per kernel era.

Each era is one pair of functions in `ERAS`, keyed by the first and last kernel
version that used it (no subclass chain). Everything is in pages, as the kernel
computes it, and every division is C division where operands can be negative.

History (mm/oom_kill.c: oom_badness(); fs/proc/base.c: proc_oom_score()):
- 2.6.36 rewrote the heuristic: (rss + swap) as a share of totalpages in 0..1000,
  -30 for CAP_SYS_ADMIN, plus oom_score_adj, clamped to 1..1000; page tables
  counted from 2.6.39. `/proc` showed that value.
- 3.5 moved to pages (adj scaled by totalpages/1000; root bonus as adj -= 30;
  commit a7f638f999ff); `/proc` shows points*1000/totalpages.
- 3.14 made the root bonus 3 % of the task's own points.
- 4.17 dropped the root bonus.
- 5.9 made badness signed (no clamp to 1) and `/proc` shows
  (1000 + points*1000/totalpages) * 2/3, so 666 is neutral and 2000 the maximum.
Before 2.6.36 a different heuristic ruled (total_vm, children, CPU and run time,
nice, capabilities, `oom_adj` as a bit shift): it is described in `PRE_2_6_36`,
not predicted.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from oomlens.kernel.cdiv import c_div
from oomlens.kernel.task import Task, ineligible_reason

KernelVersion = tuple[int, int, int]

PRE_2_6_36 = (
    "Before 2.6.36 the OOM killer used a different heuristic: total_vm plus half of "
    "each child's, divided by the square roots of CPU time and run time, doubled for "
    "nice > 0, divided by 4 for CAP_SYS_ADMIN or raw I/O, and shifted by oom_adj. "
    "Nice, run time and user have not counted since 2.6.36."
)


@dataclass(frozen=True, slots=True)
class BadnessTerms:
    """The parts of one badness computation, for explaining it."""

    rss_pages: int
    swapents: int
    pgtables_pages: int
    root_bonus: int
    adj_pages: int
    points: int


@dataclass(frozen=True, slots=True)
class Era:
    """One version of the rules: `badness(task, totalpages)` returns the terms of an
    eligible task, `oom_score(points, totalpages)` what `/proc/<pid>/oom_score` shows
    for it (an ineligible task always shows 0)."""

    name: str
    first: KernelVersion
    last: KernelVersion | None
    badness: Callable[[Task, int], BadnessTerms]
    oom_score: Callable[[int, int], int]
    citation: str
    # Badness points per whole domain: 1000 while they were a share (2.6.36-3.4),
    # None since 3.5, when they are pages (the domain's totalpages).
    points_per_domain: int | None = None

    def share(self, points: int, totalpages: int) -> float:
        """Badness as a fraction of the whole domain."""
        return points / (self.points_per_domain or totalpages or 1)


def _proportional_0_to_1000(task: Task, totalpages: int, *, with_ptes: bool) -> BadnessTerms:
    """2.6.36-3.9: (rss [+ ptes] + swap) * 1000 / totalpages, -30 for root, + adj,
    clamped to 1..1000 (mm/oom_kill.c: oom_badness(), v2.6.36 and v2.6.39)."""
    totalpages = totalpages or 1
    ptes = task.pgtables_pages if with_ptes else 0
    share = (task.rss_pages + ptes + task.swapents) * 1000 // totalpages
    root_bonus = -30 if task.cap_sys_admin else 0
    points = share + root_bonus + task.oom_score_adj
    points = 1 if points <= 0 else min(points, 1000)
    return BadnessTerms(task.rss_pages, task.swapents, ptes, root_bonus, task.oom_score_adj, points)


def badness_v2_6_36(task: Task, totalpages: int) -> BadnessTerms:
    return _proportional_0_to_1000(task, totalpages, with_ptes=False)


def badness_v2_6_39(task: Task, totalpages: int) -> BadnessTerms:
    return _proportional_0_to_1000(task, totalpages, with_ptes=True)


def _pages(task: Task, totalpages: int, root_bonus: int, adj: int, *, clamp: bool) -> BadnessTerms:
    """Badness in pages: rss + swap + page tables + adj * (totalpages / 1000).

    `adj *= totalpages / 1000` divides first (mm/oom_kill.c: oom_badness()), so a
    domain smaller than 1000 pages ignores oom_score_adj entirely.
    """
    base = task.rss_pages + task.swapents + task.pgtables_pages
    adj_pages = adj * (totalpages // 1000)
    points = base + root_bonus + adj_pages
    if clamp:
        points = max(points, 1)
    return BadnessTerms(
        task.rss_pages, task.swapents, task.pgtables_pages, root_bonus, adj_pages, points
    )


def badness_v3_5(task: Task, totalpages: int) -> BadnessTerms:
    """3.5-3.13: the root bonus is `adj -= 30`, in oom_score_adj units."""
    adj = task.oom_score_adj - (30 if task.cap_sys_admin else 0)
    terms = _pages(task, totalpages, 0, adj, clamp=True)
    bonus = -30 * (totalpages // 1000) if task.cap_sys_admin else 0
    return BadnessTerms(
        terms.rss_pages, terms.swapents, terms.pgtables_pages, bonus,
        terms.adj_pages - bonus, terms.points,
    )


def badness_v3_14(task: Task, totalpages: int) -> BadnessTerms:
    """3.14-4.16: `points -= (points * 3) / 100` for CAP_SYS_ADMIN, before adj."""
    base = task.rss_pages + task.swapents + task.pgtables_pages
    bonus = -(base * 3 // 100) if task.cap_sys_admin else 0
    return _pages(task, totalpages, bonus, task.oom_score_adj, clamp=True)


def badness_v4_17(task: Task, totalpages: int) -> BadnessTerms:
    """4.17-5.8: no root bonus; an eligible task scores at least 1."""
    return _pages(task, totalpages, 0, task.oom_score_adj, clamp=True)


def badness_v5_9(task: Task, totalpages: int) -> BadnessTerms:
    """5.9 and later (6.x included): signed, unclamped (mm/oom_kill.c: oom_badness())."""
    return _pages(task, totalpages, 0, task.oom_score_adj, clamp=False)


def oom_score_0_to_1000(points: int, totalpages: int) -> int:
    """2.6.36-3.9: `/proc` shows oom_badness() itself."""
    return points


def oom_score_scaled_1000(points: int, totalpages: int) -> int:
    """3.5-5.8: `oom_badness() * 1000 / totalpages` (fs/proc/base.c: proc_oom_score())."""
    return points * 1000 // (totalpages or 1)


def oom_score_v5_9(points: int, totalpages: int) -> int:
    """5.9+: `(1000 + badness * 1000 / (long)totalpages) * 2 / 3`, C division
    (fs/proc/base.c: proc_oom_score(), v6.6)."""
    return c_div((1000 + c_div(points * 1000, totalpages or 1)) * 2, 3)


ERAS: tuple[Era, ...] = (
    Era("2.6.36", (2, 6, 36), (2, 6, 38), badness_v2_6_36, oom_score_0_to_1000,
        "mm/oom_kill.c: oom_badness(), v2.6.36", 1000),
    Era("2.6.39", (2, 6, 39), (3, 4, 999), badness_v2_6_39, oom_score_0_to_1000,
        "mm/oom_kill.c: oom_badness(), v2.6.39", 1000),
    Era("3.5", (3, 5, 0), (3, 13, 999), badness_v3_5, oom_score_scaled_1000,
        "mm/oom_kill.c: oom_badness(), v3.5"),
    Era("3.14", (3, 14, 0), (4, 16, 999), badness_v3_14, oom_score_scaled_1000,
        "mm/oom_kill.c: oom_badness(), v3.14"),
    Era("4.17", (4, 17, 0), (5, 8, 999), badness_v4_17, oom_score_scaled_1000,
        "mm/oom_kill.c: oom_badness(), v4.17"),
    Era("5.9", (5, 9, 0), None, badness_v5_9, oom_score_v5_9,
        "mm/oom_kill.c: oom_badness(), fs/proc/base.c: proc_oom_score(), v6.6"),
)

CURRENT_ERA = ERAS[-1]


def parse_kernel_version(release: str) -> KernelVersion:
    """`6.1.0-18-amd64` -> (6, 1, 0); `2.6.32-754.el6` -> (2, 6, 32)."""
    numbers: list[int] = []
    for part in release.split("-", 1)[0].split(".")[:3]:
        digits = "".join(ch for ch in part if ch.isdigit())
        if not digits:
            break
        numbers.append(int(digits))
    if len(numbers) < 2:
        raise ValueError(f"not a kernel release: {release!r}")
    while len(numbers) < 3:
        numbers.append(0)
    return numbers[0], numbers[1], numbers[2]


def era_for(version: KernelVersion) -> Era | None:
    """The rules that kernel `version` runs, or None before 2.6.36 (not predicted)."""
    for era in ERAS:
        if version >= era.first and (era.last is None or version <= era.last):
            return era
    return None


def oom_badness(task: Task, totalpages: int, era: Era = CURRENT_ERA) -> BadnessTerms | None:
    """Badness of `task` in a domain of `totalpages`, or None if it can never be picked.

    None replaces the kernel's LONG_MIN sentinel (mm/oom_kill.c: oom_badness()).
    """
    if ineligible_reason(task) is not None:
        return None
    return era.badness(task, totalpages)


def proc_oom_score(task: Task, global_totalpages: int, era: Era = CURRENT_ERA) -> int:
    """What `/proc/<pid>/oom_score` shows: always computed against the *global*
    totalpages (totalram_pages() + total_swap_pages), whatever memcg the task is in
    (fs/proc/base.c: proc_oom_score())."""
    terms = oom_badness(task, global_totalpages, era)
    if terms is None:
        return 0
    return era.oom_score(terms.points, global_totalpages)
