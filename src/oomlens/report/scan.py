"""Find the lines of a large log that can belong to an OOM report, at the speed of
`bytes.find`, so that only those are decoded, normalised and parsed.

An OOM report starts with an "invoked oom-killer" line and ends with its kill line
("Killed process", or "no killable processes" / a panic); every line in between
(Mem-Info, task table, memcg stats) is passed on, and the line after the end
(the "memory.oom.group" notice or the panic that follows). Outside reports only
lines with an anchor are passed on, each with the line before and after it: a
rate-limited kill prints only "Kill process"/"Killed process", the oom_reaper
reports later, a cut log keeps only a tail. Everything else is counted (for line
numbers) and skipped without a Python-level loop over its lines.

Reports of different hosts in one file can interleave: a report region stays open
until as many reports have ended in it as have started.
"""

from __future__ import annotations

from collections.abc import Generator, Iterable, Iterator

# Every line that can start a report or stand alone contains one of these:
# "invoked oom-killer" and "oom-kill:constraint" (oom-kill), "Killed process" and
# "oom_reaper: reaped process" (ed process). Two anchors: each costs a pass.
ANCHORS = (b"oom-kill", b"ed process")
_HEADER = b"invoked oom-killer"
_REPORT_END = (b"illed process", b"no killable", b"Kernel panic")
# A report whose end is lost stops being passed on after this much text: the
# largest real reports (10 000 tasks) are about 1 MB.
MAX_REPORT_BYTES = 8 << 20

Numbered = tuple[int, bytes]


class LineScanner:
    """Feed byte chunks of one log; get back `(lineno, line)` for the lines that
    matter (1-based numbers of the whole log, line without its newline)."""

    def __init__(self) -> None:
        self._carry = b""
        self._lineno = 0  # lines fully consumed so far
        self._open_reports = 0
        self._report_bytes = 0
        self._after = 0  # lines still to pass on after a hit or a report's end
        self._previous: Numbered | None = None  # the last line seen, not passed on

    @property
    def lines_seen(self) -> int:
        """Complete lines consumed so far."""
        return self._lineno

    @property
    def in_report(self) -> bool:
        """A report (or the line after one) is still being passed on."""
        return bool(self._open_reports or self._after)

    def set_previous(self, line: bytes) -> None:
        """The line before the first one fed (number 0), for a scan that starts
        in the middle of a log."""
        self._previous = (0, line) if line.strip() else None

    def feed(self, chunk: bytes) -> Iterator[Numbered]:
        buf = self._carry + chunk if self._carry else chunk
        end = buf.rfind(b"\n") + 1
        self._carry = buf[end:]
        if end:
            yield from self._scan(buf, end)

    @property
    def carrying(self) -> bool:
        """Part of a line from the last chunk waits for the rest."""
        return bool(self._carry)

    def feed_complete_lines(self, chunk: bytes) -> tuple[list[Numbered], int]:
        """For a caller that can re-read its input: the lines of `chunk` up to its
        last newline, and how many bytes that is (the caller reads on from there).
        Saves copying each chunk onto the carried-over part of the last."""
        end = chunk.rfind(b"\n") + 1
        return (list(self._scan(chunk, end)), end) if end else ([], 0)

    def finish(self) -> Iterator[Numbered]:
        if self._carry:
            buf, self._carry = self._carry + b"\n", b""
            yield from self._scan(buf, len(buf))

    def _scan(self, buf: bytes, end: int) -> Iterator[Numbered]:
        pos = 0
        next_at = dict.fromkeys(ANCHORS, -2)
        while pos < end:
            if self._open_reports:
                pos = yield from self._report(buf, pos, end)
                continue
            if self._after:
                start = pos
                pos = yield from self._line_at(buf, pos)
                line = buf[start:pos]
                if any(anchor in line for anchor in ANCHORS):
                    self._after = 1  # an anchor line passes the line after it too
                elif line.strip():  # blank lines (CRLF doubled) do not count
                    self._after -= 1
                continue
            hit = end
            for anchor, cached in next_at.items():
                at = cached
                if at < pos and at != -1:
                    at = next_at[anchor] = buf.find(anchor, pos, end)
                if 0 <= at < hit:
                    hit = at
            if hit == end:
                self._skip(buf, pos, end)
                return
            start = buf.rfind(b"\n", pos, hit) + 1 or pos
            if start > pos:
                self._skip(buf, pos, start)
            pos = yield from self._line_at(buf, start, with_previous=True)
            self._after = 1

    def _skip(self, buf: bytes, pos: int, stop: int) -> None:
        """Lines [pos, stop) are not needed: count them, remember the last one."""
        self._lineno += buf.count(b"\n", pos, stop)
        last, lineno = stop - 1, self._lineno
        while last > pos:  # the last line with text in it
            first = buf.rfind(b"\n", pos, last) + 1 or pos
            if buf[first:last].strip():
                self._previous = (lineno, buf[first:last])
                return
            last, lineno = first - 1, lineno - 1
        self._previous = None

    def _line_at(
        self, buf: bytes, start: int, *, with_previous: bool = False
    ) -> Generator[Numbered, None, int]:
        """Pass on the line at `start` (and the one before it); a header opens a report."""
        stop = buf.index(b"\n", start)
        line = buf[start:stop]
        if with_previous and self._previous is not None:
            yield self._previous
        self._previous = None
        self._lineno += 1
        yield self._lineno, line
        if _HEADER in line:
            self._open_reports = 1
            self._report_bytes = 0
        return stop + 1

    def _report(self, buf: bytes, pos: int, end: int) -> Generator[Numbered, None, int]:
        """Pass on the lines of the open report(s) up to where they end (or the
        buffer does); returns where scanning goes on."""
        stop = end
        cursor = pos
        while self._open_reports:
            at, is_header = _next_marker(buf, cursor, end)
            if at == -1:
                break
            self._open_reports += 1 if is_header else -1
            cursor = buf.index(b"\n", at) + 1
            if not self._open_reports:
                stop = cursor
        budget = MAX_REPORT_BYTES - self._report_bytes
        if stop - pos > budget:
            stop = buf.rfind(b"\n", pos, pos + budget) + 1 or buf.index(b"\n", pos) + 1
            self._open_reports = 0
        self._report_bytes += stop - pos
        for line in buf[pos : stop - 1].split(b"\n"):
            self._lineno += 1
            yield self._lineno, line
        if not self._open_reports:
            self._after = 1
        return stop


def _next_marker(buf: bytes, pos: int, end: int) -> tuple[int, bool]:
    """The next report start or end in buf[pos:end]: (offset, is a start), or -1."""
    best, is_header = buf.find(_HEADER, pos, end), True
    for marker in _REPORT_END:
        at = buf.find(marker, pos, best if best != -1 else end)
        if at != -1:
            best, is_header = at, False
    return best, is_header


def scan(chunks: Iterable[bytes]) -> Iterator[Numbered]:
    scanner = LineScanner()
    for chunk in chunks:
        yield from scanner.feed(chunk)
    yield from scanner.finish()
