"""Scan a large uncompressed log with one process per CPU.

The scan (report/scan.py) is a few `bytes.find`/`bytes.count` passes, which hold
the GIL; forked workers each scan one piece of the file and send back the lines a
report can need, numbered within their piece, and the number of lines in it. The
parent adds up the line counts to number the lines of the whole file. A worker
whose piece ends inside a report reads on until that report ends, so no report is
cut at a boundary; a line sent by two workers is kept once.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Iterator
from itertools import pairwise

from oomlens.report.scan import LineScanner

CHUNK = 1 << 20
# Below this a single process is as fast (fork and pickling cost a few ms).
MIN_PARALLEL_BYTES = 32 << 20


def workers_for(size: int) -> int:
    if size < MIN_PARALLEL_BYTES:
        return 1
    return max(1, min(len(os.sched_getaffinity(0)), 4))


def scan_file(path: str, size: int, workers: int) -> list[tuple[int, bytes]]:
    """The lines a report can need, `(lineno, line)`, in file order."""
    with open(path, "rb", buffering=0) as raw:
        bounds = _bounds(raw.fileno(), size, workers)
    children: list[tuple[int, int]] = []
    try:
        for start, stop in pairwise(bounds):
            read_end, write_end = os.pipe()
            pid = os.fork()
            if pid == 0:  # the worker: scan, send, exit without cleanup handlers
                os.close(read_end)
                status = 0
                try:
                    result = _scan_piece(path, start, stop, size)
                    with os.fdopen(write_end, "wb") as out:
                        pickle.dump(result, out, protocol=pickle.HIGHEST_PROTOCOL)
                except BaseException:  # a worker must never return into the caller
                    status = 1
                os._exit(status)
            os.close(write_end)
            children.append((pid, read_end))
        pieces = [_collect(pid, fd) for pid, fd in children]
        children = []
    finally:
        for pid, fd in children:  # an error above: do not leave workers behind
            os.close(fd)
            os.waitpid(pid, 0)
    merged: dict[int, bytes] = {}
    offset = 0
    for lines, line_count in pieces:
        for n, line in lines:
            merged.setdefault(offset + n, line)
        offset += line_count
    return sorted(merged.items())


def _bounds(fd: int, size: int, workers: int) -> list[int]:
    """Piece boundaries at line starts."""
    bounds = [0]
    for k in range(1, workers):
        guess = size * k // workers
        tail = os.pread(fd, 65536, guess)
        newline = tail.find(b"\n")
        cut = size if newline == -1 else guess + newline + 1
        if bounds[-1] < cut < size:
            bounds.append(cut)
    bounds.append(size)
    return bounds


def _scan_piece(
    path: str, start: int, stop: int, size: int
) -> tuple[list[tuple[int, bytes]], int]:
    """Lines numbered from 1 at `start`; the line before `start` is number 0."""
    scanner = LineScanner()
    with open(path, "rb", buffering=0) as raw:
        fd = raw.fileno()
        if start:
            before = os.pread(fd, 65536, max(0, start - 65536))
            scanner.set_previous(before[: -1].rsplit(b"\n", 1)[-1])
        lines = list(_feed(scanner, fd, start, stop))
        line_count = scanner.lines_seen
        position = stop
        while scanner.in_report and position < size:  # read on to the report's end
            chunk = os.pread(fd, CHUNK, position)
            position += len(chunk)
            lines += scanner.feed(chunk)
        if position >= size:
            lines += scanner.finish()
    return lines, line_count


def _feed(scanner: LineScanner, fd: int, start: int, stop: int) -> Iterator[tuple[int, bytes]]:
    """Read [start, stop) in chunks that end at a newline (the file is re-read
    from there), falling back to carrying a line longer than a chunk."""
    position = start
    while position < stop:
        chunk = os.pread(fd, min(CHUNK, stop - position), position)
        if not chunk:
            break
        used = 0
        if not scanner.carrying:
            lines, used = scanner.feed_complete_lines(chunk)
            yield from lines
        if not used:
            used = len(chunk)
            yield from scanner.feed(chunk)
        position += used


def _collect(pid: int, fd: int) -> tuple[list[tuple[int, bytes]], int]:
    with os.fdopen(fd, "rb") as source:
        data = source.read()
    _, status = os.waitpid(pid, 0)
    if status != 0 or not data:
        raise OSError(f"a log scan worker failed (status {status})")
    result: tuple[list[tuple[int, bytes]], int] = pickle.loads(data)
    return result
