"""One OOM kill as the history store keeps it: plain data, built from a memory
cgroup's kill counter, from kills the log lost, from a guard's kill, or (in
store/fromreport.py, so that the guard does not load the report analysis) from a
parsed report.

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
