"""doctor/kills.py: the kernel's kill counter, and recent kills (store or kernel log)
with their main findings, recent ones a warning, old ones info."""

from __future__ import annotations

import dataclasses

from fakemachine import NOW, FakeMachine, only

from oomlens.doctor.facts import Kills, RecentKill
from oomlens.doctor.finding import Severity
from oomlens.doctor.kills import check_oom_kills, check_recent_kills

DAY = 86400.0
LIMIT = RecentKill(NOW - 2 * DAY, "java (4242)", "memcg", "memcg_limit",
                   "/app reached its memory limit of 1.0 GiB", "history #7")
LEAK = RecentKill(NOW - DAY, "node (77)", "global", "leak", "node grew by 2 GiB", "history #9")


def test_counter_since_boot(machine: FakeMachine) -> None:
    assert check_oom_kills(machine.facts(oom_kills=0)) == []
    finding = only(check_oom_kills(machine.facts(oom_kills=12)), "oom-kills")
    assert finding.severity is Severity.WARNING
    assert finding.summary == "12 OOM kill(s) since boot"
    assert [(e.source, e.value) for e in finding.evidence] == [
        (f"{machine.proc}/vmstat oom_kill", "12")]


def test_recent_kills_name_the_last_and_the_causes(machine: FakeMachine) -> None:
    kills = Kills("history store sqlite:///var/lib/oomlens/events.sqlite", (LIMIT, LIMIT, LEAK))
    facts = dataclasses.replace(machine.facts(), kills=kills)
    finding = only(check_recent_kills(facts), "recent-oom-kills")
    assert finding.severity is Severity.WARNING
    assert finding.summary == (
        "3 OOM kill(s) in the history store sqlite:///var/lib/oomlens/events.sqlite; the last: "
        "node (77) (2025-06-14T15:06:40+00:00); main findings: memcg_limit (2), leak (1)")
    assert finding.evidence[2].source == "history #9"
    assert finding.evidence[2].value == ("2025-06-14T15:06:40+00:00 global, victim node (77); "
                                         "leak: node grew by 2 GiB")


def test_old_kills_are_info_and_none_is_nothing(machine: FakeMachine) -> None:
    old = dataclasses.replace(LEAK, time=NOW - 30 * DAY)
    facts = dataclasses.replace(machine.facts(), kills=Kills("kernel log /dev/kmsg", (old,)))
    assert only(check_recent_kills(facts), "recent-oom-kills").severity is Severity.INFO
    untimed = dataclasses.replace(old, time=None, main_finding=None)
    facts = dataclasses.replace(facts, kills=Kills("kernel log /dev/kmsg", (untimed,)))
    finding = only(check_recent_kills(facts), "recent-oom-kills")
    assert finding.severity is Severity.WARNING  # in the ring buffer: since this boot
    assert finding.evidence[0].value == "time unknown global, victim node (77)"
    empty = dataclasses.replace(facts, kills=Kills("kernel log /dev/kmsg", (), "denied"))
    assert check_recent_kills(empty) == []
