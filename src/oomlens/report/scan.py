"""Find the lines of a large log that can belong to an OOM report, at the speed of
`bytes.find`, so that only those are decoded, normalised and parsed.

An OOM report starts with an "invoked oom-killer" line and ends with its kill line;
every line in between (Mem-Info, task table, memcg stats) is passed on. Outside
reports only lines that carry an OOM word are: a rate-limited kill prints only
"Killed process", the oom_reaper reports later, a cut log keeps only a tail.
Everything else is counted (for line numbers) and skipped without a Python-level
loop over its lines.
"""

from __future__ import annotations

from collections.abc import Generator, Iterable, Iterator

# Every line the parser acts on outside a report contains one of these.
ANCHORS = (
    b"oom-kill", b"ill process", b"illed process", b"oom_reaper", b"of memory",
    b"deadlocked on memory", b"oom.group",
)  # fmt: skip
_HEADER = b"invoked oom-killer"
# A report ends at its kill line (or the "no killable processes" / panic line).
_REPORT_END = (b"ill process", b"illed process", b"of memory and no killable", b"Kernel panic")
# A report whose end is lost stops being passed on after this much text: the
# largest real reports (10 000 tasks) are about 1 MB.
MAX_REPORT_BYTES = 8 << 20


class LineScanner:
    """Feed byte chunks of one log; get back `(lineno, line)` for the lines that
    matter (1-based numbers of the whole log, line without its newline)."""

    def __init__(self) -> None:
        self._carry = b""
        self._lineno = 0  # lines fully consumed so far
        self._in_report = False
        self._report_bytes = 0

    def feed(self, chunk: bytes) -> Iterator[tuple[int, bytes]]:
        buf = self._carry + chunk if self._carry else chunk
        end = buf.rfind(b"\n") + 1
        self._carry = buf[end:]
        if end:
            yield from self._scan(buf, end)

    def finish(self) -> Iterator[tuple[int, bytes]]:
        if self._carry:
            buf, self._carry = self._carry + b"\n", b""
            yield from self._scan(buf, len(buf))

    def _scan(self, buf: bytes, end: int) -> Iterator[tuple[int, bytes]]:
        pos = 0
        next_at = dict.fromkeys(ANCHORS, -2)
        while pos < end:
            if self._in_report:
                pos = yield from self._report(buf, pos, end)
                continue
            hit = end
            for anchor, cached in next_at.items():
                at = cached
                if at < pos and at != -1:
                    at = next_at[anchor] = buf.find(anchor, pos, end)
                if 0 <= at < hit:
                    hit = at
            if hit == end:
                self._lineno += buf.count(b"\n", pos, end)
                return
            start = buf.rfind(b"\n", pos, hit) + 1 or pos
            stop = buf.index(b"\n", hit)
            self._lineno += buf.count(b"\n", pos, start) + 1
            line = buf[start:stop]
            yield self._lineno, line
            if _HEADER in line:
                self._in_report = True
                self._report_bytes = 0
            pos = stop + 1

    def _report(self, buf: bytes, pos: int, end: int) -> Generator[tuple[int, bytes], None, int]:
        """Pass on every line up to the report's end; returns where scanning goes on."""
        first = -1
        for marker in _REPORT_END:
            at = buf.find(marker, pos, end if first == -1 else first)
            if at != -1:
                first = at
        ends = first != -1
        stop = buf.index(b"\n", first) + 1 if ends else end
        budget = MAX_REPORT_BYTES - self._report_bytes
        if stop - pos > budget:
            cut = buf.rfind(b"\n", pos, pos + budget) + 1
            stop = cut if cut > pos else buf.index(b"\n", pos) + 1
            ends = True
        self._in_report = not ends
        self._report_bytes += stop - pos
        for line in buf[pos : stop - 1].split(b"\n"):
            self._lineno += 1
            yield self._lineno, line
        return stop


def scan(chunks: Iterable[bytes]) -> Iterator[tuple[int, bytes]]:
    scanner = LineScanner()
    for chunk in chunks:
        yield from scanner.feed(chunk)
    yield from scanner.finish()
