"""doctor/cgroups.py on fake cgroupfs trees: v1 (the version, a limit near usage with and
without page cache, oom_kill_disable with tasks waiting) and v2 (memory.oom.group,
memory.high being hit now or in the past)."""

from __future__ import annotations

from pathlib import Path

from fakecgroup import make_v1_memcg, make_v2_memcg, make_v2_root
from fakemachine import FakeMachine, codes, evidence, only, v1_mountinfo, v2_mountinfo

from oomlens.doctor.cgroups import check_memcg_controls, check_memcg_limits, check_memcg_version
from oomlens.doctor.finding import Severity

MIB = 1 << 20


def v1(machine: FakeMachine) -> Path:
    root = machine.root / "memory"
    make_v1_memcg(root, "/")
    machine.mountinfo = v1_mountinfo(root)
    return root


def v2(machine: FakeMachine) -> Path:
    root = make_v2_root(machine.root / "unified")
    machine.mountinfo = v2_mountinfo(root)
    return root


def test_v1_is_named(machine: FakeMachine) -> None:
    root = v1(machine)
    finding = only(check_memcg_version(machine.facts()), "memcg-v1")
    assert finding.summary == f"memory cgroups are cgroup v1 ({root})"
    v2(machine)
    assert check_memcg_version(machine.facts()) == []


def test_v1_near_limit_working_set_decides_the_severity(machine: FakeMachine) -> None:
    root = v1(machine)
    app = make_v1_memcg(root, "/app", limit_bytes=100 * MIB, usage_bytes=95 * MIB)
    (app / "memory.stat").write_text(f"cache 0\ntotal_inactive_file {5 * MIB}\n")
    make_v1_memcg(root, "/idle", limit_bytes=100 * MIB, usage_bytes=50 * MIB)
    busy = only(check_memcg_limits(machine.facts()), "memcg-near-limit")
    assert busy.severity is Severity.WARNING
    assert busy.summary == "memory cgroup /app uses 95.0% of its 100 MiB limit"
    assert evidence(busy) == {
        f"{app}/memory.limit_in_bytes": str(100 * MIB),
        f"{app}/memory.usage_in_bytes": str(95 * MIB),
        f"{app}/memory.stat total_inactive_file": f"{5 * MIB} (working set {90 * MIB})",
    }
    (app / "memory.stat").write_text(f"total_inactive_file {60 * MIB}\n")
    cache = only(check_memcg_limits(machine.facts()), "memcg-near-limit")
    assert cache.severity is Severity.INFO
    assert cache.summary.endswith("(mostly page cache the kernel can reclaim)")


def test_v1_oom_kill_disable_hangs_tasks(machine: FakeMachine) -> None:
    root = v1(machine)
    box = make_v1_memcg(root, "/box", limit_bytes=64 * MIB, usage_bytes=10 * MIB,
                        oom_kill_disable=1)
    quiet = only(check_memcg_limits(machine.facts()), "memcg-oom-kill-disabled")
    assert quiet.severity is Severity.WARNING
    assert [e.value for e in quiet.evidence] == ["oom_kill_disable 1", "under_oom 0"]
    (box / "memory.oom_control").write_text("oom_kill_disable 1\nunder_oom 1\noom_kill 0\n")
    hung = only(check_memcg_limits(machine.facts()), "memcg-oom-kill-disabled")
    assert hung.severity is Severity.CRITICAL
    assert hung.summary.endswith("and tasks are waiting now (under_oom 1)")


def test_without_deep_facts_usage_alone_decides(machine: FakeMachine) -> None:
    root = v1(machine)
    app = make_v1_memcg(root, "/app", limit_bytes=100 * MIB, usage_bytes=95 * MIB)
    (app / "memory.stat").write_text(f"total_inactive_file {60 * MIB}\n")
    finding = only(check_memcg_limits(machine.facts(deep=False)), "memcg-near-limit")
    assert finding.severity is Severity.WARNING
    assert len(finding.evidence) == 2


def test_v2_oom_group_and_memory_high(machine: FakeMachine) -> None:
    root = v2(machine)
    group = make_v2_memcg(root, "/pod", max_bytes=512 * MIB, current_bytes=100 * MIB)
    (group / "memory.oom.group").write_text("1\n")
    (group / "memory.high").write_text("max\n")
    slow = make_v2_memcg(root, "/batch", current_bytes=950 * MIB)
    (slow / "memory.high").write_text(f"{1000 * MIB}\n")
    (slow / "memory.oom.group").write_text("0\n")
    (slow / "memory.events").write_text("low 0\nhigh 7\nmax 0\noom 0\noom_kill 0\n")
    past = make_v2_memcg(root, "/past", current_bytes=10 * MIB)
    (past / "memory.high").write_text(f"{1000 * MIB}\n")
    (past / "memory.events").write_text("low 0\nhigh 3\nmax 0\noom 0\noom_kill 0\n")
    findings = check_memcg_controls(machine.facts())
    assert codes(findings) == ["memcg-high-throttling", "memcg-high-throttling",
                               "memcg-oom-group"]
    now, then, oom_group = findings
    assert now.severity is Severity.WARNING
    assert now.summary == ("memory cgroup /batch uses 950 MiB of its memory.high 1000 MiB: it "
                           "is throttled, not killed")
    assert evidence(now)[f"{slow}/memory.events high"] == "7"
    assert then.severity is Severity.INFO
    assert "went over its memory.high (1000 MiB) 3 time(s)" in then.summary
    assert oom_group.summary.startswith("memory cgroup /pod has memory.oom.group = 1")
    assert evidence(oom_group) == {f"{group}/memory.oom.group": "1"}


def test_status_screen_facts_have_no_controls(machine: FakeMachine) -> None:
    root = v2(machine)
    group = make_v2_memcg(root, "/pod", max_bytes=512 * MIB)
    (group / "memory.oom.group").write_text("1\n")
    assert check_memcg_controls(machine.facts(deep=False)) == []
