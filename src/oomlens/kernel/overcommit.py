"""The commit limit: how much address space `vm.overcommit_memory = 2` lets processes
commit (mm/util.c, v6.6).

vm_commit_limit(): `overcommit_kbytes` in pages if set, else
`(totalram_pages - hugetlb_total_pages) * overcommit_ratio / 100` (unsigned, so the
division truncates), plus `total_swap_pages`. /proc/meminfo prints it as
`CommitLimit` (fs/proc/meminfo.c: meminfo_proc_show()) in every mode, but only mode 2
(OVERCOMMIT_NEVER) enforces it: __vm_enough_memory() refuses an allocation once
`Committed_AS` would pass the limit less the admin and user reserves. Mode 0
(OVERCOMMIT_GUESS) refuses only a single request larger than RAM + swap; mode 1
(OVERCOMMIT_ALWAYS) refuses nothing.
"""

from __future__ import annotations

OVERCOMMIT_GUESS = 0
OVERCOMMIT_ALWAYS = 1
OVERCOMMIT_NEVER = 2


def vm_commit_limit_kib(mem_total_kib: int, hugetlb_kib: int, swap_total_kib: int,
                        overcommit_ratio: int, overcommit_kbytes: int, page_size: int) -> int:
    """`CommitLimit` in KiB, computed in pages as the kernel does (mm/util.c:
    vm_commit_limit()): MemTotal is totalram_pages, SwapTotal total_swap_pages and
    `Hugetlb` hugetlb_total_pages, each times the page size."""
    kib_per_page = page_size // 1024
    if overcommit_kbytes:
        allowed = overcommit_kbytes // kib_per_page
    else:
        ram_pages = mem_total_kib // kib_per_page - hugetlb_kib // kib_per_page
        allowed = ram_pages * overcommit_ratio // 100
    return (allowed + swap_total_kib // kib_per_page) * kib_per_page
