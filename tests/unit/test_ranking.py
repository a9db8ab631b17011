"""ranking.py: kill order per OOM domain on a Snapshot built directly (no I/O).

The core claim of oomlens: a memcg OOM weighs oom_score_adj against the memcg's own
totalpages, so inside a small memcg the kernel can kill another process than the one
with the highest /proc/<pid>/oom_score (which always uses global totalpages)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from oomlens.errors import NotFound
from oomlens.kernel.badness import CURRENT_ERA, ERAS, proc_oom_score
from oomlens.kernel.domain import DomainKind, OomDomain, page_counter_max
from oomlens.kernel.task import Ineligible, Task
from oomlens.ranking import (
    RankedProcess,
    all_domains,
    domains_of_process,
    era_of,
    find_domain,
    members,
    rank_domain,
)
from oomlens.system.memcg import Memcg, MemcgMount
from oomlens.system.meminfo import MemInfo
from oomlens.system.snapshot import Process, ScanNotes, Snapshot

PAGE = 4096
MIB_PAGES = 256
GLOBAL_PAGES = 6_291_456  # 24 GiB, no swap


def proc(pid: int, pages: int, memcg: str | None, *, adj: int = 0, start: int | None = None,
         **flags: bool) -> Process:
    task = Task(
        pid=pid, comm=f"p{pid}", oom_score_adj=adj, rss_anon_pages=pages, rss_file_pages=0,
        rss_shmem_pages=0, swapents=0, pgtables_bytes=0, page_size=PAGE,
        scan_order=((pid if start is None else start) << 22) | pid, **flags,
    )
    return Process(task=task, ppid=1, cmdline=f"/bin/p{pid}", uid=0, user="root", state="S",
                   start_time_ticks=pid if start is None else start, oom_score=None,
                   memcg=memcg, unit=None)


def memcg_v2(path: str, limit_mib: int) -> Memcg:
    return Memcg(
        path=path, version=2, limit_bytes=limit_mib << 20, swap_limit_bytes=0, usage_bytes=0,
        swap_usage_bytes=0, swappiness=60, oom_kill=0, oom_kill_disable=False,
        raw_limit_pages=limit_mib * MIB_PAGES, raw_swap_limit_pages=0,
    )


INIT = proc(1, 3_000, "/", is_global_init=True)
KTHREAD = proc(2, 0, "/", is_kthread=True, has_mm=False)
BIG = proc(100, 40_000, "/box")                    # in /box: 40_000
SMALL = proc(101, 10_000, "/box/inner", adj=300)   # in /box: 10_000 + 300 * 65 = 29_500
OTHER = proc(200, 100_000, "/other")
BOXER = proc(300, 5_000, "/boxer")                 # "/boxer" is not inside "/box"
NO_MEMCG = proc(400, 7_000, None)
PROTECTED = proc(102, 90_000, "/box", adj=-1000)

V2_MOUNT = MemcgMount(2, "/sys/fs/cgroup")
PROCESSES = (INIT, KTHREAD, BIG, SMALL, OTHER, BOXER, NO_MEMCG, PROTECTED)
MEMCGS = (memcg_v2("/other", 1024), memcg_v2("/box", 256), memcg_v2("/box/inner", 128))


def snapshot(
    processes: tuple[Process, ...] = PROCESSES,
    memcgs: tuple[Memcg, ...] = MEMCGS,
    *,
    version: tuple[int, int, int] = (6, 1, 0),
    mount: MemcgMount | None = V2_MOUNT,
) -> Snapshot:
    return Snapshot(
        kernel_release=".".join(map(str, version)),
        kernel_version=version,
        page_size=PAGE,
        meminfo=MemInfo(mem_total_kib=GLOBAL_PAGES * 4, mem_free_kib=0, mem_available_kib=0,
                        swap_total_kib=0, swap_free_kib=0, committed_as_kib=0,
                        commit_limit_kib=0),
        sysctls={"vm.swappiness": 60},
        pressure=None,
        memcg_mount=mount,
        memcgs=memcgs,
        processes=processes,
        notes=ScanNotes(),
    )


def pids(ranked: list[RankedProcess]) -> list[int]:
    return [r.process.pid for r in ranked]


# --- domains ---------------------------------------------------------------------------


class TestFindDomain:
    @pytest.mark.parametrize("path", [None, "", "/", "global"])
    def test_global(self, path: str | None) -> None:
        domain = find_domain(snapshot(), path)
        assert domain == OomDomain(DomainKind.GLOBAL, "/", GLOBAL_PAGES)

    @pytest.mark.parametrize("path", ["/box", "box", "box/", "/box/"])
    def test_limited_memcg(self, path: str) -> None:
        assert find_domain(snapshot(), path) == OomDomain(DomainKind.MEMCG, "/box", 65_536)

    def test_nested(self) -> None:
        assert find_domain(snapshot(), "/box/inner").totalpages == 32_768

    def test_unknown_path(self) -> None:
        with pytest.raises(NotFound) as caught:
            find_domain(snapshot(), "/nope")
        message = str(caught.value)
        assert "/nope" in message
        assert "not a memory cgroup with a limit" in message
        assert "--all-domains" in message

    def test_unlimited_memcg_is_not_a_domain(self) -> None:
        with pytest.raises(NotFound, match="/boxer"):
            find_domain(snapshot(), "/boxer")

    def test_no_memory_controller(self) -> None:
        with pytest.raises(NotFound, match="no memory cgroup controller"):
            find_domain(snapshot(memcgs=(), mount=None), "/box")


def test_all_domains_global_first_then_by_path() -> None:
    assert [(d.kind, d.path, d.totalpages) for d in all_domains(snapshot())] == [
        (DomainKind.GLOBAL, "/", GLOBAL_PAGES),
        (DomainKind.MEMCG, "/box", 65_536),
        (DomainKind.MEMCG, "/box/inner", 32_768),
        (DomainKind.MEMCG, "/other", 262_144),
    ]


def test_domains_of_process() -> None:
    snap = snapshot()
    assert [d.path for d in domains_of_process(snap, SMALL)] == ["/", "/box", "/box/inner"]
    assert [d.path for d in domains_of_process(snap, BIG)] == ["/", "/box"]
    assert [d.label for d in domains_of_process(snap, BOXER)] == ["global"]
    assert [d.label for d in domains_of_process(snap, NO_MEMCG)] == ["global"]


class TestMembers:
    def test_global_has_everyone(self) -> None:
        snap = snapshot()
        assert members(snap, snap.global_domain) == list(PROCESSES)

    def test_memcg_includes_descendants_only(self) -> None:
        snap = snapshot()
        box = find_domain(snap, "/box")
        assert sorted(p.pid for p in members(snap, box)) == [100, 101, 102]

    def test_leaf(self) -> None:
        snap = snapshot()
        assert [p.pid for p in members(snap, find_domain(snap, "/box/inner"))] == [101]


# --- ranking ---------------------------------------------------------------------------


class TestRankDomain:
    def test_global_order(self) -> None:
        snap = snapshot()
        ranked = rank_domain(snap, snap.global_domain)
        # SMALL: 10_000 + 300 * 6291 = 1_897_300 beats everything by its adj.
        assert pids(ranked) == [101, 200, 100, 400, 300, 1, 2, 102]
        assert [r.ranked.rank for r in ranked] == [1, 2, 3, 4, 5, None, None, None]
        assert ranked[0].ranked.points == 1_897_300
        assert ranked[5].ranked.ineligible is Ineligible.GLOBAL_INIT
        assert ranked[6].ranked.ineligible is Ineligible.KTHREAD
        assert ranked[7].ranked.ineligible is Ineligible.OOM_SCORE_ADJ_MIN
        assert all(r.domain == snap.global_domain for r in ranked)

    def test_memcg_order(self) -> None:
        snap = snapshot()
        ranked = rank_domain(snap, find_domain(snap, "/box"))
        assert pids(ranked) == [100, 101, 102]
        assert [r.ranked.points for r in ranked] == [40_000, 29_500, None]
        assert ranked[0].share == 40_000 / 65_536
        assert ranked[2].share is None

    def test_inner_memcg(self) -> None:
        snap = snapshot()
        (only,) = rank_domain(snap, find_domain(snap, "/box/inner"))
        assert only.process is SMALL
        assert only.ranked.points == 10_000 + 300 * 32

    def test_memcg_ranking_differs_from_global_because_adj_scales(self) -> None:
        """The product claim. In 256 MiB, adj 300 is 300 * 65 = 19_500 pages (76 MiB),
        so the 40_000-page process dies first; globally the same adj is 7.2 GiB and the
        small process is first, and so is it by /proc/<pid>/oom_score."""
        snap = snapshot()
        global_first = rank_domain(snap, snap.global_domain)[0]
        box = rank_domain(snap, find_domain(snap, "/box"))
        assert global_first.process is SMALL
        assert box[0].process is BIG
        # The predicted /proc oom_score names SMALL, the memcg OOM kills BIG.
        scores = {r.process.pid: r.predicted_oom_score for r in box}
        assert scores == {100: 670, 101: 867, 102: 0}
        assert max(scores, key=lambda pid: scores[pid]) == SMALL.pid != box[0].process.pid

    def test_predicted_oom_score_uses_global_totalpages(self) -> None:
        snap = snapshot()
        inner = rank_domain(snap, find_domain(snap, "/box/inner"))[0]
        assert inner.predicted_oom_score == proc_oom_score(SMALL.task, GLOBAL_PAGES) == 867

    def test_ties_in_a_memcg_go_to_the_younger_process(self) -> None:
        older, younger = proc(500, 2000, "/box", start=10), proc(501, 2000, "/box", start=20)
        snap = snapshot(processes=(younger, older))
        assert pids(rank_domain(snap, find_domain(snap, "/box"))) == [501, 500]


class TestEra:
    def test_current_kernel(self) -> None:
        assert era_of(snapshot()) is CURRENT_ERA

    def test_unknown_old_kernel_falls_back_to_current(self) -> None:
        assert era_of(snapshot(version=(2, 6, 32))) is CURRENT_ERA

    def test_old_kernel_rules_rank(self) -> None:
        # On 4.9 (3 % root bonus) a root task of 10_000 pages scores 9_700 < 9_800.
        rules = next(e for e in ERAS if e.name == "3.14")
        root = proc(600, 10_000, "/", cap_sys_admin=True)
        user = proc(601, 9_800, "/")
        old = snapshot(processes=(root, user), version=(4, 9, 0))
        assert era_of(old) is rules
        assert pids(rank_domain(old, old.global_domain)) == [601, 600]
        new = snapshot(processes=(root, user))
        assert pids(rank_domain(new, new.global_domain)) == [600, 601]


def test_memcg_totalpages_from_snapshot_swap() -> None:
    # memory.swap.max unlimited and 1 GiB of machine swap: the memcg domain grows by it.
    unlimited_swap = Memcg(
        path="/s", version=2, limit_bytes=256 << 20, swap_limit_bytes=None, usage_bytes=0,
        swap_usage_bytes=0, swappiness=60, oom_kill=0, oom_kill_disable=False,
        raw_limit_pages=65_536, raw_swap_limit_pages=page_counter_max(PAGE),
    )
    snap = replace(snapshot(memcgs=(unlimited_swap,)),
                   meminfo=MemInfo(GLOBAL_PAGES * 4, 0, 0, 1 << 20, 0, 0, 0))
    assert snap.total_swap_pages == 262_144
    assert find_domain(snap, "/s").totalpages == 65_536 + 262_144
    assert snap.global_domain.totalpages == GLOBAL_PAGES + 262_144
