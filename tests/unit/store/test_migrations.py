"""The store's schema versions on both databases: a new store, an upgrade, a failed
step that leaves nothing behind, a store of a newer oomlens refused untouched, and
many processes opening one new store at once."""

from __future__ import annotations

import contextlib
import multiprocessing
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from storecases import record

from oomlens.errors import OomlensError
from oomlens.store import migrations
from oomlens.store.backends import Database, connect
from oomlens.store.db import EventQuery, open_store
from oomlens.store.urls import parse_url


@contextlib.contextmanager
def raw_db(store_url: str) -> Iterator[Database]:
    """A plain connection to the store's database, to look at (and tamper with) it."""
    db = connect(parse_url(store_url), create=False)
    try:
        yield db
    finally:
        db.close()


@pytest.fixture
def raw(store_url: str) -> Iterator[Database]:
    """A connection to a new store's database."""
    with open_store(store_url):
        pass
    with raw_db(store_url) as db:
        yield db


def versions(db: Database) -> list[int]:
    return [int(v) for (v,) in db.rows("SELECT version FROM oomlens_schema ORDER BY version")]


def indexes(db: Database) -> set[str]:
    if db.backend == "sqlite":
        sql = "SELECT name FROM sqlite_master WHERE type = 'index'"
    else:
        sql = "SELECT indexname FROM pg_indexes WHERE schemaname = current_schema()"
    return {name for (name,) in db.rows(sql)}


def test_a_new_store_is_at_the_latest_version(raw: Database) -> None:
    assert versions(raw) == [migrations.SCHEMA_VERSION] == [1]
    assert all(raw.table_exists(t) for t in ("events", "event_findings", "oomlens_schema"))
    assert {"events_time", "events_host_boot", "events_comm", "event_findings_code"} <= indexes(
        raw)


def test_reopening_migrates_nothing(store_url: str, raw: Database) -> None:
    before = raw.rows("SELECT version, applied_at FROM oomlens_schema")
    with open_store(store_url):
        pass
    assert raw.rows("SELECT version, applied_at FROM oomlens_schema") == before


def test_an_empty_sqlite_file_becomes_a_store(tmp_path: Path) -> None:
    path = tmp_path / "events.sqlite"
    path.write_bytes(b"")
    with open_store(f"sqlite://{path}") as store:
        assert store.events(EventQuery()) == []
    assert path.read_bytes().startswith(b"SQLite format 3\0")


def _add_column_v2(db: Database) -> None:
    db.run("ALTER TABLE events ADD COLUMN note TEXT")
    db.run("UPDATE events SET note = 'migrated'")


def _failing_v2(db: Database) -> None:
    db.run("CREATE TABLE half_done (x INTEGER)")
    raise OomlensError("step 2 failed")


def use_v2(monkeypatch: pytest.MonkeyPatch, step: Any) -> None:
    monkeypatch.setitem(migrations._MIGRATIONS, 2, step)
    monkeypatch.setattr(migrations, "SCHEMA_VERSION", 2)


def test_an_older_store_is_upgraded_keeping_its_events(
        store_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    with open_store(store_url) as store:
        added = store.add(record(1), now=5.0)
    use_v2(monkeypatch, _add_column_v2)
    with open_store(store_url, create=False) as store:
        assert store.events(EventQuery()) == [added]
    with raw_db(store_url) as db:
        assert versions(db) == [1, 2]
        assert db.rows("SELECT note FROM events") == [("migrated",)]


def test_a_failed_step_leaves_the_store_as_it_was(
        store_url: str, raw: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    use_v2(monkeypatch, _failing_v2)
    with pytest.raises(OomlensError, match="step 2 failed"):
        open_store(store_url)
    assert versions(raw) == [1]
    assert not raw.table_exists("half_done")


def test_a_newer_store_is_refused_untouched(store_url: str) -> None:
    with open_store(store_url):
        pass
    with raw_db(store_url) as db:
        db.run("INSERT INTO oomlens_schema (version, applied_at) VALUES (?, ?)", (7, 0.0))
    url = parse_url(store_url)
    before = Path(url.target).read_bytes() if url.backend == "sqlite" else b""
    for create in (True, False):
        with pytest.raises(OomlensError) as err:
            open_store(store_url, create=create)
        assert str(err.value) == (f"event store {url.display} has schema version 7, this "
                                  "oomlens knows up to 1: upgrade oomlens")
    if url.backend == "sqlite":
        assert Path(url.target).read_bytes() == before
        assert not os.path.exists(url.target + "-wal")
    with raw_db(store_url) as db:
        assert versions(db) == [1, 7]


def _open_and_add(url: str, n: int, start: Any, results: Any) -> None:
    try:
        start.wait(30)
        with open_store(url) as store:
            store.add(record(n), now=0.0)
        results.put("ok")
    except BaseException as err:
        results.put(f"{type(err).__name__}: {err}")


def test_many_processes_opening_a_new_store_migrate_it_once(store_url: str) -> None:
    """A fleet of watchers starting at once on one new database (PostgreSQL: the
    advisory lock; SQLite: the write lock) or one new file."""
    context = multiprocessing.get_context("fork")
    start = context.Barrier(8)
    results = context.Queue()
    children = [context.Process(target=_open_and_add, args=(store_url, n, start, results))
                for n in range(8)]
    for child in children:
        child.start()
    outcomes = [results.get(timeout=120) for _ in children]
    for child in children:
        child.join(60)
    assert outcomes == ["ok"] * 8
    with open_store(store_url, create=False) as store:
        assert len(store.events(EventQuery())) == 8
    with raw_db(store_url) as db:
        assert versions(db) == [1]
