"""`oomlens` entry point: parse arguments, run one command, map errors to exit codes.

This is the only place that turns exceptions into exit statuses and messages; the
commands (cli/commands/<name>.py, imported lazily so `--help` stays fast) have no
error handling of their own.
"""

from __future__ import annotations

import argparse
import importlib
import shlex
import sys
from collections.abc import Sequence

from oomlens import __version__
from oomlens.cli.argtypes import SORT_KEYS, moment, positive_float, positive_int
from oomlens.cli.doctor_args import add_doctor_commands
from oomlens.cli.env import Env, ExitStatus
from oomlens.cli.events_args import add_event_commands
from oomlens.cli.guard_args import add_guard_command
from oomlens.cli.protect_args import add_protection_commands
from oomlens.cli.simulate_args import add_simulate_command

EPILOG = """\
exit status:
  0  ok
  1  a check found a problem (oomlens --check), a safety rule refused a change,
     or some changes failed
  2  usage or input error (bad option, unknown pid or cgroup, invalid policy)
  3  permission denied by the kernel (e.g. a negative oom_score_adj without
     CAP_SYS_RESOURCE)
  4  unsupported system (no /proc, no memory cgroup where one is needed)

Every command takes --json (schemas: docs/json.md). Colour only on a terminal;
NO_COLOR disables it.
"""


def _add_filters(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--cgroup", metavar="PATH",
                        help="rank for the OOM domain of this memory cgroup (default: global)")
    parser.add_argument("--user", help="only processes of this user (name or uid)")
    parser.add_argument("--match", metavar="REGEX",
                        help="only processes whose name or command line matches")
    parser.add_argument("--eligible", action="store_true",
                        help="hide processes the kernel never kills")
    parser.add_argument("--all", action="store_true", help="include kernel threads")
    parser.add_argument("--sort", choices=SORT_KEYS, default="rank", help="default: kill order")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="oomlens",
        description="See which processes the Linux OOM killer would kill, and why.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"oomlens {__version__}")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.add_argument("--check", action="store_true",
                        help="status screen: exit 1 if there is any warning")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    ls = sub.add_parser("ls", help="processes in the order the kernel would kill them",
                        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_filters(ls)
    ls.add_argument("--all-domains", action="store_true",
                    help="one ranking per OOM domain (global and each limited memcg)")
    ls.add_argument("--limit", type=positive_int, metavar="N", help="show the first N only")
    ls.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                    help="machine-readable output")

    top = sub.add_parser("top", help="the kill order, live (q quits, ? helps)",
                         epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_filters(top)
    top.add_argument("--interval", type=positive_float, default=2.0, metavar="SECONDS",
                     help="refresh interval (default 2)")
    top.add_argument("--once", action="store_true",
                     help="print one screen and exit (for scripts and dumb terminals)")

    explain = sub.add_parser("explain", help="the kernel's formula with one process's numbers",
                             epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    explain.add_argument("pid", type=positive_int, help="process id")
    explain.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                         help="machine-readable output")
    report = sub.add_parser(
        "report", help="every OOM kill in the kernel logs, its cause and the fix",
        description="Find, parse and diagnose the kernel's OOM reports. Without SOURCE: "
        "/dev/kmsg (or dmesg), the journal, /var/log/{messages,kern.log,syslog} and their "
        "rotations. A SOURCE is a log file (also .gz/.xz/.bz2), a directory, or - (stdin).",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    report.add_argument("sources", nargs="*", metavar="SOURCE", help="log files, directories, -")
    report.add_argument("--details", action="store_true", help="each event in full")
    report.add_argument("--last", type=positive_int, metavar="N", help="the last N events only")
    report.add_argument("--since", type=moment, metavar="TIME", help="events at or after TIME")
    report.add_argument("--until", type=moment, metavar="TIME", help="events at or before TIME")
    report.add_argument("--pid", type=positive_int, help="events whose victim or trigger is PID")
    report.add_argument("--comm", metavar="NAME", help="events whose victim or trigger is NAME")
    report.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                        help="machine-readable output (schema oomlens.report/1)")
    add_protection_commands(sub, EPILOG)
    add_event_commands(sub, EPILOG)
    add_guard_command(sub, EPILOG)
    add_doctor_commands(sub)
    add_simulate_command(sub, EPILOG)
    return parser


# Subcommands served by a module of another name.
_MODULES = {"protect": "adjust", "prefer": "adjust", "systemd-dropin": "dropin"}


def _run(args: argparse.Namespace, env: Env) -> ExitStatus:
    name = args.command or "status"
    module = importlib.import_module(f"oomlens.cli.commands.{_MODULES.get(name, name)}")
    status: ExitStatus = module.run(args, env)
    return status


def main(argv: Sequence[str] | None = None, env: Env | None = None) -> int:
    """Run oomlens; return the exit status (never raises for user errors)."""
    from oomlens.errors import AccessDenied, NotFound, OomlensError, Unsupported, UsageError

    env = env or Env.from_process()
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # argparse: --help, --version, usage errors (2)
        return int(exc.code or 0)
    args.command_line = shlex.join(["oomlens", *argv])  # the journal's "cause"
    try:
        status = int(_run(args, env))
        env.stdout.flush()  # a closed pipe must fail here, inside the boundary
        return status
    except (NotFound, UsageError) as err:
        return _fail(env, err, ExitStatus.USAGE)
    except AccessDenied as err:
        return _fail(env, err, ExitStatus.PERMISSION)
    except Unsupported as err:
        return _fail(env, err, ExitStatus.UNSUPPORTED)
    except OomlensError as err:
        return _fail(env, err, ExitStatus.PROBLEM)
    except KeyboardInterrupt:
        return int(ExitStatus.INTERRUPTED)
    except BrokenPipeError:
        if env.stdout is sys.stdout:
            _silence_stdout()
        return int(ExitStatus.OK)


def _fail(env: Env, err: Exception, status: ExitStatus) -> int:
    env.stderr.write(f"oomlens: {err}\n")
    return int(status)


def _silence_stdout() -> None:
    """After EPIPE (`oomlens ls | head`), point stdout at /dev/null so the interpreter's
    final flush does not raise again."""
    import os

    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())


if __name__ == "__main__":
    raise SystemExit(main())
