"""`oomlens history [list|show ID|stats]`: the OOM kills `oomlens watch` stored,
one kill in full, or counts over them.

Reading never creates a store: without one (no watcher ever ran here, or a
mistyped `--store`) it is an error, exit 2, in text and in JSON alike, because
"no kills" would claim something nobody watched for.
"""

from __future__ import annotations

import argparse
from datetime import datetime
from typing import Any

from oomlens.cli.env import Env, ExitStatus
from oomlens.cli.protect_args import state_dir_of
from oomlens.cli.render.json import write_json
from oomlens.cli.render.report import SEVERITY_STYLE
from oomlens.cli.render.table import Column, paint, render_table
from oomlens.errors import NotFound, UsageError
from oomlens.store.db import EventQuery, EventStats, Store, default_store_url, open_store
from oomlens.store.record import EventKind, EventRecord, StoredEvent, record_json
from oomlens.units import format_bytes

SCHEMA = "oomlens.history/1"
LIST_COLUMNS = (
    Column("ID"), Column("TIME", "<"), Column("HOST", "<"), Column("KIND", "<"),
    Column("VICTIM", "<"), Column("RSS"), Column("CGROUP", "<", flex=True),
    Column("FINDING", "<"),
)  # fmt: skip
INCOMPLETE = "*"
TOP_N = 10
DAYS_SHOWN = 31


def run(args: argparse.Namespace, env: Env) -> ExitStatus:
    if args.action == "show" and args.event_id is None:
        raise UsageError("history show needs an event ID (the first column of oomlens history)")
    if args.action != "show" and args.event_id is not None:
        raise UsageError(f"an event ID goes with `history show`, not `history {args.action}`")
    url = args.store or default_store_url(state_dir_of(args, env))
    as_json = getattr(args, "json", False)
    with open_store(url, create=False) as store:
        if args.action == "show":
            _show(store, args.event_id, as_json, env)
        elif args.action == "stats":
            _stats(store, _query(args, limit=None), as_json, env)
        else:
            _list(store, _query(args, limit=args.limit), as_json, env)
    return ExitStatus.OK


def _query(args: argparse.Namespace, limit: int | None) -> EventQuery:
    return EventQuery(
        since=None if args.since is None else args.since.timestamp(),
        until=None if args.until is None else args.until.timestamp(),
        host=args.host, comm=args.comm, cgroup=args.cgroup, finding=args.finding,
        kind=None if args.kind is None else EventKind(args.kind), limit=limit,
    )  # fmt: skip


def _filtered(query: EventQuery) -> bool:
    return any(v is not None for v in (query.since, query.until, query.host, query.comm,
                                       query.cgroup, query.finding, query.kind))


def _list(store: Store, query: EventQuery, as_json: bool, env: Env) -> None:
    events = store.events(query)
    if as_json:
        write_json(env.stdout, {"schema": SCHEMA, "store": store.display,
                                "events": [record_json(e) for e in events]})
        return
    if not events:
        env.stdout.write("No stored OOM kill matches.\n" if _filtered(query)
                         else f"No OOM kills recorded in {store.display}.\n")
        return
    width = env.columns if env.stdout_isatty else None
    lines = render_table(LIST_COLUMNS, [_row(e) for e in events], width)
    if any(_incomplete(e.record) for e in events):
        lines.append(f"{INCOMPLETE} incomplete: the log did not show the whole report")
    if query.limit is not None and len(events) == query.limit:
        lines.append(f"The last {query.limit} shown (--limit N for more); "
                     "oomlens history show ID for one in full.")
    env.stdout.write("\n".join(lines) + "\n")


def _row(stored: StoredEvent) -> list[str]:
    record = stored.record
    rss = None if record.victim_rss_kb is None else record.victim_rss_kb * 1024
    return [str(stored.id), _local(record.time), record.host,
            str(record.kind) + (INCOMPLETE if _incomplete(record) else ""), victim_text(record),
            format_bytes(rss), record.cgroup or "-", record.main_finding or "-"]


def _incomplete(record: EventRecord) -> bool:
    """Only a kernel event has a report that can be incomplete."""
    return record.kind is EventKind.KERNEL and not record.complete


def victim_text(record: EventRecord) -> str:
    """`php-fpm (4242)`, `+5` for the other memory.oom.group victims; for a record
    without a victim, how many kills it stands for."""
    if record.victim_comm is not None:
        group = f" +{record.kills - 1}" if record.kills > 1 else ""
        return f"{record.victim_comm} ({record.victim_pid}){group}"
    kills = f"{record.kills} kill{'' if record.kills == 1 else 's'}"
    if record.kind is EventKind.LOST:
        return f"— {kills} lost"
    if record.kind is EventKind.MEMCG:
        return f"— {kills} (cgroup counter)"
    return "— no victim"


def _local(epoch: float) -> str:
    return datetime.fromtimestamp(epoch).strftime("%Y-%m-%d %H:%M:%S")


def _show(store: Store, event_id: int, as_json: bool, env: Env) -> None:
    stored = store.get(event_id)
    if stored is None:
        raise NotFound(f"no event #{event_id} in {store.display}")
    if as_json:
        write_json(env.stdout, {"schema": SCHEMA, "store": store.display,
                                "event": record_json(stored, full=True)})
        return
    env.stdout.write("\n".join(_details(stored, env)) + "\n")


def _details(stored: StoredEvent, env: Env) -> list[str]:
    record, detail = stored.record, stored.record.detail
    out = [paint(f"Event {stored.id}: {record.kind} on {record.host} at {_local(record.time)}"
                 f" (recorded {_local(stored.recorded_at)})", "bold", env.colour),
           f"Key {record.key}, boot {record.boot_id}"
           + ("" if record.monotonic is None else f", {record.monotonic:.6f} s after boot")]
    if record.scope or record.cgroup:
        out.append(f"Scope: {record.scope or '?'}"
                   + (f" ({record.constraint})" if record.constraint else "")
                   + (f", cgroup {record.cgroup}" if record.cgroup else ""))
    out.append(_victim_line(record))
    if record.trigger_comm:
        out.append(f"Trigger: {record.trigger_comm}")
    if "oom_kill_from" in detail:
        counter = "/proc/vmstat" if record.kind is EventKind.LOST else "the memory cgroup's"
        out.append(f"Counted: {counter} oom_kill went from {detail['oom_kill_from']} to "
                   f"{detail['oom_kill_to']}" + (f" ({detail['reason']})"
                                                 if detail.get("reason") else ""))
    if detail.get("missing"):
        out.append(f"Incomplete: missing {', '.join(detail['missing'])}")
    out += _findings(record, detail, env)
    out += _consumers(detail)
    if record.lines:
        out += ["", f"Kernel log ({len(record.lines)} lines):",
                *("  " + line for line in record.lines)]
    return out


def _victim_line(record: EventRecord) -> str:
    if record.victim_comm is None:
        return f"Victim: {victim_text(record)}"
    facts = [f"pid {record.victim_pid}"]
    if record.victim_uid is not None:
        facts.append(f"uid {record.victim_uid}")
    rss = None if record.victim_rss_kb is None else record.victim_rss_kb * 1024
    tail = [f"rss {format_bytes(rss)}"]
    if record.victim_oom_score_adj is not None:
        tail.append(f"oom_score_adj {record.victim_oom_score_adj}")
    if record.kills > 1:
        tail.append(f"{record.kills} kills with its memory.oom.group")
    if record.reaped:
        tail.append("reaped")
    return f"Victim: {record.victim_comm} ({', '.join(facts)}), {', '.join(tail)}"


def _findings(record: EventRecord, detail: dict[str, Any], env: Env) -> list[str]:
    """The main finding with its message and fix (from the stored report), then the
    codes of the others."""
    stored: list[dict[str, Any]] = detail.get("findings") or []
    if not stored:
        return [f"Main finding: {record.main_finding}"] if record.main_finding else []
    main = stored[0]
    out = ["", paint(f"Main finding [{main['severity']}] {main['code']}: {main['message']}",
                     SEVERITY_STYLE.get(main["severity"], ""), env.colour)]
    if main.get("fix"):
        out.append(f"    fix: {main['fix']}")
    if len(stored) > 1:
        out.append("Other findings: " + ", ".join(f["code"] for f in stored[1:]))
    return out


def _consumers(detail: dict[str, Any]) -> list[str]:
    groups = (detail.get("analysis") or {}).get("top_groups") or []
    if not groups:
        return []
    rows = []
    for group in groups[:5]:
        pids = group["pids"]
        label = f"{len(pids)} × {group['name']}" if len(pids) > 1 else (
            f"{group['name']} ({pids[0]})")
        share = "-" if group["share"] is None else f"{group['share'] * 100:.1f}%"
        rows.append([label, format_bytes(group["rss_kb"] * 1024),
                     format_bytes(group["swap_kb"] * 1024), share])
    columns = (Column("PROCESSES", "<"), Column("RSS"), Column("SWAP"), Column("SHARE"))
    return ["", "Top consumers (task table):",
            *("  " + line for line in render_table(columns, rows))]


def _stats(store: Store, query: EventQuery, as_json: bool, env: Env) -> None:
    stats = store.stats(query)
    if as_json:
        write_json(env.stdout, {"schema": SCHEMA, "store": store.display,
                                "stats": stats_json(stats)})
        return
    env.stdout.write("\n".join(_stats_text(stats, store.display)) + "\n")


def stats_json(stats: EventStats) -> dict[str, Any]:
    return {
        "events": stats.events, "kills": stats.kills, "per_day": dict(stats.per_day),
        "per_comm": dict(stats.per_comm), "per_cgroup": dict(stats.per_cgroup),
        "per_finding": dict(stats.per_finding), "per_host": dict(stats.per_host),
        "growth": [{"host": g.host, "comm": g.comm, "kills": g.kills, "rss_kb": list(g.rss_kb)}
                   for g in stats.growth],
    }  # fmt: skip


def _stats_text(stats: EventStats, display: str) -> list[str]:
    out = [f"{stats.kills} OOM kill{'' if stats.kills == 1 else 's'} in {stats.events} "
           f"stored event{'' if stats.events == 1 else 's'} ({display})"]
    days = stats.per_day[-DAYS_SHOWN:]
    earlier = len(stats.per_day) - len(days)
    out += _section("Kills per day (UTC)", "DAY", days,
                    f"and {earlier} earlier days with kills (--since, or --json)" if earlier
                    else "")
    out += _section("Top victims", "PROCESS", stats.per_comm[:TOP_N])
    out += _section("Top cgroups", "CGROUP", stats.per_cgroup[:TOP_N])
    out += _section("Main findings", "FINDING", stats.per_finding[:TOP_N])
    if len(stats.per_host) > 1:
        out += _section("Hosts", "HOST", stats.per_host[:TOP_N])
    if stats.growth:
        out += ["", "Growing from one kill to the next (a leak signal):"]
        out += [f"  {g.host}  {g.comm}: "
                + " -> ".join(format_bytes(kb * 1024) for kb in g.rss_kb[-6:])
                for g in stats.growth]
    return out


def _section(title: str, what: str, counts: tuple[tuple[str, int], ...],
             note: str = "") -> list[str]:
    if not counts:
        return []
    table = render_table((Column(what, "<"), Column("KILLS")),
                         [[name, str(kills)] for name, kills in counts])
    return ["", f"{title}:", *("  " + line for line in table), *([f"  {note}"] if note else [])]
