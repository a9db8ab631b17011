"""Arguments of `oomlens guard` (the parser only; cli/commands/guard.py does the work)."""

from __future__ import annotations

import argparse

from oomlens.cli.argtypes import positive_float
from oomlens.cli.events_args import STORE_HELP
from oomlens.cli.protect_args import json_option
from oomlens.guard.triggers import DEFAULT_CEILING

GUARD_DESCRIPTION = """\
Early OOM prevention: watch the system's and/or memory cgroups' available memory and
kill the right process before the kernel's OOM killer (or a minutes-long freeze) has to.
The victim is the domain's own kill order (the kernel's badness with the cgroup's
totalpages), adjusted by --avoid/--prefer and the protection policy; never pid 1, kernel
threads, the guard itself or an oom_score_adj -1000 process. AMOUNT is a size (512M,
1.5G) or a share of the domain's total (5%%)."""


def add_guard_command(sub: argparse._SubParsersAction[argparse.ArgumentParser],
                      epilog: str) -> None:
    guard = sub.add_parser("guard", help="kill the right process before memory runs out",
                           description=GUARD_DESCRIPTION, epilog=epilog,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    where = guard.add_argument_group("domains")
    where.add_argument("--cgroup", action="append", default=[], metavar="PATH",
                       help="guard this memory cgroup against its own limit (repeatable)")
    where.add_argument("--no-system", action="store_true",
                       help="with --cgroup: do not guard the whole system as well")
    when = guard.add_argument_group("triggers")
    when.add_argument("--kill-below", metavar="AMOUNT", default="5%",
                      help="kill when available memory is below this (default 5%%)")
    when.add_argument("--warn-below", metavar="AMOUNT", default="10%",
                      help="warn when available memory is below this (default 10%%)")
    when.add_argument("--swap-kill-below", metavar="AMOUNT",
                      help="kill only when free swap is below this too (system domain)")
    when.add_argument("--swap-warn-below", metavar="AMOUNT",
                      help="warn only when free swap is below this too (system domain)")
    when.add_argument("--psi-full", type=positive_float, metavar="PERCENT",
                      help="kill when memory pressure full avg10 reaches PERCENT (and "
                      "available is below the warn level)")
    when.add_argument("--psi-some", type=positive_float, metavar="PERCENT",
                      help="warn when memory pressure some avg10 reaches PERCENT")
    when.add_argument("--predict", type=positive_float, metavar="SECONDS",
                      help="kill when the trend exhausts memory within SECONDS (and available "
                      "is below the warn level)")
    when.add_argument("--max-interval", type=positive_float, default=DEFAULT_CEILING,
                      metavar="SECONDS",
                      help="the longest sleep between looks, with plenty available (default "
                      f"{DEFAULT_CEILING:g}): a drop faster than memory can be filled is seen "
                      "within it; each look costs ~0.1 ms of CPU")
    who = guard.add_argument_group("victim")
    who.add_argument("--avoid", action="append", default=[], metavar="REGEX",
                     help="never kill processes whose name or command line matches")
    who.add_argument("--prefer", action="append", default=[], metavar="REGEX",
                     help="kill matching processes first")
    who.add_argument("--policy", metavar="FILE",
                     help="also follow this protection policy: protect = avoid, prefer = "
                     "prefer (default /etc/oomlens/policy.toml when it exists)")
    who.add_argument("--ignore-session", action="store_true",
                     help="never kill the guard's own session (the shell that started it)")
    who.add_argument("--kill-group", action="store_true",
                     help="kill the victim's whole leaf cgroup (a service), not one process")
    how = guard.add_argument_group("kill")
    how.add_argument("--grace", type=positive_float, default=2.0, metavar="SECONDS",
                     help="from SIGTERM to SIGKILL (default 2)")
    how.add_argument("--kill-interval", type=positive_float, default=1.0, metavar="SECONDS",
                     help="at most one kill per domain per SECONDS (default 1)")
    how.add_argument("--before-kill", metavar="CMD",
                     help="run CMD (sh -c; {pid} and {comm} replaced) before the signal, e.g. "
                     "'jcmd {pid} GC.heap_dump /var/tmp/{pid}.hprof'")
    how.add_argument("--hook-timeout", type=positive_float, default=10.0, metavar="SECONDS",
                     help="stop waiting for --before-kill after SECONDS (default 10)")
    how.add_argument("--dry-run", action="store_true",
                     help="decide and log, send no signal")
    how.add_argument("--explain", action="store_true",
                     help="log the reasoning behind every decision")
    out = guard.add_argument_group("after")
    out.add_argument("--store", metavar="URL", help=STORE_HELP)
    out.add_argument("--state-dir", metavar="DIR", help="where the default store lives")
    out.add_argument("--exec", metavar="CMD", dest="exec_command",
                     help="run CMD for each kill, the event JSON on its stdin")
    out.add_argument("--exec-timeout", type=positive_float, default=10.0, metavar="SECONDS",
                     help="kill CMD after this long (default 10)")
    out.add_argument("--webhook", action="append", default=[], metavar="URL",
                     help="POST the event JSON to URL (repeatable)")
    out.add_argument("--desktop", action="store_true", help="a desktop notification")
    json_option(guard, "oomlens.guard/1, one object per line")
