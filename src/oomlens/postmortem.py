"""`oomlens report`'s work: read the log sources, find every OOM event, drop the
copies that several logs hold of one kill, put them on one timeline, diagnose.

The shell around `report/` (pure) and `system/logs.py` (I/O); the CLI renders.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import BinaryIO

from oomlens.errors import OomlensError
from oomlens.parallelscan import scan_file, workers_for
from oomlens.report.diagnose import Diagnosis, diagnose
from oomlens.report.facts import missing_parts
from oomlens.report.model import OomEvent
from oomlens.report.pipeline import events_of_lines
from oomlens.report.scan import scan
from oomlens.report.summary import Summary, summarise
from oomlens.system.logs import (
    LogSource,
    SourceProblem,
    default_sources,
    explicit_sources,
    plain_file_size,
    read_chunks,
)
from oomlens.system.procfs import translate_os_error


@dataclass(frozen=True, slots=True)
class SourceRead:
    """What one source gave: its events (before de-duplication) and, if reading
    stopped early, why (the events found before that are kept)."""

    source: LogSource
    events: int
    error: str | None


@dataclass(frozen=True, slots=True)
class Analysed:
    event: OomEvent
    diagnosis: Diagnosis


@dataclass(frozen=True, slots=True)
class Investigation:
    sources: tuple[SourceRead, ...]
    problems: tuple[SourceProblem, ...]
    events: tuple[Analysed, ...]
    duplicates: int
    summary: Summary


def investigate(
    paths: Sequence[str],
    *,
    stdin: BinaryIO | None = None,
    log_dir: str = "/var/log",
    kmsg: str = "/dev/kmsg",
    proc_root: str = "/proc",
) -> Investigation:
    """The OOM events of `paths` (files, directories, "-"), or of this machine's
    logs when `paths` is empty."""
    if paths:
        sources, problems = explicit_sources(paths, proc_root=proc_root)
    else:
        sources, problems = default_sources(log_dir=log_dir, kmsg=kmsg, proc_root=proc_root)
    found: list[OomEvent] = []
    reads = []
    for source in sources:
        events, error = _read(source, stdin)
        found.extend(events)
        reads.append(SourceRead(source, len(events), error))
    unique = deduplicate(found)
    timeline = sorted(unique, key=_time_key)
    analysed = _diagnose_all(timeline)
    return Investigation(
        sources=tuple(reads),
        problems=tuple(problems),
        events=tuple(analysed),
        duplicates=len(found) - len(unique),
        summary=summarise([(a.event, a.diagnosis) for a in analysed]),
    )


def _read(source: LogSource, stdin: BinaryIO | None) -> tuple[list[OomEvent], str | None]:
    """The source's events; if reading stops early, those found before and why."""
    events: list[OomEvent] = []
    chunks = read_chunks(source, stdin)
    try:
        events.extend(events_of_lines(
            _report_lines(source, chunks), source.name, year=source.year,
            until_month=source.month, boot_time=source.boot_time,
        ))  # fmt: skip
    except OomlensError as err:
        return events, str(err)
    finally:
        chunks.close()
    return events, None


def _report_lines(source: LogSource, chunks: Iterator[bytes]) -> Iterable[tuple[int, bytes]]:
    """The lines a report can need: a big plain file scanned by one worker per
    CPU, anything else through the chunks (not read when the workers do)."""
    size = plain_file_size(source)
    workers = 1 if size is None else workers_for(size)
    if size is None or source.path is None or workers == 1:
        return scan(chunks)
    try:
        return scan_file(source.path, size, workers)
    except OSError as err:
        raise translate_os_error(err, source.path) from err


def _identity(event: OomEvent) -> tuple[object, ...]:
    """What one kill looks like in every log that holds it: the victim line's
    numbers (a pid alone repeats across boots), else the trigger's."""
    victim = event.victim
    if victim is not None:
        return ("victim", victim.pid, victim.comm, victim.total_vm_kb, victim.anon_rss_kb)
    trigger = event.trigger
    return ("head", trigger.pid, trigger.comm, trigger.gfp_mask, trigger.order,
            event.memory.ram_pages, len(event.tasks))  # fmt: skip


def deduplicate(events: Sequence[OomEvent]) -> list[OomEvent]:
    """One event per kill: /dev/kmsg, the journal, kern.log and syslog often all
    hold the same report. The most complete copy wins, in the place of the first."""
    best: dict[tuple[object, ...], int] = {}
    kept: list[OomEvent] = []
    for event in events:
        key = _identity(event)
        at = best.get(key)
        if at is None:
            best[key] = len(kept)
            kept.append(event)
        elif len(missing_parts(event)) < len(missing_parts(kept[at])):
            kept[at] = event
    return kept


def _time_key(event: OomEvent) -> float:
    """Events with a wall-clock time in time order (a time without a zone is local
    time); those without keep their order after them (a stable sort, one key)."""
    if event.wallclock is None:
        return float("inf")
    return event.wallclock.timestamp()


def _diagnose_all(events: Sequence[OomEvent]) -> list[Analysed]:
    previous: dict[str, OomEvent] = {}
    out = []
    for event in events:
        key = f"{event.source}\0{event.stream}"
        out.append(Analysed(event, diagnose(event, previous.get(key))))
        previous[key] = event
    return out


def select(
    events: Sequence[Analysed],
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    pid: int | None = None,
    comm: str | None = None,
    last: int | None = None,
) -> list[Analysed]:
    """The events the filters keep. A time filter drops events without a time."""
    out = []
    for item in events:
        event = item.event
        when = None if event.wallclock is None else event.wallclock.timestamp()
        if since is not None and (when is None or when < since.timestamp()):
            continue
        if until is not None and (when is None or when > until.timestamp()):
            continue
        victim = event.victim
        if pid is not None and pid not in (event.trigger.pid, victim and victim.pid):
            continue
        if comm is not None and comm not in (event.trigger.comm, victim and victim.comm):
            continue
        out.append(item)
    return out[-last:] if last else out
