"""What every benchmark module shares: logging, the machine description, timing
statistics, number formats, Markdown tables, and `Part`, the pieces of
bench/RESULTS.md one benchmark writes."""

from __future__ import annotations

import contextlib
import datetime as dt
import importlib
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
PS_ARGV = ["ps", "-eo", "pid,rss,comm"]


def log(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


class BenchmarkFailed(Exception):
    """A benchmark's result is wrong (not merely slow): bench/run.py reports it in
    RESULTS.md, goes on with the others and exits with status 1."""


@dataclass
class Part:
    """One benchmark's share of RESULTS.md: its own `## ...` section, and its lines
    in the shared Targets, Notes and How measured sections (`targets` and `how` are
    Markdown bullet lines, `notes` plain sentences)."""

    section: list[str]
    targets: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    how: list[str] = field(default_factory=list)


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


def tool_version(argv: list[str]) -> str:
    """First line of `argv`'s version output, or why there is none."""
    if shutil.which(argv[0]) is None:
        return "not installed"
    try:
        out = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=10)
    except (OSError, subprocess.TimeoutExpired) as err:
        return f"unavailable ({err})"
    text = (out.stdout or out.stderr).strip()
    return text.splitlines()[0] if text else "unknown"


def cpu_model() -> str:
    cpu = _first_cpuinfo(("model name", "Hardware", "cpu model", "Processor", "cpu"))
    return f"{cpu or 'unknown'} ({platform.machine()})"


def cores() -> str:
    return f"{os.cpu_count() or 0} online, {len(os.sched_getaffinity(0))} usable by this process"


def memory() -> str:
    mem = _meminfo_kib("MemTotal")
    return f"{mem / 1024 / 1024:.1f} GiB (MemTotal {mem} kB)" if mem else "unknown"


def python_version() -> str:
    return f"{platform.python_implementation()} {platform.python_version()}"


def now_utc() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def machine_info() -> list[tuple[str, str]]:
    """The rows of the Machine table."""
    psutil_version = "not installed"
    with contextlib.suppress(ImportError):
        psutil_version = str(importlib.import_module("psutil").__version__)
    oomlens_version = "not importable"
    with contextlib.suppress(Exception):
        oomlens_version = str(importlib.import_module("oomlens").__version__)
    return [
        ("CPU", cpu_model()),
        ("Cores", cores()),
        ("Memory", memory()),
        ("Kernel", platform.release()),
        ("Python", f"{python_version()} ({sys.executable})"),
        ("psutil", psutil_version),
        ("ps", tool_version(["ps", "--version"])),
        ("grep", tool_version(["grep", "--version"])),
        ("oomlens", oomlens_version),
        ("User", "root" if os.geteuid() == 0 else f"uid {os.geteuid()} (not root)"),
        ("Date", now_utc()),
    ]


def machine_summary() -> str:
    """The machine in one sentence, for a section that may be re-measured alone."""
    mem = _meminfo_kib("MemTotal")
    ram = f"{mem / 1024 / 1024:.1f} GiB RAM" if mem else "RAM unknown"
    return (f"{cpu_model()}, {os.cpu_count() or 0} cores ({len(os.sched_getaffinity(0))} "
            f"usable), {ram}, kernel {platform.release()}, {python_version()}")


def proc_count() -> int:
    return sum(1 for name in os.listdir("/proc") if name.isdigit())


# --------------------------------------------------------------------------- numbers


def best(samples: list[float]) -> float:
    return min(samples)


def median(samples: list[float]) -> float:
    return statistics.median(samples)


def fmt_ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def percentile(samples: list[float], q: float) -> float:
    """Nearest rank: the smallest sample with at least q of them at or below it
    (p99 of 100 samples is the 99th, not the maximum)."""
    ordered = sorted(samples)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def latency_row(label: str, samples: list[float]) -> list[str]:
    """A table row: label, count, median, p99, max."""
    return [label, str(len(samples)), fmt_ms(statistics.median(samples)),
            fmt_ms(percentile(samples, 0.99)), fmt_ms(max(samples))]


def fmt_us(seconds: float) -> str:
    return f"{seconds * 1e6:.2f} µs"


def fmt_ratio(num: float, den: float) -> str:
    return f"{num / den:.2f}x" if den > 0 else "n/a"


def md_table(header: list[str], rows: list[list[str]], align: str) -> list[str]:
    marks = {"l": "---", "r": "---:"}
    out = ["| " + " | ".join(header) + " |",
           "|" + "|".join(marks[a] for a in align) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return out


def verdict(ok: bool) -> str:
    return "**met**" if ok else "**NOT met**"
