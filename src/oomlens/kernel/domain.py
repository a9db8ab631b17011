"""OOM domains: the sets of tasks one OOM kill chooses among, and their totalpages.

A global OOM weighs every task against totalram_pages() + total_swap_pages. A memcg
OOM (limit hit in memory cgroup M) weighs the tasks of M's subtree against M's own
`mem_cgroup_get_max()` (mm/memcontrol.c), so a task is in the global domain and in
one domain per limited memcg on its path, ancestors included. Because
`oom_score_adj` is scaled by totalpages/1000, +300 is about 7 GB in a 24 GiB machine
but 77 MB in a 256 MiB memcg: `/proc/<pid>/oom_score` (global) can name the wrong
victim for a container.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

# include/linux/page_counter.h: PAGE_COUNTER_MAX = LONG_MAX / PAGE_SIZE (64-bit).
LONG_MAX = (1 << 63) - 1


def page_counter_max(page_size: int) -> int:
    return LONG_MAX // page_size


class DomainKind(StrEnum):
    GLOBAL = "global"
    MEMCG = "memcg"


@dataclass(frozen=True, slots=True)
class OomDomain:
    """One place an OOM can happen. `path` is the memcg path ("/" for global)."""

    kind: DomainKind
    path: str
    totalpages: int

    @property
    def label(self) -> str:
        return "global" if self.kind is DomainKind.GLOBAL else f"memcg {self.path}"


def global_totalpages(mem_total_kib: int, swap_total_kib: int, page_size: int) -> int:
    """totalram_pages() + total_swap_pages (fs/proc/base.c: proc_oom_score();
    mm/oom_kill.c: constrained_alloc()). MemTotal and SwapTotal are those counters
    shifted to KiB, so the division is exact."""
    kib_per_page = page_size // 1024
    return mem_total_kib // kib_per_page + swap_total_kib // kib_per_page


def memcg_totalpages_v1(
    limit_pages: int, memsw_limit_pages: int, swappiness: int, total_swap_pages: int
) -> int:
    """mm/memcontrol.c: mem_cgroup_get_max(), cgroup v1 (do_memsw_account()).

    With swappiness != 0 the swap the memsw limit leaves room for counts too:
    `min(memsw.max - memory.max, total_swap_pages)`, where the subtraction is on
    unsigned longs (a memsw limit below the memory limit wraps to a huge value and
    the min picks total_swap_pages). A result of 0 is treated as 1 (mm/oom_kill.c:
    mem_cgroup_out_of_memory() -> `mem_cgroup_get_max(oc->memcg) ?: 1`).
    """
    total = limit_pages
    if swappiness:
        swap_room = (memsw_limit_pages - limit_pages) % (1 << 64)
        total += min(swap_room, total_swap_pages)
    return total or 1


def memcg_totalpages_v2(
    max_pages: int, swap_max_pages: int, vm_swappiness: int, total_swap_pages: int
) -> int:
    """mm/memcontrol.c: mem_cgroup_get_max(), cgroup v2: `memory.max +
    min(memory.swap.max, total_swap_pages)` when the (global, on v2) swappiness is
    not 0."""
    total = max_pages
    if vm_swappiness:
        total += min(swap_max_pages, total_swap_pages)
    return total or 1


def is_within(path: str, ancestor: str) -> bool:
    """True if memcg `path` is `ancestor` or below it."""
    if ancestor == "/":
        return True
    return path == ancestor or path.startswith(ancestor.rstrip("/") + "/")


def domains_of(memcg_path: str | None, memcg_domains: Iterable[OomDomain]) -> list[OomDomain]:
    """The memcg domains a task in `memcg_path` belongs to, outermost first."""
    if memcg_path is None:
        return []
    found = [d for d in memcg_domains if is_within(memcg_path, d.path)]
    return sorted(found, key=lambda d: d.path.count("/") if d.path != "/" else 0)
