"""`oomlens simulate`'s output: the `oomlens.simulate/1` documents (docs/json.md) and
the text, from the results of the simulate package. A kill's report is rendered as
`oomlens report` renders it (`oomlens.report/1` in JSON, its `--details` in text)."""

from __future__ import annotations

import shlex
import signal
from collections.abc import Sequence
from typing import Any

from oomlens.cli.env import Env
from oomlens.cli.render.report import event_details
from oomlens.cli.render.table import Column, paint, render_table
from oomlens.cli.views import process_json
from oomlens.kernel.domain import OomDomain
from oomlens.postmortem import Analysed
from oomlens.ranking import RankedProcess
from oomlens.report.schema import event_json
from oomlens.simulate.sandboxrun import RunResult
from oomlens.simulate.trigger import HELPER_PLACEHOLDER_PID, Target, Trial
from oomlens.simulate.verdict import VERDICT_TEXT, KillCheck, Prediction, Verdict, overall
from oomlens.simulate.whatif import KillOrder, Override
from oomlens.units import format_bytes, format_share

SCHEMA = "oomlens.simulate/1"
RANKING_SHOWN = 5
_VERDICT_STYLE = {Verdict.MATCHED: "green", Verdict.MOVED: "yellow",
                  Verdict.MISMATCH: "red", Verdict.UNVERIFIED: "yellow"}
KILL_COLUMNS = (
    Column("STEP"), Column("PID"), Column("BADNESS"), Column("SHARE"), Column("ADJ"),
    Column("RSS"), Column("SWAP"), Column("FREES"), Column("FREED"),
    Column("COMMAND", "<", flex=True),
)  # fmt: skip
RANKING_COLUMNS = (
    Column("RANK"), Column("PID"), Column("BADNESS"), Column("SHARE"), Column("ADJ"),
    Column("RSS"), Column("COMMAND", "<", flex=True),
)  # fmt: skip


def document(command: str, outcome: str, **fields: Any) -> dict[str, Any]:
    return {"schema": SCHEMA, "command": command, "outcome": outcome, **fields}


def domain_json(domain: OomDomain, page_size: int) -> dict[str, Any]:
    return {"domain": domain.label, "kind": str(domain.kind), "path": domain.path,
            "totalpages": domain.totalpages, "total_bytes": domain.totalpages * page_size,
            "adj_unit_pages": domain.totalpages // 1000}


def _pid_comm(pid: int, comm: str) -> dict[str, Any]:
    return {"pid": pid, "comm": comm}


def _command(item: RankedProcess) -> str:
    """The command line on one line (a newline in an argument would break the table)."""
    proc = item.process
    if proc.pid == HELPER_PLACEHOLDER_PID:
        return "(oomlens's helper, when grown)"
    return " ".join(proc.cmdline.split()) or f"[{proc.comm}]"


# -- order ---------------------------------------------------------------------------


def order_json(order: KillOrder, overrides: Sequence[Override], page_size: int,
               unconfirmed: Sequence[tuple[int, int]], notes: Sequence[str]) -> dict[str, Any]:
    return document(
        "order", "predicted", domain=domain_json(order.domain, page_size),
        overrides=[{"pid": o.pid, "comm": o.comm, "oom_score_adj_was": o.old,
                    "oom_score_adj": o.new, "named_pid": o.named} for o in overrides],
        need_bytes=order.need_bytes, need_met=order.need_met, freed_bytes=order.freed_bytes,
        eligible_processes=order.eligible,
        kills=[{"step": n, "process": process_json(k.victim),
                "also_killed": [_pid_comm(p.pid, p.comm) for p in k.also_killed],
                "mm_pinned_by": None if k.pinned_by is None
                else _pid_comm(k.pinned_by.pid, k.pinned_by.comm),
                "freed_bytes": k.freed_bytes, "rss_bytes": k.rss_bytes,
                "swap_bytes": k.swap_bytes, "freed_total_bytes": k.freed_total_bytes}
               for n, k in enumerate(order.kills, 1)],
        unconfirmed_shared_mm=[list(pair) for pair in unconfirmed], notes=list(notes),
    )


def order_lines(order: KillOrder, overrides: Sequence[Override], page_size: int,
                notes: Sequence[str], env: Env) -> list[str]:
    domain = order.domain
    out = [f"Kill order in the {domain.label} domain: totalpages {domain.totalpages} "
           f"({format_bytes(domain.totalpages * page_size)}), 1 adj = "
           f"{domain.totalpages // 1000} pages"]
    for o in overrides:
        shared = "" if o.pid == o.named else f" (shares the memory of pid {o.named})"
        out.append(f"What if: pid {o.pid} ({o.comm}) had oom_score_adj {o.new} instead of "
                   f"{o.old}{shared}")
    changed = {o.pid: o.old for o in overrides}
    rows = []
    for n, kill in enumerate(order.kills, 1):
        task = kill.victim.process.task
        adj = str(task.oom_score_adj)
        if task.pid in changed:
            adj = f"{changed[task.pid]}->{adj}"
        rows.append([str(n), str(task.pid), str(kill.victim.ranked.points),
                     format_share(kill.victim.share), adj, format_bytes(kill.rss_bytes),
                     format_bytes(kill.swap_bytes), format_bytes(kill.freed_bytes),
                     format_bytes(kill.freed_total_bytes), _command(kill.victim)])
    width = env.columns if env.stdout_isatty else None
    out += render_table(KILL_COLUMNS, rows, width) if rows else ["Nothing here can be killed."]
    for n, kill in enumerate(order.kills, 1):
        if kill.also_killed:
            names = ", ".join(f"{p.pid} ({p.comm})" for p in kill.also_killed)
            out.append(f"Step {n} also kills {names}: they share the victim's memory.")
        if kill.pinned_by is not None:
            out.append(f"Step {n} frees nothing: pid {kill.pinned_by.pid} "
                       f"({kill.pinned_by.comm}), the init process, shares the victim's "
                       "memory and is never killed.")
    out.append(_need_line(order))
    return out + [f"Note: {note}" for note in notes]


def _need_line(order: KillOrder) -> str:
    if order.need_bytes is None:
        return "First victim only; --need SIZE continues the order until SIZE is freed."
    need = format_bytes(order.need_bytes)
    if order.need_met:
        return (f"{need} freed after {len(order.kills)} kill(s) "
                f"({format_bytes(order.freed_bytes)}).")
    return (f"{need} cannot be freed: killing every eligible process frees "
            f"{format_bytes(order.freed_bytes)}.")


# -- a prediction and the kills checked against it -------------------------------------


def prediction_json(prediction: Prediction | None) -> dict[str, Any] | None:
    if prediction is None:
        return None
    return {"basis": prediction.basis,
            "ranking": [_ranked_json(r) for r in prediction.ranking[:RANKING_SHOWN]]}


def _ranked_json(item: RankedProcess) -> dict[str, Any]:
    task = item.process.task
    pid = None if task.pid == HELPER_PLACEHOLDER_PID else task.pid
    return {"pid": pid, "comm": task.comm, "rank": item.ranked.rank,
            "badness": item.ranked.points, "badness_share": item.share,
            "oom_score_adj": task.oom_score_adj,
            "rss_bytes": task.rss_pages * task.page_size, "memcg": item.process.memcg}


def kill_json(check: KillCheck) -> dict[str, Any]:
    victim = check.event.victim
    assert victim is not None
    return {
        "victim": {"pid": victim.pid, "comm": victim.comm,
                   "oom_score_adj": victim.oom_score_adj},
        "predicted": None if check.predicted is None else _ranked_json(check.predicted),
        "prediction_basis": None if check.prediction is None else check.prediction.basis,
        "verdict": str(check.verdict),
        "recomputed_pid": check.diagnosis.predicted_pid,
        "choice_checks_out": check.diagnosis.choice_checks_out,
        "event": event_json(check.event, check.diagnosis),
    }


def ranking_lines(prediction: Prediction, env: Env) -> list[str]:
    rows = [[str(r.ranked.rank), "-" if r.process.pid == HELPER_PLACEHOLDER_PID
             else str(r.process.pid), str(r.ranked.points), format_share(r.share),
             str(r.process.task.oom_score_adj),
             format_bytes(r.process.task.rss_pages * r.process.task.page_size), _command(r)]
            for r in prediction.ranking[:RANKING_SHOWN]]
    if not rows:
        return ["  nothing can be killed"]
    width = env.columns if env.stdout_isatty else None
    return ["  " + line for line in render_table(RANKING_COLUMNS, rows, width)]


def _who(item: RankedProcess | None) -> str:
    if item is None:
        return "nothing (no prediction was made before the kill)"
    if item.process.pid == HELPER_PLACEHOLDER_PID:
        return "oomlens's helper"
    return f"{item.process.comm} (pid {item.process.pid})"


def kill_lines(checks: Sequence[KillCheck], env: Env) -> list[str]:
    out: list[str] = []
    for n, check in enumerate(checks, 1):
        victim = check.event.victim
        assert victim is not None
        verdict = paint(str(check.verdict), _VERDICT_STYLE[check.verdict], env.colour)
        out += [f"Kill {n}: the kernel killed {victim.comm} (pid {victim.pid}); oomlens "
                f"predicted {_who(check.predicted)}: {verdict} ({VERDICT_TEXT[check.verdict]})",
                *("  " + line for line in event_details(Analysed(check.event, check.diagnosis),
                                                          env))]
    return out


# -- run -------------------------------------------------------------------------------


def run_outcome(result: RunResult) -> str:
    if result.interrupted:
        return "interrupted"
    return "oom_killed" if result.oom_kills or result.checks else "completed"


def _headroom(result: RunResult) -> int | None:
    return None if result.peak_bytes is None else result.limit_bytes - result.peak_bytes


def exit_json(returncode: int | None) -> dict[str, Any] | None:
    if returncode is None:
        return None
    if returncode < 0:
        return {"code": None, "signal": signal.Signals(-returncode).name}
    return {"code": returncode, "signal": None}


def run_json(result: RunResult, argv: Sequence[str], page_size: int) -> dict[str, Any]:
    verdict = overall(result.checks)
    return document(
        "run", run_outcome(result), argv=list(argv), pid=result.pid,
        sandbox={"path": result.path, "memcg_version": result.version,
                 "limit_bytes": result.limit_bytes, "swap_limit_bytes": result.swap_bytes,
                 **domain_json(result.domain, page_size)},
        exit=exit_json(result.returncode), oom_kills=result.oom_kills,
        kills=[kill_json(c) for c in result.checks],
        kills_not_in_log=max(result.oom_kills - len(result.checks), 0),
        verdict=None if verdict is None else str(verdict), peak_bytes=result.peak_bytes,
        peak_source=result.peak_source, headroom_bytes=_headroom(result),
        samples=result.samples, duration_s=round(result.duration_s, 3), notes=result.notes,
    )


def run_lines(result: RunResult, argv: Sequence[str], env: Env) -> list[str]:
    swap = "no swap" if not result.swap_bytes else f"swap {format_bytes(result.swap_bytes)}"
    out = [f"Sandbox memory cgroup {result.path} (cgroup v{result.version}): limit "
           f"{format_bytes(result.limit_bytes)}, {swap}; removed",
           f"Command: {shlex.join(argv)} (pid {result.pid}): {_ended(result)}"]
    if result.checks:
        out += kill_lines(result.checks, env)
    missing = result.oom_kills - len(result.checks)
    if missing > 0:
        out.append(f"{missing} OOM kill(s) counted by the cgroup are not in the kernel log "
                   "read (rate-limited, overrun or unreadable): not analysed.")
    elif not result.oom_kills:
        out.append("No OOM kill.")
    if result.peak_bytes is not None:
        headroom = _headroom(result) or 0
        out.append(f"Peak usage {format_bytes(result.peak_bytes)} of "
                   f"{format_bytes(result.limit_bytes)} ({result.peak_source}): headroom "
                   f"{format_bytes(headroom)} ({format_share(headroom / result.limit_bytes)})")
    return out + [f"Note: {note}" for note in result.notes]


def _ended(result: RunResult) -> str:
    ended = exit_json(result.returncode)
    if ended is None:
        return "interrupted; it and everything left in the cgroup were killed"
    if ended["signal"] is not None:
        return f"killed by {ended['signal']}"
    return f"exited with status {ended['code']}"


# -- oom and sysrq ----------------------------------------------------------------------


def trial_outcome(trial: Trial) -> str:
    if trial.interrupted:
        return "interrupted"
    if trial.checks:
        return "killed"
    if trial.no_killable:
        return "no_killable"
    return "timed_out" if trial.timed_out else "no_kill"


def target_json(target: Target, page_size: int) -> dict[str, Any]:
    return {"domain": domain_json(target.domain, page_size),
            "limit_bytes": target.memcg.limit_bytes, "usage_bytes": target.memcg.usage_bytes,
            "room_bytes": target.room_bytes, "refusal": target.refusal}


def trial_json(command: str, outcome: str, prediction: Prediction, trial: Trial | None,
               **fields: Any) -> dict[str, Any]:
    checks = [] if trial is None else trial.checks
    verdict = overall(checks)
    first = prediction.victim()
    return document(
        command, outcome, **fields,
        predicted=None if first is None else _ranked_json(first),
        prediction=prediction_json(prediction),
        helper=None if trial is None or trial.helper_pid is None
        else {"pid": trial.helper_pid, "cgroup": trial.helper_cgroup},
        kills=[kill_json(c) for c in checks],
        verdict=None if verdict is None else str(verdict),
        notes=[] if trial is None else trial.notes,
    )


def trial_lines(heading: str, prediction: Prediction, trial: Trial | None,
                env: Env) -> list[str]:
    out = [heading, f"Predicted kill order ({prediction.basis}):", *ranking_lines(prediction, env),
           f"Predicted victim: {_who(prediction.victim())}"]
    if trial is None:
        return out
    if trial.helper_pid is not None:
        out.append(f"Helper pid {trial.helper_pid} in {trial.helper_cgroup} (removed)")
    out += kill_lines(trial.checks, env)
    if not trial.checks:
        out.append({"interrupted": "Interrupted: nothing was killed.",
                    "no_killable": "The kernel found nothing it could kill.",
                    "timed_out": "Timed out: the kernel killed nothing.",
                    "no_kill": "The kernel killed nothing in the domain."}[
                        trial_outcome(trial)])
    return out + [f"Note: {note}" for note in trial.notes]
