"""What the OOM killer knows about a task: the inputs of its rules, as plain values.

The system layer fills these from `/proc`; the rules in this package never do I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

OOM_SCORE_ADJ_MIN = -1000
OOM_SCORE_ADJ_MAX = 1000


@dataclass(frozen=True, slots=True)
class Task:
    """One thread-group leader as `select_bad_process` sees it (include/linux/sched.h).

    Memory is in pages, as the kernel's `mm_struct` counters are; `pgtables_bytes`
    stays in bytes as `mm_pgtables_bytes()` returns it. `scan_order` orders tasks the
    way the kernel walks them (for ties): creation order for `for_each_process`.
    """

    pid: int
    comm: str
    oom_score_adj: int
    rss_anon_pages: int
    rss_file_pages: int
    rss_shmem_pages: int
    swapents: int
    pgtables_bytes: int
    page_size: int = 4096
    is_kthread: bool = False
    has_mm: bool = True
    is_global_init: bool = False
    cap_sys_admin: bool = False
    scan_order: int = 0

    @property
    def rss_pages(self) -> int:
        """`get_mm_rss()`: MM_FILEPAGES + MM_ANONPAGES + MM_SHMEMPAGES."""
        return self.rss_anon_pages + self.rss_file_pages + self.rss_shmem_pages

    @property
    def pgtables_pages(self) -> int:
        """`mm_pgtables_bytes(mm) / PAGE_SIZE` (C division of non-negatives)."""
        return self.pgtables_bytes // self.page_size

    @property
    def mm_counters(self) -> tuple[int, int, int, int, int]:
        """(anon, file, shmem, swap, page table bytes): what every process sharing one
        mm_struct reads, so processes with equal ones may share it."""
        return (self.rss_anon_pages, self.rss_file_pages, self.rss_shmem_pages,
                self.swapents, self.pgtables_bytes)


class Ineligible(StrEnum):
    """Why the OOM killer will never pick a task (mm/oom_kill.c: oom_unkillable_task(),
    oom_badness())."""

    KTHREAD = "kernel thread (PF_KTHREAD): the OOM killer never kills kernel threads"
    GLOBAL_INIT = "pid 1 of the initial pid namespace (is_global_init)"
    NO_MM = "no address space (zombie or exiting): nothing to free"
    OOM_SCORE_ADJ_MIN = "oom_score_adj is -1000 (OOM_SCORE_ADJ_MIN): never killed"


def ineligible_reason(task: Task) -> Ineligible | None:
    """Why `task` is not a candidate, or None when it is.

    mm/oom_kill.c: oom_unkillable_task() rejects `is_global_init()` and PF_KTHREAD;
    oom_badness() rejects tasks without an mm (find_lock_task_mm() fails) and
    `oom_score_adj == OOM_SCORE_ADJ_MIN`. Two more rules cannot be seen from /proc and
    are not modelled: MMF_OOM_SKIP (a victim already reaped) and in_vfork() children.
    """
    if task.is_kthread:
        return Ineligible.KTHREAD
    if task.is_global_init:
        return Ineligible.GLOBAL_INIT
    if not task.has_mm:
        return Ineligible.NO_MM
    if task.oom_score_adj == OOM_SCORE_ADJ_MIN:
        return Ineligible.OOM_SCORE_ADJ_MIN
    return None
