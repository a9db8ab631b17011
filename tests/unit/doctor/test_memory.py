"""doctor/memory.py on a fake machine: headroom, no swap, swap nearly full, zram swap,
zswap without swap and over zram, and PSI missing or disabled at boot."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest
from fakemachine import FakeMachine, codes, evidence, meminfo_with, only

from oomlens.doctor.finding import Severity
from oomlens.doctor.memory import check_low_available, check_psi, check_swap, check_zram_zswap
from oomlens.system import tunables

GIB_KIB = 1 << 20


def test_low_available(machine: FakeMachine) -> None:
    assert check_low_available(machine.facts()) == []
    machine.meminfo = meminfo_with(MemAvailable=2_000_000)
    finding = only(check_low_available(machine.facts()), "low-available")
    assert finding.severity is Severity.WARNING
    assert finding.summary == "only 8.1% of memory is available (1.9 GiB of 24 GiB)"
    assert evidence(finding)[f"{machine.proc}/meminfo MemAvailable"] == "2000000 kB"


def test_no_swap_is_info_with_the_evidence(machine: FakeMachine) -> None:
    finding = only(check_swap(machine.facts()), "no-swap")
    assert finding.severity is Severity.INFO
    assert evidence(finding) == {f"{machine.proc}/swaps": "no swap areas",
                                 f"{machine.proc}/meminfo SwapTotal": "0 kB"}


def test_swap_with_room_says_nothing_and_nearly_full_warns(machine: FakeMachine) -> None:
    machine.swap_area("/dev/vda2", "partition", 4 * GIB_KIB, GIB_KIB)
    assert check_swap(machine.facts()) == []
    machine.swaps.clear()
    machine.swap_area("/dev/vda2", "partition", 2 * GIB_KIB, 2 * GIB_KIB - 1000)
    machine.swap_area("/swap file", "file", 2 * GIB_KIB, 2 * GIB_KIB)
    finding = only(check_swap(machine.facts()), "swap-nearly-full")
    assert finding.summary == "swap is 100.0% full (4.0 GiB of 4.0 GiB)"
    assert [e.value for e in finding.evidence] == [
        "/dev/vda2 (partition) size 2097152 kB, used 2096152 kB, priority -2",
        "/swap file (file) size 2097152 kB, used 2097152 kB, priority -2"]


def test_zram_swap_and_zswap_in_front_of_it(machine: FakeMachine) -> None:
    machine.zram("zram0", 4 << 30, orig=900 << 20, compr=300 << 20)
    machine.zram("zram1", 0, orig=0, compr=0)  # not initialised: not a device in use
    machine.swap_area("/dev/zram0", "partition", 4 * GIB_KIB, 900 * 1024, 100)
    machine.zswap(True)
    findings = check_zram_zswap(machine.facts())
    assert codes(findings) == ["zram-swap", "zswap-over-zram"]
    zram, zswap = findings
    assert zram.summary == "swap on zram: /dev/zram0, 4.0 GiB, holding 900 MiB in 300 MiB of RAM"
    assert zswap.severity is Severity.WARNING
    assert evidence(zswap)[f"{machine.sys}/module/zswap/parameters/enabled"] == "Y"


def test_zswap_without_swap_does_nothing(machine: FakeMachine) -> None:
    machine.zswap(True)
    assert codes(check_zram_zswap(machine.facts())) == ["zswap-without-swap"]
    machine.zswap(False)
    assert check_zram_zswap(machine.facts()) == []


def test_psi_missing_means_a_kernel_without_it(machine: FakeMachine) -> None:
    assert check_psi(machine.facts()) == []
    machine.pressure = None
    finding = only(check_psi(machine.facts()), "no-psi")
    assert evidence(finding)[f"{machine.proc}/cmdline"] == "no psi="
    assert "does not exist: the kernel is built without CONFIG_PSI" in \
        evidence(finding)[f"{machine.proc}/pressure/memory"]
    assert finding.fix.startswith("Use a kernel built with CONFIG_PSI=y")


def test_psi_disabled_at_boot_asks_for_psi_1(machine: FakeMachine,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """kernel/sched/psi.c: psi_show() answers EOPNOTSUPP when PSI is disabled at boot,
    which a file on disk cannot; the reader is made to see that errno."""
    machine.cmdline = "root=/dev/vda psi=0"
    real = tunables.read_text

    def read_text(path: str) -> str:
        if path.endswith("pressure/memory"):
            raise OSError(errno.EOPNOTSUPP, "Operation not supported", path)
        return real(path)

    machine.pressure = None
    machine.write()
    Path(machine.proc / "pressure").mkdir(exist_ok=True)
    monkeypatch.setattr(tunables, "read_text", read_text)
    finding = only(check_psi(machine.facts()), "no-psi")
    assert evidence(finding)[f"{machine.proc}/cmdline"] == "psi=0"
    assert "EOPNOTSUPP: PSI is disabled at boot" in evidence(finding)[
        f"{machine.proc}/pressure/memory"]
    assert finding.fix.startswith("Boot with psi=1")
