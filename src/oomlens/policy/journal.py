"""The change journal: every write oomlens makes, recorded so it can be listed and undone.

A change is committed twice: as an *intent* before oomlens touches the system, and
with its *outcome* after, so a crash in between leaves an `intent` row ("outcome
unknown") rather than nothing. `oomlens undo` restores `old` exactly, newest first.

Several writers share the file (two commands; a command and the daemon): it is
opened as system/sqlitedb.py opens oomlens's SQLite files (private, WAL); every
write is one `BEGIN IMMEDIATE` transaction; ids from SQLite, never from Python.
`synchronous=NORMAL` keeps the file consistent after a power cut but may lose the
last commits.

The schema version is `PRAGMA user_version`; `_MIGRATIONS` maps each version to the
step that makes it from the one before. A journal of a newer oomlens is refused and
left untouched; a new `ChangeKind` or `BatchKind` therefore needs a new version.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from types import TracebackType

from oomlens.errors import NotFound, OomlensError
from oomlens.system.sqlitedb import DbFile, open_private, use_wal

JOURNAL_NAME = "journal.sqlite"
_JOURNAL_FILE = DbFile(
    "journal",
    "the journal must be writable: run oomlens as root or use a state directory you own",
)


class ChangeState(StrEnum):
    INTENT = "intent"  # recorded before the write; outcome unknown until updated
    APPLIED = "applied"
    FAILED = "failed"


class ChangeKind(StrEnum):
    OOM_SCORE_ADJ = "oom_score_adj"
    FILE = "file"
    SYSCTL = "sysctl"  # a live value in /proc/sys (version 2)


class BatchKind(StrEnum):
    COMMAND = "command"
    POLICY = "policy"
    UNDO = "undo"
    PLAN = "plan"  # `oomlens apply PLAN` (version 2)


@dataclass(frozen=True, slots=True)
class Batch:
    """One command run, enforce sweep or event: the unit `undo --last` restores.
    `plan` is the id of the doctor's plan an apply carried out (`undo --plan ID`)."""

    id: int
    at: datetime
    actor: str
    command: str
    kind: BatchKind
    plan: str | None = None


@dataclass(frozen=True, slots=True)
class Change:
    """One recorded write. `old`/`new` are `oom_score_adj` as decimal text, a sysctl's
    value as the kernel prints it, or file contents (None = the file is absent); `at`
    is when the intent was recorded; `plan` the plan id of its batch."""

    id: int
    batch: int
    at: datetime
    actor: str
    kind: ChangeKind
    target: str
    pid: int | None
    start_time_ticks: int | None
    boot_id: str | None
    comm: str
    cmdline: str
    old: str | None
    new: str | None
    cause: str
    state: ChangeState
    error: str | None
    undoes: int | None
    undone_by: int | None
    outcome_at: datetime | None = None
    plan: str | None = None


@dataclass(frozen=True, slots=True)
class Intent:
    """What a caller records before it writes; the journal adds id, batch and time."""

    kind: ChangeKind
    target: str
    old: str | None
    new: str | None
    cause: str
    pid: int | None = None
    start_time_ticks: int | None = None
    boot_id: str | None = None
    comm: str = ""
    cmdline: str = ""
    undoes: int | None = None


def _create_v1(conn: sqlite3.Connection) -> None:
    """Batches and changes. AUTOINCREMENT so a change id, once printed to a user
    ("undo 42"), never names another change, even if old rows are pruned."""
    conn.execute(
        "CREATE TABLE batches (id INTEGER PRIMARY KEY AUTOINCREMENT, at TEXT NOT NULL,"
        " actor TEXT NOT NULL, command TEXT NOT NULL, kind TEXT NOT NULL)"
    )
    conn.execute(
        "CREATE TABLE changes (id INTEGER PRIMARY KEY AUTOINCREMENT,"
        " batch INTEGER NOT NULL REFERENCES batches(id), at TEXT NOT NULL, outcome_at TEXT,"
        " kind TEXT NOT NULL, target TEXT NOT NULL, pid INTEGER, start_time_ticks INTEGER,"
        " boot_id TEXT, comm TEXT NOT NULL, cmdline TEXT NOT NULL, old TEXT, new TEXT,"
        " cause TEXT NOT NULL, state TEXT NOT NULL, error TEXT,"
        " undoes INTEGER REFERENCES changes(id), undone_by INTEGER REFERENCES changes(id))"
    )
    for column in ("pid", "batch", "at"):
        conn.execute(f"CREATE INDEX changes_{column} ON changes({column})")


def _add_plans_v2(conn: sqlite3.Connection) -> None:
    """Batches of `oomlens apply` name their plan; sysctl changes and plan batches
    appear (an older oomlens would not know those kinds, hence a version)."""
    conn.execute("ALTER TABLE batches ADD COLUMN plan TEXT")
    conn.execute("CREATE INDEX batches_plan ON batches(plan)")


_MIGRATIONS: dict[int, Callable[[sqlite3.Connection], None]] = {1: _create_v1, 2: _add_plans_v2}
SCHEMA_VERSION = max(_MIGRATIONS)

_CHANGE_COLUMNS = (
    "c.id, c.batch, c.at, b.actor, c.kind, c.target, c.pid, c.start_time_ticks, c.boot_id,"
    " c.comm, c.cmdline, c.old, c.new, c.cause, c.state, c.error, c.undoes, c.undone_by,"
    " c.outcome_at, b.plan"
)
_CHANGES_FROM = "FROM changes c JOIN batches b ON b.id = c.batch"
_INSERT_CHANGE = (
    "INSERT INTO changes (batch, at, kind, target, pid, start_time_ticks, boot_id, comm,"
    " cmdline, old, new, cause, state, undoes) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _time_text(at: datetime) -> str:
    """UTC ISO-8601 with microseconds: one fixed width, so text order is time order."""
    if at.utcoffset() is None:
        raise ValueError(f"journal times must be timezone-aware, got {at!r}")
    return at.astimezone(UTC).isoformat(timespec="microseconds")


def _parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


def _change_from_row(row: sqlite3.Row) -> Change:
    return Change(
        id=row["id"], batch=row["batch"], at=_parse_time(row["at"]), actor=row["actor"],
        kind=ChangeKind(row["kind"]), target=row["target"], pid=row["pid"],
        start_time_ticks=row["start_time_ticks"], boot_id=row["boot_id"], comm=row["comm"],
        cmdline=row["cmdline"], old=row["old"], new=row["new"], cause=row["cause"],
        state=ChangeState(row["state"]), error=row["error"], undoes=row["undoes"],
        undone_by=row["undone_by"],
        outcome_at=_parse_time(row["outcome_at"]) if row["outcome_at"] else None,
        plan=row["plan"],
    )


def _user_version(conn: sqlite3.Connection, path: str) -> int:
    """The schema version; refuses one newer than this code before anything is written."""
    version: int = conn.execute("PRAGMA user_version").fetchone()[0]
    if version > SCHEMA_VERSION:
        raise OomlensError(
            f"journal {path} has schema version {version}, this oomlens knows up to"
            f" {SCHEMA_VERSION}: upgrade oomlens"
        )
    return version


def _migrate(conn: sqlite3.Connection, path: str) -> None:
    """Run the missing steps in one write transaction, re-reading the version inside
    it: another process may have migrated since we looked."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        for version in range(_user_version(conn, path) + 1, SCHEMA_VERSION + 1):
            _MIGRATIONS[version](conn)
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        conn.execute("COMMIT")
    except BaseException:
        conn.rollback()
        raise


def _prepare(conn: sqlite3.Connection, path: str) -> None:
    """Check the version before anything is written, then set the connection up."""
    version = _user_version(conn, path)
    use_wal(conn)
    if version < SCHEMA_VERSION:
        _migrate(conn, path)
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA foreign_keys=ON")


class Journal:
    """The journal in one state directory. One instance per process (and thread):
    a SQLite connection must not cross a fork."""

    def __init__(self, conn: sqlite3.Connection, path: str, clock: Callable[[], datetime]) -> None:
        self._conn = conn
        self.path = path
        self._clock = clock

    @classmethod
    def open(cls, state_dir: str, *, clock: Callable[[], datetime] = _utc_now) -> Journal:
        """Open (creating if missing) `state_dir/journal.sqlite`, migrating it to
        SCHEMA_VERSION. `clock` returns aware datetimes; tests inject a fake one."""
        path = os.path.join(os.path.abspath(state_dir), JOURNAL_NAME)
        conn = open_private(path, _JOURNAL_FILE)
        try:
            _prepare(conn, path)
        except sqlite3.Error as err:
            conn.close()
            raise _JOURNAL_FILE.sqlite_error(err, path) from err
        except BaseException:
            conn.close()
            raise
        conn.row_factory = sqlite3.Row
        return cls(conn, path, clock)

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One BEGIN IMMEDIATE transaction, committed on success, rolled back otherwise."""
        try:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
                self._conn.execute("COMMIT")
            except BaseException:
                self._conn.rollback()
                raise
        except sqlite3.Error as err:
            raise _JOURNAL_FILE.sqlite_error(err, self.path) from err

    def _query(self, sql: str, params: Sequence[object] = ()) -> list[sqlite3.Row]:
        try:
            return self._conn.execute(sql, params).fetchall()
        except sqlite3.Error as err:
            raise _JOURNAL_FILE.sqlite_error(err, self.path) from err

    def _now(self) -> datetime:
        return _parse_time(_time_text(self._clock()))

    def begin_batch(self, actor: str, command: str, kind: BatchKind,
                    plan: str | None = None) -> Batch:
        at = self._now()
        with self._write() as conn:
            cur = conn.execute(
                "INSERT INTO batches (at, actor, command, kind, plan) VALUES (?, ?, ?, ?, ?)",
                (_time_text(at), actor, command, kind.value, plan),
            )
        return Batch(id=_inserted_id(cur), at=at, actor=actor, command=command, kind=kind,
                     plan=plan)

    def record_intents(self, batch: Batch, intents: Sequence[Intent]) -> list[int]:
        """Record every intent in one committed transaction, before any write is made;
        returns the change ids in the order of `intents`."""
        at = _time_text(self._now())
        ids: list[int] = []
        with self._write() as conn:
            self._require(conn, "batches", "batch", batch.id)
            for intent in intents:
                if intent.undoes is not None:
                    self._require(conn, "changes", "change", intent.undoes)
                cur = conn.execute(_INSERT_CHANGE, (
                    batch.id, at, intent.kind.value, intent.target, intent.pid,
                    intent.start_time_ticks, intent.boot_id, intent.comm, intent.cmdline,
                    intent.old, intent.new, intent.cause, ChangeState.INTENT.value,
                    intent.undoes,
                ))
                ids.append(_inserted_id(cur))
        return ids

    def record_outcome(self, change_id: int, state: ChangeState,
                       error: str | None = None) -> None:
        """Complete an intent. An applied undo marks the change it restores as undone
        by it in the same transaction, so undo can never be listed as still to do."""
        if state is ChangeState.INTENT:
            raise ValueError("an outcome is APPLIED or FAILED")
        with self._write() as conn:
            row = conn.execute(
                "SELECT state, undoes FROM changes WHERE id = ?", (change_id,)
            ).fetchone()
            if row is None:
                raise self._missing("change", change_id)
            if row[0] != ChangeState.INTENT:
                raise OomlensError(f"change #{change_id} already has an outcome ({row[0]})")
            conn.execute(
                "UPDATE changes SET state = ?, error = ?, outcome_at = ? WHERE id = ?",
                (state.value, error, _time_text(self._now()), change_id),
            )
            if state is ChangeState.APPLIED and row[1] is not None:
                conn.execute(
                    "UPDATE changes SET undone_by = ? WHERE id = ? AND undone_by IS NULL",
                    (change_id, row[1]),
                )

    def change(self, change_id: int) -> Change:
        found = self._select(["c.id = ?"], [change_id])
        if not found:
            raise self._missing("change", change_id)
        return found[0]

    def changes(self, *, since: datetime | None = None, batch: int | None = None,
                pid: int | None = None, limit: int | None = None) -> list[Change]:
        """Changes oldest first; `limit` keeps the newest N (still oldest first)."""
        where: list[str] = []
        params: list[object] = []
        for clause, value in (("c.at >= ?", since), ("c.batch = ?", batch), ("c.pid = ?", pid)):
            if value is not None:
                where.append(clause)
                params.append(_time_text(value) if isinstance(value, datetime) else value)
        return self._select(where, params, limit=limit)[::-1]

    def undoable(self, *, since: datetime | None = None, last_batch: bool = False,
                 plan: str | None = None) -> list[Change]:
        """Changes an undo should restore, newest first: applied or of unknown outcome
        (a crash may have left the write done), not undone yet, and not themselves part
        of an undo. `last_batch` keeps the most recent batch that still has any; `plan`
        the batches that applied that plan."""
        where = ["c.state IN (?, ?)", "c.undone_by IS NULL", "b.kind != ?"]
        params: list[object] = [ChangeState.APPLIED.value, ChangeState.INTENT.value,
                                 BatchKind.UNDO.value]
        for clause, value in (("c.at >= ?", None if since is None else _time_text(since)),
                              ("b.plan = ?", plan)):
            if value is not None:
                where.append(clause)
                params.append(value)
        if last_batch:
            newest = f"SELECT MAX(c.batch) {_CHANGES_FROM} WHERE {' AND '.join(where)}"
            where = [*where, f"c.batch = ({newest})"]
            params = params * 2
        return self._select(where, params)

    def plan_applied(self, plan: str) -> bool:
        """Whether any batch applied the plan `plan`."""
        return bool(self._query("SELECT 1 FROM batches WHERE plan = ? LIMIT 1", [plan]))

    def _select(self, where: list[str], params: list[object], *,
                limit: int | None = None) -> list[Change]:
        """Changes matching every clause in `where`, newest first."""
        sql = f"SELECT {_CHANGE_COLUMNS} {_CHANGES_FROM}"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY c.id DESC"
        if limit is not None:
            if limit < 0:
                raise ValueError(f"limit must be >= 0, got {limit}")
            sql += " LIMIT ?"
            params = [*params, limit]
        return [_change_from_row(row) for row in self._query(sql, params)]

    def _require(self, conn: sqlite3.Connection, table: str, noun: str, row_id: int) -> None:
        if conn.execute(f"SELECT 1 FROM {table} WHERE id = ?", (row_id,)).fetchone() is None:
            raise self._missing(noun, row_id)

    def _missing(self, noun: str, row_id: int) -> NotFound:
        return NotFound(f"no {noun} #{row_id} in the journal {self.path}")


def _inserted_id(cur: sqlite3.Cursor) -> int:
    if cur.lastrowid is None:
        raise OomlensError("SQLite returned no id for an inserted row")
    return cur.lastrowid
