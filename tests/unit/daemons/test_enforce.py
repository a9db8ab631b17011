"""The enforcer's pieces that need no root, on a fake /proc (tests/fixtures/fakeproc.py):
PidPoller (new pids, young rechecks that expire after RECHECKS polls, vanished pids
dropped), the CLI's log lines (`describe()` for every event kind, `make_log`), and
Enforcer decisions where a fake tree can stage what a live system only races into
(a process that exits between the journal's intent and the write), and the refusal's
wording of the protection cap.
"""

from __future__ import annotations

import io
import json
import shutil
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from fakeproc import FakeProcess, write_fake_proc, write_process

from oomlens.cli.commands.enforce import SCHEMA, describe, make_log
from oomlens.cli.env import Env
from oomlens.daemons.enforce import Enforcer, Machine, PidPoller
from oomlens.policy.journal import Batch, ChangeState, Intent, Journal
from oomlens.policy.rules import parse_policy

MEM_TOTAL_KIB = 24684100  # MEMINFO_24G_NO_SWAP
RULE = 'rule "ssh" (/etc/oomlens/policy.toml:3)'


@pytest.fixture
def proc_root(tmp_path: Path) -> Path:
    return write_fake_proc(tmp_path / "proc", [FakeProcess(1, "init"), FakeProcess(100)])


def spawn(proc_root: Path, pid: int, **fields: Any) -> None:
    write_process(proc_root, FakeProcess(pid, **fields))


def vanish(proc_root: Path, pid: int) -> None:
    shutil.rmtree(proc_root / str(pid))


class TestPidPoller:
    def test_pids_that_exist_at_start_are_not_new(self, proc_root: Path) -> None:
        assert PidPoller(str(proc_root)).due() == []

    def test_new_pids_are_due_sorted_and_non_pids_ignored(self, proc_root: Path) -> None:
        poller = PidPoller(str(proc_root))
        for pid in (300, 20, 4000):
            spawn(proc_root, pid)
        (proc_root / "sysrq-trigger").write_text("")
        (proc_root / "12abc").mkdir()
        assert poller.due() == [20, 300, 4000]

    def test_a_new_pid_is_rechecked_for_rechecks_polls_then_not(self, proc_root: Path) -> None:
        poller = PidPoller(str(proc_root))
        spawn(proc_root, 200)
        seen = [200 in poller.due() for _ in range(PidPoller.RECHECKS + 3)]
        assert seen == [True] * (1 + PidPoller.RECHECKS) + [False] * 2

    def test_rechecks_count_from_each_pids_own_first_sight(self, proc_root: Path) -> None:
        poller = PidPoller(str(proc_root))
        spawn(proc_root, 200)
        assert poller.due() == [200]
        spawn(proc_root, 300)
        polls = [poller.due() for _ in range(PidPoller.RECHECKS + 1)]
        assert polls[PidPoller.RECHECKS - 1] == [200, 300]
        assert polls[PidPoller.RECHECKS] == [300]
        assert poller.due() == []

    def test_a_vanished_young_pid_is_dropped(self, proc_root: Path) -> None:
        poller = PidPoller(str(proc_root))
        spawn(proc_root, 200)
        spawn(proc_root, 201)
        assert poller.due() == [200, 201]
        vanish(proc_root, 200)
        assert poller.due() == [201]
        assert 200 not in poller.young
        assert 200 not in poller.known

    def test_a_vanished_old_pid_is_forgotten_so_its_reuse_is_new(self, proc_root: Path) -> None:
        poller = PidPoller(str(proc_root))
        vanish(proc_root, 100)
        assert poller.due() == []
        spawn(proc_root, 100, comm="reused")
        assert poller.due() == [100]


@pytest.mark.parametrize(("entry", "text"), [
    ({"event": "applied", "pid": 42, "comm": "sshd", "old": 0, "new": -1000, "rule": RULE,
      "change_id": 7},
     f"applied: pid 42 (sshd) oom_score_adj 0 -> -1000 by {RULE}, change #7"),
    ({"event": "would_apply", "pid": 42, "comm": "sshd", "old": 0, "new": -1000, "rule": RULE},
     f"would apply: pid 42 (sshd) oom_score_adj 0 -> -1000 by {RULE}"),
    ({"event": "denied", "pid": 42, "comm": "sshd", "old": 0, "new": -1000, "rule": RULE,
      "change_id": 8, "error": "permission denied on /proc/42/oom_score_adj"},
     f"denied: pid 42 (sshd) oom_score_adj 0 -> -1000 by {RULE}, change #8: "
     "permission denied on /proc/42/oom_score_adj"),
    ({"event": "failed", "pid": 42, "comm": "sshd", "old": 0, "new": 300, "rule": RULE,
      "change_id": 9, "error": "cannot read /proc/42/oom_score_adj: I/O error"},
     f"failed: pid 42 (sshd) oom_score_adj 0 -> 300 by {RULE}, change #9: "
     "cannot read /proc/42/oom_score_adj: I/O error"),
    ({"event": "gone", "pid": 42, "comm": "sshd", "old": 0, "new": 300, "rule": RULE,
      "change_id": 10, "error": "process 42 (sshd) does not exist (it may have exited)"},
     f"gone: pid 42 (sshd) oom_score_adj 0 -> 300 by {RULE}, change #10: "
     "process 42 (sshd) does not exist (it may have exited)"),
    ({"event": "refused", "pid": 43, "comm": "java", "rule": RULE, "share": 0.4,
      "message": "holds 40.0% of RAM, more than the 30% that may be made unkillable"},
     "refused: pid 43 (java) holds 40.0% of RAM, more than the 30% that may be made "
     "unkillable"),
    ({"event": "started", "policy": "/etc/oomlens/policy.toml", "rules": 4,
      "mode": "polling /proc", "rescan_s": 60.0},
     "started: policy=/etc/oomlens/policy.toml rules=4 mode=polling /proc rescan_s=60.0"),
    ({"event": "polling", "message": "no events; polling /proc every 1.0 s"},
     "polling: message=no events; polling /proc every 1.0 s"),
    ({"event": "reloaded", "policy": "/p.toml", "rules": 2}, "reloaded: policy=/p.toml rules=2"),
    ({"event": "reload_failed", "error": "/p.toml:3: unknown key 'x'",
      "message": "keeping the policy in force"},
     "reload_failed: error=/p.toml:3: unknown key 'x' message=keeping the policy in force"),
    ({"event": "warning", "killable_share": 0.2, "message": "too much protected"},
     "warning: killable_share=0.2 message=too much protected"),
    ({"event": "overrun", "message": "events were lost: rescanning /proc"},
     "overrun: message=events were lost: rescanning /proc"),
    ({"event": "stopped", "applied": 3, "denied": 0, "failed": 1, "refused": 2},
     "stopped: applied=3 denied=0 failed=1 refused=2"),
    ({"event": "done", "applied": 1, "denied": 1, "failed": 0, "refused": 0},
     "done: applied=1 denied=1 failed=0 refused=0"),
], ids=lambda value: value["event"] if isinstance(value, dict) else "")
def test_describe(entry: dict[str, Any], text: str) -> None:
    assert describe(entry) == text


def _env() -> Env:
    return Env(io.StringIO(), io.StringIO(), stdout_isatty=False, colour=False, columns=80)


class TestMakeLog:
    ENTRY = {"event": "reloaded", "policy": "/p.toml", "rules": 2}  # noqa: RUF012

    def test_json_is_one_object_per_line_with_schema_and_aware_time(self) -> None:
        env = _env()
        log = make_log(env, as_json=True)
        log(self.ENTRY)
        log({"event": "stopped", "applied": 0, "denied": 0, "failed": 0, "refused": 0})
        lines = env.stdout.getvalue().splitlines()  # type: ignore[attr-defined]
        first = json.loads(lines[0])
        assert len(lines) == 2
        assert first["schema"] == SCHEMA
        assert datetime.fromisoformat(first.pop("time")).utcoffset() is not None
        assert first == {"schema": SCHEMA, **self.ENTRY}

    def test_text_is_a_time_then_the_description(self) -> None:
        env = _env()
        make_log(env, as_json=False)(self.ENTRY)
        stamp, _, text = env.stdout.getvalue().rstrip("\n").partition(" ")  # type: ignore[attr-defined]
        assert datetime.fromisoformat(stamp).utcoffset() is not None
        assert text == describe(self.ENTRY)


class VanishingJournal(Journal):
    """A journal during whose intent the process exits (its /proc dir goes away)."""

    proc_root: Path

    def record_intents(self, batch: Batch, intents: Sequence[Intent]) -> list[int]:
        ids = super().record_intents(batch, intents)
        for intent in intents:
            assert intent.pid is not None
            vanish(self.proc_root, intent.pid)
        return ids


def _enforcer(proc_root: Path, policy: str, journal: Journal | None,
              log: list[dict[str, Any]]) -> Enforcer:
    return Enforcer(parse_policy(policy, "policy.toml"),
                    Machine(str(proc_root), "boot-1", MEM_TOTAL_KIB), journal, log.append,
                    "test (uid 0)", "oomlens enforce")


SCORE_POLICY = '[[rule]]\nname = "w"\ncomm = "worker"\nscore = 300\n'


class TestEnforcerOnFakeProc:
    def test_a_matching_process_is_written_and_journaled(
            self, proc_root: Path, tmp_path: Path) -> None:
        spawn(proc_root, 200, comm="worker")
        log: list[dict[str, Any]] = []
        with Journal.open(str(tmp_path / "state")) as journal:
            enforcer = _enforcer(proc_root, SCORE_POLICY, journal, log)
            enforcer.sweep()
            [change] = journal.changes()
        assert (proc_root / "200" / "oom_score_adj").read_text().strip() == "300"
        assert [e["event"] for e in log] == ["applied"]
        assert (change.pid, change.new, change.state) == (200, "300", ChangeState.APPLIED)
        assert enforcer.counters.applied == 1

    def test_a_process_gone_before_the_write_is_not_a_failure(
            self, proc_root: Path, tmp_path: Path) -> None:
        spawn(proc_root, 200, comm="worker")
        log: list[dict[str, Any]] = []
        with VanishingJournal.open(str(tmp_path / "state")) as journal:
            assert isinstance(journal, VanishingJournal)
            journal.proc_root = proc_root
            enforcer = _enforcer(proc_root, SCORE_POLICY, journal, log)
            enforcer.evaluate(200)
            [change] = journal.changes()
        assert change.state is ChangeState.FAILED  # the intent still gets its outcome
        assert enforcer.counters.failed == 0
        [gone] = log
        assert (gone["event"], gone["pid"], gone["change_id"]) == ("gone", 200, change.id)

    def test_a_refusal_names_the_configured_limit(self, proc_root: Path) -> None:
        spawn(proc_root, 200, comm="worker", rss_anon_kib=MEM_TOTAL_KIB // 10)
        log: list[dict[str, Any]] = []
        policy = ('[limits]\nmax_protected_share = "2.5%"\n[[rule]]\ncomm = "worker"\n'
                  "protect = true\n")
        _enforcer(proc_root, policy, None, log).evaluate(200)
        [refused] = log
        assert refused["event"] == "refused"
        assert "2.5%" in refused["message"]
