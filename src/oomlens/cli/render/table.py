"""Aligned text tables and colour, for humans (JSON is in render/json.py)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

_COLOURS = {"red": "31", "yellow": "33", "green": "32", "bold": "1", "dim": "2", "cyan": "36"}


def paint(text: str, style: str, enabled: bool) -> str:
    if not enabled or not style:
        return text
    return f"\x1b[{_COLOURS[style]}m{text}\x1b[0m"


@dataclass(frozen=True)
class Column:
    title: str
    align: str = ">"  # ">" right, "<" left
    flex: bool = False  # takes what is left of the width, truncated


def render_table(
    columns: Sequence[Column], rows: Sequence[Sequence[str]], width: int | None = None,
    styles: Sequence[str] | None = None, colour: bool = False,
) -> list[str]:
    """Rows aligned under titles; a flex column (the command line) is cut to `width`."""
    widths = [len(c.title) for c in columns]
    for row in rows:
        for i, cell in enumerate(row):
            if not columns[i].flex:
                widths[i] = max(widths[i], len(cell))
    fixed = sum(w + 2 for c, w in zip(columns, widths, strict=True) if not c.flex)
    for i, column in enumerate(columns):
        if column.flex:
            natural = max([len(column.title), *(len(r[i]) for r in rows)])
            widths[i] = natural if width is None else max(10, min(natural, width - fixed))
    out = [_line(columns, widths, [c.title for c in columns]).rstrip()]
    for n, row in enumerate(rows):
        text = _line(columns, widths, row).rstrip()
        out.append(paint(text, styles[n] if styles else "", colour))
    return out


def _line(columns: Sequence[Column], widths: Sequence[int], cells: Sequence[str]) -> str:
    parts = []
    for column, width, cell in zip(columns, widths, cells, strict=True):
        shown = cell if len(cell) <= width else cell[: max(width - 1, 0)] + "…"
        parts.append(f"{shown:{column.align}{width}}")
    return "  ".join(parts)
