"""Root cause of one OOM event: where memory went, what kind of shortage it was,
culprit vs victim, the kernel's choice recomputed, and what to change.

Pure: reads an `OomEvent`, returns a `Diagnosis` (facts in `report/facts.py`,
the finding rules in `report/findings.py`).
"""

from __future__ import annotations

from dataclasses import dataclass

from oomlens.report.facts import (
    Consumer,
    RankedRow,
    chosen_pid,
    domain_totalpages,
    era_of_report,
    memory_breakdown,
    page_kb,
    recomputed_ranking,
    top_consumers,
)
from oomlens.report.findings import PRIORITY, Facts, Finding, findings_of
from oomlens.report.model import OomEvent


@dataclass(frozen=True, slots=True)
class Diagnosis:
    # kB per category ("user_anon", "page_cache", ...); None when the report had
    # no memory breakdown.
    breakdown: dict[str, int] | None
    domain_kb: int | None
    totalpages: int | None
    era: str | None
    ranking: tuple[RankedRow, ...]
    # pid the recomputation picks, and whether it is the pid the kernel chose
    # (None: the report does not allow the check).
    predicted_pid: int | None
    choice_checks_out: bool | None
    top_processes: tuple[Consumer, ...]
    top_groups: tuple[Consumer, ...]
    findings: tuple[Finding, ...]

    @property
    def main(self) -> Finding | None:
        return self.findings[0] if self.findings else None


def diagnose(event: OomEvent, previous: OomEvent | None = None) -> Diagnosis:
    """`previous` is the event before this one in the same stream (for a burst)."""
    pkb = page_kb(event)
    breakdown, domain_kb = memory_breakdown(event, pkb)
    totalpages = domain_totalpages(event, pkb)
    era = era_of_report(event)
    ranking = recomputed_ranking(event, totalpages, era, pkb)
    predicted = next((row.pid for row in ranking if row.rank == 1), None)
    chosen = chosen_pid(event)
    checks_out = None if predicted is None or chosen is None else predicted == chosen
    processes, groups = top_consumers(event, pkb, domain_kb)
    facts = Facts(event, pkb, breakdown, domain_kb, totalpages, era, ranking, predicted,
                   chosen, processes, groups, previous)  # fmt: skip
    findings = sorted(findings_of(facts), key=lambda f: PRIORITY.index(f.code))
    return Diagnosis(
        breakdown=breakdown,
        domain_kb=domain_kb,
        totalpages=totalpages,
        era=None if era is None else era.name,
        ranking=tuple(ranking),
        predicted_pid=predicted,
        choice_checks_out=checks_out,
        top_processes=tuple(processes[:5]),
        top_groups=tuple(groups[:5]),
        findings=tuple(findings),
    )
