"""Every check of `oomlens doctor`, in the order findings are listed within a severity:
functions of the gathered Facts, each returning its findings. Pure."""

from __future__ import annotations

from collections.abc import Callable

from oomlens.doctor.cgroups import CGROUP_CHECKS
from oomlens.doctor.daemons import DAEMON_CHECKS
from oomlens.doctor.facts import Facts
from oomlens.doctor.finding import Finding, by_severity
from oomlens.doctor.kills import KILL_CHECKS
from oomlens.doctor.memory import MEMORY_CHECKS
from oomlens.doctor.protection import PROTECTION_CHECKS
from oomlens.doctor.sysctls import SYSCTL_CHECKS

Check = Callable[[Facts], list[Finding]]
CHECKS: tuple[Check, ...] = (*SYSCTL_CHECKS, *MEMORY_CHECKS, *CGROUP_CHECKS,
                             *PROTECTION_CHECKS, *DAEMON_CHECKS, *KILL_CHECKS)


def run_checks(facts: Facts) -> list[Finding]:
    """All findings, most severe first."""
    return by_severity([finding for check in CHECKS for finding in check(facts)])
