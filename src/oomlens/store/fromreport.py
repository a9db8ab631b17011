"""A kill read from the kernel log as the history store keeps it: a parsed report
and its diagnosis -> `EventRecord`. Pure: no I/O, no clock.

Apart from store/record.py because it needs the report analysis (report/), which
the guard, a daemon that stores its own kills, has no use for.
"""

from __future__ import annotations

from oomlens.report.diagnose import Diagnosis
from oomlens.report.facts import missing_parts, scope, victim_kb
from oomlens.report.model import LogLine, OomEvent
from oomlens.report.schema import event_json
from oomlens.store.record import EventKind, EventRecord


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
