"""doctor/sysctls.py on a fake machine: panic_on_oom with and without a crash kernel,
kernel.panic, oom_kill_allocating_task, oom_dump_tasks, the three overcommit modes
(CommitLimit recomputed), swappiness, min_free_kbytes and watermark_scale_factor."""

from __future__ import annotations

import pytest
from fakemachine import FakeMachine, codes, evidence, meminfo_with, only

from oomlens.doctor.finding import SetSysctl, Severity
from oomlens.doctor.sysctls import (
    check_min_free_kbytes,
    check_oom_dump_tasks,
    check_oom_kill_allocating_task,
    check_overcommit,
    check_panic_on_oom,
    check_panic_reboot,
    check_swappiness,
    check_watermark_scale_factor,
)


def test_kernel_defaults_say_only_that_a_panic_halts(machine: FakeMachine) -> None:
    facts = machine.facts()
    for check in (check_panic_on_oom, check_oom_kill_allocating_task, check_oom_dump_tasks,
                  check_overcommit, check_swappiness, check_min_free_kbytes,
                  check_watermark_scale_factor):
        assert check(facts) == [], check.__name__
    halts = only(check_panic_reboot(facts), "panic-no-reboot")  # kernel.panic = 0
    assert halts.severity is Severity.INFO


class TestPanicOnOom:
    def test_without_crash_kernel_is_critical_and_planned_off(self,
                                                              machine: FakeMachine) -> None:
        machine.sysctls["vm/panic_on_oom"] = 1
        machine.crash_kernel(False)
        finding = only(check_panic_on_oom(machine.facts()), "panic-on-oom")
        assert finding.severity is Severity.CRITICAL
        assert "a system-wide OOM panics" in finding.summary
        assert evidence(finding) == {
            f"{machine.proc}/sys/vm/panic_on_oom": "1",
            f"{machine.proc}/cmdline": "no crashkernel=",
            f"{machine.sys}/kernel/kexec_crash_loaded": "0",
        }
        assert finding.proposals == (SetSysctl("vm.panic_on_oom", "0"),)

    def test_mode_2_panics_on_memcg_ooms_too(self, machine: FakeMachine) -> None:
        machine.sysctls["vm/panic_on_oom"] = 2
        finding = only(check_panic_on_oom(machine.facts()), "panic-on-oom")
        assert "every OOM, memory cgroup limits included" in finding.summary
        assert evidence(finding)[f"{machine.sys}/kernel/kexec_crash_loaded"] == \
            "absent (kernel without kexec)"

    def test_with_a_loaded_crash_kernel_is_a_warning_without_a_plan(
            self, machine: FakeMachine) -> None:
        machine.sysctls["vm/panic_on_oom"] = 1
        machine.cmdline = "root=/dev/vda crashkernel=256M quiet -- crashkernel=1G"
        machine.crash_kernel(True)
        finding = only(check_panic_on_oom(machine.facts()), "panic-on-oom")
        assert finding.severity is Severity.WARNING
        assert "kdump saves a vmcore" in finding.summary
        # The words after `--` go to init, not the kernel.
        assert evidence(finding)[f"{machine.proc}/cmdline"] == "crashkernel=256M"
        assert finding.proposals == ()

    def test_no_reboot_after_panic_is_a_warning_only_with_panic_on_oom(
            self, machine: FakeMachine) -> None:
        machine.sysctls["kernel/panic"] = 0
        quiet = only(check_panic_reboot(machine.facts()), "panic-no-reboot")
        assert quiet.severity is Severity.INFO and quiet.proposals == ()
        machine.sysctls["vm/panic_on_oom"] = 1
        loud = only(check_panic_reboot(machine.facts()), "panic-no-reboot")
        assert loud.severity is Severity.WARNING
        assert loud.proposals == (SetSysctl("kernel.panic", "10"),)
        machine.sysctls["kernel/panic"] = -1
        assert check_panic_reboot(machine.facts()) == []


@pytest.mark.parametrize(("name", "value", "check", "code", "fixed"), [
    ("vm/oom_kill_allocating_task", 1, check_oom_kill_allocating_task, "kill-allocating-task",
     "0"),
    ("vm/oom_dump_tasks", 0, check_oom_dump_tasks, "no-task-dump", "1"),
    ("vm/watermark_scale_factor", 1500, check_watermark_scale_factor,
     "watermark-scale-factor-high", "10"),
])
def test_one_sysctl_one_warning_one_fix(machine: FakeMachine, name: str, value: int,
                                        check: object, code: str, fixed: str) -> None:
    machine.sysctls[name] = value
    finding = only(check(machine.facts()), code)  # type: ignore[operator]
    assert finding.severity is Severity.WARNING
    dotted = name.replace("/", ".")
    assert evidence(finding) == {f"{machine.proc}/sys/{name}": str(value)}
    assert finding.proposals == (SetSysctl(dotted, fixed),)


def test_watermark_scale_factor_share_is_the_kernels(machine: FakeMachine) -> None:
    machine.sysctls["vm/watermark_scale_factor"] = 1500  # 15 % between watermarks
    finding = only(check_watermark_scale_factor(machine.facts()), "watermark-scale-factor-high")
    assert "keeps up to 30.0% of memory free" in finding.summary
    machine.sysctls["vm/watermark_scale_factor"] = 1000
    assert check_watermark_scale_factor(machine.facts()) == []


class TestOvercommit:
    def test_strict_mode_near_the_limit_and_below_ram(self, machine: FakeMachine) -> None:
        # CommitLimit 12342048 kB: 50 % of 24684100 kB in 4 KiB pages (no swap).
        machine.sysctls["vm/overcommit_memory"] = 2
        machine.meminfo = meminfo_with(Committed_AS=11_500_000)
        findings = check_overcommit(machine.facts())
        assert codes(findings) == ["commit-limit-near", "commit-limit-below-ram"]
        near = findings[0]
        assert "93.2% of the commit limit" in near.summary
        values = evidence(near)
        assert values[f"{machine.proc}/meminfo CommitLimit"].startswith("12342048 kB")
        assert values["CommitLimit recomputed (mm/util.c: vm_commit_limit())"] == "12342048 kB"
        assert all(f.severity is Severity.WARNING and not f.proposals for f in findings)

    def test_strict_mode_with_room_and_full_ratio_says_nothing(self,
                                                               machine: FakeMachine) -> None:
        machine.sysctls |= {"vm/overcommit_memory": 2, "vm/overcommit_ratio": 100}
        machine.meminfo = meminfo_with(CommitLimit=24_684_100, Committed_AS=1_000_000)
        assert check_overcommit(machine.facts()) == []

    def test_always_mode_is_info(self, machine: FakeMachine) -> None:
        machine.sysctls["vm/overcommit_memory"] = 1
        finding = only(check_overcommit(machine.facts()), "overcommit-always")
        assert finding.severity is Severity.INFO

    def test_guess_mode_promising_more_than_ram_and_swap(self, machine: FakeMachine) -> None:
        machine.meminfo = meminfo_with(Committed_AS=30_000_000)
        finding = only(check_overcommit(machine.facts()), "overcommitted")
        assert finding.severity is Severity.INFO
        assert finding.summary.startswith("29 GiB of memory is promised, more than RAM and swap "
                                          "(24 GiB)")


def test_swappiness_zero_matters_only_with_swap(machine: FakeMachine) -> None:
    machine.sysctls["vm/swappiness"] = 0
    assert check_swappiness(machine.facts()) == []
    machine.swap_area("/swapfile", "file", 2_097_148, 0)
    finding = only(check_swappiness(machine.facts()), "swappiness-zero")
    assert finding.severity is Severity.INFO


class TestMinFreeKbytes:
    def test_below_the_kernels_value_is_planned_back(self, machine: FakeMachine) -> None:
        # int_sqrt(24684100 * 16) = 19873 kB (mm/page_alloc.c: calculate_min_free_kbytes())
        machine.sysctls["vm/min_free_kbytes"] = 8000
        finding = only(check_min_free_kbytes(machine.facts()), "min-free-kbytes-low")
        assert "below the 19873 kB the kernel sets" in finding.summary
        assert finding.proposals == (SetSysctl("vm.min_free_kbytes", "19873"),)

    def test_a_little_below_is_lowmem_not_a_finding(self, machine: FakeMachine) -> None:
        machine.sysctls["vm/min_free_kbytes"] = 18000  # > 90 % of 19873
        assert check_min_free_kbytes(machine.facts()) == []

    def test_above_five_percent_of_ram(self, machine: FakeMachine) -> None:
        machine.sysctls["vm/min_free_kbytes"] = 1_300_000
        finding = only(check_min_free_kbytes(machine.facts()), "min-free-kbytes-high")
        assert "keeps 5.3% of RAM free" in finding.summary
        assert finding.proposals == ()
