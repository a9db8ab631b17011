"""Whom the kernel would kill, in order, until enough memory is freed; with what-if
`oom_score_adj` values; counting what each kill gives back.

Pure: takes a Snapshot (and which processes share an mm: system/mmshare.py),
returns values. The kill order is `ranking.rank_domain`'s: each OOM kills the
domain's worst task, and the next OOM, if memory is still short, the next one.

What a kill frees (mm/oom_kill.c: __oom_kill_process(), v6.6): the victim and every
other process sharing its mm (CLONE_VM without CLONE_THREAD) get SIGKILL, whatever
their oom_score_adj, except the global init (which pins the mm: MMF_OOM_SKIP, no
reaping, nothing freed) and kernel threads using the mm. The memory comes back once
per mm: its anonymous pages (the oom_reaper unmaps them at once, __oom_reap_task_mm())
and its page tables (exit_mmap() -> free_pgtables()). File pages it mapped stay in the
page cache (reclaimable, not freed); shmem/tmpfs pages stay while their file lives.
Anonymous pages shared copy-on-write with a parent or child are counted in both, so
`freed_bytes` is an upper bound for a forked worker.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from oomlens.errors import UsageError
from oomlens.kernel.domain import OomDomain
from oomlens.ranking import RankedProcess, members, rank_domain
from oomlens.system.mmshare import MmGroups
from oomlens.system.snapshot import Process, Snapshot


@dataclass(frozen=True, slots=True)
class Override:
    """One what-if value. `named` is the pid given on the command line: a process that
    shares its mm gets the value too (fs/proc/base.c: __set_oom_adj() writes every
    process sharing the mm, vfork children aside)."""

    pid: int
    comm: str
    old: int
    new: int
    named: int


def apply_overrides(snapshot: Snapshot, wanted: Mapping[int, int],
                    mm: MmGroups) -> tuple[Snapshot, tuple[Override, ...]]:
    """The snapshot as if each pid's oom_score_adj were `wanted[pid]`; nothing is
    written. Raises ProcessGone for an unknown pid, UsageError for a kernel thread or
    two values for one mm."""
    values: dict[int, tuple[int, int]] = {}
    for named, new in wanted.items():
        proc = snapshot.process(named)
        if proc.task.is_kthread:
            raise UsageError(f"--adj {named}={new}: {proc.comm} is a kernel thread; the "
                             "OOM killer never kills one, whatever its oom_score_adj")
        for pid in sorted(mm.get(named, frozenset([named]))):
            earlier = values.get(pid)
            if earlier is not None and earlier[0] != new:
                raise UsageError(f"--adj {earlier[1]}={earlier[0]} and --adj {named}={new}: "
                                 "they share one address space, so one oom_score_adj")
            values[pid] = (new, named)
    overrides: list[Override] = []
    processes: list[Process] = []
    for proc in snapshot.processes:
        if proc.pid not in values:
            processes.append(proc)
            continue
        new, named = values[proc.pid]
        overrides.append(Override(proc.pid, proc.comm, proc.task.oom_score_adj, new, named))
        processes.append(dataclasses.replace(
            proc, task=dataclasses.replace(proc.task, oom_score_adj=new)))
    return dataclasses.replace(snapshot, processes=tuple(processes)), tuple(overrides)


def check_members(snapshot: Snapshot, domain: OomDomain, pids: Iterable[int]) -> None:
    """UsageError for a pid outside `domain`: a what-if there would change nothing."""
    inside = {p.pid for p in members(snapshot, domain)}
    for pid in pids:
        snapshot.process(pid)
        if pid not in inside:
            raise UsageError(f"--adj {pid}: process {pid} is not in the {domain.label} "
                             "domain, so its oom_score_adj does not matter there")


@dataclass(frozen=True, slots=True)
class Kill:
    """One OOM kill of the sequence. `also_killed`: processes sharing the victim's mm,
    SIGKILLed with it; `pinned_by`: the global init sharing it, so nothing is freed.
    Sizes in bytes; `freed_bytes` is what this kill gives back (anonymous memory and
    page tables), `freed_total_bytes` the sum so far."""

    victim: RankedProcess
    also_killed: tuple[Process, ...]
    pinned_by: Process | None
    freed_bytes: int
    rss_bytes: int
    swap_bytes: int
    freed_total_bytes: int


@dataclass(frozen=True, slots=True)
class KillOrder:
    """The kills, in order, until `need_bytes` is freed (None: the first victim only)."""

    domain: OomDomain
    kills: tuple[Kill, ...]
    need_bytes: int | None
    eligible: int

    @property
    def freed_bytes(self) -> int:
        return self.kills[-1].freed_total_bytes if self.kills else 0

    @property
    def need_met(self) -> bool:
        if self.need_bytes is None:
            return bool(self.kills)
        return self.freed_bytes >= self.need_bytes


def kill_order(snapshot: Snapshot, domain: OomDomain, need_bytes: int | None,
               mm: MmGroups) -> KillOrder:
    """Victims in the kernel's order until `need_bytes` is freed or nothing eligible
    is left (without `need_bytes`: the first victim)."""
    ranking = rank_domain(snapshot, domain)
    by_pid = {p.pid: p for p in snapshot.processes}
    dead: set[int] = set()
    kills: list[Kill] = []
    total = 0
    eligible = [r for r in ranking if r.ranked.rank is not None]
    for item in eligible:
        if item.process.pid in dead:
            continue
        kill = _kill(item, by_pid, mm, total)
        kills.append(kill)
        total = kill.freed_total_bytes
        dead |= {item.process.pid, *(p.pid for p in kill.also_killed)}
        if need_bytes is None or total >= need_bytes:
            break
    return KillOrder(domain, tuple(kills), need_bytes, len(eligible))


def _kill(item: RankedProcess, by_pid: Mapping[int, Process], mm: MmGroups,
          total_before: int) -> Kill:
    victim = item.process
    peers = [by_pid[pid] for pid in sorted(mm.get(victim.pid, ())) if pid != victim.pid
             and pid in by_pid]
    pinned = next((p for p in peers if p.task.is_global_init), None)
    also = tuple(p for p in peers if not p.task.is_global_init and not p.task.is_kthread)
    task, page = victim.task, victim.task.page_size
    freed = 0 if pinned is not None else task.rss_anon_pages * page + task.pgtables_bytes
    return Kill(item, also, pinned, freed, task.rss_pages * page, task.swapents * page,
                total_before + freed)


def with_grower(snapshot: Snapshot, grower: Process, room_pages: int) -> Snapshot:
    """The snapshot with `grower`, a process about to allocate until its domain runs
    out, as it will be then: `room_pages` more anonymous memory and the page tables
    mapping it (one page of PTEs per 512 pages, x86-64 and arm64 with 4 KiB pages).
    It is scanned last: the newest process, in the newest cgroup of the subtree
    (mm/memcontrol.c: mem_cgroup_scan_tasks() walks the subtree in pre-order)."""
    others = [p for p in snapshot.processes if p.pid != grower.pid]
    last = max((p.task.scan_order for p in others), default=0)
    task = grower.task
    grown = dataclasses.replace(
        task, rss_anon_pages=task.rss_anon_pages + room_pages,
        pgtables_bytes=task.pgtables_bytes + -(-room_pages // 512) * task.page_size,
        scan_order=max(task.scan_order, last + 1))
    return dataclasses.replace(
        snapshot, processes=(*others, dataclasses.replace(grower, task=grown)))
