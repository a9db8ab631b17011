"""kernel/badness.py: each era's oom_badness() and /proc/<pid>/oom_score on numbers
computed by hand from the kernel source (mm/oom_kill.c: oom_badness(); fs/proc/base.c:
proc_oom_score()), plus kernel release parsing and the era table's boundaries."""

from __future__ import annotations

import itertools
from collections.abc import Callable

import pytest

from oomlens.kernel.badness import (
    CURRENT_ERA,
    ERAS,
    PRE_2_6_36,
    BadnessTerms,
    Era,
    badness_v2_6_36,
    badness_v2_6_39,
    badness_v3_5,
    badness_v3_14,
    badness_v4_17,
    badness_v5_9,
    era_for,
    oom_badness,
    oom_score_0_to_1000,
    oom_score_scaled_1000,
    oom_score_v5_9,
    parse_kernel_version,
    proc_oom_score,
)
from oomlens.kernel.task import Task

BadnessFn = Callable[[Task, int], BadnessTerms]


def task(
    *,
    anon: int = 0,
    file: int = 0,
    shmem: int = 0,
    swap: int = 0,
    pgtables_bytes: int = 0,
    adj: int = 0,
    root: bool = False,
    pid: int = 100,
    **flags: bool,
) -> Task:
    return Task(
        pid=pid, comm="t", oom_score_adj=adj, rss_anon_pages=anon, rss_file_pages=file,
        rss_shmem_pages=shmem, swapents=swap, pgtables_bytes=pgtables_bytes,
        cap_sys_admin=root, **flags,
    )


def era(name: str) -> Era:
    return next(e for e in ERAS if e.name == name)


# --- 5.9 and later ----------------------------------------------------------------------


class TestBadnessSince59:
    def test_sums_rss_swap_and_page_tables(self) -> None:
        t = task(anon=1000, file=200, shmem=50, swap=30, pgtables_bytes=8192)
        terms = badness_v5_9(t, 1_000_000)
        assert terms.rss_pages == 1250
        assert terms.swapents == 30
        assert terms.pgtables_pages == 2
        assert terms.root_bonus == 0
        assert terms.adj_pages == 0
        assert terms.points == 1282

    def test_page_tables_are_truncated_to_whole_pages(self) -> None:
        # mm_pgtables_bytes(mm) / PAGE_SIZE: 12287 bytes are 2 pages, not 3.
        assert badness_v5_9(task(pgtables_bytes=12287), 1_000_000).points == 2

    def test_adj_is_scaled_by_totalpages_divided_first(self) -> None:
        # adj *= totalpages / 1000 -> 100 * (1_000_999 / 1000) = 100 * 1000, not 100_099.
        t = task(anon=1282, adj=100)
        assert badness_v5_9(t, 1_000_999).adj_pages == 100_000
        assert badness_v5_9(t, 1_000_999).points == 101_282

    def test_negative_is_not_clamped(self) -> None:
        terms = badness_v5_9(task(anon=10, adj=-500), 100_000)
        assert terms.adj_pages == -50_000
        assert terms.points == -49_990

    def test_root_gets_no_bonus(self) -> None:
        assert badness_v5_9(task(anon=5000, root=True), 100_000).points == 5000

    def test_oom_score_adj_300_is_77_mb_in_256_mib_but_7_gib_in_24_gib(self) -> None:
        # DESIGN.md section 3: the same adj is a different amount of memory per domain.
        t = task(adj=300)
        assert badness_v5_9(t, 65_536).adj_pages == 300 * 65  # 19_500 pages ~ 76 MiB
        assert badness_v5_9(t, 6_291_456).adj_pages == 300 * 6291  # ~ 7.2 GiB


class TestOomScoreSince59:
    def test_positive(self) -> None:
        # (1000 + 1282 * 1000 / 1_000_000) * 2 / 3 = 1001 * 2 / 3 = 667
        assert oom_score_v5_9(1282, 1_000_000) == 667
        # (1000 + 101_282_000 / 1_000_000) * 2 / 3 = 1101 * 2 / 3 = 734
        assert oom_score_v5_9(101_282, 1_000_000) == 734

    def test_neutral_is_666(self) -> None:
        assert oom_score_v5_9(0, 6_171_025) == 666

    @pytest.mark.parametrize(
        ("points", "totalpages", "c_result", "floor_result"),
        [
            # -385 * 1000 / 10007 = -38.47: C gives -38 -> 962 * 2 / 3 = 641;
            # Python's // gives -39 -> 961 * 2 // 3 = 640.
            (-385, 10_007, 641, 640),
            # -49_990_000 / 100_000 = -499.9: C -499 -> 334; floor -500 -> 333.
            (-49_990, 100_000, 334, 333),
        ],
    )
    def test_negative_badness_uses_c_truncation(
        self, points: int, totalpages: int, c_result: int, floor_result: int
    ) -> None:
        # The case must discriminate: floor division really gives another answer.
        assert (1000 + points * 1000 // totalpages) * 2 // 3 == floor_result
        assert oom_score_v5_9(points, totalpages) == c_result

    def test_proc_oom_score_negative_adj_end_to_end(self) -> None:
        # rss 15 pages, adj -40, totalpages 10007 (unit 10): badness = 15 - 400 = -385.
        t = task(anon=15, adj=-40)
        assert badness_v5_9(t, 10_007).points == -385
        assert proc_oom_score(t, 10_007) == 641

    def test_maximum_is_2000(self) -> None:
        # Whole memory and adj 1000: badness = T + 1000 * (T / 1000) = 2T -> 3000 * 2 / 3.
        t = task(anon=1_000_000, adj=1000)
        assert proc_oom_score(t, 1_000_000) == 2000

    def test_minimum_eligible_adj_with_no_memory(self) -> None:
        # badness = -999 * 1000; -999_000 * 1000 / 1_000_000 = -999 -> 1 * 2 / 3 = 0.
        assert proc_oom_score(task(adj=-999), 1_000_000) == 0


# --- 4.17 to 5.8 -----------------------------------------------------------------------


class TestBadness417To58:
    def test_pages_plus_scaled_adj(self) -> None:
        assert badness_v4_17(task(anon=5000, adj=10), 100_000).points == 6000

    def test_clamped_to_1(self) -> None:
        # points > 0 ? points : 1 (an eligible task never scores 0).
        terms = badness_v4_17(task(anon=10, adj=-500), 100_000)
        assert terms.points == 1

    def test_no_root_bonus(self) -> None:
        t = task(anon=5000, adj=10, root=True)
        assert badness_v4_17(t, 100_000).points == 6000
        assert badness_v4_17(t, 100_000).root_bonus == 0

    def test_oom_score_is_points_per_mille(self) -> None:
        # points * 1000 / totalpages: 6000 * 1000 / 100_000 = 60; 1 -> 0.
        assert oom_score_scaled_1000(6000, 100_000) == 60
        assert oom_score_scaled_1000(1, 100_000) == 0
        assert proc_oom_score(task(anon=5000, adj=10), 100_000, era("4.17")) == 60


# --- 3.14 to 4.16 ----------------------------------------------------------------------


class TestBadness314To416:
    def test_root_bonus_is_3_percent_of_own_points(self) -> None:
        # points -= (points * 3) / 100: 1234 - 37 = 1197.
        terms = badness_v3_14(task(anon=1000, file=234, root=True), 100_000)
        assert terms.root_bonus == -37
        assert terms.points == 1197

    def test_root_bonus_counts_swap_and_page_tables(self) -> None:
        # base = rss 900 + swap 300 + ptes 34 = 1234, the same 3 %.
        t = task(anon=900, swap=300, pgtables_bytes=34 * 4096, root=True)
        assert badness_v3_14(t, 100_000).points == 1197

    def test_bonus_before_adj(self) -> None:
        # 1197 + 5 * (100_000 / 1000) = 1697: adj is not part of the 3 %.
        assert badness_v3_14(task(anon=1234, adj=5, root=True), 100_000).points == 1697

    def test_non_root_has_no_bonus(self) -> None:
        assert badness_v3_14(task(anon=1234), 100_000).points == 1234

    def test_clamped_to_1(self) -> None:
        assert badness_v3_14(task(anon=100, adj=-10), 100_000).points == 1


# --- 3.10 to 3.13 (pages, root bonus as adj -= 30) ------------------------------------


class TestBadness310To313:
    def test_root_bonus_is_30_adj_units(self) -> None:
        # adj -= 30 before scaling: (0 - 30) * 100 = -3000 -> 5000 - 3000 = 2000.
        terms = badness_v3_5(task(anon=5000, root=True), 100_000)
        assert terms.points == 2000
        assert terms.root_bonus == -3000
        assert terms.adj_pages == 0

    def test_root_bonus_with_adj(self) -> None:
        # (40 - 30) * 100 = 1000 -> 6000.
        terms = badness_v3_5(task(anon=5000, adj=40, root=True), 100_000)
        assert terms.points == 6000
        assert terms.adj_pages == 4000

    def test_non_root(self) -> None:
        assert badness_v3_5(task(anon=5000), 100_000).points == 5000

    def test_clamped_to_1(self) -> None:
        assert badness_v3_5(task(anon=1000, root=True), 100_000).points == 1

    def test_root_bonus_vanishes_below_1000_pages(self) -> None:
        assert badness_v3_5(task(anon=500, root=True), 999).points == 500

    def test_oom_score(self) -> None:
        assert proc_oom_score(task(anon=5000, root=True), 100_000, era("3.5")) == 20


# --- 2.6.36 to 3.x: a share of totalpages in 0..1000 ---------------------------------


class TestBadnessProportional:
    def test_v2_6_36_ignores_page_tables(self) -> None:
        # (rss 2500 + swap 495) * 1000 / 10_000 = 299 (page tables not counted yet).
        t = task(anon=2500, swap=495, pgtables_bytes=5 * 4096)
        assert badness_v2_6_36(t, 10_000).points == 299
        assert badness_v2_6_36(t, 10_000).pgtables_pages == 0

    def test_v2_6_39_counts_page_tables(self) -> None:
        # (2500 + 5 + 495) * 1000 / 10_000 = 300 (f755a04 "oom: use pte pages in OOM score").
        t = task(anon=2500, swap=495, pgtables_bytes=5 * 4096)
        assert badness_v2_6_39(t, 10_000).points == 300

    def test_root_minus_30_and_adj_in_score_units(self) -> None:
        t = task(anon=2500, swap=495, pgtables_bytes=5 * 4096, root=True, adj=100)
        assert badness_v2_6_36(t, 10_000).points == 299 - 30 + 100
        assert badness_v2_6_39(t, 10_000).points == 300 - 30 + 100

    @pytest.mark.parametrize("badness", [badness_v2_6_36, badness_v2_6_39])
    def test_clamped_to_1_and_1000(self, badness: BadnessFn) -> None:
        assert badness(task(anon=2500, adj=1000), 10_000).points == 1000
        assert badness(task(anon=2500, adj=-500), 10_000).points == 1
        assert badness(task(anon=10_000), 10_000).points == 1000
        assert badness(task(anon=1), 10_000).points == 1  # 0 per mille is still 1

    def test_zero_totalpages_does_not_divide_by_zero(self) -> None:
        # "The memory controller may have a limit of 0 bytes": totalpages = 1.
        assert badness_v2_6_39(task(anon=5), 0).points == 1000

    def test_oom_score_is_the_badness(self) -> None:
        assert oom_score_0_to_1000(370, 10_000) == 370
        t = task(anon=2500, swap=495, pgtables_bytes=5 * 4096, adj=100)
        assert proc_oom_score(t, 10_000, era("2.6.39")) == 400


# --- rules common to all eras ----------------------------------------------------------

PAGE_ERAS = [e for e in ERAS if e.badness not in (badness_v2_6_36, badness_v2_6_39)]


@pytest.mark.parametrize("rules", PAGE_ERAS, ids=lambda e: e.name)
def test_adj_irrelevant_below_1000_pages(rules: Era) -> None:
    # totalpages / 1000 == 0: adj scales to nothing, so +1000 and -999 weigh the same.
    low = oom_badness(task(anon=300, adj=-999), 999, rules)
    high = oom_badness(task(anon=300, adj=1000), 999, rules)
    assert low is not None and high is not None
    assert low.points == high.points == 300


@pytest.mark.parametrize("rules", ERAS, ids=lambda e: e.name)
@pytest.mark.parametrize(
    "ineligible",
    [
        task(anon=5000, is_kthread=True, has_mm=False),
        task(anon=5000, is_global_init=True, pid=1),
        task(has_mm=False),
        task(anon=5000, adj=-1000),
    ],
    ids=["kthread", "global-init", "no-mm", "adj-min"],
)
def test_ineligible_has_no_badness_and_oom_score_0(rules: Era, ineligible: Task) -> None:
    assert oom_badness(ineligible, 100_000, rules) is None
    assert proc_oom_score(ineligible, 100_000, rules) == 0


def test_proc_oom_score_uses_the_given_global_totalpages() -> None:
    # A memcg member's /proc oom_score is still computed against global totalpages.
    t = task(anon=40_000)
    assert proc_oom_score(t, 6_291_456) == (1000 + 40_000 * 1000 // 6_291_456) * 2 // 3 == 670


def test_current_era_is_5_9() -> None:
    assert CURRENT_ERA.badness is badness_v5_9
    assert CURRENT_ERA.oom_score is oom_score_v5_9
    assert CURRENT_ERA.last is None


def test_pre_2_6_36_is_described_not_predicted() -> None:
    assert "nice" in PRE_2_6_36
    assert era_for((2, 6, 32)) is None


# --- kernel releases and the era table -------------------------------------------------


@pytest.mark.parametrize(
    ("release", "version"),
    [
        ("6.1.0-18-amd64", (6, 1, 0)),
        ("2.6.32-754.el6.x86_64", (2, 6, 32)),
        ("5.15.158-2-pve", (5, 15, 158)),
        ("3.10.0-514.6.1.el7.x86_64", (3, 10, 0)),
        ("6.18.44-fc-v509", (6, 18, 44)),
        ("6.9-rc1", (6, 9, 0)),
        ("4.9", (4, 9, 0)),
        ("6.8.0+", (6, 8, 0)),
    ],
)
def test_parse_kernel_version(release: str, version: tuple[int, int, int]) -> None:
    assert parse_kernel_version(release) == version


@pytest.mark.parametrize("release", ["", "linux", "6", "-6.1"])
def test_parse_kernel_version_rejects_garbage(release: str) -> None:
    with pytest.raises(ValueError, match="not a kernel release"):
        parse_kernel_version(release)


@pytest.mark.parametrize(
    ("version", "badness"),
    [
        ((2, 6, 36), badness_v2_6_36),
        ((2, 6, 38), badness_v2_6_36),
        ((2, 6, 39), badness_v2_6_39),
        ((3, 4, 113), badness_v2_6_39),
        ((3, 13, 11), badness_v3_5),
        ((3, 14, 0), badness_v3_14),
        ((4, 16, 18), badness_v3_14),
        ((4, 17, 0), badness_v4_17),
        ((5, 8, 18), badness_v4_17),
        ((5, 9, 0), badness_v5_9),
        ((6, 18, 44), badness_v5_9),
        ((3, 10, 0), badness_v3_5),
    ],
)
def test_era_for_boundaries(version: tuple[int, int, int], badness: BadnessFn) -> None:
    rules = era_for(version)
    assert rules is not None
    assert rules.badness is badness


@pytest.mark.parametrize("version", [(3, 5, 0), (3, 9, 11)])
def test_era_for_3_5_to_3_9_is_pages_based(version: tuple[int, int, int]) -> None:
    rules = era_for(version)
    assert rules is not None
    assert rules.badness is badness_v3_5


def test_kernel_3_9_root_task_badness() -> None:
    # 3.9 oom_badness(): rss 5000 pages, root: adj = -30 -> -30 * 100 = -3000 -> 2000.
    rules = era_for((3, 9, 11))
    assert rules is not None
    terms = oom_badness(task(anon=5000, root=True), 100_000, rules)
    assert terms is not None
    assert terms.points == 2000


def test_era_for_before_rewrite_is_none() -> None:
    assert era_for((2, 6, 35)) is None
    assert era_for((2, 4, 37)) is None


def test_era_table_is_ordered_and_each_era_owns_its_ends() -> None:
    for rules in ERAS:
        assert era_for(rules.first) is rules
        if rules.last is not None:
            assert era_for(rules.last) is rules
    for earlier, later in itertools.pairwise(ERAS):
        assert earlier.last is not None
        assert earlier.last < later.first
