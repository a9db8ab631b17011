"""oomlens benchmarks: `make bench` (from the repo root: `.venv/bin/python bench/run.py`).

Measures, on this machine and in this run, against named baselines:

- scan_procs: scan cost per process, with and without 2,000 extra sleeping processes:
  `ps -eo pid,rss,comm`, psutil's process_iter, oomlens' take_snapshot() and the floor
  (the raw open/read/close of the five /proc files oomlens reads, no parsing);
- cli_latency: `oomlens ls` wall time against `ps -eo pid,rss,comm` and `python -c
  pass`; `oomlens --help` against `python -c pass` and `python -c "import argparse"`;
- logscan: OOM reports found in a 1 GiB syslog by oomlens' log pipeline, against
  `grep -c 'Killed process'`; its peak RSS; `oomlens report --json`; parse time per
  report;
- enforce: exec of a matching program to its oom_score_adj set, `oomlens enforce` with
  process events and with polling against the every-minute cron loop; idle CPU; a storm;
- watch: a real OOM kill's log record to its event committed in the store (SQLite,
  PostgreSQL) against `dmesg -w | grep`; idle CPU; RSS;
- guard: threshold crossing to SIGTERM for `oomlens guard` against earlyoom on a
  sudden drop and a 3 GiB/s ramp of a /proc/meminfo the benchmark writes, and on a
  real hog in a memory cgroup; idle CPU; RSS.

With no NAME all run, a table is printed and bench/RESULTS.md is rewritten; with
names (`bench/run.py logscan`) only those run and only their parts of RESULTS.md are
replaced.
"""

from __future__ import annotations

import argparse
import importlib
import signal
import sys
import time
from pathlib import Path
from types import FrameType

import results
from benchlib import BENCH_DIR, BenchmarkFailed, Part, log, machine_info, now_utc

RESULTS = BENCH_DIR / "RESULTS.md"
# Order of the sections in RESULTS.md.
BENCHMARKS = ("scan_procs", "cli_latency", "logscan", "enforce", "watch", "guard")
# Order of the runs: wall times first (no extra processes, nothing big in the page
# cache yet), the log scan (which fills the page cache with 1.25 GiB) last.
RUN_ORDER = ("cli_latency", "scan_procs", "enforce", "watch", "guard", "logscan")


def _on_signal(signum: int, _frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)  # run the `finally` cleanups


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("names", nargs="*", metavar="NAME",
                        help=f"benchmarks to run ({', '.join(BENCHMARKS)}; default: all)")
    parser.add_argument("--extra", type=int, default=2000, help="extra processes (2000)")
    parser.add_argument("--reps", type=int, default=7, help="scan timings per method (7)")
    parser.add_argument("--runs", type=int, default=15, help="runs per command (15)")
    parser.add_argument("--log-mib", type=int, default=1024,
                        help="size of the syslog for logscan, MiB (1024)")
    parser.add_argument("--small-mib", type=int, default=256,
                        help="size of logscan's second syslog, for peak RSS vs size (256)")
    parser.add_argument("--log-reps", type=int, default=3, help="logscan runs per method (3)")
    parser.add_argument("--enforce-starts", type=int, default=1000,
                        help="program starts per enforce mode (1000)")
    parser.add_argument("--idle-seconds", type=float, default=60,
                        help="idle CPU window of enforce, watch and guard, s (60)")
    parser.add_argument("--storm-starts", type=int, default=6000,
                        help="program starts in the enforce storm (6000)")
    parser.add_argument("--watch-kills", type=int, default=100,
                        help="real OOM kills per watch backend (100)")
    parser.add_argument("--guard-reps", type=int, default=20,
                        help="guard and earlyoom reps per scenario (20)")
    parser.add_argument("--output", type=Path, default=RESULTS, help="report file")
    args = parser.parse_args(argv)
    unknown = [n for n in args.names if n not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark {', '.join(unknown)} (choose from "
                     f"{', '.join(BENCHMARKS)})")
    return args


def failed_part(name: str, err: Exception) -> Part:
    return Part(section=[f"## {name}: FAILED", "", f"{err}"],
                targets=[f"- {name}: **NOT met** — the benchmark failed: {err}"])


def run_one(name: str, args: argparse.Namespace, subset: bool) -> tuple[Part, bool]:
    """One benchmark's part of RESULTS.md, and whether its results are right."""
    start = time.perf_counter()
    module = importlib.import_module(name)
    ok = True
    try:
        part: Part = module.run(args)
    except BenchmarkFailed as err:
        log(f"{name} FAILED: {err}")
        part, ok = failed_part(name, err), False
    if subset:
        part.notes.append(f"`{name}` was re-measured alone (`bench/run.py "
                          f"{' '.join(args.names)}`) on {now_utc()} in "
                          f"{time.perf_counter() - start:.1f} s; the Machine table and "
                          "the total run time are from the last full run.")
    return part, ok


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    t0 = time.perf_counter()
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _on_signal)
    if not Path("/proc/self/stat").exists():
        print("bench: needs Linux /proc", file=sys.stderr)
        return 2
    chosen = [n for n in RUN_ORDER if not args.names or n in args.names]
    subset = bool(args.names) and set(chosen) != set(BENCHMARKS)
    machine = machine_info()
    blocks: results.Blocks = {}
    if subset and args.output.exists():
        blocks = results.parse(args.output.read_text(encoding="utf-8"))
        missing = [n for n in BENCHMARKS if n not in chosen
                   and not any((n, p) in blocks for p in results.PARTS)]
        if missing:
            log(f"note: {args.output} has no results for {', '.join(missing)}; "
                "run all benchmarks once (no names) to fill them in")
    status = 0
    for name in chosen:
        part, ok = run_one(name, args, subset)
        status = status if ok else 1
        blocks.update(results.blocks_of(name, part))
    if not subset or (results.RUN, "machine") not in blocks:
        blocks.update(results.machine_block(machine))
    if not subset or (results.RUN, "how") not in blocks:
        blocks.update(results.footer_block(time.perf_counter() - t0))
    text = results.document(blocks, BENCHMARKS)
    print(text)
    args.output.write_text(text, encoding="utf-8")
    log(f"wrote {args.output}")
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
