"""The leak signal shared by `oomlens report` and the history store's statistics."""

from __future__ import annotations

import pytest

from oomlens.report.summary import grows_between_kills


@pytest.mark.parametrize(("sizes", "grows"), [
    ((100, 110), True),  # exactly 10 %: a float factor would miss this one
    ((100, 109), False),
    ((100, 120, 150), True),
    ((100, 150, 140), False),  # every step must grow
    ((100,), False),  # one kill is no trend
    ((), False),
])
def test_growth_needs_every_step_ten_percent_larger(sizes: tuple[int, ...], grows: bool) -> None:
    assert grows_between_kills(sizes) is grows
