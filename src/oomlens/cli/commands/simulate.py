"""`oomlens simulate order|run|oom|sysrq`: OOM kills predicted, and OOM kills made to
happen where they hurt nothing, checked against the prediction (the simulate package
does the work; cli/render/simulate.py renders it)."""

from __future__ import annotations

import argparse
import os
import shutil

from oomlens.cli.env import Env, ExitStatus
from oomlens.cli.render import simulate as render
from oomlens.cli.render.json import write_json
from oomlens.errors import Unsupported, UsageError
from oomlens.simulate.safety import Refused
from oomlens.simulate.verdict import KillCheck, Verdict, overall
from oomlens.system.snapshot import take_snapshot


def run(args: argparse.Namespace, env: Env) -> ExitStatus:
    commands = {"order": order, "run": run_command, "oom": oom, "sysrq": sysrq}
    return commands[args.simulate_command](args, env)


def _as_json(args: argparse.Namespace) -> bool:
    return bool(getattr(args, "json", False))


def _write(args: argparse.Namespace, env: Env, document: object, lines: list[str]) -> None:
    if _as_json(args):
        write_json(env.stdout, document)
    else:
        env.stdout.write("\n".join(lines) + "\n")
    env.stdout.flush()


def _verdict_status(verdict: Verdict | None) -> ExitStatus:
    """A kill that oomlens's rules do not explain is the problem this check finds."""
    ok = (Verdict.MATCHED, Verdict.MOVED)
    return ExitStatus.OK if verdict in ok else ExitStatus.PROBLEM


def _on_this_system(env: Env, what: str) -> None:
    """Only this system's own /proc names the processes a cgroup of ours will hold."""
    if os.path.realpath(env.proc_root) != "/proc":
        raise UsageError(f"{what} acts on this system's own processes and cgroups; "
                         f"{env.proc_root} (OOMLENS_PROC_ROOT) is for reading only")


# -- order -------------------------------------------------------------------------------


def order(args: argparse.Namespace, env: Env) -> ExitStatus:
    from oomlens.guard.triggers import parse_amount
    from oomlens.ranking import find_domain
    from oomlens.simulate.whatif import apply_overrides, check_members, kill_order
    from oomlens.system.mmshare import shared_mm_groups

    snapshot = take_snapshot(env.proc_root)
    domain = find_domain(snapshot, args.domain)
    wanted = _overrides(args.adj)
    check_members(snapshot, domain, wanted)
    groups, unconfirmed = shared_mm_groups(snapshot.processes, env.proc_root)
    what_if, overrides = apply_overrides(snapshot, wanted, groups)
    need = None
    if args.need is not None:
        need = parse_amount(args.need, "--need").resolve(domain.totalpages * snapshot.page_size)
    result = kill_order(what_if, domain, need, groups)
    notes = _order_notes(result.need_met, domain.kind, unconfirmed)
    _write(args, env, render.order_json(result, overrides, snapshot.page_size, unconfirmed,
                                        notes),
           render.order_lines(result, overrides, snapshot.page_size, notes, env))
    return ExitStatus.OK


def _overrides(pairs: list[tuple[int, int]]) -> dict[int, int]:
    wanted: dict[int, int] = {}
    for pid, value in pairs:
        if pid in wanted and wanted[pid] != value:
            raise UsageError(f"--adj {pid}: given twice ({wanted[pid]} and {value})")
        wanted[pid] = value
    return wanted


def _order_notes(met: bool, kind: str, unconfirmed: list[tuple[int, int]]) -> list[str]:
    notes = []
    if not met and kind == "global":
        notes.append("with nothing left to kill, a global OOM panics the kernel (mm/oom_kill.c: "
                     "out_of_memory(): \"System is deadlocked on memory\")")
    elif not met:
        notes.append("with nothing left to kill, the memory cgroup's charges fail and its "
                     "allocations wait or get ENOMEM")
    for a, b in unconfirmed:
        notes.append(f"pids {a} and {b} have the same memory counters, but the kernel would "
                     "not say whether they share memory (kcmp): counted apart")
    return notes


# -- run ---------------------------------------------------------------------------------


def run_command(args: argparse.Namespace, env: Env) -> ExitStatus:
    from oomlens.simulate.safety import check_sandbox_limits
    from oomlens.simulate.sandboxrun import RunOptions, run_sandboxed
    from oomlens.system.memcg import find_memcg_mount
    from oomlens.units import format_bytes

    argv = args.argv[1:] if args.argv[:1] == ["--"] else args.argv
    if not argv:
        raise UsageError("name the command: oomlens simulate run --limit SIZE -- CMD ARGS")
    missing = _not_runnable(argv[0])
    if missing is not None:
        env.stderr.write(f"oomlens: {argv[0]}: {missing[1]}\n")
        return missing[0]
    _on_this_system(env, "simulate run")
    snapshot = take_snapshot(env.proc_root)
    mount = find_memcg_mount(env.proc_root)
    if mount is None:
        raise Unsupported("no memory cgroup controller here (v1 memory hierarchy or cgroup2 "
                          "with the memory controller): simulate run needs one")
    check_sandbox_limits(args.limit, args.swap, snapshot.meminfo)
    options = RunOptions(tuple(argv), args.limit, args.swap, args.interval,
                         2 if _as_json(args) else None, env.kmsg, env.proc_root)
    if not _as_json(args):
        env.stderr.write(f"oomlens: running {argv[0]} in a sandbox memory cgroup limited to "
                         f"{format_bytes(args.limit)}\n")
        env.stderr.flush()
        env.stdout.flush()
    result = run_sandboxed(options, snapshot, mount)
    _write(args, env, render.run_json(result, argv, snapshot.page_size),
           render.run_lines(result, argv, env))
    if result.interrupted:
        return ExitStatus.INTERRUPTED
    verdict = overall(result.checks)
    return ExitStatus.OK if verdict is None else _verdict_status(verdict)


def _not_runnable(command: str) -> tuple[ExitStatus, str] | None:
    """Why `command` cannot be run (as env(1) says it), or None."""
    if "/" in command:
        if not os.path.exists(command):
            return ExitStatus.COMMAND_NOT_FOUND, "no such file"
        if os.path.isdir(command) or not os.access(command, os.X_OK):
            return ExitStatus.CANNOT_EXECUTE, "not executable"
        return None
    if shutil.which(command) is None:
        return ExitStatus.COMMAND_NOT_FOUND, "command not found"
    return None


# -- oom ---------------------------------------------------------------------------------


def oom(args: argparse.Namespace, env: Env) -> ExitStatus:
    from oomlens.simulate.trigger import assess_memcg, trigger_memcg_oom
    from oomlens.units import format_bytes

    snapshot = take_snapshot(env.proc_root)
    mount = snapshot.memcg_mount
    if mount is None:
        raise Unsupported("no memory cgroup controller here: simulate oom needs one")
    target = assess_memcg(snapshot, args.cgroup, mount, proc_root=env.proc_root)
    heading = (f"Memory cgroup {target.domain.path}: limit "
               f"{format_bytes(target.memcg.limit_bytes)}, in use "
               f"{format_bytes(target.memcg.usage_bytes)}; the helper will fill "
               f"{format_bytes(target.room_bytes)}")
    extra = render.target_json(target, snapshot.page_size)
    if target.refusal is not None or not args.yes_kill:
        _write(args, env, render.trial_json("oom", "refused", target.prediction, None, **extra),
               render.trial_lines(heading, target.prediction, None, env))
        if target.refusal is not None:
            raise Refused(f"not triggered: {target.refusal}")
        raise UsageError("not triggered: add --yes-kill to make the kernel kill the predicted "
                         "victim (a process of the cgroup, or the helper)")
    _on_this_system(env, "simulate oom --yes-kill")
    trial = trigger_memcg_oom(target, mount, proc_root=env.proc_root, kmsg_path=env.kmsg,
                              timeout=args.timeout)
    outcome = render.trial_outcome(trial)
    _write(args, env, render.trial_json("oom", outcome, trial.prediction, trial, **extra),
           render.trial_lines(heading, trial.prediction, trial, env))
    return _trial_status(outcome, trial.checks)


def _trial_status(outcome: str, checks: list[KillCheck]) -> ExitStatus:
    if outcome == "interrupted":
        return ExitStatus.INTERRUPTED
    if outcome != "killed":
        return ExitStatus.PROBLEM
    return _verdict_status(overall(checks))


# -- sysrq -------------------------------------------------------------------------------


def sysrq(args: argparse.Namespace, env: Env) -> ExitStatus:
    from oomlens.simulate.trigger import assess_global, trigger_sysrq
    from oomlens.system.container import detect_container

    snapshot = take_snapshot(env.proc_root)
    prediction = assess_global(snapshot, env.proc_root)
    evidence = detect_container(proc_root=env.proc_root)
    supported = os.path.exists(os.path.join(env.proc_root, "sysrq-trigger"))
    container = {"detected": bool(evidence), "evidence": evidence}
    domain = render.domain_json(snapshot.global_domain, snapshot.page_size)
    heading = "SysRq-f: the kernel's global OOM killer chooses among every process"
    refusal = _sysrq_refusal(args, supported, evidence)
    if refusal is not None:
        _write(args, env, render.trial_json("sysrq", "refused" if supported else "unsupported",
                                            prediction, None, domain=domain,
                                            container=container),
               render.trial_lines(heading, prediction, None, env))
        raise refusal
    trial = trigger_sysrq(prediction, proc_root=env.proc_root, kmsg_path=env.kmsg,
                          timeout=args.timeout)
    outcome = render.trial_outcome(trial)
    _write(args, env, render.trial_json("sysrq", outcome, prediction, trial, domain=domain,
                                        container=container),
           render.trial_lines(heading, prediction, trial, env))
    return _trial_status(outcome, trial.checks)


def _sysrq_refusal(args: argparse.Namespace, supported: bool,
                   evidence: list[str]) -> Exception | None:
    if not supported:
        return Unsupported("no /proc/sysrq-trigger on this system (a kernel without "
                           "CONFIG_MAGIC_SYSRQ, or a container that hides it): use "
                           "`oomlens simulate oom CGROUP` or `oomlens simulate run`")
    if evidence and not args.in_container:
        return Refused("not triggered: this looks like a container (" + "; ".join(evidence)
                       + "), and SysRq-f would make the host's kernel kill a process of the "
                       "host; add --in-container if that is meant")
    if not args.yes_really:
        return UsageError("not triggered: add --yes-really to make the kernel kill the "
                          "predicted victim")
    return None
