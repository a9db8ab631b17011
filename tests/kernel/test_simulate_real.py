"""`oomlens simulate` against the kernel: real commands in real throwaway memory
cgroups, real OOM kills, and oomlens's predictions checked against whom the kernel
killed (its kill line, its task table, and who died of SIGKILL).

- `simulate run`: a command that allocates past its limit gets the kernel's kill
  reported with the report's analysis and the prediction matched; one that stays
  below gets its peak and headroom; SIGINT, SIGTERM and an error mid-run leave no
  cgroup and no process behind.
- `simulate oom`: on sandboxes with processes of several sizes and oom_score_adj
  values (>= 0: this machine's root lacks CAP_SYS_RESOURCE), the predicted victim is
  the one the kernel kills, the helper included; without --yes-kill nothing happens.
- `simulate order`: agrees with the kernel in the scenarios of
  test_victim_prediction.py, with a what-if value the kernel is then given, and with
  two processes on one mm, which the kernel kills together.

After every test no `oomlens-simulate-*` cgroup of this session (or of an oomlens
that is gone) may remain.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from procutil import pid_alive
from test_oomadj_real import _CLONE_VM_HELPER
from test_report_real import await_report_budget
from test_victim_prediction import (
    SAME_STATE_TOLERANCE,
    hogs_setup,
    make_scenario,
    parse_report,
    points,
)

from oomlens.cli.env import Env, ExitStatus
from oomlens.cli.main import main
from oomlens.errors import OomlensError
from oomlens.kernel.select import rank_tasks
from oomlens.simulate import sandboxrun
from oomlens.system.memcg import MemcgMount, walk
from oomlens.system.sandbox import MIB, Hog, SandboxMemcg

pytestmark = pytest.mark.kernel
SandboxFactory = Callable[..., SandboxMemcg]  # the `sandbox` fixture (tests/conftest.py)

PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
SIMULATE_PREFIX = "oomlens-simulate-"
ORDER_SCENARIOS = (0, 3, 5, 9)
EVERYTHING = "1T"  # --need: the whole kill order

# The command of the OOM run: a static process of 40 MiB, then (once it is resident)
# a grower in a 64 MiB cgroup. At the first OOM the grower holds less than 24 MiB, so
# the kernel kills the static one; the grower then fills the room and is killed too.
TWO_PROCESSES = """
python3 -c "
open('/proc/self/comm', 'w').write('oomlens-static')
x = b'1' * (40 << 20)
open('$1', 'w').close()
import time; time.sleep(60)" &
while [ ! -e "$1" ]; do sleep 0.01; done
python3 -c "
open('/proc/self/comm', 'w').write('oomlens-grower')
chunks = []
while True:
    chunks.append(b'1' * (1 << 20))"
wait
"""


# -- harness ------------------------------------------------------------------------------


def simulate(*argv: str) -> tuple[int, Any, str]:
    """`oomlens simulate ARGV --json` in this process: (status, document, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    env = Env(out, err, stdout_isatty=False, colour=False, columns=120)
    status = main(["simulate", argv[0], "--json", *argv[1:]], env)
    text = out.getvalue()
    return status, json.loads(text) if text else None, err.getvalue()


def ours(mount: MemcgMount) -> list[str]:
    """`oomlens-simulate-*` cgroups made by this process or by an oomlens that is gone."""
    left = []
    for _path, directory in walk(mount):
        name = os.path.basename(directory)
        if not name.startswith(SIMULATE_PREFIX):
            continue
        creator = name.removeprefix(SIMULATE_PREFIX).removeprefix("helper-").split("-")[0]
        if not creator.isdigit() or int(creator) == os.getpid() or not pid_alive(int(creator)):
            left.append(directory)
    return left


@pytest.fixture(autouse=True)
def no_cgroup_left(memcg_mount: MemcgMount) -> Iterator[None]:
    yield
    left = ours(memcg_mount)
    for directory in sorted(left, key=len, reverse=True):
        with contextlib.suppress(OSError):
            for pid in Path(directory, "cgroup.procs").read_text().split():
                os.kill(int(pid), signal.SIGKILL)
        deadline = time.monotonic() + 10
        while os.path.isdir(directory) and time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                os.rmdir(directory)
            time.sleep(0.01)
    assert not left, f"simulate left cgroups behind (now removed): {left}"


def dead(pid: int) -> bool:
    """Exited: gone, or a zombie its parent has not reaped yet."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return not pid_alive(pid)
    return stat[stat.rindex(")") + 2] == "Z"


def gone(pids: list[int], within: float = 10.0) -> bool:
    deadline = time.monotonic() + within
    while not all(dead(pid) for pid in pids):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def sandbox_dir(mount: MemcgMount, path: str) -> str:
    return mount.fs_path(path)


# -- simulate run ---------------------------------------------------------------------------


def test_run_past_the_limit_reports_the_kernels_kills_as_predicted(
        memcg_mount: MemcgMount, tmp_path: Path) -> None:
    await_report_budget(2)
    status, doc, err = simulate("run", "--limit", "64M", "--", "sh", "-c", TWO_PROCESSES,
                                "sh", str(tmp_path / "resident"))
    assert status == ExitStatus.OK, err
    assert (doc["command"], doc["outcome"]) == ("run", "oom_killed")
    sandbox = doc["sandbox"]
    assert sandbox["limit_bytes"] == 64 * MIB and sandbox["totalpages"] == 64 * MIB // PAGE_SIZE
    assert not os.path.exists(sandbox_dir(memcg_mount, sandbox["path"]))
    kills = doc["kills"]
    assert doc["oom_kills"] == len(kills) >= 2 and doc["kills_not_in_log"] == 0
    assert [k["victim"]["comm"] for k in kills[:2]] == ["oomlens-static", "oomlens-grower"]
    for kill in kills:
        assert kill["verdict"] == "matched", kill
        assert kill["predicted"]["pid"] == kill["victim"]["pid"]
        event = kill["event"]
        assert event["scope"] == "memcg" and event["complete"], event["missing"]
        assert event["memcg"]["oom_memcg"] == sandbox["path"]
        assert event["memcg"]["limit_kb"] == 64 * 1024
        assert event["analysis"]["choice_checks_out"] is True
        assert event["analysis"]["predicted_pid"] == kill["victim"]["pid"]
    assert doc["verdict"] == "matched"
    assert doc["peak_source"] == "memory.max_usage_in_bytes"
    assert 63 * MIB <= doc["peak_bytes"] <= 64 * MIB
    assert doc["headroom_bytes"] == 64 * MIB - doc["peak_bytes"]
    assert doc["exit"] is not None and doc["samples"] > 0


def test_run_below_the_limit_reports_peak_and_headroom(memcg_mount: MemcgMount) -> None:
    status, doc, err = simulate("run", "--limit", "128M", "--", sys.executable, "-c",
                                "x = b'1' * (48 << 20); raise SystemExit(3)")
    assert status == ExitStatus.OK, err
    assert (doc["outcome"], doc["kills"], doc["oom_kills"]) == ("completed", [], 0)
    assert doc["exit"] == {"code": 3, "signal": None}
    assert 48 * MIB <= doc["peak_bytes"] <= 80 * MIB, doc["peak_bytes"]
    assert doc["headroom_bytes"] == 128 * MIB - doc["peak_bytes"]
    assert doc["verdict"] is None
    assert not os.path.exists(sandbox_dir(memcg_mount, doc["sandbox"]["path"]))


@pytest.mark.parametrize("signo", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_an_interrupted_run_leaves_no_cgroup_and_no_process(
        memcg_mount: MemcgMount, signo: signal.Signals) -> None:
    argv = [sys.executable, "-m", "oomlens", "simulate", "run", "--limit", "64M", "--json",
            "--", "sh", "-c", "sleep 60 & sleep 60"]
    oomlens = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        directory, pids = _await_sandbox(memcg_mount, oomlens.pid, processes=3)
        oomlens.send_signal(signo)
        out, err = oomlens.communicate(timeout=30)
    finally:
        if oomlens.poll() is None:
            oomlens.kill()
            oomlens.wait()
    assert oomlens.returncode == ExitStatus.INTERRUPTED, err
    doc = json.loads(out)
    assert doc["outcome"] == "interrupted" and doc["exit"] is None
    assert not os.path.exists(directory)
    assert gone(pids), f"still alive: {[p for p in pids if pid_alive(p)]}"


def _await_sandbox(mount: MemcgMount, creator: int, processes: int) -> tuple[str, list[int]]:
    """The sandbox cgroup `creator` made, once it holds `processes` processes."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        for _path, directory in walk(mount):
            if os.path.basename(directory).startswith(f"{SIMULATE_PREFIX}{creator}-"):
                with contextlib.suppress(OSError):
                    pids = [int(p) for p in Path(directory, "cgroup.procs").read_text().split()]
                    if len(pids) >= processes:
                        return directory, pids
        time.sleep(0.02)
    pytest.fail(f"no sandbox with {processes} processes from pid {creator}")


def test_an_error_mid_run_still_cleans_up(memcg_mount: MemcgMount,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, Any] = {}
    take = sandboxrun.Sampler.take

    def failing(self: sandboxrun.Sampler) -> None:
        take(self)
        if len(self.seen) >= 2:
            seen.update(directory=self.box.directory, pids=sorted(self.seen))
            raise OomlensError("a reader failed")

    monkeypatch.setattr(sandboxrun.Sampler, "take", failing)
    status, doc, err = simulate("run", "--limit", "64M", "--", "sh", "-c", "sleep 60 & sleep 60")
    assert status == ExitStatus.PROBLEM and "a reader failed" in err and doc is None
    assert not os.path.exists(seen["directory"])
    assert gone(seen["pids"]), seen


# -- simulate oom ---------------------------------------------------------------------------


def helper_dirs(box: SandboxMemcg) -> list[str]:
    return [e.name for e in os.scandir(box.directory) if e.is_dir()]


def test_oom_kills_the_predicted_victim(sandbox: SandboxFactory) -> None:
    """256 MiB (one adj point = 65 pages): big 100 MiB adj 0 (~26 k points), small
    20 MiB adj 500 (~38 k), mid 40 MiB adj 0; the helper fills the ~80 MiB left
    (~21 k). The kernel must kill small: neither the largest nor the grower."""
    box = sandbox(256 * MIB)
    big, small, mid = box.start_hog(100, 0), box.start_hog(20, 500), box.start_hog(40, 0)
    before = box.oom_kill_count()

    status, doc, err = simulate("oom", box.path)
    assert status == ExitStatus.USAGE and "--yes-kill" in err
    assert doc["outcome"] == "refused" and doc["predicted"]["pid"] == small.pid
    assert box.oom_kill_count() == before and helper_dirs(box) == []
    assert all(h.process.poll() is None for h in (big, small, mid))

    await_report_budget(2)
    status, doc, err = simulate("oom", box.path, "--yes-kill")
    assert status == ExitStatus.OK, err
    assert (doc["outcome"], doc["verdict"]) == ("killed", "matched")
    first = doc["kills"][0]
    assert first["victim"]["pid"] == first["predicted"]["pid"] == small.pid
    assert first["victim"]["oom_score_adj"] == 500
    assert first["event"]["memcg"]["oom_memcg"] == box.path
    assert first["event"]["analysis"]["choice_checks_out"] is True
    # The helper was a candidate: the kernel's table lists it, grown.
    helper = doc["helper"]["pid"]
    rows = {row["pid"]: row for row in first["event"]["tasks"]}
    assert set(rows) == {big.pid, small.pid, mid.pid, helper}
    assert rows[helper]["rss"] * PAGE_SIZE > 60 * MIB
    assert small.process.wait(timeout=10) == -signal.SIGKILL
    assert_only_victims_died([big, mid], doc)
    assert gone([helper]) and helper_dirs(box) == []


def assert_only_victims_died(hogs: list[Hog], doc: dict[str, Any]) -> None:
    """Now and then the kernel kills twice (the first victim has left the task list,
    its pages are not uncharged yet): a second victim must be in the report too, and
    predicted (the overall verdict covers every kill)."""
    killed = {k["victim"]["pid"] for k in doc["kills"]}
    for hog in hogs:
        assert (hog.process.poll() is None) == (hog.pid not in killed), (hog.pid, killed)


def test_oom_where_the_helper_is_the_worst_kills_the_helper(sandbox: SandboxFactory) -> None:
    box = sandbox(256 * MIB)
    hogs = [box.start_hog(10, 0), box.start_hog(10, 100)]
    await_report_budget(1)
    status, doc, err = simulate("oom", box.path, "--yes-kill")
    assert status == ExitStatus.OK, err
    helper = doc["helper"]["pid"]
    assert doc["predicted"]["pid"] == helper
    assert doc["kills"][0]["victim"]["pid"] == helper and doc["verdict"] == "matched"
    assert_only_victims_died(hogs, doc)
    assert helper_dirs(box) == []


# -- simulate order against the kernel --------------------------------------------------


def order_of(box: SandboxMemcg, *extra: str) -> list[dict[str, Any]]:
    status, doc, err = simulate("order", "--domain", box.path, *extra)
    assert status == ExitStatus.OK, err
    kills: list[dict[str, Any]] = doc["kills"]
    return kills


@pytest.mark.parametrize("index", ORDER_SCENARIOS, ids=lambda i: f"s{i:02d}")
def test_order_agrees_with_the_kernel_in_the_victim_scenarios(
        sandbox: SandboxFactory, index: int) -> None:
    """test_victim_prediction's scenario: `simulate order` before the trigger gives
    every hog's badness as the kernel's task table does (the grower aside: it grows),
    its order is the kernel's for every pair further apart than the noise, and with
    the grower's final points from the table its first victim is the kernel's."""
    scenario = make_scenario(index)
    what = scenario.describe()
    box = sandbox(scenario.limit_mib * MIB)
    hogs, grower = hogs_setup(scenario.sizes_mib, scenario.adjs, scenario.grower)(box)
    kills = order_of(box, "--need", EVERYTHING)
    await_report_budget(1)
    kill = box.trigger_oom(grower)
    report = parse_report(kill.records, kill.victim_pid)
    assert report is not None, f"{what}: no task table (rate-limited)"
    total = scenario.limit_mib * MIB // PAGE_SIZE
    kernel = {t.pid: points(t, total) for t in report.tasks}
    ordered = [k["process"]["pid"] for k in kills]
    assert sorted(ordered) == sorted(h.pid for h in hogs), what
    ours = {k["process"]["pid"]: k["process"]["badness"] for k in kills}
    for pid in ordered:
        if pid != grower.pid:
            assert abs(ours[pid] - kernel[pid]) <= SAME_STATE_TOLERANCE, (what, pid)
    static = [pid for pid in ordered if pid != grower.pid]
    for a, b in itertools.pairwise(static):
        if abs(kernel[a] - kernel[b]) > 2 * SAME_STATE_TOLERANCE:
            assert kernel[a] > kernel[b], f"{what}: order {ordered}, kernel {kernel}"
    # The grower started last: it wins a tie (mm/oom_kill.c: oom_evaluate_task()).
    mixed = {**ours, grower.pid: kernel[grower.pid]}
    first = max(ordered, key=lambda pid: (mixed[pid], pid == grower.pid))
    assert first == kill.victim_pid == rank_tasks(report.tasks, total)[0].task.pid, (
        f"{what}: simulate order {ours}, kernel {kernel}, killed {kill.victim_pid}")


def deterministic(box: SandboxMemcg) -> tuple[Hog, Hog, Hog]:
    """test_victim_prediction's deterministic scenario: in 256 MiB, big 150 MiB adj 0
    (~40.7 k points), small 10 MiB adj 100 (~11.3 k), grower 10 MiB adj 0, which
    grows into the ~22 k pages of room: the kernel kills big."""
    return box.start_hog(150, 0), box.start_hog(10, 100), box.start_hog(10, 0)


def test_order_names_the_victim_in_advance(sandbox: SandboxFactory) -> None:
    box = sandbox(256 * MIB)
    big, _small, grower = deterministic(box)
    kills = order_of(box)
    assert [k["process"]["pid"] for k in kills] == [big.pid]
    assert kills[0]["freed_bytes"] >= 150 * MIB
    await_report_budget(1)
    assert box.trigger_oom(grower).victim_pid == big.pid


def test_a_what_if_value_given_to_the_kernel_is_obeyed(sandbox: SandboxFactory) -> None:
    box = sandbox(256 * MIB)
    big, small, grower = deterministic(box)
    kills = order_of(box, "--adj", f"{small.pid}=1000", "--need", "160M")
    assert [k["process"]["pid"] for k in kills] == [small.pid, big.pid]
    assert kills[0]["process"]["oom_score_adj"] == 1000
    Path(f"/proc/{small.pid}/oom_score_adj").write_text("1000")
    await_report_budget(1)
    assert box.trigger_oom(grower).victim_pid == small.pid
    assert big.process.poll() is None


@pytest.mark.skipif(os.uname().machine != "x86_64",
                    reason="the CLONE_VM helper uses x86_64 syscall numbers")
def test_processes_sharing_an_mm_are_killed_together(sandbox: SandboxFactory) -> None:
    """A 150 MiB process and its CLONE_VM twin (one mm) in 256 MiB: `simulate order`
    kills them in one step and counts their memory once; `simulate oom` predicts
    that and the kernel kills one of them, and the other with it."""
    box = sandbox(256 * MIB)
    script = "x = b'1' * (150 << 20)\n" + _CLONE_VM_HELPER
    owner = box.spawn([sys.executable, "-c", script], stdout=subprocess.PIPE)
    assert owner.stdout is not None
    clone = int(owner.stdout.readline())
    pair = {owner.pid, clone}
    kills = order_of(box, "--need", EVERYTHING)
    assert len(kills) == 1, kills  # one mm: one kill, nothing else is in the box
    first = kills[0]
    assert {first["process"]["pid"], *(p["pid"] for p in first["also_killed"])} == pair
    assert 150 * MIB <= first["freed_bytes"] < 160 * MIB  # once, not twice

    await_report_budget(1)
    status, doc, err = simulate("oom", box.path, "--yes-kill")
    assert status == ExitStatus.OK, err
    assert doc["predicted"]["pid"] in pair
    assert doc["kills"][0]["victim"]["pid"] in pair and doc["verdict"] == "matched"
    assert gone(sorted(pair)), "the process sharing the victim's mm survived"
