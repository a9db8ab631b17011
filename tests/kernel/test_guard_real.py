"""`oomlens guard` as a real daemon (`python -m oomlens guard --json`, a subprocess)
guarding sandbox memcgs, against real processes holding real memory: it kills before
the kernel's memcg OOM killer would (the cgroup's oom_kill stays 0), picks the
victim the kernel's order and the policy say, spares avoided and protected ones,
sends nothing in a dry run, escalates to SIGKILL after the grace period, and alerts
instead of picking a bystander.

Most scenarios start their processes first, so that the domain is already past the
kill level when the guard takes its first look; the race against the kernel grows
a hog while the guard watches. Only the sandbox is guarded (`--no-system`).
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from daemon import LINE_WITHIN_S, Daemon

from oomlens.store.db import EventQuery, open_store
from oomlens.store.record import EventKind
from oomlens.system.sandbox import Hog, SandboxMemcg

pytestmark = pytest.mark.kernel

MIB = 1 << 20
LIMIT = 256 * MIB
KILL_BELOW = "20%"  # 51.2 MiB of 256 MiB
# Holds SIZE MiB, ignores SIGTERM, says "ready" once resident.
STUBBORN = r"""
import mmap, signal, sys
signal.signal(signal.SIGTERM, signal.SIG_IGN)
size = int(sys.argv[1]) << 20
keep = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE)
for off in range(0, size, mmap.PAGESIZE):
    keep[off] = 1
print("ready", flush=True)
sys.stdin.readline()
"""

Start = Callable[..., Daemon]


@pytest.fixture
def guard(tmp_path: Path) -> Iterator[Start]:
    """`guard(box, *options)` -> a running `oomlens guard --json` for `box` only,
    past its first look; killed at teardown."""
    started: list[Daemon] = []

    def start(box: SandboxMemcg, *options: str) -> Daemon:
        argv = [sys.executable, "-m", "oomlens", "guard", "--json", "--no-system",
                "--cgroup", box.path, "--kill-below", KILL_BELOW, "--warn-below", "30%",
                "--store", f"sqlite:///{tmp_path}/events.sqlite", *options]
        daemon = Daemon(argv, tmp_path / f"guard-{len(started)}.err")
        started.append(daemon)
        daemon.wait_for("started")
        return daemon

    yield start
    for daemon in started:
        daemon.kill()


def stubborn(box: SandboxMemcg, size_mib: int) -> subprocess.Popen[bytes]:
    child = box.spawn([sys.executable, "-I", "-S", "-c", STUBBORN, str(size_mib)],
                      stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert child.stdout is not None and child.stdout.readline().strip() == b"ready"
    return child


def died_of(process: subprocess.Popen[bytes], timeout: float = LINE_WITHIN_S) -> int:
    return process.wait(timeout=timeout)


def hogs(box: SandboxMemcg, *sizes_and_adjs: tuple[int, int]) -> list[Hog]:
    return [box.start_hog(size, adj) for size, adj in sizes_and_adjs]


def test_a_growing_hog_is_killed_before_the_kernels_memcg_oom_killer_acts(
        guard: Start, sandbox: Callable[..., SandboxMemcg], tmp_path: Path) -> None:
    box = sandbox(LIMIT)
    bystander = box.start_hog(16)
    grower = box.start_hog(8)
    daemon = guard(box, "--grace", "1")
    grower.send("grow")  # 1 MiB at a time until the cgroup's oom_kill counter moves
    assert died_of(grower.process) == -signal.SIGTERM
    kill = daemon.wait_for("kill")
    assert daemon.stop() == 0
    assert box.oom_kill_count() == 0  # the kernel never had to
    assert (kill["pid"], kill["dry_run"], kill["domain"]) == (grower.pid, False, box.path)
    assert kill["available_bytes"] < kill["threshold_bytes"] == int(LIMIT * 0.2)
    assert kill["outcome"]["exited_on_term"] is True
    assert bystander.process.poll() is None
    with open_store(f"sqlite:///{tmp_path}/events.sqlite", create=False) as store:
        (event,) = store.events(EventQuery(kind=EventKind.GUARD))
    assert (event.record.victim_pid, event.record.cgroup) == (grower.pid, box.path)
    assert event.record.detail["triggers"] == ["memory"]


def test_the_victim_is_the_domains_first_in_the_kernels_order(
        guard: Start, sandbox: Callable[..., SandboxMemcg]) -> None:
    box = sandbox(LIMIT)
    # In a 256 MiB domain oom_score_adj 700 weighs 179 MiB (mm/oom_kill.c:
    # oom_badness(): adj * totalpages / 1000): the 20 MiB process outranks the 130 MiB one.
    small, big, favoured = hogs(box, (60, 0), (130, 0), (20, 700))
    daemon = guard(box)
    kill = daemon.wait_for("kill")
    assert kill["pid"] == favoured.pid
    assert died_of(favoured.process) == -signal.SIGTERM
    assert daemon.stop() == 0
    assert small.process.poll() is None and big.process.poll() is None
    assert box.oom_kill_count() == 0


def test_avoided_and_protected_processes_survive(
        guard: Start, sandbox: Callable[..., SandboxMemcg], tmp_path: Path) -> None:
    box = sandbox(LIMIT)
    small, big, favoured = hogs(box, (70, 0), (120, 0), (20, 700))
    policy = tmp_path / "policy.toml"
    # A hog's command line holds its size in bytes and its oom_score_adj.
    policy.write_text(f'[[rule]]\nname = "keep"\ncmdline = " {120 * MIB} 0 "\n'
                      'protect = true\n')
    # `favoured` avoided by --avoid, `big` protected by the policy: the small one is
    # all that is acceptable.
    daemon = guard(box, "--avoid", f" {20 * MIB} 700 ", "--policy", str(policy),
                   "--explain")
    kill = daemon.wait_for("kill")
    assert kill["pid"] == small.pid, kill["why"]
    assert died_of(small.process) == -signal.SIGTERM
    assert daemon.stop() == 0
    assert favoured.process.poll() is None and big.process.poll() is None
    assert any("avoid" in line for line in kill["why"])


def test_a_dry_run_decides_and_sends_nothing(
        guard: Start, sandbox: Callable[..., SandboxMemcg]) -> None:
    box = sandbox(LIMIT)
    (hog,) = hogs(box, (210, 0))
    daemon = guard(box, "--dry-run")
    kill = daemon.wait_for("kill")
    time.sleep(0.3)
    assert daemon.stop() == 0
    assert (kill["pid"], kill["dry_run"], kill["outcome"]) == (hog.pid, True, None)
    assert hog.process.poll() is None  # alive: no signal was sent


def test_a_process_that_ignores_sigterm_is_sigkilled_after_the_grace_period(
        guard: Start, sandbox: Callable[..., SandboxMemcg]) -> None:
    box = sandbox(LIMIT)
    child = stubborn(box, 210)
    daemon = guard(box, "--grace", "0.5")
    kill = daemon.wait_for("kill")
    assert died_of(child) == -signal.SIGKILL
    assert daemon.stop() == 0
    assert kill["pid"] == child.pid
    outcome: dict[str, Any] = kill["outcome"]
    assert (outcome["exited_on_term"], outcome["sigkill"]) == (False, True)
    assert outcome["seconds"] >= 0.5


def test_with_nothing_acceptable_it_alerts_and_kills_no_bystander(
        guard: Start, sandbox: Callable[..., SandboxMemcg]) -> None:
    box = sandbox(LIMIT)
    (hog,) = hogs(box, (210, 0))
    daemon = guard(box, "--avoid", ".")
    alert = daemon.wait_for("nothing_to_kill")
    time.sleep(0.3)
    assert daemon.stop() == 0
    assert hog.process.poll() is None
    assert "bystander" in " ".join(alert["why"])
    assert not daemon.entries("kill")


def test_invalid_thresholds_refuse_to_start_with_one_line(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "oomlens", "guard", "--kill-below", "12x"],
                          capture_output=True, text=True, check=False, timeout=LINE_WITHIN_S)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.count("\n") == 1 and "--kill-below" in done.stderr


def test_kill_group_takes_the_victims_whole_cgroup_and_nothing_else(
        guard: Start, sandbox: Callable[..., SandboxMemcg]) -> None:
    box = sandbox(LIMIT)
    service = sandbox(200 * MIB, parent=box.path)
    main, helper = service.start_hog(120), service.start_hog(40)
    outside = box.start_hog(40)
    daemon = guard(box, "--kill-group")
    kill = daemon.wait_for("kill")
    assert kill["pid"] == main.pid
    assert kill["group"] == {"cgroup": service.path, "pids": [helper.pid]}
    assert died_of(main.process) == -signal.SIGTERM
    assert died_of(helper.process) == -signal.SIGTERM
    assert daemon.stop() == 0
    assert outside.process.poll() is None
