"""The plan file: TOML a person reviews (and may cut items from) before `oomlens
apply`. `format_plan` writes it, `parse_plan` reads it back and refuses, naming the
file and the item, anything apply could not carry out safely: an unknown schema or
kind, a plan id that is not a plain file name part, a sysctl name that is not one.

Strings are TOML basic strings (JSON's escapes are a subset of TOML's), file contents
multi-line literal strings where they can be, so a drop-in reads as it will be written.
A file that did not exist has no `before` key. Pure.
"""

from __future__ import annotations

import json
import re
import tomllib
from collections.abc import Callable
from typing import Any, TypeVar

from oomlens.doctor.plan import PLAN_SCHEMA, ItemKind, Plan, PlanItem
from oomlens.errors import UsageError

_PLAN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
_SYSCTL_NAME = re.compile(r"^(vm|kernel)(\.[a-z0-9_]+)+$")
_LITERAL_OK = re.compile(r"^[^\x00-\x08\x0b-\x1f\x7f]*$")
_HEADER = """\
# oomlens doctor plan: review it, delete the items you do not want, then
#   oomlens apply {path} --dry-run
#   oomlens apply {path}
# Each item records the value found when the plan was made ("before"; no `before`
# key: the file did not exist). apply refuses the whole plan if any of them changed.
# Afterwards `oomlens undo --plan {id}` restores every value. Items with
# `manual = true` are for you to carry out: apply lists them and never does them.
"""
T = TypeVar("T")


def _basic(text: str) -> str:
    return json.dumps(text, ensure_ascii=False).replace("\x7f", "\\u007f")


def _string(text: str) -> str:
    if "\n" in text.rstrip("\n") and "'''" not in text and not text.endswith("'") \
            and _LITERAL_OK.match(text):
        return f"'''\n{text}'''"
    return _basic(text)


def _value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, tuple):
        return "[" + ", ".join(_basic(v) for v in value) + "]"
    return _string(str(value))


def format_plan(plan: Plan, path: str) -> str:
    lines = [_HEADER.format(path=path, id=plan.id), f"schema = {_basic(PLAN_SCHEMA)}"]
    lines += [f"{key} = {_basic(getattr(plan, key))}"
              for key in ("id", "created", "host", "boot_id", "kernel")]
    for item in plan.items:
        lines += ["", "[[item]]", f"kind = {_basic(item.kind.value)}",
                  f"target = {_basic(item.target)}"]
        fields: list[tuple[str, object]] = [
            ("before", item.before), ("after", item.after), ("finding", item.finding),
            ("why", item.why), ("manual", item.manual or None), ("pid", item.pid),
            ("start_time_ticks", item.start_time_ticks), ("comm", item.comm or None),
            ("cmdline", item.cmdline or None), ("unit", item.unit),
            ("commands", item.commands or None)]
        lines += [f"{key} = {_value(value)}" for key, value in fields if value is not None]
    return "\n".join(lines) + "\n"


class _Reader:
    """Typed access to one table, every error naming the file and where in it."""

    def __init__(self, table: dict[str, Any], path: str, where: str) -> None:
        self.table, self.path, self.where = table, path, where

    def error(self, message: str) -> UsageError:
        return UsageError(f"{self.path}: {self.where}: {message}")

    def get(self, key: str, kind: type[T], required: bool = True) -> T | None:
        value = self.table.get(key)
        if value is None:
            if required:
                raise self.error(f"missing `{key}`")
            return None
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise self.error(f"`{key}` must be a {kind.__name__}, not {value!r}")
        return value

    def text(self, key: str) -> str:
        value = self.get(key, str)
        assert value is not None
        return value


def parse_plan(text: str, path: str) -> Plan:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise UsageError(f"{path}: not a plan file: {err}") from None
    top = _Reader(data, path, "plan")
    if data.get("schema") != PLAN_SCHEMA:
        raise top.error(f"schema must be {PLAN_SCHEMA!r}, not {data.get('schema')!r}")
    plan_id = top.text("id")
    if not _PLAN_ID.match(plan_id):
        raise top.error(f"id {plan_id!r} must be letters, digits, '-' and '_'")
    items = data.get("item", [])
    if not isinstance(items, list) or not all(isinstance(t, dict) for t in items):
        raise top.error("`item` must be an array of tables ([[item]])")
    return Plan(plan_id, top.text("created"), top.text("host"), top.text("boot_id"),
                top.text("kernel"),
                tuple(_item(_Reader(t, path, f"item {n}")) for n, t in enumerate(items, 1)))


def _item(r: _Reader) -> PlanItem:
    kind_text = r.text("kind")
    try:
        kind = ItemKind(kind_text)
    except ValueError:
        raise r.error(f"unknown kind {kind_text!r}") from None
    target = r.text("target")
    commands = r.get("commands", list, required=False) or []
    if not all(isinstance(c, str) for c in commands):
        raise r.error("`commands` must be strings")
    item = PlanItem(
        kind, target, r.get("before", str, required=False), r.get("after", str, required=False),
        r.text("why"), r.text("finding"), bool(r.get("manual", bool, required=False)),
        r.get("pid", int, required=False), r.get("start_time_ticks", int, required=False),
        r.get("comm", str, required=False) or "", r.get("cmdline", str, required=False) or "",
        r.get("unit", str, required=False), tuple(commands))
    _check(item, r)
    return item


_Check = Callable[[PlanItem], str | None]


def _sysctl(item: PlanItem) -> str | None:
    if not _SYSCTL_NAME.match(item.target):
        return f"{item.target!r} is not a vm. or kernel. sysctl name"
    if item.after is None or not item.after.strip() or "\n" in item.after:
        return "a sysctl needs a one-line `after` value"
    return None


def _adj(item: PlanItem) -> str | None:
    if item.pid is None or item.start_time_ticks is None or item.target != str(item.pid):
        return "an oom_score_adj item needs `pid` (= target) and `start_time_ticks`"
    for value in (item.before, item.after):
        if value is None or not value.lstrip("-").isdigit() or not -1000 <= int(value) <= 1000:
            return "`before` and `after` must be oom_score_adj values (-1000..1000)"
    return None


def _file(item: PlanItem) -> str | None:
    if not item.target.startswith("/"):
        return "a file's target must be an absolute path"
    if item.after is None:
        return "a file item needs `after` (the contents)"
    if item.kind is ItemKind.DROPIN and not item.unit:
        return "a drop-in item needs `unit`"
    if item.kind is ItemKind.POLICY and item.before is not None and not item.manual:
        return "oomlens writes a policy file only where there is none (`manual = true` here)"
    return None


def _swapfile(item: PlanItem) -> str | None:
    return None if item.manual else "a swap file item is manual: oomlens does not create swap"


_CHECKS: dict[ItemKind, _Check] = {
    ItemKind.SYSCTL: _sysctl, ItemKind.OOM_SCORE_ADJ: _adj, ItemKind.DROPIN: _file,
    ItemKind.POLICY: _file, ItemKind.SWAPFILE: _swapfile,
}


def _check(item: PlanItem, r: _Reader) -> None:
    problem = _CHECKS[item.kind](item)
    if problem is not None:
        raise r.error(problem)
