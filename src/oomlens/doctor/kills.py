"""Checks of the OOM kills that already happened: the kernel's counter, and the recent
kills in the history store or the kernel log with their main finding."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime

from oomlens.doctor.facts import Facts, RecentKill
from oomlens.doctor.finding import Evidence, Finding, Severity

RECENT_SECONDS = 7 * 24 * 3600


def check_oom_kills(f: Facts) -> list[Finding]:
    kills = f.oom_kills_since_boot
    if not kills:
        return []
    return [Finding(
        "oom-kills", Severity.WARNING, f"{kills} OOM kill(s) since boot",
        (Evidence(f"{f.proc('vmstat')} oom_kill", str(kills)),),
        "/proc/vmstat oom_kill counts every kill of the kernel's OOM killer, system-wide and "
        "in memory cgroups (mm/oom_kill.c: __oom_kill_process()), also those whose report "
        "the log has lost.",
        "`oomlens report` finds and explains each one still in the logs; `oomlens watch` "
        "keeps a history of them from now on.")]


def _when(kill: RecentKill) -> str:
    if kill.time is None:
        return "time unknown"
    return datetime.fromtimestamp(kill.time, UTC).isoformat(timespec="seconds")


def _describe(kill: RecentKill) -> str:
    cause = f"; {kill.main_finding}: {kill.message}" if kill.main_finding else ""
    return f"{_when(kill)} {kill.scope or 'unknown scope'}, victim {kill.victim}{cause}"


def check_recent_kills(f: Facts) -> list[Finding]:
    if f.kills is None or not f.kills.events:
        return []
    events = f.kills.events
    recent = [k for k in events if k.time is None or f.now - k.time <= RECENT_SECONDS]
    causes = Counter(k.main_finding for k in events if k.main_finding)
    common = ", ".join(f"{code} ({n})" for code, n in causes.most_common(3))
    last = events[-1]
    return [Finding(
        "recent-oom-kills", Severity.WARNING if recent else Severity.INFO,
        f"{len(events)} OOM kill(s) in the {f.kills.source}; the last: {last.victim} "
        f"({_when(last)})" + (f"; main findings: {common}" if common else ""),
        tuple(Evidence(k.ref, _describe(k)) for k in events),
        "Each kill's report says what ran out and why (a memory cgroup at its limit, a "
        "leak, a protected process that left nothing else to kill); a cause that repeats "
        "will kill again.",
        "`oomlens history show ID` (store) or `oomlens report --details` (kernel log) for "
        "the full analysis; each finding there has its own fix.")]


KILL_CHECKS = (check_oom_kills, check_recent_kills)
