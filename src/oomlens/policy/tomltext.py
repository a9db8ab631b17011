"""Positions in TOML text, for error messages that name a line.

tomllib returns plain values without positions, and its syntax errors carry the
position only inside the message text. A policy error must still say where the
author has to look, so this module finds lines by scanning the text: table
headers, and the line assigning a key within a table. Lines that start inside a
multi-line string are skipped, so a `[[rule]]` quoted in a string is not a header.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

_ERROR_POSITION = re.compile(r" \(at line (\d+), column (\d+)\)$")
_HEADER = re.compile(r"\s*\[")


def syntax_error_line(message: str, text: str) -> tuple[int, str]:
    """The line a tomllib syntax error points at, and its message with the position
    reduced to the column ("Invalid value (column 5)").

    tomllib says "(at end of document)" for errors it meets at the end, such as an
    unterminated string: that is the last line of the text.
    """
    position = _ERROR_POSITION.search(message)
    if position is None:
        return text.rstrip("\r\n").count("\n") + 1, message
    return int(position[1]), f"{message[: position.start()]} (column {position[2]})"


def shown(value: object) -> str:
    """A TOML value as an error message shows it: scalars literally, containers by kind."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list):
        return "an array"
    return "a table" if isinstance(value, dict) else "a date/time"


@dataclass(frozen=True, slots=True)
class TomlLayout:
    """Where headers and keys sit in a TOML text.

    `lines[n - 1]` is line n, or None when line n starts inside a multi-line string.
    """

    lines: tuple[str | None, ...]

    @classmethod
    def of(cls, text: str) -> TomlLayout:
        lines: list[str | None] = []
        open_string: str | None = None
        for line in text.split("\n"):
            lines.append(line.rstrip("\r") if open_string is None else None)
            open_string = _open_string_after(line, open_string)
        return cls(tuple(lines))

    def array_headers(self, name: str) -> tuple[int, ...]:
        """The line of every `[[name]]` header, in order: the Nth is the Nth table."""
        pattern = re.compile(rf"\s*\[\[\s*{_key_alternatives(name)}\s*\]\]\s*(?:#.*)?")
        return tuple(
            number for number, line in enumerate(self.lines, 1)
            if line is not None and pattern.fullmatch(line)
        )

    def table_line(self, name: str) -> int | None:
        """The first header that opens table `name` or a table below it."""
        pattern = re.compile(rf"\s*\[\[?\s*{_key_alternatives(name)}\s*[\].]")
        return self._first(pattern, 1, stop_at_header=False)

    def key_line(self, key: str, table_line: int | None) -> int | None:
        """The line assigning `key` in the table headed on `table_line` (0: the top
        level, before any header); None when not found or `table_line` is no header
        (an inline table, whose keys share its line)."""
        if table_line is None:
            return None
        if table_line and not _HEADER.match(self.lines[table_line - 1] or ""):
            return None
        pattern = re.compile(rf"\s*{_key_alternatives(key)}\s*[=.]")
        return self._first(pattern, table_line + 1, stop_at_header=True)

    def _first(self, pattern: re.Pattern[str], start: int, *, stop_at_header: bool) -> int | None:
        for number in range(start, len(self.lines) + 1):
            line = self.lines[number - 1]
            if line is None:
                continue
            if pattern.match(line):
                return number
            if stop_at_header and _HEADER.match(line):
                return None
        return None


def _key_alternatives(key: str) -> str:
    """A regex for `key` as a bare, basic-quoted or literal-quoted TOML key."""
    escaped = re.escape(key)
    return rf"""(?:{escaped}|"{escaped}"|'{escaped}')"""


def _open_string_after(line: str, open_string: str | None) -> str | None:
    """The multi-line string delimiter still open at the end of `line`, given the
    one open at its start (None: none)."""
    index = 0
    while index < len(line):
        if open_string is not None:
            end = _closing_quote(line, index, open_string)
            if end < 0:
                return open_string
            index, open_string = end + 3, None
        elif line[index] == "#":
            return None
        elif line.startswith(('"""', "'''"), index):
            index, open_string = index + 3, line[index : index + 3]
        elif line[index] in "\"'":
            end = _closing_quote(line, index + 1, line[index])
            if end < 0:
                return None
            index = end + 1
        else:
            index += 1
    return open_string


def _closing_quote(line: str, start: int, quote: str) -> int:
    """Where `quote` closes in `line` from `start` (escapes skipped in basic strings);
    -1 if it does not close on this line."""
    index = start
    while index < len(line):
        if quote[0] == '"' and line[index] == "\\":
            index += 2
        elif line.startswith(quote, index):
            return index
        else:
            index += 1
    return -1
