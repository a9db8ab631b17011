"""`oomlens explain PID`: the kernel's formula with one process's own numbers, in every
OOM domain it belongs to, and where the folklore about OOM scores is wrong."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Any

from oomlens.cli.env import Env, ExitStatus
from oomlens.cli.render.json import write_json
from oomlens.cli.render.table import paint
from oomlens.kernel.adj import score_adj_to_oom_adj
from oomlens.kernel.badness import PRE_2_6_36
from oomlens.kernel.domain import OomDomain
from oomlens.kernel.select import AdjBounds, adj_bounds
from oomlens.ranking import RankedProcess, domains_of_process, era_of, rank_domain
from oomlens.system.snapshot import Process, Snapshot, take_snapshot
from oomlens.units import format_bytes, format_share

SCHEMA = "oomlens.explain/1"
BEFORE_SHOWN = 5


@dataclass(frozen=True)
class DomainExplanation:
    domain: OomDomain
    me: RankedProcess
    before: list[RankedProcess]
    eligible_count: int
    bounds: AdjBounds | None


def explain_domain(snapshot: Snapshot, domain: OomDomain, pid: int) -> DomainExplanation:
    ranking = rank_domain(snapshot, domain)
    me = next(r for r in ranking if r.process.pid == pid)
    eligible = [r for r in ranking if r.ranked.rank is not None]
    my_rank = me.ranked.rank
    before = [r for r in eligible if my_rank is not None and (r.ranked.rank or 0) < my_rank]
    bounds = None
    if me.ranked.ineligible is None or me.process.task.oom_score_adj == -1000:
        bounds = adj_bounds(me.process.task, [r.process.task for r in eligible], domain.totalpages)
    return DomainExplanation(domain, me, before, len(eligible), bounds)


def folklore(process: Process) -> list[str]:
    """What the usual advice gets wrong, for this process."""
    adj = process.task.oom_score_adj
    notes = [
        "Nice value, CPU time, run time and the user (root or not) do not count: that was "
        "the pre-2.6.36 heuristic. Since 4.17 there is no root bonus either.",
        f"oom_adj is the deprecated face of oom_score_adj: this process's oom_adj reads "
        f"{score_adj_to_oom_adj(adj)}; writing oom_adj -17 stores oom_score_adj -1000.",
        "/proc/<pid>/oom_score always uses the whole machine's memory; inside a memory "
        "cgroup the kernel weighs oom_score_adj against the cgroup's limit instead.",
    ]
    return notes


def explain_all(snapshot: Snapshot, pid: int) -> tuple[Process, list[DomainExplanation]]:
    """The process and its explanation in every domain it belongs to (global first)."""
    process = snapshot.process(pid)
    domains = domains_of_process(snapshot, process)
    return process, [explain_domain(snapshot, d, pid) for d in domains]


def explanation_lines(snapshot: Snapshot, pid: int, colour: bool = False) -> list[str]:
    process, explanations = explain_all(snapshot, pid)
    return _text(snapshot, process, explanations, colour)


def run(args: argparse.Namespace, env: Env) -> ExitStatus:
    snapshot = take_snapshot(env.proc_root)
    if getattr(args, "json", False):
        process, explanations = explain_all(snapshot, args.pid)
        write_json(env.stdout, _json(snapshot, process, explanations))
    else:
        env.stdout.write("\n".join(explanation_lines(snapshot, args.pid, env.colour)) + "\n")
    return ExitStatus.OK


def _terms_json(item: DomainExplanation) -> dict[str, Any]:
    terms = item.me.ranked.terms
    return {
        "domain": item.domain.label, "kind": str(item.domain.kind), "path": item.domain.path,
        "totalpages": item.domain.totalpages,
        "adj_unit_pages": item.domain.totalpages // 1000,
        "eligible": item.me.ranked.ineligible is None,
        "ineligible_reason": None if item.me.ranked.ineligible is None
        else str(item.me.ranked.ineligible),
        "rss_pages": None if terms is None else terms.rss_pages,
        "swapents": None if terms is None else terms.swapents,
        "pgtables_pages": None if terms is None else terms.pgtables_pages,
        "adj_pages": None if terms is None else terms.adj_pages,
        "badness": item.me.ranked.points,
        "badness_share": item.me.share,
        "rank": item.me.ranked.rank,
        "eligible_processes": item.eligible_count,
        "killed_before": [{"pid": r.process.pid, "comm": r.process.comm,
                           "badness": r.ranked.points} for r in item.before],
        "adj_to_be_first": None if item.bounds is None else item.bounds.first,
        "adj_to_be_last": None if item.bounds is None else item.bounds.last,
    }


def _json(snapshot: Snapshot, process: Process, items: list[DomainExplanation]) -> dict[str, Any]:
    era = era_of(snapshot)
    return {
        "schema": SCHEMA, "pid": process.pid, "comm": process.comm, "cmdline": process.cmdline,
        "kernel": snapshot.kernel_release, "rules": era.citation,
        "oom_score_adj": process.task.oom_score_adj,
        "oom_adj": score_adj_to_oom_adj(process.task.oom_score_adj),
        "oom_score": process.oom_score,
        "predicted_oom_score": items[0].me.predicted_oom_score,
        "domains": [_terms_json(i) for i in items],
        "folklore": folklore(process),
    }


def _text(snapshot: Snapshot, process: Process, items: list[DomainExplanation],
          colour: bool) -> list[str]:
    era = era_of(snapshot)
    kernel = "?" if process.oom_score is None else str(process.oom_score)
    predicted = items[0].me.predicted_oom_score
    agree = paint("agrees", "green", colour) if kernel == str(predicted) else \
        paint("differs (memory changed between reads, or a rule we cannot see)", "yellow", colour)
    lines = [
        paint(f"{process.pid} {process.comm}", "bold", colour) + f"  {process.cmdline}",
        f"kernel {snapshot.kernel_release}: rules of {era.citation}",
        f"oom_score_adj {process.task.oom_score_adj} (oom_adj reads "
        f"{score_adj_to_oom_adj(process.task.oom_score_adj)})",
        f"/proc oom_score {kernel}; predicted {predicted}: {agree}",
    ]
    for item in items:
        lines += ["", *_domain_text(snapshot, item, colour)]
    lines += ["", "Folklore check:"] + [f"  - {note}" for note in folklore(process)]
    if snapshot.kernel_version < (2, 6, 36):
        lines.append(f"  - {PRE_2_6_36}")
    return lines


def _domain_text(snapshot: Snapshot, item: DomainExplanation, colour: bool) -> list[str]:
    domain, me, page = item.domain, item.me, snapshot.page_size
    unit = domain.totalpages // 1000
    head = paint(f"In the {domain.label} domain", "bold", colour) + \
        f" (totalpages {domain.totalpages} = {format_bytes(domain.totalpages * page)})"
    if me.ranked.ineligible is not None:
        lines = [head, f"  never killed: {me.ranked.ineligible}"]
        if item.bounds is not None and item.bounds.first is not None:
            lines.append(f"  with oom_score_adj {item.bounds.first} it would die first")
        return lines
    terms = me.ranked.terms
    assert terms is not None
    lines = [
        head,
        f"  badness = rss {terms.rss_pages} + swap {terms.swapents} + page tables "
        f"{terms.pgtables_pages} + adj {me.process.task.oom_score_adj} x "
        f"({domain.totalpages} / 1000 = {unit}) = {terms.points} pages "
        f"({format_bytes(terms.points * page)}, {format_share(me.share)} of the domain)",
        f"  rank {me.ranked.rank} of {item.eligible_count} eligible processes",
    ]
    if item.before:
        shown = ", ".join(f"{r.process.pid} {r.process.comm} ({r.ranked.points})"
                          for r in item.before[:BEFORE_SHOWN])
        more = len(item.before) - BEFORE_SHOWN
        lines.append(f"  dies after: {shown}" + (f" and {more} more" if more > 0 else ""))
    else:
        lines.append(paint("  the kernel would kill this process first", "red", colour))
    lines += _bounds_text(item.bounds, unit)
    return lines


def _bounds_text(bounds: AdjBounds | None, unit: int) -> list[str]:
    if bounds is None:
        return []
    if unit == 0:
        return ["  oom_score_adj has no effect here (domain smaller than 1000 pages)"]
    first = "no value up to 1000" if bounds.first is None else f"oom_score_adj >= {bounds.first}"
    last = "only -1000 (never)" if bounds.last is None else f"oom_score_adj <= {bounds.last}"
    return [f"  first victim with {first}; last with {last}; -1000 exempts it"]
