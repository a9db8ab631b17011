"""Benchmark 1: the cost per process of one scan of /proc, with and without 2,000
extra sleeping processes: `ps -eo pid,rss,comm`, psutil's process_iter, oomlens'
take_snapshot() and the floor (the raw open/read/close of the five /proc files
oomlens reads, no parsing), plus the floor one file at a time."""

from __future__ import annotations

import argparse
import functools
import gc
import importlib
import os
import shutil
import statistics
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

from benchlib import (
    PS_ARGV,
    Part,
    best,
    fmt_ms,
    fmt_ratio,
    fmt_us,
    log,
    md_table,
    median,
    proc_count,
    verdict,
)
from extra_procs import SandboxInfo, become_subreaper, remove_stale_cgroups, sleepers

NAME = "scan_procs"
PSUTIL_ATTRS = ["pid", "name", "memory_info", "cmdline", "username"]
FLOOR_FILES = ("stat", "status", "oom_score_adj", "oom_score", "cmdline")
TARGET_SCAN_RATIO = 0.5  # oomlens per-process cost at most 0.5x ps's


def floor_scan(leaves: tuple[str, ...] = FLOOR_FILES) -> None:
    """The raw reads oomlens does per process, without parsing: the floor."""
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        base = f"/proc/{name}/"
        for leaf in leaves:
            try:
                fd = os.open(base + leaf, os.O_RDONLY | os.O_CLOEXEC)
            except OSError:
                continue
            try:
                os.read(fd, 16384)
            except OSError:
                pass
            finally:
                os.close(fd)


@dataclass
class Scanner:
    key: str
    label: str
    run: Callable[[], object]
    prepare: Callable[[], object] | None = None
    detail: bool = False  # a per-file floor component, reported in its own table
    without: list[float] = field(default_factory=list)
    with_extra: list[float] = field(default_factory=list)


def build_scanners(psutil: ModuleType | None, take_snapshot: Callable[[], Any] | None,
                   notes: list[str]) -> list[Scanner]:
    scanners: list[Scanner] = []
    if shutil.which("ps"):
        def run_ps() -> None:
            subprocess.run(PS_ARGV, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, check=False)
        scanners.append(Scanner("ps", "`ps -eo pid,rss,comm` (subprocess)", run_ps))
    else:
        notes.append("`ps` not found on PATH: the ps baseline is skipped "
                     "(install procps to get it).")
    if psutil is not None:
        def run_psutil() -> None:
            _ = [p.info for p in psutil.process_iter(PSUTIL_ATTRS)]

        cache_clear = getattr(psutil.process_iter, "cache_clear", None)
        scanners.append(Scanner("psutil", "psutil process_iter, cold (cache cleared)",
                                run_psutil, prepare=cache_clear))
        if cache_clear is not None:
            scanners.append(Scanner("psutil_warm", "psutil process_iter, warm (cache kept)",
                                    run_psutil))
    else:
        notes.append("psutil is not installed: the psutil baseline is skipped "
                     "(`.venv/bin/pip install psutil`, or `make bench` installs [dev]).")
    if take_snapshot is not None:
        scanners.append(Scanner("oomlens", "oomlens take_snapshot() (in-process)",
                                take_snapshot))
    scanners.append(Scanner("floor", "floor: raw open/read/close of 5 files/pid",
                            floor_scan))
    for leaf in FLOOR_FILES:
        scanners.append(Scanner(f"floor_{leaf}", f"`/proc/<pid>/{leaf}` only",
                                functools.partial(floor_scan, (leaf,)), detail=True))
    return scanners


def time_scans(scanners: list[Scanner], reps: int, with_extra: bool) -> list[int]:
    """Round-robin best-of-`reps` timings (one warm-up each); returns N per round."""
    counts: list[int] = []
    for scanner in scanners:  # warm-up: imports, caches, page cache
        if scanner.prepare is not None:
            scanner.prepare()
        scanner.run()
    for _ in range(reps):
        counts.append(proc_count())
        for scanner in scanners:
            if scanner.prepare is not None:
                scanner.prepare()
            gc.collect()
            start = time.perf_counter()
            scanner.run()
            elapsed = time.perf_counter() - start
            (scanner.with_extra if with_extra else scanner.without).append(elapsed)
    return counts


@dataclass
class ScanRun:
    scanners: list[Scanner]
    n_without: int
    n_with: int
    sandbox: SandboxInfo | None
    reps: int


def _imports(notes: list[str]) -> tuple[ModuleType | None, Callable[[], Any] | None]:
    psutil: ModuleType | None = None
    try:
        psutil = importlib.import_module("psutil")
    except ImportError:
        log("psutil is not installed: skipping the psutil baseline")
    take_snapshot: Callable[[], Any] | None = None
    try:
        take_snapshot = importlib.import_module("oomlens.system.snapshot").take_snapshot
    except Exception as err:  # report any import failure, keep measuring
        notes.append(f"oomlens could not be imported ({err!r}); is it installed in the "
                     "venv (`make bench` does `pip install -e .[dev]`)?")
        log(notes[-1])
    if not shutil.which("ps"):
        log("ps is not installed: skipping the ps baselines")
    return psutil, take_snapshot


def run(args: argparse.Namespace) -> Part:
    notes: list[str] = []
    psutil, take_snapshot = _imports(notes)
    for note in remove_stale_cgroups():
        notes.append(note)
        log(note)
    if not become_subreaper():
        notes.append("could not become a child subreaper; cleanup relies on the launcher.")
    scanners = build_scanners(psutil, take_snapshot, notes)
    log(f"1: scans without extras, best of {args.reps}")
    n_without = int(statistics.median(time_scans(scanners, args.reps, with_extra=False)))
    log(f"1: starting {args.extra} sleepers")
    sandbox: SandboxInfo | None = None
    n_with = n_without
    try:
        with sleepers(args.extra) as sandbox:
            log(f"1: {sandbox.started} sleepers up; scans with extras, best of {args.reps}")
            n_with = int(statistics.median(time_scans(scanners, args.reps, with_extra=True)))
            log("1: stopping sleepers")
    except (OSError, RuntimeError) as err:
        notes.append(f"could not run with the extra processes: {err}")
        log(notes[-1])
    if sandbox is not None:
        for problem in sandbox.problems:
            log(f"sandbox: {problem}")
        if not sandbox.problems:
            log("sandbox: all sleepers gone" + (", cgroup removed" if sandbox.cgroup else ""))
    part = report(ScanRun(scanners, n_without, n_with, sandbox, args.reps))
    part.notes = notes + part.notes
    return part


# --------------------------------------------------------------------------- report


def _cost_table(run: ScanRun, marginal: dict[str, float],
                absolute: dict[str, float]) -> list[str]:
    dn = run.n_with - run.n_without
    rows = []
    for s in run.scanners:
        if not s.without:
            continue
        if s.detail:
            if s.with_extra and dn > 0:
                marginal[s.key] = (best(s.with_extra) - best(s.without)) / dn
            continue
        row = [s.label, f"{fmt_ms(best(s.without))} ({fmt_ms(median(s.without))})"]
        if s.with_extra and dn > 0:
            marginal[s.key] = (best(s.with_extra) - best(s.without)) / dn
            absolute[s.key] = best(s.with_extra) / run.n_with
            row += [f"{fmt_ms(best(s.with_extra))} ({fmt_ms(median(s.with_extra))})",
                    fmt_us(marginal[s.key]), fmt_us(absolute[s.key])]
        else:
            row += ["not measured", "n/a", fmt_us(best(s.without) / run.n_without)]
        rows.append(row)
    return md_table(["method", f"N={run.n_without}: best (median)",
                     f"N={run.n_with}: best (median)",
                     "marginal per process", f"absolute per process (N={run.n_with})"],
                    rows, "lrrrr")


def _floor_breakdown(run: ScanRun, marginal: dict[str, float]) -> list[str]:
    details = [s for s in run.scanners if s.detail and s.key in marginal]
    if not details or marginal.get("floor", 0) <= 0:
        return []
    lines = ["", "Where the floor goes: the same raw reads, one file at a time "
                 "(marginal cost per process; each also pays the /proc listing "
                 "and the loop, so the shares add up to more than 100%):", ""]
    drows = [[s.label, fmt_us(marginal[s.key]),
              f"{marginal[s.key] / marginal['floor'] * 100:.0f}% of the floor",
              fmt_ratio(marginal[s.key], marginal["ps"]) + " of ps"
              if marginal.get("ps", 0) > 0 else "n/a"]
             for s in details]
    lines += md_table(["read", "marginal per process", "share", "vs ps"], drows, "lrrr")
    if marginal.get("ps", 0) > 0:
        floor_ratio = marginal["floor"] / marginal["ps"]
        lines += ["", f"The floor alone (the five reads, unparsed) costs "
                      f"{floor_ratio:.2f}x ps' per-process cost, so a scan that "
                      f"reads these five files cannot get below that ratio; "
                      f"parsing and building objects add "
                      f"{fmt_us(marginal['oomlens'] - marginal['floor'])} per "
                      "process on top."]
    return lines


def _sandbox_line(sb: SandboxInfo) -> str:
    line = (f"Extra processes: {sb.started} x `sleep 600` (requested "
            f"{sb.requested}) plus their launcher; {sb.cgroup_note}.")
    if sb.peak_usage is not None:
        line += f" Sandbox peak usage {sb.peak_usage / 2**20:.0f} MiB, failcnt {sb.failcnt}."
    line += (" Cleanup: " + ("all sleepers killed and reaped"
                             + (", cgroup removed" if sb.cgroup else "")
                             if not sb.problems else "; ".join(sb.problems)) + ".")
    return line


def _target(run: ScanRun, marginal: dict[str, float], absolute: dict[str, float]) -> str:
    if "oomlens" not in marginal:
        return "- Scan cost: oomlens could not be measured (see notes)."
    if "ps" not in marginal:
        return "- Scan cost vs ps: not measured (ps missing)."
    ratio = marginal["oomlens"] / marginal["ps"] if marginal["ps"] > 0 else float("inf")
    abs_ratio = absolute["oomlens"] / absolute["ps"]
    return (f"- Scan cost: oomlens ≤ {TARGET_SCAN_RATIO}x ps's per-process cost: "
            f"{verdict(ratio <= TARGET_SCAN_RATIO)} — marginal "
            f"{fmt_us(marginal['oomlens'])} vs ps {fmt_us(marginal['ps'])} per process "
            f"= {ratio:.2f}x (absolute at N={run.n_with}: {abs_ratio:.2f}x; the "
            f"unparsed reads alone: {fmt_ratio(marginal['floor'], marginal['ps'])}).")


def _how(run: ScanRun) -> list[str]:
    dn = run.n_with - run.n_without
    return [
        f"- Timer: `time.perf_counter()`. Scans: best of {run.reps} (median in "
        "parentheses), methods interleaved round-robin after one warm-up run each, "
        "`gc.collect()` before each timed run. N = numeric entries in /proc counted "
        "just before each round (median over rounds).",
        f"- Scans are timed twice: first with the machine's normal processes "
        f"(N={run.n_without}), then with {dn} extra processes (N={run.n_with}). "
        "Marginal per-process cost = (best with extras - best without) ÷ ΔN (the "
        "sleepers plus their launcher); it cancels fixed costs (ps' fork+exec, "
        "oomlens' meminfo/sysctls/cgroup reads). Absolute per-process = best ÷ N "
        "with the extras (includes those fixed costs).",
        "- ps: `subprocess.run(['ps', '-eo', 'pid,rss,comm'])`, stdout to /dev/null. "
        "psutil: `[p.info for p in psutil.process_iter(['pid', 'name', "
        "'memory_info', 'cmdline', 'username'])]` in this process; \"cold\" clears "
        "`process_iter`'s Process cache before each run (as a one-shot tool sees it), "
        "\"warm\" keeps it (as a long-running monitor sees it). oomlens: "
        "`oomlens.system.snapshot.take_snapshot()` in this process (module imported "
        "beforehand): per process stat, status, oom_score_adj, oom_score, cmdline, "
        "parsed, plus meminfo, sysctls, pressure and every memory cgroup. Floor: "
        "`os.open`/`os.read(fd, 16384)`/`os.close` of those five /proc files for "
        "every pid, no parsing; the per-file breakdown times the same loop "
        "reading one of the five files.",
        "- Extra processes: `sleep 600` started by bench/sleepers.py, which "
        "`oomlens.system.sandbox.SandboxMemcg.spawn` starts inside the sandbox memory "
        "cgroup (root only) so they are born and charged inside it; it kills and "
        "reaps them when bench/extra_procs.py closes its stdin (also if the benchmark "
        "dies). bench/extra_procs.py then kills any survivor (matched by pid and start "
        "time) and `SandboxMemcg.close()` empties and removes the cgroup, in a "
        "`finally`.",
    ]


def report(run: ScanRun) -> Part:
    by_key = {s.key: s for s in run.scanners}
    dn = run.n_with - run.n_without
    lines = [f"## 1. Scan cost per process (N={run.n_without}, then N={run.n_with} "
             f"with {dn} extra processes)", ""]
    marginal: dict[str, float] = {}
    absolute: dict[str, float] = {}
    lines += _cost_table(run, marginal, absolute)
    if "oomlens" in marginal:
        lines += ["", "oomlens' per-process cost as a ratio to each baseline "
                      "(below 1 = oomlens is cheaper):", ""]
        rrows = [[by_key[k].label, fmt_ratio(marginal["oomlens"], marginal[k]),
                  fmt_ratio(absolute["oomlens"], absolute[k])]
                 for k in ("ps", "psutil", "psutil_warm", "floor") if k in marginal]
        lines += md_table(["oomlens ÷", "marginal", f"absolute (N={run.n_with})"], rrows,
                          "lrr")
        lines += _floor_breakdown(run, marginal)
    if run.sandbox is not None:
        lines += ["", _sandbox_line(run.sandbox)]
    return Part(section=lines, targets=[_target(run, marginal, absolute)], how=_how(run))
