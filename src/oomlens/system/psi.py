"""Pressure stall information: `/proc/pressure/memory` and a cgroup's `memory.pressure`."""

from __future__ import annotations

from dataclasses import dataclass

from oomlens.system.procfs import read_text


@dataclass(frozen=True, slots=True)
class PressureLine:
    """One `some`/`full` line: share of wall time stalled (percent) and total in µs."""

    avg10: float
    avg60: float
    avg300: float
    total_us: int


@dataclass(frozen=True, slots=True)
class Pressure:
    some: PressureLine
    full: PressureLine | None


def parse_psi(text: str) -> Pressure:
    """Parse `some avg10=0.00 avg60=0.00 avg300=0.00 total=0` lines
    (kernel/sched/psi.c: psi_show()). The system-wide CPU file has no `full` line on
    old kernels; memory always has both."""
    lines: dict[str, PressureLine] = {}
    for line in text.splitlines():
        kind, *pairs = line.split()
        values = dict(pair.split("=", 1) for pair in pairs)
        try:
            lines[kind] = PressureLine(
                float(values["avg10"]), float(values["avg60"]), float(values["avg300"]),
                int(values["total"]),
            )
        except KeyError as err:
            raise ValueError(f"pressure line without {err}: {line!r}") from None
    if "some" not in lines:
        raise ValueError("no 'some' line in pressure file")
    return Pressure(lines["some"], lines.get("full"))


def read_memory_pressure(proc_root: str = "/proc") -> Pressure | None:
    """System memory pressure, or None where PSI is absent (kernel without
    CONFIG_PSI, or booted with psi=0)."""
    try:
        return parse_psi(read_text(f"{proc_root}/pressure/memory"))
    except (OSError, ValueError):
        return None
