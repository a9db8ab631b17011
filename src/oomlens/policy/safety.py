"""The safety rules of protection: a plan that would leave the OOM killer too little
to kill is refused (unless forced), with one sentence and the numbers.

Why: `oom_score_adj = -1000` makes a process unkillable (mm/oom_kill.c:
oom_badness() returns LONG_MIN). If the protected processes hold most of the memory,
an OOM finds little or nothing to free: a global OOM with no eligible task panics
("Out of memory and no killable processes...", mm/oom_kill.c: out_of_memory()), and
a memory cgroup whose tasks are all protected cannot reclaim by killing. Pure.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from oomlens.kernel.domain import DomainKind, OomDomain, domains_of
from oomlens.kernel.task import OOM_SCORE_ADJ_MIN, Task
from oomlens.policy.plan import Plan, Step
from oomlens.policy.rules import Limits
from oomlens.system.snapshot import Process
from oomlens.units import format_bytes, format_share


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a plan is not carried out without --force."""

    message: str
    pid: int | None = None


def held_pages(task: Task) -> int:
    """The memory the OOM killer weighs for a task (mm/oom_kill.c: oom_badness():
    rss + swap entries + page tables), in pages."""
    return task.rss_pages + task.swapents + task.pgtables_pages


def _protects(step: Step) -> bool:
    return step.new == OOM_SCORE_ADJ_MIN and step.old != OOM_SCORE_ADJ_MIN


def _big_process(step: Step, mem_total_pages: int, page_size: int,
                 limits: Limits) -> Refusal | None:
    task = step.process.task
    share = held_pages(task) / mem_total_pages
    if share <= limits.max_protected_share:
        return None
    return Refusal(
        f"pid {task.pid} ({task.comm}) holds {format_bytes(held_pages(task) * page_size)}, "
        f"{format_share(share)} of RAM ({format_bytes(mem_total_pages * page_size)}), more "
        f"than the {format_share(limits.max_protected_share)} that may be made unkillable: "
        "the kernel could never reclaim it, and if it grows the OOM killer is left with "
        "nothing to kill (--force to do it anyway)",
        task.pid,
    )


def _killable_share(members: Iterable[Process], after: dict[int, int]) -> tuple[int, int]:
    """(killable pages, pages of everything the OOM killer looks at) in a domain,
    with the planned values in place."""
    killable = total = 0
    for proc in members:
        task = proc.task
        if task.is_kthread or not task.has_mm or task.is_global_init:
            continue
        pages = held_pages(task)
        total += pages
        if after.get(task.pid, task.oom_score_adj) != OOM_SCORE_ADJ_MIN:
            killable += pages
    return killable, total


def _thin_domain(domain: OomDomain, members: Sequence[Process], after: dict[int, int],
                 page_size: int, limits: Limits) -> Refusal | None:
    killable, total = _killable_share(members, after)
    if not total or killable / total >= limits.min_killable_share:
        return None
    return Refusal(
        f"after this change processes that can never be killed would hold "
        f"{format_bytes((total - killable) * page_size)} of the "
        f"{format_bytes(total * page_size)} in processes of the {domain.label} OOM domain, "
        f"leaving {format_share(killable / total)} killable, less than the "
        f"{format_share(limits.min_killable_share)} that must stay killable so an OOM there "
        "has something to free (--force to do it anyway)"
    )


def refusals(plan: Plan, processes: Sequence[Process], domains: Sequence[OomDomain],
             mem_total_pages: int, page_size: int, limits: Limits) -> list[Refusal]:
    """Every safety rule the plan breaks. Only steps that newly protect (-> -1000)
    can break one: other changes leave the OOM killer as much to kill as before.

    `domains`: the global domain and every limited memcg domain.
    """
    protecting = [s for s in plan.steps if _protects(s)]
    if not protecting:
        return []
    found = [r for s in protecting
             if (r := _big_process(s, mem_total_pages, page_size, limits)) is not None]
    after = {s.process.pid: s.new for s in plan.steps}
    memcg_domains = [d for d in domains if d.kind is DomainKind.MEMCG]
    touched = {d.path for s in protecting for d in domains_of(s.process.memcg, memcg_domains)}
    for domain in domains:
        if domain.kind is DomainKind.GLOBAL:
            members: Sequence[Process] = processes
        elif domain.path in touched:
            members = [p for p in processes
                       if any(d.path == domain.path for d in domains_of(p.memcg, [domain]))]
        else:
            continue
        refusal = _thin_domain(domain, members, after, page_size, limits)
        if refusal is not None:
            found.append(refusal)
    return found
