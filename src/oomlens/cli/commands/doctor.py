"""`oomlens doctor [--plan FILE]`: every finding with its evidence, why and fix, most
severe first; with --plan, the proposed changes written for review (`oomlens apply`)."""

from __future__ import annotations

import argparse
import dataclasses
import os
import textwrap
import time
from collections import Counter
from datetime import UTC, datetime
from typing import Any

from oomlens.cli.env import Env, ExitStatus
from oomlens.cli.protect_args import state_dir_of
from oomlens.cli.render.json import write_json
from oomlens.cli.render.table import paint
from oomlens.doctor.facts import Facts, Kills, RecentKill
from oomlens.doctor.finding import Finding, ProtectService, SetScoreAdj, SetSysctl, Severity
from oomlens.doctor.gather import Roots, gather
from oomlens.doctor.plan import Plan, SwapFile
from oomlens.postmortem import Analysed
from oomlens.store.record import StoredEvent

SCHEMA = "oomlens.doctor/1"
STYLES = {Severity.CRITICAL: "red", Severity.WARNING: "yellow", Severity.INFO: "dim"}
RECENT_KILLS = 10
_LABEL = 10  # width of "critical  " and of "evidence  "


def roots(env: Env) -> Roots:
    return Roots(proc=env.proc_root, sys=env.sys_root, systemd_dir=env.systemd_dir,
                 kmsg=env.kmsg)


def run(args: argparse.Namespace, env: Env) -> ExitStatus:
    from oomlens.doctor.checks import run_checks
    from oomlens.errors import UsageError

    if args.swap_file is not None and args.plan is None:
        raise UsageError("--swap-file goes with --plan FILE")
    facts = _facts(args, env)
    findings = run_checks(facts)
    plan = None if args.plan is None else _write_plan(args, env, findings, facts)
    if getattr(args, "json", False):
        write_json(env.stdout, _json(facts, findings, plan, args))
    else:
        env.stdout.write("\n".join(_text(facts, findings, plan, args, env)) + "\n")
    above_info = any(f.severity is not Severity.INFO for f in findings)
    return ExitStatus.PROBLEM if above_info else ExitStatus.OK


def _facts(args: argparse.Namespace, env: Env) -> Facts:
    from oomlens.system.meminfo import read_vmstat
    from oomlens.system.snapshot import take_snapshot

    snapshot = take_snapshot(env.proc_root)
    facts = gather(snapshot, roots(env), oom_kills=read_vmstat(env.proc_root).get("oom_kill"),
                   now=time.time(), deep=True)
    return dataclasses.replace(facts, kills=recent_kills(args, env))


def recent_kills(args: argparse.Namespace, env: Env) -> Kills:
    """The last kills in the history store, else those in the kernel ring buffer."""
    from oomlens.cli.commands.status import recent_kills as logged_kills
    from oomlens.cli.commands.status import stored_kills
    from oomlens.store.db import default_store_url

    url = args.store or default_store_url(state_dir_of(args, env))
    stored = stored_kills(env, url, RECENT_KILLS)
    if stored is not None:
        return Kills(f"history store {url}", tuple(_stored_kill(s) for s in stored))
    analysed, unread = logged_kills(env)
    return Kills(f"kernel log {env.kmsg}", tuple(_logged_kill(a) for a in analysed), unread)


def _logged_kill(item: Analysed) -> RecentKill:
    from oomlens.report.facts import scope
    from oomlens.report.schema import event_time

    event, main = item.event, item.diagnosis.main
    when = event_time(event)
    victim = event.victim
    return RecentKill(None if when is None else datetime.fromisoformat(when).timestamp(),
                      _victim(None if victim is None else victim.comm,
                              None if victim is None else victim.pid),
                      scope(event), None if main is None else main.code,
                      None if main is None else main.message, "kernel log")


def _stored_kill(stored: StoredEvent) -> RecentKill:
    from oomlens.cli.commands.status import main_finding_of

    record = stored.record
    main = main_finding_of(record)
    return RecentKill(record.time, _victim(record.victim_comm, record.victim_pid), record.scope,
                      record.main_finding, None if main is None else str(main.get("message")),
                      f"history #{stored.id}")


def _victim(comm: str | None, pid: int | None) -> str:
    return "none" if pid is None else f"{comm} ({pid})"


def _write_plan(args: argparse.Namespace, env: Env, findings: list[Finding],
                facts: Facts) -> Plan:
    import secrets

    from oomlens.doctor.plan import PlanContext, build_plan, paths_to_read
    from oomlens.doctor.planfile import format_plan
    from oomlens.system.files import read_optional, write_atomic
    from oomlens.system.oomadj import boot_id

    ctx = PlanContext(
        id=secrets.token_hex(4), created=datetime.now(UTC).isoformat(timespec="seconds"),
        host=os.uname().nodename, boot_id=boot_id(env.proc_root),
        systemd_dir=env.systemd_dir, policy_path=args.policy,
        swap_file=_swap_file(args, facts))
    ctx = dataclasses.replace(ctx, files={p: read_optional(p) for p in paths_to_read(findings,
                                                                                      ctx)})
    plan = build_plan(findings, facts, ctx)
    write_atomic(args.plan, format_plan(plan, args.plan), mode=0o600)
    return plan


def _swap_file(args: argparse.Namespace, facts: Facts) -> SwapFile | None:
    from oomlens.guard.triggers import parse_amount

    if args.swap_file is None:
        return None
    size = parse_amount(args.swap_file, "--swap-file").resolve(facts.meminfo.mem_total_kib * 1024)
    try:
        stat = os.statvfs(os.path.dirname(os.path.abspath(args.swap_path)))
        free: int | None = stat.f_bavail * stat.f_frsize
    except OSError:
        free = None
    return SwapFile(args.swap_path, size, free)


def finding_json(finding: Finding) -> dict[str, Any]:
    return {
        "code": finding.code, "severity": finding.severity.value, "summary": finding.summary,
        "evidence": [{"source": e.source, "value": e.value} for e in finding.evidence],
        "why": finding.why, "fix": finding.fix,
        "proposals": [_proposal_json(p) for p in finding.proposals],
    }


def _proposal_json(proposal: SetSysctl | SetScoreAdj | ProtectService) -> dict[str, Any]:
    if isinstance(proposal, SetSysctl):
        return {"kind": "sysctl", "name": proposal.name, "value": proposal.value}
    if isinstance(proposal, SetScoreAdj):
        return {"kind": "oom_score_adj", "pid": proposal.pid, "comm": proposal.comm,
                "start_time_ticks": proposal.start_time_ticks, "value": proposal.value}
    return {"kind": "protect_service", "label": proposal.label, "comms": list(proposal.comms),
            "unit": proposal.unit, "value": proposal.value}


def counts(findings: list[Finding]) -> dict[str, int]:
    found = Counter(f.severity for f in findings)
    return {s.value: found[s] for s in (Severity.CRITICAL, Severity.WARNING, Severity.INFO)}


def _json(facts: Facts, findings: list[Finding], plan: Plan | None,
          args: argparse.Namespace) -> dict[str, Any]:
    kills = facts.kills
    return {
        "schema": SCHEMA, "kernel": facts.kernel_release, "host": os.uname().nodename,
        "counts": counts(findings), "findings": [finding_json(f) for f in findings],
        "plan": None if plan is None else {"path": args.plan, "id": plan.id,
                                           "items": len(plan.items)},
        "notes": {
            "recent_kills_from": None if kills is None else kills.source,
            "recent_kills_unread": None if kills is None else kills.unread,
            "kernel_log_unread": None if facts.oom_adj_use is None
            else facts.oom_adj_use.kernel_log_unread,
        },
    }


def finding_line(finding: Finding, code_width: int, colour: bool) -> str:
    """`warning   no-swap   no swap: ...`: one line per finding (the status screen's)."""
    severity = paint(f"{finding.severity.value:<{_LABEL - 2}}", STYLES[finding.severity], colour)
    return f"{severity}  {finding.code:<{code_width}}  {finding.summary}"


def _wrapped(label: str, text: str, width: int, lead: str = "") -> list[str]:
    """`text` under a label, wrapped at spaces; `lead` (a path) is never broken and the
    text starts on its line."""
    indent = " " * (_LABEL + 2)
    return textwrap.wrap(text, width=max(width, 40), initial_indent=f"  {label:<{_LABEL}}{lead}",
                         subsequent_indent=indent, break_on_hyphens=False,
                         break_long_words=False) or [f"  {label:<{_LABEL}}{lead}".rstrip()]


def _details(finding: Finding, width: int) -> list[str]:
    lines = []
    for n, e in enumerate(finding.evidence):
        lines += _wrapped("evidence" if n == 0 else "", e.value, width, f"{e.source}: ")
    lines += _wrapped("why", finding.why, width)
    lines += _wrapped("fix", finding.fix, width)
    return lines


def _text(facts: Facts, findings: list[Finding], plan: Plan | None, args: argparse.Namespace,
          env: Env) -> list[str]:
    found = counts(findings)
    tally = ", ".join(f"{n} {s}{'s' if n > 1 and s == 'warning' else ''}"
                      for s, n in found.items() if n) or "no findings"
    lines = [paint(f"oomlens doctor — kernel {facts.kernel_release}: {tally}", "bold", env.colour)]
    width = env.columns if env.stdout_isatty else 100
    code_width = max((len(f.code) for f in findings), default=0)
    for finding in findings:
        full = args.details or finding.severity is not Severity.INFO
        if full:
            lines.append("")
        lines.append(finding_line(finding, code_width, env.colour))
        if full:
            lines += _details(finding, width)
    kills = facts.kills
    if kills is not None and kills.unread and not kills.events:
        lines += ["", f"recent kills not read: {kills.unread}"]
    lines.append("")
    if plan is not None:
        lines.append(f"plan {plan.id}: {len(plan.items)} item(s) written to {args.plan}; review "
                     f"it, then `oomlens apply {args.plan} --dry-run`")
    elif any(f.proposals for f in findings):
        lines.append("`oomlens doctor --plan FILE` writes the proposed changes for review")
    if not args.details and found["info"]:
        lines.append("(--details for the evidence of info findings)")
    return lines
