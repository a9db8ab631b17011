"""kernel/overcommit.py: CommitLimit recomputed as mm/util.c: vm_commit_limit() does,
against the value the kernel printed in real /proc/meminfo files."""

from __future__ import annotations

from fakeproc import REAL_DIR

from oomlens.kernel.overcommit import vm_commit_limit_kib
from oomlens.system.meminfo import parse_meminfo

PAGE = 4096


def test_matches_the_kernel_without_swap() -> None:
    info = parse_meminfo((REAL_DIR / "meminfo").read_text())
    # 24684100 kB = 6171025 pages; * 50 / 100 truncates to 3085512 pages.
    assert vm_commit_limit_kib(info.mem_total_kib, info.hugetlb_kib, info.swap_total_kib,
                               50, 0, PAGE) == info.commit_limit_kib == 12_342_048


def test_matches_the_kernel_with_swap() -> None:
    # A 1.8 GiB machine with 2 GiB of swap: CommitLimit 3038180 kB as printed.
    assert vm_commit_limit_kib(1_882_064, 0, 2_097_148, 50, 0, PAGE) == 3_038_180


def test_huge_pages_are_not_committable_and_kbytes_replaces_the_ratio() -> None:
    meminfo = "MemTotal: 8388608 kB\nHugetlb: 2097152 kB\nSwapTotal: 1048576 kB\n"
    info = parse_meminfo(meminfo)
    assert info.hugetlb_kib == 2_097_152
    assert vm_commit_limit_kib(info.mem_total_kib, info.hugetlb_kib, info.swap_total_kib,
                               100, 0, PAGE) == 8_388_608 - 2_097_152 + 1_048_576
    assert vm_commit_limit_kib(info.mem_total_kib, info.hugetlb_kib, info.swap_total_kib,
                               100, 1_000_001, PAGE) == 1_000_000 + 1_048_576
