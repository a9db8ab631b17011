"""systemd's `OOMScoreAdjust=` drop-in: the durable way to set a service's
oom_score_adj (systemd applies it to every process it starts for the unit, at each
start, before exec; systemd.exec(5)). Pure: names, paths and file text.
"""

from __future__ import annotations

import re

from oomlens.errors import UsageError
from oomlens.policy.match import unit_name

DROPIN_NAME = "50-oomlens-oom.conf"
# Unit types with an exec context, and the section OOMScoreAdjust= goes in.
_SECTIONS = {".service": "Service", ".socket": "Socket", ".mount": "Mount", ".swap": "Swap"}
# systemd.unit(5): "[a-zA-Z0-9:-_.\\]" plus "@" for instances.
_UNIT_NAME = re.compile(r"^[A-Za-z0-9:_.\\@-]+$")


def checked_unit(name: str) -> str:
    """The full unit name (`sshd` -> `sshd.service`); refuses names systemd would
    not accept and unit types that start no processes."""
    unit = unit_name(name)
    if not _UNIT_NAME.match(unit) or unit.startswith("."):
        raise UsageError(f"not a systemd unit name: {name!r}")
    suffix = unit[unit.rfind("."):]
    if suffix not in _SECTIONS:
        raise UsageError(f"{unit}: OOMScoreAdjust= applies to units that start processes "
                         f"({', '.join(_SECTIONS)}), not {suffix}")
    return unit


def dropin_path(systemd_dir: str, unit: str) -> str:
    return f"{systemd_dir.rstrip('/')}/{unit}.d/{DROPIN_NAME}"


def dropin_text(unit: str, oom_score_adj: int) -> str:
    section = _SECTIONS[unit[unit.rfind("."):]]
    return (
        "# Written by oomlens (oomlens systemd-dropin); `oomlens undo` or\n"
        f"# `oomlens systemd-dropin {unit} --remove` takes it away.\n"
        f"[{section}]\n"
        f"OOMScoreAdjust={oom_score_adj}\n"
    )
