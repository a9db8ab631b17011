"""The status screen's warnings: the doctor's cheap findings (doctor/gather.py without
`deep`), each under its stable code as `info` or `warning` (a critical finding is a
warning here: `oomlens --check` exits 1 on either). `oomlens doctor` shows the same
findings with their evidence, why and fix."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from oomlens.doctor.finding import Finding as DoctorFinding
from oomlens.doctor.finding import Severity
from oomlens.system.memcg import Memcg


@dataclass(frozen=True, slots=True)
class Finding:
    """One finding: `code` is stable (for --json consumers), `message` for humans."""

    code: str
    severity: str  # "info" | "warning"
    message: str


def memcg_usage_share(memcg: Memcg) -> float | None:
    if memcg.limit_bytes is None or memcg.limit_bytes == 0:
        return None
    return memcg.usage_bytes / memcg.limit_bytes


def status_warnings(findings: Sequence[DoctorFinding]) -> list[Finding]:
    return [Finding(f.code, "info" if f.severity is Severity.INFO else "warning", f.summary)
            for f in findings]
