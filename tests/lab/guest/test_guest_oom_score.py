"""`/proc/<pid>/oom_score` predicted exactly for every process of the guest, with
zram swap on (SwapTotal counts in totalpages) and a process with swapped-out pages
(swapents count in badness)."""

from __future__ import annotations

import time

import pytest
from guestlib import Record, SandboxFactory, swap_state, swap_total_kib, wait_for

from oomlens.kernel.domain import memcg_totalpages_v2, page_counter_max
from oomlens.ranking import rank_domain
from oomlens.system.sandbox import MIB
from oomlens.system.snapshot import PAGE_SIZE, take_snapshot

pytestmark = pytest.mark.guest
ATTEMPTS = 5


def _vm_swap_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmSwap:"):
                return int(line.split()[1])
    return 0


def test_oom_score_predicted_for_every_process(
    sandbox: SandboxFactory, record_property: Record
) -> None:
    with swap_state(on=True):
        group = sandbox(32 * MIB, swap_limit_bytes=None)  # swap.max "max"
        swapped = group.start_hog(64, 0)  # half of it swapped out
        others = sandbox(64 * MIB)
        for size, adj in ((8, -500), (4, 700), (2, 0)):
            others.start_hog(size, adj)
        wait_for(lambda: _vm_swap_kib(swapped.pid) > 0, "swapped-out pages")
        total_swap_pages = swap_total_kib() * 1024 // PAGE_SIZE
        mismatches: list[str] = []
        attempts = 0
        while attempts < ATTEMPTS:
            attempts += 1
            snapshot = take_snapshot()
            ranked = rank_domain(snapshot, snapshot.global_domain)
            mismatches = [
                f"{r.process.pid} ({r.process.comm}): predicted {r.predicted_oom_score}, "
                f"kernel {r.process.oom_score}"
                for r in ranked if r.predicted_oom_score != r.process.oom_score
            ]
            if not mismatches:
                break
            time.sleep(0.2)
        swapped_task = snapshot.process(swapped.pid).task
        domain = next(d for d in snapshot.memcg_domains() if d.path == group.path)

    record_property("processes", len(ranked))
    record_property("eligible", sum(1 for r in ranked if r.ranked.rank is not None))
    record_property("attempts", attempts)
    record_property("global_totalpages", snapshot.global_domain.totalpages)
    record_property("swap_total_pages", total_swap_pages)
    record_property("swapped_hog_swapents", swapped_task.swapents)
    record_property("eligible_pid:oom_score", " ".join(
        f"{r.process.pid}:{r.process.oom_score}" for r in ranked if r.ranked.rank is not None))
    assert total_swap_pages > 0
    assert snapshot.total_swap_pages == total_swap_pages
    assert all(r.process.oom_score is not None for r in ranked), "oom_score unreadable"
    assert len(ranked) == len(snapshot.processes) > 10
    assert not mismatches, f"{len(mismatches)} mismatches: " + "; ".join(mismatches)
    assert swapped_task.swapents > 0
    assert domain.totalpages == memcg_totalpages_v2(
        32 * MIB // PAGE_SIZE, page_counter_max(PAGE_SIZE), snapshot.sysctls["vm.swappiness"],
        total_swap_pages,
    )
