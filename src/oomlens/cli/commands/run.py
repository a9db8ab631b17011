"""`oomlens run --score N -- CMD ARGS`: start a command with an oom_score_adj (what
util-linux `choom -n N -- CMD` does), journaled like every change.

oomlens sets its own value and then execs the command in the same process: the pid
and start time stay, so the journal's identity is the command's, and children the
command forks inherit the value (kernel/fork.c: copy_signal())."""

from __future__ import annotations

import argparse
import os
import shlex

from oomlens.cli.commands.adjust import Value
from oomlens.cli.env import Env, ExitStatus
from oomlens.cli.protect_args import state_dir_of
from oomlens.errors import OomlensError, UsageError
from oomlens.kernel.adj import oom_adj_to_score_adj


def run(args: argparse.Namespace, env: Env) -> ExitStatus:
    argv = args.argv[1:] if args.argv[:1] == ["--"] else args.argv
    if not argv:
        raise UsageError("name the command to run: oomlens run --score N -- CMD ARGS")
    legacy = args.legacy_adj
    value = Value(oom_adj_to_score_adj(legacy) if legacy is not None else args.score, legacy)
    _set_own_value(value.oom_score_adj, shlex.join(argv), args, env)
    env.stdout.flush()
    env.stderr.flush()
    try:
        os.execvp(argv[0], argv)
    except FileNotFoundError:
        env.stderr.write(f"oomlens: {argv[0]}: command not found\n")
        return ExitStatus.COMMAND_NOT_FOUND
    except OSError as err:
        env.stderr.write(f"oomlens: {argv[0]}: {err.strerror}\n")
        return ExitStatus.CANNOT_EXECUTE
    raise AssertionError("execvp returned")


def _set_own_value(new: int, command: str, args: argparse.Namespace, env: Env) -> None:
    from oomlens.policy.journal import BatchKind, ChangeKind, ChangeState, Intent, Journal
    from oomlens.system.oomadj import ProcessHandle, boot_id

    with ProcessHandle.open(os.getpid(), env.proc_root) as me, \
            Journal.open(state_dir_of(args, env)) as journal:
        current = me.oom_score_adj()
        if current == new:
            return
        batch = journal.begin_batch(env.actor, args.command_line, BatchKind.COMMAND)
        [change_id] = journal.record_intents(batch, [Intent(
            kind=ChangeKind.OOM_SCORE_ADJ, target=str(me.pid), old=str(current), new=str(new),
            cause=args.command_line, pid=me.pid, start_time_ticks=me.start_time_ticks,
            boot_id=boot_id(env.proc_root), comm=me.comm, cmdline=command)])
        try:
            me.set_oom_score_adj(new)
        except OomlensError as err:
            journal.record_outcome(change_id, ChangeState.FAILED, str(err))
            raise
        journal.record_outcome(change_id, ChangeState.APPLIED)
