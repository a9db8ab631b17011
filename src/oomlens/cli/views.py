"""View models shared by `ls`, `top` and the status screen: one ranked process as a
JSON object (schema `oomlens.process/1`, docs/json.md) and as a text row."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from oomlens.cli.render.table import Column
from oomlens.ranking import RankedProcess
from oomlens.units import format_bytes, format_share

PROCESS_COLUMNS = (
    Column("RANK"), Column("PID"), Column("USER", "<"), Column("BADNESS"), Column("SHARE"),
    Column("OOM_SCORE"), Column("PREDICTED"), Column("ADJ"), Column("RSS"), Column("SWAP"),
    Column("PGTABLES"), Column("CGROUP/UNIT", "<"), Column("COMMAND", "<", flex=True),
)


def process_json(item: RankedProcess) -> dict[str, Any]:
    proc, task = item.process, item.process.task
    kib = task.page_size // 1024
    return {
        "rank": item.ranked.rank,
        "pid": proc.pid,
        "ppid": proc.ppid,
        "comm": proc.comm,
        "user": proc.user,
        "uid": proc.uid,
        "state": proc.state,
        "eligible": item.ranked.ineligible is None,
        "ineligible_reason": None if item.ranked.ineligible is None
        else item.ranked.ineligible.name,
        "badness": item.ranked.points,
        "badness_share": item.share,
        "domain": item.domain.label,
        "oom_score": proc.oom_score,
        "predicted_oom_score": item.predicted_oom_score,
        "oom_score_adj": task.oom_score_adj,
        "rss_anon_kib": task.rss_anon_pages * kib,
        "rss_file_kib": task.rss_file_pages * kib,
        "rss_shmem_kib": task.rss_shmem_pages * kib,
        "swap_kib": task.swapents * kib,
        "pgtables_kib": task.pgtables_bytes // 1024,
        "memcg": proc.memcg,
        "unit": proc.unit,
        "start_time_ticks": proc.start_time_ticks,
        "cmdline": proc.cmdline,
    }


def where(item: RankedProcess) -> str:
    proc = item.process
    return proc.unit or proc.memcg or "-"


def process_row(item: RankedProcess) -> list[str]:
    proc, task = item.process, item.process.task
    page = task.page_size
    return [
        "-" if item.ranked.rank is None else str(item.ranked.rank),
        str(proc.pid),
        proc.user,
        "-" if item.ranked.points is None else str(item.ranked.points),
        format_share(item.share),
        "?" if proc.oom_score is None else str(proc.oom_score),
        str(item.predicted_oom_score),
        str(task.oom_score_adj),
        format_bytes(task.rss_pages * page),
        format_bytes(task.swapents * page),
        format_bytes(task.pgtables_bytes),
        where(item),
        proc.cmdline or f"[{proc.comm}]",
    ]


def row_style(item: RankedProcess) -> str:
    if item.ranked.ineligible is not None:
        return "dim"
    if item.process.oom_score is not None and item.process.oom_score != item.predicted_oom_score:
        return "yellow"
    return ""


def _sort_key(name: str) -> Any:
    keys: dict[str, Any] = {
        "pid": lambda r: r.process.pid,
        "rss": lambda r: -r.process.task.rss_pages,
        "swap": lambda r: -r.process.task.swapents,
        "adj": lambda r: -r.process.task.oom_score_adj,
        "oom_score": lambda r: -(r.process.oom_score or 0),
        "user": lambda r: r.process.user,
        "comm": lambda r: r.process.comm,
    }
    return keys.get(name)


def select_rows(
    items: Sequence[RankedProcess], *, show_kthreads: bool = False, user: str | None = None,
    match: re.Pattern[str] | None = None, eligible_only: bool = False, sort: str = "rank",
    limit: int | None = None,
) -> list[RankedProcess]:
    """Filter, sort (kill order unless asked otherwise) and cut to `limit`."""
    rows = [
        r for r in items
        if (show_kthreads or not r.process.task.is_kthread)
        and (user is None or user in (r.process.user, str(r.process.uid)))
        and (match is None or match.search(r.process.comm) or match.search(r.process.cmdline))
        and (not eligible_only or r.ranked.ineligible is None)
    ]
    key = _sort_key(sort)
    if key is not None:
        rows.sort(key=key)
    return rows if limit is None else rows[:limit]
