"""Arguments of `oomlens doctor` and `oomlens apply` (the parsers only;
cli/commands/doctor.py and apply.py do the work)."""

from __future__ import annotations

import argparse

from oomlens.cli.events_args import STORE_HELP
from oomlens.cli.protect_args import json_option

DOCTOR_DESCRIPTION = """\
Check what decides an OOM on this machine (sysctls, swap, PSI, memory cgroups,
protection, userspace OOM daemons, recent kills), each finding with a severity, the
evidence (the value and where it was read), why it matters and the fix. With --plan,
also write the proposed changes to FILE for review; `oomlens apply FILE` carries them
out, journaled, and `oomlens undo --plan ID` restores every value.

severity: info (worth knowing), warning (makes an OOM likelier or costlier, or loses its
evidence), critical (an OOM would take the machine down or hang tasks)."""

DOCTOR_EXIT = """\
exit status:
  0  nothing above info
  1  a warning or a critical finding
  2  usage error (a bad option, --swap-file without --plan)
  3  the plan file cannot be written (permission)
"""

APPLY_DESCRIPTION = """\
Apply a plan written by `oomlens doctor --plan`: sysctls (live in /proc/sys and in
oomlens's own sysctl.d file, 90-oomlens-ID.conf), OOMScoreAdjust= drop-ins, a new policy
file, processes' oom_score_adj. Every old value goes into the journal (one batch per
apply, one change per item); `oomlens undo --plan ID` restores all of it. The plan is
refused whole, and nothing written, if any item's recorded before value no longer holds.
Items marked manual (a swap file) are listed, never done."""

APPLY_EXIT = """\
exit status:
  0  applied (or nothing to do; manual items are listed)
  1  refused (a before value changed since the plan) or some items failed
  2  not a plan file, a plan of another host, a bad option
  3  the kernel or the file system refused a write (e.g. a negative oom_score_adj
     without CAP_SYS_RESOURCE)
"""


def _state_dir(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--state-dir", metavar="DIR",
                        help="where the journal (and the default history store) live")


def add_doctor_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """`doctor` and `apply`; each documents its own exit status."""
    fmt = argparse.RawDescriptionHelpFormatter
    doctor = sub.add_parser("doctor", help="assess this machine's OOM set-up; plan the fixes",
                            description=DOCTOR_DESCRIPTION, epilog=DOCTOR_EXIT,
                            formatter_class=fmt)
    doctor.add_argument("--plan", metavar="FILE",
                        help="write the proposed changes to FILE (TOML) for review")
    doctor.add_argument("--swap-file", metavar="SIZE",
                        help="with --plan: also propose a swap file of SIZE (4G, 25%% of RAM); "
                        "a manual item: oomlens lists the commands, never runs them")
    doctor.add_argument("--swap-path", metavar="PATH", default="/swapfile",
                        help="where that swap file goes (default /swapfile)")
    doctor.add_argument("--policy", metavar="PATH", default="/etc/oomlens/policy.toml",
                        help="the protection policy the plan's rules go to "
                        "(default /etc/oomlens/policy.toml)")
    doctor.add_argument("--details", action="store_true",
                        help="evidence, why and fix of info findings too")
    doctor.add_argument("--store", metavar="URL", help=STORE_HELP)
    _state_dir(doctor)
    json_option(doctor, "oomlens.doctor/1")

    apply = sub.add_parser("apply", help="apply a plan written by `oomlens doctor --plan`",
                           description=APPLY_DESCRIPTION, epilog=APPLY_EXIT,
                           formatter_class=fmt)
    apply.add_argument("plan", metavar="PLAN", help="the plan file")
    apply.add_argument("--dry-run", action="store_true",
                       help="check the plan against the system and show what would change")
    apply.add_argument("--sysctl-dir", metavar="DIR",
                       help="where persisted sysctls go (default $OOMLENS_SYSCTL_DIR, else "
                       "/etc/sysctl.d)")
    _state_dir(apply)
    json_option(apply, "oomlens.apply/1")
