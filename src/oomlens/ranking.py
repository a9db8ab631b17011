"""Kill order per OOM domain: the kernel's rules (`kernel/`) applied to a snapshot
(`system/`). Pure: takes a Snapshot, returns values."""

from __future__ import annotations

from dataclasses import dataclass

from oomlens.errors import NotFound
from oomlens.kernel.badness import CURRENT_ERA, Era, era_for, proc_oom_score
from oomlens.kernel.domain import DomainKind, OomDomain, domains_of, is_within
from oomlens.kernel.select import Ranked, rank_tasks
from oomlens.system.snapshot import Process, Snapshot


@dataclass(frozen=True, slots=True)
class RankedProcess:
    """A process's place in one domain, with the `/proc` oom_score we predict for it."""

    process: Process
    ranked: Ranked
    domain: OomDomain
    predicted_oom_score: int
    era: Era

    @property
    def share(self) -> float | None:
        """Badness as a fraction of the domain (None if ineligible)."""
        points = self.ranked.points
        return None if points is None else self.era.share(points, self.domain.totalpages)


def era_of(snapshot: Snapshot) -> Era:
    """The rules of the running kernel (the newest we know for unknown futures)."""
    return era_for(snapshot.kernel_version) or CURRENT_ERA


def all_domains(snapshot: Snapshot) -> list[OomDomain]:
    """The global domain, then every limited memcg in path order."""
    return [snapshot.global_domain, *sorted(snapshot.memcg_domains(), key=lambda d: d.path)]


def find_domain(snapshot: Snapshot, path: str | None) -> OomDomain:
    """The global domain for None or "/", else the limited memcg at `path`."""
    if path in (None, "", "/", "global"):
        return snapshot.global_domain
    wanted = "/" + path.strip("/")
    for domain in snapshot.memcg_domains():
        if domain.path == wanted:
            return domain
    if snapshot.memcg_mount is None:
        raise NotFound("this system has no memory cgroup controller: only the global domain")
    raise NotFound(
        f"{wanted} is not a memory cgroup with a limit (an OOM domain); "
        "see `oomlens ls --all-domains` for the domains here"
    )


def members(snapshot: Snapshot, domain: OomDomain) -> list[Process]:
    """The processes an OOM in `domain` chooses among."""
    if domain.kind is DomainKind.GLOBAL:
        return list(snapshot.processes)
    return [p for p in snapshot.processes if p.memcg is not None and is_within(p.memcg,
                                                                               domain.path)]


def rank_domain(snapshot: Snapshot, domain: OomDomain) -> list[RankedProcess]:
    """Every member of `domain` in the order the kernel would kill them."""
    era = era_of(snapshot)
    procs = members(snapshot, domain)
    by_pid = {p.pid: p for p in procs}
    global_total = snapshot.global_domain.totalpages
    return [
        RankedProcess(
            by_pid[r.task.pid], r, domain, proc_oom_score(r.task, global_total, era), era
        )
        for r in rank_tasks((p.task for p in procs), domain.totalpages, era)
    ]


def domains_of_process(snapshot: Snapshot, process: Process) -> list[OomDomain]:
    """Global first, then each limited memcg on the process's path, outermost first."""
    return [snapshot.global_domain, *domains_of(process.memcg, snapshot.memcg_domains())]
