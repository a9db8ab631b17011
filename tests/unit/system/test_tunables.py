"""system/tunables.py on fake /proc and /sys trees: sysctls read and written, the boot
command line, the crash kernel, /proc/swaps (escaped names), zram, zswap, PSI, a memory
cgroup's controls (v1 and v2), and sysctl.d files read after oomlens's own."""

from __future__ import annotations

from pathlib import Path

import pytest
from fakecgroup import make_v1_memcg, make_v2_memcg

from oomlens.errors import OomlensError
from oomlens.system.memcg import MemcgMount
from oomlens.system.tunables import (
    MemcgControls,
    ZramDevice,
    boot_parameter,
    parse_swaps,
    parse_sysctl_conf,
    psi_problem,
    read_kexec_crash_loaded,
    read_memcg_controls,
    read_swaps,
    read_sysctl,
    read_zram,
    read_zswap_enabled,
    settings_after,
    sysctl_path,
    write_sysctl,
)

MIB = 1 << 20
# mm/swapfile.c: swap_show() on 6.1, a name with a space escaped by seq_file_path().
SWAPS = """\
Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority
/dev/zram0                              partition\t4194300\t\t123456\t\t100
/var/swap\\040file                       file\t\t2097148\t\t0\t\t-2
"""


def test_sysctl_read_and_write(tmp_path: Path) -> None:
    vm = tmp_path / "sys" / "vm"
    vm.mkdir(parents=True)
    (vm / "swappiness").write_text("60\n")
    assert sysctl_path(str(tmp_path), "vm.swappiness") == f"{tmp_path}/sys/vm/swappiness"
    assert read_sysctl(str(tmp_path), "vm.swappiness") == "60"
    assert read_sysctl(str(tmp_path), "vm.nosuch") is None
    write_sysctl(str(tmp_path), "vm.swappiness", "5")
    assert (vm / "swappiness").read_text() == "5\n"
    with pytest.raises(OomlensError, match=r"no sysctl vm.nosuch on this kernel"):
        write_sysctl(str(tmp_path), "vm.nosuch", "1")


@pytest.mark.parametrize(("cmdline", "key", "value"), [
    ("root=/dev/vda crashkernel=512M quiet", "crashkernel", "512M"),
    ("crashkernel=1G-4G:192M,4G-64G:256M psi=0 psi=1", "psi", "1"),
    ("quiet psi", "psi", ""),
    ("quiet -- psi=1", "psi", None),
    ("", "psi", None),
])
def test_boot_parameter(cmdline: str, key: str, value: str | None) -> None:
    assert boot_parameter(cmdline, key) == value


def test_swaps() -> None:
    areas = parse_swaps(SWAPS)
    assert [(a.filename, a.type, a.size_kib, a.used_kib, a.priority) for a in areas] == [
        ("/dev/zram0", "partition", 4_194_300, 123_456, 100),
        ("/var/swap file", "file", 2_097_148, 0, -2)]
    assert parse_swaps(SWAPS.splitlines()[0] + "\n") == ()


def test_missing_files_are_facts_not_errors(tmp_path: Path) -> None:
    assert read_swaps(str(tmp_path)) is None
    assert read_kexec_crash_loaded(str(tmp_path)) is None
    assert read_zswap_enabled(str(tmp_path)) is None
    assert read_zram(str(tmp_path)) == ()
    assert psi_problem(str(tmp_path)) == (f"{tmp_path}/pressure/memory does not exist: the "
                                          "kernel is built without CONFIG_PSI")


def test_sys_facts(tmp_path: Path) -> None:
    (tmp_path / "kernel").mkdir()
    (tmp_path / "kernel" / "kexec_crash_loaded").write_text("1\n")
    (tmp_path / "module" / "zswap" / "parameters").mkdir(parents=True)
    (tmp_path / "module" / "zswap" / "parameters" / "enabled").write_text("Y\n")
    for name, size in (("zram0", 1 << 30), ("zram1", 0)):
        (tmp_path / "block" / name).mkdir(parents=True)
        (tmp_path / "block" / name / "disksize").write_text(f"{size}\n")
    (tmp_path / "block" / "zram0" / "mm_stat").write_text(
        " 52428800 17476267 18874368        0 18874368        0        0        0        0\n")
    (tmp_path / "block" / "vda").mkdir()
    assert read_kexec_crash_loaded(str(tmp_path)) is True
    assert read_zswap_enabled(str(tmp_path)) is True
    assert read_zram(str(tmp_path)) == (ZramDevice("zram0", 1 << 30, 52_428_800, 17_476_267),)


def test_memcg_controls_v1(tmp_path: Path) -> None:
    box = make_v1_memcg(tmp_path, "/box", limit_bytes=64 * MIB, usage_bytes=60 * MIB,
                        oom_kill_disable=1)
    (box / "memory.oom_control").write_text("oom_kill_disable 1\nunder_oom 1\noom_kill 0\n")
    (box / "memory.stat").write_text(f"cache 4096\ninactive_file 1\ntotal_inactive_file "
                                     f"{MIB}\n")
    controls = read_memcg_controls(MemcgMount(1, str(tmp_path)), "/box")
    assert controls == MemcgControls(usage_bytes=60 * MIB, high_bytes=None, high_events=None,
                                     oom_group=None, under_oom=True, inactive_file_bytes=MIB)


def test_memcg_controls_v2(tmp_path: Path) -> None:
    pod = make_v2_memcg(tmp_path, "/pod", max_bytes=512 * MIB, current_bytes=100 * MIB)
    (pod / "memory.high").write_text(f"{400 * MIB}\n")
    (pod / "memory.oom.group").write_text("1\n")
    (pod / "memory.events").write_text("low 0\nhigh 12\nmax 0\noom 0\noom_kill 0\n")
    (pod / "memory.stat").write_text(f"anon 1\nactive_file 2\ninactive_file {3 * MIB}\n")
    mount = MemcgMount(2, str(tmp_path))
    assert read_memcg_controls(mount, "/pod") == MemcgControls(
        usage_bytes=100 * MIB, high_bytes=400 * MIB, high_events=12, oom_group=True,
        under_oom=None, inactive_file_bytes=3 * MIB)
    (pod / "memory.high").write_text("max\n")
    assert read_memcg_controls(mount, "/pod").high_bytes is None
    assert read_memcg_controls(mount, "/gone") == MemcgControls(None, None, None, None, None,
                                                                None)


def test_sysctl_conf_and_the_files_after_ours(tmp_path: Path) -> None:
    assert parse_sysctl_conf("# c\n; c\nvm.swappiness=10\n-vm/panic_on_oom = 1\n"
                             "vm.swappiness = 20\nbroken line\n") == {
        "vm.swappiness": "20", "vm.panic_on_oom": "1"}
    (tmp_path / "10-early.conf").write_text("vm.swappiness = 1\n")
    (tmp_path / "90-oomlens-x.conf").write_text("vm.swappiness = 5\n")
    (tmp_path / "99-late.conf").write_text("vm.swappiness = 9\nkernel.panic = 3\n")
    (tmp_path / "99-late.conf.bak").write_text("vm.swappiness = 7\n")
    assert settings_after(str(tmp_path), "90-oomlens-x.conf", ["vm.swappiness"]) == [
        (f"{tmp_path}/99-late.conf", "vm.swappiness", "9")]
    assert settings_after(str(tmp_path / "nosuch"), "90-oomlens-x.conf", ["vm.swappiness"]) == []
