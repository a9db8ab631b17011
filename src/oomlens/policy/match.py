"""Which processes a selector or a policy rule names: matchers over plain values.

The shell reads `/proc/<pid>/stat` and `status` for every process; anything else
(command line, exe link, cgroups) costs one more read per process, so a `Matchers`
says what it `needs` and the shell fills only those `Subject` fields. A field the
shell did not or could not read is `None`, and a matcher that needs it does not
match: a rule never applies on a guess, and a matcher never raises.
"""

from __future__ import annotations

import enum
import json
import re
from dataclasses import dataclass
from fnmatch import fnmatchcase

from oomlens.errors import UsageError

DELETED_SUFFIX = " (deleted)"
"""What the kernel appends to `/proc/<pid>/exe` once the binary was unlinked."""

UNIT_SUFFIXES = (
    ".service", ".socket", ".device", ".mount", ".automount", ".swap", ".target",
    ".path", ".timer", ".slice", ".scope",
)
"""systemd's unit types (systemd.unit(5)); a name with none of them is a service."""

COMM_MAX_BYTES = 15
"""TASK_COMM_LEN (16) less the NUL: the kernel truncates longer names."""

_GLOB_CHARS = frozenset("*?[")
_PLAIN_VALUE = re.compile(r"[\w.@:+%/*?\[\]=-]+")


class Need(enum.Flag):
    """What a matcher needs read beyond `/proc/<pid>/stat` and `status`."""

    NONE = 0
    CMDLINE = enum.auto()
    EXE = enum.auto()
    CGROUP = enum.auto()


@dataclass(frozen=True, slots=True)
class Subject:
    """One process as selectors and policy rules see it.

    `cmdline` is argv joined with spaces; `exe` is the target of `/proc/<pid>/exe`;
    `cgroups` holds the path field of each line of `/proc/<pid>/cgroup` (one on
    cgroup v2, one per hierarchy on v1); `unit` is the systemd unit of the process's
    cgroup (`system/memcg.py: systemd_unit`). `None` means not read or unreadable.
    """

    pid: int
    comm: str
    uid: int
    user: str
    cmdline: str | None = None
    exe: str | None = None
    cgroups: tuple[str, ...] | None = None
    unit: str | None = None


def unit_name(name: str) -> str:
    """`name` as a full unit name: `sshd` -> `sshd.service`.

    systemctl reads a name without a unit-type suffix as a service, so a rule says
    `unit = "sshd"` the way a user types `systemctl status sshd`.
    """
    return name if name.endswith(UNIT_SUFFIXES) else name + ".service"


def compile_cmdline(pattern: str) -> re.Pattern[str]:
    """`pattern` compiled for `re.search` on a command line; UsageError if invalid.

    One place turns a regex error into a one-line message, for `--cmd` and for the
    `cmdline` key of a policy rule alike.
    """
    try:
        return re.compile(pattern)
    except re.error as error:
        where = f" at position {error.pos}" if error.pos is not None else ""
        raise UsageError(
            f"invalid cmdline regular expression {pattern!r}: {error.msg}{where}"
        ) from None


def is_glob(pattern: str) -> bool:
    """Whether a cgroup pattern is an fnmatch glob rather than a plain path."""
    return not _GLOB_CHARS.isdisjoint(pattern)


def cgroup_matches(pattern: str, path: str) -> bool:
    """Whether one cgroup `path` falls under `pattern`.

    A plain path names a subtree (the kernel's view: a limit on `/a` covers
    `/a/b`), compared by whole components so `/a` does not take in `/ab`. A glob is
    matched case-sensitively, as cgroup names are.
    """
    if is_glob(pattern):
        return fnmatchcase(path, pattern)
    prefix = pattern.rstrip("/")
    return path == prefix or path.startswith(prefix + "/")


def exe_matches(exes: tuple[str, ...], exe: str) -> bool:
    """Whether `exe` is one of `exes`, ignoring the kernel's " (deleted)" suffix.

    A package upgrade replaces the binary under a running daemon; the daemon is
    still the program the rule names.
    """
    return exe in exes or exe.removesuffix(DELETED_SUFFIX) in exes


def comm_problem(comm: str) -> str | None:
    """Why `comm` can never match, if it cannot: the kernel truncates command names."""
    size = len(comm.encode())
    if size <= COMM_MAX_BYTES:
        return None
    kept = comm.encode()[:COMM_MAX_BYTES].decode(errors="ignore")
    return (
        f"comm {comm!r} is {size} bytes, but the kernel keeps only the first {COMM_MAX_BYTES} "
        f"(TASK_COMM_LEN), so it never matches: use {json.dumps(kept, ensure_ascii=False)}, "
        "or match the command line"
    )


def exe_problem(exe: str) -> str | None:
    """Why `exe` can never match: the kernel's exe link is always an absolute path."""
    if exe.startswith("/"):
        return None
    return f"exe {exe!r} is not an absolute path (the /proc/PID/exe link is, e.g. '/usr/sbin/sshd')"


def cgroup_problem(cgroup: str) -> str | None:
    """Why a plain cgroup path can never match: /proc/PID/cgroup paths start with '/'."""
    if cgroup.startswith("/") or is_glob(cgroup):
        return None
    return f"cgroup {cgroup!r} must start with '/' as /proc/PID/cgroup paths do, or be a glob"


def unit_problem(unit: str) -> str | None:
    """Why `unit` is no unit name: a '/' means a cgroup path was meant."""
    if "/" not in unit:
        return None
    return f"unit {unit!r} is not a unit name (for a cgroup path, use cgroup)"


@dataclass(frozen=True, slots=True)
class Matchers:
    """What a selector or rule asks of a process: every matcher set must match (AND),
    any one value within a matcher is enough (OR).

    `names` are exact comm values; `cmdline` is searched anywhere in the command
    line; `exes` are exact paths; `users` are user names or uids as text; `cgroups`
    are paths (a subtree) or globs; `units` are systemd units (`sshd` means
    `sshd.service`).
    """

    names: tuple[str, ...] = ()
    cmdline: re.Pattern[str] | None = None
    exes: tuple[str, ...] = ()
    users: tuple[str, ...] = ()
    cgroups: tuple[str, ...] = ()
    units: tuple[str, ...] = ()

    def needs(self) -> Need:
        """The extra reads `matches` depends on, so the shell skips the others."""
        need = Need.NONE
        if self.cmdline is not None:
            need |= Need.CMDLINE
        if self.exes:
            need |= Need.EXE
        if self.cgroups or self.units:
            need |= Need.CGROUP
        return need

    def is_empty(self) -> bool:
        """Whether no matcher is set (which would match every process)."""
        return not (
            self.names or self.cmdline is not None or self.exes or self.users
            or self.cgroups or self.units
        )

    def matches(self, subject: Subject) -> bool:
        """Whether `subject` satisfies every matcher that is set."""
        return (
            self._names_match(subject)
            and self._cmdline_matches(subject)
            and self._exe_matches(subject)
            and self._user_matches(subject)
            and self._cgroup_matches(subject)
            and self._unit_matches(subject)
        )

    def describe(self) -> str:
        """The matchers as one line (`comm=sshd cmdline~/x/ user=postgres`), for
        plans and the journal's cause text; odd values are quoted so a hostile comm
        cannot fake another matcher or a second line."""
        parts = [
            _describe_values("comm", self.names),
            _describe_regex(self.cmdline),
            _describe_values("exe", self.exes),
            _describe_values("user", self.users),
            _describe_values("cgroup", self.cgroups),
            _describe_values("unit", tuple(unit_name(unit) for unit in self.units)),
        ]
        return " ".join(part for part in parts if part) or "any process"

    def _names_match(self, subject: Subject) -> bool:
        return not self.names or subject.comm in self.names

    def _cmdline_matches(self, subject: Subject) -> bool:
        if self.cmdline is None:
            return True
        return subject.cmdline is not None and self.cmdline.search(subject.cmdline) is not None

    def _exe_matches(self, subject: Subject) -> bool:
        if not self.exes:
            return True
        return subject.exe is not None and exe_matches(self.exes, subject.exe)

    def _user_matches(self, subject: Subject) -> bool:
        return not self.users or subject.user in self.users or str(subject.uid) in self.users

    def _cgroup_matches(self, subject: Subject) -> bool:
        if not self.cgroups:
            return True
        if subject.cgroups is None:
            return False
        return any(
            cgroup_matches(pattern, path) for pattern in self.cgroups for path in subject.cgroups
        )

    def _unit_matches(self, subject: Subject) -> bool:
        if not self.units:
            return True
        return subject.unit is not None and any(subject.unit == unit_name(u) for u in self.units)


def quote_value(value: str) -> str:
    """`value` as is when it is plain, else as a JSON string (escaping newlines,
    quotes and other non-printables), so one described matcher stays one token."""
    if _PLAIN_VALUE.fullmatch(value):
        return value
    return json.dumps(value, ensure_ascii=not value.isprintable())


def _describe_values(key: str, values: tuple[str, ...]) -> str:
    if not values:
        return ""
    return f"{key}=" + ",".join(quote_value(value) for value in values)


def _describe_regex(pattern: re.Pattern[str] | None) -> str:
    if pattern is None:
        return ""
    text = pattern.pattern
    if text.isprintable() and " " not in text:
        return f"cmdline~/{text}/"
    return f"cmdline~{json.dumps(text, ensure_ascii=not text.isprintable())}"
