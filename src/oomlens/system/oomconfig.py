"""Configuration on disk that decides who the OOM killer takes: systemd's
`OOMScoreAdjust=` drop-ins, scripts and units that still write the deprecated
`oom_adj`, and the userspace OOM daemons installed.

Every reader takes the directories (or a file-system root) to look in, so tests use
a temporary tree. Unreadable files are skipped: this is evidence, not a parser a
service depends on.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

# systemd.unit(5): the unit search path of the system manager, most important first.
UNIT_DIRS = ("etc/systemd/system", "run/systemd/system", "usr/lib/systemd/system",
             "lib/systemd/system")
# Where a boot script, a cron job or a unit could write /proc/<pid>/oom_adj.
SCRIPT_PLACES = ("etc/rc.local", "etc/crontab", "etc/cron.d", "etc/cron.hourly",
                 "etc/cron.daily", "etc/cron.weekly", "etc/cron.monthly", "etc/init.d",
                 "etc/default", "etc/sysconfig", "etc/systemd/system", "etc/supervisor")
# Userspace OOM killers and where their packages install them.
OOM_DAEMON_PATHS = {
    "earlyoom": ("usr/bin/earlyoom", "usr/sbin/earlyoom", "usr/local/bin/earlyoom"),
    "nohang": ("usr/bin/nohang", "usr/sbin/nohang", "usr/local/bin/nohang"),
    "systemd-oomd": ("usr/lib/systemd/systemd-oomd", "lib/systemd/systemd-oomd"),
    "oomd": ("usr/bin/oomd", "usr/sbin/oomd", "usr/local/bin/oomd"),
}
_MAX_FILE_BYTES = 256 * 1024
_SCORE_ADJUST = re.compile(r"^\s*OOMScoreAdjust\s*=\s*(\S*)\s*$", re.MULTILINE)
# `oom_adj` as a word: not oom_score_adj, not oom_adjust, not OOMScoreAdjust.
_OOM_ADJ = re.compile(r"\boom_adj\b")


@dataclass(frozen=True, slots=True)
class ScoreAdjustSetting:
    """One `OOMScoreAdjust=` line in a unit drop-in."""

    path: str
    line: int
    unit: str
    value: str


@dataclass(frozen=True, slots=True)
class OomAdjMention:
    """A line of a script or unit that names `oom_adj`."""

    path: str
    line: int
    text: str


def _read_small(path: str) -> str | None:
    """A regular text file of at most 256 KiB, else None."""
    try:
        if not os.path.isfile(path) or os.path.getsize(path) > _MAX_FILE_BYTES:
            return None
        with open(path, "rb") as handle:
            data = handle.read()
    except OSError:
        return None
    return None if b"\0" in data else data.decode("utf-8", "replace")


def _line_of(text: str, offset: int) -> int:
    return text.count("\n", 0, offset) + 1


def _unique_dirs(directories: Sequence[str]) -> list[str]:
    """Existing directories, each once (`/lib` is often a link to `/usr/lib`)."""
    seen: set[str] = set()
    out = []
    for directory in directories:
        real = os.path.realpath(directory)
        if os.path.isdir(real) and real not in seen:
            seen.add(real)
            out.append(directory)
    return out


def unit_dirs(fs_root: str, systemd_dir: str | None = None) -> list[str]:
    """The unit directories under `fs_root`; `systemd_dir` replaces /etc/systemd/system
    (OOMLENS_SYSTEMD_DIR: a chroot or a test)."""
    dirs = [os.path.join(fs_root, d) for d in UNIT_DIRS]
    if systemd_dir is not None:
        dirs[0] = systemd_dir
    return dirs


def find_score_adjust_dropins(directories: Sequence[str]) -> tuple[ScoreAdjustSetting, ...]:
    """Every `OOMScoreAdjust=` in `UNIT.d/*.conf` drop-ins of these directories."""
    found: list[ScoreAdjustSetting] = []
    for directory in _unique_dirs(directories):
        for entry in _names(directory):
            dropins = os.path.join(directory, entry)
            if not entry.endswith(".d") or not os.path.isdir(dropins):
                continue
            for name in _names(dropins):
                path = os.path.join(dropins, name)
                text = _read_small(path) if name.endswith(".conf") else None
                if text is None:
                    continue
                found.extend(ScoreAdjustSetting(path, _line_of(text, m.start()), entry[:-2],
                                                m.group(1))
                             for m in _SCORE_ADJUST.finditer(text))
    return tuple(found)


def _names(directory: str) -> list[str]:
    """The directory's entries in order; none if it cannot be listed (not root)."""
    try:
        return sorted(os.listdir(directory))
    except OSError:
        return []


def _files_under(path: str, depth: int = 2) -> Iterator[str]:
    if os.path.isfile(path):
        yield path
        return
    if depth == 0 or not os.path.isdir(path) or os.path.islink(path):
        return
    for name in _names(path):
        yield from _files_under(os.path.join(path, name), depth - 1)


def find_oom_adj_mentions(fs_root: str,
                          places: Sequence[str] = SCRIPT_PLACES) -> tuple[OomAdjMention, ...]:
    """Lines naming `oom_adj` in boot scripts, cron jobs and local units."""
    found = []
    for place in places:
        for path in _files_under(os.path.join(fs_root, place)):
            text = _read_small(path)
            if text is None:
                continue
            for match in _OOM_ADJ.finditer(text):
                start = text.rfind("\n", 0, match.start()) + 1
                end = text.find("\n", match.end())
                line = text[start:end if end >= 0 else len(text)].strip()
                found.append(OomAdjMention(path, _line_of(text, match.start()), line[:160]))
    return tuple(found)


def installed_oom_daemons(fs_root: str) -> dict[str, tuple[str, ...]]:
    """The userspace OOM daemons whose program is installed, with its paths."""
    found: dict[str, tuple[str, ...]] = {}
    for name, paths in OOM_DAEMON_PATHS.items():
        present = tuple(os.path.join(fs_root, p) for p in paths
                        if os.path.isfile(os.path.join(fs_root, p)))
        if present:
            found[name] = present
    return found
