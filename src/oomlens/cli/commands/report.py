"""`oomlens report [SOURCE...]`: every OOM kill in the logs, what caused it, and
what to change. A summary first; `--details` for each event in full."""

from __future__ import annotations

import argparse
from typing import Any

from oomlens.cli.env import Env, ExitStatus
from oomlens.cli.render.json import write_json
from oomlens.cli.render.report import SEVERITY_STYLE, event_details, event_time
from oomlens.cli.render.table import Column, render_table
from oomlens.errors import NotFound
from oomlens.postmortem import Analysed, Investigation, investigate, select
from oomlens.report.facts import scope, victim_kb
from oomlens.report.schema import SCHEMA, event_json, summary_json
from oomlens.units import format_bytes

SUMMARY_COLUMNS = (
    Column("TIME", "<"), Column("SCOPE", "<"), Column("VICTIM", "<"), Column("FREED"),
    Column("MAIN FINDING", "<", flex=True),
)  # fmt: skip



def run(args: argparse.Namespace, env: Env) -> ExitStatus:
    found = investigate(
        args.sources, stdin=env.stdin, log_dir=env.log_dir, kmsg=env.kmsg,
        proc_root=env.proc_root,
    )  # fmt: skip
    chosen = select(
        found.events, since=args.since, until=args.until, pid=args.pid, comm=args.comm,
        last=args.last,
    )  # fmt: skip
    if args.json:
        write_json(env.stdout, _json(found, chosen))
    else:
        env.stdout.write("\n".join(_text(found, chosen, args.details, env)) + "\n")
    return _status(found, bool(args.sources))


def _status(found: Investigation, explicit: bool) -> ExitStatus:
    """Input errors in sources the user named are exit 2 (after printing what the
    other sources gave); without names, only having nothing readable at all is."""
    if not found.sources and not explicit:
        reasons = "; ".join(f"{p.name}: {p.message}" for p in found.problems)
        raise NotFound("no kernel log found (" + (reasons or "no ring buffer, journal or "
                       "/var/log file") + "): name a log file")
    failed = [s for s in found.sources if s.error] + list(found.problems)
    if failed and (explicit or not any(s.error is None for s in found.sources)):
        return ExitStatus.USAGE
    return ExitStatus.OK


def _json(found: Investigation, chosen: list[Analysed]) -> dict[str, Any]:
    sources: list[dict[str, Any]] = [
        {"name": s.source.name, "kind": s.source.kind, "events": s.events, "error": s.error}
        for s in found.sources
    ]
    sources += [
        {"name": p.name, "kind": None, "events": 0, "error": p.message} for p in found.problems
    ]
    return {
        "schema": SCHEMA,
        "sources": sources,
        "duplicates_dropped": found.duplicates,
        "events": [event_json(a.event, a.diagnosis) for a in chosen],
        "summary": summary_json(found.summary),
    }


def _victim(item: Analysed) -> str:
    victim = item.event.victim
    if victim is not None:
        return f"{victim.comm} ({victim.pid})"
    if item.event.no_killable:
        return "(nothing killable)"
    return "(not in log)"


def _text(found: Investigation, chosen: list[Analysed], details: bool, env: Env) -> list[str]:
    out = _sources_lines(found)
    if not chosen:
        out.append("No OOM kills found." if not found.events else "No OOM kill matches.")
        return out
    rows, styles = [], []
    for item in chosen:
        main = item.diagnosis.main
        freed = victim_kb(item.event)
        rows.append([
            event_time(item), scope(item.event), _victim(item),
            "-" if freed is None else format_bytes(freed * 1024),
            "-" if main is None else f"{main.code}: {main.message}",
        ])  # fmt: skip
        styles.append(SEVERITY_STYLE.get(main.severity if main else "info", ""))
    width = env.columns if env.stdout_isatty else None
    out += ["", *render_table(SUMMARY_COLUMNS, rows, width, styles, env.colour)]
    out += _across(found)
    if details:
        for item in chosen:
            out += ["", *event_details(item, env)]
    else:
        out += ["", "Details: oomlens report --details (with --last N, --pid, --comm)."]
    return out


def _sources_lines(found: Investigation) -> list[str]:
    parts = [f"{s.source.name}: {_count(s.events, 'event')}" if not s.error
             else f"{s.source.name}: {_count(s.events, 'event')}, then stopped: {s.error}"
             for s in found.sources]
    parts += [f"{p.name}: not read: {p.message}" for p in found.problems]
    out = ["Sources read:", *(f"  {part}" for part in parts)] if parts else ["No sources."]
    if found.duplicates:
        out.append(f"  ({_count(found.duplicates, 'copy', 'copies')} of the same kills merged)")
    return out


def _count(n: int, one: str, many: str | None = None) -> str:
    return f"{n} {one if n == 1 else (many or one + 's')}"


def _across(found: Investigation) -> list[str]:
    summary = found.summary
    out = []
    for repeat in summary.repeated_victims[:5]:
        out.append(f"Killed {repeat.kills} times: {repeat.comm} (pids "
                   f"{', '.join(str(p) for p in repeat.pids[:8])})")
    for growth in summary.growth[:5]:
        sizes = " -> ".join(format_bytes(kb * 1024) for kb in growth.rss_kb[-6:])
        out.append(f"Growing between kills: {growth.comm} {sizes} (a leak signal)")
    return ["", *out] if out else []


