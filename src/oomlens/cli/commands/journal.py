"""`oomlens journal`: every change oomlens made: when, who, which process (pid and
start time), old -> new, what caused it, and what became of it."""

from __future__ import annotations

import argparse
import os
from typing import Any

from oomlens.cli.env import Env, ExitStatus
from oomlens.cli.protect_args import state_dir_of
from oomlens.cli.render.json import write_json
from oomlens.cli.render.table import Column, render_table
from oomlens.policy.journal import JOURNAL_NAME, Change, ChangeKind, ChangeState, Journal

SCHEMA = "oomlens.journal/1"


def run(args: argparse.Namespace, env: Env) -> ExitStatus:
    state_dir = state_dir_of(args, env)
    path = os.path.abspath(os.path.join(state_dir, JOURNAL_NAME))
    changes: list[Change] = []
    if os.path.exists(path):  # reading must not create a journal
        with Journal.open(state_dir) as journal:
            changes = journal.changes(since=args.since, pid=args.pid, limit=args.limit)
    if getattr(args, "json", False):
        write_json(env.stdout, {"schema": SCHEMA, "journal": path,
                                "changes": [change_json(c) for c in changes]})
        return ExitStatus.OK
    if not changes:
        env.stdout.write(f"no changes recorded in {path}\n")
        return ExitStatus.OK
    rows = [[str(c.id), str(c.batch), c.at.astimezone().strftime("%Y-%m-%d %H:%M:%S"), c.actor,
             str(c.pid) if c.pid is not None else "-", _what(c), value_text(c, c.old),
             value_text(c, c.new), state_text(c), c.cause] for c in changes]
    table = render_table(
        [Column("ID"), Column("BATCH"), Column("WHEN", "<"), Column("WHO", "<"), Column("PID"),
         Column("PROCESS/FILE", "<"), Column("OLD"), Column("NEW"), Column("STATE", "<"),
         Column("CAUSE", "<", flex=True)], rows, width=env.columns)
    env.stdout.write("\n".join(table) + "\n")
    for change in changes:
        if change.error:
            env.stdout.write(f"#{change.id}: {change.error}\n")
    return ExitStatus.OK


def _what(change: Change) -> str:
    return change.comm if change.kind is ChangeKind.OOM_SCORE_ADJ else change.target


def value_text(change: Change, value: str | None) -> str:
    """A value for a table cell: a file's contents are only `written` or `absent`."""
    if change.kind is ChangeKind.FILE:
        return "absent" if value is None else "written"
    return "-" if value is None else value


def state_text(change: Change) -> str:
    """`applied`, `undone by #9`, `failed` (the error is listed under the table), or
    `intent (outcome unknown)` for a change interrupted between intent and outcome."""
    if change.state is ChangeState.INTENT:
        return "intent (outcome unknown)"
    if change.state is ChangeState.FAILED:
        return "failed"
    if change.undone_by is not None:
        return f"undone by #{change.undone_by}"
    return f"applied (undoes #{change.undoes})" if change.undoes else "applied"


def change_json(change: Change) -> dict[str, Any]:
    return {
        "id": change.id, "batch": change.batch, "at": change.at.isoformat(timespec="microseconds"),
        "actor": change.actor, "kind": change.kind.value, "target": change.target,
        "pid": change.pid, "start_time_ticks": change.start_time_ticks,
        "boot_id": change.boot_id, "comm": change.comm, "cmdline": change.cmdline,
        "old": change.old, "new": change.new, "cause": change.cause,
        "state": change.state.value, "error": change.error, "undoes": change.undoes,
        "undone_by": change.undone_by, "plan": change.plan,
    }
