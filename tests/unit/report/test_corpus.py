"""Every report in the corpus, parsed and diagnosed, against hand-checked values.

`tests/fixtures/oomanalyser/` holds real reports (OOMAnalyser's samples, MIT);
`tests/fixtures/reports/` holds reports of every other era and format, written from
the kernel source of that era (its SOURCES.md cites the functions). Each
`NAME.expected.json` lists, per event, the values that must come out (a subset of
the `oomlens.report/1` event). The same expectations must hold whatever log prefix
the report arrives with, with CRLF endings, blank lines, and interleaved with
another host's report.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from oomlens.report.diagnose import diagnose
from oomlens.report.pipeline import events_in
from oomlens.report.schema import event_json

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"
CASES = sorted(
    [(p, FIXTURES / "reports" / "corpus-expected" / f"{p.stem}.expected.json")
     for p in (FIXTURES / "oomanalyser").glob("*.txt")]
    + [(p, p.with_suffix(".expected.json")) for p in (FIXTURES / "reports").glob("*.txt")]
)  # fmt: skip
IDS = [path.name for path, _ in CASES]


def analyse(data: bytes, source: str = "t", year: int | None = 2025) -> list[dict[str, Any]]:
    # All events first: an oom_reaper line may still mark an emitted event's victim.
    events = list(events_in([data], source, year=year, boot_time=1.7e9))
    return [event_json(e, diagnose(e, events[i - 1] if i else None))
            for i, e in enumerate(events)]


def check(got: dict[str, Any], want: dict[str, Any], where: str) -> None:
    for key, value in want.items():
        if key == "task_count":
            assert len(got["tasks"]) == value, where
        elif key == "tasks_first":
            first = got["tasks"][0] if got["tasks"] else None
            if value is None:
                assert first is None, where
            else:
                subset(first, value, f"{where}.tasks[0]")
        elif key == "group_victim_pids":
            assert [v["pid"] for v in got["group_victims"]] == value, where
        elif key == "finding_codes_include":
            codes = [f["code"] for f in got["findings"]]
            assert set(value) <= set(codes), f"{where}: {value} not all in {codes}"
        else:
            subset(got[key], value, f"{where}.{key}")


def subset(got: Any, want: Any, where: str) -> None:
    if isinstance(want, dict) and got is not None:
        for key, value in want.items():
            assert key in got, f"{where}: no {key}"
            subset(got[key], value, f"{where}.{key}")
    else:
        assert got == want, f"{where}: {got!r} != {want!r}"


def expected(path: Path) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = json.loads(path.read_text())["events"]
    return events


@pytest.mark.parametrize(("report", "expect"), CASES, ids=IDS)
def test_plain(report: Path, expect: Path) -> None:
    got, want = analyse(report.read_bytes()), expected(expect)
    assert len(got) == len(want), [e["victim"] for e in got]
    for i, (g, w) in enumerate(zip(got, want, strict=True)):
        check(g, w, f"{report.name}[{i}]")


def _kernel_lines(report: Path) -> list[str]:
    """The report's kernel text, without the dmesg -T prefix one sample carries."""
    lines = report.read_text().splitlines()
    if lines and lines[0].startswith("[Di Aug 12"):
        lines = [line[26:] for line in lines]
    return lines


PREFIXES = {
    "dmesg": lambda n, line: f"[{1000 + n / 1000:12.6f}] {line}",
    "dmesg-T": lambda n, line: f"[Tue Aug 12 03:54:{n % 60:02d} 2025] {line}",
    "dmesg-T-fr": lambda n, line: f"[mar. août 12 03:54:{n % 60:02d} 2025] {line}",
    "syslog": lambda n, line: f"Aug 12 03:54:03 web1 kernel: {line}",
    "syslog-ts": lambda n, line: f"Aug 12 03:54:03 web1 kernel: [ 1234.{n:06d}] {line}",
    "syslog-tag": lambda n, line: f"Apr 01 14:13:32 web1 <kern.warning> kernel: {line}",
    "rfc3339": lambda n, line: f"2025-08-12T03:54:03.{n:06d}+02:00 web1 kernel: {line}",
    "journal-iso": lambda n, line: f"2025-08-12T03:54:03+0200 web1 kernel: {line}",
    "kmsg": lambda n, line: f"4,{n},{n * 100},-;{line}",
    "quoted": lambda n, line: f"> [ {n}.000000] {line}",
}


@pytest.mark.parametrize("style", sorted(PREFIXES))
@pytest.mark.parametrize(("report", "expect"), CASES, ids=IDS)
def test_every_prefix_style(report: Path, expect: Path, style: str) -> None:
    prefix = PREFIXES[style]
    text = "\n".join(prefix(n, line) for n, line in enumerate(_kernel_lines(report)))
    got, want = analyse(text.encode()), expected(expect)
    assert len(got) == len(want)
    for i, (g, w) in enumerate(zip(got, want, strict=True)):
        check(g, w, f"{report.name}[{i}] as {style}")


@pytest.mark.parametrize(("report", "expect"), CASES, ids=IDS)
def test_crlf_blank_lines_and_rsyslog_escapes(report: Path, expect: Path) -> None:
    lines = _kernel_lines(report)
    crlf = "\r\n\r\n".join(lines).encode()
    escaped = ("Aug 12 03:54:03 web1 kernel: " + "#012".join(lines)).encode()
    want = expected(expect)
    for variant in (crlf, escaped):
        got = analyse(variant)
        assert len(got) == len(want)
        for i, (g, w) in enumerate(zip(got, want, strict=True)):
            check(g, w, f"{report.name}[{i}]")


def test_two_hosts_interleaved_line_by_line() -> None:
    a = _kernel_lines(FIXTURES / "oomanalyser" / "rhel7-3.10.0-514.6.1.el7-global-oom-mysqld.txt")
    b = _kernel_lines(FIXTURES / "oomanalyser" / "archlinux-6.1.1-arch1-1-global-oom-doxygen.txt")
    mixed = []
    for n in range(max(len(a), len(b))):
        if n < len(a):
            mixed.append(f"Aug 12 03:54:03 alpha kernel: {a[n]}")
        if n < len(b):
            mixed.append(f"Aug 12 03:54:03 beta kernel: {b[n]}")
    got = analyse("\n".join(mixed).encode())
    by_host = {e["host"]: e for e in got}
    assert sorted(by_host) == ["alpha", "beta"]
    assert by_host["alpha"]["victim"]["comm"] == "mysqld" and len(by_host["alpha"]["tasks"]) == 85
    assert by_host["beta"]["victim"]["comm"] == "doxygen"
    assert len(by_host["beta"]["tasks"]) == 112 and by_host["beta"]["complete"]


def test_reports_between_ordinary_lines_in_order() -> None:
    noise = "Aug 12 03:50:00 web1 sshd[22]: Accepted publickey for deploy from 10.1.1.1\n" * 50
    reports = [p for p, _ in CASES if "fragment" not in p.name][:6]
    text = noise.join(
        "\n".join(f"Aug 12 03:54:03 web1 kernel: {line}" for line in _kernel_lines(p)) + "\n"
        for p in reports
    )
    got = analyse((noise + text + noise).encode())
    wanted = [e for p, x in CASES if p in reports for e in expected(x)]
    assert [e["victim"] and e["victim"]["pid"] for e in got] == [
        w["victim"] and w["victim"]["pid"] for w in wanted]
