"""kernel/adj.py: `oom_adj` <-> `oom_score_adj` as fs/proc/base.c does it
(oom_adj_write(): 15 -> 1000, else oom_adj * 1000 / 17; oom_adj_read(): 1000 -> 15,
else oom_score_adj * 17 / 1000), both with C division."""

from __future__ import annotations

from fractions import Fraction
from math import trunc

import pytest

from oomlens.kernel.adj import (
    OOM_ADJ_MAX,
    OOM_ADJ_MIN,
    OOM_DISABLE,
    oom_adj_to_score_adj,
    score_adj_to_oom_adj,
)

ALL_OOM_ADJ = range(-17, 16)


def kernel_write(oom_adj: int) -> int:
    """oom_adj_write() written out independently, with exact fractions."""
    return 1000 if oom_adj == 15 else trunc(Fraction(oom_adj * 1000, 17))


def kernel_read(oom_score_adj: int) -> int:
    """fs/proc/base.c: oom_adj_read(), clamped to OOM_ADJUST_MAX: the kernel lab's 6.1
    guest reads 15 for every oom_score_adj in 942..1000."""
    return min(15, trunc(Fraction(oom_score_adj * 17, 1000)))


@pytest.mark.parametrize("score_adj", [942, 999, 1000])
def test_read_is_clamped_to_15(score_adj: int) -> None:
    assert score_adj_to_oom_adj(score_adj) == 15


def test_constants() -> None:
    # include/uapi/linux/oom.h: OOM_DISABLE -17, OOM_ADJUST_MIN -16, OOM_ADJUST_MAX 15.
    assert (OOM_ADJ_MIN, OOM_ADJ_MAX, OOM_DISABLE) == (-17, 15, -17)
    assert len(ALL_OOM_ADJ) == 33


@pytest.mark.parametrize(
    ("oom_adj", "score_adj"),
    [(-17, -1000), (15, 1000), (8, 470), (-8, -470), (0, 0), (14, 823), (-16, -941),
     (1, 58), (-1, -58)],
)
def test_write(oom_adj: int, score_adj: int) -> None:
    assert oom_adj_to_score_adj(oom_adj) == score_adj


@pytest.mark.parametrize(
    ("score_adj", "oom_adj"),
    [(500, 8), (-500, -8), (1000, 15), (-1000, -17), (0, 0), (470, 7), (-470, -7),
     (999, 15), (-999, -16), (58, 0), (59, 1), (-59, -1)],
)
def test_read(score_adj: int, oom_adj: int) -> None:
    # -500 * 17 / 1000 = -8.5: C truncates to -8 (Python's // would say -9).
    # 999 reads as 16, outside the writable -17..15: oom_adj_read() does not clamp.
    assert score_adj_to_oom_adj(score_adj) == oom_adj


@pytest.mark.parametrize("oom_adj", ALL_OOM_ADJ)
def test_write_matches_kernel_formula(oom_adj: int) -> None:
    assert oom_adj_to_score_adj(oom_adj) == kernel_write(oom_adj)


@pytest.mark.parametrize("oom_adj", ALL_OOM_ADJ)
def test_round_trip(oom_adj: int) -> None:
    """Writing oom_adj then reading it back: exact only for -17, 0 and 15; every other
    value comes back one step closer to zero (8 -> 470 -> 7, -8 -> -470 -> -7)."""
    read_back = score_adj_to_oom_adj(oom_adj_to_score_adj(oom_adj))
    assert read_back == kernel_read(kernel_write(oom_adj))
    if oom_adj in (-17, 0, 15):
        assert read_back == oom_adj
    else:
        assert read_back == oom_adj - (1 if oom_adj > 0 else -1)


def test_round_trip_table() -> None:
    table = {a: score_adj_to_oom_adj(oom_adj_to_score_adj(a)) for a in ALL_OOM_ADJ}
    assert table == {
        -17: -17, -16: -15, -15: -14, -14: -13, -13: -12, -12: -11, -11: -10, -10: -9,
        -9: -8, -8: -7, -7: -6, -6: -5, -5: -4, -4: -3, -3: -2, -2: -1, -1: 0, 0: 0,
        1: 0, 2: 1, 3: 2, 4: 3, 5: 4, 6: 5, 7: 6, 8: 7, 9: 8, 10: 9, 11: 10, 12: 11,
        13: 12, 14: 13, 15: 15,
    }


@pytest.mark.parametrize("score_adj", range(-1000, 1001, 7))
def test_read_matches_kernel_formula(score_adj: int) -> None:
    assert score_adj_to_oom_adj(score_adj) == kernel_read(score_adj)


@pytest.mark.parametrize("oom_adj", [-18, 16, -1000, 1000])
def test_write_out_of_range(oom_adj: int) -> None:
    with pytest.raises(ValueError, match="oom_adj"):
        oom_adj_to_score_adj(oom_adj)


@pytest.mark.parametrize("score_adj", [-1001, 1001])
def test_read_out_of_range(score_adj: int) -> None:
    with pytest.raises(ValueError, match="oom_score_adj"):
        score_adj_to_oom_adj(score_adj)
