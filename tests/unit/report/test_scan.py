"""The byte-level pre-filter passes on every line a report needs, with the right
line numbers, whatever the chunking."""

from __future__ import annotations

from pathlib import Path

import pytest

from oomlens.report.scan import MAX_REPORT_BYTES, scan

CORPUS = Path(__file__).resolve().parents[2] / "fixtures" / "oomanalyser"

NOISE = b"Aug 12 03:54:03 host sshd[123]: Accepted publickey for root from 10.0.0.1\n"
REPORT = (
    b"python3 invoked oom-killer: gfp_mask=0xcc0(GFP_KERNEL), order=0, oom_score_adj=0\n"
    b"CPU: 1 UID: 0 PID: 29754 Comm: python3 Not tainted 6.18.44 #1\n"
    b"memory: usage 403996kB, limit 403996kB, failcnt 0\n"
    b"[  29753]     0 29753    74892    74141    72608     1533         0    94208 0 0 python3\n"
    b"Memory cgroup out of memory: Killed process 29753 (python3) total-vm:299568kB\n"
)


def _chunked(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


@pytest.mark.parametrize("size", [1, 3, 17, 64, 4096, 1 << 20])
def test_report_lines_pass_with_their_numbers_whatever_the_chunking(size: int) -> None:
    data = NOISE * 50 + REPORT + NOISE * 20 + b"Killed process 7 (x) total-vm:1kB\n" + NOISE
    lines = data.split(b"\n")
    got = list(scan(_chunked(data, size)))
    # The report (51-55) and the lone kill (76), each with the line before and after.
    assert [n for n, _ in got] == [50, 51, 52, 53, 54, 55, 56, 75, 76, 77]
    assert all(lines[n - 1] == line for n, line in got)


def test_noise_alone_yields_nothing() -> None:
    assert list(scan([NOISE * 1000])) == []


def test_a_last_line_without_newline_is_scanned() -> None:
    assert list(scan([NOISE, b"Killed process 7 (x)"])) == [
        (1, NOISE[:-1]), (2, b"Killed process 7 (x)")]


def test_interleaved_reports_stay_open_until_both_end() -> None:
    a = [b"alpha kernel: a invoked oom-killer: gfp_mask=0x0", b"alpha kernel: Killed process 1 (a)"]
    b = [b"beta kernel: b invoked oom-killer: gfp_mask=0x0", b"beta kernel: [ 5] 0 5 b",
         b"beta kernel: Killed process 2 (b)"]
    data = b"\n".join([NOISE[:-1] * 1, a[0], b[0], a[1], b[1], b[2], NOISE[:-1], NOISE[:-1]])
    got = [n for n, _ in scan([data + b"\n"])]
    assert got == [1, 2, 3, 4, 5, 6, 7]


def test_a_report_without_an_end_stops_after_the_budget() -> None:
    filler = b"x" * 99 + b"\n"
    head = b"a invoked oom-killer: gfp_mask=0x0, order=0\n"
    data = head + filler * ((MAX_REPORT_BYTES // 100) + 1000) + b"Killed process 9 (y)\n"
    got = list(scan(_chunked(data, 1 << 16)))
    assert got[0] == (1, head[:-1])
    assert got[-1][1] == b"Killed process 9 (y)"
    assert len(got) < (MAX_REPORT_BYTES // 100) + 10


@pytest.mark.parametrize("name", sorted(p.name for p in CORPUS.glob("*.txt")))
def test_corpus_reports_pass_whole(name: str) -> None:
    data = (CORPUS / name).read_bytes()
    wanted = [line for line in data.split(b"\n") if line.strip()]
    got = [line for _, line in scan(_chunked(data, 4096)) if line.strip()]
    assert got == wanted
