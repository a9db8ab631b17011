"""`oomlens doctor`, `apply`, `undo --plan` and the status screen's doctor section, run
in-process on a fake machine (tests/fixtures/fakemachine.py): JSON shapes, exit codes,
text without colour off a terminal, and plan -> apply -> undo through the CLI."""

from __future__ import annotations

import io
import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest
from fakemachine import FakeMachine
from fakeproc import FakeProcess

from oomlens.cli.env import Env, ExitStatus
from oomlens.cli.main import main
from oomlens.doctor.planfile import parse_plan

SSHD = FakeProcess(pid=400, comm="sshd", start_time_ticks=4321, cmdline=b"/usr/sbin/sshd\0")


class Cli:
    def __init__(self, machine: FakeMachine, tmp_path: Path) -> None:
        self.machine = machine
        self.tmp = tmp_path
        machine.write()

    def env(self, out: io.StringIO, err: io.StringIO, colour: bool) -> Env:
        m = self.machine
        return Env(out, err, stdout_isatty=colour, colour=colour, columns=100,
                   proc_root=str(m.proc), kmsg=str(m.kmsg), state_dir=str(self.tmp / "state"),
                   systemd_dir=str(self.tmp / "systemd"), sysctl_dir=str(self.tmp / "sysctl.d"),
                   sys_root=str(m.sys))

    def __call__(self, *argv: str, colour: bool = False) -> tuple[int, str, str]:
        out, err = io.StringIO(), io.StringIO()
        status = main(list(argv), self.env(out, err, colour))
        return status, out.getvalue(), err.getvalue()

    def json(self, *argv: str) -> tuple[int, Any]:
        status, out, err = self(*argv, "--json")
        assert out, err
        return status, json.loads(out)


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    machine = FakeMachine(tmp_path / "machine")
    machine.sysctls |= {"vm/panic_on_oom": 1, "kernel/panic": 10}
    machine.processes.append(SSHD)
    return Cli(machine, tmp_path)


def sysctl(cli: Cli, name: str) -> str:
    return (cli.machine.proc / "sys" / name).read_text().strip()


def test_doctor_json(cli: Cli) -> None:
    status, doc = cli.json("doctor")
    assert status == ExitStatus.PROBLEM
    assert doc["schema"] == "oomlens.doctor/1"
    assert doc["kernel"] == "6.1.0-18-amd64"
    first = doc["findings"][0]
    assert (first["code"], first["severity"]) == ("panic-on-oom", "critical")
    assert first["evidence"][0] == {"source": f"{cli.machine.proc}/sys/vm/panic_on_oom",
                                    "value": "1"}
    assert first["proposals"] == [{"kind": "sysctl", "name": "vm.panic_on_oom", "value": "0"}]
    assert doc["counts"]["critical"] == 1 and doc["counts"]["warning"] >= 1
    severities = [f["severity"] for f in doc["findings"]]
    order = {"critical": 0, "warning": 1, "info": 2}
    assert severities == sorted(severities, key=order.__getitem__)
    assert doc["plan"] is None
    assert doc["notes"]["recent_kills_from"] == f"kernel log {cli.machine.kmsg}"


def test_nothing_above_info_exits_0(cli: Cli) -> None:
    cli.machine.sysctls["vm/panic_on_oom"] = 0
    shutil.rmtree(cli.machine.proc / "400")
    cli.machine.processes.remove(SSHD)
    cli.machine.write()
    status, doc = cli.json("doctor")
    assert {f["severity"] for f in doc["findings"]} == {"info"}
    assert status == ExitStatus.OK


def test_text_is_aligned_and_coloured_only_on_a_terminal(cli: Cli) -> None:
    status, out, _ = cli("doctor")
    assert status == ExitStatus.PROBLEM
    assert "\x1b[" not in out
    lines = out.splitlines()
    assert lines[0].startswith("oomlens doctor — kernel 6.1.0-18-amd64: 1 critical, ")
    critical = lines.index(next(line for line in lines if line.startswith("critical")))
    assert lines[critical].split()[:2] == ["critical", "panic-on-oom"]
    assert lines[critical + 1] == (f"  evidence  {cli.machine.proc}/sys/vm/panic_on_oom: 1")
    assert any(line.startswith("  why       mm/oom_kill.c: check_panic_on_oom()")
               for line in lines)
    info = [line for line in lines if line.startswith("info")]
    assert info and all(len(line.split()) > 2 for line in info)
    assert "`oomlens doctor --plan FILE` writes the proposed changes for review" in lines
    _, coloured, _ = cli("doctor", colour=True)
    assert "\x1b[31mcritical" in coloured


def test_plan_apply_undo(cli: Cli, tmp_path: Path) -> None:
    plan_path, policy = str(tmp_path / "plan.toml"), str(tmp_path / "policy.toml")
    status, doc = cli.json("doctor", "--plan", plan_path, "--policy", policy)
    plan = parse_plan(Path(plan_path).read_text(), plan_path)
    assert doc["plan"] == {"path": plan_path, "id": plan.id, "items": len(plan.items)}
    assert oct(os.stat(plan_path).st_mode & 0o777) == "0o600"
    assert [(i.kind.value, i.target, i.before, i.after) for i in plan.items][:2] == [
        ("sysctl", "vm.panic_on_oom", "1", "0"), ("oom_score_adj", "400", "0", "-900")]

    status, out, _ = cli("apply", plan_path, "--dry-run")
    assert status == ExitStatus.OK and out.splitlines()[-1] == "nothing changed (dry run)"
    assert sysctl(cli, "vm/panic_on_oom") == "1" and not os.path.exists(policy)
    assert not (tmp_path / "state").exists()

    status, doc = cli.json("apply", plan_path)
    assert status == ExitStatus.OK
    assert [(i["kind"], i["result"]) for i in doc["items"]] == [
        ("sysctl", "applied"), ("oom_score_adj", "applied"), ("policy", "applied"),
        ("sysctl.d", "applied")]
    assert sysctl(cli, "vm/panic_on_oom") == "0"
    assert (cli.machine.proc / "400" / "oom_score_adj").read_text().strip() == "-900"
    persisted = tmp_path / "sysctl.d" / f"90-oomlens-{plan.id}.conf"
    assert persisted.read_text().endswith("\nvm.panic_on_oom = 0\n")

    status, doc = cli.json("apply", plan_path)
    assert status == ExitStatus.PROBLEM and doc["items"] == []
    assert "sysctl vm.panic_on_oom: planned from 1, now 0" in doc["refused"]

    status, doc = cli.json("undo", "--plan", plan.id)
    assert status == ExitStatus.OK
    assert [r["result"] for r in doc["restores"]] == ["applied"] * 4
    assert sysctl(cli, "vm/panic_on_oom") == "1"
    # A fake oom_score_adj file is written over, not replaced: the journal is the oracle
    # here (tests/kernel/test_doctor_real.py reads the kernel's).
    adj = next(r for r in doc["restores"] if r["undoes"]["kind"] == "oom_score_adj")
    assert (adj["current"], adj["restore_to"]) == ("-900", "0")
    assert not persisted.exists() and not os.path.exists(policy)
    status, out, _ = cli("undo", "--plan", plan.id)
    assert (status, out) == (ExitStatus.OK, "nothing to undo\n")
    status, doc = cli.json("journal")
    assert {c["plan"] for c in doc["changes"]} == {plan.id, None}


@pytest.mark.parametrize(("argv", "message"), [
    (["undo", "--plan", "nosuch"], "plan nosuch was never applied"),
    (["undo", "3", "--plan", "x"], "give a CHANGE_ID or one of --last, --all, --since, --plan"),
    (["apply", "/no/such/plan.toml"], "no plan file /no/such/plan.toml"),
    (["doctor", "--swap-file", "4G"], "--swap-file goes with --plan FILE"),
])
def test_usage_errors_exit_2(cli: Cli, argv: list[str], message: str) -> None:
    status, _, err = cli(*argv)
    assert status == ExitStatus.USAGE
    assert message in err and len(err.splitlines()) == 1


def test_a_plan_of_another_host_or_a_broken_one_is_refused(cli: Cli, tmp_path: Path) -> None:
    plan_path = str(tmp_path / "plan.toml")
    cli("doctor", "--plan", plan_path, "--policy", str(tmp_path / "policy.toml"))
    text = Path(plan_path).read_text()
    Path(plan_path).write_text(text.replace(f'host = "{os.uname().nodename}"',
                                            'host = "elsewhere"'))
    status, _, err = cli("apply", plan_path)
    assert status == ExitStatus.USAGE and "was made on elsewhere" in err
    Path(plan_path).write_text(text.replace('kind = "sysctl"', 'kind = "shell"'))
    status, _, err = cli("apply", plan_path)
    assert status == ExitStatus.USAGE and "item 1: unknown kind 'shell'" in err
    assert sysctl(cli, "vm/panic_on_oom") == "1"


def test_status_screen_shows_the_top_findings(cli: Cli) -> None:
    status, doc = cli.json()
    assert status == ExitStatus.OK
    assert doc["doctor"]["top"][0] == {
        "code": "panic-on-oom", "severity": "critical",
        "summary": "vm.panic_on_oom = 1: a system-wide OOM panics the kernel, and no crash "
                   "kernel is loaded to save a vmcore"}
    assert len(doc["doctor"]["top"]) <= 5 and doc["doctor"]["counts"]["critical"] == 1
    # The status/1 warnings keep their codes and two severities.
    assert {"code": "panic-on-oom", "severity": "warning",
            "message": doc["doctor"]["top"][0]["summary"]} in doc["warnings"]
    assert {w["severity"] for w in doc["warnings"]} <= {"info", "warning"}
    assert cli("--check")[0] == ExitStatus.PROBLEM
    _, out, _ = cli()
    lines = out.splitlines()
    start = lines.index("Doctor — top findings")
    assert lines[start + 1].split()[:2] == ["critical", "panic-on-oom"]
    assert lines[start + 2].split()[:2] == ["warning", "unprotected-service"]
    footer = next(line for line in lines[start:] if line.startswith("  (oomlens doctor"))
    assert footer.endswith("with evidence, why and the fix)")


def test_recent_kills_come_from_the_history_store(cli: Cli, tmp_path: Path) -> None:
    from oomlens.store.db import default_store_url, open_store
    from oomlens.store.record import EventKind, EventRecord

    detail = {"findings": [{"code": "memcg_limit", "severity": "info",
                            "message": "/app reached its memory limit of 1.0 GiB"}]}
    with open_store(default_store_url(str(tmp_path / "state"))) as store:
        store.add(EventRecord(key="b:1:77", kind=EventKind.KERNEL, host="db1", boot_id="b",
                              time=1_750_000_000.0, scope="memcg", victim_pid=77,
                              victim_comm="java", main_finding="memcg_limit",
                              findings=("memcg_limit",), detail=detail), now=1_750_000_001.0)
    _, doc = cli.json("doctor")
    kills = next(f for f in doc["findings"] if f["code"] == "recent-oom-kills")
    assert kills["evidence"] == [{
        "source": "history #1",
        "value": "2025-06-15T15:06:40+00:00 memcg, victim java (77); memcg_limit: /app reached "
                 "its memory limit of 1.0 GiB"}]
    assert doc["notes"]["recent_kills_from"].startswith("history store sqlite:///")
