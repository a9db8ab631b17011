"""From findings to a plan: each proposed change becomes an item with the value found
now ("before"), the new value ("after") and why; and the rule that refuses a plan whose
before values no longer hold. Pure: file contents arrive as a mapping, read by the
caller (`paths_to_read` says which).

Item kinds: `sysctl` (live in /proc/sys and, persisted, in oomlens's own
`/etc/sysctl.d/90-oomlens-<plan>.conf`), `oom_score_adj` (a running process, by pid and
start time), `dropin` (a unit's `OOMScoreAdjust=` drop-in), `policy` (rules for
`oomlens enforce`, a new policy file) and `swapfile`. An item marked `manual` is for a
person to carry out: apply lists it and never does it (a swap file always; policy rules
when a policy file exists already, which oomlens does not edit).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from oomlens.doctor.facts import Facts
from oomlens.doctor.finding import Finding, ProtectService, SetScoreAdj, SetSysctl
from oomlens.policy.dropin import checked_unit, dropin_path, dropin_text
from oomlens.units import format_bytes

PLAN_SCHEMA = "oomlens.plan/1"


class ItemKind(StrEnum):
    SYSCTL = "sysctl"
    OOM_SCORE_ADJ = "oom_score_adj"
    DROPIN = "dropin"
    POLICY = "policy"
    SWAPFILE = "swapfile"


FILE_KINDS = (ItemKind.DROPIN, ItemKind.POLICY)


@dataclass(frozen=True, slots=True)
class PlanItem:
    """One change. `target` is the sysctl's name, the pid (decimal) or the file's path;
    `before`/`after` the value as text (a file's whole contents; None: no file)."""

    kind: ItemKind
    target: str
    before: str | None
    after: str | None
    why: str
    finding: str
    manual: bool = False
    pid: int | None = None
    start_time_ticks: int | None = None
    comm: str = ""
    cmdline: str = ""
    unit: str | None = None
    commands: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Plan:
    id: str
    created: str  # ISO 8601, UTC
    host: str
    boot_id: str
    kernel: str
    items: tuple[PlanItem, ...]

    @property
    def sysctl_file_name(self) -> str:
        """oomlens's own file in /etc/sysctl.d for this plan's sysctls."""
        return f"90-oomlens-{self.id}.conf"

    def sysctls(self) -> list[PlanItem]:
        return [i for i in self.items if i.kind is ItemKind.SYSCTL and not i.manual]


@dataclass(frozen=True, slots=True)
class SwapFile:
    """`--swap-file`: where and how big; `free_bytes` on its file system (None: unknown)."""

    path: str
    size_bytes: int
    free_bytes: int | None


@dataclass(frozen=True, slots=True)
class PlanContext:
    id: str
    created: str
    host: str
    boot_id: str
    systemd_dir: str
    policy_path: str
    swap_file: SwapFile | None = None
    files: Mapping[str, str | None] = field(default_factory=dict)


def _dropin_target(ctx: PlanContext, proposal: ProtectService) -> str | None:
    return None if proposal.unit is None else dropin_path(ctx.systemd_dir,
                                                          checked_unit(proposal.unit))


def paths_to_read(findings: Sequence[Finding], ctx: PlanContext) -> list[str]:
    """The files whose current contents `build_plan` needs in `ctx.files`."""
    paths: dict[str, None] = {}
    for finding in findings:
        for proposal in finding.proposals:
            if isinstance(proposal, ProtectService):
                paths[_dropin_target(ctx, proposal) or ctx.policy_path] = None
    return list(paths)


def build_plan(findings: Sequence[Finding], facts: Facts, ctx: PlanContext) -> Plan:
    """An item per proposed change (the first finding to propose a target wins), then
    the policy rules of services without a unit, then the swap file if asked for."""
    items: dict[tuple[ItemKind, str], PlanItem] = {}
    rules: list[tuple[ProtectService, str]] = []
    for finding in findings:
        why = f"{finding.code}: {finding.summary}"
        for proposal in finding.proposals:
            if isinstance(proposal, ProtectService) and proposal.unit is None:
                rules.append((proposal, why))
                continue
            item = _item(proposal, why, finding.code, facts, ctx)
            if item is not None and item.before != item.after:
                items.setdefault((item.kind, item.target), item)
    out = list(items.values())
    if rules:
        out.append(_policy_item(rules, ctx))
    if ctx.swap_file is not None:
        out.append(swapfile_item(ctx.swap_file, facts))
    return Plan(ctx.id, ctx.created, ctx.host, ctx.boot_id, facts.kernel_release, tuple(out))


def _item(proposal: SetSysctl | SetScoreAdj | ProtectService, why: str, code: str,
          facts: Facts, ctx: PlanContext) -> PlanItem | None:
    if isinstance(proposal, SetSysctl):
        value = facts.sysctls.get(proposal.name)
        return PlanItem(ItemKind.SYSCTL, proposal.name, None if value is None else str(value),
                        proposal.value, why, code)
    if isinstance(proposal, SetScoreAdj):
        proc = next((p for p in facts.processes if p.pid == proposal.pid
                     and p.start_time_ticks == proposal.start_time_ticks), None)
        if proc is None:
            return None
        return PlanItem(ItemKind.OOM_SCORE_ADJ, str(proposal.pid), str(proc.task.oom_score_adj),
                        str(proposal.value), why, code, pid=proposal.pid,
                        start_time_ticks=proposal.start_time_ticks, comm=proposal.comm,
                        cmdline=proposal.cmdline)
    path = _dropin_target(ctx, proposal)
    assert path is not None and proposal.unit is not None
    unit = checked_unit(proposal.unit)
    return PlanItem(ItemKind.DROPIN, path, ctx.files.get(path), dropin_text(unit, proposal.value),
                    why, code, unit=unit)


def policy_rules_text(rules: Sequence[ProtectService]) -> str:
    """`[[rule]]` tables for policy/rules.py, one per service (names are unique)."""
    out = []
    for rule in rules:
        out.append(f"[[rule]]\nname = {json.dumps(rule.label + ' (oomlens doctor)')}\n"
                   f"comm = [{', '.join(json.dumps(c) for c in rule.comms)}]\n"
                   f"score = {rule.value}\n")
    return "\n".join(out)


def _policy_item(rules: list[tuple[ProtectService, str]], ctx: PlanContext) -> PlanItem:
    unique = list({r.label: r for r, _ in rules}.values())
    before = ctx.files.get(ctx.policy_path)
    body = policy_rules_text(unique)
    why = "; ".join(dict.fromkeys(w for _, w in rules))
    if before is not None:
        return PlanItem(ItemKind.POLICY, ctx.policy_path, before, body, why, "unprotected-service",
                        manual=True, commands=(
                            f"add these rules to {ctx.policy_path} (first match wins: before "
                            "broader rules), then reload the enforcer: `kill -HUP` it",))
    header = (f"# Written by oomlens (plan {ctx.id}): rules the doctor proposed.\n"
              f"# `oomlens undo --plan {ctx.id}` removes this file. `oomlens enforce` applies "
              "it to every\n# process and each new one (contrib/oomlens-enforce.service).\n\n")
    return PlanItem(ItemKind.POLICY, ctx.policy_path, None, header + body, why,
                    "unprotected-service")


def swapfile_item(swap: SwapFile, facts: Facts) -> PlanItem:
    """Always manual: see the item's `why`."""
    directory = os.path.dirname(swap.path) or "/"
    free = "" if swap.free_bytes is None else (
        f" {directory} has {format_bytes(swap.free_bytes)} free"
        + (": not enough." if swap.free_bytes < swap.size_bytes else "."))
    have = facts.meminfo.swap_total_kib
    now = f"{format_bytes(have * 1024)} of swap now" if have else "no swap now"
    return PlanItem(
        ItemKind.SWAPFILE, swap.path, None, str(swap.size_bytes),
        f"{now}; a {format_bytes(swap.size_bytes)} swap file lets rarely used "
        "anonymous memory leave RAM before the OOM killer runs. oomlens does not create it: "
        "swapon changes every OOM domain's totalpages at once, swapoff (the way back) can "
        "itself run the machine out of memory, and the boot-time entry belongs in /etc/fstab, "
        f"which oomlens does not edit.{free}",
        "no-swap", manual=True, commands=(
            f"fallocate -l {swap.size_bytes} {swap.path}", f"chmod 600 {swap.path}",
            f"mkswap {swap.path}", f"swapon {swap.path}",
            f"echo '{swap.path} none swap defaults 0 0' >> /etc/fstab"))


def shown(value: str | None) -> str:
    if value is None:
        return "absent"
    return value if "\n" not in value.strip() else f"{len(value.encode())} bytes of text"


def drift(item: PlanItem, current: str | None) -> str | None:
    """Why `item` cannot be applied as planned (its before value changed), or None."""
    if item.manual or current == item.before:
        return None
    return (f"{item.kind.value} {item.target}: planned from {shown(item.before)}, "
            f"now {shown(current)}")
