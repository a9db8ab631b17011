"""Arguments of `oomlens simulate` (the parsers only; cli/commands/simulate.py does the
work)."""

from __future__ import annotations

import argparse

from oomlens.cli.argtypes import positive_float
from oomlens.cli.protect_args import json_option

SCHEMA_HELP = "oomlens.simulate/1"

SIMULATE_DESCRIPTION = """\
OOM kills predicted, and OOM kills made to happen where they hurt nothing, with the
prediction checked against what the kernel did. SIZE: 512M, 1.5G, 1048576 (bytes);
K/M/G/T are binary."""

ORDER_DESCRIPTION = """\
Which processes the kernel would kill, in order, until SIZE is freed (default: the
first victim only), in the global domain or a memory cgroup's. --adj PID=N computes
the order as if PID's oom_score_adj were N (and that of the processes sharing its
memory, which the kernel would change with it); nothing is written. A kill frees the
victim's anonymous memory and page tables, once per address space; its file pages
stay in the page cache. Exit 0; 2 for an unknown pid or cgroup."""

RUN_DESCRIPTION = """\
Run CMD in a throwaway memory cgroup with the limit SIZE (no swap unless --swap).
When the kernel kills something in it, the kill is reported with `oomlens report`'s
analysis and checked against oomlens's prediction (the cgroup's kill order as last
sampled before the kill); otherwise the peak usage and the headroom are reported.
The cgroup and everything left in it are removed when CMD exits, on Ctrl-C, SIGTERM
and errors. With --json, CMD's stdout goes to stderr. Exit 0, also when CMD failed or
was killed (its status is in the report); 1 when the kernel killed another process
than oomlens's rules name; 2 for a --limit the host cannot spare; 126/127 when CMD
cannot be run; 130 when interrupted."""

OOM_DESCRIPTION = """\
Trigger a real OOM kill in CGROUP, a memory cgroup with a limit: a helper process
joins it (in a child cgroup) and allocates until the kernel's OOM killer acts there,
then stops. The predicted victim is shown first, the helper included (it keeps
oomlens's oom_score_adj and is predicted at the size it will reach); without
--yes-kill nothing is started and the exit status is 2. Then the kernel's choice is
checked against the prediction: exit 0 when they agree, 1 when not, when nothing was
killed, or when a safety rule refuses (the host cannot spare what the cgroup has left,
oom_kill_disable, swap without a limit)."""

SYSRQ_DESCRIPTION = """\
SysRq-f: make the kernel's global OOM killer kill one process now, via
/proc/sysrq-trigger (any process of the machine may die). The predicted victim is
shown first. Refused without --yes-really (exit 2) and, unless --in-container, inside
a container (exit 1: SysRq acts on the host's kernel). Exit 4 where there is no
/proc/sysrq-trigger. Prefer `simulate oom` or `simulate run`, which cannot hurt
anything outside their cgroup."""


def adj_override(text: str) -> tuple[int, int]:
    """`PID=N`: a pid and an oom_score_adj in -1000..1000."""
    pid_text, sep, value_text = text.partition("=")
    if not sep or not pid_text.isdigit() or int(pid_text) <= 0:
        raise argparse.ArgumentTypeError(f"not PID=N: {text!r} (e.g. 1234=500)")
    try:
        value = int(value_text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not PID=N: {text!r} (e.g. 1234=500)") from None
    if not -1000 <= value <= 1000:
        raise argparse.ArgumentTypeError(f"oom_score_adj must be in -1000..1000, not {value}")
    return int(pid_text), value


def size(text: str) -> int:
    """A size in bytes (512M, 1.5G); not a percent."""
    from oomlens.errors import UsageError
    from oomlens.guard.triggers import parse_amount

    try:
        amount = parse_amount(text, "size")
    except UsageError as err:
        raise argparse.ArgumentTypeError(str(err).removeprefix("size: ")) from None
    if amount.bytes is None:
        raise argparse.ArgumentTypeError(f"a size, not a share: {text!r}")
    return amount.bytes


def add_simulate_command(sub: argparse._SubParsersAction[argparse.ArgumentParser],
                         epilog: str) -> None:
    fmt = argparse.RawDescriptionHelpFormatter
    simulate = sub.add_parser("simulate", help="OOM kills predicted, or made safely in a "
                              "sandbox and checked", description=SIMULATE_DESCRIPTION,
                              epilog=epilog, formatter_class=fmt)
    kinds = simulate.add_subparsers(dest="simulate_command", metavar="KIND", required=True)

    order = kinds.add_parser("order", help="whom the kernel would kill, in order",
                             description=ORDER_DESCRIPTION, epilog=epilog, formatter_class=fmt)
    order.add_argument("--domain", metavar="global|CGROUP", default="global",
                       help="the OOM domain: global (default) or a memory cgroup with a limit")
    order.add_argument("--need", metavar="SIZE",
                       help="kill until this much is freed (a size, or a share of the "
                       "domain such as 10%%); default: the first victim only")
    order.add_argument("--adj", type=adj_override, action="append", default=[],
                       metavar="PID=N", help="what if PID's oom_score_adj were N (repeatable)")
    json_option(order, SCHEMA_HELP)

    run = kinds.add_parser("run", help="run a command in a throwaway memory cgroup",
                           description=RUN_DESCRIPTION, epilog=epilog, formatter_class=fmt)
    run.add_argument("--limit", type=size, required=True, metavar="SIZE",
                     help="the cgroup's memory limit")
    run.add_argument("--swap", type=size, default=0, metavar="SIZE",
                     help="swap it may use on top (v1: memory+swap limit = limit + SIZE, "
                     "where swap is accounted; v2: memory.swap.max); default none")
    run.add_argument("--interval", type=positive_float, default=0.1, metavar="SECONDS",
                     help="how often the prediction is sampled (default 0.1; every 0.01 "
                     "near the limit)")
    json_option(run, SCHEMA_HELP)
    run.add_argument("argv", nargs=argparse.REMAINDER, metavar="-- CMD ARGS",
                     help="the command to run")

    oom = kinds.add_parser("oom", help="trigger a real OOM kill in a limited memory cgroup",
                           description=OOM_DESCRIPTION, epilog=epilog, formatter_class=fmt)
    oom.add_argument("cgroup", metavar="CGROUP", help="a memory cgroup with a limit")
    oom.add_argument("--yes-kill", action="store_true",
                     help="do it: a process of CGROUP (or the helper) will be killed")
    oom.add_argument("--timeout", type=positive_float, default=20.0, metavar="SECONDS",
                     help="give up when nothing was killed after SECONDS (default 20)")
    json_option(oom, SCHEMA_HELP)

    sysrq = kinds.add_parser("sysrq", help="SysRq-f: a global OOM kill (any process may die)",
                             description=SYSRQ_DESCRIPTION, epilog=epilog, formatter_class=fmt)
    sysrq.add_argument("--yes-really", action="store_true",
                       help="do it: the kernel kills a process of this machine")
    sysrq.add_argument("--in-container", action="store_true",
                       help="also inside a container (the host's kernel chooses the victim "
                       "among every process of the host)")
    sysrq.add_argument("--timeout", type=positive_float, default=20.0, metavar="SECONDS",
                       help="give up when nothing was killed after SECONDS (default 20)")
    json_option(sysrq, SCHEMA_HELP)
