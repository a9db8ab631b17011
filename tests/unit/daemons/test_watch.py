"""`oomlens watch`'s logic without root or a kernel: a Watcher over a real SQLite store
in tmp_path with a fake clock, fed /dev/kmsg records of a real 6.18 memcg report
(the kernel's own lines, tests/unit/report/test_parser.py: HEAD_618); the lost-kill
reconciliation against /proc/vmstat oom_kill; cgroup counters (v1 flat, v2
hierarchical); and serve() driven in-process with a fake LogReader and a fake /proc.
"""

from __future__ import annotations

import os
import signal
import socket
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from daemon import signals_restored
from fakeproc import PF_RANDOMIZE, FakeProcess, write_fake_proc, write_process

from oomlens.daemons.selfcare import SELF_OOM_SCORE_ADJ, HostInfo, host_info, protect_self
from oomlens.daemons.watch import (
    LOST_GRACE,
    Watcher,
    WatchOptions,
    kernel_kill_count,
    kmsg_lines,
    serve,
    victim_cgroup_reader,
)
from oomlens.report.model import LogLine
from oomlens.store.db import EventQuery, Store, default_store_url, open_store
from oomlens.store.record import EventKind, StoredEvent
from oomlens.system.kmsg import KmsgRecord
from oomlens.system.procfs import PF_EXITING

BOOT_ID = "0f6b5c2e-7d1a-4c53-9a4e-2b8f3d1c9e77"
HOST = HostInfo("web1", BOOT_ID, 1_750_000_000.0)
KERNEL = 3  # facility 0 (kernel), level 3 (err)
USER = (1 << 3) | 3  # facility 1 (user): what a write to /dev/kmsg gets
FIRST_SEQ = 1000
FIRST_TS_US = 42_574_577

# A 6.18 memory cgroup OOM as the kernel printed it (tests/unit/report/test_parser.py:
# HEAD_618), one /dev/kmsg record per line; the last record is the kill line.
HEAD_618 = (
    "python3 invoked oom-killer: gfp_mask=0xcc0(GFP_KERNEL), order=0, oom_score_adj=0",
    "CPU: 1 UID: 0 PID: 29754 Comm: python3 Not tainted 6.18.44-fc-v509 #1 PREEMPT(none)",
    "memory: usage 403996kB, limit 403996kB, failcnt 0",
    "memory+swap: usage 403996kB, limit 403996kB, failcnt 0",
    "kmem: usage 1044kB, limit 9007199254740988kB, failcnt 0",
    "Memory cgroup stats for /oomlens-test:",
    "cache 0",
    "rss 412622848",
    "Tasks state (memory values in pages):",
    "[  pid  ]   uid  tgid total_vm      rss rss_anon rss_file rss_shmem pgtables_bytes"
    " swapents oom_score_adj name",
    "[  29752]     0 29752     5772     5020     3488     1532         0    94208        0"
    "           689 python3",
    "[  29753]     0 29753    74892    74141    72608     1533         0   643072        0"
    "             0 tmux: client",
    "oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset=/,mems_allowed=0-1,3,"
    "oom_memcg=/oomlens-test,task_memcg=/oomlens-test,task=tmux: client,pid=29753,uid=0",
    "Memory cgroup out of memory: Killed process 29753 (tmux: client) total-vm:299568kB,"
    " anon-rss:290432kB, file-rss:6132kB, shmem-rss:0kB, UID:0 pgtables:628kB oom_score_adj:0",
)
KILL_SEQ = FIRST_SEQ + len(HEAD_618) - 1
VICTIM = 29753
REAPED = "oom_reaper: reaped process 29753 (tmux: client), now anon-rss:0kB, file-rss:0kB"
# A kill whose report the kernel's rate limit suppressed: only __oom_kill_process()'s line.
LONE_KILL = ("Memory cgroup out of memory: Killed process 1001 (python3) total-vm:8000kB,"
             " anon-rss:4000kB, file-rss:0kB, shmem-rss:0kB, UID:0 pgtables:40kB oom_score_adj:0")


def records(messages: Sequence[str], *, seq: int = FIRST_SEQ, ts_us: int = FIRST_TS_US,
            facility_prio: int = KERNEL) -> list[KmsgRecord]:
    """One record per message, sequence numbers counting up from `seq`, 7 µs apart."""
    return [KmsgRecord(facility_prio, seq + i, ts_us + 7 * i, message)
            for i, message in enumerate(messages)]


def report_lines(*, seq: int = FIRST_SEQ) -> list[LogLine]:
    return kmsg_lines(records(HEAD_618, seq=seq))


def lone_kill() -> list[LogLine]:
    """LONE_KILL as the record after a minute's quiet."""
    return kmsg_lines(records([LONE_KILL], seq=5000, ts_us=FIRST_TS_US + 60_000_000))


class FakeClock:
    def __init__(self, now: float = 1_750_000_100.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Rig:
    """A real SQLite store in tmp_path, a fake clock, and what the watchers emit and log."""

    def __init__(self, tmp_path: Path) -> None:
        self.url = default_store_url(str(tmp_path / "state"))
        self.store = open_store(self.url)
        self.clock = FakeClock()
        self.emitted: list[tuple[StoredEvent, bool]] = []
        self.logged: list[dict[str, Any]] = []

    def watcher(self, victim_cgroup: Callable[[int, str], str | None] | None = None,
                host: HostInfo = HOST) -> Watcher:
        return Watcher(self.store, host, clock=self.clock,
                       emit=lambda stored, live: self.emitted.append((stored, live)),
                       log=self.logged.append, victim_cgroup=victim_cgroup)

    def all_events(self) -> list[StoredEvent]:
        return self.store.events(EventQuery())

    def emitted_keys(self) -> list[tuple[str, bool]]:
        return [(stored.record.key, live) for stored, live in self.emitted]


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    made = Rig(tmp_path)
    yield made
    made.store.close()


class TestKernelReports:
    def test_a_full_memcg_report_is_one_event_stored_at_its_kill_line(self, rig: Rig) -> None:
        watcher = rig.watcher()
        lines = report_lines()
        watcher.feed(lines[:-1], live=True)
        watcher.settle(live=True)
        assert (watcher.stored, rig.all_events(), watcher.report_open) == (0, [], True)

        watcher.feed(lines[-1:], live=True)
        assert rig.all_events() == []  # the kill line closes nothing until settle
        watcher.settle(live=True)

        (stored,) = rig.all_events()
        record = stored.record
        assert record.key == f"{BOOT_ID}:{KILL_SEQ}:{VICTIM}"
        assert record.kind == EventKind.KERNEL
        assert (record.host, record.boot_id, record.seq) == ("web1", BOOT_ID, KILL_SEQ)
        assert (record.scope, record.cgroup, record.constraint) == (
            "memcg", "/oomlens-test", "CONSTRAINT_MEMCG")
        assert (record.victim_pid, record.victim_comm, record.victim_rss_kb) == (
            VICTIM, "tmux: client", 290432 + 6132)
        assert record.complete and record.kills == 1 and not record.reaped
        assert record.main_finding == "memcg_limit"
        assert record.findings[0] == "memcg_limit"
        kill_ts_us = FIRST_TS_US + 7 * (len(HEAD_618) - 1)
        assert record.monotonic == pytest.approx(kill_ts_us / 1e6, abs=1e-9)
        assert record.time == pytest.approx(HOST.boot_time + kill_ts_us / 1e6, abs=1e-6)
        assert record.lines == HEAD_618
        assert stored.recorded_at == rig.clock.now
        assert rig.emitted_keys() == [(record.key, True)]
        assert rig.emitted[0][0].id == stored.id
        assert (watcher.stored, watcher.duplicates, watcher.report_open) == (1, 0, False)

    def test_settle_twice_stores_once(self, rig: Rig) -> None:
        watcher = rig.watcher()
        watcher.feed(report_lines(), live=True)
        watcher.settle(live=True)
        watcher.settle(live=True)
        watcher.settle(live=True, everything=True)
        assert len(rig.all_events()) == 1 and len(rig.emitted) == 1

    def test_backfill_then_a_restart_that_reads_the_same_records_adds_nothing(
            self, rig: Rig) -> None:
        first = rig.watcher()
        first.feed(report_lines(), live=False)
        first.settle(live=False, everything=True)
        assert (first.stored, first.duplicates) == (1, 0)

        restarted = rig.watcher()
        restarted.feed(report_lines(), live=False)
        restarted.settle(live=False, everything=True)
        assert (restarted.stored, restarted.duplicates) == (0, 1)
        assert len(rig.all_events()) == 1
        assert rig.emitted_keys() == [(f"{BOOT_ID}:{KILL_SEQ}:{VICTIM}", False)]

    def test_the_same_report_seen_twice_by_one_watcher_is_a_duplicate(self, rig: Rig) -> None:
        watcher = rig.watcher()
        for _ in range(2):
            watcher.feed(report_lines(), live=True)
            watcher.settle(live=True)
        assert (watcher.stored, watcher.duplicates, len(rig.all_events())) == (1, 1, 1)

    def test_a_second_kill_of_the_same_pid_later_in_the_log_is_a_new_event(
            self, rig: Rig) -> None:
        watcher = rig.watcher()
        watcher.feed(report_lines(), live=True)
        watcher.feed(report_lines(seq=FIRST_SEQ + 100), live=True)
        watcher.settle(live=True)
        assert [s.record.key for s in rig.all_events()] == [
            f"{BOOT_ID}:{KILL_SEQ}:{VICTIM}", f"{BOOT_ID}:{KILL_SEQ + 100}:{VICTIM}"]


class VictimCgroup:
    """A `victim_cgroup` reader that answers `answer` and remembers who asked."""

    def __init__(self, answer: str | None) -> None:
        self.answer = answer
        self.asked: list[tuple[int, str]] = []

    def __call__(self, pid: int, comm: str) -> str | None:
        self.asked.append((pid, comm))
        return self.answer


class TestKillLineOnly:
    """A rate-limited kill: the kernel printed only `Killed process`."""

    def test_is_one_partial_event(self, rig: Rig) -> None:
        watcher = rig.watcher()
        watcher.feed(lone_kill(), live=True)
        watcher.settle(live=True)
        (stored,) = rig.all_events()
        record = stored.record
        assert record.key == f"{BOOT_ID}:5000:1001"
        assert (record.kind, record.complete, record.kills) == (EventKind.KERNEL, False, 1)
        assert (record.victim_pid, record.victim_comm, record.victim_rss_kb) == (
            1001, "python3", 4000)
        assert record.cgroup is None
        assert record.main_finding == "ratelimited"

    def test_live_the_victims_cgroup_is_read_while_it_dies(self, rig: Rig) -> None:
        reader = VictimCgroup("/system.slice/batch.service")
        watcher = rig.watcher(reader)
        watcher.feed(lone_kill(), live=True)
        watcher.settle(live=True)
        assert reader.asked == [(1001, "python3")]
        (stored,) = rig.all_events()
        assert stored.record.cgroup == "/system.slice/batch.service"
        assert not stored.record.complete

    def test_backfilled_the_cgroup_is_not_read(self, rig: Rig) -> None:
        """While backfilling, the pid may long since name another process."""
        reader = VictimCgroup("/wrong")
        watcher = rig.watcher(reader)
        watcher.feed(lone_kill(), live=False)
        watcher.settle(live=False, everything=True)
        assert reader.asked == []
        assert rig.all_events()[0].record.cgroup is None

    def test_a_report_that_names_its_cgroup_does_not_read_the_victims(self, rig: Rig) -> None:
        reader = VictimCgroup("/wrong")
        watcher = rig.watcher(reader)
        watcher.feed(report_lines(), live=True)
        watcher.settle(live=True)
        assert reader.asked == []
        assert rig.all_events()[0].record.cgroup == "/oomlens-test"

    def test_a_victim_cgroup_reader_that_finds_nothing_leaves_it_empty(self, rig: Rig) -> None:
        watcher = rig.watcher(VictimCgroup(None))
        watcher.feed(lone_kill(), live=True)
        watcher.settle(live=True)
        assert rig.all_events()[0].record.cgroup is None


class TestReaper:
    def test_the_reaper_line_after_settle_marks_the_stored_event(self, rig: Rig) -> None:
        watcher = rig.watcher()
        watcher.feed(report_lines(), live=True)
        watcher.settle(live=True)
        (stored,) = rig.all_events()
        assert not stored.record.reaped

        watcher.feed(kmsg_lines(records([REAPED], seq=KILL_SEQ + 1)), live=True)
        watcher.settle(live=True)
        again = rig.store.get(stored.id)
        assert again is not None
        assert again.record.reaped
        assert again.record.detail["victim"]["reaped"] is True
        assert len(rig.emitted) == 1  # a mark, not a new event

    def test_a_reaper_line_read_with_the_kill_is_stored_reaped(self, rig: Rig) -> None:
        watcher = rig.watcher()
        watcher.feed(report_lines() + kmsg_lines(records([REAPED], seq=KILL_SEQ + 1)),
                     live=True)
        watcher.settle(live=True)
        assert rig.all_events()[0].record.reaped

    def test_a_reaper_line_of_another_process_marks_nothing(self, rig: Rig) -> None:
        watcher = rig.watcher()
        watcher.feed(report_lines(), live=True)
        watcher.settle(live=True)
        other = "oom_reaper: reaped process 29752 (python3), now anon-rss:0kB, file-rss:0kB"
        watcher.feed(kmsg_lines(records([other], seq=KILL_SEQ + 1)), live=True)
        watcher.settle(live=True)
        assert not rig.all_events()[0].record.reaped


class TestUserSpaceRecords:
    def test_a_forged_report_from_user_space_stores_nothing(self, rig: Rig) -> None:
        watcher = rig.watcher()
        forged = records([*HEAD_618, LONE_KILL], facility_prio=USER)
        watcher.feed(kmsg_lines(forged), live=True)
        watcher.settle(live=True, everything=True)
        watcher.check_kills(0, "nothing counted")
        assert (rig.all_events(), rig.emitted, watcher.report_open) == ([], [], False)

    def test_a_forged_kill_line_does_not_complete_the_kernels_report(self, rig: Rig) -> None:
        watcher = rig.watcher()
        head = kmsg_lines(records(HEAD_618[:-1]))
        forged = kmsg_lines(records(HEAD_618[-1:], seq=KILL_SEQ, facility_prio=USER))
        watcher.feed(head + forged, live=True)
        watcher.settle(live=True)
        assert watcher.report_open
        assert rig.all_events() == []


class TestUnfinishedReport:
    def test_stays_open_until_everything_is_settled(self, rig: Rig) -> None:
        head = HEAD_618[:HEAD_618.index("Tasks state (memory values in pages):")]
        watcher = rig.watcher()
        watcher.feed(kmsg_lines(records(head)), live=True)
        watcher.settle(live=True)
        assert watcher.report_open and rig.all_events() == []

        watcher.settle(live=True, everything=True)
        assert not watcher.report_open
        (stored,) = rig.all_events()
        record = stored.record
        assert (record.kind, record.victim_pid, record.complete, record.kills) == (
            EventKind.KERNEL, None, False, 0)
        assert record.detail["victim"] is None
        assert "header" not in record.detail["missing"]
        assert record.detail["missing"] == ["task_table", "victim"]
        assert record.lines == head
        assert rig.emitted_keys() == [(record.key, True)]

    def test_a_stray_body_line_alone_is_not_an_event(self, rig: Rig) -> None:
        """A late `Tasks in X are going to be killed due to memory.oom.group` notice."""
        watcher = rig.watcher()
        notice = "Tasks in /oomlens-test are going to be killed due to memory.oom.group set"
        watcher.feed(kmsg_lines(records([notice])), live=True)
        watcher.settle(live=True, everything=True)
        assert rig.all_events() == []


def lost(rig: Rig) -> list[StoredEvent]:
    return [s for s in rig.all_events() if s.record.kind == EventKind.LOST]


class TestCheckKills:
    def test_a_counter_equal_to_the_store_records_nothing(self, rig: Rig) -> None:
        watcher = rig.watcher()
        watcher.feed(report_lines(), live=True)
        watcher.settle(live=True)
        watcher.check_kills(1, "r")
        rig.clock.advance(10 * LOST_GRACE)
        watcher.check_kills(1, "r")
        assert lost(rig) == [] and not watcher.deficit_pending

    def test_a_deficit_is_recorded_only_once_it_outlasts_the_grace(self, rig: Rig) -> None:
        watcher = rig.watcher()
        watcher.feed(report_lines(), live=True)
        watcher.settle(live=True)
        watcher.check_kills(4, "not in /dev/kmsg")
        assert lost(rig) == [] and watcher.deficit_pending
        rig.clock.advance(LOST_GRACE * 0.9)
        watcher.check_kills(4, "not in /dev/kmsg")
        assert lost(rig) == [] and watcher.deficit_pending

        rig.clock.advance(LOST_GRACE * 0.1)
        watcher.check_kills(4, "not in /dev/kmsg")
        (stored,) = lost(rig)
        record = stored.record
        assert record.key == f"{BOOT_ID}:lost:1-4"
        assert (record.kills, record.host, record.boot_id) == (3, "web1", BOOT_ID)
        assert record.detail == {"oom_kill_from": 1, "oom_kill_to": 4,
                                 "reason": "not in /dev/kmsg"}
        assert record.time == rig.clock.now
        assert rig.emitted_keys()[-1] == (record.key, True)
        assert (watcher.lost_kills, watcher.deficit_pending) == (3, False)

    def test_the_grace_counts_from_the_first_deficit_even_as_the_counter_rises(
            self, rig: Rig) -> None:
        watcher = rig.watcher()
        watcher.check_kills(1, "r")
        rig.clock.advance(LOST_GRACE / 2)
        watcher.check_kills(2, "r")
        assert lost(rig) == []
        rig.clock.advance(LOST_GRACE / 2)
        watcher.check_kills(2, "r")
        assert [s.record.key for s in lost(rig)] == [f"{BOOT_ID}:lost:0-2"]

    def test_a_kill_line_that_arrives_within_the_grace_ends_the_deficit(self, rig: Rig) -> None:
        watcher = rig.watcher()
        watcher.check_kills(1, "r")
        assert watcher.deficit_pending
        watcher.feed(report_lines(), live=True)
        watcher.settle(live=True)
        rig.clock.advance(2 * LOST_GRACE)
        watcher.check_kills(1, "r")
        assert lost(rig) == [] and not watcher.deficit_pending

    def test_at_once_records_at_once(self, rig: Rig) -> None:
        watcher = rig.watcher()
        watcher.check_kills(5, "before oomlens watch started", at_once=True)
        (stored,) = lost(rig)
        assert (stored.record.key, stored.record.kills) == (f"{BOOT_ID}:lost:0-5", 5)
        assert stored.record.detail["reason"] == "before oomlens watch started"
        assert watcher.lost_kills == 5

    def test_the_same_counter_again_records_nothing_more(self, rig: Rig) -> None:
        watcher = rig.watcher()
        watcher.check_kills(5, "r", at_once=True)
        for _ in range(3):
            rig.clock.advance(LOST_GRACE)
            watcher.check_kills(5, "r")
        watcher.check_kills(5, "r", at_once=True)
        assert len(lost(rig)) == 1 and len(rig.emitted) == 1
        assert (watcher.stored, watcher.lost_kills) == (1, 5)

    def test_a_restart_with_the_same_counter_records_nothing(self, rig: Rig) -> None:
        rig.watcher().check_kills(5, "r", at_once=True)
        restarted = rig.watcher()
        restarted.check_kills(5, "r", at_once=True)
        assert (restarted.stored, restarted.duplicates, restarted.lost_kills) == (0, 0, 0)
        assert len(lost(rig)) == 1

    def test_a_later_deficit_starts_where_the_store_ends(self, rig: Rig) -> None:
        watcher = rig.watcher()
        watcher.check_kills(5, "r", at_once=True)
        watcher.feed(report_lines(), live=True)  # a kill the counter shows as the 6th
        watcher.settle(live=True)
        watcher.check_kills(8, "overrun", at_once=True)
        assert [(s.record.key, s.record.kills) for s in lost(rig)] == [
            (f"{BOOT_ID}:lost:0-5", 5), (f"{BOOT_ID}:lost:6-8", 2)]
        assert watcher.lost_kills == 7

    def test_kills_of_another_boot_or_host_do_not_count(self, rig: Rig) -> None:
        rig.watcher(host=HostInfo("web1", "other-boot", 0.0)).check_kills(5, "r", at_once=True)
        rig.watcher(host=HostInfo("web2", BOOT_ID, 0.0)).check_kills(5, "r", at_once=True)
        watcher = rig.watcher()
        watcher.check_kills(2, "r", at_once=True)
        assert [s.record.key for s in lost(rig)][-1] == f"{BOOT_ID}:lost:0-2"


def memcg_events(rig: Rig) -> list[tuple[str | None, int]]:
    return [(s.record.cgroup, s.record.kills) for s in rig.all_events()
            if s.record.kind == EventKind.MEMCG]


class TestMemcgKills:
    def test_flat_counters_each_count_their_rise(self, rig: Rig) -> None:
        watcher = rig.watcher()
        watcher.memcg_kills([("/a", 0, 2), ("/a/b", 5, 6)], hierarchical=False)
        assert memcg_events(rig) == [("/a", 2), ("/a/b", 1)]
        first = rig.all_events()[0].record
        assert first.key == f"{BOOT_ID}:memcg:/a:0-2"
        assert (first.scope, first.detail) == ("memcg", {"oom_kill_from": 0, "oom_kill_to": 2})
        assert first.time == rig.clock.now
        assert [live for _, live in rig.emitted] == [True, True]

    def test_hierarchical_a_childs_kill_is_not_its_parents_too(self, rig: Rig) -> None:
        rig.watcher().memcg_kills([("/p", 0, 1), ("/p/c", 0, 1)], hierarchical=True)
        assert memcg_events(rig) == [("/p/c", 1)]

    def test_hierarchical_the_parents_own_kills_are_its_rise_less_the_childs(
            self, rig: Rig) -> None:
        rig.watcher().memcg_kills([("/p", 4, 7), ("/p/c", 0, 1)], hierarchical=True)
        assert memcg_events(rig) == [("/p", 2), ("/p/c", 1)]
        assert rig.all_events()[0].record.key == f"{BOOT_ID}:memcg:/p:4-7"

    def test_hierarchical_only_the_nearest_changed_descendants_are_subtracted(
            self, rig: Rig) -> None:
        rig.watcher().memcg_kills([("/g", 0, 3), ("/g/p", 0, 2), ("/g/p/c", 0, 1)],
                                  hierarchical=True)
        assert memcg_events(rig) == [("/g", 1), ("/g/p", 1), ("/g/p/c", 1)]

    def test_hierarchical_a_chain_of_one_kill_is_the_deepest(self, rig: Rig) -> None:
        rig.watcher().memcg_kills([("/g/p/c", 0, 1), ("/g", 0, 1), ("/g/p", 0, 1)],
                                  hierarchical=True)
        assert memcg_events(rig) == [("/g/p/c", 1)]

    def test_hierarchical_siblings_both_subtracted(self, rig: Rig) -> None:
        rig.watcher().memcg_kills([("/p", 0, 3), ("/p/a", 0, 1), ("/p/b", 0, 1)],
                                  hierarchical=True)
        assert memcg_events(rig) == [("/p", 1), ("/p/a", 1), ("/p/b", 1)]

    def test_hierarchical_a_name_prefix_is_not_a_parent(self, rig: Rig) -> None:
        rig.watcher().memcg_kills([("/a", 0, 1), ("/ab", 0, 1)], hierarchical=True)
        assert memcg_events(rig) == [("/a", 1), ("/ab", 1)]

    def test_hierarchical_a_namespace_root_is_a_parent_too(self, rig: Rig) -> None:
        rig.watcher().memcg_kills([("/", 0, 1), ("/app", 0, 1)], hierarchical=True)
        assert memcg_events(rig) == [("/app", 1)]

    def test_the_same_change_again_is_a_duplicate(self, rig: Rig) -> None:
        watcher = rig.watcher()
        watcher.memcg_kills([("/a", 0, 2)], hierarchical=False)
        watcher.memcg_kills([("/a", 0, 2)], hierarchical=False)
        assert (watcher.stored, watcher.duplicates) == (1, 1)

    def test_memcg_kills_are_accounted_against_the_kernels_counter(self, rig: Rig) -> None:
        watcher = rig.watcher()
        watcher.memcg_kills([("/a", 0, 2)], hierarchical=False)
        watcher.check_kills(2, "no kernel log is followed", at_once=True)
        assert lost(rig) == []


class TestKmsgLines:
    def test_a_message_with_a_newline_is_two_lines_of_one_record(self) -> None:
        (first, second) = kmsg_lines([KmsgRecord(6, 77, 1_500_000, "active_anon:1\n free:2")])
        assert (first.text, second.text) == ("active_anon:1", " free:2")
        assert first.seq == second.seq == first.lineno == second.lineno == 77

    @pytest.mark.parametrize(("facility_prio", "kernel"),
                             [(0, True), (3, True), (6, True), (7, True), (8, False),
                              (11, False), (14, False), (USER, False), ((3 << 3) | 6, False)])
    def test_only_facility_0_is_the_kernel(self, facility_prio: int, kernel: bool) -> None:
        (line,) = kmsg_lines([KmsgRecord(facility_prio, 1, 0, LONE_KILL)])
        assert line.kernel is kernel

    def test_the_timestamp_becomes_monotonic_seconds(self) -> None:
        (line,) = kmsg_lines([KmsgRecord(3, 9, 42_574_577, "x")], "/tmp/kmsg")
        assert line.monotonic == pytest.approx(42.574577, abs=1e-9)
        assert (line.source, line.stream, line.wallclock) == ("/tmp/kmsg", "", None)
        assert kmsg_lines([KmsgRecord(3, 9, 0, "x")])[0].source == "/dev/kmsg"


@pytest.fixture
def proc(tmp_path: Path) -> Path:
    root = write_fake_proc(tmp_path / "proc")
    (root / "sys" / "kernel" / "random").mkdir(parents=True)
    (root / "sys" / "kernel" / "random" / "boot_id").write_text(BOOT_ID + "\n")
    return root


def write_vmstat(proc: Path, oom_kill: int | None) -> None:
    lines = ["nr_free_pages 1000", "pgfault 424242"]
    if oom_kill is not None:
        lines.append(f"oom_kill {oom_kill}")
    (proc / "vmstat").write_text("\n".join(lines) + "\n")


class TestSystemReaders:
    def test_kernel_kill_count(self, proc: Path) -> None:
        write_vmstat(proc, 17)
        assert kernel_kill_count(str(proc)) == 17
        write_vmstat(proc, None)  # kernels before 4.13
        assert kernel_kill_count(str(proc)) is None

    def test_host_info(self, proc: Path) -> None:
        before = time.time() - time.clock_gettime(time.CLOCK_MONOTONIC)
        host = host_info(str(proc))
        after = time.time() - time.clock_gettime(time.CLOCK_MONOTONIC)
        assert (host.name, host.boot_id) == (socket.gethostname(), BOOT_ID)
        assert before - 0.01 <= host.boot_time <= after + 0.01

    @pytest.mark.parametrize(("text", "version", "expected"), [
        ("0::/system.slice/batch.service\n", 2, "/system.slice/batch.service"),
        ("12:memory:/docker/abc\n4:cpu,cpuacct:/docker/abc\n0::/\n", 1, "/docker/abc"),
        ("4:cpu,cpuacct:/x\n", 1, None),
    ])
    def test_victim_cgroup_reader(self, proc: Path, text: str, version: int,
                                  expected: str | None) -> None:
        write_process(proc, FakeProcess(4242, "worker", cgroup=text))
        assert victim_cgroup_reader(str(proc), version)(4242, "worker") == expected

    def test_victim_cgroup_reader_refuses_another_or_a_dying_process(self, proc: Path) -> None:
        write_process(proc, FakeProcess(4242, "worker", cgroup="0::/a\n"))
        write_process(proc, FakeProcess(4343, "worker", cgroup="0::/",
                                        flags=PF_RANDOMIZE | PF_EXITING))
        read = victim_cgroup_reader(str(proc), 2)
        assert read(4242, "other") is None  # the pid names another process now
        assert read(4343, "worker") is None  # exiting: already moved to the root
        assert read(4444, "worker") is None  # gone

    def test_protect_self_lowers_its_own_score(self, proc: Path) -> None:
        write_process(proc, FakeProcess(os.getpid(), "oomlens", oom_score_adj=0))
        assert protect_self(str(proc)) is None
        adj = proc / str(os.getpid()) / "oom_score_adj"
        assert int(adj.read_text()) == SELF_OOM_SCORE_ADJ

    def test_protect_self_never_raises_a_lower_score(self, proc: Path) -> None:
        write_process(proc, FakeProcess(os.getpid(), "oomlens", oom_score_adj=-1000))
        assert protect_self(str(proc)) is None
        assert int((proc / str(os.getpid()) / "oom_score_adj").read_text()) == -1000

    def test_protect_self_says_why_not(self, proc: Path) -> None:
        problem = protect_self(str(proc))
        assert problem is not None and str(os.getpid()) in problem


_SIGNALS = (signal.SIGHUP, signal.SIGTERM, signal.SIGINT)


@dataclass(frozen=True)
class Overrun:
    """A script step: the ring buffer overran, `lost` records gone (returns nothing)."""

    lost: int


Step = list[LogLine] | signal.Signals | Overrun


class FakeLog:
    """A LogReader whose reads follow a script: each read_lines() takes the next step,
    lines to return or a signal to send to this process (then returns nothing).
    Its fd is always readable, so serve()'s poll() returns at once."""

    source = "/dev/kmsg"

    def __init__(self, script: Sequence[Step]) -> None:
        self.script = list(script)
        self.lost = 0
        self.overruns = 0
        self.reads = 0
        self.closed = False
        self._read, self._write = os.pipe()
        os.write(self._write, b"!")

    def fileno(self) -> int:
        return self._read

    def read_lines(self) -> list[LogLine]:
        self.reads += 1
        if self.reads > 100:
            raise AssertionError("serve() did not stop")
        step = self.script.pop(0) if self.script else signal.SIGTERM
        if isinstance(step, Overrun):
            self.overruns += 1
            self.lost += step.lost
            return []
        if isinstance(step, signal.Signals):
            os.kill(os.getpid(), step)
            return []
        return step

    def close(self) -> None:
        os.close(self._read)
        os.close(self._write)
        self.closed = True


class Served:
    def __init__(self, rig: Rig, proc: Path) -> None:
        self.rig = rig
        self.proc = proc
        self.ready_at: list[int] = []
        self.reopened: list[Store] = []

    def run(self, watcher: Watcher, log: FakeLog | None, **options: Any) -> None:
        def reopen() -> Store:
            store = open_store(self.rig.url)
            self.reopened.append(store)
            return store

        with signals_restored():
            serve(watcher, WatchOptions(str(self.proc), **options), log, None, time.monotonic,
                  lambda: self.ready_at.append(watcher.stored), reopen, lambda _events: None)


@pytest.fixture
def served(rig: Rig, proc: Path) -> Iterator[Served]:
    harness = Served(rig, proc)
    yield harness
    for store in harness.reopened:
        store.close()


class TestServe:
    def test_once_backfills_then_records_what_the_log_no_longer_holds(
            self, rig: Rig, proc: Path, served: Served) -> None:
        write_vmstat(proc, 5)
        log = FakeLog([report_lines() + lone_kill()])
        watcher = rig.watcher()
        served.run(watcher, log, once=True)
        log.close()

        assert log.reads == 1
        assert rig.emitted_keys() == [
            (f"{BOOT_ID}:{KILL_SEQ}:{VICTIM}", False), (f"{BOOT_ID}:5000:1001", False),
            (f"{BOOT_ID}:lost:2-5", True)]
        (stored,) = lost(rig)
        assert stored.record.kills == 3
        assert stored.record.detail["reason"] == (
            "before oomlens watch started: no longer in the kernel log")
        assert served.ready_at == [3]  # ready after the backfill and the reconciliation
        assert (watcher.stored, watcher.lost_kills) == (3, 3)

    def test_once_again_stores_nothing(self, rig: Rig, proc: Path, served: Served) -> None:
        write_vmstat(proc, 5)
        for _ in range(2):
            log = FakeLog([report_lines()])
            served.run(rig.watcher(), log, once=True)
            log.close()
        assert len(rig.emitted) == 2 and len(rig.all_events()) == 2

    def test_without_backfill_it_reads_past_the_log_and_stores_none_of_it(
            self, rig: Rig, proc: Path, served: Served) -> None:
        write_vmstat(proc, 4)  # 2 kills still in the ring buffer, 2 no longer
        log = FakeLog([report_lines() + lone_kill()])
        watcher = rig.watcher()
        served.run(watcher, log, once=True, backfill=False)
        log.close()
        assert log.reads == 1 and watcher.skipped_kills == 2
        # The lost range starts after what the store and the skipped lines account for.
        assert rig.emitted_keys() == [(f"{BOOT_ID}:lost:2-4", True)]

    def test_a_kernel_without_the_counter_records_no_lost_kills(
            self, rig: Rig, proc: Path, served: Served) -> None:
        write_vmstat(proc, None)
        served.run(rig.watcher(), None, once=True)
        assert rig.emitted == [] and served.ready_at == [0]

    def test_following_stores_live_kills_until_sigterm(
            self, rig: Rig, proc: Path, served: Served) -> None:
        write_vmstat(proc, 1)  # the live kill is not counted yet when serve() starts
        reader = VictimCgroup("/batch")
        log = FakeLog([report_lines(), lone_kill(),
                       signal.SIGTERM])
        watcher = rig.watcher(reader)
        served.run(watcher, log)
        log.close()
        assert rig.emitted_keys() == [(f"{BOOT_ID}:{KILL_SEQ}:{VICTIM}", False),
                                      (f"{BOOT_ID}:5000:1001", True)]
        assert reader.asked == [(1001, "python3")]
        assert rig.all_events()[-1].record.cgroup == "/batch"
        assert lost(rig) == []

    def test_an_overrun_is_logged(self, rig: Rig, proc: Path, served: Served) -> None:
        write_vmstat(proc, 0)
        log = FakeLog([[], Overrun(7), signal.SIGTERM])
        served.run(rig.watcher(), log)
        log.close()
        assert {"event": "overrun", "source": "/dev/kmsg", "records_lost": 7,
                "message": "the kernel log overran before it was read"} in rig.logged

    def test_sighup_reopens_the_store(self, rig: Rig, proc: Path, served: Served) -> None:
        write_vmstat(proc, 0)
        log = FakeLog([[], signal.SIGHUP, report_lines(), signal.SIGTERM])
        watcher = rig.watcher()
        served.run(watcher, log)
        log.close()
        (reopened,) = served.reopened
        assert watcher.store is reopened
        assert {"event": "reopened", "store": reopened.display} in rig.logged
        assert len(reopened.events(EventQuery())) == 1
        assert rig.emitted_keys() == [(f"{BOOT_ID}:{KILL_SEQ}:{VICTIM}", True)]

    def test_a_run_without_backfill_then_one_with_it_counts_each_kill_once(
            self, rig: Rig, proc: Path, served: Served) -> None:
        write_vmstat(proc, 1)
        for backfill in (False, True):
            log = FakeLog([report_lines()])
            served.run(rig.watcher(), log, once=True, backfill=backfill)
            log.close()
        assert rig.store.accounted_kills(HOST.name, HOST.boot_id) == 1

    def test_serve_leaves_signal_handling_as_it_found_it(
            self, rig: Rig, proc: Path) -> None:
        write_vmstat(proc, 0)
        with signals_restored():
            before = {number: signal.getsignal(number) for number in _SIGNALS}
            wakeup_before = signal.set_wakeup_fd(-1)
            signal.set_wakeup_fd(wakeup_before)
            serve(rig.watcher(), WatchOptions(str(proc), once=True), None, None,
                  time.monotonic, lambda: None, lambda: rig.store, lambda _events: None)
            after = {number: signal.getsignal(number) for number in _SIGNALS}
            wakeup_after = signal.set_wakeup_fd(wakeup_before)
            signal.set_wakeup_fd(wakeup_after)
            assert (after, wakeup_after) == (before, wakeup_before)
