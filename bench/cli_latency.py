"""Benchmarks 2-3: whole-process wall time of `oomlens ls` against
`ps -eo pid,rss,comm` and `python -c pass`, and of `oomlens --help` against
`python -c pass` and `python -c "import argparse"`."""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from benchlib import (
    PS_ARGV,
    Part,
    best,
    fmt_ms,
    fmt_ratio,
    log,
    md_table,
    median,
    proc_count,
    verdict,
)

NAME = "cli_latency"
TARGET_LS_S = 0.25
TARGET_HELP_S = 0.15


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


def oomlens_script() -> str | None:
    """The `oomlens` console script next to this venv's python, else on PATH."""
    beside = Path(sys.executable).with_name("oomlens")
    return str(beside) if beside.exists() else shutil.which("oomlens")


def build_commands(notes: list[str]) -> dict[str, Command]:
    oomlens = oomlens_script()
    py = sys.executable
    commands: dict[str, Command] = {}
    if oomlens:
        commands["ls"] = Command("ls", "`oomlens ls`", [oomlens, "ls"])
        commands["help"] = Command("help", "`oomlens --help`", [oomlens, "--help"])
    else:
        notes.append("no `oomlens` console script next to the venv python nor on PATH.")
    if shutil.which("ps"):
        commands["ps"] = Command("ps", "`ps -eo pid,rss,comm`", PS_ARGV)
    commands["pass"] = Command("pass", "`python -c pass`", [py, "-c", "pass"])
    commands["argparse"] = Command("argparse", "`python -c \"import argparse\"`",
                                   [py, "-c", "import argparse"])
    return commands


def run(args: argparse.Namespace) -> Part:
    notes: list[str] = []
    commands = build_commands(notes)
    log(f"2-3: whole-process wall times, {args.runs} runs each")
    n_commands = proc_count()
    time_commands(list(commands.values()), args.runs)
    for cmd in commands.values():
        if cmd.error:
            log(f"{cmd.label} failed: {cmd.error}")
    part = report(commands, n_commands, args.runs)
    part.notes = notes
    return part


def report(c: dict[str, Command], n_commands: int, runs: int) -> Part:
    lines = [f"## 2-3. Whole-process wall time (N={n_commands} processes, no extras)", ""]
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
    how = [f"- Whole-process wall time: `subprocess.run(argv)` with stdin/stdout/stderr "
           f"to /dev/null, from Popen to exit; best and median of {runs} runs after "
           "one checked warm-up run, commands interleaved round-robin, without the extra "
           "processes. `python` is this venv's interpreter "
           f"(`{sys.executable}`), the same one `.venv/bin/oomlens` runs on."]
    return Part(section=lines, targets=_targets(c, n_commands), how=how)


def _targets(c: dict[str, Command], n_commands: int) -> list[str]:
    targets: list[str] = []
    for key, limit, what in (("ls", TARGET_LS_S, "`oomlens ls`"),
                             ("help", TARGET_HELP_S, "`oomlens --help`")):
        if key in c and c[key].samples:
            times = c[key].samples
            targets.append(
                f"- {what} under {limit:.2f} s: {verdict(median(times) < limit)} — median "
                f"{fmt_ms(median(times))}, best {fmt_ms(best(times))} over {len(times)} runs "
                f"(N={n_commands}).")
        else:
            targets.append(f"- {what} under {limit:.2f} s: not measured "
                           f"({c[key].error if key in c else 'not found'}).")
    return targets
