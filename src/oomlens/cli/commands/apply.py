"""`oomlens apply PLAN [--dry-run]`: carry out a plan of `oomlens doctor --plan`,
journaled; refused whole when the system no longer matches its before values."""

from __future__ import annotations

import argparse
import os
from typing import Any

from oomlens.cli.env import Env, ExitStatus
from oomlens.cli.protect_args import state_dir_of
from oomlens.cli.render.json import write_json
from oomlens.cli.render.table import Column, paint, render_table
from oomlens.doctor.apply import Applied, ApplyContext, Outcome, apply_plan
from oomlens.doctor.plan import Plan, shown
from oomlens.doctor.planfile import parse_plan
from oomlens.errors import NotFound
from oomlens.policy.apply import Result
from oomlens.system.files import read_optional

SCHEMA = "oomlens.apply/1"
_STYLE = {Result.APPLIED: "green", Result.DENIED: "red", Result.FAILED: "red",
          Result.MANUAL: "yellow"}


def run(args: argparse.Namespace, env: Env) -> ExitStatus:
    from oomlens.policy.journal import Journal
    from oomlens.system.oomadj import boot_id

    text = read_optional(args.plan)
    if text is None:
        raise NotFound(f"no plan file {args.plan}")
    plan = parse_plan(text, args.plan)
    ctx = ApplyContext(
        proc_root=env.proc_root, sysctl_dir=args.sysctl_dir or env.sysctl_dir,
        systemd_dir=env.systemd_dir, host=os.uname().nodename, boot_id=boot_id(env.proc_root),
        actor=env.actor, command=args.command_line, dry_run=args.dry_run)
    if args.dry_run:
        applied = apply_plan(plan, ctx, None)
    else:
        with Journal.open(state_dir_of(args, env)) as journal:
            applied = apply_plan(plan, ctx, journal)
    if getattr(args, "json", False):
        write_json(env.stdout, _json(plan, applied, args))
    else:
        env.stdout.write("\n".join(_text(plan, applied, args, env)) + "\n")
    return exit_status(applied)


def exit_status(applied: Applied) -> ExitStatus:
    results = {o.result for o in applied.outcomes}
    if Result.DENIED in results:
        return ExitStatus.PERMISSION
    if applied.refused or Result.FAILED in results:
        return ExitStatus.PROBLEM
    return ExitStatus.OK


def _outcome_json(outcome: Outcome) -> dict[str, Any]:
    item = outcome.item
    return {
        "kind": outcome.kind, "target": outcome.target, "before": outcome.before,
        "after": outcome.after, "result": outcome.result.value, "change_id": outcome.change_id,
        "error": outcome.error, "finding": None if item is None else item.finding,
        "why": None if item is None else item.why,
        "commands": [] if item is None else list(item.commands),
    }


def _json(plan: Plan, applied: Applied, args: argparse.Namespace) -> dict[str, Any]:
    return {
        "schema": SCHEMA, "dry_run": args.dry_run,
        "plan": {"path": args.plan, "id": plan.id, "created": plan.created, "host": plan.host},
        "refused": list(applied.refused), "items": [_outcome_json(o) for o in applied.outcomes],
        "notes": list(applied.notes),
    }


def _target(outcome: Outcome) -> str:
    item = outcome.item
    if item is not None and item.comm:
        return f"{outcome.target} ({item.comm})"
    return outcome.target


def _value(outcome: Outcome, value: str | None) -> str:
    if outcome.kind in ("sysctl", "oom_score_adj"):
        return shown(value)
    if outcome.kind == "swapfile":
        return "-" if value is None else f"{int(value) >> 20} MiB"
    return "absent" if value is None else "text"


def _text(plan: Plan, applied: Applied, args: argparse.Namespace, env: Env) -> list[str]:
    head = f"plan {plan.id} (made {plan.created} on {plan.host}), {len(plan.items)} item(s)"
    if applied.refused:
        return [f"{head}: refused, nothing was changed. The system is no longer as the plan "
                "recorded it:", *(f"  {why}" for why in applied.refused),
                "make a new plan: oomlens doctor --plan FILE"]
    rows = [[o.kind, _target(o), _value(o, o.before), _value(o, o.after), o.result.value,
             "-" if o.change_id is None else f"#{o.change_id}", o.error or ""]
            for o in applied.outcomes]
    styles = [_STYLE.get(o.result, "") for o in applied.outcomes]
    lines = [head, *render_table(
        [Column("KIND", "<"), Column("TARGET", "<"), Column("BEFORE"), Column("AFTER"),
         Column("RESULT", "<"), Column("CHANGE"), Column("ERROR", "<", flex=True)],
        rows, width=env.columns if env.stdout_isatty else None, styles=styles,
        colour=env.colour)]
    for outcome in applied.outcomes:
        if outcome.result is Result.MANUAL and outcome.item is not None:
            lines += ["", paint(f"manual: {outcome.kind} {outcome.target}", "bold", env.colour),
                      f"  {outcome.item.why}", *(f"  $ {c}" for c in outcome.item.commands)]
    lines += [f"note: {note}" for note in applied.notes]
    if args.dry_run:
        lines.append("nothing changed (dry run)")
    elif any(o.change_id is not None for o in applied.outcomes):
        lines.append(f"`oomlens undo --plan {plan.id}` restores every value")
    return lines
