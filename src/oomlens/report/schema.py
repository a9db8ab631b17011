"""The `oomlens.report/1` JSON contract (docs/json.md): plain dicts from events and
their diagnoses. Absent facts are None, never invented. `watch` and the history
store keep events in this form too."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from oomlens.report.diagnose import Diagnosis
from oomlens.report.facts import missing_parts, page_kb, scope
from oomlens.report.findings import Finding
from oomlens.report.model import CounterLine, OomEvent, Victim
from oomlens.report.summary import Summary

SCHEMA = "oomlens.report/1"

_TASK_KEYS = (
    "pid", "uid", "tgid", "total_vm", "rss", "rss_anon", "rss_file", "rss_shmem", "nr_ptes",
    "nr_pmds", "pgtables_bytes", "swapents", "oom_score_adj", "oom_adj", "cpu", "name",
)  # fmt: skip


def event_id(event: OomEvent) -> str:
    """Stable within one run over the same sources: where the report starts."""
    return f"{event.source}:{event.first_lineno}"


def event_time(event: OomEvent) -> str | None:
    return None if event.wallclock is None else event.wallclock.isoformat()


def victim_json(victim: Victim | None) -> dict[str, Any] | None:
    if victim is None:
        return None
    return {
        "pid": victim.pid,
        "comm": victim.comm,
        "total_vm_kb": victim.total_vm_kb,
        "anon_rss_kb": victim.anon_rss_kb,
        "file_rss_kb": victim.file_rss_kb,
        "shmem_rss_kb": victim.shmem_rss_kb,
        "uid": victim.uid,
        "pgtables_kb": victim.pgtables_kb,
        "oom_score_adj": victim.oom_score_adj,
        "score": victim.score,
        "reaped": victim.reaped,
        "reaped_anon_rss_kb": victim.reaped_anon_rss_kb,
    }


def _counter(prefix: str, counter: CounterLine | None) -> dict[str, Any]:
    if counter is None:
        return {f"{prefix}usage_kb": None, f"{prefix}limit_kb": None, f"{prefix}failcnt": None}
    return {
        f"{prefix}usage_kb": counter.usage_kb,
        f"{prefix}limit_kb": counter.limit_kb,
        f"{prefix}failcnt": counter.failcnt,
    }


def finding_json(finding: Finding) -> dict[str, Any]:
    return {
        "code": finding.code,
        "severity": finding.severity,
        "message": finding.message,
        "evidence": finding.evidence,
        "fix": finding.fix,
    }


def event_json(event: OomEvent, diagnosis: Diagnosis) -> dict[str, Any]:
    missing = missing_parts(event)
    memcg = event.memcg
    memory = event.memory
    trigger = event.trigger
    points = {row.pid: row for row in diagnosis.ranking}
    tasks = []
    for row in event.tasks:
        item = {key: getattr(row, key) for key in _TASK_KEYS}
        ranked = points.get(row.pid)
        item["badness"] = None if ranked is None else ranked.points
        item["rank"] = None if ranked is None else ranked.rank
        tasks.append(item)
    return {
        "id": event_id(event),
        "source": event.source,
        "line": event.first_lineno,
        "host": event.stream or None,
        "complete": not missing,
        "missing": missing,
        "time": event_time(event),
        "monotonic": event.monotonic,
        "seq": event.seq,
        "kernel_version": event.kernel_version,
        "scope": scope(event),
        "constraint": event.constraint,
        "trigger": {
            "pid": trigger.pid,
            "comm": trigger.comm,
            "uid": trigger.uid,
            "gfp_mask": trigger.gfp_mask,
            "gfp_flags": trigger.gfp_flags,
            "order": trigger.order,
            "oom_score_adj": trigger.oom_score_adj,
            "oom_adj": trigger.oom_adj,
        },
        "kill_message": event.kill_message,
        "selected": None if event.selection is None else asdict(event.selection),
        "victim": victim_json(event.victim),
        "oom_group": event.oom_group,
        "group_victims": [victim_json(v) for v in event.group_victims],
        "memcg": None if memcg is None else {
            "oom_memcg": memcg.oom_memcg,
            "task_memcg": memcg.task_memcg,
            **_counter("", memcg.memory),
            **_counter("memsw_", memcg.memsw),
            **_counter("swap_", memcg.swap),
            **_counter("kmem_", memcg.kmem),
            "stats_path": memcg.stats_path,
            "stats": memcg.stats,
        },
        "memory": {
            "page_size_kb": memory.page_size_kb,
            "ram_pages": memory.ram_pages,
            "reserved_pages": memory.reserved_pages,
            "highmem_pages": memory.highmem_pages,
            "cma_reserved_pages": memory.cma_reserved_pages,
            "pagecache_pages": memory.pagecache_pages,
            "swapcache_pages": memory.swapcache_pages,
            "swap_total_kb": memory.swap_total_kb,
            "swap_free_kb": memory.swap_free_kb,
            "meminfo": memory.meminfo,
            "breakdown_kb": diagnosis.breakdown,
        },
        "no_killable": event.no_killable,
        "panic": event.panic,
        "oom_kill": event.oom_kill_fields or None,
        "analysis": {
            "totalpages": diagnosis.totalpages,
            "page_size_kb_assumed": event.memory.page_size_kb is None,
            "page_size_kb": page_kb(event),
            "rules": diagnosis.era,
            "predicted_pid": diagnosis.predicted_pid,
            "choice_checks_out": diagnosis.choice_checks_out,
            "top_processes": [asdict(c) for c in diagnosis.top_processes],
            "top_groups": [asdict(c) for c in diagnosis.top_groups],
        },
        "tasks": tasks,
        "findings": [finding_json(f) for f in diagnosis.findings],
    }


def summary_json(summary: Summary) -> dict[str, Any]:
    return {
        "events": summary.events,
        "complete": summary.complete,
        "repeated_victims": [asdict(r) for r in summary.repeated_victims],
        "growth": [asdict(g) for g in summary.growth],
        "findings": dict(summary.finding_counts),
    }
