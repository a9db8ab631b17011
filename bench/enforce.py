"""Benchmark 5: `oomlens enforce`, from the exec of a matching program to its
oom_score_adj being set, against the every-minute cron loop it replaces.

- latency: N starts of a program the policy matches (a copy of /bin/sleep with a
  name of its own, rule `score = 123`), each timed from just before Popen (so fork
  and exec count against oomlens) to the first read of /proc/PID/oom_score_adj that
  shows 123: event-driven (the process connector) one start at a time, polling
  (`--poll`, 1 s) with starts every 20 ms measured concurrently, and the baseline: a
  real `while :; do ...; sleep 60; done` loop, as admins write it, for a shorter run;
- idle CPU of the enforcer over 60 s in which the benchmark starts nothing, both modes;
- a storm: thousands of short programs per second with every 50th a long-lived
  match: all matches set, events lost or not, the rate reached.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from benchlib import (
    BenchmarkFailed,
    Part,
    fmt_ms,
    latency_row,
    log,
    md_table,
    percentile,
    verdict,
)

NAME = "enforce"
SCORE = 123
TARGET_MEDIAN_S = 0.010
TARGET_IDLE_SHARE = 0.001
CRON_SECONDS = 60
CLK_TCK = os.sysconf("SC_CLK_TCK")


@dataclass
class Enforcer:
    """`oomlens enforce --json` in a subprocess, its log lines gathered by a thread."""

    proc: subprocess.Popen[str]
    lines: list[dict[str, object]] = field(default_factory=list)

    @classmethod
    def start(cls, policy: Path, state: Path, extra: list[str]) -> Enforcer:
        proc = subprocess.Popen(
            [sys.executable, "-m", "oomlens", "enforce", "--policy", str(policy), "--state-dir",
             str(state), "--json", *extra],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        enforcer = cls(proc)
        threading.Thread(target=enforcer._gather, daemon=True).start()
        deadline = time.monotonic() + 30
        while not any(e.get("event") == "started" for e in enforcer.lines):
            if time.monotonic() > deadline or proc.poll() is not None:
                enforcer.stop()
                raise BenchmarkFailed("oomlens enforce did not start")
            time.sleep(0.01)
        return enforcer

    def _gather(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(json.loads(line))

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK

    def events(self, kind: str) -> list[dict[str, object]]:
        return [e for e in self.lines if e.get("event") == kind]

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def _adj(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/oom_score_adj").read_text())
    except (OSError, ValueError):
        return None


def _reap(proc: subprocess.Popen[bytes]) -> None:
    proc.kill()
    proc.wait()


def sequential_latency(target: str, starts: int, timeout: float) -> list[float]:
    """One start at a time: spawn, read oom_score_adj every ~50 µs until it is set."""
    samples = []
    for _ in range(starts):
        t0 = time.perf_counter()
        proc = subprocess.Popen([target, "30"])
        try:
            while _adj(proc.pid) != SCORE:
                if time.perf_counter() - t0 > timeout:
                    raise BenchmarkFailed(f"pid {proc.pid} not set within {timeout} s")
                time.sleep(0.00005)
            samples.append(time.perf_counter() - t0)
        finally:
            _reap(proc)
    return samples


def concurrent_latency(target: str, starts: int, gap: float, tick: float,
                       timeout: float) -> list[float]:
    """Starts every `gap` s, all pending ones checked every `tick` s: for slow
    setters (polling, cron) whose latency is much longer than the gap."""
    pending: dict[int, tuple[subprocess.Popen[bytes], float]] = {}
    samples: list[float] = []
    next_start = time.perf_counter()
    launched = 0
    try:
        while launched < starts or pending:
            now = time.perf_counter()
            if launched < starts and now >= next_start:
                proc = subprocess.Popen([target, "300"])
                pending[proc.pid] = (proc, now)
                launched += 1
                next_start += gap
            for pid, (proc, t0) in list(pending.items()):
                if _adj(pid) == SCORE:
                    samples.append(time.perf_counter() - t0)
                    _reap(proc)
                    del pending[pid]
                elif time.perf_counter() - t0 > timeout:
                    raise BenchmarkFailed(f"pid {pid} not set within {timeout} s")
            time.sleep(tick)
    finally:
        for proc, _ in pending.values():
            _reap(proc)
    return samples


def cron_latency(target: str, comm: str, seconds: float, gap: float) -> list[float]:
    """The baseline: the every-minute loop admins run, started with the first
    program, measured over `seconds` (starts every `gap` s until then)."""
    loop = subprocess.Popen(
        ["sh", "-c", f"while :; do for p in $(pgrep -x {comm}); do echo {SCORE} > "
         f"/proc/$p/oom_score_adj; done; sleep {CRON_SECONDS}; done"],
        start_new_session=True)
    try:
        time.sleep(0.2)  # its first pass ran: later starts wait for the next pass
        starts = int((seconds - CRON_SECONDS * 0.05) / gap)
        return concurrent_latency(target, starts, gap, 0.02, CRON_SECONDS + 5)
    finally:
        os.killpg(loop.pid, signal.SIGKILL)
        loop.wait()


def idle_cpu(enforcer: Enforcer, seconds: float) -> float:
    """Share of one core the enforcer used over `seconds` with no starts by us."""
    time.sleep(1)
    before = enforcer.cpu_seconds()
    time.sleep(seconds)
    return (enforcer.cpu_seconds() - before) / seconds


STORM_SPAWNER = """
import os, sys, time
true, target, n, every = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
targets = []
quiet = [(os.POSIX_SPAWN_OPEN, 1, os.devnull, os.O_WRONLY, 0)]  # not our stdout pipe
t0 = time.time()
for i in range(n):
    if i % every == 0:
        pid = os.posix_spawn(target, [target, "60"], os.environ, file_actions=quiet)
        targets.append((pid, time.time()))
    else:
        pid = os.posix_spawn(true, [true], os.environ)
        os.waitpid(pid, 0)
print(n / (time.time() - t0))
for pid, at in targets:
    print(pid, at)
"""


def storm(target: str, enforcer: Enforcer, total: int, every: int,
          spawners: int) -> dict[str, float]:
    """`spawners` processes each start `total // spawners` programs back to back."""
    procs = [subprocess.Popen([sys.executable, "-c", STORM_SPAWNER, shutil.which("true") or
                               "/bin/true", target, str(total // spawners), str(every)],
                              stdout=subprocess.PIPE, text=True) for _ in range(spawners)]
    outputs = [p.communicate()[0].split("\n") for p in procs]
    time.sleep(2)
    rate = sum(float(out[0]) for out in outputs)
    targets = {int(pid): float(at) for out in outputs for line in out[1:] if line
               for pid, at in [line.split()]}
    try:
        unset = [pid for pid in targets if _adj(pid) != SCORE]
        applied_at = {int(str(e["pid"])): _epoch(str(e["time"]))
                      for e in enforcer.events("applied")}
        lags = [applied_at[pid] - at for pid, at in targets.items() if pid in applied_at]
    finally:
        for pid in targets:
            _kill(pid)
    return {"rate": rate, "targets": len(targets), "unset": len(unset),
            "median_lag": statistics.median(lags) if lags else float("nan"),
            "max_lag": max(lags) if lags else float("nan"),
            "overruns": len(enforcer.events("overrun"))}


def _epoch(iso: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(iso).timestamp()


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    except (ProcessLookupError, ChildProcessError):
        pass


def run(args: argparse.Namespace) -> Part:
    with tempfile.TemporaryDirectory(prefix="oomlens-bench-") as tmp:
        comm = f"olbench-{os.getpid() % 100000}"
        target = str(Path(tmp) / comm)
        shutil.copy(shutil.which("sleep") or "/bin/sleep", target)
        policy = Path(tmp) / "policy.toml"
        policy.write_text(f'[[rule]]\nname = "bench"\ncomm = "{comm}"\nscore = {SCORE}\n')
        state = Path(tmp) / "state"
        figures: dict[str, list[float]] = {}
        idle: dict[str, float] = {}
        for mode, extra in (("events", []), ("polling", ["--poll", "--interval", "1"])):
            enforcer = Enforcer.start(policy, state, extra)
            try:
                log(f"5: enforce ({mode}): {args.enforce_starts} starts")
                figures[mode] = (sequential_latency(target, args.enforce_starts, 5)
                                 if mode == "events" else
                                 concurrent_latency(target, args.enforce_starts, 0.02, 0.005,
                                                    10))
                log(f"5: enforce ({mode}): idle CPU over {args.idle_seconds} s")
                idle[mode] = idle_cpu(enforcer, args.idle_seconds)
                if mode == "events":
                    log("5: enforce (events): storm")
                    stormed = storm(target, enforcer, args.storm_starts, 50, 2)
            finally:
                enforcer.stop()
        log(f"5: the cron loop baseline, {CRON_SECONDS + 10} s")
        figures["cron"] = cron_latency(target, comm, CRON_SECONDS + 10, 1.5)
    return report(figures, idle, stormed)


def report(figures: dict[str, list[float]], idle: dict[str, float],
           stormed: dict[str, float]) -> Part:
    events, polling, cron = figures["events"], figures["polling"], figures["cron"]
    lines = ["## 5. `oomlens enforce`: exec to oom_score_adj set", ""]
    lines += md_table(["setter", "starts", "median", "p99", "max"], [
        latency_row("`oomlens enforce` (process events)", events),
        latency_row("`oomlens enforce --poll --interval 1`", polling),
        latency_row(f"baseline: cron-style loop, `sleep {CRON_SECONDS}`", cron)], "lrrrr")
    lines += [""]
    lines += md_table(["ratio", "median", "p99"], [
        [f"events ÷ {name}", f"{statistics.median(events) / statistics.median(s):.5f}x",
         f"{percentile(events, 0.99) / percentile(s, 0.99):.5f}x"]
        for name, s in (("cron loop", cron), ("polling", polling))], "lrr")
    lines += ["", "Idle CPU (share of one core, 60 s, no starts by the benchmark):", ""]
    lines += md_table(["mode", "CPU"], [[m, f"{share * 100:.3f}%"]
                                        for m, share in idle.items()], "lr")
    lines += ["", f"Storm (process events): {stormed['rate']:.0f} program starts/s from 2 "
              f"spawners; {stormed['targets']:.0f} matching programs among them, "
              f"{stormed['unset']:.0f} left unset; set a median {stormed['median_lag'] * 1000:.1f}"
              f" ms (max {stormed['max_lag'] * 1000:.1f} ms) after their spawn, by the log's "
              f"clock; {stormed['overruns']:.0f} event overruns (each followed by a rescan)."]
    median_events = statistics.median(events)
    targets = [
        f"- enforce, median exec → oom_score_adj under {TARGET_MEDIAN_S * 1000:.0f} ms "
        f"(process events): {verdict(median_events < TARGET_MEDIAN_S)} — median "
        f"{fmt_ms(median_events)}, p99 {fmt_ms(percentile(events, 0.99))} over "
        f"{len(events)} starts; "
        f"the cron loop's median is {fmt_ms(statistics.median(cron))}.",
        *(f"- enforce idle CPU under 0.1% of a core ({mode}): "
          f"{verdict(share < TARGET_IDLE_SHARE)} — {share * 100:.3f}%."
          for mode, share in idle.items()),
        f"- enforce keeps up with a storm: {verdict(stormed['unset'] == 0)} — "
        f"{stormed['rate']:.0f} starts/s, {stormed['unset']:.0f} of "
        f"{stormed['targets']:.0f} matches left unset.",
    ]
    how = ["- enforce: latency from just before `subprocess.Popen` of the matching program "
           "(so fork and exec count against oomlens) to the first read of "
           "/proc/PID/oom_score_adj showing the rule's value; event mode one start at a time "
           "with reads every ~50 µs, polling and the cron loop with starts every 20 ms / "
           "1.5 s measured concurrently with reads every 5 / 20 ms. The cron loop is a real "
           f"`while :; do for p in $(pgrep -x NAME); do echo N > /proc/$p/oom_score_adj; "
           f"done; sleep {CRON_SECONDS}; done` run for {CRON_SECONDS + 10} s. Idle CPU: "
           "utime+stime of the enforcer from /proc/PID/stat over 60 s."]
    return Part(section=lines, targets=targets, how=how)
