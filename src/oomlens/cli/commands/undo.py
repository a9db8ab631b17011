"""`oomlens undo [CHANGE_ID | --last | --all | --since T]`: restore the values changes
replaced, newest first, skipping (and saying so) what cannot be restored safely."""

from __future__ import annotations

import argparse
from typing import Any

from oomlens.cli.commands.journal import change_json, value_text
from oomlens.cli.env import Env, ExitStatus
from oomlens.cli.protect_args import state_dir_of
from oomlens.cli.render.json import write_json
from oomlens.cli.render.table import Column, render_table
from oomlens.errors import NotFound, UsageError
from oomlens.policy.apply import Result
from oomlens.policy.journal import BatchKind, Change, ChangeState, Journal
from oomlens.policy.undo import Restore, UndoContext, undo_changes

SCHEMA = "oomlens.undo/1"


def chosen(args: argparse.Namespace, journal: Journal) -> list[Change]:
    """The changes to restore, newest first."""
    if args.change is not None:
        if args.last or args.all or args.since or args.plan:
            raise UsageError("give a CHANGE_ID or one of --last, --all, --since, --plan, "
                             "not both")
        change = journal.change(args.change)
        if change.state is ChangeState.FAILED:
            raise UsageError(f"change #{change.id} failed: there is nothing to undo")
        if change.undone_by is not None:
            raise UsageError(f"change #{change.id} was already undone by #{change.undone_by}")
        return [change]
    if args.plan:
        if not journal.plan_applied(args.plan):
            raise NotFound(f"plan {args.plan} was never applied (journal {journal.path})")
        return journal.undoable(plan=args.plan)
    if args.last:
        return journal.undoable(last_batch=True)
    if args.all or args.since:
        return journal.undoable(since=args.since)
    raise UsageError("say what to undo: CHANGE_ID, --last, --all, --since TIME or --plan ID")


def run(args: argparse.Namespace, env: Env) -> ExitStatus:
    from oomlens.system.oomadj import boot_id

    with Journal.open(state_dir_of(args, env)) as journal:
        changes = chosen(args, journal)
        restores: list[Restore] = []
        if changes:
            batch = None if args.dry_run else journal.begin_batch(
                env.actor, args.command_line, BatchKind.UNDO)
            ctx = UndoContext(journal, batch, boot_id(env.proc_root), env.proc_root,
                              force=args.force, dry_run=args.dry_run)
            restores = undo_changes(changes, ctx)
    _render(restores, args, env)
    results = {r.result for r in restores}
    if Result.DENIED in results:
        return ExitStatus.PERMISSION
    if results & {Result.FAILED, Result.CHANGED}:
        return ExitStatus.PROBLEM
    return ExitStatus.OK


def _render(restores: list[Restore], args: argparse.Namespace, env: Env) -> None:
    if getattr(args, "json", False):
        write_json(env.stdout, {"schema": SCHEMA, "dry_run": args.dry_run,
                                "restores": [restore_json(r) for r in restores]})
        return
    if not restores:
        env.stdout.write("nothing to undo\n")
        return
    rows = [[f"#{r.change.id}", str(r.change.pid or "-"), r.change.comm or r.change.target,
             value_text(r.change, r.current), value_text(r.change, r.change.old), r.result.value,
             f"#{r.change_id}" if r.change_id else "-", r.why or ""] for r in restores]
    table = render_table(
        [Column("UNDOES"), Column("PID"), Column("PROCESS/FILE", "<"), Column("NOW"),
         Column("RESTORE"), Column("RESULT", "<"), Column("CHANGE"),
         Column("WHY", "<", flex=True)], rows, width=env.columns)
    env.stdout.write("\n".join(table) + "\n")
    if args.dry_run:
        env.stdout.write("nothing changed (dry run)\n")


def restore_json(restore: Restore) -> dict[str, Any]:
    return {"undoes": change_json(restore.change), "result": restore.result.value,
            "current": restore.current, "restore_to": restore.change.old,
            "change_id": restore.change_id, "why": restore.why}
