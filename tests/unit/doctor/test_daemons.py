"""doctor/daemons.py: which userspace OOM daemons are installed and running, two killers
at once, a dry run that kills nothing, and systemd-oomd where it cannot work."""

from __future__ import annotations

import pytest
from fakecgroup import make_v1_memcg, make_v2_root
from fakemachine import FakeMachine, codes, only, v1_mountinfo, v2_mountinfo
from fakeproc import FakeProcess

from oomlens.doctor.daemons import check_oom_daemons, is_oomlens_guard
from oomlens.doctor.finding import Severity

EARLYOOM = FakeProcess(pid=800, comm="earlyoom", cmdline=b"/usr/bin/earlyoom\0-m\x005\0")
OOMD = FakeProcess(pid=801, comm="systemd-oomd", cmdline=b"/usr/lib/systemd/systemd-oomd\0")
GUARD = FakeProcess(pid=802, comm="oomlens",
                    cmdline=b"/usr/bin/python3\0/usr/local/bin/oomlens\0--json\0guard\0")


@pytest.mark.parametrize(("argv", "guard"), [
    ("/usr/local/bin/oomlens guard --kill-below 5%", True),
    ("python3 -m oomlens guard", True),
    ("/usr/bin/oomlens --json guard", True),
    ("/usr/bin/oomlens watch --exec guard", False),
    ("pytest tests/kernel/test_guard_real.py", False),
    ("vim oomlens guard.txt", False),
])
def test_is_oomlens_guard(argv: str, guard: bool) -> None:
    assert is_oomlens_guard(argv.split()) is guard


def test_installed_but_not_running(machine: FakeMachine) -> None:
    machine.program("usr/bin/earlyoom")
    finding = only(check_oom_daemons(machine.facts()), "oom-daemons")
    assert finding.summary == "userspace OOM daemons: earlyoom (installed, not running)"
    assert [e.source for e in finding.evidence] == [f"{machine.fs}/usr/bin/earlyoom"]


def test_none_says_nothing(machine: FakeMachine) -> None:
    assert check_oom_daemons(machine.facts()) == []


def test_earlyoom_and_systemd_oomd_running_conflict_and_oomd_is_blind(
        machine: FakeMachine) -> None:
    root = machine.root / "memory"
    make_v1_memcg(root, "/")
    machine.mountinfo = v1_mountinfo(root)
    machine.processes += [EARLYOOM, OOMD]
    findings = check_oom_daemons(machine.facts())
    assert codes(findings) == ["oom-daemons", "oom-daemons-conflict", "oom-daemon-cannot-act"]
    listed, conflict, blind = findings
    assert listed.summary == ("userspace OOM daemons: earlyoom (running, pid 800); "
                              "systemd-oomd (running, pid 801)")
    assert conflict.severity is Severity.WARNING
    assert conflict.summary == "more than one userspace OOM killer runs: earlyoom, systemd-oomd"
    assert blind.summary == ("systemd-oomd runs without the cgroup v2 memory controller: it "
                             "cannot act")


def test_systemd_oomd_on_v2_without_psi(machine: FakeMachine) -> None:
    machine.mountinfo = v2_mountinfo(make_v2_root(machine.root / "unified"))
    machine.processes += [OOMD]
    machine.pressure = None
    blind = only(check_oom_daemons(machine.facts()), "oom-daemon-cannot-act")
    assert blind.summary == "systemd-oomd runs without PSI: it cannot act"
    machine.pressure = "some avg10=0.00 avg60=0.00 avg300=0.00 total=0\n" \
                       "full avg10=0.00 avg60=0.00 avg300=0.00 total=0\n"
    assert codes(check_oom_daemons(machine.facts())) == ["oom-daemons"]


def test_a_dry_run_guard_is_no_second_killer(machine: FakeMachine) -> None:
    dry = FakeProcess(pid=803, comm="oomlens",
                      cmdline=b"/usr/bin/oomlens\0guard\0--dry-run\0")
    machine.processes += [EARLYOOM, dry]
    findings = check_oom_daemons(machine.facts())
    assert codes(findings) == ["oom-daemons"]
    assert "oomlens guard (running, pid 803 dry run)" in findings[0].summary
    machine.processes[-1] = GUARD
    assert "oom-daemons-conflict" in codes(check_oom_daemons(machine.facts()))
