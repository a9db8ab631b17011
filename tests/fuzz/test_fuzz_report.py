"""No input makes the report path raise: random bytes, mutated and truncated real
reports, huge lines, invalid UTF-8. And a cut report never gains a value it did
not print (nothing invented, nothing borrowed from a neighbour)."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from fuzz_report import check
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from oomlens.report.pipeline import events_in

CORPUS = Path(__file__).resolve().parents[1] / "fixtures" / "oomanalyser"
REPORTS = {p.name: p.read_bytes() for p in sorted(CORPUS.glob("*.txt"))}
LINES = [line for data in REPORTS.values() for line in data.split(b"\n") if line]
PREFIXES = [b"", b"[ 1234.567890] ", b"Aug 12 03:54:03 host kernel: ", b"<4>",
            b"6,77,123456,-;", b"> ", b"2025-08-12T03:54:03+02:00 h kernel: [  1.5] ",
            b"[Di Aug 12 03:54:03 2025] ", b"                          "]  # fmt: skip
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(st.binary(max_size=4096))
def test_random_bytes(data: bytes) -> None:
    check(data)


@FUZZ
@given(st.lists(st.tuples(st.sampled_from(PREFIXES), st.sampled_from(LINES),
                          st.integers(0, 3), st.integers(0, 400)), max_size=60),
       st.integers(1, 512))
def test_shuffled_and_mutated_report_lines(
    parts: list[tuple[bytes, bytes, int, int]], chunk: int
) -> None:
    out = []
    for prefix, line, mutation, cut in parts:
        mutated = {
            0: line,
            1: line[:cut],
            2: line.replace(b" ", b"", 1) + bytes([cut % 256]),
            3: line.replace(b"kB", b"#012", 1),
        }[mutation]
        out.append(prefix + mutated)
    check(b"\r\n".join(out), chunk)


def test_ten_megabyte_lines_and_invalid_utf8() -> None:
    huge = b"Killed process 1 (" + b"\xff\xfe" * (5 << 20) + b") total-vm:1kB\n"
    check(huge + b"x" * (10 << 20) + b"\n" + b"\xc3" * 1000)


@pytest.mark.parametrize("name", sorted(REPORTS))
def test_every_truncation_of_a_real_report_keeps_only_printed_values(name: str) -> None:
    data = REPORTS[name]
    (full,) = list(events_in([data]))
    lines = data.split(b"\n")
    rng = random.Random(name)
    cuts = sorted({rng.randrange(len(lines) + 1) for _ in range(25)} | {0, 1, len(lines)})
    for start in cuts:
        for end in (start + 1, start + 7, start + 40, len(lines)):
            for event in events_in([b"\n".join(lines[start:end])]):
                _only_printed(event, full)


def _only_printed(event: object, full: object) -> None:
    """Every fact of a fragment's event equals the full report's (or is absent)."""
    for part in ("trigger", "victim", "selection"):
        got, want = getattr(event, part), getattr(full, part)
        if got is None:
            continue
        for key in getattr(got, "__slots__", ()):
            value = getattr(got, key)
            if value not in (None, False):
                assert value == getattr(want, key), (part, key)
    assert event.kernel_version in (None, full.kernel_version)
    assert len(event.tasks) <= len(full.tasks)
