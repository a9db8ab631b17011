"""doctor/checks.py and doctor/gather.py together: a machine with something of every
severity; findings most severe first, each with evidence, why and fix; what the status
screen's shallow facts leave out."""

from __future__ import annotations

from fakecgroup import make_v2_memcg, make_v2_root
from fakemachine import FakeMachine, codes, v2_mountinfo
from fakeproc import FakeProcess

from oomlens.doctor.checks import run_checks
from oomlens.doctor.finding import Severity

GIB_KIB = 1 << 20


def troubled(machine: FakeMachine) -> FakeMachine:
    machine.sysctls |= {"vm/panic_on_oom": 1, "vm/oom_dump_tasks": 0, "kernel/panic": 5}
    machine.processes += [FakeProcess(pid=900, comm="db", oom_score_adj=-1000,
                                      rss_anon_kib=3 * GIB_KIB)]
    root = make_v2_root(machine.root / "unified")
    (make_v2_memcg(root, "/pod") / "memory.oom.group").write_text("1\n")
    machine.mountinfo = v2_mountinfo(root)
    return machine


def test_most_severe_first_and_every_finding_explained(machine: FakeMachine) -> None:
    findings = run_checks(troubled(machine).facts(oom_kills=2))
    assert codes(findings) == ["panic-on-oom", "no-task-dump", "protected-hog", "oom-kills",
                               "no-swap", "memcg-oom-group"]
    assert [f.severity for f in findings] == [Severity.CRITICAL, *[Severity.WARNING] * 3,
                                              Severity.INFO, Severity.INFO]
    for finding in findings:
        assert finding.evidence and finding.why and finding.fix, finding.code
        assert all(e.source and e.value for e in finding.evidence), finding.code


def test_shallow_facts_skip_what_the_status_screen_cannot_afford(machine: FakeMachine) -> None:
    facts = troubled(machine).facts(deep=False)
    assert facts.memcg_controls is None and facts.oom_adj_use is None
    assert facts.score_adjust_settings is None and facts.kills is None
    assert "memcg-oom-group" not in codes(run_checks(facts))
    assert facts.sysctls["vm.watermark_scale_factor"] == 10  # not in the snapshot's set
    assert facts.sysctls["vm.overcommit_kbytes"] == 0
