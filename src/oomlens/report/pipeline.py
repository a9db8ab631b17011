"""Bytes of one log in, OOM events out: scan -> decode -> normalise -> parse.

Pure over an iterable of byte chunks (the I/O that produces them is
`system/logs.py`), so the same path serves files, stdin, /dev/kmsg and the
benchmarks.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from oomlens.report.lines import normalise_numbered
from oomlens.report.model import OomEvent
from oomlens.report.parser import parse_lines
from oomlens.report.scan import scan


def events_in(
    chunks: Iterable[bytes],
    source: str = "",
    *,
    year: int | None = None,
    until_month: int | None = None,
    boot_time: float | None = None,
) -> Iterator[OomEvent]:
    """Every OOM event in the log that `chunks` make up, in the order they start
    (`year`, `until_month`, `boot_time`: see `normalise_numbered`). Bytes that
    are not UTF-8 become U+FFFD; nothing in the input can raise."""
    return events_of_lines(
        scan(chunks), source, year=year, until_month=until_month, boot_time=boot_time
    )


def events_of_lines(
    numbered: Iterable[tuple[int, bytes]],
    source: str = "",
    *,
    year: int | None = None,
    until_month: int | None = None,
    boot_time: float | None = None,
) -> Iterator[OomEvent]:
    """`events_in` over lines the scanner already picked: `(lineno, line)`."""
    decoded = ((n, raw.decode("utf-8", "replace")) for n, raw in numbered)
    lines = normalise_numbered(
        decoded, source, year=year, until_month=until_month, boot_time=boot_time
    )
    return parse_lines(lines)

