"""Carry out a plan: record the intent, write through a handle bound to the very
process that was planned, record the outcome.

Identity is pid + start time (+ boot id in the journal). Each write goes through an
open `/proc/<pid>` directory (system/oomadj.py), checked against the planned start
time right before: a pid that was reused in between is never written.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from oomlens.errors import AccessDenied, OomlensError, ProcessGone
from oomlens.policy.journal import Batch, ChangeKind, ChangeState, Intent, Journal
from oomlens.policy.plan import Step
from oomlens.system.oomadj import PidReused, ProcessHandle


class Result(StrEnum):
    PLANNED = "planned"  # dry run
    APPLIED = "applied"
    UNCHANGED = "unchanged"  # already at the value
    GONE = "gone"  # exited before the write: normal, skipped
    REUSED = "reused"  # the pid belongs to another process now: skipped
    CHANGED = "changed"  # undo: changed again since; skipped unless forced
    DENIED = "denied"  # the kernel refused (EACCES)
    FAILED = "failed"
    MANUAL = "manual"  # a plan item for a person to carry out: never done by oomlens


@dataclass(frozen=True, slots=True)
class Outcome:
    pid: int
    comm: str
    cmdline: str
    old: int
    new: int
    result: Result
    change_id: int | None = None
    error: str | None = None


def _outcome(step: Step, result: Result, old: int | None = None, change_id: int | None = None,
             error: str | None = None) -> Outcome:
    proc = step.process
    return Outcome(proc.pid, proc.comm, proc.cmdline, step.old if old is None else old,
                   step.new, result, change_id, error)


def _open(step: Step, proc_root: str) -> ProcessHandle | Outcome:
    try:
        return ProcessHandle.open(step.process.pid, proc_root, step.process.start_time_ticks)
    except PidReused as err:
        return _outcome(step, Result.REUSED, error=str(err))
    except ProcessGone as err:
        return _outcome(step, Result.GONE, error=str(err))


def apply_steps(steps: Sequence[Step], journal: Journal, batch: Batch, cause: str,
                boot_id: str, proc_root: str = "/proc") -> list[Outcome]:
    """Apply every step that can be applied; report each one. The journal gets all
    intents (with the value read right before) in one transaction, then each outcome:
    a crash in between leaves `intent` rows, never a false `applied`."""
    outcomes: dict[int, Outcome] = {}
    ready: list[tuple[Step, ProcessHandle, int]] = []
    try:
        for step in steps:
            opened = _open(step, proc_root)
            if isinstance(opened, Outcome):
                outcomes[step.process.pid] = opened
                continue
            current = opened.oom_score_adj()
            if current == step.new:
                outcomes[step.process.pid] = _outcome(step, Result.UNCHANGED, current)
                opened.close()
                continue
            ready.append((step, opened, current))
        intents = [_intent(step, current, cause, boot_id) for step, _, current in ready]
        ids = journal.record_intents(batch, intents) if intents else []
        for (step, handle, current), change_id in zip(ready, ids, strict=True):
            outcomes[step.process.pid] = _write(step, handle, current, change_id, journal)
    finally:
        for _, handle, _ in ready:
            handle.close()
    return [outcomes[s.process.pid] for s in steps]


def _intent(step: Step, current: int, cause: str, boot_id: str) -> Intent:
    proc = step.process
    return Intent(
        kind=ChangeKind.OOM_SCORE_ADJ, target=str(proc.pid), old=str(current),
        new=str(step.new), cause=cause, pid=proc.pid, start_time_ticks=proc.start_time_ticks,
        boot_id=boot_id, comm=proc.comm, cmdline=proc.cmdline,
    )


def _write(step: Step, handle: ProcessHandle, current: int, change_id: int,
           journal: Journal) -> Outcome:
    try:
        handle.set_oom_score_adj(step.new)
    except AccessDenied as err:
        journal.record_outcome(change_id, ChangeState.FAILED, str(err))
        return _outcome(step, Result.DENIED, current, change_id, str(err))
    except ProcessGone as err:
        journal.record_outcome(change_id, ChangeState.FAILED, str(err))
        return _outcome(step, Result.GONE, current, change_id, str(err))
    except OomlensError as err:
        journal.record_outcome(change_id, ChangeState.FAILED, str(err))
        return _outcome(step, Result.FAILED, current, change_id, str(err))
    journal.record_outcome(change_id, ChangeState.APPLIED)
    return _outcome(step, Result.APPLIED, current, change_id)
