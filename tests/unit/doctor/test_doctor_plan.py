"""doctor/plan.py: findings to plan items with their before values (sysctls, processes,
drop-ins, a policy file written only where there is none, a manual swap file), and the
drift rule apply refuses a plan by."""

from __future__ import annotations

import dataclasses

from fakemachine import FakeMachine
from fakeproc import FakeProcess

from oomlens.doctor.checks import run_checks
from oomlens.doctor.facts import Facts
from oomlens.doctor.finding import Evidence, Finding, ProtectService, SetSysctl, Severity
from oomlens.doctor.plan import (
    ItemKind,
    PlanContext,
    PlanItem,
    SwapFile,
    build_plan,
    drift,
    paths_to_read,
    policy_rules_text,
)
from oomlens.policy.dropin import dropin_text
from oomlens.policy.rules import parse_policy

SSHD = FakeProcess(pid=400, comm="sshd", start_time_ticks=4321, cmdline=b"/usr/sbin/sshd\0-D\0",
                   cgroup="0::/system.slice/ssh.service\n")
POLICY = "/etc/oomlens/policy.toml"


def context(**changes: object) -> PlanContext:
    ctx = PlanContext(id="c0ffee01", created="2025-06-15T10:00:00+00:00", host="db1",
                      boot_id="b00t", systemd_dir="/etc/systemd/system", policy_path=POLICY)
    return dataclasses.replace(ctx, **changes)  # type: ignore[arg-type]


def unhealthy(machine: FakeMachine) -> Facts:
    machine.sysctls |= {"vm/panic_on_oom": 1, "vm/oom_dump_tasks": 0}
    machine.processes += [SSHD]
    return machine.facts()


def test_items_carry_the_values_found_now(machine: FakeMachine) -> None:
    facts = unhealthy(machine)
    plan = build_plan(run_checks(facts), facts, context())
    assert (plan.id, plan.host, plan.boot_id, plan.kernel) == ("c0ffee01", "db1", "b00t",
                                                              "6.1.0-18-amd64")
    assert [(i.kind, i.target, i.before, i.after, i.finding) for i in plan.items] == [
        (ItemKind.SYSCTL, "vm.panic_on_oom", "1", "0", "panic-on-oom"),
        (ItemKind.SYSCTL, "kernel.panic", "0", "10", "panic-no-reboot"),
        (ItemKind.SYSCTL, "vm.oom_dump_tasks", "0", "1", "no-task-dump"),
        (ItemKind.OOM_SCORE_ADJ, "400", "0", "-900", "unprotected-service"),
        (ItemKind.POLICY, POLICY, None, plan.items[4].after, "unprotected-service"),
    ]
    adj = plan.items[3]
    assert (adj.pid, adj.start_time_ticks, adj.comm, adj.cmdline) == (400, 4321, "sshd",
                                                                      "/usr/sbin/sshd -D")
    assert plan.items[0].why.startswith("panic-on-oom: vm.panic_on_oom = 1: a system-wide OOM")
    assert not any(i.manual for i in plan.items)
    assert plan.sysctl_file_name == "90-oomlens-c0ffee01.conf"
    assert [i.target for i in plan.sysctls()] == ["vm.panic_on_oom", "kernel.panic",
                                                  "vm.oom_dump_tasks"]


def test_the_policy_file_is_a_valid_policy(machine: FakeMachine) -> None:
    facts = unhealthy(machine)
    item = build_plan(run_checks(facts), facts, context()).items[-1]
    assert item.after is not None and item.after.startswith("# Written by oomlens (plan ")
    policy = parse_policy(item.after, POLICY)
    [rule] = policy.rules
    assert (rule.name, rule.oom_score_adj) == ("ssh (oomlens doctor)", -900)
    assert rule.matchers.names == ("sshd",)


def test_an_existing_policy_is_not_edited_the_rules_are_manual(machine: FakeMachine) -> None:
    facts = unhealthy(machine)
    mine = "[[rule]]\ncomm = \"web\"\nprefer = true\n"
    item = build_plan(run_checks(facts), facts, context(files={POLICY: mine})).items[-1]
    assert (item.kind, item.manual, item.before) == (ItemKind.POLICY, True, mine)
    assert item.after == policy_rules_text([ProtectService("ssh", ("sshd",), None, -900)])
    assert "add these rules to /etc/oomlens/policy.toml" in item.commands[0]


def test_a_unit_gets_its_drop_in_once_and_not_when_it_says_so_already(
        machine: FakeMachine) -> None:
    facts = machine.facts()
    path = "/etc/systemd/system/ssh.service.d/50-oomlens-oom.conf"
    proposal = ProtectService("ssh", ("sshd",), "ssh.service", -900)
    findings = [Finding("unprotected-service", Severity.WARNING, "s", (Evidence("x", "y"),),
                        "w", "f", (proposal, proposal))]
    assert paths_to_read(findings, context()) == [path]
    [item] = build_plan(findings, facts, context(files={path: None})).items
    assert (item.kind, item.target, item.before, item.unit) == (ItemKind.DROPIN, path, None,
                                                               "ssh.service")
    assert item.after == dropin_text("ssh.service", -900)
    same = context(files={path: dropin_text("ssh.service", -900)})
    assert build_plan(findings, facts, same).items == ()


def test_first_proposal_of_a_target_wins_and_no_op_changes_are_dropped(
        machine: FakeMachine) -> None:
    facts = machine.facts()
    findings = [Finding(code, Severity.WARNING, "s", (Evidence("x", "y"),), "w", "f", (p,))
                for code, p in (("a", SetSysctl("vm.swappiness", "10")),
                                ("b", SetSysctl("vm.swappiness", "20")),
                                ("c", SetSysctl("vm.min_free_kbytes", "67584")))]
    plan = build_plan(findings, facts, context())
    assert [(i.target, i.after, i.finding) for i in plan.items] == [("vm.swappiness", "10", "a")]


def test_swap_file_is_manual_with_the_commands(machine: FakeMachine) -> None:
    facts = machine.facts()
    plan = build_plan([], facts, context(swap_file=SwapFile("/swapfile", 4 << 30, 1 << 30)))
    [item] = plan.items
    assert (item.kind, item.manual, item.before, item.after) == (ItemKind.SWAPFILE, True, None,
                                                                str(4 << 30))
    assert item.commands[:4] == ("fallocate -l 4294967296 /swapfile", "chmod 600 /swapfile",
                                 "mkswap /swapfile", "swapon /swapfile")
    assert item.why.startswith("no swap now; a 4.0 GiB swap file")
    assert item.why.endswith("/ has 1.0 GiB free: not enough.")


def test_drift() -> None:
    item = PlanItem(ItemKind.SYSCTL, "vm.swappiness", "60", "61", "why", "code")
    assert drift(item, "60") is None
    assert drift(item, "10") == "sysctl vm.swappiness: planned from 60, now 10"
    assert drift(item, None) == "sysctl vm.swappiness: planned from 60, now absent"
    assert drift(dataclasses.replace(item, manual=True), "10") is None
    dropin = PlanItem(ItemKind.DROPIN, "/u.d/x.conf", None, "[Service]\n", "w", "c")
    assert drift(dropin, "[Service]\nOOMScoreAdjust=1\n") == (
        "dropin /u.d/x.conf: planned from absent, now 27 bytes of text")
