"""kernel/watermarks.py: mm/page_alloc.c: calculate_min_free_kbytes()'s integer square
root and its clamps, and the watermark gap of a scale factor."""

from __future__ import annotations

import pytest

from oomlens.kernel.watermarks import default_min_free_kbytes, watermark_gap_share


@pytest.mark.parametrize(("lowmem_kib", "expected"), [
    (16 << 20, 16384),  # 16 GiB: sqrt(16777216 * 16)
    (24_684_100, 19_873),  # rounded down, as int_sqrt()
    (512, 128),  # the floor
    (8 << 30, 262_144),  # 8 TiB: the ceiling
])
def test_default_min_free_kbytes(lowmem_kib: int, expected: int) -> None:
    assert default_min_free_kbytes(lowmem_kib) == expected


def test_watermark_gap() -> None:
    assert watermark_gap_share(10) == 0.001
    assert watermark_gap_share(3000) == 0.3
