"""Benchmark 4 (issue 3): finding the OOM reports in a big syslog.

On a generated 1 GiB syslog with 20 OOM reports (bench/synthlog.py), in the page
cache, in this run:

1. baseline: `grep -c 'Killed process' FILE`, wall time -> MB/s;
2. oomlens' log pipeline as `oomlens report` runs it, `investigate([FILE])` (a file
   this large is scanned by one forked worker per CPU, up to 4), in a child
   process: MB/s, the events found (exactly the 20, or the benchmark fails), the
   child's peak RSS (VmHWM), also on a 256 MiB file made the same way (peak RSS
   must not grow with the file);
3. the whole command, `oomlens report --json FILE`, wall time;
4. `events_in` over each corpus report alone, µs per report.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import timeit
from dataclasses import dataclass, field
from pathlib import Path

import synthlog
from benchlib import (
    ROOT,
    BenchmarkFailed,
    Part,
    best,
    fmt_ratio,
    log,
    machine_summary,
    md_table,
    median,
    now_utc,
    tool_version,
    verdict,
)
from cli_latency import oomlens_script

NAME = "logscan"
TARGET_RATIO = 0.5  # oomlens at least half grep's throughput
TARGET_RSS_MB = 60.0
FLAT_RSS_MB = 5.0  # "flat": the 1 GiB run peaks at most this much above the small one
GREP_PATTERN = "Killed process"
MB = 1e6
GNU_TIME = "/usr/bin/time"

# Runs in a fresh interpreter: imports first, then times the scan alone.
CHILD = r"""
import json, sys, time
from oomlens.postmortem import investigate

def status_kib(key):
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return -1

path = sys.argv[1]
rss_before = status_kib("VmRSS")
start = time.perf_counter()
events = [item.event for item in investigate([path]).events]
seconds = time.perf_counter() - start
json.dump({"seconds": seconds, "rss_before_kib": rss_before, "hwm_kib": status_kib("VmHWM"),
           "victims": [e.victim.pid if e.victim else None for e in events]}, sys.stdout)
"""


def run_child(argv: list[str], capture: bool = False) -> tuple[float, bytes]:
    """Run `argv` to its end: its wall time (Popen to exit) and stdout. Fails unless
    it exits 0."""
    start = time.perf_counter()
    proc = subprocess.run(argv, stdin=subprocess.DEVNULL, stderr=subprocess.PIPE, check=False,
                          stdout=subprocess.PIPE if capture else subprocess.DEVNULL)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        tail = proc.stderr.decode("utf-8", "replace").strip().splitlines()[-1:] or [""]
        raise BenchmarkFailed(f"{' '.join(argv[:2])} ... exited {proc.returncode}: {tail[0]}")
    return seconds, proc.stdout or b""


def peak_rss_kib(argv: list[str]) -> int | None:
    """`argv`'s peak RSS, from GNU time's %M (None without /usr/bin/time).

    Not from our own wait4(): a child exec'd from this process (vfork) keeps the
    larger of this process's RSS and its own as its ru_maxrss; GNU time forks from
    a process of about 1 MB, which keeps that floor small."""
    if not os.access(GNU_TIME, os.X_OK):
        return None
    with tempfile.NamedTemporaryFile("r", encoding="ascii") as out:
        subprocess.run([GNU_TIME, "-f", "%M", "-o", out.name, *argv], stdin=subprocess.DEVNULL,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
        return int(out.read().split()[-1])


@dataclass
class Method:
    label: str
    seconds: list[float] = field(default_factory=list)
    rss_kib: list[int] = field(default_factory=list)
    base_kib: list[int] = field(default_factory=list)  # oomlens: RSS after imports


@dataclass
class FileRuns:
    log: synthlog.Syslog
    label: str
    grep: Method = field(default_factory=lambda: Method(f"`grep -c '{GREP_PATTERN}' FILE`"))
    oomlens: Method = field(default_factory=lambda: Method(
        "oomlens `investigate([FILE])` (child process)"))
    cli: Method = field(default_factory=lambda: Method("`oomlens report --json FILE`"))


def warm_page_cache(path: Path) -> None:
    with open(path, "rb", buffering=0) as fh:
        while fh.read(8 << 20):
            pass


def grep_argv(runs: FileRuns) -> list[str]:
    return ["grep", "-c", GREP_PATTERN, str(runs.log.path)]


def time_grep(runs: FileRuns) -> None:
    seconds, out = run_child(grep_argv(runs), capture=True)
    count = int(out.decode().strip() or "0")
    if count != synthlog.N_REPORTS:
        raise BenchmarkFailed(f"grep counted {count} '{GREP_PATTERN}' lines in "
                              f"{runs.log.path}, expected {synthlog.N_REPORTS}")
    runs.grep.seconds.append(seconds)


def time_oomlens(runs: FileRuns) -> None:
    argv = [sys.executable, "-c", CHILD, str(runs.log.path)]
    result = json.loads(run_child(argv, capture=True)[1])
    victims = result["victims"]
    if len(victims) != synthlog.N_REPORTS or sorted(victims) != sorted(runs.log.victim_pids):
        raise BenchmarkFailed(f"oomlens found {len(victims)} OOM events in {runs.log.path} "
                              f"(victims {victims}), expected the {synthlog.N_REPORTS} "
                              f"written there (victims {runs.log.victim_pids})")
    runs.oomlens.seconds.append(result["seconds"])
    runs.oomlens.rss_kib.append(result["hwm_kib"])
    runs.oomlens.base_kib.append(result["rss_before_kib"])


def check_cli(oomlens: str | None, runs: FileRuns) -> str | None:
    """Why `oomlens report --json` cannot be timed, or None (after a checked run)."""
    if oomlens is None:
        return "no `oomlens` console script"
    help_run = subprocess.run([oomlens, "report", "--help"], capture_output=True, check=False)
    if help_run.returncode != 0:
        return "`oomlens report` is missing (`oomlens report --help` failed)"
    _, out = run_child(cli_argv(oomlens, runs), capture=True)
    events = json.loads(out).get("events", [])
    if len(events) != synthlog.N_REPORTS:
        return f"`oomlens report --json` reported {len(events)} events, not {synthlog.N_REPORTS}"
    return None


def cli_argv(oomlens: str, runs: FileRuns) -> list[str]:
    return [oomlens, "report", "--json", str(runs.log.path)]


def time_cli(oomlens: str, runs: FileRuns) -> None:
    runs.cli.seconds.append(run_child(cli_argv(oomlens, runs))[0])


@dataclass
class PerReport:
    name: str
    lines: int
    size: int
    per_report_s: list[float]


def time_reports() -> list[PerReport]:
    """events_in over each corpus report alone: best and median of 5 repeats of as
    many iterations as take 0.2 s (timeit's autorange)."""
    from oomlens.report.pipeline import events_in

    out = []
    for name, text in synthlog.corpus_texts().items():
        data = text.encode()

        def once(data: bytes = data) -> int:
            return sum(1 for _ in events_in([data], "bench"))

        if once() != 1:
            raise BenchmarkFailed(f"oomlens does not find one OOM event in {name}")
        timer = timeit.Timer(once)
        number, _ = timer.autorange()
        samples = [t / number for t in timer.repeat(5, number)]
        out.append(PerReport(name, text.count("\n"), len(data), samples))
    return out


def run(args: argparse.Namespace) -> Part:
    started = now_utc()
    files = []
    for mib, label in ((args.log_mib, "big"), (args.small_mib, "small")):
        log(f"logscan: syslog of {mib} MiB")
        files.append(FileRuns(synthlog.ensure(mib << 20), label))
    for runs in files:
        warm_page_cache(runs.log.path)
    big = files[0]
    oomlens = oomlens_script()
    log("logscan: checking `oomlens report --json`")
    cli_missing = check_cli(oomlens, big)
    for rep in range(args.log_reps):
        log(f"logscan: round {rep + 1} of {args.log_reps} (grep, events_in"
            + (", oomlens report" if cli_missing is None else "") + ")")
        for runs in files:
            time_grep(runs)
            time_oomlens(runs)
        if cli_missing is None and oomlens is not None:
            time_cli(oomlens, big)
    for runs in files:
        runs.grep.rss_kib += filter(None, [peak_rss_kib(grep_argv(runs))])
    if cli_missing is None and oomlens is not None:
        big.cli.rss_kib += filter(None, [peak_rss_kib(cli_argv(oomlens, big))])
    log("logscan: per-report parse time")
    reports = time_reports()
    return report(files, reports, cli_missing, started, args.log_reps)


# --------------------------------------------------------------------------- report


def _size(n: int) -> str:
    # The files end at a whole line, a few bytes short of their nominal size.
    return f"{n / 2**30:.2f} GiB" if n >= 0.99 * 2**30 else f"{n / 2**20:.0f} MiB"


def _mb(kib: float) -> str:
    return f"{kib * 1024 / MB:.1f} MB"


def _rate(size: int, seconds: float) -> float:
    return size / seconds / MB


def _rows(files: list[FileRuns]) -> list[list[str]]:
    rows = []
    for runs in files:
        size = runs.log.size
        for method in (runs.grep, runs.oomlens, runs.cli):
            if not method.seconds:
                continue
            s = method.seconds
            rss = _mb(max(method.rss_kib)) if method.rss_kib else "n/a (no GNU time)"
            if method.base_kib:
                rss += f" ({_mb(max(method.base_kib))} after imports)"
            rows.append([method.label, _size(size),
                         f"{best(s):.3f} s ({median(s):.3f} s)",
                         f"{_rate(size, best(s)):.0f} MB/s ({_rate(size, median(s)):.0f} MB/s)",
                         rss])
    return rows


def _ratios(files: list[FileRuns]) -> list[list[str]]:
    rows = []
    for runs in files:
        g = runs.grep.seconds
        for method in (runs.oomlens, runs.cli):
            if method.seconds:
                # Throughput ratio = inverse time ratio, same file.
                rows.append([f"{method.label} ÷ grep, {_size(runs.log.size)}",
                             fmt_ratio(best(g), best(method.seconds)),
                             fmt_ratio(median(g), median(method.seconds))])
    return rows


def _per_report_table(reports: list[PerReport]) -> list[str]:
    rows = [[f"`{r.name}`", str(r.lines), f"{r.size:,}",
             f"{best(r.per_report_s) * 1e6:,.0f} µs ({median(r.per_report_s) * 1e6:,.0f} µs)",
             f"{_rate(r.size, best(r.per_report_s)):.1f} MB/s"] for r in reports]
    return md_table(["report", "lines", "bytes", "per report: best (median)", "throughput"],
                    rows, "lrrrr")


def _targets(big: FileRuns, small: FileRuns) -> list[str]:
    grep_s, ours_s = big.grep.seconds, big.oomlens.seconds
    ratio = best(grep_s) / best(ours_s)
    peak_big = max(big.oomlens.rss_kib) * 1024 / MB
    peak_small = max(small.oomlens.rss_kib) * 1024 / MB
    growth = peak_big - peak_small
    rss_ok = peak_big < TARGET_RSS_MB and growth <= FLAT_RSS_MB
    return [
        f"- Log scan: oomlens ≥ {TARGET_RATIO}x grep's throughput: "
        f"{verdict(ratio >= TARGET_RATIO)} — `investigate` "
        f"{_rate(big.log.size, best(ours_s)):.0f} MB/s vs `grep -c` "
        f"{_rate(big.log.size, best(grep_s)):.0f} MB/s on {_size(big.log.size)} = "
        f"{ratio:.2f}x (median {median(grep_s) / median(ours_s):.2f}x).",
        f"- Log scan peak RSS < {TARGET_RSS_MB:.0f} MB and flat in file size: "
        f"{verdict(rss_ok)} — {peak_big:.1f} MB on {_size(big.log.size)}, "
        f"{peak_small:.1f} MB on {_size(small.log.size)} ({growth:+.1f} MB for "
        f"{big.log.size / small.log.size:.0f}x the input; flat = at most "
        f"+{FLAT_RSS_MB:.0f} MB).",
    ]


def _inputs(files: list[FileRuns]) -> str:
    big, small = files[0].log, files[1].log
    generated = [f"{r.log.path.name} in {r.log.generated_s:.0f} s" for r in files
                 if r.log.generated_s is not None]
    return (f"Input: a generated syslog (bench/synthlog.py, generator v"
            f"{synthlog.GENERATOR_VERSION}, seed {synthlog.SEED}), "
            f"{_size(big.size)} ({big.size:,} bytes, {big.lines:,} lines) with "
            f"{len(big.reports)} OOM reports ({synthlog.N_REPORTS // len(synthlog.CORPUS)} "
            f"copies of each of the {len(synthlog.CORPUS)} corpus reports, pids varied), "
            f"and a {_size(small.size)} one made the same way ({small.size:,} bytes, "
            f"{small.lines:,} lines, {len(small.reports)} reports); both read once "
            "before timing, so in the page cache. "
            + (f"Generated this run: {', '.join(generated)}." if generated
               else "Both taken from bench/.cache/."))


def report(files: list[FileRuns], reports: list[PerReport], cli_missing: str | None,
           started: str, reps: int) -> Part:
    big, small = files
    lines = ["## Log scan (oomlens report)", "",
             f"Machine: {machine_summary()}; {tool_version(['grep', '--version'])}, "
             f"LANG={os.environ.get('LANG', '')} LC_ALL={os.environ.get('LC_ALL', '')}. "
             f"Measured {started}.", "", _inputs(files), ""]
    lines += md_table(["method", "file", "time: best (median)", "throughput: best (median)",
                       "peak RSS"], _rows(files), "llrrr")
    lines += ["", "Throughput as a ratio to grep's on the same file (above 1 = faster "
                  "than grep):", ""]
    lines += md_table(["ratio", "best", "median"], _ratios(files), "lrr")
    lines += ["", "Parse time per report (`events_in` over one corpus report alone, in this "
                  "process):", ""]
    lines += _per_report_table(reports)
    python = os.path.relpath(sys.executable, ROOT)
    notes = [] if cli_missing is None else [
        f"`oomlens report --json` not timed: {cli_missing}."]
    how = [
        f"- Log scan: best of {reps} runs (median in parentheses), grep and oomlens "
        f"interleaved round-robin, the {_size(big.log.size)} and {_size(small.log.size)} "
        "files in turn; throughput = file "
        "bytes ÷ time, MB = 10^6 bytes. grep: `grep -c 'Killed process' FILE`, wall time "
        "from Popen to exit, its count must be 20. oomlens: a fresh "
        f"`{python} -c` child imports `oomlens.postmortem`, then times "
        "`investigate([FILE])` alone (no interpreter start): what `oomlens report FILE` "
        "does, with the file scanned by one forked worker per usable CPU (up to 4) since it "
        "is over 32 MiB; it must find exactly the 20 victims written. Peak RSS: the child's "
        "VmHWM at its end (the scan workers are separate processes; interpreter and imports "
        "included; \"after imports\" is its VmRSS just before the scan); for grep and "
        f"`oomlens report`, one more run under `{GNU_TIME} -f %M` (GNU time's maximum "
        "RSS). `oomlens report --json FILE`: wall "
        "time of the console script, stdout to /dev/null, after one run whose JSON must "
        "hold 20 events.",
        "- Per report: `sum(1 for _ in events_in([report_bytes], \"bench\"))` with "
        "`timeit`, as many iterations as take 0.2 s, best and median of 5.",
    ]
    return Part(section=lines, targets=_targets(big, small), notes=notes, how=how)
