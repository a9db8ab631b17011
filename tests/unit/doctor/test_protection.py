"""doctor/protection.py on a fake machine: critical services found by name (a service's
children are not counted twice; pid 1 and protected ones are left alone), -1000 hogs,
the three signs of oom_adj, and OOMScoreAdjust= drop-ins."""

from __future__ import annotations

import pytest
from fakemachine import FakeMachine, codes, evidence, only
from fakeproc import FakeProcess

from oomlens.doctor.finding import ProtectService, SetScoreAdj, Severity
from oomlens.doctor.protection import (
    OOM_ADJ_ONLY_VALUES,
    check_critical_services,
    check_oom_adj,
    check_protected_hogs,
    check_score_adjust_dropins,
)

SSHD = FakeProcess(pid=400, comm="sshd", start_time_ticks=400, cmdline=b"sshd: /usr/sbin/sshd\0",
                   cgroup="0::/system.slice/ssh.service\n")
SESSION = FakeProcess(pid=401, comm="sshd", ppid=400, start_time_ticks=900,
                      cmdline=b"sshd: alice [priv]\0", cgroup="0::/system.slice/ssh.service\n")
POSTGRES = FakeProcess(pid=500, comm="postgres", start_time_ticks=500)
GIB_KIB = 1 << 20


def test_unprotected_sshd_without_systemd_gets_a_live_value_and_a_policy_rule(
        machine: FakeMachine) -> None:
    machine.processes += [SSHD, SESSION, POSTGRES]
    findings = check_critical_services(machine.facts())
    assert codes(findings) == ["unprotected-service", "unprotected-service"]
    ssh, database = findings
    assert ssh.severity is Severity.WARNING
    assert ssh.summary == "ssh (sshd) is not protected from the OOM killer: oom_score_adj 0"
    assert evidence(ssh) == {f"{machine.proc}/400/oom_score_adj": "0 (sshd, pid 400)"}
    assert ssh.proposals == (
        SetScoreAdj(400, 400, "sshd", "sshd: /usr/sbin/sshd", -900),
        ProtectService("ssh", ("sshd",), None, -900))
    assert database.severity is Severity.INFO and database.proposals == ()


def test_with_systemd_the_units_drop_in_is_proposed(machine: FakeMachine) -> None:
    machine.processes += [SSHD]
    (machine.fs / "run" / "systemd" / "system").mkdir(parents=True)
    cgroups = machine.root / "unified"
    from fakecgroup import make_v2_memcg, make_v2_root
    from fakemachine import v2_mountinfo

    make_v2_root(cgroups)
    make_v2_memcg(cgroups, "/system.slice/ssh.service", procs=[400])
    machine.mountinfo = v2_mountinfo(cgroups)
    ssh = only(check_critical_services(machine.facts()), "unprotected-service")
    assert evidence(ssh) == {
        f"{machine.proc}/400/oom_score_adj": "0 (sshd, pid 400 in ssh.service)"}
    assert ssh.proposals[1:] == (ProtectService("ssh", ("sshd",), "ssh.service", -900),)


@pytest.mark.parametrize("adj", [-1, -900, -1000])
def test_a_protected_service_is_left_alone(machine: FakeMachine, adj: int) -> None:
    machine.processes += [FakeProcess(pid=400, comm="sshd", oom_score_adj=adj),
                          FakeProcess(pid=450, comm="dockerd", ppid=1)]
    assert only(check_critical_services(machine.facts()), "unprotected-service").summary \
        .startswith("container runtime (dockerd)")


def test_pid_1_is_never_flagged(machine: FakeMachine) -> None:
    machine.processes = [FakeProcess(pid=1, comm="sshd", ppid=0)]
    assert check_critical_services(machine.facts()) == []


class TestProtectedHogs:
    def test_share_decides_warning_or_critical(self, machine: FakeMachine) -> None:
        hog = FakeProcess(pid=600, comm="java", start_time_ticks=600, oom_score_adj=-1000,
                          rss_anon_kib=4 * GIB_KIB, rss_file_kib=0)
        small = FakeProcess(pid=601, comm="agent", oom_score_adj=-1000, rss_anon_kib=GIB_KIB)
        machine.processes += [hog, small]
        finding = only(check_protected_hogs(machine.facts()), "protected-hog")
        assert finding.severity is Severity.WARNING
        assert finding.summary == ("java (pid 600) is unkillable (oom_score_adj -1000) and "
                                   "holds 17.0% of RAM (4.0 GiB)")
        assert finding.proposals == (SetScoreAdj(600, 600, "java", "/usr/bin/proc --flag", -900),)
        machine.processes[-2] = FakeProcess(pid=600, comm="java", oom_score_adj=-1000,
                                            rss_anon_kib=13 * GIB_KIB)
        assert only(check_protected_hogs(machine.facts()), "protected-hog").severity is \
            Severity.CRITICAL

    def test_a_big_process_that_is_killable_is_not_a_hog(self, machine: FakeMachine) -> None:
        machine.processes += [FakeProcess(pid=600, oom_score_adj=-999,
                                          rss_anon_kib=13 * GIB_KIB)]
        assert check_protected_hogs(machine.facts()) == []


class TestOomAdj:
    def test_values_only_the_oom_adj_scaling_makes(self) -> None:
        assert OOM_ADJ_ONLY_VALUES[-941] == -16 and OOM_ADJ_ONLY_VALUES[823] == 14
        assert OOM_ADJ_ONLY_VALUES[-58] == -1 and OOM_ADJ_ONLY_VALUES[58] == 1
        assert not {-1000, 0, 1000, -500, -900, 500} & OOM_ADJ_ONLY_VALUES.keys()
        assert len(OOM_ADJ_ONLY_VALUES) == 30  # -16..14 without 0

    def test_a_value_alone_is_info(self, machine: FakeMachine) -> None:
        machine.processes += [FakeProcess(pid=700, comm="legacyd", oom_score_adj=-941)]
        finding = only(check_oom_adj(machine.facts()), "oom-adj-used")
        assert finding.severity is Severity.INFO
        assert evidence(finding) == {
            f"{machine.proc}/700/oom_score_adj": "-941 = oom_adj -16 x 1000/17 (legacyd, pid 700)"}

    def test_the_kernels_warning_and_a_script_are_warnings(self, machine: FakeMachine) -> None:
        machine.kmsg_records.append(
            "4,812,5012345,-;legacyd (700): /proc/700/oom_adj is deprecated, please use "
            "/proc/700/oom_score_adj instead.\n")
        machine.fs_file("etc/rc.local", "#!/bin/sh\necho -17 > /proc/$(pidof db)/oom_adj\n"
                        "echo -1000 > /proc/self/oom_score_adj\n")
        machine.fs_file("etc/systemd/system/db.service",
                        "[Service]\nOOMScoreAdjust=-500\n# oom_adjust is not it either\n")
        finding = only(check_oom_adj(machine.facts()), "oom-adj-used")
        assert finding.severity is Severity.WARNING
        assert finding.summary == ("the deprecated oom_adj interface is in use: 1 kernel "
                                   "warning(s), 1 script or unit line(s)")
        assert evidence(finding) == {
            str(machine.kmsg): "legacyd (700): /proc/700/oom_adj is deprecated, please use "
                               "/proc/700/oom_score_adj instead.",
            f"{machine.fs}/etc/rc.local:2": "echo -17 > /proc/$(pidof db)/oom_adj",
        }

    def test_nothing_is_nothing(self, machine: FakeMachine) -> None:
        assert check_oom_adj(machine.facts()) == []
        assert check_oom_adj(machine.facts(deep=False)) == []


def test_score_adjust_dropins_are_listed(machine: FakeMachine) -> None:
    path = machine.unit_dropin("postgresql.service", "oom.conf",
                               "[Service]\nNice=5\n  OOMScoreAdjust = -500\n")
    machine.unit_dropin("x.service", "notes.txt", "OOMScoreAdjust=-1000\n")  # not a .conf
    machine.fs_file("usr/lib/systemd/system/sshd.service.d/50-oom.conf",
                    "[Service]\nOOMScoreAdjust=-1000\n")
    finding = only(check_score_adjust_dropins(machine.facts()), "oom-score-adjust-dropins")
    assert finding.severity is Severity.INFO
    assert finding.summary == ("2 OOMScoreAdjust= drop-in(s): postgresql.service=-500, "
                               "sshd.service=-1000 (systemd does not run here: they have no "
                               "effect)")
    assert evidence(finding)[f"{path}:3"] == "OOMScoreAdjust=-500"
