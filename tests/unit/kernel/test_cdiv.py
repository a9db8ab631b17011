"""kernel/cdiv.py: C's signed division truncates toward zero (C99 6.5.5), Python's //
floors; the kernel's `/` on longs is C's."""

from __future__ import annotations

import itertools
from fractions import Fraction
from math import trunc

import pytest

from oomlens.kernel.cdiv import c_div


@pytest.mark.parametrize(
    ("numerator", "denominator", "quotient"),
    [(7, 2, 3), (-7, 2, -3), (7, -2, -3), (-7, -2, 3), (0, 5, 0), (0, -5, 0),
     (-385_000, 10_007, -38), (-1, 1000, 0), (6, 3, 2), (-6, 3, -2)],
)
def test_truncates_toward_zero(numerator: int, denominator: int, quotient: int) -> None:
    assert c_div(numerator, denominator) == quotient


def test_differs_from_floor_only_for_inexact_negatives() -> None:
    assert c_div(-7, 2) == -3 != -7 // 2


def test_matches_exact_truncation() -> None:
    values = [-10**12 - 7, -1001, -17, -3, -1, 0, 1, 2, 17, 999, 10**12 + 3]
    for n, d in itertools.product(values, values):
        if d:
            assert c_div(n, d) == trunc(Fraction(n, d)), (n, d)
            # C99: (a / b) * b + a % b == a, with the remainder taking a's sign.
            remainder = n - c_div(n, d) * d
            assert abs(remainder) < abs(d)
            assert remainder == 0 or (remainder > 0) == (n > 0)


def test_division_by_zero_raises() -> None:
    with pytest.raises(ZeroDivisionError):
        c_div(1, 0)
