"""Arguments of the protection commands: adjust, protect, prefer, run, journal, undo,
systemd-dropin and enforce (the parsers only; cli/commands/ does the work)."""

from __future__ import annotations

import argparse

from oomlens.cli.argtypes import moment, positive_float, positive_int
from oomlens.cli.env import Env

TARGET_HELP = """\
TARGET: every selector given must match (AND); a selector given twice matches
either value (OR). --pid names processes directly.
"""


def _score(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if not -1000 <= value <= 1000:
        raise argparse.ArgumentTypeError(f"oom_score_adj must be in -1000..1000, not {value}")
    return value


def _legacy_adj(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if not -17 <= value <= 15:
        raise argparse.ArgumentTypeError(f"oom_adj must be in -17..15, not {value}")
    return value


def _share(text: str) -> float:
    from oomlens.policy.rules import parse_share

    try:
        return parse_share(text, "share")
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _value_options(parser: argparse.ArgumentParser, required: bool, default: str) -> None:
    group = parser.add_mutually_exclusive_group(required=required)
    group.add_argument("--score", type=_score, metavar="N",
                       help=f"oom_score_adj, -1000..1000{default}")
    group.add_argument("--legacy-adj", type=_legacy_adj, metavar="N",
                       help="a deprecated oom_adj value, -17..15, translated as the kernel does")


def _state_dir(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--state-dir", metavar="DIR",
                        help="where the change journal lives (default: $OOMLENS_STATE_DIR, "
                        "/var/lib/oomlens as root, else $XDG_STATE_HOME/oomlens)")


def json_option(parser: argparse.ArgumentParser, schema: str) -> None:
    parser.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                        help=f"machine-readable output (schema {schema})")


def _target(parser: argparse.ArgumentParser) -> None:
    sel = parser.add_argument_group("TARGET")
    sel.add_argument("--pid", type=positive_int, action="append", default=[], help="process id")
    sel.add_argument("--name", action="append", default=[], metavar="COMM",
                     help="process name (comm), exact")
    sel.add_argument("--cmd", metavar="REGEX", help="regular expression on the command line")
    sel.add_argument("--exe", action="append", default=[], metavar="PATH",
                     help="path of the executable")
    sel.add_argument("--user", action="append", default=[], help="user name or uid")
    sel.add_argument("--cgroup", action="append", default=[], metavar="PATH",
                     help="cgroup path (and below), or a glob such as '/system.slice/*'")
    sel.add_argument("--unit", action="append", default=[], metavar="NAME",
                     help="systemd unit (sshd = sshd.service)")
    sel.add_argument("--children", action="store_true", help="also every descendant")
    parser.add_argument("--dry-run", action="store_true",
                        help="show the exact plan (pid, command, old -> new), change nothing")
    parser.add_argument("--force", action="store_true",
                        help="protect even what the safety rules refuse")
    parser.add_argument("--max-protected-share", type=_share, metavar="SHARE",
                        help="largest share of RAM one unkillable process may hold (30%%)")
    parser.add_argument("--min-killable-share", type=_share, metavar="SHARE",
                        help="share of process memory that must stay killable (50%%)")
    _state_dir(parser)
    json_option(parser, "oomlens.adjust/1")


def add_protection_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser],
                            epilog: str) -> None:
    fmt = argparse.RawDescriptionHelpFormatter
    for name, text, required, default in (
        ("adjust", "set oom_score_adj of processes (journaled, undoable)", True, ""),
        ("protect", "make processes the last the kernel kills (-1000: never)", False,
         " (default -1000: never killed; use a value like -500 for milder protection)"),
        ("prefer", "make processes die first when memory runs out", False, " (default 500)"),
    ):
        cmd = sub.add_parser(name, help=text, description=text, epilog=TARGET_HELP + epilog,
                             formatter_class=fmt)
        _value_options(cmd, required, default)
        _target(cmd)

    run = sub.add_parser("run", help="start a command with an oom_score_adj (like choom)",
                         epilog=epilog, formatter_class=fmt)
    _value_options(run, True, "")
    _state_dir(run)
    run.add_argument("argv", nargs=argparse.REMAINDER, metavar="-- CMD ARGS",
                     help="the command to run")

    journal = sub.add_parser("journal", help="every change oomlens made, and by whom",
                             epilog=epilog, formatter_class=fmt)
    journal.add_argument("--since", type=moment, metavar="TIME", help="changes at or after TIME")
    journal.add_argument("--pid", type=positive_int, help="changes of this pid")
    journal.add_argument("--limit", type=positive_int, metavar="N", help="the last N changes")
    _state_dir(journal)
    json_option(journal, "oomlens.journal/1")

    undo = sub.add_parser("undo", help="restore the values a change replaced",
                          epilog=epilog, formatter_class=fmt)
    undo.add_argument("change", nargs="?", type=positive_int, metavar="CHANGE_ID",
                      help="one change (see `oomlens journal`)")
    which = undo.add_mutually_exclusive_group()
    which.add_argument("--last", action="store_true", help="the last command's changes")
    which.add_argument("--all", action="store_true", help="every change still in effect")
    which.add_argument("--since", type=moment, metavar="TIME", help="changes at or after TIME")
    which.add_argument("--plan", metavar="ID", help="every change `oomlens apply` made for "
                       "the doctor's plan ID")
    undo.add_argument("--dry-run", action="store_true", help="show what would be restored")
    undo.add_argument("--force", action="store_true",
                      help="restore even where the value was changed again since")
    _state_dir(undo)
    json_option(undo, "oomlens.undo/1")

    dropin = sub.add_parser(
        "systemd-dropin", help="write the OOMScoreAdjust= drop-in of a systemd unit",
        description="Write /etc/systemd/system/UNIT.d/50-oomlens-oom.conf with "
        "OOMScoreAdjust=N: the durable way to protect a service.",
        epilog=epilog, formatter_class=fmt)
    dropin.add_argument("unit", metavar="UNIT", help="unit name (sshd = sshd.service)")
    _value_options(dropin, False, "")
    dropin.add_argument("--remove", action="store_true", help="remove oomlens's drop-in")
    dropin.add_argument("--dry-run", action="store_true", help="print the drop-in, write nothing")
    _state_dir(dropin)
    json_option(dropin, "oomlens.dropin/1")

    enforce = sub.add_parser(
        "enforce", help="keep a policy applied to existing and new processes",
        description="Apply the policy's rules to every process now, then to each new "
        "program as it starts (the kernel's process events; /proc polling where they "
        "are not available). SIGHUP reloads the policy.",
        epilog=epilog, formatter_class=fmt)
    enforce.add_argument("--policy", metavar="PATH", default="/etc/oomlens/policy.toml",
                         help="policy file (default /etc/oomlens/policy.toml)")
    enforce.add_argument("--once", action="store_true",
                         help="apply to the processes that exist now and exit (cron, CI)")
    enforce.add_argument("--validate", action="store_true",
                         help="check the policy file and exit")
    enforce.add_argument("--dry-run", action="store_true", help="log decisions, change nothing")
    enforce.add_argument("--poll", action="store_true",
                         help="poll /proc even where process events are available")
    enforce.add_argument("--interval", type=positive_float, default=1.0, metavar="SECONDS",
                         help="polling interval (default 1)")
    enforce.add_argument("--rescan", type=positive_float, metavar="SECONDS",
                         help="also re-check every process this often (default: 60 when "
                         "polling, never with process events)")
    _state_dir(enforce)
    json_option(enforce, "oomlens.enforce/1, one object per line")


def state_dir_of(args: argparse.Namespace, env: Env) -> str:
    return args.state_dir or env.state_dir
