"""`oomlens enforce` as a real daemon (`python -m oomlens enforce --json`, a
subprocess) against processes the test starts, with every value read back from
/proc/PID/oom_score_adj: new programs (process events, and /proc polling with its
young-process rechecks), the initial sweep, SIGHUP reloads (valid and invalid),
SIGTERM, `--once`, `--dry-run`, `--validate`, the protection cap, and a burst of
short-lived processes.

Targets are copies of /bin/sleep named `olt-<8 hex>` in tmp_path, so their `comm` is
unique to one test and the rules match nothing else on the machine. Scores are
positive: this machine's root lacks CAP_SYS_RESOURCE, so only raising works
(fs/proc/base.c: __set_oom_adj()); the one negative score is the EACCES case.

A signal is sent only once the daemon catches SIGHUP and SIGTERM (SigCgt in
/proc/PID/status): the "started" line comes before the handlers are installed
(see test_signal_right_after_started_is_handled).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from daemon import EXIT_WITHIN_S, LINE_WITHIN_S, Daemon

from oomlens.policy.journal import ChangeKind, ChangeState, Journal
from oomlens.system.oomadj import boot_id, has_cap_sys_resource
from oomlens.system.procfs import parse_stat

pytestmark = pytest.mark.kernel

SCHEMA = "oomlens.enforce/1"
SCORE = 311  # values no other process here is expected to have
NEW_SCORE = 422
SET_WITHIN_S = 2.0
MIB = 1 << 20
BURST_OTHERS = 200
BURST_TARGETS = 20

# Runs the CLI with Signals() installing its handlers 0.5 s late, as a busy
# scheduler may: a signal sent on "started" then meets the default dispositions.
LATE_HANDLERS = """\
import sys, time
import oomlens.daemons.signals as daemon
install = daemon.Signals.__init__
def late(self):
    time.sleep(0.5)
    install(self)
daemon.Signals.__init__ = late
from oomlens.cli.main import main
sys.exit(main(sys.argv[1:]))
"""


def read_adj(pid: int) -> int:
    with open(f"/proc/{pid}/oom_score_adj") as handle:
        return int(handle.read())


def wait_adj(pid: int, value: int, timeout: float = SET_WITHIN_S) -> int:
    """Poll until oom_score_adj of `pid` is `value` or `timeout` passed; the last
    value read."""
    deadline = time.monotonic() + timeout
    while (now := read_adj(pid)) != value and time.monotonic() < deadline:
        time.sleep(0.01)
    return now


def start_time_ticks(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as handle:
        return parse_stat(handle.read()).start_time_ticks


def journal_changes(state_dir: Path) -> list[Any]:
    with Journal.open(str(state_dir)) as journal:
        return journal.changes()


class Targets:
    """Processes whose comm is a name unique to one test (a copy of /bin/sleep)."""

    def __init__(self, directory: Path) -> None:
        self.comm = f"olt-{secrets.token_hex(4)}"
        self.path = directory / self.comm
        shutil.copy2("/bin/sleep", self.path)
        self.started: list[subprocess.Popen[bytes]] = []

    def start(self, *argv: str) -> subprocess.Popen[bytes]:
        """A target (the sleep copy, for 30 s), or, given `argv`, any other command."""
        child = subprocess.Popen(list(argv) or [str(self.path), "30"])
        self.started.append(child)
        return child

    def exec_later(self, delay_s: float) -> subprocess.Popen[bytes]:
        """A shell that execs into a target after `delay_s` (same pid, comm `sh` first)."""
        return self.start("/bin/sh", "-c", f'sleep {delay_s}; exec "$0" 30', str(self.path))

    def close(self) -> None:
        for child in self.started:
            if child.poll() is None:
                child.kill()
        for child in self.started:
            child.wait(timeout=EXIT_WITHIN_S)


@pytest.fixture
def targets(tmp_path: Path) -> Iterator[Targets]:
    made = Targets(tmp_path)
    try:
        yield made
    finally:
        made.close()


@pytest.fixture
def own_adj() -> int:
    """What the targets inherit from this process."""
    adj = read_adj(os.getpid())
    if adj in (SCORE, NEW_SCORE):
        pytest.skip(f"this process already has oom_score_adj {adj}, a score the tests set")
    return adj


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    return tmp_path / "state"


def policy_text(comm: str, score: int, limits: str = "") -> str:
    """One rule, its [[rule]] header on line 2 (after `limits`' lines)."""
    return (f"# oomlens enforce test policy\n{limits}[[rule]]\nname = \"olt targets\"\n"
            f"comm = \"{comm}\"\nscore = {score}\n")


def invalid_policy_text(comm: str) -> str:
    """An unknown key on line 3."""
    return f"[[rule]]\nname = \"olt targets\"\nbogus = 1\ncomm = \"{comm}\"\nscore = {SCORE}\n"


def rule_text(policy: Path, line: int = 2) -> str:
    return f'rule "olt targets" ({policy}:{line})'


def enforce_argv(policy: Path, state_dir: Path, *options: str) -> list[str]:
    return [sys.executable, "-m", "oomlens", "enforce", "--policy", str(policy),
            "--state-dir", str(state_dir), "--json", *options]


StartDaemon = Callable[..., Daemon]


@pytest.fixture
def enforce(tmp_path: Path, state_dir: Path) -> Iterator[StartDaemon]:
    """`enforce(policy, *options, argv=None)` -> a running Daemon; killed and reaped
    at teardown whatever the test did."""
    started: list[Daemon] = []

    def start(policy: Path, *options: str, argv: list[str] | None = None) -> Daemon:
        daemon = Daemon(argv or enforce_argv(policy, state_dir, *options),
                        tmp_path / f"enforce-{len(started)}.stderr")
        started.append(daemon)
        return daemon

    try:
        yield start
    finally:
        for daemon in started:
            daemon.kill()


@pytest.fixture
def policy(tmp_path: Path, targets: Targets) -> Path:
    path = tmp_path / "policy.toml"
    path.write_text(policy_text(targets.comm, SCORE))
    return path


def run_cli(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "oomlens", *argv], capture_output=True,
                          text=True, timeout=60, check=False)


def json_lines(stdout: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stdout.splitlines()]


class TestEventMode:
    def test_a_new_target_gets_the_score_and_a_journal_entry(
            self, enforce: StartDaemon, targets: Targets, policy: Path, state_dir: Path,
            own_adj: int) -> None:
        daemon = enforce(policy)
        started = daemon.wait_for("started")
        assert started["mode"] == "process events"
        assert started["rules"] == 1
        target = targets.start()
        assert wait_adj(target.pid, SCORE) == SCORE
        applied = daemon.wait_for("applied", pid=target.pid)
        assert applied["schema"] == SCHEMA
        assert (applied["comm"], applied["old"], applied["new"]) == (targets.comm, own_adj, SCORE)
        assert applied["rule"] == rule_text(policy)
        with Journal.open(str(state_dir)) as journal:
            change = journal.change(applied["change_id"])
        assert change.cause == applied["rule"]
        assert change.state is ChangeState.APPLIED
        assert change.kind is ChangeKind.OOM_SCORE_ADJ
        assert (change.pid, change.old, change.new) == (target.pid, str(own_adj), str(SCORE))
        assert change.start_time_ticks == start_time_ticks(target.pid)
        assert change.boot_id == boot_id()
        assert change.comm == targets.comm

    def test_a_target_that_existed_before_is_set_by_the_initial_sweep(
            self, enforce: StartDaemon, targets: Targets, policy: Path) -> None:
        target = targets.start()
        assert read_adj(target.pid) != SCORE
        daemon = enforce(policy)
        assert wait_adj(target.pid, SCORE, timeout=LINE_WITHIN_S) == SCORE
        assert daemon.wait_for("applied", pid=target.pid)["new"] == SCORE

    def test_sighup_with_a_new_policy_rescores_old_and_new_targets(
            self, enforce: StartDaemon, targets: Targets, policy: Path) -> None:
        before = targets.start()
        daemon = enforce(policy)
        daemon.wait_handlers()
        assert wait_adj(before.pid, SCORE, timeout=LINE_WITHIN_S) == SCORE
        policy.write_text(policy_text(targets.comm, NEW_SCORE))
        daemon.process.send_signal(signal.SIGHUP)
        reloaded = daemon.wait_for("reloaded")
        assert (reloaded["policy"], reloaded["rules"]) == (str(policy), 1)
        assert wait_adj(before.pid, NEW_SCORE) == NEW_SCORE  # by the reload's sweep
        after = targets.start()
        assert wait_adj(after.pid, NEW_SCORE) == NEW_SCORE
        assert daemon.wait_for("applied", pid=before.pid, new=NEW_SCORE)["old"] == SCORE

    def test_sighup_with_an_invalid_policy_keeps_the_old_one(
            self, enforce: StartDaemon, targets: Targets, policy: Path) -> None:
        daemon = enforce(policy)
        daemon.wait_handlers()
        policy.write_text(invalid_policy_text(targets.comm))
        daemon.process.send_signal(signal.SIGHUP)
        failed = daemon.wait_for("reload_failed")
        assert failed["error"].startswith(f"{policy}:3: ")
        assert "'bogus'" in failed["error"]
        target = targets.start()
        assert wait_adj(target.pid, SCORE) == SCORE
        assert daemon.process.poll() is None
        assert daemon.entries("reloaded") == []

    def test_sigterm_exits_0_with_the_counters(
            self, enforce: StartDaemon, targets: Targets, policy: Path) -> None:
        target = targets.start()
        daemon = enforce(policy)
        daemon.wait_handlers()
        assert wait_adj(target.pid, SCORE, timeout=LINE_WITHIN_S) == SCORE
        assert daemon.stop() == 0
        stopped = daemon.wait_for("stopped")
        assert {k: stopped[k] for k in ("applied", "denied", "failed", "refused")} == {
            "applied": 1, "denied": 0, "failed": 0, "refused": 0}
        assert daemon.lines[-1] is stopped

    def test_signal_right_after_started_is_handled(
            self, enforce: StartDaemon, policy: Path, state_dir: Path) -> None:
        """Measured without the 0.5 s delay too: 20 of 20 runs died of the SIGTERM."""
        argv = [sys.executable, "-c", LATE_HANDLERS, *enforce_argv(policy, state_dir)[3:]]
        daemon = enforce(policy, argv=argv)
        daemon.wait_for("started")
        assert daemon.stop() == 0
        daemon.wait_for("stopped", timeout=0)

    def test_a_burst_of_short_lived_processes_misses_no_target(
            self, enforce: StartDaemon, targets: Targets, policy: Path) -> None:
        daemon = enforce(policy)
        daemon.wait_handlers()
        every = (BURST_OTHERS + BURST_TARGETS) // BURST_TARGETS
        burst = [targets.start() if i % every == every - 1 else targets.start("/bin/true")
                 for i in range(BURST_OTHERS + BURST_TARGETS)]
        matching = [child for child in burst if child.args[0] == str(targets.path)]
        assert len(matching) == BURST_TARGETS
        deadline = time.monotonic() + SET_WITHIN_S
        missed = [c.pid for c in matching
                  if wait_adj(c.pid, SCORE, max(0.0, deadline - time.monotonic())) != SCORE]
        assert missed == []
        assert daemon.process.poll() is None
        assert daemon.stop() == 0
        stopped = daemon.wait_for("stopped")
        assert (stopped["applied"], stopped["failed"]) == (BURST_TARGETS, 0)


class TestPollingMode:
    OPTIONS = ("--poll", "--interval", "0.1")

    def _swept(self, enforce: StartDaemon, targets: Targets, policy: Path) -> Daemon:
        """A polling daemon past its initial sweep (shown by an older target's line):
        what starts now is new to its PidPoller."""
        older = targets.start()
        daemon = enforce(policy, *self.OPTIONS)
        started = daemon.wait_for("started")
        assert (started["mode"], started["rescan_s"]) == ("polling /proc", 60.0)
        daemon.wait_for("applied", pid=older.pid)
        return daemon

    def test_a_new_target_gets_the_score(
            self, enforce: StartDaemon, targets: Targets, policy: Path) -> None:
        daemon = self._swept(enforce, targets, policy)
        target = targets.start()
        assert wait_adj(target.pid, SCORE) == SCORE
        assert daemon.wait_for("applied", pid=target.pid)["rule"] == rule_text(policy)

    def test_an_exec_soon_after_the_fork_is_caught_by_a_recheck(
            self, enforce: StartDaemon, targets: Targets, policy: Path) -> None:
        """The shell is first seen as `sh` (matching nothing); 0.2 s later, within
        PidPoller.RECHECKS polls of 0.1 s, it is the target."""
        daemon = self._swept(enforce, targets, policy)
        shell = targets.exec_later(0.2)
        assert wait_adj(shell.pid, SCORE) == SCORE
        assert daemon.wait_for("applied", pid=shell.pid)["comm"] == targets.comm

    def test_an_exec_after_the_rechecks_waits_for_the_rescan(
            self, enforce: StartDaemon, targets: Targets, policy: Path) -> None:
        """The limit of polling: 1 s after the fork the pid is no longer young, and
        only the next full rescan (60 s) would look at it again."""
        self._swept(enforce, targets, policy)
        shell = targets.exec_later(0.8)
        time.sleep(0.8)
        assert wait_adj(shell.pid, SCORE, timeout=0.8) != SCORE


class TestOnce:
    def test_applies_to_existing_targets_and_exits_0(
            self, targets: Targets, policy: Path, state_dir: Path) -> None:
        target = targets.start()
        done = run_cli(*enforce_argv(policy, state_dir, "--once")[3:])
        assert done.returncode == 0, done.stderr
        lines = json_lines(done.stdout)
        assert [e["event"] for e in lines] == ["applied", "done"]
        assert lines[0]["pid"] == target.pid
        assert lines[1]["applied"] == 1
        assert read_adj(target.pid) == SCORE

    def test_a_negative_score_without_cap_sys_resource_is_denied_exit_3(
            self, tmp_path: Path, targets: Targets, state_dir: Path, own_adj: int) -> None:
        if has_cap_sys_resource():
            pytest.skip("this process has CAP_SYS_RESOURCE: the write would succeed")
        policy = tmp_path / "negative.toml"
        policy.write_text(policy_text(targets.comm, -5))
        target = targets.start()
        done = run_cli(*enforce_argv(policy, state_dir, "--once")[3:])
        assert done.returncode == 3, done.stderr
        [denied] = [e for e in json_lines(done.stdout) if e["event"] == "denied"]
        assert (denied["pid"], denied["old"], denied["new"]) == (target.pid, own_adj, -5)
        assert "CAP_SYS_RESOURCE" in denied["error"]
        assert read_adj(target.pid) == own_adj
        [change] = journal_changes(state_dir)
        assert (change.id, change.state) == (denied["change_id"], ChangeState.FAILED)


def test_dry_run_logs_would_apply_and_changes_nothing(
        enforce: StartDaemon, targets: Targets, policy: Path, state_dir: Path,
        own_adj: int) -> None:
    before = targets.start()
    daemon = enforce(policy, "--dry-run")
    daemon.wait_handlers()
    would = daemon.wait_for("would_apply", pid=before.pid)
    assert (would["old"], would["new"], would["rule"]) == (own_adj, SCORE, rule_text(policy))
    assert "change_id" not in would
    after = targets.start()
    daemon.wait_for("would_apply", pid=after.pid)
    assert daemon.stop() == 0
    assert (read_adj(before.pid), read_adj(after.pid)) == (own_adj, own_adj)
    assert daemon.entries("applied") == []
    assert not (state_dir / "journal.sqlite").exists() or journal_changes(state_dir) == []


class TestValidate:
    def test_a_valid_policy_lists_its_rules(self, policy: Path, targets: Targets) -> None:
        done = run_cli("enforce", "--validate", "--policy", str(policy))
        assert done.returncode == 0, done.stderr
        assert done.stdout.startswith(f"{policy}: valid, 1 rules\n")
        [listed] = [line for line in done.stdout.splitlines() if "line 2: olt targets:" in line]
        assert targets.comm in listed
        assert listed.endswith(f"-> oom_score_adj {SCORE}")

    def test_an_invalid_policy_exits_2_naming_file_line_and_rule(
            self, tmp_path: Path, targets: Targets) -> None:
        policy = tmp_path / "invalid.toml"
        policy.write_text(invalid_policy_text(targets.comm))
        done = run_cli("enforce", "--validate", "--policy", str(policy))
        assert done.returncode == 2
        assert f'{policy}:3: rule "olt targets": unknown key \'bogus\'' in done.stderr
        assert done.stdout == ""

    def test_a_missing_file_exits_2_with_a_clear_message(self, tmp_path: Path) -> None:
        missing = tmp_path / "nowhere.toml"
        done = run_cli("enforce", "--validate", "--policy", str(missing))
        assert done.returncode == 2
        assert done.stderr.strip() == (
            f"oomlens: no policy file at {missing} (an example: contrib/policy.toml)")


def test_protecting_a_process_over_max_protected_share_is_refused_once(
        enforce: StartDaemon, sandbox: Any, tmp_path: Path, state_dir: Path) -> None:
    """A 10 MiB hog in a sandbox memcg against a cap of 0.0001% of RAM; sweeps every
    0.2 s look at it again, and it is refused (logged) once, never written."""
    box = sandbox(64 * MIB)
    hog = box.start_hog(10)
    adj = read_adj(hog.pid)
    policy = tmp_path / "protect.toml"
    policy.write_text(f'[limits]\nmax_protected_share = "0.0001%"\n\n[[rule]]\nname = "hog"\n'
                      f'cgroup = "{box.path}"\nprotect = true\n')
    daemon = enforce(policy, "--rescan", "0.2")
    daemon.wait_handlers()
    refused = daemon.wait_for("refused", pid=hog.pid)
    assert refused["rule"] == f'rule "hog" ({policy}:4)'
    assert refused["share"] > 0
    time.sleep(1.0)  # about five rescans
    assert daemon.stop() == 0
    assert len(daemon.entries("refused", pid=hog.pid)) == 1
    assert daemon.wait_for("stopped")["refused"] == 1
    assert [e for e in daemon.lines if e["event"] in ("applied", "denied", "failed")] == []
    assert read_adj(hog.pid) == adj
    assert journal_changes(state_dir) == []
