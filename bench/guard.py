"""Benchmark 7: `oomlens guard` against earlyoom (the Debian package), in the same
run, on the same workloads, with the same victim, measured the same way: from the
threshold crossing to SIGTERM arriving in the victim.

- (a) a sudden drop and (b) a 3 GiB/s ramp of MemAvailable: each tool runs in a
  stage of its own (below) where a file the benchmark rewrites is bind-mounted over
  /proc/meminfo, so no memory is really exhausted; the victim is a python holding
  64 MiB (the largest process either tool can see);
- (c) a real hog in a 256 MiB memory cgroup growing at 1 GiB/s: earlyoom watches
  the system, which has plenty free, and cannot see the cgroup's limit; the guard is
  given the cgroup (`--cgroup PATH --kill-below 20%`). Who acted first: the tool
  (SIGTERM) or the kernel's memcg OOM killer (memory.oom_control oom_kill);
- idle CPU over 60 s with the real /proc/meminfo and plenty free, and RSS (VmHWM).

A stage is a sandbox memcg (`SandboxMemcg`, 512 MiB) holding a pid namespace and a
private mount namespace. Why a pid namespace: a tool that decides to kill can only
reach the processes of its namespace (the victim, filler sleepers, the namespace's
init), so a misfire can never hit a bystander on the machine. The fillers, as many
as the machine has processes, keep the victim scan as long as it would be outside.
The namespace's init is a shell waiting on a pipe from this process: when the
benchmark ends, even by SIGKILL, the pipe closes, init exits and the kernel kills
everything in the namespace; `SandboxMemcg.close()` SIGKILLs whatever is left in
the cgroup and removes it.

The victim's SIGTERM handler writes CLOCK_MONOTONIC to its stdout, then holds still
(no growth, no exit) until the benchmark closes its stdin: the benchmark first puts
the fake MemAvailable back above the threshold, so neither tool goes on to kill a
second process. A guard that cannot be started (not written yet, or failing) is
reported as such: the harness needs no change when it lands.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import os
import random
import re
import select
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from benchlib import (
    BenchmarkFailed,
    Part,
    fmt_ms,
    log,
    md_table,
    percentile,
    proc_count,
    tool_version,
    verdict,
)

from oomlens.system.memcg import MemcgMount, find_memcg_mount
from oomlens.system.sandbox import SandboxMemcg

NAME = "guard"
MIB, GIB = 1 << 20, 1 << 30
KILL_PCT, WARN_PCT = 10, 15  # (a), (b): share of MemTotal
CGROUP_KILL_PCT, CGROUP_WARN_PCT = 20, 30  # (c): share of the cgroup's limit
IDLE_KILL_PCT, IDLE_WARN_PCT = 1, 2
VICTIM_BYTES = 64 * MIB
STAGE_LIMIT = 512 * MIB
HOG_LIMIT, HOG_RATE = 256 * MIB, GIB  # bytes, bytes/s
RAMP_RATE, RAMP_HEADROOM = 3 * GIB, 3 * GIB
DROP_BELOW = 256 * MIB  # (a) lands this far below the kill level
TICK_S = 0.001
REACT_TIMEOUT_S = 5.0
START_TIMEOUT_S = 30.0
SEED = 20250106
TARGET_RAMP_MEDIAN_S = 0.020
TARGET_RSS_KIB = 20_000_000 // 1024  # "under 20 MB": MB = 10^6 bytes, as in part 3
CLOCK = time.CLOCK_MONOTONIC
IN_ACCESS = 0x1

# argv: bytes to hold, growth rate in bytes/s. "ready" once the memory is resident
# (b"\1" * n writes every page); on the line "grow" it grows by 1 MiB steps at the
# rate. The SIGTERM handler reads the raw fd, not sys.stdin: the main thread may be
# inside sys.stdin.readline(), and a buffered reader is not reentrant.
VICTIM_SCRIPT = r"""
import os, signal, sys, time
size, rate = int(sys.argv[1]), float(sys.argv[2])
def on_term(signum, frame):
    os.write(1, b"term %.9f\n" % time.clock_gettime(time.CLOCK_MONOTONIC))
    while os.read(0, 4096):
        pass
    os._exit(0)
signal.signal(signal.SIGTERM, on_term)
keep = [b"\1" * size]
print("ready", flush=True)
if sys.stdin.readline().strip() == "grow":
    start, step = time.monotonic(), 1 << 20
    while True:
        keep.append(b"\1" * step)
        delay = start + (len(keep) - 1) * step / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
"""

# $1: file to bind over /proc/meminfo (empty: keep the real one), $2: filler count.
STAGE_SCRIPT = (
    'if [ -n "$1" ]; then mount --bind "$1" /proc/meminfo || exit 1; fi; i=0; '
    'while [ "$i" -lt "$2" ]; do sleep 100000 >/dev/null 2>&1 & i=$((i+1)); done; '
    "echo ready; read _"
)


def clock() -> float:
    return time.clock_gettime(CLOCK)


def children(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except FileNotFoundError:
        return []


# --------------------------------------------------------------------------- tools


@dataclass(frozen=True)
class Tool:
    """One contender: its command line for given thresholds, the output line that
    says it is ready, and the lines that report a kill."""

    name: str
    argv: Callable[[int, int, str | None, str], list[str]]
    is_ready: Callable[[str], bool]
    is_kill: Callable[[str], bool]
    missing: Callable[[], str | None]


def earlyoom_argv(kill_pct: int, _warn_pct: int, _cgroup: str | None, _store: str) -> list[str]:
    """SIGTERM at -m's first number, SIGKILL at half of it (its default ratio).
    `-s 100,100`: earlyoom acts only when memory *and* swap are low; with no swap it
    counts free swap as 0 % so the swap half always holds, and 100 makes that explicit.
    `-r 3600` as Debian's /etc/default/earlyoom ships it. It has neither a warn
    level nor a cgroup option."""
    return ["earlyoom", "-m", f"{kill_pct},{kill_pct / 2:g}", "-s", "100,100", "-r", "3600"]


def guard_argv(kill_pct: int, warn_pct: int, cgroup: str | None, store: str) -> list[str]:
    return [sys.executable, "-m", "oomlens", "guard", "--json", "--warn-below",
            f"{warn_pct}%", "--kill-below", f"{kill_pct}%", "--store", store,
            *(["--cgroup", cgroup] if cgroup else [])]


def _json_event(line: str) -> dict[str, object]:
    if not line.startswith("{"):
        return {}
    with contextlib.suppress(ValueError):
        event = json.loads(line)
        return event if isinstance(event, dict) else {}
    return {}


EARLYOOM = Tool(
    "earlyoom", earlyoom_argv,
    is_ready=lambda line: line.startswith("mem avail:"),  # its first report: loop running
    is_kill=lambda line: re.match(r"sending SIG\w+ to process", line) is not None,
    missing=lambda: None if shutil.which("earlyoom") else "not installed "
    "(apt-get install earlyoom)")
GUARD = Tool(
    "oomlens guard", guard_argv,
    is_ready=lambda line: _json_event(line).get("event") == "started",
    is_kill=lambda line: (_json_event(line).get("event") == "kill"
                          and not _json_event(line).get("dry_run")),
    missing=lambda: None)
TOOLS = (EARLYOOM, GUARD)

# The interpreter's floor: a Python loop doing the least a look can do (poll() for
# 0.5 s, one pread of /proc/meminfo, one bytes.find): what any Python guard pays
# per wake-up before it decides anything.
FLOOR_SCRIPT = r"""
import os, select
fd = os.open("/proc/meminfo", os.O_RDONLY)
poller = select.poll()
print("ready", flush=True)
while True:
    poller.poll(500)
    os.pread(fd, 16384, 0).find(b"MemAvailable:")
"""
SLOW_CEILING_S = 1.0
IDLE_ONLY = (
    Tool(f"oomlens guard --max-interval {SLOW_CEILING_S:g}",
         lambda *args: [*guard_argv(*args), "--max-interval", f"{SLOW_CEILING_S:g}"],
         GUARD.is_ready, GUARD.is_kill, GUARD.missing),
    Tool("python floor (poll 0.5 s + pread)", lambda *_: [sys.executable, "-c", FLOOR_SCRIPT],
         lambda line: line == "ready", lambda _: False, lambda: None),
)
"""Idle only: the guard at an earlyoom-like cadence, and the interpreter's floor."""


class Unavailable(Exception):
    """The tool did not start (or died): the reason goes into the report."""


class Running:
    """A tool started in a stage (through nsenter); its stdout and stderr lines are
    gathered by a thread."""

    def __init__(self, tool: Tool, stage: Stage, argv: list[str]) -> None:
        self.tool = tool
        self.proc = stage.spawn(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self.lines: list[str] = []
        threading.Thread(target=self._gather, daemon=True).start()
        deadline = time.monotonic() + START_TIMEOUT_S
        while not any(tool.is_ready(line) for line in list(self.lines)):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise Unavailable(self.failure() or f"not ready within {START_TIMEOUT_S:g} s")
            time.sleep(0.01)
        self.pid = children(self.proc.pid)[0]  # nsenter's child: the tool's host pid

    def _gather(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            self.lines.append(raw.decode(errors="replace").rstrip("\n"))

    def failure(self) -> str | None:
        """Why the tool is gone (exit status, last line of output), or None."""
        if self.proc.poll() is None:
            return None
        last = next((line for line in reversed(self.lines) if line.strip()), "no output")
        return f"exit {self.proc.returncode}: {last.strip()}"

    def kills(self) -> int:
        return sum(1 for line in list(self.lines) if self.tool.is_kill(line))

    def cpu(self) -> tuple[int, int]:
        """(ns on CPU summed over its live threads from schedstat, utime+stime ticks)."""
        ns = 0
        for tid in os.listdir(f"/proc/{self.pid}/task"):
            with contextlib.suppress(FileNotFoundError):
                ns += int(Path(f"/proc/{self.pid}/task/{tid}/schedstat").read_text().split()[0])
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return ns, int(fields[11]) + int(fields[12])

    def hwm_kib(self) -> int:
        status = Path(f"/proc/{self.pid}/status").read_text()
        match = re.search(r"^VmHWM:\s+(\d+) kB", status, re.M)
        return int(match.group(1)) if match else 0


# --------------------------------------------------------------------------- stage


class LinePipe:
    """A child's stdout read with select and os.read, so that one loop can wait for
    a victim's line and still write /proc/meminfo every millisecond."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdout is not None
        self.fd = proc.stdout.fileno()
        self.buffer = b""
        self.eof = False

    def line(self, timeout: float, also: Looks | None = None) -> str | None:
        """The next line, or None at EOF or when `timeout` s pass without one; reads
        of the fake meminfo seen meanwhile go to `also`."""
        deadline = clock() + timeout
        fds = [self.fd] + ([also.fd] if also else [])
        while b"\n" not in self.buffer and not self.eof:
            left = max(0.0, deadline - clock())
            ready = select.select(fds, [], [], left)[0]
            if also and also.fd in ready:
                also.drain()
            if self.fd in ready:
                chunk = os.read(self.fd, 4096)
                self.buffer += chunk
                self.eof = not chunk
            elif left == 0.0:
                break
        if b"\n" not in self.buffer:
            return None
        line, self.buffer = self.buffer.split(b"\n", 1)
        return line.decode(errors="replace")


class Victim:
    """The victim (or, in (c), the hog): VICTIM_SCRIPT in a stage's namespace."""

    def __init__(self, box: SandboxMemcg, argv: list[str]) -> None:
        self.proc = box.spawn(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        self.pipe = LinePipe(self.proc)
        if self.pipe.line(START_TIMEOUT_S) != "ready":
            raise BenchmarkFailed(f"the victim did not start (exit {self.proc.poll()})")

    def send(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line.encode() + b"\n")
        self.proc.stdin.flush()

    def term(self, timeout: float, looks: Looks | None = None) -> float | None:
        """When SIGTERM arrived, if it does within `timeout` s."""
        line = self.pipe.line(timeout, looks)
        return float(line.split()[1]) if line and line.startswith("term ") else None

    def release(self) -> None:
        """Close stdin: the victim exits, from its handler or from its idle read."""
        assert self.proc.stdin is not None
        with contextlib.suppress(BrokenPipeError):
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def victim_argv(size: int, rate: float) -> list[str]:
    return [sys.executable, "-I", "-S", "-c", VICTIM_SCRIPT, str(size), str(rate)]


class Stage:
    """A sandbox memcg holding a pid namespace and a private mount namespace (with
    `meminfo` bound over /proc/meminfo if given) and `fillers` sleepers; tools and
    victims enter it with nsenter. See the module docstring for why."""

    def __init__(self, mount: MemcgMount, fillers: int, meminfo: Path | None = None) -> None:
        self.box = SandboxMemcg(mount, "oomlens-bench-guard-", STAGE_LIMIT)
        self.box.create()
        try:
            self.init = self.box.spawn(
                ["unshare", "--pid", "--kill-child", "--mount", "--propagation", "private",
                 "--mount-proc", "/bin/sh", "-c", STAGE_SCRIPT, "oomlens-bench-stage",
                 str(meminfo or ""), str(fillers)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE)
            if LinePipe(self.init).line(START_TIMEOUT_S) != "ready":
                raise BenchmarkFailed("the stage's namespaces could not be set up "
                                      "(needs root, unshare and nsenter)")
            self.ns_pid = children(self.init.pid)[0]
            self.entered: list[subprocess.Popen[bytes]] = []
        except BaseException:
            self.box.close()
            raise

    def argv(self, argv: list[str]) -> list[str]:
        return ["nsenter", "-t", str(self.ns_pid), "-p", "-m", "--", *argv]

    def spawn(self, argv: list[str], **popen: int) -> subprocess.Popen[bytes]:
        proc = self.box.spawn(self.argv(argv), **popen)
        self.entered.append(proc)
        return proc

    def close(self) -> None:
        """Kill the namespace's init first: the kernel then kills everything in the
        namespace while unshare and each nsenter (outside it) still live to reap their
        children; killed all at once, a child whose parent died first is left to the
        machine's init as a zombie. Then the sandbox kills what is left and goes."""
        try:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.ns_pid, signal.SIGKILL)
            for proc in (self.init, *self.entered):
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=5)
        finally:
            self.box.close()


class FakeMeminfo:
    """The file bound over /proc/meminfo: this machine's meminfo with MemFree and
    MemAvailable set by the benchmark and no swap. Rewritten in place with one
    pwrite: the tools keep it open and re-read it (earlyoom rewinds its FILE*), so
    it must stay the same inode; every value sits in the kernel's fixed 8-digit
    field, so the length never changes and no ftruncate is needed."""

    def __init__(self, path: Path) -> None:
        self.lines = Path("/proc/meminfo").read_text().splitlines()
        self.total = self._kib("MemTotal") * 1024
        path.write_text(self.render(self.total))
        self.fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)

    def _kib(self, key: str) -> int:
        return next(int(line.split()[1]) for line in self.lines if line.startswith(key + ":"))

    def render(self, available: int) -> str:
        values = {"MemFree": available // 1024, "MemAvailable": available // 1024,
                  "SwapTotal": 0, "SwapFree": 0}
        out = [f"{key + ':':<16}{values[key]:>8} kB" if key in values else line
               for line in self.lines for key in [line.split(":", 1)[0]]]
        return "\n".join(out) + "\n"

    def write(self, available: int) -> float:
        """Set MemAvailable; returns the time just before the write."""
        data = self.render(available).encode()
        written = clock()
        os.pwrite(self.fd, data, 0)
        return written

    def close(self) -> None:
        os.close(self.fd)


class Looks:
    """When a tool reads the fake /proc/meminfo: inotify IN_ACCESS on the file under
    the bind mount, so each tool's real poll interval is measured, not taken from
    its documentation. A wake-up that finds any events counts as one look."""

    def __init__(self, path: Path) -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        self.fd = libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        if self.fd < 0 or libc.inotify_add_watch(self.fd, str(path).encode(), IN_ACCESS) < 0:
            raise BenchmarkFailed(f"inotify on {path}: {os.strerror(ctypes.get_errno())}")
        self.times: list[float] = []

    def drain(self) -> None:
        got = False
        with contextlib.suppress(BlockingIOError):
            while os.read(self.fd, 65536):
                got = True
        if got:
            self.times.append(clock())

    def begin(self) -> None:
        """Forget earlier looks (also queued ones: inotify merges repeated events)."""
        self.drain()
        self.times.clear()

    def gaps(self) -> list[float]:
        return [b - a for a, b in zip(self.times, self.times[1:], strict=False)]

    def close(self) -> None:
        os.close(self.fd)


# --------------------------------------------------------------------------- figures


@dataclass
class Figures:
    """One tool's results (times in s, sizes in bytes)."""

    unavailable: str | None = None
    drop: list[float] = field(default_factory=list)
    ramp: list[float] = field(default_factory=list)
    overshoot: list[float] = field(default_factory=list)
    hold_gaps: list[float] = field(default_factory=list)
    ramp_gaps: list[float] = field(default_factory=list)
    misses: Counter[str] = field(default_factory=Counter)
    kills: int = 0
    cg_latency: list[float] = field(default_factory=list)
    cg_kernel: int = 0  # reps in which the kernel's memcg OOM killer acted
    cg_kernel_after: list[float] = field(default_factory=list)
    cg_reps: int = 0
    idle: tuple[float, int] | None = None  # share of a core, utime+stime ticks
    hwm_kib: int = 0


@dataclass
class Synthetic:
    """One tool in a stage whose /proc/meminfo the benchmark writes."""

    stage: Stage
    meminfo: FakeMeminfo
    looks: Looks
    running: Running

    @property
    def threshold(self) -> int:
        return self.meminfo.total * KILL_PCT // 100

    def victim(self) -> Victim:
        return Victim(self.stage.box, self.stage.argv(victim_argv(VICTIM_BYTES, 0)))


@contextlib.contextmanager
def synthetic_stage(tool: Tool, mount: MemcgMount, tmp: Path) -> Iterator[Synthetic]:
    path = tmp / f"meminfo-{tool.name.replace(' ', '-')}"
    with contextlib.ExitStack() as stack:
        meminfo = FakeMeminfo(path)
        stack.callback(meminfo.close)
        looks = Looks(path)
        stack.callback(looks.close)
        stage = Stage(mount, proc_count(), path)
        stack.callback(stage.close)
        argv = tool.argv(KILL_PCT, WARN_PCT, None, f"sqlite:///{tmp}/guard-synthetic.sqlite")
        yield Synthetic(stage, meminfo, looks, Running(tool, stage, argv))


def hold(st: Synthetic, victim: Victim, seconds: float) -> bool:
    """Wait `seconds` with MemAvailable high; False if the tool killed meanwhile."""
    return victim.term(seconds, st.looks) is None


def drop_rep(st: Synthetic, fig: Figures, rng: random.Random) -> None:
    """(a): MemAvailable from 80 % of MemTotal to 256 MiB below the kill level at a
    random moment (the hold spans a whole second: earlyoom's longest sleep)."""
    high = st.meminfo.total * 8 // 10
    st.meminfo.write(high)
    victim = st.victim()
    try:
        st.looks.begin()
        if not hold(st, victim, rng.uniform(1.2, 2.2)):
            fig.misses["drop: SIGTERM above the threshold"] += 1
            return
        fig.hold_gaps += st.looks.gaps()[1:]  # the first may follow a low-memory sleep
        written = st.meminfo.write(st.threshold - DROP_BELOW)
        arrived = victim.term(REACT_TIMEOUT_S, st.looks)
        if arrived is None:
            fig.misses[f"drop: no SIGTERM within {REACT_TIMEOUT_S:g} s"] += 1
        else:
            fig.drop.append(arrived - written)
    finally:
        st.meminfo.write(high)
        victim.release()


def ramp_rep(st: Synthetic, fig: Figures, rng: random.Random) -> None:
    """(b): from 3 GiB above the kill level down at 3 GiB/s, rewritten every ~1 ms
    (the value from the clock, so the rate holds when a tick is late), never below
    earlyoom's SIGKILL level (half the threshold) so that it only ever sends SIGTERM."""
    start = st.threshold + RAMP_HEADROOM
    floor = st.threshold // 2 + 64 * MIB
    st.meminfo.write(start)
    victim = st.victim()
    try:
        if not hold(st, victim, rng.uniform(0.2, 1.2)):
            fig.misses["ramp: SIGTERM above the threshold"] += 1
            return
        st.looks.begin()
        writes: list[tuple[float, int]] = []
        crossing, arrived, t0 = None, None, clock()
        while arrived is None:
            value = max(floor, start - int(RAMP_RATE * (clock() - t0))) // 1024 * 1024
            written = st.meminfo.write(value)
            writes.append((written, value))
            if crossing is None and value < st.threshold:
                crossing = written
            if crossing is not None and written - crossing > REACT_TIMEOUT_S:
                fig.misses[f"ramp: no SIGTERM within {REACT_TIMEOUT_S:g} s"] += 1
                return
            arrived = victim.term(max(0.0, written + TICK_S - clock()), st.looks)
        if crossing is None or arrived < crossing:
            fig.misses["ramp: SIGTERM above the threshold"] += 1
            return
        last = next(value for when, value in reversed(writes) if when <= arrived)
        fig.ramp.append(arrived - crossing)
        fig.overshoot.append(st.threshold - last)
        fig.ramp_gaps += st.looks.gaps()
    finally:
        st.meminfo.write(start)
        victim.release()


def synthetic(mount: MemcgMount, tmp: Path, reps: int, figures: dict[str, Figures]) -> None:
    """(a) then (b) for every tool that starts, reps interleaved between the tools,
    each waiting in its own stage while the other is measured."""
    rng = random.Random(SEED)
    with contextlib.ExitStack() as stack:
        stages: dict[str, Synthetic] = {}
        for tool in TOOLS:
            try:
                stages[tool.name] = stack.enter_context(synthetic_stage(tool, mount, tmp))
            except Unavailable as err:
                figures[tool.name].unavailable = str(err)
        for scenario, rep in (("a: sudden drop", drop_rep), ("b: 3 GiB/s ramp", ramp_rep)):
            log(f"7: guard ({scenario}): {reps} reps per tool")
            for _ in range(reps):
                for name, st in stages.items():
                    if figures[name].unavailable is None:
                        rep(st, figures[name], rng)
                        figures[name].unavailable = st.running.failure()
        for name, st in stages.items():
            if figures[name].unavailable is None:
                figures[name].kills = st.running.kills()
                figures[name].hwm_kib = st.running.hwm_kib()


# --------------------------------------------------------------------------- (c), idle


def cgroup_rep(stage: Stage, box: SandboxMemcg, usage_fd: int, fig: Figures) -> None:
    """(c): the hog grows at 1 GiB/s from nothing; memory.usage_in_bytes (v2:
    memory.current) is read every ~1 ms for the crossing of 80 % of the limit (the
    guard's 20 % available); then whoever acts first: a SIGTERM, or the kernel's
    memcg OOM killer (its oom_kill counter moves)."""
    level = HOG_LIMIT * (100 - CGROUP_KILL_PCT) // 100
    before = box.oom_kill_count()
    hog = Victim(box, stage.argv(victim_argv(0, HOG_RATE)))
    try:
        hog.send("grow")
        crossing, deadline = None, clock() + REACT_TIMEOUT_S
        while clock() < deadline:
            now = clock()
            if crossing is None and int(os.pread(usage_fd, 64, 0)) > level:
                crossing = now
            arrived = hog.term(TICK_S)
            if arrived is not None:
                if crossing is None:
                    fig.misses["memcg: SIGTERM before the crossing"] += 1
                else:
                    fig.cg_latency.append(arrived - crossing)
                break
            if box.oom_kill_count() > before:
                if crossing is not None:
                    fig.cg_kernel_after.append(clock() - crossing)
                break
        fig.cg_kernel += box.oom_kill_count() > before
        fig.cg_reps += 1
    finally:
        hog.release()
        box.kill_all()


def cgroup_hog(mount: MemcgMount, tmp: Path, reps: int, figures: dict[str, Figures]) -> None:
    usage = "memory.usage_in_bytes" if mount.version == 1 else "memory.current"
    for tool in TOOLS:
        fig = figures[tool.name]
        if fig.unavailable is not None:
            continue
        log(f"7: guard (c: memcg hog) with {tool.name}: {reps} reps")
        with contextlib.ExitStack() as stack:
            box = stack.enter_context(SandboxMemcg(mount, "oomlens-bench-guard-hog-", HOG_LIMIT))
            usage_fd = os.open(os.path.join(box.directory, usage), os.O_RDONLY | os.O_CLOEXEC)
            stack.callback(os.close, usage_fd)
            stage = Stage(mount, proc_count())
            stack.callback(stage.close)
            try:
                running = Running(tool, stage, tool.argv(
                    CGROUP_KILL_PCT, CGROUP_WARN_PCT, box.path,
                    f"sqlite:///{tmp}/guard-cgroup.sqlite"))
            except Unavailable as err:
                fig.unavailable = str(err)
                continue
            for _ in range(reps):
                cgroup_rep(stage, box, usage_fd, fig)
                fig.unavailable = running.failure()
                if fig.unavailable is not None:
                    break
                time.sleep(1.1)  # past the guard's default --kill-interval of 1 s


def idle(mount: MemcgMount, tmp: Path, seconds: float, figures: dict[str, Figures]) -> None:
    """Both tools at once, each in its own stage with the real /proc/meminfo and
    thresholds far below what is available (1 %)."""
    log(f"7: guard: idle CPU over {seconds:g} s")
    with contextlib.ExitStack() as stack:
        running: dict[str, Running] = {}
        for tool in (*TOOLS, *IDLE_ONLY):
            if figures.setdefault(tool.name, Figures()).unavailable is not None:
                continue
            stage = Stage(mount, proc_count())
            stack.callback(stage.close)
            try:
                running[tool.name] = Running(tool, stage, tool.argv(
                    IDLE_KILL_PCT, IDLE_WARN_PCT, None, f"sqlite:///{tmp}/guard-idle.sqlite"))
            except Unavailable as err:
                figures[tool.name].unavailable = str(err)
        time.sleep(1)
        before = {name: r.cpu() for name, r in running.items()}
        time.sleep(seconds)
        for name, r in running.items():
            figures[name].unavailable = r.failure()
            if figures[name].unavailable is None:
                (ns0, ticks0), (ns1, ticks1) = before[name], r.cpu()
                figures[name].idle = ((ns1 - ns0) / 1e9 / seconds, ticks1 - ticks0)


def run(args: argparse.Namespace) -> Part:
    if os.geteuid() != 0 or not (shutil.which("unshare") and shutil.which("nsenter")):
        raise BenchmarkFailed("needs root and util-linux's unshare and nsenter")
    mount = find_memcg_mount()
    if mount is None:
        raise BenchmarkFailed("no memory cgroup controller")
    figures = {tool.name: Figures(unavailable=tool.missing()) for tool in TOOLS}
    with tempfile.TemporaryDirectory(prefix="oomlens-bench-guard-") as tmp:
        synthetic(mount, Path(tmp), args.guard_reps, figures)
        cgroup_hog(mount, Path(tmp), args.guard_reps, figures)
        idle(mount, Path(tmp), args.idle_seconds, figures)
    base = figures[EARLYOOM.name]
    if base.unavailable is None and not (base.drop and base.ramp):
        raise BenchmarkFailed(f"earlyoom was never measured: misses {dict(base.misses)}")
    return report(figures, args.guard_reps, args.idle_seconds, tool_version(["earlyoom", "-v"]))


# --------------------------------------------------------------------------- report


def _cells(samples: list[float]) -> list[str]:
    """median, p90, max (nearest rank), or dashes when nothing was measured."""
    if not samples:
        return ["—", "—", "—"]
    return [fmt_ms(statistics.median(samples)), fmt_ms(percentile(samples, 0.9)),
            fmt_ms(max(samples))]


def _mib(size: float) -> str:
    return f"{size / MIB:.0f} MiB"


def _ratio(guard: float | None, base: float | None) -> str:
    return f"{guard / base:.2f}x" if guard is not None and base else "n/a"


def _median(samples: list[float]) -> float | None:
    return statistics.median(samples) if samples else None


def _idle_text(fig: Figures) -> str:
    if fig.idle is None:
        return "—"
    share, ticks = fig.idle
    return f"{share * 100:.4f}% ({ticks} tick{'' if ticks == 1 else 's'})"


def latency_table(figures: dict[str, Figures], reps: int) -> list[str]:
    rows = []
    for label, key in ((f"(a) sudden drop to {_mib(DROP_BELOW)} below {KILL_PCT}%", "drop"),
                       (f"(b) {RAMP_RATE // GIB} GiB/s ramp through {KILL_PCT}%", "ramp")):
        for name, fig in figures.items():
            samples: list[float] = getattr(fig, key)
            if fig.unavailable is not None and not samples:
                rows.append([label, name, "—", "not available", "—", "—", "—"])
                continue
            over = (f"{_mib(statistics.median(fig.overshoot))} ({_mib(max(fig.overshoot))})"
                    if key == "ramp" and fig.overshoot else "—")
            rows.append([label, name, f"{len(samples)} of {reps}", *_cells(samples), over])
    return md_table(["scenario", "tool", "measured", "median", "p90", "max",
                     "overshoot: median (max)"], rows, "llrrrrr")


def ratio_table(guard: Figures, base: Figures) -> list[str]:
    def p90(samples: list[float]) -> float | None:
        return percentile(samples, 0.9) if samples else None

    def share(fig: Figures) -> float | None:
        return fig.idle[0] if fig.idle else None

    rows = [("(a) sudden drop, median", _median(guard.drop), _median(base.drop)),
            ("(a) sudden drop, p90", p90(guard.drop), p90(base.drop)),
            ("(b) ramp, median", _median(guard.ramp), _median(base.ramp)),
            ("(b) ramp, p90", p90(guard.ramp), p90(base.ramp)),
            ("(b) ramp, overshoot median", _median(guard.overshoot), _median(base.overshoot)),
            ("idle CPU", share(guard), share(base)),
            ("RSS (VmHWM)", float(guard.hwm_kib) or None, float(base.hwm_kib) or None)]
    return md_table(["measure", "guard ÷ earlyoom"],
                    [[label, _ratio(g, b)] for label, g, b in rows], "lr")


def cgroup_table(figures: dict[str, Figures]) -> list[str]:
    rows = []
    for name, fig in figures.items():
        if not fig.cg_reps:
            rows.append([name, "—", "not available", "—", "—", "—", "—", "—"])
            continue
        after = _median(fig.cg_kernel_after)
        rows.append([name, str(fig.cg_reps), str(len(fig.cg_latency)), str(fig.cg_kernel),
                     *_cells(fig.cg_latency), fmt_ms(after) if after is not None else "—"])
    return md_table(["tool", "reps", "SIGTERM first", "kernel memcg OOM kills",
                     "crossing → SIGTERM: median", "p90", "max",
                     "crossing → kernel kill: median"], rows, "lrrrrrrr")


def behaviour_table(figures: dict[str, Figures]) -> list[str]:
    rows = []
    for name, fig in figures.items():
        if fig.unavailable is not None and not fig.drop:
            rows.append([name, "—", "—", "—", "—", "—", "not available"])
            continue
        hold, ramp = _median(fig.hold_gaps), _median(fig.ramp_gaps)
        rows.append([name, fmt_ms(hold) if hold is not None else "—",
                     fmt_ms(ramp) if ramp is not None else "—",
                     _idle_text(fig), f"{fig.hwm_kib / 1024:.1f} MiB" if fig.hwm_kib else "—",
                     str(fig.kills), ", ".join(f"{n} {why}" for why, n in fig.misses.items())
                     or "none"])
    return md_table(["tool", "look interval at 80% available (median)",
                     "look interval in the ramp (median)", "idle CPU", "RSS (VmHWM)",
                     "kills sent in (a)+(b)", "missed or wrong reps"], rows, "lrrrrrl")


def report(figures: dict[str, Figures], reps: int, idle_seconds: float,
           version: str) -> Part:
    guard, base = figures[GUARD.name], figures[EARLYOOM.name]
    contenders = {tool.name: figures[tool.name] for tool in TOOLS}
    earlyoom = " ".join(earlyoom_argv(KILL_PCT, WARN_PCT, None, ""))
    lines = ["## 7. `oomlens guard` against earlyoom: threshold crossing to SIGTERM", "",
             f"earlyoom: `{version}` (Debian package), `{earlyoom}`; oomlens guard: "
             f"`oomlens guard --json --warn-below {WARN_PCT}% --kill-below {KILL_PCT}%`. "
             "Each in a pid + mount namespace of its own where /proc/meminfo is a file the "
             "benchmark writes (MemTotal as this machine's, no swap); the victim holds "
             f"{_mib(VICTIM_BYTES)}; the reps of the two tools interleaved.", ""]
    lines += latency_table(contenders, reps)
    for name, fig in contenders.items():
        if fig.unavailable is not None:
            lines += ["", f"{name} not measured or stopped: {fig.unavailable}"]
    lines += ["", "Ratios (below 1 = the guard is faster or smaller):", ""]
    lines += ratio_table(guard, base)
    lines += ["", f"(c) A hog growing at {HOG_RATE // GIB} GiB/s in a {_mib(HOG_LIMIT)} memory "
              f"cgroup (no swap); the guard with `--cgroup PATH --kill-below "
              f"{CGROUP_KILL_PCT}%`, earlyoom with `-m {CGROUP_KILL_PCT},"
              f"{CGROUP_KILL_PCT / 2:g}` (it has no cgroup option; the system has plenty "
              f"free). Crossing: usage above {100 - CGROUP_KILL_PCT}% of the limit.", ""]
    lines += cgroup_table(contenders)
    lines += ["", f"How each tool behaved (looks: its reads of /proc/meminfo; idle: "
              f"{idle_seconds:g} s with the real /proc/meminfo and plenty free):", ""]
    lines += behaviour_table(figures)
    return Part(section=lines, targets=targets(guard, base), notes=notes(figures),
                how=how())


def targets(guard: Figures, base: Figures) -> list[str]:
    if guard.unavailable is not None and not guard.drop:
        why = f"**NOT met** — the guard was not measured: {guard.unavailable}"
        return [f"- guard, {what}: {why}." for what in (
            "ramp median under 20 ms with overshoot no larger than earlyoom's",
            "sudden drop median better than earlyoom's", "idle CPU no more than earlyoom's",
            "RSS under 20 MB")]
    ramp, over = _median(guard.ramp), _median(guard.overshoot)
    base_over, drop, base_drop = _median(base.overshoot), _median(guard.drop), _median(base.drop)
    ramp_ok = (ramp is not None and over is not None and base_over is not None
               and ramp < TARGET_RAMP_MEDIAN_S and over <= base_over)
    drop_ok = drop is not None and base_drop is not None and drop < base_drop
    idle_ok = guard.idle is not None and base.idle is not None and guard.idle[0] <= base.idle[0]

    def ms(value: float | None) -> str:
        return fmt_ms(value) if value is not None else "—"

    def mib(value: float | None) -> str:
        return _mib(value) if value is not None else "—"

    return [
        f"- guard, ramp median under 20 ms with overshoot no larger than earlyoom's: "
        f"{verdict(ramp_ok)} — median {ms(ramp)}, overshoot {mib(over)}; earlyoom "
        f"{ms(_median(base.ramp))}, overshoot {mib(base_over)}.",
        f"- guard, sudden drop median better than earlyoom's: {verdict(drop_ok)} — "
        f"{ms(drop)} vs {ms(base_drop)}.",
        f"- guard, idle CPU no more than earlyoom's: {verdict(idle_ok)} — "
        f"{_idle_text(guard)} vs {_idle_text(base)} of a core.",
        f"- guard, RSS under 20 MB: {verdict(0 < guard.hwm_kib < TARGET_RSS_KIB)} — peak "
        f"{guard.hwm_kib / 1024:.1f} MiB ({guard.hwm_kib * 1024 / 1e6:.1f} MB) after the (a) "
        "and (b) kills.",
    ]


def notes(figures: dict[str, Figures]) -> list[str]:
    base, floor = figures[EARLYOOM.name], figures[IDLE_ONLY[1].name]
    out = []
    if base.idle is not None and floor.idle is not None:
        out.append(
            f"Idle CPU is the cost of waking up. earlyoom (C) wakes once a second and its "
            f"whole look costs {base.idle[0] * 1e6:.0f} µs of CPU per second; a Python "
            f"process that only wakes, reads /proc/meminfo and sleeps again costs "
            f"{floor.idle[0] * 0.5 * 1e6:.0f} µs per wake (the floor row). So a Python guard "
            "looking twice a second, as the default --max-interval does to win the sudden "
            "drop, cannot idle as cheaply as earlyoom, and one looking once a second "
            f"(--max-interval {SLOW_CEILING_S:g}) still does not, and gives up the sudden "
            "drop's advantage.")
    hold, ramp = _median(base.hold_gaps), _median(base.ramp_gaps)
    if hold is not None and ramp is not None:
        out.append(
            f"earlyoom looks at /proc/meminfo every {fmt_ms(hold)} (median) with 80% "
            f"available and every {fmt_ms(ramp)} during the ramp: its sleep is its headroom "
            "over an assumed fill rate of 6000 MiB/s, clamped to 100-1000 ms, so a sudden "
            "drop waits out up to a second and a 3 GiB/s ramp up to 100 ms. Its swap rule: "
            "it acts only when available memory *and* free swap are both under their "
            "levels, and with no swap it counts free swap as 0 %, so on this swapless "
            "machine the swap half always holds.")
    return out


def how() -> list[str]:
    return [
        "- guard vs earlyoom: each tool runs in a stage of its own: a sandbox memcg "
        f"({_mib(STAGE_LIMIT)}) holding a pid namespace and a private mount namespace "
        "(`unshare --pid --mount --propagation private --mount-proc`; tools and victims "
        "enter with `nsenter`) with as many filler `sleep`s as this machine has processes, "
        "so a kill can never reach a process outside and the victim scan is as long as on "
        "the host. (a) and (b) bind a file over /proc/meminfo there, rewritten in place "
        "(one pwrite, fixed-width fields); the victim is a python holding "
        f"{_mib(VICTIM_BYTES)} whose SIGTERM handler writes CLOCK_MONOTONIC to a pipe "
        "(the same victim for both tools). (a): MemAvailable from 80% of MemTotal to "
        f"{_mib(DROP_BELOW)} below the {KILL_PCT}% kill level after a random 1.2-2.2 s; "
        "latency = SIGTERM arrival - the time just before the write. (b): from 3 GiB "
        "above the kill level down at 3 GiB/s, rewritten every ~1 ms after a random "
        "0.2-1.2 s; latency = SIGTERM arrival - the write of the first value below the "
        "level; overshoot = the level - the last value written before SIGTERM arrived. "
        "After each SIGTERM MemAvailable goes back up before the victim may exit. Looks "
        "are inotify IN_ACCESS events on the bound file. p90 is the nearest rank.",
        f"- guard (c): a python growing by 1 MiB steps at {HOG_RATE // GIB} GiB/s in a "
        f"{_mib(HOG_LIMIT)} memcg without swap, inside the tool's pid namespace; its "
        "usage (memory.usage_in_bytes, v2 memory.current) read every ~1 ms; latency from "
        f"the first read above {100 - CGROUP_KILL_PCT}% of the limit to SIGTERM arriving, "
        "the kernel's kills from the memcg's oom_kill counter. Idle: both tools at once "
        "for the idle window with thresholds of 1%, CPU time from "
        "/proc/PID/task/*/schedstat (ns; utime+stime ticks of 10 ms in brackets: one "
        "tick over 60 s is already 0.017% of a core). RSS: VmHWM after (a) and (b).",
    ]
