"""Undo: put back the value a journaled change replaced, exactly, newest first.

Skipped, and said so: a process that exited or whose pid now belongs to another
process (identity = boot id + pid + start time, checked right before the write), and
a value that was changed again since (unless forced), so an undo never clobbers a
later decision. Each restore is itself a journaled change that names what it undoes.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from oomlens.errors import AccessDenied, OomlensError, ProcessGone
from oomlens.policy.apply import Result
from oomlens.policy.dropin import DROPIN_NAME
from oomlens.policy.journal import Batch, Change, ChangeKind, ChangeState, Intent, Journal
from oomlens.system.files import read_optional, remove, write_atomic
from oomlens.system.oomadj import PidReused, ProcessHandle
from oomlens.system.tunables import read_sysctl, write_sysctl


@dataclass(frozen=True, slots=True)
class Restore:
    change: Change
    result: Result
    current: str | None = None
    change_id: int | None = None
    why: str | None = None


@dataclass(frozen=True, slots=True)
class UndoContext:
    journal: Journal
    batch: Batch | None  # None for a dry run, which records nothing
    boot_id: str
    proc_root: str = "/proc"
    force: bool = False
    dry_run: bool = False


def undo_changes(changes: Sequence[Change], ctx: UndoContext) -> list[Restore]:
    """Restore `changes` in the order given (callers pass newest first, so a value
    changed twice comes back through each step)."""
    return [_UNDO[change.kind](change, ctx) for change in changes]


def _record(change: Change, current: str | None, ctx: UndoContext) -> int:
    assert ctx.batch is not None, "a dry run records nothing"
    intent = Intent(
        kind=change.kind, target=change.target, old=current, new=change.old,
        cause=f"undo of change #{change.id}", pid=change.pid,
        start_time_ticks=change.start_time_ticks, boot_id=change.boot_id, comm=change.comm,
        cmdline=change.cmdline, undoes=change.id,
    )
    return ctx.journal.record_intents(ctx.batch, [intent])[0]


def _changed_since(change: Change, current: str | None, ctx: UndoContext) -> Restore | None:
    if current == change.new or ctx.force:
        return None
    shown = "absent" if current is None else current
    return Restore(change, Result.CHANGED, current,
                   why=f"changed again since: now {shown}, not {change.new} "
                   "(--force restores it anyway)")


def _undo_adj(change: Change, ctx: UndoContext) -> Restore:
    if change.boot_id != ctx.boot_id or change.pid is None:
        return Restore(change, Result.GONE, why="made before the last reboot: process gone")
    try:
        handle = ProcessHandle.open(change.pid, ctx.proc_root, change.start_time_ticks)
    except PidReused as err:
        return Restore(change, Result.REUSED, why=str(err))
    except ProcessGone:
        return Restore(change, Result.GONE, why="the process exited")
    with handle:
        current = str(handle.oom_score_adj())
        skipped = _changed_since(change, current, ctx)
        if change.old is None:
            return Restore(change, Result.FAILED, current, why="no old value was recorded")
        if skipped is not None or ctx.dry_run:
            return skipped or Restore(change, Result.PLANNED, current)
        change_id = _record(change, current, ctx)
        try:
            handle.set_oom_score_adj(int(change.old))
        except OomlensError as err:
            ctx.journal.record_outcome(change_id, ChangeState.FAILED, str(err))
            result = Result.DENIED if isinstance(err, AccessDenied) else (
                Result.GONE if isinstance(err, ProcessGone) else Result.FAILED)
            return Restore(change, result, current, change_id, str(err))
    ctx.journal.record_outcome(change_id, ChangeState.APPLIED)
    return Restore(change, Result.APPLIED, current, change_id)


def _undo_file(change: Change, ctx: UndoContext) -> Restore:
    def put_back() -> None:
        if change.old is None:
            remove(change.target,
                   prune_directory=os.path.basename(change.target) == DROPIN_NAME)
        else:
            write_atomic(change.target, change.old)

    return _restore(change, ctx, read_optional(change.target), put_back)


def _undo_sysctl(change: Change, ctx: UndoContext) -> Restore:
    """A live value in /proc/sys. After a reboot the value is whatever boot set (a
    persisted change included), so the changed-since check decides as for a file."""
    current = read_sysctl(ctx.proc_root, change.target)
    old = change.old
    if old is None:
        return Restore(change, Result.FAILED, current, why="no old value was recorded")
    return _restore(change, ctx, current, lambda: write_sysctl(ctx.proc_root, change.target, old))


def _restore(change: Change, ctx: UndoContext, current: str | None,
             put_back: Callable[[], None]) -> Restore:
    """Skip a value changed since (unless forced), else record, put back, record."""
    skipped = _changed_since(change, current, ctx)
    if skipped is not None or ctx.dry_run:
        return skipped or Restore(change, Result.PLANNED, current)
    change_id = _record(change, current, ctx)
    try:
        put_back()
    except OomlensError as err:
        ctx.journal.record_outcome(change_id, ChangeState.FAILED, str(err))
        result = Result.DENIED if isinstance(err, AccessDenied) else Result.FAILED
        return Restore(change, result, current, change_id, str(err))
    ctx.journal.record_outcome(change_id, ChangeState.APPLIED)
    return Restore(change, Result.APPLIED, current, change_id)


_UNDO: dict[ChangeKind, Callable[[Change, UndoContext], Restore]] = {
    ChangeKind.OOM_SCORE_ADJ: _undo_adj, ChangeKind.FILE: _undo_file,
    ChangeKind.SYSCTL: _undo_sysctl,
}
