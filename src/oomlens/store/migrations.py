"""The event store's schema and its versions, the same DDL on SQLite and PostgreSQL.

`oomlens_schema` holds one row per version applied; `_MIGRATIONS` maps each version
to the step that makes it from the one before. A store of a newer oomlens is
refused before anything is written to it. Steps run in one transaction that no other
process's migration runs beside (`Database.migration`: SQLite's write lock, a
PostgreSQL advisory lock), re-reading the version inside it, so a fleet of watchers
starting at once migrates a shared database exactly once.

Columns: one per `EventRecord` field (`constraint` is a reserved word, so
`oom_constraint`), `day` (the record's UTC day) so per-day counts are one GROUP BY
on both databases, `detail` as JSON text, `lines` as the log lines joined by
newlines. Findings are rows of `event_findings` in their order, the first being the
main one, so "any finding is X" is a plain join on either database.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from oomlens.errors import OomlensError
from oomlens.store.backends import Database, missing_store

VERSION_TABLE = "oomlens_schema"


def _create_v1(db: Database) -> None:
    db.run(
        f"CREATE TABLE events (id {db.id_column}, key TEXT NOT NULL UNIQUE,"
        " kind TEXT NOT NULL, host TEXT NOT NULL, boot_id TEXT NOT NULL,"
        " time DOUBLE PRECISION NOT NULL, day TEXT NOT NULL,"
        " recorded_at DOUBLE PRECISION NOT NULL, monotonic DOUBLE PRECISION, seq BIGINT,"
        " scope TEXT, cgroup TEXT, victim_pid BIGINT, victim_comm TEXT, victim_uid BIGINT,"
        " victim_oom_score_adj INTEGER, victim_rss_kb BIGINT, trigger_comm TEXT,"
        " oom_constraint TEXT, complete BOOLEAN NOT NULL, kills INTEGER NOT NULL,"
        " main_finding TEXT, reaped BOOLEAN NOT NULL, detail TEXT NOT NULL, lines TEXT)"
    )
    db.run(
        "CREATE TABLE event_findings (event_id BIGINT NOT NULL REFERENCES events(id),"
        " ordinal INTEGER NOT NULL, code TEXT NOT NULL, PRIMARY KEY (event_id, ordinal))"
    )
    db.run("CREATE INDEX events_time ON events (time, id)")
    db.run("CREATE INDEX events_host_boot ON events (host, boot_id)")
    db.run("CREATE INDEX events_comm ON events (victim_comm)")
    db.run("CREATE INDEX event_findings_code ON event_findings (code, event_id)")


_MIGRATIONS: dict[int, Callable[[Database], None]] = {1: _create_v1}
SCHEMA_VERSION = max(_MIGRATIONS)


def schema_version(db: Database) -> int:
    """The version of the store's schema (0: no oomlens tables yet); refuses one
    newer than this code."""
    if not db.table_exists(VERSION_TABLE):
        return 0
    version = int(db.rows(f"SELECT COALESCE(MAX(version), 0) FROM {VERSION_TABLE}")[0][0])
    if version > SCHEMA_VERSION:
        raise OomlensError(
            f"event store {db.display} has schema version {version}, this oomlens knows up"
            f" to {SCHEMA_VERSION}: upgrade oomlens"
        )
    return version


def prepare(db: Database, *, create: bool) -> None:
    """Check the version before anything is written, set the connection up, and
    migrate to SCHEMA_VERSION if behind (with `create`, also an empty store)."""
    version = schema_version(db)
    if version == 0 and not create:
        raise missing_store(db)
    db.setup()
    if version < SCHEMA_VERSION:
        _migrate(db)


def _migrate(db: Database) -> None:
    with db.migration():
        db.run(f"CREATE TABLE IF NOT EXISTS {VERSION_TABLE} (version INTEGER PRIMARY KEY,"
               " applied_at DOUBLE PRECISION NOT NULL)")
        for version in range(schema_version(db) + 1, SCHEMA_VERSION + 1):
            _MIGRATIONS[version](db)
            db.run(f"INSERT INTO {VERSION_TABLE} (version, applied_at) VALUES (?, ?)",
                   (version, time.time()))
