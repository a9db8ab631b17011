"""`oomlens enforce`: apply the policy file now and keep it applied (daemons/enforce.py
does the work; this parses, picks the event source and prints the log)."""

from __future__ import annotations

import argparse
import json
import time
from typing import TYPE_CHECKING, Any

from oomlens.cli.env import Env, ExitStatus
from oomlens.cli.protect_args import state_dir_of
from oomlens.cli.render.eventlog import event_log
from oomlens.daemons.enforce import (
    Enforcer,
    Log,
    Options,
    machine_of,
    serve,
)
from oomlens.errors import AccessDenied, Unsupported
from oomlens.policy.load import load_policy
from oomlens.policy.rules import Policy

if TYPE_CHECKING:
    from oomlens.system.cnproc import ExecEvents

SCHEMA = "oomlens.enforce/1"


def make_log(env: Env, as_json: bool) -> Log:
    return event_log(env.stdout, SCHEMA, describe, as_json)


def describe(entry: dict[str, Any]) -> str:
    event = entry["event"]
    if event in ("applied", "would_apply", "denied", "failed", "gone"):
        change = f", change #{entry['change_id']}" if "change_id" in entry else ""
        error = f": {entry['error']}" if "error" in entry else ""
        return (f"{event.replace('_', ' ')}: pid {entry['pid']} ({entry['comm']}) "
                f"oom_score_adj {entry['old']} -> {entry['new']} by {entry['rule']}{change}"
                f"{error}")
    if event == "refused":
        return f"refused: pid {entry['pid']} ({entry['comm']}) {entry['message']}"
    details = " ".join(f"{k}={v}" for k, v in entry.items() if k != "event")
    return f"{event}: {details}"


def _validated(policy: Policy, env: Env, as_json: bool) -> ExitStatus:
    if as_json:
        env.stdout.write(json.dumps({
            "schema": SCHEMA, "event": "valid", "policy": policy.path,
            "rules": [{"name": r.name, "line": r.line, "matchers": r.matchers.describe(),
                       "action": r.action.value, "oom_score_adj": r.oom_score_adj,
                       "force": r.force} for r in policy.rules]}) + "\n")
        return ExitStatus.OK
    env.stdout.write(f"{policy.path}: valid, {len(policy.rules)} rules\n")
    for rule in policy.rules:
        env.stdout.write(f"  line {rule.line}: {rule.name}: {rule.matchers.describe()} -> "
                         f"oom_score_adj {rule.oom_score_adj}\n")
    return ExitStatus.OK


def _events(args: argparse.Namespace, env: Env, log: Log) -> ExecEvents | None:
    """Subscribe to exec events, or say once why /proc is polled instead."""
    if args.poll:
        return None
    from oomlens.system.cnproc import ExecEvents, kernel_filters_events

    try:
        from oomlens.system.procfs import read_text

        release = read_text(f"{env.proc_root}/sys/kernel/osrelease").strip()
        return ExecEvents(kernel_filters_events(release))
    except (Unsupported, AccessDenied) as err:
        log({"event": "polling", "message": f"{err}; polling /proc every {args.interval} s"})
        return None


def run(args: argparse.Namespace, env: Env) -> ExitStatus:
    policy = load_policy(args.policy)
    if args.validate:
        return _validated(policy, env, getattr(args, "json", False))
    log = make_log(env, getattr(args, "json", False))
    journal = None
    if not args.dry_run:
        from oomlens.policy.journal import Journal

        journal = Journal.open(state_dir_of(args, env))
    events = None
    try:
        enforcer = Enforcer(policy, machine_of(env.proc_root), journal, log, env.actor,
                            args.command_line)
        if args.once:
            enforcer.sweep()
        else:
            events = _events(args, env, log)
            mode = "process events" if events is not None else "polling /proc"
            rescan = args.rescan or (60.0 if events is None else None)
            started = {"event": "started", "policy": policy.path, "rules": len(policy.rules),
                       "mode": mode, "rescan_s": rescan}
            serve(enforcer, Options(args.policy, events is None, args.interval, rescan),
                  events, time.monotonic, lambda: log(started))
    finally:
        if events is not None:
            events.close()
        if journal is not None:
            journal.close()
    counters = enforcer.counters
    log({"event": "done" if args.once else "stopped", "applied": counters.applied,
         "denied": counters.denied, "failed": counters.failed, "refused": counters.refused})
    if not args.once:  # a daemon stopped cleanly; its failures are in the log
        return ExitStatus.OK
    if counters.denied:
        return ExitStatus.PERMISSION
    return ExitStatus.PROBLEM if counters.failed or counters.refused else ExitStatus.OK
