"""The policy file: ordered rules that set `oom_score_adj` on the processes they match.

Reference (`/etc/oomlens/policy.toml`)::

    # optional
    [limits]
    max_protected_share = "30%"   # refuse to protect (-1000) a process holding more than this
                                  # share of RAM+swap, unless the rule has force = true
    min_killable_share = "50%"    # refuse when protected processes together would leave less
                                  # than this share of memory killable

    [[rule]]
    name = "ssh"        # optional, default "rule N" (1-based); must be unique
    comm = "sshd"       # matchers, each a string or a list of strings (any one matches):
                        #   comm     command name, exact; the kernel keeps 15 bytes of it
                        #   cmdline  ONE regular expression, searched in the command line
                        #   exe      absolute path of the binary; " (deleted)" is ignored
                        #   user     user name or integer uid
                        #   cgroup   a path (that cgroup and every one below it) or a glob
                        #   unit     systemd unit; "sshd" means "sshd.service"
                        # every matcher given must match; at least one is required
    protect = true      # exactly one action: protect = true (-1000), score = N (-1000..1000),
                        #   prefer = N (1..1000) or prefer = true (500)
    force = false       # optional

Shares are a percentage ("30%", "30 %") or a fraction (0.3); `max_protected_share`
is in (0, 1], `min_killable_share` in [0, 1). Rules are tried in file order and
the first match wins, so specific rules go before general ones.

Every error names the file, the line and the rule. tomllib reports values without
positions, so the line of a semantic error is found by scanning the text: the Nth
`[[rule]]` header, then the line assigning the offending key within that rule,
else the header itself (inline tables and dotted keys land there).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

from oomlens.errors import UsageError
from oomlens.kernel.task import OOM_SCORE_ADJ_MAX, OOM_SCORE_ADJ_MIN
from oomlens.policy.match import (
    Matchers,
    Need,
    Subject,
    cgroup_problem,
    comm_problem,
    compile_cmdline,
    exe_problem,
    unit_problem,
)
from oomlens.policy.tomltext import TomlLayout, shown, syntax_error_line

DEFAULT_POLICY_PATH = "/etc/oomlens/policy.toml"
PROTECT_SCORE = OOM_SCORE_ADJ_MIN
PREFER_DEFAULT = 500
PREFER_MIN = 1

MATCHER_KEYS = ("comm", "cmdline", "exe", "user", "cgroup", "unit")
ACTION_KEYS = ("protect", "score", "prefer")
RULE_KEYS = ("name", *MATCHER_KEYS, *ACTION_KEYS, "force")
LIMIT_KEYS = ("max_protected_share", "min_killable_share")
_SHARE_BOUNDS = {"max_protected_share": (False, True), "min_killable_share": (True, False)}
"""Per limit: whether 0 is allowed, whether 1 is allowed."""

_Table = dict[str, object]
_Problem = Callable[[str], str | None]
"""Why a matcher value can never match, or None when it can."""

_PERCENT = re.compile(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*%\s*")
_FRACTION = re.compile(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*")


class Action(StrEnum):
    """What a rule does to the processes it matches."""

    PROTECT = "protect"
    SCORE = "score"
    PREFER = "prefer"


class PolicyError(UsageError):
    """The policy file is not valid; the message names file, line and rule."""

    def __init__(self, path: str, line: int | None, rule: str | None, message: str) -> None:
        self.path = path
        self.line = line
        self.rule = rule
        self.message = message
        where = path if line is None else f"{path}:{line}"
        named = "" if rule is None else f"rule {quote_name(rule)}: "
        super().__init__(f"{where}: {named}{message}")


@dataclass(frozen=True, slots=True)
class Limits:
    """How much a policy may protect, checked before any rule is applied.

    Protecting a process that holds most of memory leaves the OOM killer nothing
    to kill but everything else; these caps refuse such plans up front. A plain
    value: `parse_policy` checks the bounds (`check_share_bounds`), and so should
    any other caller that takes them from a user.
    """

    max_protected_share: float = 0.30
    min_killable_share: float = 0.50


@dataclass(frozen=True, slots=True)
class Rule:
    """One `[[rule]]`: which processes, and the oom_score_adj they get."""

    name: str
    line: int
    matchers: Matchers
    action: Action
    oom_score_adj: int
    force: bool = False

    def describe(self, path: str) -> str:
        """`rule "ssh" (/etc/oomlens/policy.toml:3)`, for plans and journal entries."""
        return f"rule {quote_name(self.name)} ({path}:{self.line})"


@dataclass(frozen=True, slots=True)
class Policy:
    """A parsed policy file: its rules in file order and its limits."""

    path: str
    rules: tuple[Rule, ...]
    limits: Limits

    def first_match(self, subject: Subject) -> Rule | None:
        """The first rule that matches `subject`, in file order."""
        return next((rule for rule in self.rules if rule.matchers.matches(subject)), None)

    def needs(self) -> Need:
        """Every extra read any rule needs, so one scan serves them all."""
        need = Need.NONE
        for rule in self.rules:
            need |= rule.matchers.needs()
        return need


def quote_name(name: str) -> str:
    """A rule name in double quotes, with control characters escaped."""
    return json.dumps(name, ensure_ascii=False)


def parse_share(value: object, key: str) -> float:
    """A share of memory, from "30%", "30 %", "0.3" or the number 0.3, as a fraction.

    The policy file and the CLI options take the same spellings; `key` names the
    setting in the ValueError message. Only 0..1 passes; `check_share_bounds` adds
    the bounds of a particular limit.
    """
    share = _share_value(value)
    if share is None:
        raise ValueError(
            f'{key} must be a percentage such as "30%" or a fraction such as 0.3, '
            f"not {shown(value)}"
        )
    if share > 1:
        hint = "" if isinstance(value, str) and "%" in value else (
            f' (a number without % is a fraction: for {share:g} percent write "{share:g}%")'
        )
        raise ValueError(f"{key} must be at most 100%, not {shown(value)}{hint}")
    if share < 0:
        raise ValueError(f"{key} must not be negative, not {shown(value)}")
    return share


def _share_value(value: object) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, str):
        if percent := _PERCENT.fullmatch(value):
            return float(percent[1]) / 100
        if fraction := _FRACTION.fullmatch(value):
            return float(fraction[1])
    return None


def check_share_bounds(key: str, share: float) -> None:
    """ValueError unless `share` lies in the range limit `key` allows.

    A zero cap on protection would refuse every protect rule, and requiring all
    memory to stay killable would too: both are mistakes, not policies.
    """
    zero_ok, one_ok = _SHARE_BOUNDS[key]
    low_ok = share >= 0 if zero_ok else share > 0
    high_ok = share <= 1 if one_ok else share < 1
    if not (low_ok and high_ok):
        low = "at least" if zero_ok else "more than"
        high = "at most" if one_ok else "less than"
        raise ValueError(f"{key} must be {low} 0% and {high} 100%, not {share * 100:g}%")


def parse_policy(text: str, path: str) -> Policy:
    """The policy in `text` (read from `path`, which errors name); PolicyError if invalid.

    All or nothing: a policy with one bad rule is refused whole, since applying the
    rest would protect or expose processes the author did not intend.
    """
    data = _load_toml(text, path)
    layout = TomlLayout.of(text)
    _check_top_level(data, path, layout)
    limits_line = layout.table_line("limits") or layout.key_line("limits", 0)
    limits = _parse_limits(data.get("limits"), _Where(path, layout, limits_line))
    rules = _parse_rules(_rule_tables(data, path, layout), path, layout)
    return Policy(path, rules, limits)


def _load_toml(text: str, path: str) -> _Table:
    import tomllib  # here: the guard and enforcer without a policy file never need it

    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        line, message = syntax_error_line(str(error), text)
        raise PolicyError(path, line, None, f"invalid TOML: {message}") from None


def _check_top_level(data: _Table, path: str, layout: TomlLayout) -> None:
    for key, value in data.items():
        if key in ("limits", "rule"):
            continue
        line = layout.table_line(key) or layout.key_line(key, 0)
        kind = "table" if isinstance(value, dict) else "top-level key"
        raise PolicyError(
            path, line, None, f"unknown {kind} {key!r} (expected [limits] and [[rule]] tables)"
        )


def _rule_tables(data: _Table, path: str, layout: TomlLayout) -> list[_Table]:
    value = data.get("rule", [])
    line = layout.table_line("rule") or layout.key_line("rule", 0)
    if isinstance(value, dict):
        raise PolicyError(path, line, None, "write each rule as [[rule]], not [rule]")
    if not isinstance(value, list) or not all(isinstance(table, dict) for table in value):
        raise PolicyError(
            path, line, None, "'rule' must be an array of tables: start each rule with [[rule]]"
        )
    return value


def _parse_limits(value: object, where: _Where) -> Limits:
    if value is None:
        return Limits()
    if not isinstance(value, dict):
        raise where.error(f"'limits' must be a table ([limits]), not {shown(value)}")
    _check_keys(value, LIMIT_KEYS, where)
    shares: dict[str, float] = {}
    for key, raw in value.items():
        try:
            shares[key] = parse_share(raw, key)
            check_share_bounds(key, shares[key])
        except ValueError as error:
            raise where.error(str(error), key) from None
    return Limits(**shares)


def _parse_rules(tables: list[_Table], path: str, layout: TomlLayout) -> tuple[Rule, ...]:
    headers = layout.array_headers("rule")
    inline_line = layout.key_line("rule", 0) or 1
    rules: list[Rule] = []
    lines_by_name: dict[str, int] = {}
    for index, table in enumerate(tables):
        line = headers[index] if index < len(headers) else inline_line
        label = _rule_label(table, index + 1)
        where = _Where(path, layout, line, label)
        rule = _parse_rule(table, label, line, where)
        if rule.name in lines_by_name:
            raise where.error(
                f"duplicate name: rule {quote_name(rule.name)} is already defined at line "
                f"{lines_by_name[rule.name]}",
                "name",
            )
        lines_by_name[rule.name] = line
        rules.append(rule)
    return tuple(rules)


def _rule_label(table: _Table, number: int) -> str:
    """The rule's name, or `rule N` when it has none (or none usable)."""
    name = table.get("name")
    return name if isinstance(name, str) and name else f"rule {number}"


def _parse_rule(table: _Table, label: str, line: int, where: _Where) -> Rule:
    _check_keys(table, RULE_KEYS, where)
    name = table.get("name")
    if name is not None and not (isinstance(name, str) and name):
        raise where.error(f"'name' must be a non-empty string, not {shown(name)}", "name")
    matchers = _parse_matchers(table, where)
    if matchers.is_empty():
        raise where.error("matches every process: add comm, cmdline, exe, user, cgroup or unit")
    action, oom_score_adj = _parse_action(table, where)
    force = table.get("force", False)
    if not isinstance(force, bool):
        raise where.error(f"'force' must be true or false, not {shown(force)}", "force")
    return Rule(label, line, matchers, action, oom_score_adj, force)


def _check_keys(table: _Table, allowed: tuple[str, ...], where: _Where) -> None:
    for key in table:
        if key not in allowed:
            raise where.error(f"unknown key {key!r} (expected one of: {', '.join(allowed)})", key)


def _parse_matchers(table: _Table, where: _Where) -> Matchers:
    return Matchers(
        names=_strings(table, "comm", where, comm_problem),
        cmdline=_cmdline(table, where),
        exes=_strings(table, "exe", where, exe_problem),
        users=_strings(table, "user", where, None, uids=True),
        cgroups=_strings(table, "cgroup", where, cgroup_problem),
        units=_strings(table, "unit", where, unit_problem),
    )


def _strings(
    table: _Table, key: str, where: _Where, problem: _Problem | None, *, uids: bool = False
) -> tuple[str, ...]:
    """The values of a matcher key, a single value or a list, each checked."""
    value = table.get(key)
    if value is None:
        return ()
    items = value if isinstance(value, list) else [value]
    if not items:
        raise where.error(f"'{key}' is an empty list: give at least one value or remove it", key)
    return tuple(_string_item(item, key, where, problem, uids) for item in items)


def _string_item(item: object, key: str, where: _Where, check: _Problem | None, uids: bool) -> str:
    if uids and isinstance(item, int) and not isinstance(item, bool):
        if item < 0:
            raise where.error(f"'{key}' uid must not be negative, not {item}", key)
        return str(item)
    if not isinstance(item, str):
        kinds = "a string, an integer uid" if uids else "a string"
        raise where.error(f"'{key}' must be {kinds} or a list of them, not {shown(item)}", key)
    reason = f"'{key}' has an empty string" if not item else check(item) if check else None
    if reason is not None:
        raise where.error(reason, key)
    return item


def _cmdline(table: _Table, where: _Where) -> re.Pattern[str] | None:
    value = table.get("cmdline")
    if value is None:
        return None
    if not isinstance(value, str):
        raise where.error(
            "'cmdline' must be one regular expression as a string (join alternatives with |), "
            f"not {shown(value)}",
            "cmdline",
        )
    if not value:
        raise where.error("'cmdline' is empty, which matches every command line", "cmdline")
    try:
        return compile_cmdline(value)
    except UsageError as error:
        raise where.error(str(error), "cmdline") from None


def _parse_action(table: _Table, where: _Where) -> tuple[Action, int]:
    present = [key for key in table if key in ACTION_KEYS]
    if not present:
        raise where.error(
            "no action: add protect = true, score = N (-1000..1000) or prefer = N (1..1000)"
        )
    if len(present) > 1:
        raise where.error(f"{len(present)} actions ({', '.join(present)}): keep one", present[1])
    action = Action(present[0])
    try:
        return action, _action_score(action, table[action])
    except ValueError as error:
        raise where.error(str(error), action) from None


def _action_score(action: Action, value: object) -> int:
    """The oom_score_adj an action's value stands for; ValueError outside its range."""
    if action is Action.PROTECT:
        if value is True:
            return PROTECT_SCORE
        raise ValueError(f"'protect' must be true (or remove the key), not {shown(value)}")
    if action is Action.PREFER and value is True:
        return PREFER_DEFAULT
    low = OOM_SCORE_ADJ_MIN if action is Action.SCORE else PREFER_MIN
    if (isinstance(value, bool) or not isinstance(value, int)
            or not low <= value <= OOM_SCORE_ADJ_MAX):
        also = " or true" if action is Action.PREFER else ""
        raise ValueError(
            f"'{action}' must be an integer from {low} to {OOM_SCORE_ADJ_MAX}{also}, "
            f"not {shown(value)}"
        )
    return value


@dataclass(frozen=True, slots=True)
class _Where:
    """The table an error is about: its line, to fall back on, and its rule name."""

    path: str
    layout: TomlLayout
    line: int | None
    rule: str | None = None

    def error(self, message: str, key: str | None = None) -> PolicyError:
        """A PolicyError at the line assigning `key` in this table, else at the table."""
        found = self.layout.key_line(key, self.line) if key and self.line else None
        return PolicyError(self.path, found or self.line, self.rule, message)
