"""simulate/whatif.py: the kill order until enough is freed, what each kill frees,
processes sharing an mm, what-if oom_score_adj values and a grower's final size, on
Snapshots built directly (no I/O)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import pytest

from oomlens.errors import ProcessGone, UsageError
from oomlens.kernel.domain import DomainKind, OomDomain
from oomlens.kernel.task import Task
from oomlens.ranking import find_domain, rank_domain
from oomlens.simulate.whatif import Kill, apply_overrides, check_members, kill_order, with_grower
from oomlens.system.memcg import Memcg, MemcgMount
from oomlens.system.meminfo import MemInfo
from oomlens.system.snapshot import Process, ScanNotes, Snapshot

PAGE = 4096
MIB = 1 << 20
BOX_PAGES = 65_536  # 256 MiB: one adj point = 65 pages


def proc(pid: int, anon: int, memcg: str | None = "/box", *, adj: int = 0, file: int = 0,
         ptes: int = 0, swap: int = 0, start: int | None = None, **flags: bool) -> Process:
    """A process of `anon` anonymous pages, `ptes` pages of page tables."""
    started = pid if start is None else start
    task = Task(pid=pid, comm=f"p{pid}", oom_score_adj=adj, rss_anon_pages=anon,
                rss_file_pages=file, rss_shmem_pages=0, swapents=swap,
                pgtables_bytes=ptes * PAGE, page_size=PAGE, scan_order=(started << 22) | pid,
                **flags)
    return Process(task=task, ppid=1, cmdline=f"/bin/p{pid}", uid=0, user="root", state="S",
                   start_time_ticks=started, oom_score=None, memcg=memcg, unit=None)


def box_memcg(path: str = "/box", pages: int = BOX_PAGES) -> Memcg:
    return Memcg(path=path, version=2, limit_bytes=pages * PAGE, swap_limit_bytes=0,
                 usage_bytes=0, swap_usage_bytes=0, swappiness=60, oom_kill=0,
                 oom_kill_disable=False, raw_limit_pages=pages, raw_swap_limit_pages=0)


INIT = proc(1, 3_000, "/", is_global_init=True)
KTHREAD = proc(2, 0, "/", is_kthread=True, has_mm=False)
BIG = proc(100, 40_000, file=2_000, ptes=100)          # 42_100 points in /box
SMALL = proc(101, 10_000, adj=300)                      # 10_000 + 300 * 65 = 29_500
# One mm in two processes (CLONE_VM): the same counters, each 20_000 points.
TWIN_A = proc(102, 20_000, ptes=40)
TWIN_B = proc(103, 20_000, ptes=40)
EXEMPT = proc(104, 90_000, adj=-1000)
OUTSIDE = proc(200, 100_000, "/other")
TWINS = {102: frozenset({102, 103}), 103: frozenset({102, 103})}


def snapshot(*processes: Process) -> Snapshot:
    return Snapshot(
        kernel_release="6.1.0", kernel_version=(6, 1, 0), page_size=PAGE,
        meminfo=MemInfo(mem_total_kib=24 << 20, mem_free_kib=0, mem_available_kib=0,
                        swap_total_kib=0, swap_free_kib=0, committed_as_kib=0,
                        commit_limit_kib=0),
        sysctls={"vm.swappiness": 60}, pressure=None, memcg_mount=MemcgMount(2, "/cg"),
        memcgs=(box_memcg(), box_memcg("/other", 1 << 20)),
        processes=processes or (INIT, KTHREAD, BIG, SMALL, TWIN_A, TWIN_B, EXEMPT, OUTSIDE),
        notes=ScanNotes(),
    )


def box(snap: Snapshot) -> OomDomain:
    return find_domain(snap, "/box")


def victims(kills: Sequence[Kill]) -> list[int]:
    return [k.victim.process.pid for k in kills]


class TestKillOrder:
    def test_without_need_only_the_first_victim(self) -> None:
        snap = snapshot()
        order = kill_order(snap, box(snap), None, TWINS)
        assert victims(order.kills) == [100]
        (kill,) = order.kills
        # Anonymous memory and page tables come back; the file pages stay cached.
        assert kill.freed_bytes == (40_000 + 100) * PAGE
        assert kill.rss_bytes == 42_000 * PAGE
        assert order.need_met and order.freed_bytes == kill.freed_bytes
        assert order.eligible == 4  # BIG, SMALL and the twins: nothing else of /box

    def test_until_need_is_freed_the_mm_counts_once(self) -> None:
        snap = snapshot()
        need = 250 * MIB  # 64_000 pages: BIG 40_100 + SMALL 10_000 are not enough
        order = kill_order(snap, box(snap), need, TWINS)
        assert victims(order.kills) == [100, 101, 103]
        third = order.kills[2]
        # Equal points: the later-scanned twin is chosen, the other dies with it.
        assert [p.pid for p in third.also_killed] == [102]
        assert third.freed_bytes == (20_000 + 40) * PAGE  # once, not twice
        assert [k.freed_total_bytes for k in order.kills] == [
            40_100 * PAGE, 50_100 * PAGE, 70_140 * PAGE]
        assert order.need_met and order.freed_bytes >= need

    def test_order_is_the_rank_order_without_the_dead_twin(self) -> None:
        snap = snapshot()
        everything = 10**12
        order = kill_order(snap, box(snap), everything, TWINS)
        ranked = [r.process.pid for r in rank_domain(snap, box(snap)) if r.ranked.rank]
        assert ranked == [100, 101, 103, 102]
        assert victims(order.kills) == [100, 101, 103]
        assert not order.need_met

    def test_ineligible_and_outside_processes_are_never_killed(self) -> None:
        snap = snapshot()
        order = kill_order(snap, box(snap), 10**12, TWINS)
        assert {104, 200, 1, 2}.isdisjoint(victims(order.kills))

    def test_without_shared_mm_the_twins_die_one_by_one(self) -> None:
        snap = snapshot()
        order = kill_order(snap, box(snap), 10**12, {})
        assert victims(order.kills) == [100, 101, 103, 102]
        assert order.freed_bytes == (40_100 + 10_000 + 2 * 20_040) * PAGE

    def test_an_mm_pinned_by_init_frees_nothing(self) -> None:
        pinned = proc(105, 50_000, "/")
        snap = snapshot(INIT, pinned, proc(106, 10_000, "/"))
        groups = {1: frozenset({1, 105}), 105: frozenset({1, 105})}
        order = kill_order(snap, snap.global_domain, 1, groups)
        first = order.kills[0]
        assert first.victim.process.pid == 105
        assert first.pinned_by is not None and first.pinned_by.pid == 1
        assert first.also_killed == () and first.freed_bytes == 0
        assert victims(order.kills) == [105, 106]  # init is never a victim itself

    def test_nothing_eligible(self) -> None:
        snap = snapshot(EXEMPT)
        order = kill_order(snap, box(snap), None, {})
        assert order.kills == () and not order.need_met and order.freed_bytes == 0


class TestOverrides:
    def test_a_what_if_value_changes_the_order_and_nothing_else(self) -> None:
        snap = snapshot()
        what_if, overrides = apply_overrides(snap, {101: 1000}, TWINS)
        assert [(o.pid, o.old, o.new, o.named) for o in overrides] == [(101, 300, 1000, 101)]
        # 10_000 + 1000 * 65 = 75_000 > BIG's 42_100
        assert victims(kill_order(what_if, box(what_if), None, TWINS).kills) == [101]
        assert snap.process(101).task.oom_score_adj == 300  # the original is untouched
        assert what_if.process(100) == snap.process(100)

    def test_the_value_reaches_every_process_on_the_mm(self) -> None:
        snap = snapshot()
        what_if, overrides = apply_overrides(snap, {102: 500}, TWINS)
        assert sorted((o.pid, o.new, o.named) for o in overrides) == [
            (102, 500, 102), (103, 500, 102)]
        assert what_if.process(103).task.oom_score_adj == 500

    def test_two_values_for_one_mm_are_refused(self) -> None:
        with pytest.raises(UsageError, match="share one address space"):
            apply_overrides(snapshot(), {102: 500, 103: 600}, TWINS)

    def test_one_value_for_both_twins_is_fine(self) -> None:
        _, overrides = apply_overrides(snapshot(), {102: 500, 103: 500}, TWINS)
        assert len(overrides) == 2

    def test_kernel_threads_and_unknown_pids(self) -> None:
        with pytest.raises(UsageError, match="kernel thread"):
            apply_overrides(snapshot(), {2: 100}, {})
        with pytest.raises(ProcessGone):
            apply_overrides(snapshot(), {999: 100}, {})

    def test_a_pid_outside_the_domain_is_refused(self) -> None:
        snap = snapshot()
        check_members(snap, box(snap), [100, 101])
        with pytest.raises(UsageError, match="not in the memcg /box domain"):
            check_members(snap, box(snap), [200])
        with pytest.raises(ProcessGone):
            check_members(snap, box(snap), [999])


class TestGrower:
    def test_grown_by_the_room_with_its_page_tables_and_scanned_last(self) -> None:
        snap = snapshot(BIG, SMALL)
        grower = proc(500, 1_000, start=1)
        grown = with_grower(snap, grower, 1_025)
        task = grown.process(500).task
        assert task.rss_anon_pages == 2_025
        assert task.pgtables_bytes == 3 * PAGE  # 1_025 pages need 3 pages of PTEs
        assert task.scan_order > max(p.task.scan_order for p in snap.processes)

    def test_a_running_grower_is_replaced_not_added(self) -> None:
        snap = snapshot(BIG, SMALL, proc(500, 1_000))
        grown = with_grower(snap, snap.process(500), 60_000)
        assert [p.pid for p in grown.processes].count(500) == 1
        assert rank_domain(grown, box(grown))[0].process.pid == 500

    def test_the_domain_is_unchanged(self) -> None:
        snap = snapshot(BIG)
        grown = with_grower(snap, replace(proc(500, 0), memcg="/box"), 10)
        assert box(grown) == OomDomain(DomainKind.MEMCG, "/box", BOX_PAGES)
