"""The scan benchmark's extra processes: `count` x `sleep 600`, started by
bench/sleepers.py inside a sandbox memory cgroup (oomlens.system.sandbox.SandboxMemcg,
512 MiB, no swap) when running as root, and always killed, reaped and removed after.

Cleanup has three layers: the launcher kills and reaps its sleepers when its stdin
closes (also when this process dies); `sleepers()` then SIGKILLs any survivor, matched
by pid and start time (orphans come back to us: we are a child subreaper); and
SandboxMemcg.close() kills whatever is still in the cgroup and removes it.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from benchlib import BENCH_DIR, log

from oomlens.errors import OomlensError
from oomlens.system.memcg import MemcgMount, find_memcg_mount
from oomlens.system.sandbox import MAX_LIMIT_BYTES, SandboxMemcg

LAUNCHER = BENCH_DIR / "sleepers.py"
SANDBOX_PREFIX = "oomlens-bench-"  # the cgroup is oomlens-bench-<our pid>-<random>
SANDBOX_LIMIT = MAX_LIMIT_BYTES  # 512 MiB
PR_SET_CHILD_SUBREAPER = 36


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


def _sandbox_mount() -> tuple[MemcgMount | None, str | None]:
    """The memory cgroup mount to make the sandbox in, else why there is none."""
    if os.geteuid() != 0:
        return None, "not root"
    try:
        mount = find_memcg_mount()
    except OSError as err:
        return None, f"cannot read /proc/self/mountinfo: {err.strerror}"
    if mount is None:
        return None, "no memory cgroup controller"
    return mount, None


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


def _reap_orphans(pids: list[int]) -> None:
    """Collect sleepers that were reparented to us and died (zombies)."""
    for pid in pids:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)


def remove_stale_cgroups() -> list[str]:
    """Empty sandbox cgroups left by a bench run that was SIGKILLed (its pid, in the
    name, is gone). Non-empty ones are left alone and reported."""
    notes: list[str] = []
    mount, _ = _sandbox_mount()
    if mount is None:
        return notes
    for path in Path(mount.fs_path(mount.prefix)).glob(SANDBOX_PREFIX + "*"):
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


def _make_sandbox(info: SandboxInfo) -> SandboxMemcg | None:
    mount, why_not = _sandbox_mount()
    if mount is not None:
        box = SandboxMemcg(mount, SANDBOX_PREFIX, SANDBOX_LIMIT)
        try:
            box.create()
        except OomlensError as err:
            why_not = f"cannot create a sandbox memcg: {err}"
        else:
            info.cgroup = Path(box.directory)
            limit_file = "memory.limit_in_bytes" if mount.version == 1 else "memory.max"
            info.cgroup_note = (f"sandbox memcg v{mount.version} {box.directory}, "
                                f"{limit_file} {SANDBOX_LIMIT >> 20} MiB")
            return box
    info.cgroup_note = f"no sandbox cgroup ({why_not}); sleepers use ~0.2 MiB each"
    log(f"note: {info.cgroup_note}")
    return None


def _read_peak(box: SandboxMemcg, info: SandboxInfo) -> None:
    """Peak usage and how often the limit was hit (v1: failcnt; v2: `max` events)."""
    directory = Path(box.directory)
    with contextlib.suppress(OSError, ValueError):
        if box.mount.version == 1:
            info.peak_usage = int((directory / "memory.max_usage_in_bytes").read_text())
            info.failcnt = int((directory / "memory.failcnt").read_text())
        else:
            info.peak_usage = int((directory / "memory.peak").read_text())
            events = dict(line.split() for line in
                          (directory / "memory.events").read_text().splitlines())
            info.failcnt = int(events.get("max", 0))


def _stop_launcher(launcher: subprocess.Popen[bytes]) -> None:
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


def _await_sleepers(launcher: subprocess.Popen[bytes]) -> dict[int, int]:
    """The sleepers the launcher reports started: pid -> start time in ticks."""
    assert launcher.stdout is not None
    line = launcher.stdout.readline().decode("ascii", "replace").split()
    if not line or line[0] != "READY":
        raise RuntimeError(f"sleeper launcher failed (exit {launcher.poll()})")
    started = {}
    for pid in map(int, line[1:]):
        st = _start_time(pid)
        if st is not None and st[0] == "sleep":
            started[pid] = st[1]
    return started


@contextlib.contextmanager
def sleepers(count: int) -> Iterator[SandboxInfo]:
    """`count` extra `sleep 600` processes for the duration of the block; always gone
    (killed, reaped, sandbox cgroup removed) when it exits, however it exits."""
    info = SandboxInfo(requested=count)
    box = _make_sandbox(info)
    launcher: subprocess.Popen[bytes] | None = None
    started: dict[int, int] = {}
    try:
        argv = [sys.executable, str(LAUNCHER), str(count)]
        pipe = subprocess.PIPE
        # In the sandbox the launcher joins the cgroup before exec, so every
        # sleeper it starts is born, and charged, inside it.
        launcher = (box.spawn(argv, stdin=pipe, stdout=pipe) if box is not None
                    else subprocess.Popen(argv, stdin=pipe, stdout=pipe))
        started.update(_await_sleepers(launcher))
        info.started = len(started)
        if info.started == 0:
            raise RuntimeError("no sleeper process could be started")
        if info.started < count:
            info.problems.append(f"only {info.started} of {count} sleepers running")
        yield info
    finally:
        if box is not None:
            _read_peak(box, info)
        if launcher is not None:
            _stop_launcher(launcher)
        # Backstop if the launcher could not clean up after itself.
        info.left_alive = sum(_kill_if_ours(pid, ticks) for pid, ticks in started.items())
        if info.left_alive:
            info.problems.append(f"{info.left_alive} sleepers outlived the launcher "
                                 "(killed by the backstop)")
        if box is not None:
            try:
                box.close()
            except OomlensError as err:
                info.cgroup_removed = False
                info.problems.append(f"could not remove {box.directory}: {err}")
        _reap_orphans(list(started))
        still = sum(1 for pid, ticks in started.items()
                    if (st := _start_time(pid)) is not None and st[1] == ticks)
        if still:
            info.problems.append(f"{still} sleepers still alive after cleanup")
