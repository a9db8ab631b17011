"""`oomlens` with no command: one screen of memory headroom, pressure, the next
victims per OOM domain and the doctor's top findings (its cheap checks)."""

from __future__ import annotations

import argparse
import time
from datetime import UTC, datetime
from typing import Any

from oomlens.cli.env import Env, ExitStatus
from oomlens.cli.render.json import write_json
from oomlens.cli.render.table import Column, paint, render_table
from oomlens.cli.views import process_json, where
from oomlens.doctor.finding import Finding as DoctorFinding
from oomlens.health import Finding, memcg_usage_share, status_warnings
from oomlens.kernel.domain import DomainKind, OomDomain
from oomlens.postmortem import Analysed, investigate
from oomlens.ranking import RankedProcess, all_domains, rank_domain
from oomlens.report.facts import scope, victim_kb
from oomlens.report.schema import event_time
from oomlens.store.record import EventRecord, StoredEvent
from oomlens.system.meminfo import read_vmstat
from oomlens.system.snapshot import Snapshot, take_snapshot
from oomlens.units import format_bytes, format_share

SCHEMA = "oomlens.status/1"
TOP_N = 5
RECENT_KILLS = 3
TOP_FINDINGS = 5
VICTIM_COLUMNS = (Column("RANK"), Column("PID"), Column("BADNESS"), Column("SHARE"),
                  Column("ADJ"), Column("RSS"), Column("CGROUP/UNIT", "<"),
                  Column("COMMAND", "<", flex=True))


def next_victims(snapshot: Snapshot) -> list[tuple[OomDomain, list[RankedProcess]]]:
    out = []
    for domain in all_domains(snapshot):
        ranked = [r for r in rank_domain(snapshot, domain) if r.ranked.rank is not None]
        out.append((domain, ranked[:TOP_N]))
    return out


def recent_kills(env: Env) -> tuple[list[Analysed], str | None]:
    """The last OOM kills still in the kernel's ring buffer, or why it was not read."""
    found = investigate([env.kmsg], proc_root=env.proc_root)
    why = [p.message for p in found.problems] + [s.error for s in found.sources if s.error]
    return list(found.events[-RECENT_KILLS:]), "; ".join(why) or None


def stored_kills(env: Env, url: str | None = None,
                 limit: int = RECENT_KILLS) -> list[StoredEvent] | None:
    """The last kills in the history store (`oomlens watch` keeps it; default: the
    one in the state directory), or None when there is none or it cannot be read."""
    import os

    from oomlens.errors import OomlensError
    from oomlens.store.db import EventQuery, default_store_url, open_store

    url = url or default_store_url(env.state_dir)
    if url.startswith("sqlite://") and not os.path.exists(url.removeprefix("sqlite://")):
        return None
    try:
        with open_store(url, create=False) as store:
            return store.events(EventQuery(limit=limit))
    except OomlensError:
        return None


def doctor_findings(snapshot: Snapshot, kills: int | None, env: Env) -> list[DoctorFinding]:
    """The doctor's cheap checks: the snapshot plus a dozen small files (measured here:
    0.3 ms on top of the snapshot's 4 ms)."""
    from oomlens.cli.commands.doctor import roots
    from oomlens.doctor.checks import run_checks
    from oomlens.doctor.gather import gather

    return run_checks(gather(snapshot, roots(env), oom_kills=kills, now=time.time(),
                             deep=False))


def run(args: argparse.Namespace, env: Env) -> ExitStatus:
    snapshot = take_snapshot(env.proc_root)
    kills = read_vmstat(env.proc_root).get("oom_kill")
    doctor = doctor_findings(snapshot, kills, env)
    findings = status_warnings(doctor)
    victims = next_victims(snapshot)
    stored = stored_kills(env)
    recent, unread = ([], None) if stored is not None else recent_kills(env)
    if args.json:
        document = _json(snapshot, kills, victims, findings)
        document["doctor"] = _doctor_json(doctor)
        document["recent_oom_kills"] = ([_stored_json(s) for s in stored] if stored is not None
                                        else [_kill_json(item) for item in recent])
        document["notes"]["kernel_log_unread"] = unread
        document["notes"]["recent_oom_kills_from"] = "store" if stored is not None else "kernel log"
        write_json(env.stdout, document)
    else:
        lines = _text(snapshot, kills, victims, doctor, env)
        lines += (_stored_text(stored, env) if stored is not None
                  else _recent_text(recent, unread, env))
        env.stdout.write("\n".join(lines) + "\n")
    if args.check and any(f.severity == "warning" for f in findings):
        return ExitStatus.PROBLEM
    return ExitStatus.OK


def _json(snapshot: Snapshot, kills: int | None,
          victims: list[tuple[OomDomain, list[RankedProcess]]],
          findings: list[Finding]) -> dict[str, Any]:
    mem = snapshot.meminfo
    memcgs = {m.path: m for m in snapshot.memcgs}
    pressure = snapshot.pressure
    return {
        "schema": SCHEMA,
        "kernel": snapshot.kernel_release,
        "memory": {
            "mem_total_kib": mem.mem_total_kib, "mem_available_kib": mem.mem_available_kib,
            "swap_total_kib": mem.swap_total_kib, "swap_free_kib": mem.swap_free_kib,
            "committed_as_kib": mem.committed_as_kib, "commit_limit_kib": mem.commit_limit_kib,
        },
        "pressure": None if pressure is None else {
            "some_avg10": pressure.some.avg10, "some_avg60": pressure.some.avg60,
            "full_avg10": None if pressure.full is None else pressure.full.avg10,
            "full_avg60": None if pressure.full is None else pressure.full.avg60,
        },
        "oom_kills_since_boot": kills,
        "domains": [
            {"domain": d.label, "kind": str(d.kind), "path": d.path, "totalpages": d.totalpages,
             "usage_bytes": None if d.kind is DomainKind.GLOBAL else memcgs[d.path].usage_bytes,
             "limit_bytes": None if d.kind is DomainKind.GLOBAL else memcgs[d.path].limit_bytes,
             "next_victims": [process_json(r) for r in rows]}
            for d, rows in victims
        ],
        "warnings": [{"code": f.code, "severity": f.severity, "message": f.message}
                     for f in findings],
        "notes": {"processes_gone_mid_scan": snapshot.notes.gone,
                  "denied": snapshot.notes.denied},
    }


def _doctor_json(findings: list[DoctorFinding]) -> dict[str, Any]:
    from oomlens.cli.commands.doctor import counts

    return {"counts": counts(findings),
            "top": [{"code": f.code, "severity": f.severity.value, "summary": f.summary}
                    for f in findings[:TOP_FINDINGS]]}


def _doctor_text(findings: list[DoctorFinding], env: Env) -> list[str]:
    from oomlens.cli.commands.doctor import finding_line

    top = findings[:TOP_FINDINGS]
    width = max((len(f.code) for f in top), default=0)
    more = f"all {len(findings)} findings" if len(findings) > len(top) else "the findings"
    return ["", paint("Doctor — top findings", "bold", env.colour),
            *(f"  {finding_line(f, width, env.colour)}" for f in top),
            f"  (oomlens doctor: {more} with evidence, why and the fix)"]


def _text(snapshot: Snapshot, kills: int | None,
          victims: list[tuple[OomDomain, list[RankedProcess]]], findings: list[DoctorFinding],
          env: Env) -> list[str]:
    mem, kib = snapshot.meminfo, 1024
    lines = [
        paint(f"oomlens — kernel {snapshot.kernel_release}", "bold", env.colour),
        f"memory  {format_bytes(mem.mem_available_kib * kib)} available of "
        f"{format_bytes(mem.mem_total_kib * kib)} "
        f"({format_share(mem.mem_available_kib / mem.mem_total_kib)})",
        "swap    " + (f"{format_bytes(mem.swap_free_kib * kib)} free of "
                       f"{format_bytes(mem.swap_total_kib * kib)}" if mem.swap_total_kib
                       else "none"),
        f"commit  {format_bytes(mem.committed_as_kib * kib)} committed, limit "
        f"{format_bytes(mem.commit_limit_kib * kib)} (vm.overcommit_memory = "
        f"{snapshot.sysctls.get('vm.overcommit_memory', '?')})",
        _pressure_line(snapshot),
        f"kills   {'?' if kills is None else kills} OOM kill(s) since boot",
    ]
    memcgs = {m.path: m for m in snapshot.memcgs}
    for domain, rows in victims:
        heading = f"Next victims — {domain.label}"
        if domain.kind is DomainKind.MEMCG:
            m = memcgs[domain.path]
            heading += (f" ({format_bytes(m.usage_bytes)} of {format_bytes(m.limit_bytes)}, "
                        f"{format_share(memcg_usage_share(m))})")
        lines += ["", paint(heading, "bold", env.colour)]
        table_rows = [[str(r.ranked.rank), str(r.process.pid), str(r.ranked.points),
                       format_share(r.share), str(r.process.task.oom_score_adj),
                       format_bytes(r.process.task.rss_pages * snapshot.page_size), where(r),
                       r.process.cmdline or r.process.comm] for r in rows]
        lines += render_table(VICTIM_COLUMNS, table_rows,
                              width=env.columns if env.stdout_isatty else None)
    if findings:
        lines += _doctor_text(findings, env)
    return lines


def _kill_json(item: Analysed) -> dict[str, Any]:
    event, main = item.event, item.diagnosis.main
    return {
        "time": event_time(event),
        "scope": scope(event),
        "victim": None if event.victim is None else {
            "pid": event.victim.pid, "comm": event.victim.comm,
            "rss_kib": victim_kb(event)},
        "main_finding": None if main is None else {
            "code": main.code, "severity": main.severity, "message": main.message},
    }


def main_finding_of(record: EventRecord) -> dict[str, Any] | None:
    """The stored report's main finding (code, severity, message), if it has one."""
    found = (f for f in record.detail.get("findings", ()) if f.get("code") == record.main_finding)
    return next(found, None)


def _stored_json(stored: StoredEvent) -> dict[str, Any]:
    record = stored.record
    main = main_finding_of(record)
    return {
        "time": datetime.fromtimestamp(record.time, UTC).isoformat(timespec="seconds"),
        "scope": record.scope,
        "victim": None if record.victim_pid is None else {
            "pid": record.victim_pid, "comm": record.victim_comm,
            "rss_kib": record.victim_rss_kb},
        "main_finding": None if main is None else {
            "code": main["code"], "severity": main["severity"], "message": main["message"]},
        "id": stored.id,
        "kind": str(record.kind),
    }


def _stored_text(stored: list[StoredEvent], env: Env) -> list[str]:
    from oomlens.cli.commands.watch import describe

    lines = ["", paint("Last OOM kills (history store)", "bold", env.colour)]
    if not stored:
        return [*lines, "  none recorded"]
    return [*lines, *(f"  {describe(event)}" for event in stored),
            "  (oomlens history show ID for the full analysis)"]


def _recent_text(recent: list[Analysed], unread: str | None, env: Env) -> list[str]:
    lines = ["", paint("Last OOM kills (kernel log)", "bold", env.colour)]
    if unread and not recent:
        return [*lines, f"  not read: {unread}"]
    if not recent:
        return [*lines, "  none in the ring buffer"]
    for item in recent:
        event, main = item.event, item.diagnosis.main
        when = event_time(event) or "?"
        victim = "-" if event.victim is None else f"{event.victim.comm} ({event.victim.pid})"
        cause = "" if main is None else f"  {main.code}: {main.message}"
        lines.append(f"  {when[:19]}  {scope(event):7}  {victim}{cause}")
    return [*lines, "  (oomlens report --details for the full analysis)"]


def _pressure_line(snapshot: Snapshot) -> str:
    psi = snapshot.pressure
    if psi is None:
        return "psi     not available"
    full = "" if psi.full is None else \
        f"; full {psi.full.avg10:.2f}/{psi.full.avg60:.2f}/{psi.full.avg300:.2f}"
    return (f"psi     some {psi.some.avg10:.2f}/{psi.some.avg60:.2f}/{psi.some.avg300:.2f}"
            f"{full} % stalled (avg10/60/300)")
