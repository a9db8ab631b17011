"""Human units: one decimal below 10 of a unit, none above; '-' for unknown."""

from __future__ import annotations

import pytest

from oomlens.units import format_bytes, format_share


@pytest.mark.parametrize(
    ("size", "text"),
    [(None, "-"), (0, "0 B"), (1023, "1023 B"), (1024, "1.0 KiB"), (4_404_019, "4.2 MiB"),
     (15 << 20, "15 MiB"), (1_288_490_189, "1.2 GiB"), (24 << 30, "24 GiB"),
     (-(2 << 20), "-2.0 MiB")],
)
def test_format_bytes(size: int | None, text: str) -> None:
    assert format_bytes(size) == text


def test_format_share() -> None:
    assert (format_share(None), format_share(0.0006), format_share(0.5)) == ("-", "0.1%", "50.0%")
