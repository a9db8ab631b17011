"""doctor/apply.py on a fake machine (its /proc/sys files, processes and a temporary
sysctl.d and unit directory), and policy/undo.py taking it all back: every value
written and journaled, the whole plan refused on any drift, a dry run that writes
nothing, a refused sysctl never persisted, and a later sysctl.d file that would win at
boot named."""

from __future__ import annotations

import dataclasses
import os
import sqlite3
from pathlib import Path

import pytest
from fakemachine import BOOT_ID, FakeMachine
from fakeproc import FakeProcess

from oomlens.doctor.apply import ApplyContext, apply_plan, sysctl_file_text
from oomlens.doctor.plan import ItemKind, Plan, PlanItem
from oomlens.errors import UsageError
from oomlens.policy.apply import Result
from oomlens.policy.dropin import dropin_path, dropin_text
from oomlens.policy.journal import BatchKind, ChangeKind, ChangeState, Journal
from oomlens.policy.undo import UndoContext, undo_changes
from oomlens.system.tunables import read_sysctl

SLEEPER = FakeProcess(pid=4242, comm="sleeper", start_time_ticks=777, oom_score_adj=0)


@pytest.fixture
def setup(machine: FakeMachine, tmp_path: Path) -> tuple[FakeMachine, ApplyContext, Plan]:
    machine.processes.append(SLEEPER)
    machine.write()
    systemd = tmp_path / "systemd"
    ctx = ApplyContext(proc_root=str(machine.proc), sysctl_dir=str(tmp_path / "sysctl.d"),
                       systemd_dir=str(systemd), host="db1", boot_id=BOOT_ID, actor="root",
                       command="oomlens apply plan.toml")
    unit = dropin_path(str(systemd), "ssh.service")
    plan = Plan("c0ffee01", "2025-06-15T10:00:00+00:00", "db1", BOOT_ID, "6.1", (
        PlanItem(ItemKind.SYSCTL, "vm.swappiness", "60", "10", "w", "swappiness"),
        PlanItem(ItemKind.SYSCTL, "vm.oom_dump_tasks", "1", "0", "w", "dump"),
        PlanItem(ItemKind.OOM_SCORE_ADJ, "4242", "0", "300", "w", "adj", pid=4242,
                 start_time_ticks=777, comm="sleeper"),
        PlanItem(ItemKind.DROPIN, unit, None, dropin_text("ssh.service", -900), "w",
                 "unprotected-service", unit="ssh.service"),
        PlanItem(ItemKind.POLICY, str(tmp_path / "policy.toml"), None, "# rules\n", "w",
                 "unprotected-service"),
        PlanItem(ItemKind.SWAPFILE, "/swapfile", None, "1024", "w", "no-swap", manual=True),
    ))
    return machine, ctx, plan


def sysctl(machine: FakeMachine, name: str) -> str:
    return (machine.proc / "sys" / name.replace(".", "/")).read_text().strip()


def adj(machine: FakeMachine, pid: int) -> int:
    """As the kernel parses it (a fake file is written over without truncation)."""
    return int((machine.proc / str(pid) / "oom_score_adj").read_text())


def state(machine: FakeMachine, plan: Plan, ctx: ApplyContext) -> dict[str, object]:
    """Every value the plan touches, as the system has it now."""
    files = [i.target for i in plan.items if i.kind in (ItemKind.DROPIN, ItemKind.POLICY)]
    files.append(os.path.join(ctx.sysctl_dir, plan.sysctl_file_name))
    return {"vm.swappiness": sysctl(machine, "vm.swappiness"),
            "vm.oom_dump_tasks": sysctl(machine, "vm.oom_dump_tasks"),
            "adj": adj(machine, 4242),
            **{f: Path(f).read_text() if os.path.exists(f) else None for f in files}}


def test_apply_then_undo_restores_every_value(setup: tuple[FakeMachine, ApplyContext, Plan],
                                              tmp_path: Path) -> None:
    machine, ctx, plan = setup
    before = state(machine, plan, ctx)
    with Journal.open(str(tmp_path / "state")) as journal:
        applied = apply_plan(plan, ctx, journal)
        assert applied.refused == ()
        assert applied.notes == (
            "systemd reads the new drop-ins at `systemctl daemon-reload`; a unit's running "
            "processes keep their value until it restarts",
            "`oomlens enforce` applies the new policy to every process and each new one (a "
            "running enforcer reloads on SIGHUP)")
        assert [(o.kind, o.result) for o in applied.outcomes] == [
            ("sysctl", Result.APPLIED), ("sysctl", Result.APPLIED),
            ("oom_score_adj", Result.APPLIED), ("dropin", Result.APPLIED),
            ("policy", Result.APPLIED), ("swapfile", Result.MANUAL),
            ("sysctl.d", Result.APPLIED)]
        after = state(machine, plan, ctx)
        persisted = os.path.join(ctx.sysctl_dir, "90-oomlens-c0ffee01.conf")
        assert after == {
            "vm.swappiness": "10", "vm.oom_dump_tasks": "0", "adj": 300,
            plan.items[3].target: dropin_text("ssh.service", -900),
            plan.items[4].target: "# rules\n",
            persisted: sysctl_file_text(plan, plan.items[:2]),
        }
        assert str(after[persisted]).splitlines()[-2:] == ["vm.swappiness = 10",
                                                           "vm.oom_dump_tasks = 0"]
        changes = journal.changes()
        assert {c.batch for c in changes} == {changes[0].batch}
        assert [(c.kind, c.target, c.old, c.new, c.state, c.plan) for c in changes] == [
            (ChangeKind.SYSCTL, "vm.swappiness", "60", "10", ChangeState.APPLIED, "c0ffee01"),
            (ChangeKind.SYSCTL, "vm.oom_dump_tasks", "1", "0", ChangeState.APPLIED, "c0ffee01"),
            (ChangeKind.FILE, plan.items[3].target, None, plan.items[3].after,
             ChangeState.APPLIED, "c0ffee01"),
            (ChangeKind.FILE, plan.items[4].target, None, "# rules\n", ChangeState.APPLIED,
             "c0ffee01"),
            (ChangeKind.OOM_SCORE_ADJ, "4242", "0", "300", ChangeState.APPLIED, "c0ffee01"),
            (ChangeKind.FILE, persisted, None, after[persisted], ChangeState.APPLIED,
             "c0ffee01"),
        ]
        assert changes[0].cause == "oomlens apply plan.toml (plan c0ffee01: swappiness)"
        undo = journal.begin_batch("root", "oomlens undo --plan c0ffee01", BatchKind.UNDO)
        restores = undo_changes(journal.undoable(plan="c0ffee01"),
                                UndoContext(journal, undo, BOOT_ID, str(machine.proc)))
        assert [r.result for r in restores] == [Result.APPLIED] * 6
        assert journal.undoable(plan="c0ffee01") == []
    assert state(machine, plan, ctx) == before


def test_drift_refuses_the_whole_plan_and_writes_nothing(
        setup: tuple[FakeMachine, ApplyContext, Plan], tmp_path: Path) -> None:
    machine, ctx, plan = setup
    (machine.proc / "sys" / "vm" / "oom_dump_tasks").write_text("0\n")
    Path(plan.items[3].target).parent.mkdir(parents=True)
    Path(plan.items[3].target).write_text("[Service]\nOOMScoreAdjust=-100\n")
    before = state(machine, plan, ctx)
    with Journal.open(str(tmp_path / "state")) as journal:
        applied = apply_plan(plan, ctx, journal)
        assert journal.changes() == []
    assert applied.outcomes == ()
    assert applied.refused == (
        "sysctl vm.oom_dump_tasks: planned from 1, now 0",
        f"dropin {plan.items[3].target}: planned from absent, now 30 bytes of text")
    assert state(machine, plan, ctx) == before


@pytest.mark.parametrize(("process", "why"), [
    (None, "oom_score_adj 4242: process 4242 (sleeper) is gone"),
    (dataclasses.replace(SLEEPER, comm="other", start_time_ticks=999),
     "oom_score_adj 4242: pid 4242 belongs to another process now (other)"),
    (dataclasses.replace(SLEEPER, oom_score_adj=5), "oom_score_adj 4242: planned from 0, now 5"),
])
def test_a_process_changed_since_refuses_the_plan(
        setup: tuple[FakeMachine, ApplyContext, Plan], process: FakeProcess | None,
        why: str) -> None:
    machine, ctx, plan = setup
    machine.processes.remove(SLEEPER)
    import shutil

    shutil.rmtree(machine.proc / "4242")
    if process is not None:
        machine.processes.append(process)
    machine.write()
    assert apply_plan(plan, ctx, None).refused == (why,)


def test_dry_run_writes_nothing(setup: tuple[FakeMachine, ApplyContext, Plan]) -> None:
    machine, ctx, plan = setup
    before = state(machine, plan, ctx)
    applied = apply_plan(plan, dataclasses.replace(ctx, dry_run=True), None)
    assert [o.result for o in applied.outcomes] == [Result.PLANNED] * 5 + [Result.MANUAL]
    assert state(machine, plan, ctx) == before


def test_applied_once_the_file_is_there(setup: tuple[FakeMachine, ApplyContext, Plan],
                                        tmp_path: Path) -> None:
    machine, ctx, plan = setup
    plan = dataclasses.replace(plan, items=plan.items[:1])
    with Journal.open(str(tmp_path / "state")) as journal:
        apply_plan(plan, ctx, journal)
        (machine.proc / "sys" / "vm" / "swappiness").write_text("60\n")
        again = apply_plan(plan, ctx, journal)
    assert again.refused == (f"{ctx.sysctl_dir}/90-oomlens-c0ffee01.conf exists: this plan was "
                             "applied already (`oomlens undo --plan c0ffee01` first)",)


def test_a_refused_live_value_is_neither_applied_nor_persisted(
        setup: tuple[FakeMachine, ApplyContext, Plan], tmp_path: Path) -> None:
    machine, ctx, plan = setup
    plan = dataclasses.replace(plan, items=plan.items[:2])
    # A sysctl the write fails on: a directory here, read as its old value 1 (the kernel's
    # EINVAL is in the kernel test).
    refusing = machine.proc / "sys" / "vm" / "oom_dump_tasks"
    refusing.unlink()
    refusing.mkdir()
    with Journal.open(str(tmp_path / "state")) as journal, \
            pytest.MonkeyPatch.context() as patch:
        patch.setattr("oomlens.doctor.apply.read_sysctl",
                      lambda root, name: "1" if name == "vm.oom_dump_tasks" else
                      read_sysctl(root, name))
        applied = apply_plan(plan, ctx, journal)
        failed = journal.changes()[1]
    assert [o.result for o in applied.outcomes] == [Result.APPLIED, Result.FAILED,
                                                    Result.APPLIED]
    assert applied.outcomes[1].error == f"cannot read {refusing}: Is a directory"
    assert (failed.state, failed.error) == (ChangeState.FAILED, applied.outcomes[1].error)
    persisted = Path(ctx.sysctl_dir, plan.sysctl_file_name).read_text()
    assert "vm.swappiness = 10" in persisted and "oom_dump_tasks" not in persisted


def test_a_later_file_that_wins_at_boot_is_named(
        setup: tuple[FakeMachine, ApplyContext, Plan]) -> None:
    _, ctx, plan = setup
    os.makedirs(ctx.sysctl_dir)
    Path(ctx.sysctl_dir, "99-local.conf").write_text("# mine\n-vm/swappiness = 30\n"
                                                     "vm.oom_dump_tasks=0\n")
    Path(ctx.sysctl_dir, "10-early.conf").write_text("vm.swappiness = 1\n")
    applied = apply_plan(plan, dataclasses.replace(ctx, dry_run=True), None)
    assert applied.notes == (f"{ctx.sysctl_dir}/99-local.conf sets vm.swappiness = 30, read "
                             "after 90-oomlens-c0ffee01.conf: at boot its value wins",)


def test_a_plan_belongs_to_its_host_and_unit_directory(
        setup: tuple[FakeMachine, ApplyContext, Plan]) -> None:
    _, ctx, plan = setup
    with pytest.raises(UsageError, match="plan c0ffee01 was made on db1, this is web2"):
        apply_plan(plan, dataclasses.replace(ctx, host="web2"), None)
    with pytest.raises(UsageError, match=r"is not oomlens's drop-in of ssh\.service in /other"):
        apply_plan(plan, dataclasses.replace(ctx, systemd_dir="/other"), None)


def test_only_manual_items_make_no_journal_batch(
        setup: tuple[FakeMachine, ApplyContext, Plan], tmp_path: Path) -> None:
    _, ctx, plan = setup
    plan = dataclasses.replace(plan, items=plan.items[-1:])
    with Journal.open(str(tmp_path / "state")) as journal:
        applied = apply_plan(plan, ctx, journal)
        path = journal.path
    assert [o.result for o in applied.outcomes] == [Result.MANUAL]
    with sqlite3.connect(path) as raw:
        assert raw.execute("SELECT COUNT(*) FROM batches").fetchone() == (0,)
