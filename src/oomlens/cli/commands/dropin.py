"""`oomlens systemd-dropin UNIT --score N`: write (or `--remove`) the unit's
`OOMScoreAdjust=` drop-in, journaled, and say what systemd needs next."""

from __future__ import annotations

import argparse
import os
from typing import Any

from oomlens.cli.env import Env, ExitStatus
from oomlens.cli.protect_args import state_dir_of
from oomlens.cli.render.json import write_json
from oomlens.errors import OomlensError, UsageError
from oomlens.kernel.adj import oom_adj_to_score_adj
from oomlens.policy.dropin import checked_unit, dropin_path, dropin_text
from oomlens.system.files import read_optional

SCHEMA = "oomlens.dropin/1"


def _wanted(args: argparse.Namespace, unit: str) -> tuple[str | None, int | None]:
    if args.remove:
        if args.score is not None or args.legacy_adj is not None:
            raise UsageError("--remove takes no value")
        return None, None
    if args.legacy_adj is not None:
        value = oom_adj_to_score_adj(args.legacy_adj)
    elif args.score is not None:
        value = args.score
    else:
        raise UsageError("give --score N (or --legacy-adj N), or --remove")
    return dropin_text(unit, value), value


def run(args: argparse.Namespace, env: Env) -> ExitStatus:
    unit = checked_unit(args.unit)
    path = dropin_path(env.systemd_dir, unit)
    new, value = _wanted(args, unit)
    old = read_optional(path)
    changed = old != new
    change_id = None
    if changed and not args.dry_run:
        change_id = _write(path, old, new, unit, args, env)
    running = _running_values(unit, env)
    doc = {
        "schema": SCHEMA, "unit": unit, "path": path, "oom_score_adj": value,
        "content": new, "dry_run": args.dry_run, "changed": changed, "change_id": change_id,
        "systemd_running": os.path.isdir("/run/systemd/system"),
        "daemon_reload_needed": changed,
        "running_processes": [{"pid": pid, "oom_score_adj": adj} for pid, adj in running],
        "restart_needed": bool(running) and (changed if value is None
                                             else any(adj != value for _, adj in running)),
    }
    _render(doc, args, env)
    return ExitStatus.OK


def _write(path: str, old: str | None, new: str | None, unit: str, args: argparse.Namespace,
           env: Env) -> int:
    from oomlens.policy.journal import BatchKind, ChangeKind, ChangeState, Intent, Journal
    from oomlens.system.files import remove, write_atomic

    with Journal.open(state_dir_of(args, env)) as journal:
        batch = journal.begin_batch(env.actor, args.command_line, BatchKind.COMMAND)
        [change_id] = journal.record_intents(batch, [Intent(
            kind=ChangeKind.FILE, target=path, old=old, new=new, cause=args.command_line,
            comm=unit)])
        try:
            if new is None:
                remove(path, prune_directory=True)
            else:
                write_atomic(path, new)
        except OomlensError as err:
            journal.record_outcome(change_id, ChangeState.FAILED, str(err))
            raise
        journal.record_outcome(change_id, ChangeState.APPLIED)
        return change_id


def _running_values(unit: str, env: Env) -> list[tuple[int, int]]:
    """(pid, oom_score_adj) of the unit's processes now, from the cgroups."""
    from oomlens.policy.targets import unit_of
    from oomlens.system.procfs import read_cgroup_paths
    from oomlens.system.snapshot import take_snapshot

    snapshot = take_snapshot(env.proc_root)
    return [(p.pid, p.task.oom_score_adj) for p in snapshot.processes
            if unit_of(read_cgroup_paths(env.proc_root, p.pid), p.memcg) == unit]


def _render(doc: dict[str, Any], args: argparse.Namespace, env: Env) -> None:
    if getattr(args, "json", False):
        write_json(env.stdout, doc)
        return
    out = env.stdout
    if args.dry_run:
        out.write(f"# {doc['path']} (dry run: not written)\n")
        out.write(doc["content"] or "(the drop-in would be removed)\n")
    elif not doc["changed"]:
        out.write(f"{doc['path']} already says so: nothing to do\n")
    else:
        verb = "removed" if doc["content"] is None else "wrote"
        out.write(f"{verb} {doc['path']} (change #{doc['change_id']}; `oomlens undo "
                  f"{doc['change_id']}` reverts it)\n")
    if doc["changed"]:
        out.write("next: systemctl daemon-reload"
                  + ("" if doc["systemd_running"] else " (systemd is not running here)") + "\n")
    if doc["restart_needed"]:
        pids = ", ".join(str(p["pid"]) for p in doc["running_processes"])
        out.write(f"the unit's running processes ({pids}) keep their value until "
                  f"`systemctl restart {doc['unit']}`; `oomlens adjust --unit {doc['unit']} "
                  f"--score {doc['oom_score_adj']}` applies it now\n")
