"""The history store's API on SQLite and on PostgreSQL (each test runs on both):
what goes in comes out, filters, statistics, the exporter's counts and the
watcher's reconciliation; a writer and a reader in two processes at once."""

from __future__ import annotations

import json
import multiprocessing
from datetime import UTC, datetime
from typing import Any

import pytest
from storecases import T0, kernel_records, kill_lines, record, report

from oomlens.report.diagnose import diagnose
from oomlens.report.pipeline import events_in
from oomlens.report.summary import summarise
from oomlens.store.db import EventQuery, GrowingVictim, KillCount, Store, open_store
from oomlens.store.record import (
    EventKind,
    EventRecord,
    StoredEvent,
    lost_record,
    memcg_record,
    record_json,
)

NOW = T0 + 3600.0


def add_all(store: Store, records: list[EventRecord]) -> list[StoredEvent]:
    stored = [store.add(r, now=NOW) for r in records]
    assert all(s is not None for s in stored)
    return [s for s in stored if s is not None]


def ids(events: list[StoredEvent]) -> list[int]:
    return [e.id for e in events]


def as_json(stored: StoredEvent) -> str:
    """What a record is to its readers: its `oomlens.event/1` form, in full."""
    return json.dumps(record_json(stored, full=True), sort_keys=True)


class TestAddAndGet:
    def test_a_kernel_record_comes_back_as_it_went_in(self, store: Store) -> None:
        (added,) = [store.add(r, now=NOW) for r in kernel_records(
            report("oomanalyser/proxmox-5.15.158-2-pve-cgroupv2-lxc-oom-php-fpm.txt"))]
        assert added is not None
        assert added.recorded_at == NOW
        got = store.get(added.id)
        assert got is not None
        assert as_json(got) == as_json(added)
        assert got.record.victim_comm == "php-fpm"
        assert got.record.findings == ("memcg_limit", "process_group")
        assert len(got.record.lines) == 159

    def test_every_field_round_trips(self, store: Store) -> None:
        original = record(
            1, monotonic=12345.678901, seq=2**40, scope="memcg", cgroup="/system.slice/x",
            victim_uid=1000, victim_oom_score_adj=-999, victim_rss_kb=2**33,
            trigger_comm="trigger", constraint="CONSTRAINT_MEMCG", complete=False, kills=3,
            main_finding="memcg_limit", findings=("memcg_limit", "no_swap"), reaped=True,
            detail={"a": 1}, lines=("one",),
        )  # fmt: skip
        added = store.add(original, now=NOW)
        assert added is not None
        assert added.record == original
        assert store.get(added.id) == StoredEvent(added.id, original, NOW)

    def test_ids_grow(self, store: Store) -> None:
        stored = add_all(store, [record(n) for n in range(3)])
        assert ids(stored) == sorted(ids(stored))
        assert len(set(ids(stored))) == 3

    def test_a_second_add_of_a_key_stores_nothing(self, store: Store) -> None:
        first = store.add(record(1, findings=("a",)), now=NOW)
        again = store.add(record(1, victim_comm="other", findings=("b", "c")), now=NOW + 1)
        assert first is not None
        assert again is None
        assert store.events(EventQuery()) == [first]

    def test_get_of_an_unknown_id_is_none(self, store: Store) -> None:
        add_all(store, [record(1)])
        assert store.get(999) is None

    def test_detail_and_lines_round_trip_exactly(self, store: Store) -> None:
        detail: dict[str, Any] = {
            "victim": {"comm": "php-fpm: pool ü 日本 🐘", "rss_kb": 2**53 + 1},
            "floats": [0.1, 1e-300, 123456.789012345, -0.0], "none": None, "flag": False,
            "nested": [[], {}, {"z": 1, "a": 2}], "quote": "\"'\\\t",
        }  # fmt: skip
        lines = tuple(f"[{i:6d}.000000] line {i} ü 日本 \t tab  trailing  " for i in range(5000))
        lines = ("", *lines, "   ", "last")
        added = store.add(record(1, detail=detail, lines=lines, victim_comm="ü日本"), now=NOW)
        assert added is not None
        got = store.get(added.id)
        assert got is not None
        assert got.record.lines == lines
        assert got.record.detail == detail
        assert list(got.record.detail) == list(detail)  # key order too
        assert got.record.victim_comm == "ü日本"

    def test_no_lines_and_one_empty_line_differ(self, store: Store) -> None:
        add_all(store, [record(1, lines=()), record(2, lines=("",))])
        assert [e.record.lines for e in store.events(EventQuery())] == [(), ("",)]

    def test_nul_is_stored_as_the_replacement_character(self, store: Store) -> None:
        added = store.add(record(1, victim_comm="no\x00de", lines=("a\x00b",)), now=NOW)
        assert added is not None
        assert added.record.victim_comm == "no\ufffdde"
        got = store.get(added.id)
        assert got is not None
        assert (got.record.victim_comm, got.record.lines) == ("no\ufffdde", ("a\ufffdb",))

    def test_a_line_with_a_newline_is_refused(self, store: Store) -> None:
        with pytest.raises(ValueError, match="newline"):
            store.add(record(1, lines=("two\nlines",)), now=NOW)
        assert store.events(EventQuery()) == []


class TestEvents:
    def test_ordered_by_time_then_id(self, store: Store) -> None:
        late, early, same = add_all(store, [record(1, time=T0 + 50), record(2, time=T0),
                                            record(3, time=T0 + 50)])
        assert ids(store.events(EventQuery())) == [early.id, late.id, same.id]

    def test_limit_keeps_the_last_n_oldest_first(self, store: Store) -> None:
        stored = add_all(store, [record(n, time=T0 - n) for n in range(6)])  # newest first
        newest_three = [stored[2].id, stored[1].id, stored[0].id]
        assert ids(store.events(EventQuery(limit=3))) == newest_three
        assert ids(store.events(EventQuery(limit=100))) == ids(stored)[::-1]
        assert store.events(EventQuery(limit=0)) == []

    def test_since_and_until_are_inclusive(self, store: Store) -> None:
        stored = add_all(store, [record(n) for n in range(5)])
        chosen = store.events(EventQuery(since=T0 + 1, until=T0 + 3))
        assert ids(chosen) == ids(stored[1:4])

    def test_host_comm_and_kind(self, store: Store) -> None:
        web1, web2, db, lost = add_all(store, [
            record(1), record(2, host="web2"), record(3, victim_comm="postgres"),
            lost_record(host="web1", boot_id="boot-a", detected_at=T0 + 4, counter_from=3,
                        counter_to=5, reason="ring buffer overrun"),
        ])  # fmt: skip
        assert ids(store.events(EventQuery(host="web2"))) == [web2.id]
        assert ids(store.events(EventQuery(comm="postgres"))) == [db.id]
        assert ids(store.events(EventQuery(kind=EventKind.LOST))) == [lost.id]
        assert ids(store.events(EventQuery(host="web1", comm="app"))) == [web1.id]

    @pytest.mark.parametrize(("cgroup", "expected"), [
        ("/a", ["/a", "/a/b", "/a/b/c"]),
        ("/a/", ["/a", "/a/b", "/a/b/c"]),
        ("/a/b", ["/a/b", "/a/b/c"]),
        ("/ab", ["/ab"]),
        ("/", ["/a", "/a/b", "/ab", "/a/b/c", "/ü/ñ"]),
        ("/ü", ["/ü/ñ"]),
        ("/nope", []),
    ])  # fmt: skip
    def test_cgroup_is_that_cgroup_or_below(self, store: Store, cgroup: str,
                                            expected: list[str]) -> None:
        paths = ["/a", "/a/b", "/ab", "/a/b/c", None, "/ü/ñ"]
        add_all(store, [record(n, cgroup=path) for n, path in enumerate(paths)])
        found = store.events(EventQuery(cgroup=cgroup))
        assert [e.record.cgroup for e in found] == expected

    def test_finding_is_any_of_the_findings(self, store: Store) -> None:
        main, secondary, other = add_all(store, [
            record(1, main_finding="memcg_limit", findings=("memcg_limit", "no_swap")),
            record(2, main_finding="runaway_process", findings=("runaway_process", "memcg_limit")),
            record(3, main_finding="no_swap", findings=("no_swap",)),
        ])  # fmt: skip
        assert ids(store.events(EventQuery(finding="memcg_limit"))) == [main.id, secondary.id]
        assert ids(store.events(EventQuery(finding="no_swap"))) == [main.id, other.id]
        assert store.events(EventQuery(finding="memcg")) == []

    def test_findings_of_many_events_keep_their_order(self, store: Store) -> None:
        records = [record(n, findings=(f"f{n}", "common", f"g{n % 7}")) for n in range(1203)]
        add_all(store, records)
        assert [e.record.findings for e in store.events(EventQuery())] == [
            r.findings for r in records]

    def test_filters_combine(self, store: Store) -> None:
        add_all(store, [record(n, host=f"web{n % 2}", cgroup=f"/c{n % 3}",
                               findings=("x",) if n % 4 in (0, 1) else ()) for n in range(60)])
        query = EventQuery(since=T0 + 5, until=T0 + 50, host="web0", cgroup="/c0",
                           finding="x", limit=2)
        assert [e.record.time - T0 for e in store.events(query)] == [36, 48]  # of 12, 24, 36, 48


def utc(day: int, hour: int, minute: int, second: int, microsecond: int = 0) -> float:
    return datetime(2025, 6, day, hour, minute, second, microsecond, tzinfo=UTC).timestamp()


class TestStats:
    def test_an_empty_store(self, store: Store) -> None:
        stats = store.stats(EventQuery())
        assert (stats.events, stats.kills, stats.per_day, stats.per_comm, stats.growth) == (
            0, 0, (), (), ())

    def test_kills_per_day_across_utc_midnight(self, store: Store) -> None:
        add_all(store, [
            record(1, time=utc(14, 23, 59, 59)),
            record(2, time=utc(15, 0, 0, 1), kills=3),
            record(3, time=utc(15, 23, 59, 59, 999_000)),
            record(4, time=utc(16, 0, 0, 0)),
            record(5, time=utc(13, 12, 0, 0)),
        ])  # fmt: skip
        stats = store.stats(EventQuery())
        assert stats.per_day == (("2025-06-13", 1), ("2025-06-14", 1), ("2025-06-15", 4),
                                 ("2025-06-16", 1))
        assert (stats.events, stats.kills) == (5, 7)

    def test_per_comm_cgroup_finding_and_host_most_first(self, store: Store) -> None:
        add_all(store, [
            record(1, victim_comm="java", cgroup="/a", main_finding="memcg_limit"),
            record(2, victim_comm="java", cgroup="/a", main_finding="memcg_limit"),
            record(3, victim_comm="node", cgroup="/b", main_finding="no_swap",
                   findings=("no_swap", "memcg_limit"), kills=3, host="web2"),
            record(4, victim_comm="bash", cgroup="/c", main_finding="runaway_process"),
            lost_record(host="web3", boot_id="b", detected_at=T0, counter_from=0,
                        counter_to=2, reason="gap"),
        ])  # fmt: skip
        stats = store.stats(EventQuery())
        assert stats.per_comm == (("node", 3), ("java", 2), ("bash", 1))
        assert stats.per_cgroup == (("/b", 3), ("/a", 2), ("/c", 1))
        assert stats.per_finding == (("no_swap", 3), ("memcg_limit", 2), ("runaway_process", 1))
        assert stats.per_host == (("web1", 3), ("web2", 3), ("web3", 2))
        assert (stats.events, stats.kills) == (5, 8)

    def test_ties_are_in_name_order_whatever_the_case(self, store: Store) -> None:
        add_all(store, [record(n, victim_comm=comm)
                        for n, comm in enumerate(["b", "B", "a", "A", "_x"])])
        assert [c for c, _ in store.stats(EventQuery()).per_comm] == ["A", "B", "_x", "a", "b"]

    def test_filters_apply_and_the_limit_does_not(self, store: Store) -> None:
        add_all(store, [record(n, host=f"web{n % 2}") for n in range(10)])
        stats = store.stats(EventQuery(host="web1", limit=2))
        assert (stats.events, stats.kills, stats.per_host) == (5, 5, (("web1", 5),))

    def test_growth_is_per_host_and_name_in_time_order(self, store: Store) -> None:
        add_all(store, [
            record(1, victim_comm="leaky", victim_rss_kb=100_000, time=T0 + 10),
            record(2, victim_comm="leaky", victim_rss_kb=150_000, time=T0 + 30),
            record(3, victim_comm="leaky", victim_rss_kb=120_000, time=T0 + 20),  # stored late
            record(4, victim_comm="leaky", victim_rss_kb=90_000, host="web2"),
            record(5, victim_comm="leaky", victim_rss_kb=80_000, host="web2"),
            record(6, victim_comm="steady", victim_rss_kb=100_000),
            record(7, victim_comm="steady", victim_rss_kb=105_000),  # < 10 % more
            record(8, victim_comm="steady", victim_rss_kb=200_000),
            record(9, victim_comm="once", victim_rss_kb=100),
            record(10, victim_comm="unknown", victim_rss_kb=None),
            record(11, victim_comm="unknown", victim_rss_kb=None),
            record(12, victim_comm="grows", victim_rss_kb=10, host="web3"),
            record(13, victim_comm="grows", victim_rss_kb=None, host="web3"),
            record(14, victim_comm="grows", victim_rss_kb=12, host="web3"),
        ])  # fmt: skip
        assert store.stats(EventQuery()).growth == (
            GrowingVictim("web1", "leaky", 3, (100_000, 120_000, 150_000)),
            GrowingVictim("web3", "grows", 2, (10, 12)),
        )
        assert store.stats(EventQuery(since=T0 + 15)).growth == (
            GrowingVictim("web1", "leaky", 2, (120_000, 150_000)),)


class TestGrowthAgainstReportSummary:
    """The store's growing victims are `oomlens report`'s, for the same kills."""

    @pytest.mark.parametrize("kills", [
        [("leaky", 100_000), ("steady", 50_000), ("leaky", 130_000), ("steady", 52_000),
         ("leaky", 200_000)],
        [("a", 1000), ("a", 1200), ("a", 1100)],
        [("a", 1000), ("b", 5000), ("a", 1500), ("b", 9000), ("c", 10)],
    ], ids=["one-leak", "not-every-step", "two-leaks"])  # fmt: skip
    def test_same_growth(self, store: Store, kills: list[tuple[str, int]]) -> None:
        log = kill_lines(kills)
        add_all(store, kernel_records(log))
        events = list(events_in([log], "kmsg", boot_time=1.7e9))
        summary = summarise([(e, diagnose(e)) for e in events])
        got = store.stats(EventQuery()).growth
        assert [(g.comm, g.kills, g.rss_kb) for g in got] == [
            (g.comm, g.kills, g.rss_kb) for g in summary.growth]
        assert all(g.host == "web1" for g in got)


class TestKillCounts:
    def test_grouped_by_labels_with_the_last_time(self, store: Store) -> None:
        add_all(store, [
            record(1, cgroup="/a", scope="memcg", main_finding="memcg_limit", time=T0 + 5),
            record(2, cgroup="/a", scope="memcg", main_finding="memcg_limit", time=T0 + 9,
                   kills=2),
            record(3, cgroup="/a", scope="memcg", main_finding="memcg_limit", time=T0 + 1),
            record(4, cgroup=None, scope="global", main_finding=None, time=T0 + 2),
            record(5, cgroup=None, scope="global", main_finding=None, time=T0 + 3),
            lost_record(host="web1", boot_id="boot-a", detected_at=T0 + 7, counter_from=3,
                        counter_to=7, reason="gap"),
            memcg_record(host="web2", boot_id="boot-z", detected_at=T0 + 8, cgroup="/k",
                         counter_from=0, counter_to=1),
        ])  # fmt: skip
        assert store.kill_counts() == [
            KillCount("web1", EventKind.KERNEL, "app", None, "global", None, 2, T0 + 3),
            KillCount("web1", EventKind.KERNEL, "app", "/a", "memcg", "memcg_limit", 4, T0 + 9),
            KillCount("web1", EventKind.LOST, None, None, None, None, 4, T0 + 7),
            KillCount("web2", EventKind.MEMCG, None, "/k", "memcg", None, 1, T0 + 8),
        ]

    def test_empty(self, store: Store) -> None:
        assert store.kill_counts() == []


class TestAccountedKills:
    def test_per_host_and_boot_with_lost_kills(self, store: Store) -> None:
        add_all(store, [
            record(1), record(2, kills=3),
            record(3, boot_id="boot-b", key="boot-b:3"),
            record(4, host="web2", key="web2:4"),
            lost_record(host="web1", boot_id="boot-a", detected_at=T0, counter_from=4,
                        counter_to=9, reason="gap"),
        ])  # fmt: skip
        assert store.accounted_kills("web1", "boot-a") == 1 + 3 + 5
        assert store.accounted_kills("web1", "boot-b") == 1
        assert store.accounted_kills("web2", "boot-a") == 1
        assert store.accounted_kills("web3", "boot-a") == 0

    def test_a_guards_kill_is_not_one_the_kernel_counted(self, store: Store) -> None:
        add_all(store, [record(1), record(2, kind=EventKind.GUARD, key="boot-a:guard:2")])
        assert store.accounted_kills("web1", "boot-a") == 1


class TestMarkReaped:
    def test_marks_the_record_and_its_report(self, store: Store) -> None:
        (added,) = add_all(store, kernel_records(
            report("oomanalyser/rhel7-3.10.0-514.6.1.el7-global-oom-mysqld.txt")))
        assert not added.record.reaped
        assert added.record.detail["victim"]["reaped"] is False
        assert store.mark_reaped(added.record.key) is True
        got = store.get(added.id)
        assert got is not None
        assert got.record.reaped is True
        assert got.record.detail["victim"]["reaped"] is True
        assert store.mark_reaped(added.record.key) is True  # again: no change, still there

    def test_unknown_key(self, store: Store) -> None:
        add_all(store, [record(1)])
        assert store.mark_reaped("boot-a:999:1") is False
        assert [e.record.reaped for e in store.events(EventQuery())] == [False]

    def test_a_record_without_a_report(self, store: Store) -> None:
        (added,) = add_all(store, [record(1, detail={"victim": None})])
        assert store.mark_reaped(added.record.key)
        got = store.get(added.id)
        assert got is not None
        assert (got.record.reaped, got.record.detail) == (True, {"victim": None})


def _writer(url: str, count: int, results: Any) -> None:
    try:
        with open_store(url) as store:
            for n in range(count):
                store.add(record(n, findings=("x", f"y{n}")), now=NOW)
        results.put(("writer", "ok"))
    except BaseException as err:
        results.put(("writer", f"{type(err).__name__}: {err}"))


def _reader(url: str, stop: Any, results: Any) -> None:
    """Lists until the writer is done; every list must be a prefix of the final one."""
    try:
        with open_store(url, create=False) as store:
            reads = 0
            while not stop.is_set() or reads == 0:
                found = store.events(EventQuery())
                if [e.record.key for e in found] != [record(n).key for n in range(len(found))]:
                    raise AssertionError(f"not a prefix: {[e.record.key for e in found][:5]}")
                if any(e.record.findings != ("x", f"y{n}") for n, e in enumerate(found)):
                    raise AssertionError("an event without its findings")
                stats = store.stats(EventQuery())
                if sum(kills for _, kills in stats.per_day) != stats.kills:
                    raise AssertionError(f"stats from two states: {stats}")
                reads += 1
        results.put(("reader", "ok" if reads > 1 else f"only {reads} reads"))
    except BaseException as err:
        results.put(("reader", f"{type(err).__name__}: {err}"))


def test_a_writer_and_a_reader_process_at_once(store: Store, store_url: str) -> None:
    """The watcher adds while `history` lists: no error either side, every read
    sees a whole prefix of the writes, and all 200 are there at the end."""
    context = multiprocessing.get_context("fork")
    results = context.Queue()
    stop = context.Event()
    store.add(record(0, findings=("x", "y0")), now=NOW)  # the store exists for the reader
    reader = context.Process(target=_reader, args=(store_url, stop, results))
    writer = context.Process(target=_writer, args=(store_url, 200, results))
    reader.start()
    writer.start()
    outcome = dict([results.get(timeout=120)])
    stop.set()
    outcome.update([results.get(timeout=120)])
    writer.join(60)
    reader.join(60)
    assert outcome == {"writer": "ok", "reader": "ok"}
    assert len(store.events(EventQuery())) == 200
    assert store.stats(EventQuery()).kills == 200
