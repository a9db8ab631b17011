"""The OOM event history: every kill the watcher saw, kept in SQLite (one host) or
PostgreSQL (a fleet), for `oomlens history`, the exporter's counters and guard.

A record is added once: its key (store/record.py) is unique and a second sighting
of the same kill is `INSERT ... ON CONFLICT (key) DO NOTHING`, so a restarted
watcher may replay the ring buffer freely. The watcher writes while `history` reads:
on SQLite readers never block the writer (WAL) and writes wait for each other
(BEGIN IMMEDIATE, busy timeout); on PostgreSQL each write is one transaction and
statistics read one snapshot.

Queries are written once, with `?` placeholders, and run unchanged on both
databases (store/backends.py converts the placeholders for psycopg).
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from oomlens.store.backends import STORE_NAME, Database, connect
from oomlens.store.migrations import prepare
from oomlens.store.record import EventKind, EventRecord, StoredEvent
from oomlens.store.urls import parse_url

_FINDINGS_PER_QUERY = 500  # ids per `IN (...)`: far below any database's limit


@dataclass(frozen=True, slots=True)
class EventQuery:
    """Which events: every given condition holds. `since`/`until` are epoch seconds
    (inclusive); `cgroup` is that cgroup or one below it; `finding` any of the
    record's findings, not only the main one; `limit` keeps the last N."""

    since: float | None = None
    until: float | None = None
    host: str | None = None
    comm: str | None = None
    cgroup: str | None = None
    finding: str | None = None
    kind: EventKind | None = None
    limit: int | None = None


@dataclass(frozen=True, slots=True)
class GrowingVictim:
    """A process name killed repeatedly on one host with more memory each time
    (report/summary.py: grows_between_kills), a leak signal."""

    host: str
    comm: str
    kills: int
    rss_kb: tuple[int, ...]  # at each kill, in time order


@dataclass(frozen=True, slots=True)
class EventStats:
    """Counts of kills (a record's `kills`, not records), most first; `per_day` in
    date order (UTC days)."""

    events: int
    kills: int
    per_day: tuple[tuple[str, int], ...]
    per_comm: tuple[tuple[str, int], ...]
    per_cgroup: tuple[tuple[str, int], ...]
    per_finding: tuple[tuple[str, int], ...]  # by main finding: each kill counted once
    per_host: tuple[tuple[str, int], ...]
    growth: tuple[GrowingVictim, ...]


@dataclass(frozen=True, slots=True)
class KillCount:
    """Kills of one label set, for Prometheus' oom kill counter."""

    host: str
    kind: EventKind
    comm: str | None
    cgroup: str | None
    scope: str | None
    main_finding: str | None
    kills: int
    last_time: float


# Every EventRecord field but `findings` (a table of its own), plus `day` and
# `recorded_at`, in the order of the events table.
_RECORD_COLUMNS = (
    "key", "kind", "host", "boot_id", "time", "monotonic", "seq", "scope", "cgroup",
    "victim_pid", "victim_comm", "victim_uid", "victim_oom_score_adj", "victim_rss_kb",
    "trigger_comm", "oom_constraint", "complete", "kills", "main_finding", "reaped", "detail",
    "lines",
)  # fmt: skip
_COLUMNS = (*_RECORD_COLUMNS, "day", "recorded_at")
_INSERT = (f"INSERT INTO events ({', '.join(_COLUMNS)}) VALUES"
           f" ({', '.join('?' * len(_COLUMNS))}) ON CONFLICT (key) DO NOTHING")
_SELECT = f"SELECT e.id, {', '.join('e.' + c for c in _COLUMNS)} FROM events e"
_TEXT_FIELDS = ("key", "host", "boot_id", "scope", "cgroup", "victim_comm", "trigger_comm",
                "constraint", "main_finding")
_KILL_LABELS = ("host", "kind", "victim_comm", "cgroup", "scope", "main_finding")


def default_store_url(state_dir: str) -> str:
    """`sqlite:///<state_dir>/events.sqlite`, the state directory made absolute."""
    return "sqlite://" + os.path.join(os.path.abspath(state_dir), STORE_NAME)


def open_store(url: str, *, create: bool = True) -> Store:
    """Open the store at `url` (store/backends.py: the URLs), migrating its schema.
    `create=False` (readers) creates neither an SQLite file nor the tables, and is
    NotFound without them; an older schema it still upgrades, as the next watcher
    would."""
    parsed = parse_url(url)
    db = connect(parsed, create=create)
    try:
        prepare(db, create=create)
    except BaseException:
        db.close()
        raise
    return Store(db)


class Store:
    """The event history behind one connection. One per process (and thread)."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self.backend = db.backend
        self.display = db.display

    def __enter__(self) -> Store:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        self._db.close()

    def add(self, record: EventRecord, *, now: float) -> StoredEvent | None:
        """Store `record` (committed on return) as recorded at `now`; None when a
        record with its key is stored already, which is then left as it was."""
        record = _storable(record)
        with self._db.write():
            if not self._db.run(_INSERT, (*_values(record), record.day, now)):
                return None
            event_id = int(self._db.rows("SELECT id FROM events WHERE key = ?",
                                         (record.key,))[0][0])
            for ordinal, code in enumerate(record.findings):
                self._db.run("INSERT INTO event_findings (event_id, ordinal, code)"
                             " VALUES (?, ?, ?)", (event_id, ordinal, code))
        return StoredEvent(event_id, record, now)

    def mark_reaped(self, key: str) -> bool:
        """The oom_reaper freed the victim's memory after the kill was stored. Marks
        the record and its report's victim; False when no record has `key`."""
        with self._db.write():
            found = self._db.rows("SELECT detail FROM events WHERE key = ?", (key,))
            if not found:
                return False
            detail = json.loads(found[0][0])
            if isinstance(detail.get("victim"), dict):
                detail["victim"]["reaped"] = True
            self._db.run("UPDATE events SET reaped = ?, detail = ? WHERE key = ?",
                         (True, _json(detail), key))
        return True

    def get(self, event_id: int) -> StoredEvent | None:
        found = self._select(["e.id = ?"], [event_id], limit=None)
        return found[0] if found else None

    def events(self, query: EventQuery) -> list[StoredEvent]:
        """The matching events ordered by time then id: the last `limit` of them,
        oldest first."""
        where, params = _filter(query)
        return self._select(where, params, limit=query.limit)

    def stats(self, query: EventQuery) -> EventStats:
        """Counts over every matching event (`query.limit` does not apply), read
        from one snapshot of the store."""
        where, params = _filter(query)
        with self._db.snapshot():
            events, kills = self._db.rows(
                f"SELECT COUNT(*), COALESCE(SUM(e.kills), 0) FROM events e{_and(where)}",
                params)[0]
            per = {column: self._kills_per(column, where, params)
                   for column in ("day", "victim_comm", "cgroup", "main_finding", "host")}
            growth = self._growth(where, params)
        return EventStats(
            events=int(events), kills=int(kills),
            per_day=tuple(sorted(per["day"])), per_comm=_most_first(per["victim_comm"]),
            per_cgroup=_most_first(per["cgroup"]), per_finding=_most_first(per["main_finding"]),
            per_host=_most_first(per["host"]), growth=growth,
        )  # fmt: skip

    def kill_counts(self) -> list[KillCount]:
        """Kills per label set with the time of the last one, every record counted."""
        labels = ", ".join(_KILL_LABELS)
        rows = self._db.rows(
            f"SELECT {labels}, SUM(kills), MAX(time) FROM events GROUP BY {labels}")
        counts = [KillCount(host=r[0], kind=EventKind(r[1]), comm=r[2], cgroup=r[3],
                            scope=r[4], main_finding=r[5], kills=int(r[6]),
                            last_time=float(r[7])) for r in rows]
        return sorted(counts, key=lambda c: tuple(
            "" if v is None else v for v in dataclasses.astuple(c)[:6]))

    def accounted_kills(self, host: str, boot_id: str) -> int:
        """Kills by the kernel's OOM killer stored for one boot of one host, lost ones
        included: what the watcher holds /proc/vmstat oom_kill against. A guard's
        kill is a signal from user space, which that counter never counts."""
        rows = self._db.rows("SELECT COALESCE(SUM(kills), 0) FROM events"
                             " WHERE host = ? AND boot_id = ? AND kind <> ?",
                             (host, boot_id, str(EventKind.GUARD)))
        return int(rows[0][0])

    def _select(self, where: list[str], params: list[object], *,
                limit: int | None) -> list[StoredEvent]:
        sql = f"{_SELECT}{_and(where)} ORDER BY e.time DESC, e.id DESC"
        if limit is not None:
            if limit < 0:
                raise ValueError(f"limit must be >= 0, got {limit}")
            sql += " LIMIT ?"
            params = [*params, limit]
        rows = self._db.rows(sql, params)[::-1]
        findings = self._findings([int(row[0]) for row in rows])
        return [_stored(row, findings.get(int(row[0]), ())) for row in rows]

    def _findings(self, ids: Sequence[int]) -> dict[int, tuple[str, ...]]:
        codes: dict[int, list[str]] = defaultdict(list)
        for start in range(0, len(ids), _FINDINGS_PER_QUERY):
            chunk = ids[start:start + _FINDINGS_PER_QUERY]
            for event_id, code in self._db.rows(
                    "SELECT event_id, code FROM event_findings WHERE event_id IN"
                    f" ({', '.join('?' * len(chunk))}) ORDER BY event_id, ordinal", chunk):
                codes[int(event_id)].append(code)
        return {event_id: tuple(found) for event_id, found in codes.items()}

    def _kills_per(self, column: str, where: list[str],
                   params: list[object]) -> list[tuple[str, int]]:
        rows = self._db.rows(
            f"SELECT e.{column}, SUM(e.kills) FROM events e"
            f"{_and([*where, f'e.{column} IS NOT NULL'])} GROUP BY e.{column}", params)
        return [(str(value), int(kills)) for value, kills in rows]

    def _growth(self, where: list[str], params: list[object]) -> tuple[GrowingVictim, ...]:
        # Here, not at the top: the daemons that only add events load no report code.
        from oomlens.report.summary import grows_between_kills

        sizes: dict[tuple[str, str], list[int]] = defaultdict(list)
        for host, comm, rss_kb in self._db.rows(
                "SELECT e.host, e.victim_comm, e.victim_rss_kb FROM events e"
                f"{_and([*where, 'e.victim_comm IS NOT NULL', 'e.victim_rss_kb IS NOT NULL'])}"
                " ORDER BY e.time, e.id", params):
            sizes[(host, comm)].append(int(rss_kb))
        growing = [GrowingVictim(host, comm, len(kb), tuple(kb))
                   for (host, comm), kb in sizes.items() if grows_between_kills(kb)]
        return tuple(sorted(growing, key=lambda g: (-g.kills, g.host, g.comm)))


def _filter(query: EventQuery) -> tuple[list[str], list[object]]:
    """The WHERE clauses of a query (over `events e`) and their parameters."""
    where: list[str] = []
    params: list[object] = []
    for clause, value in (("e.time >= ?", query.since), ("e.time <= ?", query.until),
                          ("e.host = ?", query.host), ("e.victim_comm = ?", query.comm),
                          ("e.kind = ?", None if query.kind is None else str(query.kind))):
        if value is not None:
            where.append(clause)
            params.append(value)
    if query.cgroup is not None:
        # Equal, or below it: the prefix with a "/" (so /a does not take /ab). A
        # trailing "/" is ignored; the root "/" is the prefix of every path.
        path = query.cgroup.rstrip("/")
        below = path + "/"
        where.append("(e.cgroup = ? OR substr(e.cgroup, 1, CAST(? AS INTEGER)) = ?)")
        params += [path or "/", len(below), below]
    if query.finding is not None:
        where.append("EXISTS (SELECT 1 FROM event_findings f"
                     " WHERE f.event_id = e.id AND f.code = ?)")
        params.append(query.finding)
    return where, params


def _and(where: list[str]) -> str:
    return " WHERE " + " AND ".join(where) if where else ""


def _most_first(counts: list[tuple[str, int]]) -> tuple[tuple[str, int], ...]:
    """By kills, most first; ties by name, the same on both databases (their
    collations differ)."""
    return tuple(sorted(counts, key=lambda item: (-item[1], item[0])))


def _json(detail: dict[str, Any]) -> str:
    return json.dumps(detail, ensure_ascii=False, separators=(",", ":"))


def _storable(record: EventRecord) -> EventRecord:
    """PostgreSQL text cannot hold NUL, and a damaged log (NUL runs after a crash)
    can put one into a line or a comm: U+FFFD instead, on both databases, so that
    they store the same. A line must not hold a newline (lines are stored joined)."""
    if any("\n" in line for line in record.lines):
        raise ValueError(f"record {record.key}: a log line contains a newline")
    changes: dict[str, Any] = {
        name: value.replace("\x00", "\ufffd") for name in _TEXT_FIELDS
        if isinstance(value := getattr(record, name), str) and "\x00" in value
    }
    if any("\x00" in line for line in record.lines):
        changes["lines"] = tuple(line.replace("\x00", "\ufffd") for line in record.lines)
    return dataclasses.replace(record, **changes) if changes else record


def _values(record: EventRecord) -> tuple[object, ...]:
    """The record's values in the order of _RECORD_COLUMNS."""
    converted: dict[str, object] = {
        "kind": str(record.kind), "oom_constraint": record.constraint,
        "detail": _json(record.detail),
        "lines": "\n".join(record.lines) if record.lines else None,
    }
    return tuple(converted[c] if c in converted else getattr(record, c)
                 for c in _RECORD_COLUMNS)


def _stored(row: tuple[Any, ...], findings: tuple[str, ...]) -> StoredEvent:
    value = dict(zip(("id", *_COLUMNS), row, strict=True))
    record = EventRecord(
        key=value["key"], kind=EventKind(value["kind"]), host=value["host"],
        boot_id=value["boot_id"], time=float(value["time"]), monotonic=value["monotonic"],
        seq=value["seq"], scope=value["scope"], cgroup=value["cgroup"],
        victim_pid=value["victim_pid"], victim_comm=value["victim_comm"],
        victim_uid=value["victim_uid"], victim_oom_score_adj=value["victim_oom_score_adj"],
        victim_rss_kb=value["victim_rss_kb"], trigger_comm=value["trigger_comm"],
        constraint=value["oom_constraint"], complete=bool(value["complete"]),
        kills=int(value["kills"]), main_finding=value["main_finding"], findings=findings,
        reaped=bool(value["reaped"]), detail=json.loads(value["detail"]),
        lines=tuple(value["lines"].split("\n")) if value["lines"] is not None else (),
    )  # fmt: skip
    return StoredEvent(int(value["id"]), record, float(value["recorded_at"]))
