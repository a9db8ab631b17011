"""system/meminfo.py: /proc/meminfo (fs/proc/meminfo.c: meminfo_proc_show()),
`key value` files and the OOM sysctls, on a real 6.18 meminfo and fake trees."""

from __future__ import annotations

from pathlib import Path

import pytest
from fakeproc import MEMINFO_24G_NO_SWAP, REAL_DIR, write_fake_proc

from oomlens.system.meminfo import (
    OOM_SYSCTLS,
    MemInfo,
    parse_flat,
    parse_meminfo,
    read_meminfo,
    read_sysctls,
    read_vmstat,
)

# A 3.10 kernel with swap (RHEL 7 shape): MemAvailable exists since 3.14 only.
MEMINFO_NO_MEMAVAILABLE = """\
MemTotal:        1882064 kB
MemFree:          122360 kB
Buffers:           60708 kB
Cached:           731284 kB
SwapCached:         4136 kB
Active:           911852 kB
Inactive:         615360 kB
SwapTotal:       2097148 kB
SwapFree:        2046564 kB
Dirty:                24 kB
CommitLimit:     3038180 kB
Committed_AS:    2217504 kB
VmallocTotal:   34359738367 kB
HugePages_Total:       0
Hugepagesize:       2048 kB
"""


def test_parse_real_meminfo() -> None:
    info = parse_meminfo((REAL_DIR / "meminfo").read_text())
    assert info == MemInfo(
        mem_total_kib=24_684_100,
        mem_free_kib=24_221_320,
        mem_available_kib=24_181_668,
        swap_total_kib=0,
        swap_free_kib=0,
        committed_as_kib=470_300,
        commit_limit_kib=12_342_048,
    )


def test_missing_memavailable_falls_back_to_memfree() -> None:
    info = parse_meminfo(MEMINFO_NO_MEMAVAILABLE)
    assert info.mem_total_kib == 1_882_064
    assert info.mem_available_kib == info.mem_free_kib == 122_360
    assert info.swap_total_kib == 2_097_148
    assert info.swap_free_kib == 2_046_564
    assert info.committed_as_kib == 2_217_504
    assert info.commit_limit_kib == 3_038_180


def test_lines_without_unit_and_huge_values_parse() -> None:
    # "HugePages_Total:       0" has no unit; VmallocTotal exceeds 32 bits.
    info = parse_meminfo(MEMINFO_NO_MEMAVAILABLE + "\n")
    assert info.mem_total_kib == 1_882_064


def test_memtotal_is_required() -> None:
    with pytest.raises(KeyError):
        parse_meminfo("MemFree: 1 kB\n")


def test_read_meminfo_from_proc_root(tmp_path: Path) -> None:
    root = write_fake_proc(tmp_path / "proc", meminfo=MEMINFO_NO_MEMAVAILABLE)
    assert read_meminfo(str(root)).mem_total_kib == 1_882_064
    assert MEMINFO_24G_NO_SWAP.startswith("MemTotal:")


VMSTAT = """\
nr_free_pages 6125224
nr_zone_inactive_anon 1202
pgfault 1234567890123
oom_kill 3
nr_foo -2
weird line here
drop_pagecache 0
"""


def test_parse_flat() -> None:
    assert parse_flat(VMSTAT) == {
        "nr_free_pages": 6_125_224,
        "nr_zone_inactive_anon": 1202,
        "pgfault": 1_234_567_890_123,
        "oom_kill": 3,
        "nr_foo": -2,
        "drop_pagecache": 0,
    }


def test_parse_flat_memory_events() -> None:
    text = "low 0\nhigh 12\nmax 340\noom 2\noom_kill 1\noom_group_kill 0\n"
    assert parse_flat(text)["oom_kill"] == 1
    assert parse_flat(text)["max"] == 340


def test_parse_flat_skips_non_numbers() -> None:
    assert parse_flat("a b\nc 1.5\nd 7\n\n") == {"d": 7}


def test_read_vmstat(tmp_path: Path) -> None:
    root = write_fake_proc(tmp_path / "proc")
    (root / "vmstat").write_text(VMSTAT)
    assert read_vmstat(str(root))["oom_kill"] == 3


def test_read_sysctls(tmp_path: Path) -> None:
    root = write_fake_proc(tmp_path / "proc", sysctls={
        "vm/panic_on_oom": 0,
        "vm/overcommit_memory": 2,
        "vm/swappiness": 10,
        "kernel/panic": -1,
    })
    assert read_sysctls(str(root)) == {
        "vm.panic_on_oom": 0,
        "vm.overcommit_memory": 2,
        "vm.swappiness": 10,
        "kernel.panic": -1,
    }


def test_read_sysctls_skips_missing_and_non_numeric(tmp_path: Path) -> None:
    root = write_fake_proc(tmp_path / "proc", sysctls={"vm/swappiness": 60})
    (root / "sys" / "vm" / "oom_dump_tasks").write_text("yes\n")
    assert read_sysctls(str(root)) == {"vm.swappiness": 60}


def test_read_sysctls_names() -> None:
    assert "vm/panic_on_oom" in OOM_SYSCTLS
    assert "vm/swappiness" in OOM_SYSCTLS
