"""Across events: repeated victims and a process that grows from one kill to the
next (a leak signal)."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise

from oomlens.report.diagnose import Diagnosis
from oomlens.report.facts import missing_parts, victim_kb
from oomlens.report.model import OomEvent

# A victim that was this much larger at each kill than at the one before is growing.
# (A ratio of whole numbers: 100 -> 110 kB is growth, which 100 * 1.10 would miss.)
GROWTH_PERCENT = 110


def grows_between_kills(rss_kb: Sequence[int]) -> bool:
    """Whether a victim killed at these sizes (in time order) is leaking: killed at
    least twice, each time at least GROWTH_PERCENT % of the size before. Every step must
    grow: a process that is killed at varying sizes is more likely to be a victim of
    others than a leak. `oomlens report` and the history store's statistics share it."""
    return len(rss_kb) >= 2 and all(b * 100 >= a * GROWTH_PERCENT for a, b in pairwise(rss_kb))


@dataclass(frozen=True, slots=True)
class RepeatedVictim:
    comm: str
    kills: int
    pids: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class Growth:
    """The same name killed repeatedly with more memory each time."""

    comm: str
    kills: int
    rss_kb: tuple[int, ...]  # at each kill, in time order


@dataclass(frozen=True, slots=True)
class Summary:
    events: int
    complete: int
    repeated_victims: tuple[RepeatedVictim, ...]
    growth: tuple[Growth, ...]
    finding_counts: tuple[tuple[str, int], ...]  # main finding code -> events


def summarise(analysed: Sequence[tuple[OomEvent, Diagnosis]]) -> Summary:
    by_comm: dict[str, list[OomEvent]] = defaultdict(list)
    mains: Counter[str] = Counter()
    for event, diagnosis in analysed:
        if event.victim is not None:
            by_comm[event.victim.comm].append(event)
        main = diagnosis.main
        if main is not None:
            mains[main.code] += 1
    repeated = []
    growth = []
    for comm, events in sorted(by_comm.items(), key=lambda item: -len(item[1])):
        if len(events) < 2:
            continue
        pids = tuple(e.victim.pid for e in events if e.victim is not None)
        repeated.append(RepeatedVictim(comm, len(events), pids))
        sizes = [kb for e in events if (kb := victim_kb(e)) is not None]
        if grows_between_kills(sizes):
            growth.append(Growth(comm, len(sizes), tuple(sizes)))
    return Summary(
        events=len(analysed),
        complete=sum(1 for event, _ in analysed if not missing_parts(event)),
        repeated_victims=tuple(repeated),
        growth=tuple(growth),
        finding_counts=tuple(mains.most_common()),
    )
