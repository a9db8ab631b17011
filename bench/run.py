"""oomlens benchmarks: `make bench` (from the repo root: `.venv/bin/python bench/run.py`).

Measures, on this machine and in this run, against named baselines:

1. scan cost per process, with and without 2,000 extra sleeping processes:
   `ps -eo pid,rss,comm`, psutil's process_iter, oomlens' take_snapshot() and the floor
   (the raw open/read/close of the five /proc files oomlens reads, no parsing);
2. `oomlens ls` wall time against `ps -eo pid,rss,comm` and `python -c pass`;
3. `oomlens --help` wall time against `python -c pass` and `python -c "import argparse"`.

Prints a table and rewrites bench/RESULTS.md. Stdlib + psutil only; the extra processes
are `sleep 600` started by bench/sleepers.py, inside a 512 MiB sandbox memory cgroup
when running as root with cgroup v1 memcg, and always killed, reaped and removed after.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import datetime as dt
import functools
import gc
import importlib
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType, ModuleType
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
RESULTS = BENCH_DIR / "RESULTS.md"
LAUNCHER = BENCH_DIR / "sleepers.py"

MEMCG_V1 = Path("/sys/fs/cgroup/memory")
SANDBOX_LIMIT = 512 << 20
PS_ARGV = ["ps", "-eo", "pid,rss,comm"]
PSUTIL_ATTRS = ["pid", "name", "memory_info", "cmdline", "username"]
FLOOR_FILES = ("stat", "status", "oom_score_adj", "oom_score", "cmdline")

TARGET_SCAN_RATIO = 0.5  # oomlens per-process cost at most 0.5x ps's
TARGET_LS_S = 0.25
TARGET_HELP_S = 0.15

PR_SET_CHILD_SUBREAPER = 36


def log(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- machine


def _first_cpuinfo(keys: tuple[str, ...]) -> str | None:
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    for key in keys:
        for line in text.splitlines():
            name, sep, value = line.partition(":")
            if sep and name.strip() == key and value.strip():
                return value.strip()
    return None


def _meminfo_kib(key: str) -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text(encoding="ascii").splitlines():
            name, _, rest = line.partition(":")
            if name == key:
                return int(rest.split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return None


def _tool_version(argv: list[str]) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=10)
    except (OSError, subprocess.TimeoutExpired) as err:
        return f"unavailable ({err})"
    text = (out.stdout or out.stderr).strip()
    return text.splitlines()[0] if text else "unknown"


def machine_info(psutil: ModuleType | None) -> list[tuple[str, str]]:
    cpu = _first_cpuinfo(("model name", "Hardware", "cpu model", "Processor", "cpu"))
    total = os.cpu_count() or 0
    usable = len(os.sched_getaffinity(0))
    mem = _meminfo_kib("MemTotal")
    oomlens_version = "not importable"
    with contextlib.suppress(Exception):
        oomlens_version = str(importlib.import_module("oomlens").__version__)
    rows = [
        ("CPU", f"{cpu or 'unknown'} ({platform.machine()})"),
        ("Cores", f"{total} online, {usable} usable by this process"),
        ("Memory", f"{mem / 1024 / 1024:.1f} GiB (MemTotal {mem} kB)" if mem else "unknown"),
        ("Kernel", platform.release()),
        ("Python", f"{platform.python_implementation()} {platform.python_version()} "
                   f"({sys.executable})"),
        ("psutil", str(psutil.__version__) if psutil is not None else "not installed"),
        ("ps", _tool_version(["ps", "--version"]) if shutil.which("ps") else "not installed"),
        ("oomlens", oomlens_version),
        ("User", "root" if os.geteuid() == 0 else f"uid {os.geteuid()} (not root)"),
        ("Date", dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")),
    ]
    return rows


# --------------------------------------------------------------------------- helpers


def proc_count() -> int:
    return sum(1 for name in os.listdir("/proc") if name.isdigit())


def _start_time(pid: int) -> tuple[str, int] | None:
    """(comm, start time in ticks) of a live pid, None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            text = fh.read().decode("utf-8", "replace")
    except OSError:
        return None
    close = text.rindex(")")
    fields = text[close + 2 :].split()
    if fields[0] == "Z":
        return None
    return text[text.index("(") + 1 : close], int(fields[19])


def become_subreaper() -> bool:
    """Orphaned sleepers (if the launcher died) then come back to us to be reaped
    instead of to pid 1, which may not reap at all in a container."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return int(libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)) == 0
    except (OSError, AttributeError):
        return False


def fmt_ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def fmt_us(seconds: float) -> str:
    return f"{seconds * 1e6:.2f} µs"


def fmt_ratio(num: float, den: float) -> str:
    return f"{num / den:.2f}x" if den > 0 else "n/a"


def best(samples: list[float]) -> float:
    return min(samples)


def median(samples: list[float]) -> float:
    return statistics.median(samples)


# --------------------------------------------------------------------------- sleepers


@dataclass
class SandboxInfo:
    requested: int
    started: int = 0
    cgroup: Path | None = None
    cgroup_note: str = ""
    peak_usage: int | None = None
    failcnt: int | None = None
    left_alive: int = 0
    cgroup_removed: bool = True
    problems: list[str] = field(default_factory=list)


def _memcg_v1_usable() -> str | None:
    """None if a v1 sandbox memcg can be made here, else why not."""
    if os.geteuid() != 0:
        return "not root"
    if not (MEMCG_V1 / "memory.limit_in_bytes").is_file():
        return f"no cgroup v1 memory controller at {MEMCG_V1}"
    return None


def _kill_if_ours(pid: int, start_ticks: int) -> bool:
    """SIGKILL a sleeper we started (checked by start time against pid reuse)."""
    now = _start_time(pid)
    if now is None or now[1] != start_ticks:
        return False
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)  # reparented to us (subreaper): reap it
    return True


def _empty_and_remove_cgroup(path: Path, info: SandboxInfo) -> None:
    deadline = time.monotonic() + 15
    while True:
        try:
            members = [int(x) for x in (path / "cgroup.procs").read_text().split()]
        except FileNotFoundError:
            return
        except OSError:
            members = []
        # Everything in this freshly made cgroup was started by us.
        for pid in members:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)
        try:
            path.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError as err:
            if time.monotonic() > deadline:
                info.cgroup_removed = False
                info.problems.append(f"could not remove {path}: {err.strerror}")
                return
        time.sleep(0.05)


def remove_stale_cgroups() -> list[str]:
    """Empty sandbox cgroups left by a bench run that was SIGKILLed (its pid, in the
    name, is gone). Non-empty ones are left alone and reported."""
    notes: list[str] = []
    if not MEMCG_V1.is_dir():
        return notes
    for path in MEMCG_V1.glob("oomlens-bench-*"):
        parts = path.name.split("-")
        owner = parts[2] if len(parts) > 2 else ""
        if owner.isdigit() and Path(f"/proc/{owner}").exists():
            continue  # another bench run, still going
        try:
            path.rmdir()
            notes.append(f"removed a stale empty sandbox cgroup {path}")
        except OSError as err:
            notes.append(f"stale sandbox cgroup {path} left in place: {err.strerror}")
    return notes


@contextlib.contextmanager
def sleepers(count: int) -> Iterator[SandboxInfo]:
    """`count` extra `sleep 600` processes for the duration of the block; always gone
    (killed, reaped, sandbox cgroup removed) when it exits, however it exits."""
    info = SandboxInfo(requested=count)
    why_not = _memcg_v1_usable()
    if why_not is None:
        path = MEMCG_V1 / f"oomlens-bench-{os.getpid()}-{time.time_ns() % 10**9}"
        try:
            path.mkdir()
            try:
                (path / "memory.limit_in_bytes").write_text(str(SANDBOX_LIMIT))
            except OSError:
                path.rmdir()
                raise
            info.cgroup = path
            info.cgroup_note = f"sandbox memcg v1 {path}, memory.limit_in_bytes 512 MiB"
        except OSError as err:
            why_not = f"cannot create a sandbox memcg: {err}"
    if why_not is not None:
        info.cgroup_note = f"no sandbox cgroup ({why_not}); sleepers use ~0.2 MiB each"
        log(f"note: {info.cgroup_note}")
    launcher: subprocess.Popen[str] | None = None
    started: dict[int, int] = {}
    try:
        argv = [sys.executable, str(LAUNCHER), str(count)]
        if info.cgroup is not None:
            argv.append(str(info.cgroup / "cgroup.procs"))
        launcher = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                    text=True)
        assert launcher.stdout is not None
        line = launcher.stdout.readline().split()
        if not line or line[0] != "READY":
            raise RuntimeError(f"sleeper launcher failed (exit {launcher.poll()})")
        for pid in map(int, line[1:]):
            st = _start_time(pid)
            if st is not None and st[0] == "sleep":
                started[pid] = st[1]
        info.started = len(started)
        if info.started == 0:
            raise RuntimeError("no sleeper process could be started")
        if info.started < count:
            info.problems.append(f"only {info.started} of {count} sleepers running")
        yield info
    finally:
        if info.cgroup is not None:
            with contextlib.suppress(OSError, ValueError):
                info.peak_usage = int((info.cgroup / "memory.max_usage_in_bytes").read_text())
                info.failcnt = int((info.cgroup / "memory.failcnt").read_text())
        if launcher is not None:
            if launcher.stdin is not None:
                with contextlib.suppress(OSError):
                    launcher.stdin.close()
            try:
                launcher.wait(timeout=30)
            except subprocess.TimeoutExpired:
                launcher.kill()
                launcher.wait()
            if launcher.stdout is not None:
                launcher.stdout.close()
        # Backstop if the launcher could not clean up after itself.
        info.left_alive = sum(_kill_if_ours(pid, ticks) for pid, ticks in started.items())
        if info.left_alive:
            info.problems.append(f"{info.left_alive} sleepers outlived the launcher "
                                 "(killed by the backstop)")
        if info.cgroup is not None:
            _empty_and_remove_cgroup(info.cgroup, info)
        still = sum(1 for pid, ticks in started.items()
                    if (st := _start_time(pid)) is not None and st[1] == ticks)
        if still:
            info.problems.append(f"{still} sleepers still alive after cleanup")


# --------------------------------------------------------------------------- scans


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


# --------------------------------------------------------------------------- commands


@dataclass
class Command:
    key: str
    label: str
    argv: list[str]
    samples: list[float] = field(default_factory=list)
    error: str | None = None


def time_commands(commands: list[Command], runs: int) -> None:
    for cmd in commands:  # check + warm-up
        try:
            out = subprocess.run(cmd.argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                 stderr=subprocess.PIPE, text=True, check=False, timeout=60)
        except (OSError, subprocess.TimeoutExpired) as err:
            cmd.error = str(err)
            continue
        if out.returncode != 0:
            tail = out.stderr.strip().splitlines()[-1:] or [""]
            cmd.error = f"exit {out.returncode}: {tail[0]}"
    live = [c for c in commands if c.error is None]
    for _ in range(runs):
        for cmd in live:
            start = time.perf_counter()
            subprocess.run(cmd.argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, check=False)
            cmd.samples.append(time.perf_counter() - start)


# --------------------------------------------------------------------------- report


def md_table(header: list[str], rows: list[list[str]], align: str) -> list[str]:
    marks = {"l": "---", "r": "---:"}
    out = ["| " + " | ".join(header) + " |",
           "|" + "|".join(marks[a] for a in align) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return out


def verdict(ok: bool) -> str:
    return "**met**" if ok else "**NOT met**"


@dataclass
class Run:
    machine: list[tuple[str, str]]
    scanners: list[Scanner]
    n_without: int
    n_with: int
    sandbox: SandboxInfo | None
    commands: dict[str, Command]
    n_commands: int
    reps: int
    runs: int
    notes: list[str]
    elapsed: float = 0.0


def report(run: Run) -> str:
    lines = ["# oomlens benchmarks", "",
             "Written by `make bench` (`.venv/bin/python bench/run.py`); the whole file is "
             "rewritten on every run. All baselines were measured on the same machine in "
             "the same run.", "", "## Machine", ""]
    lines += md_table(["", ""], [[k, v] for k, v in run.machine], "ll")
    targets: list[str] = []

    # ---- 1. scan cost
    by_key = {s.key: s for s in run.scanners}
    dn = run.n_with - run.n_without
    lines += ["", f"## 1. Scan cost per process (N={run.n_without}, then N={run.n_with} "
                  f"with {dn} extra processes)", ""]
    marginal: dict[str, float] = {}
    absolute: dict[str, float] = {}
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
    lines += md_table(["method", f"N={run.n_without}: best (median)",
                       f"N={run.n_with}: best (median)",
                       "marginal per process", f"absolute per process (N={run.n_with})"],
                      rows, "lrrrr")
    if "oomlens" in marginal:
        lines += ["", "oomlens' per-process cost as a ratio to each baseline "
                      "(below 1 = oomlens is cheaper):", ""]
        rrows = [[by_key[k].label, fmt_ratio(marginal["oomlens"], marginal[k]),
                  fmt_ratio(absolute["oomlens"], absolute[k])]
                 for k in ("ps", "psutil", "psutil_warm", "floor") if k in marginal]
        lines += md_table(["oomlens ÷", "marginal", f"absolute (N={run.n_with})"], rrows,
                          "lrr")
        details = [s for s in run.scanners if s.detail and s.key in marginal]
        if details and marginal.get("floor", 0) > 0:
            lines += ["", "Where the floor goes: the same raw reads, one file at a time "
                          "(marginal cost per process; each also pays the /proc listing "
                          "and the loop, so the shares add up to more than 100%):", ""]
            drows = [[s.label, fmt_us(marginal[s.key]),
                      f"{marginal[s.key] / marginal['floor'] * 100:.0f}% of the floor",
                      fmt_ratio(marginal[s.key], marginal["ps"]) + " of ps"
                      if marginal.get("ps", 0) > 0 else "n/a"]
                     for s in details]
            lines += md_table(["read", "marginal per process", "share", "vs ps"], drows,
                              "lrrr")
            if marginal.get("ps", 0) > 0:
                floor_ratio = marginal["floor"] / marginal["ps"]
                lines += ["", f"The floor alone (the five reads, unparsed) costs "
                              f"{floor_ratio:.2f}x ps' per-process cost, so a scan that "
                              f"reads these five files cannot get below that ratio; "
                              f"parsing and building objects add "
                              f"{fmt_us(marginal['oomlens'] - marginal['floor'])} per "
                              "process on top."]
        if "ps" in marginal:
            ratio = marginal["oomlens"] / marginal["ps"] if marginal["ps"] > 0 else float("inf")
            abs_ratio = absolute["oomlens"] / absolute["ps"]
            targets.append(
                f"- Scan cost: oomlens ≤ {TARGET_SCAN_RATIO}x ps's per-process cost: "
                f"{verdict(ratio <= TARGET_SCAN_RATIO)} — marginal "
                f"{fmt_us(marginal['oomlens'])} vs ps {fmt_us(marginal['ps'])} per process "
                f"= {ratio:.2f}x (absolute at N={run.n_with}: {abs_ratio:.2f}x; the "
                f"unparsed reads alone: {fmt_ratio(marginal['floor'], marginal['ps'])}).")
        else:
            targets.append("- Scan cost vs ps: not measured (ps missing).")
    else:
        targets.append("- Scan cost: oomlens could not be measured (see notes).")
    if run.sandbox is not None:
        sb = run.sandbox
        lines += ["", f"Extra processes: {sb.started} x `sleep 600` (requested "
                      f"{sb.requested}) plus their launcher; {sb.cgroup_note}."]
        if sb.peak_usage is not None:
            lines[-1] += (f" Sandbox peak usage {sb.peak_usage / 2**20:.0f} MiB, "
                          f"failcnt {sb.failcnt}.")
        lines[-1] += (" Cleanup: " + ("all sleepers killed and reaped"
                                      + (", cgroup removed" if sb.cgroup else "")
                                      if not sb.problems else "; ".join(sb.problems)) + ".")

    # ---- 2 and 3. whole-process wall time
    c = run.commands
    lines += ["", f"## 2-3. Whole-process wall time (N={run.n_commands} processes, "
                  "no extras)", ""]
    crow = []
    for cmd in c.values():
        if cmd.samples:
            crow.append([cmd.label, fmt_ms(best(cmd.samples)), fmt_ms(median(cmd.samples)),
                         str(len(cmd.samples))])
        else:
            crow.append([cmd.label, "failed", cmd.error or "", "0"])
    lines += md_table(["command", "best", "median", "runs"], crow, "lrrr")

    def ok(key: str) -> bool:
        return key in c and bool(c[key].samples)

    ratio_rows: list[list[str]] = []
    for top, base in (("ls", "ps"), ("ls", "pass"), ("help", "pass"), ("help", "argparse")):
        if ok(top) and ok(base):
            t, b = c[top].samples, c[base].samples
            ratio_rows.append([f"{c[top].label} ÷ {c[base].label}",
                               fmt_ratio(best(t), best(b)), fmt_ratio(median(t), median(b)),
                               fmt_ms(median(t) - median(b))])
    if ratio_rows:
        lines += [""]
        lines += md_table(["ratio", "best", "median", "median difference"], ratio_rows,
                          "lrrr")
    for key, limit, what in (("ls", TARGET_LS_S, "`oomlens ls`"),
                             ("help", TARGET_HELP_S, "`oomlens --help`")):
        if ok(key):
            times = c[key].samples
            targets.append(
                f"- {what} under {limit:.2f} s: {verdict(median(times) < limit)} — median "
                f"{fmt_ms(median(times))}, best {fmt_ms(best(times))} over {len(times)} runs "
                f"(N={run.n_commands}).")
        else:
            targets.append(f"- {what} under {limit:.2f} s: not measured "
                           f"({c[key].error if key in c else 'not found'}).")

    lines += ["", "## Targets (from the issue)", "", *targets]
    if run.notes:
        lines += ["", "## Notes", "", *[f"- {n}" for n in run.notes]]
    lines += ["", "## How measured", "",
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
              "- Extra processes: `sleep 600` started by bench/sleepers.py, which joins the "
              "sandbox memory cgroup first (root + cgroup v1 only) so they are born and "
              "charged inside it; it kills and reaps them when bench/run.py closes its "
              "stdin (also if bench/run.py dies). bench/run.py then kills any survivor "
              "(matched by pid and start time), empties and removes the cgroup, in a "
              "`finally`.",
              f"- Whole-process wall time: `subprocess.run(argv)` with stdin/stdout/stderr "
              f"to /dev/null, from Popen to exit; best and median of {run.runs} runs after "
              "one checked warm-up run, commands interleaved round-robin, without the extra "
              "processes. `python` is this venv's interpreter "
              f"(`{sys.executable}`), the same one `.venv/bin/oomlens` runs on.",
              "- Targets are judged on the marginal per-process ratio (scan) and on the "
              "median (wall times).",
              f"- Total benchmark run time: {run.elapsed:.1f} s."]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- main


def _on_signal(signum: int, _frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)  # run the `finally` cleanups


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--extra", type=int, default=2000, help="extra processes (2000)")
    parser.add_argument("--reps", type=int, default=7, help="scan timings per method (7)")
    parser.add_argument("--runs", type=int, default=15, help="runs per command (15)")
    parser.add_argument("--output", type=Path, default=RESULTS, help="report file")
    return parser.parse_args(argv)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    t0 = time.perf_counter()
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _on_signal)
    notes: list[str] = []
    if not Path("/proc/self/stat").exists():
        print("bench: needs Linux /proc", file=sys.stderr)
        return 2

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
    for note in remove_stale_cgroups():
        notes.append(note)
        log(note)
    if not become_subreaper():
        notes.append("could not become a child subreaper; cleanup relies on the launcher.")

    machine = machine_info(psutil)
    oomlens_bin = Path(sys.executable).with_name("oomlens")
    oomlens_argv0 = str(oomlens_bin) if oomlens_bin.exists() else shutil.which("oomlens")
    py = sys.executable
    commands: dict[str, Command] = {}
    if oomlens_argv0:
        commands["ls"] = Command("ls", "`oomlens ls`", [oomlens_argv0, "ls"])
        commands["help"] = Command("help", "`oomlens --help`", [oomlens_argv0, "--help"])
    else:
        notes.append("no `oomlens` console script next to the venv python nor on PATH.")
    if shutil.which("ps"):
        commands["ps"] = Command("ps", "`ps -eo pid,rss,comm`", PS_ARGV)
    commands["pass"] = Command("pass", "`python -c pass`", [py, "-c", "pass"])
    commands["argparse"] = Command("argparse", "`python -c \"import argparse\"`",
                                   [py, "-c", "import argparse"])

    log(f"2-3: whole-process wall times, {args.runs} runs each")
    n_commands = proc_count()
    time_commands(list(commands.values()), args.runs)
    for cmd in commands.values():
        if cmd.error:
            log(f"{cmd.label} failed: {cmd.error}")

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

    run = Run(machine=machine, scanners=scanners, n_without=n_without, n_with=n_with,
              sandbox=sandbox, commands=commands, n_commands=n_commands, reps=args.reps,
              runs=args.runs, notes=notes, elapsed=time.perf_counter() - t0)
    text = report(run)
    print(text)
    args.output.write_text(text, encoding="utf-8")
    log(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
