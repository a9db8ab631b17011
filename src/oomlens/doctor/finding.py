"""What the doctor says: findings with a stable code, a severity, the evidence (each
value and where it was read), why it matters and the fix; and the changes a finding
proposes, which doctor/plan.py turns into plan items. Plain data.

Severities (README, docs/json.md):
- `info`: a fact worth knowing; nothing to do unless it is not what you meant;
- `warning`: makes an OOM more likely or more costly, or loses the evidence of one;
- `critical`: an OOM will take the machine down or hang tasks instead of killing one.
`oomlens doctor` exits 1 when any finding is above `info`.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Severity(StrEnum):
    INFO = "info"
    WARNING = "warning"
    CRITICAL = "critical"

    @property
    def rank(self) -> int:
        """Higher is worse: for sorting, most severe first."""
        return _RANKS[self]


_RANKS = {Severity.INFO: 0, Severity.WARNING: 1, Severity.CRITICAL: 2}


@dataclass(frozen=True, slots=True)
class Evidence:
    """One value and where it was read: a path (`/proc/sys/vm/panic_on_oom`), a file
    and line (`/etc/rc.local:12`), or a named source (`history store #42`)."""

    source: str
    value: str


@dataclass(frozen=True, slots=True)
class SetSysctl:
    """Set a sysctl, live and in oomlens's own /etc/sysctl.d file."""

    name: str
    value: str


@dataclass(frozen=True, slots=True)
class SetScoreAdj:
    """Set one running process's oom_score_adj (it is identified by pid and start
    time; a process started since is never written)."""

    pid: int
    start_time_ticks: int
    comm: str
    cmdline: str
    value: int


@dataclass(frozen=True, slots=True)
class ProtectService:
    """Keep a service's future processes at `value`: the unit's `OOMScoreAdjust=`
    drop-in where systemd runs it, else a rule of the protection policy."""

    label: str
    comms: tuple[str, ...]
    unit: str | None
    value: int


Proposal = SetSysctl | SetScoreAdj | ProtectService


@dataclass(frozen=True, slots=True)
class Finding:
    code: str
    severity: Severity
    summary: str
    evidence: tuple[Evidence, ...]
    why: str
    fix: str
    proposals: tuple[Proposal, ...] = ()


def by_severity(findings: list[Finding]) -> list[Finding]:
    """Most severe first; the checks' order within a severity."""
    return sorted(findings, key=lambda f: -f.severity.rank)


def worst(findings: list[Finding]) -> Severity | None:
    return max((f.severity for f in findings), key=lambda s: s.rank, default=None)
