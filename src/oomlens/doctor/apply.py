"""Carry out a plan (the I/O shell of `oomlens apply`), journaled so that `oomlens undo
--plan ID` restores every value.

First every item's before value is compared with the system; if one changed since the
plan was made, nothing is written (the plan is refused whole: it was reviewed as a
whole). Then, in one journal batch named by the plan id: live sysctls and files
(intents in one transaction, then each write and its outcome), processes'
oom_score_adj (policy/apply.py, through a handle bound to the planned process), and
last oomlens's own /etc/sysctl.d file with the sysctls whose live write succeeded, so a
value the kernel refused is never made to come back at boot. Nothing but oomlens's
own files is written: a drop-in or policy file is replaced only if it is the one
recorded, the sysctl.d file must not exist yet.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from oomlens.doctor.plan import FILE_KINDS, ItemKind, Plan, PlanItem, drift, shown
from oomlens.errors import AccessDenied, OomlensError, ProcessGone, UsageError
from oomlens.policy.apply import Result, apply_steps
from oomlens.policy.dropin import checked_unit, dropin_path
from oomlens.policy.journal import Batch, BatchKind, ChangeKind, ChangeState, Intent, Journal
from oomlens.policy.plan import Step
from oomlens.system.files import read_optional, write_atomic
from oomlens.system.procfs import UserNames
from oomlens.system.snapshot import Process, ScanNotes, read_process
from oomlens.system.tunables import read_sysctl, settings_after, write_sysctl


@dataclass(frozen=True, slots=True)
class ApplyContext:
    proc_root: str
    sysctl_dir: str
    systemd_dir: str
    host: str
    boot_id: str
    actor: str
    command: str
    dry_run: bool = False


@dataclass(frozen=True, slots=True)
class Outcome:
    """What became of one item (`item` None: oomlens's sysctl.d file)."""

    kind: str
    target: str
    before: str | None
    after: str | None
    result: Result
    item: PlanItem | None = None
    change_id: int | None = None
    error: str | None = None


@dataclass(frozen=True, slots=True)
class Applied:
    """`refused`: why the plan was not applied (nothing was written); `notes`: what
    the admin should know (a later sysctl.d file that overrides a value at boot)."""

    outcomes: tuple[Outcome, ...]
    refused: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()


def sysctl_file(plan: Plan, ctx: ApplyContext) -> str:
    return os.path.join(ctx.sysctl_dir, plan.sysctl_file_name)


def sysctl_file_text(plan: Plan, sysctls: Sequence[PlanItem]) -> str:
    lines = [f"# Owned by oomlens: written by `oomlens apply` from plan {plan.id}",
             f"# (made {plan.created} on {plan.host}). `oomlens undo --plan {plan.id}` "
             "removes this file",
             "# and restores the values it replaced. Change the plan, not this file.",
             *(f"{item.target} = {item.after}" for item in sysctls)]
    return "\n".join(lines) + "\n"


def check_where(plan: Plan, ctx: ApplyContext) -> None:
    """A plan is for the host it was made on, and its drop-ins for this unit directory."""
    if plan.host != ctx.host:
        raise UsageError(f"plan {plan.id} was made on {plan.host}, this is {ctx.host}")
    for item in plan.items:
        if item.kind is ItemKind.DROPIN and item.unit is not None \
                and item.target != dropin_path(ctx.systemd_dir, checked_unit(item.unit)):
            raise UsageError(f"plan {plan.id}: drop-in {item.target} is not oomlens's drop-in "
                             f"of {item.unit} in {ctx.systemd_dir}")


def _process(item: PlanItem, proc_root: str) -> Process | str:
    """The planned process as it is now, or why it is not there any more."""
    assert item.pid is not None
    try:
        proc = read_process(proc_root, item.pid, {}, None, UserNames(), ScanNotes())
    except ProcessGone:
        return f"oom_score_adj {item.target}: process {item.pid} ({item.comm}) is gone"
    if proc.start_time_ticks != item.start_time_ticks:
        return (f"oom_score_adj {item.target}: pid {item.pid} belongs to another process now "
                f"({proc.comm})")
    return proc


def _current(item: PlanItem, proc_root: str) -> str | None:
    if item.kind is ItemKind.SYSCTL:
        return read_sysctl(proc_root, item.target)
    return read_optional(item.target)


def preflight(plan: Plan, ctx: ApplyContext) -> tuple[list[str], dict[int, Process]]:
    """Every drift from the plan's before values, and the planned processes by pid."""
    refused: list[str] = []
    processes: dict[int, Process] = {}
    for item in plan.items:
        if item.manual:
            continue
        if item.kind is ItemKind.OOM_SCORE_ADJ:
            found = _process(item, ctx.proc_root)
            if isinstance(found, str):
                refused.append(found)
                continue
            processes[found.pid] = found
            problem = drift(item, str(found.task.oom_score_adj))
        else:
            problem = drift(item, _current(item, ctx.proc_root))
        if problem is not None:
            refused.append(problem)
    path = sysctl_file(plan, ctx)
    if plan.sysctls() and os.path.lexists(path):
        refused.append(f"{path} exists: this plan was applied already (`oomlens undo --plan "
                       f"{plan.id}` first)")
    return refused, processes


def apply_plan(plan: Plan, ctx: ApplyContext, journal: Journal | None) -> Applied:
    """Apply `plan` (with `ctx.dry_run`, only say what would be done; `journal` may
    then be None)."""
    check_where(plan, ctx)
    refused, processes = preflight(plan, ctx)
    if refused:
        return Applied((), tuple(refused))
    if ctx.dry_run or journal is None or all(i.manual for i in plan.items):
        return Applied(tuple(_outcome(i, Result.MANUAL if i.manual else Result.PLANNED)
                             for i in plan.items), notes=tuple(_overrides(plan, ctx)))
    batch = journal.begin_batch(ctx.actor, ctx.command, BatchKind.PLAN, plan=plan.id)
    done = {id(o.item): o for o in _apply_values(plan, ctx, journal, batch)}
    done |= {id(o.item): o for o in _apply_adj(plan, ctx, journal, batch, processes)}
    outcomes = [done.get(id(i)) or _outcome(i, Result.MANUAL) for i in plan.items]
    applied = [o.item for o in outcomes if o.item is not None
               and o.item.kind is ItemKind.SYSCTL and o.result is Result.APPLIED]
    if applied:
        outcomes.append(_persist(plan, ctx, journal, batch, applied))
    return Applied(tuple(outcomes), notes=(*_overrides(plan, ctx), *_next_steps(outcomes)))


def _next_steps(outcomes: Sequence[Outcome]) -> list[str]:
    written = {o.item.kind for o in outcomes
               if o.item is not None and o.result is Result.APPLIED}
    notes = []
    if ItemKind.DROPIN in written:
        notes.append("systemd reads the new drop-ins at `systemctl daemon-reload`; a unit's "
                     "running processes keep their value until it restarts")
    if ItemKind.POLICY in written:
        notes.append("`oomlens enforce` applies the new policy to every process and each new "
                     "one (a running enforcer reloads on SIGHUP)")
    return notes


def _outcome(item: PlanItem, result: Result, change_id: int | None = None,
             error: str | None = None, before: str | None = None) -> Outcome:
    return Outcome(item.kind.value, item.target, item.before if before is None else before,
                   item.after, result, item, change_id, error)


def _intent(plan: Plan, item: PlanItem, ctx: ApplyContext) -> Intent:
    kind = ChangeKind.SYSCTL if item.kind is ItemKind.SYSCTL else ChangeKind.FILE
    return Intent(kind=kind, target=item.target, old=item.before, new=item.after,
                  cause=f"{ctx.command} (plan {plan.id}: {item.finding})",
                  boot_id=ctx.boot_id if kind is ChangeKind.SYSCTL else None,
                  comm=item.unit or ("policy" if item.kind is ItemKind.POLICY else ""))


def _apply_values(plan: Plan, ctx: ApplyContext, journal: Journal,
                  batch: Batch) -> list[Outcome]:
    items = [i for i in plan.items if not i.manual
             and (i.kind is ItemKind.SYSCTL or i.kind in FILE_KINDS)]
    if not items:
        return []
    ids = journal.record_intents(batch, [_intent(plan, i, ctx) for i in items])
    return [_write(item, change_id, ctx, journal) for item, change_id in zip(items, ids,
                                                                            strict=True)]


def _journaled(change_id: int, journal: Journal,
               write: Callable[[], None]) -> tuple[Result, str | None]:
    """Make the write whose intent is recorded, and record its outcome."""
    try:
        write()
    except OomlensError as err:
        journal.record_outcome(change_id, ChangeState.FAILED, str(err))
        return Result.DENIED if isinstance(err, AccessDenied) else Result.FAILED, str(err)
    journal.record_outcome(change_id, ChangeState.APPLIED)
    return Result.APPLIED, None


def _write(item: PlanItem, change_id: int, ctx: ApplyContext, journal: Journal) -> Outcome:
    after = item.after
    assert after is not None

    def write() -> None:
        if item.kind is not ItemKind.SYSCTL:
            write_atomic(item.target, after)
            return
        write_sysctl(ctx.proc_root, item.target, after)
        now = read_sysctl(ctx.proc_root, item.target)
        if now != after:
            raise OomlensError(f"{item.target} reads {shown(now)} after writing {after}")

    result, error = _journaled(change_id, journal, write)
    return _outcome(item, result, change_id, error)


def _apply_adj(plan: Plan, ctx: ApplyContext, journal: Journal, batch: Batch,
               processes: dict[int, Process]) -> list[Outcome]:
    """policy/apply.py does the writes: intent, identity-checked write, outcome."""
    out = []
    for item in plan.items:
        if item.kind is not ItemKind.OOM_SCORE_ADJ or item.manual or item.pid is None:
            continue
        assert item.after is not None
        cause = f"{ctx.command} (plan {plan.id}: {item.finding})"
        [done] = apply_steps([Step(processes[item.pid], int(item.after))], journal, batch,
                             cause, ctx.boot_id, ctx.proc_root)
        out.append(_outcome(item, done.result, done.change_id, done.error, str(done.old)))
    return out


def _persist(plan: Plan, ctx: ApplyContext, journal: Journal, batch: Batch,
             sysctls: Sequence[PlanItem]) -> Outcome:
    path, text = sysctl_file(plan, ctx), sysctl_file_text(plan, sysctls)
    [change_id] = journal.record_intents(batch, [Intent(
        kind=ChangeKind.FILE, target=path, old=None, new=text,
        cause=f"{ctx.command} (plan {plan.id}: persisted sysctls)", comm="sysctl.d")])
    result, error = _journaled(change_id, journal, lambda: write_atomic(path, text))
    return Outcome("sysctl.d", path, None, text, result, None, change_id, error)


def _overrides(plan: Plan, ctx: ApplyContext) -> list[str]:
    wanted = {i.target: i.after for i in plan.sysctls()}
    return [f"{path} sets {key} = {value}, read after {plan.sysctl_file_name}: at boot its "
            "value wins" for path, key, value in settings_after(ctx.sysctl_dir,
                                                                plan.sysctl_file_name, wanted)
            if value != wanted[key]]
