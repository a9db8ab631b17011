"""`oomlens adjust|protect|prefer TARGET`: set oom_score_adj of the processes TARGET
names, after the safety rules, journaled so `oomlens undo` can restore it."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Any

from oomlens.cli.env import Env, ExitStatus
from oomlens.cli.protect_args import state_dir_of
from oomlens.cli.render.json import write_json
from oomlens.cli.render.table import Column, paint, render_table
from oomlens.errors import UsageError
from oomlens.kernel.adj import oom_adj_to_score_adj
from oomlens.policy.apply import Outcome, Result, apply_steps
from oomlens.policy.match import Matchers, compile_cmdline
from oomlens.policy.plan import Plan, build_plan, shared_mm_suspects
from oomlens.policy.rules import PREFER_DEFAULT, PROTECT_SCORE, Limits, check_share_bounds
from oomlens.policy.safety import Refusal, refusals
from oomlens.policy.targets import Target, select
from oomlens.ranking import all_domains
from oomlens.system.snapshot import Snapshot, take_snapshot

SCHEMA = "oomlens.adjust/1"
_STYLE = {Result.APPLIED: "green", Result.DENIED: "red", Result.FAILED: "red",
          Result.REUSED: "yellow", Result.GONE: "dim", Result.UNCHANGED: "dim"}


@dataclass(frozen=True)
class Value:
    oom_score_adj: int
    legacy_oom_adj: int | None


def requested_value(args: argparse.Namespace) -> Value:
    """The value to set: --score, or --legacy-adj through the kernel's mapping, or the
    command's default; protect lowers and prefer raises."""
    legacy = args.legacy_adj
    if legacy is not None:
        value = oom_adj_to_score_adj(legacy)
    elif args.score is not None:
        value = args.score
    else:
        value = PROTECT_SCORE if args.command == "protect" else PREFER_DEFAULT
    if args.command == "protect" and value > 0:
        raise UsageError(f"protect lowers oom_score_adj; {value} would raise it (use prefer)")
    if args.command == "prefer" and value <= 0:
        raise UsageError(f"prefer raises oom_score_adj; {value} would not (use protect)")
    return Value(value, legacy)


def target_of(args: argparse.Namespace) -> Target:
    matchers = Matchers(
        names=tuple(args.name), cmdline=compile_cmdline(args.cmd) if args.cmd else None,
        exes=tuple(args.exe), users=tuple(args.user), cgroups=tuple(args.cgroup),
        units=tuple(args.unit),
    )
    if not args.pid and matchers.is_empty():
        raise UsageError("name a TARGET: --pid, --name, --cmd, --exe, --user, --cgroup or --unit")
    return Target(tuple(args.pid), matchers, args.children)


def limits_of(args: argparse.Namespace) -> Limits:
    default = Limits()
    limits = Limits(
        max_protected_share=default.max_protected_share if args.max_protected_share is None
        else args.max_protected_share,
        min_killable_share=default.min_killable_share if args.min_killable_share is None
        else args.min_killable_share,
    )
    for key in ("max_protected_share", "min_killable_share"):
        try:
            check_share_bounds(key, getattr(limits, key))
        except ValueError as err:
            raise UsageError(f"--{key.replace('_', '-')}: {err}") from None
    return limits


def shared_mm_warnings(plan: Plan, snapshot: Snapshot) -> list[str]:
    """fs/proc/base.c: __set_oom_adj() also changes processes sharing the mm."""
    from oomlens.system.oomadj import shares_mm

    warnings = []
    for pid, others in shared_mm_suspects(plan, snapshot.processes).items():
        for other in others:
            shared = shares_mm(pid, other.pid)
            if shared is False:
                continue
            verb = "shares" if shared else "may share"
            warnings.append(f"pid {pid} {verb} its memory with pid {other.pid} ({other.comm}): "
                            "the kernel sets the same oom_score_adj on both")
    return warnings


def run(args: argparse.Namespace, env: Env) -> ExitStatus:
    value = requested_value(args)
    target = target_of(args)
    snapshot = take_snapshot(env.proc_root)
    plan = build_plan(select(snapshot.processes, target, env.proc_root), value.oom_score_adj)
    kib_per_page = snapshot.page_size // 1024
    refused = refusals(plan, snapshot.processes, all_domains(snapshot),
                       snapshot.meminfo.mem_total_kib // kib_per_page, snapshot.page_size,
                       limits_of(args))
    report = Report(args.command, value, target, plan, refused, shared_mm_warnings(plan, snapshot),
                    dry_run=args.dry_run or (bool(refused) and not args.force),
                    forced=args.force)
    if not report.dry_run:
        report.outcomes, report.journal_path = _apply(plan, args, env)
    _render(report, args, env)
    return report.status()


def _apply(plan: Plan, args: argparse.Namespace, env: Env) -> tuple[list[Outcome], str | None]:
    """Apply the steps that change something (nothing to change opens no journal)."""
    from oomlens.policy.journal import BatchKind, Journal
    from oomlens.system.oomadj import boot_id

    steps = [s for s in plan.steps if s.changes]
    if not steps:
        return [], None
    with Journal.open(state_dir_of(args, env)) as journal:
        batch = journal.begin_batch(env.actor, args.command_line, BatchKind.COMMAND)
        return (apply_steps(steps, journal, batch, args.command_line, boot_id(env.proc_root),
                            env.proc_root), journal.path)


@dataclass
class Report:
    command: str
    value: Value
    target: Target
    plan: Plan
    refused: list[Refusal]
    warnings: list[str]
    dry_run: bool
    forced: bool
    outcomes: list[Outcome] | None = None
    journal_path: str | None = None

    def rows(self) -> list[Outcome]:
        """One row per step: its outcome, else planned (dry run) or unchanged."""
        done = {o.pid: o for o in self.outcomes or ()}
        rows = []
        for step in self.plan.steps:
            proc = step.process
            planned = step.changes and self.outcomes is None
            rows.append(done.get(proc.pid) or Outcome(
                proc.pid, proc.comm, proc.cmdline, step.old, step.new,
                Result.PLANNED if planned else Result.UNCHANGED))
        return rows

    def status(self) -> ExitStatus:
        results = {o.result for o in self.outcomes or ()}
        if Result.DENIED in results:
            return ExitStatus.PERMISSION
        if Result.FAILED in results or (self.refused and not self.forced):
            return ExitStatus.PROBLEM
        return ExitStatus.OK


def _render(report: Report, args: argparse.Namespace, env: Env) -> None:
    if getattr(args, "json", False):
        write_json(env.stdout, report_json(report, args))
        return
    out = env.stdout
    value = report.value
    legacy = (f" (oom_adj {value.legacy_oom_adj} is oom_score_adj {value.oom_score_adj} "
              "by the kernel's mapping)" if value.legacy_oom_adj is not None else "")
    out.write(f"{report.command}: oom_score_adj {value.oom_score_adj}{legacy} for "
              f"{report.target.describe()}\n")
    rows = report.rows()
    table = render_table(
        [Column("PID"), Column("COMMAND", "<"), Column("OLD"), Column("NEW"),
         Column("RESULT", "<"), Column("CHANGE"), Column("COMMAND LINE", "<", flex=True)],
        [[str(o.pid), o.comm, str(o.old), str(o.new), o.result.value,
          f"#{o.change_id}" if o.change_id else "-", o.cmdline] for o in rows],
        width=env.columns, styles=[_STYLE.get(o.result, "") for o in rows], colour=env.colour)
    out.write("\n".join(table) + "\n")
    for proc in report.plan.kernel_threads:
        out.write(f"left alone: pid {proc.pid} ({proc.comm}) is a kernel thread\n")
    for warning in report.warnings:
        out.write(paint(f"warning: {warning}", "yellow", env.colour) + "\n")
    for refusal in report.refused:
        word = "forced past" if args.force else "refused"
        out.write(paint(f"{word}: {refusal.message}", "red", env.colour) + "\n")
    for error in dict.fromkeys(o.error for o in rows if o.result in (Result.DENIED,
                                                                     Result.FAILED)):
        out.write(paint(f"error: {error}", "red", env.colour) + "\n")
    if report.dry_run:
        out.write("nothing changed (dry run)\n" if not report.refused or args.force
                  else "nothing changed\n")


def report_json(report: Report, args: argparse.Namespace) -> dict[str, Any]:
    return {
        "schema": SCHEMA,
        "command": report.command,
        "dry_run": report.dry_run,
        "oom_score_adj": report.value.oom_score_adj,
        "legacy_oom_adj": report.value.legacy_oom_adj,
        "target": report.target.describe(),
        "refused": [{"pid": r.pid, "message": r.message} for r in report.refused],
        "forced": report.forced and bool(report.refused),
        "warnings": report.warnings,
        "kernel_threads_skipped": [p.pid for p in report.plan.kernel_threads],
        "journal": report.journal_path,
        "changes": [
            {"pid": o.pid, "comm": o.comm, "cmdline": o.cmdline, "old": o.old, "new": o.new,
             "result": o.result.value, "change_id": o.change_id, "error": o.error}
            for o in report.rows()
        ],
    }
