"""One OOM kill as the history store keeps it: plain data, built from a parsed
report, from a memory cgroup's kill counter, or from kills the log lost.

Pure: no I/O, no clock. The stable key makes a second sighting of the same kill
(a restart that backfills from the ring buffer, two copies of one log) a no-op:
`boot id : kernel sequence number of the kill line : victim pid` for a kill read
from `/dev/kmsg`, the kernel timestamp where a log has no sequence numbers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from oomlens.report.diagnose import Diagnosis
from oomlens.report.facts import missing_parts, scope, victim_kb
from oomlens.report.model import LogLine, OomEvent
from oomlens.report.schema import event_json

SCHEMA = "oomlens.event/1"


class EventKind(StrEnum):
    KERNEL = "kernel"  # read from the kernel log (a full report or only its kill line)
    MEMCG = "memcg"  # a memory cgroup's oom_kill counter rose; the log did not show it
    LOST = "lost"  # /proc/vmstat oom_kill rose by more than the log showed
    GUARD = "guard"  # killed by `oomlens guard`


@dataclass(frozen=True, slots=True)
class EventRecord:
    """`time` is seconds since the epoch (UTC) of the kill: the kernel's timestamp
    mapped through the boot time where there is one, else when it was detected.
    `kills` is how many kills this record accounts for: 1 + the memory.oom.group
    victims for a kernel event, the gap for a lost one. `detail` is the
    `oomlens.report/1` event for kernel events, a small dict of the counters for
    the others; `lines` the log lines of the report as the kernel printed them."""

    key: str
    kind: EventKind
    host: str
    boot_id: str
    time: float
    monotonic: float | None = None
    seq: int | None = None
    scope: str | None = None
    cgroup: str | None = None
    victim_pid: int | None = None
    victim_comm: str | None = None
    victim_uid: int | None = None
    victim_oom_score_adj: int | None = None
    victim_rss_kb: int | None = None
    trigger_comm: str | None = None
    constraint: str | None = None
    complete: bool = False
    kills: int = 1
    main_finding: str | None = None
    findings: tuple[str, ...] = ()
    reaped: bool = False
    detail: dict[str, Any] = field(default_factory=dict)
    lines: tuple[str, ...] = ()

    @property
    def day(self) -> str:
        """The UTC day of the kill, `YYYY-MM-DD` (what per-day statistics group by)."""
        return datetime.fromtimestamp(self.time, UTC).strftime("%Y-%m-%d")


@dataclass(frozen=True, slots=True)
class StoredEvent:
    """A record with the id the store gave it and when it was stored."""

    id: int
    record: EventRecord
    recorded_at: float


def kill_line(event: OomEvent) -> LogLine | None:
    """The `Killed process` line of an event (the first one: the victim's)."""
    return next((line for line in event.lines if "Killed process" in line.text), None)


def event_key(boot_id: str, event: OomEvent) -> str:
    line = kill_line(event)
    victim = event.victim.pid if event.victim is not None else 0
    if line is not None and line.seq is not None:
        return f"{boot_id}:{line.seq}:{victim}"
    stamp = line.monotonic if line is not None else event.monotonic
    if stamp is not None:
        return f"{boot_id}:t{stamp:.6f}:{victim}"
    return f"{boot_id}:{event.source}:{event.first_lineno}:{victim}"


def event_cgroup(event: OomEvent) -> str | None:
    """The memory cgroup of the kill: the one whose limit was hit, else the
    victim's (the oom-kill: summary's task_memcg on 5.0+ kernels)."""
    if event.memcg is not None and (event.memcg.oom_memcg or event.memcg.task_memcg):
        return event.memcg.oom_memcg or event.memcg.task_memcg
    fields = event.oom_kill_fields
    return fields.get("oom_memcg") or fields.get("task_memcg") or None


def kernel_record(
    event: OomEvent,
    diagnosis: Diagnosis,
    *,
    host: str,
    boot_id: str,
    boot_time: float | None,
    detected_at: float,
    victim_cgroup: str | None = None,
) -> EventRecord:
    """The record of a kill read from the kernel log. `boot_time` (epoch seconds
    of boot) maps the kernel's timestamp to wall-clock time; without it, or
    without a timestamp, the log's own wall-clock time, else `detected_at`.
    `victim_cgroup`: the victim's memory cgroup as a live watcher read it, for a
    kill whose report was rate-limited away (only its kill line, which names no
    cgroup)."""
    line = kill_line(event)
    monotonic = line.monotonic if line is not None else event.monotonic
    if monotonic is not None and boot_time is not None:
        when = boot_time + monotonic
    elif event.wallclock is not None and event.wallclock.tzinfo is not None:
        when = event.wallclock.timestamp()
    else:
        when = detected_at
    victim = event.victim
    main = diagnosis.main
    return EventRecord(
        key=event_key(boot_id, event),
        kind=EventKind.KERNEL,
        host=host,
        boot_id=boot_id,
        time=when,
        monotonic=monotonic,
        seq=line.seq if line is not None else event.seq,
        scope=scope(event),
        cgroup=event_cgroup(event) or victim_cgroup,
        victim_pid=None if victim is None else victim.pid,
        victim_comm=None if victim is None else victim.comm,
        victim_uid=None if victim is None else victim.uid,
        victim_oom_score_adj=None if victim is None else victim.oom_score_adj,
        victim_rss_kb=victim_kb(event),
        trigger_comm=event.trigger.comm,
        constraint=event.constraint,
        complete=not missing_parts(event),
        kills=(victim is not None) + len(event.group_victims),
        main_finding=None if main is None else main.code,
        findings=tuple(f.code for f in diagnosis.findings),
        reaped=victim is not None and victim.reaped,
        detail=event_json(event, diagnosis),
        lines=tuple(line.text for line in event.lines),
    )


def lost_record(
    *, host: str, boot_id: str, detected_at: float, counter_from: int, counter_to: int,
    reason: str,
) -> EventRecord:
    """Kills the kernel counted (`/proc/vmstat` oom_kill went from `counter_from`
    to `counter_to`) that no log line accounts for. Keyed by the counter range, so
    a restart that finds the same gap does not record it twice."""
    return EventRecord(
        key=f"{boot_id}:lost:{counter_from}-{counter_to}",
        kind=EventKind.LOST,
        host=host,
        boot_id=boot_id,
        time=detected_at,
        kills=counter_to - counter_from,
        detail={"oom_kill_from": counter_from, "oom_kill_to": counter_to, "reason": reason},
    )


def memcg_record(
    *, host: str, boot_id: str, detected_at: float, cgroup: str, counter_from: int,
    counter_to: int, kills: int | None = None,
) -> EventRecord:
    """Kills a memory cgroup's own oom_kill counter shows (v2 memory.events, v1
    memory.oom_control) where the kernel log is not readable. `kills`: the
    counter's rise less the kills of watched cgroups below it (v2 counts a kill in
    every ancestor too)."""
    return EventRecord(
        key=f"{boot_id}:memcg:{cgroup}:{counter_from}-{counter_to}",
        kind=EventKind.MEMCG,
        host=host,
        boot_id=boot_id,
        time=detected_at,
        scope="memcg",
        cgroup=cgroup,
        kills=counter_to - counter_from if kills is None else kills,
        detail={"oom_kill_from": counter_from, "oom_kill_to": counter_to},
    )


def record_json(stored: StoredEvent, *, full: bool = False) -> dict[str, Any]:
    """The `oomlens.event/1` object (docs/json.md). `full` adds `detail` (for a
    kernel event the `oomlens.report/1` event with its diagnosis) and the log lines."""
    record = stored.record
    item: dict[str, Any] = {
        "id": stored.id,
        "key": record.key,
        "kind": str(record.kind),
        "host": record.host,
        "boot_id": record.boot_id,
        "time": datetime.fromtimestamp(record.time, UTC).isoformat(timespec="milliseconds"),
        "recorded_at": datetime.fromtimestamp(stored.recorded_at, UTC).isoformat(
            timespec="milliseconds"
        ),
        "monotonic": record.monotonic,
        "seq": record.seq,
        "scope": record.scope,
        "cgroup": record.cgroup,
        "victim": None if record.victim_pid is None else {
            "pid": record.victim_pid,
            "comm": record.victim_comm,
            "uid": record.victim_uid,
            "oom_score_adj": record.victim_oom_score_adj,
            "rss_kb": record.victim_rss_kb,
            "reaped": record.reaped,
        },
        "trigger_comm": record.trigger_comm,
        "constraint": record.constraint,
        "complete": record.complete,
        "kills": record.kills,
        "main_finding": record.main_finding,
        "findings": list(record.findings),
    }
    if full:
        item["detail"] = record.detail
        item["lines"] = list(record.lines)
    return item
