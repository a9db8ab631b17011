"""Store URLs and opening a store: what each URL means, the one-line errors of bad
ones (never with a password), a missing or foreign SQLite file, a PostgreSQL server
that cannot be reached, and the modes of the files the store creates."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from storecases import record

from oomlens.errors import NotFound, OomlensError, UsageError
from oomlens.store.db import EventQuery, default_store_url, open_store
from oomlens.store.urls import parse_url

PASSWORD = "hunter2-s3cret"


class TestUrls:
    def test_default_is_the_state_directory_made_absolute(self, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch,
                                                          ) -> None:
        assert default_store_url("/var/lib/oomlens") == "sqlite:///var/lib/oomlens/events.sqlite"
        monkeypatch.chdir(tmp_path)
        assert default_store_url("state") == f"sqlite://{tmp_path}/state/events.sqlite"

    @pytest.mark.parametrize(("url", "path"), [
        ("sqlite:///var/lib/oomlens/events.sqlite", "/var/lib/oomlens/events.sqlite"),
        ("sqlite:////var/lib/oomlens/events.sqlite", "/var/lib/oomlens/events.sqlite"),
        ("sqlite:///tmp/with%20space.db", "/tmp/with space.db"),
        ("SQLITE:///x.db", "/x.db"),
    ])  # fmt: skip
    def test_sqlite_paths(self, url: str, path: str) -> None:
        parsed = parse_url(url)
        assert (parsed.backend, parsed.target, parsed.display) == ("sqlite", path, url)

    @pytest.mark.parametrize(("url", "display"), [
        (f"postgresql://oomlens:{PASSWORD}@db.example:5433/oom",
         "postgresql://oomlens@db.example:5433/oom"),
        (f"postgres://oomlens:{PASSWORD}@[::1]/oom?sslmode=require",
         "postgres://oomlens@[::1]/oom?sslmode=require"),
        (f"postgresql://db.example/oom?password={PASSWORD}&sslmode=verify-full",
         "postgresql://db.example/oom?sslmode=verify-full"),
        ("postgresql:///oom?host=/run/postgresql", "postgresql:///oom?host=/run/postgresql"),
    ])  # fmt: skip
    def test_postgresql_display_has_no_password(self, url: str, display: str) -> None:
        parsed = parse_url(url)
        assert (parsed.backend, parsed.target, parsed.display) == ("postgresql", url, display)

    @pytest.mark.parametrize(("url", "message"), [
        ("", "unsupported store URL: use sqlite:///ABSOLUTE/PATH or postgresql://USER@HOST/DB"),
        ("/var/lib/oomlens/events.sqlite",
         "unsupported store URL: use sqlite:///ABSOLUTE/PATH or postgresql://USER@HOST/DB"),
        (f"mysql://root:{PASSWORD}@db/oom", "unsupported store URL (scheme 'mysql'): use "
         "sqlite:///ABSOLUTE/PATH or postgresql://USER@HOST/DB"),
        ("sqlite://host/x.db", "bad store URL sqlite://host/x.db: an SQLite URL has no host, "
         "query or fragment (use sqlite:///ABSOLUTE/PATH)"),
        ("sqlite:///x.db?mode=ro", "bad store URL sqlite:///x.db?mode=ro: an SQLite URL has "
         "no host, query or fragment (use sqlite:///ABSOLUTE/PATH)"),
        ("sqlite:events.sqlite", "bad store URL sqlite:events.sqlite: the SQLite path must be "
         "absolute (sqlite:///ABSOLUTE/PATH)"),
        ("sqlite:///var/lib/", "bad store URL sqlite:///var/lib/: it names a directory, not a "
         "file"),
        (f"postgresql://u:{PASSWORD}@[::1/oom", "bad store URL: Invalid IPv6 URL (use "
         "sqlite:///ABSOLUTE/PATH or postgresql://USER@HOST/DB)"),
        (f"postgresql://u:{PASSWORD}@db/oom?no_such_option=1", "bad store URL "
         "postgresql://u@db/oom?no_such_option=1: invalid URI query parameter: "
         "\"no_such_option\""),
    ])  # fmt: skip
    def test_bad_urls_are_usage_errors_of_one_line(self, url: str, message: str) -> None:
        with pytest.raises(UsageError) as err:
            open_store(url)
        assert str(err.value) == message

    def test_a_password_the_driver_quotes_back_is_hidden(self) -> None:
        url = f"postgresql://u:{PASSWORD} x@db/oom"
        with pytest.raises(UsageError) as err:
            parse_url(url)
        assert PASSWORD not in str(err.value)
        assert "\n" not in str(err.value)


def mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


class TestSqliteFile:
    def test_missing_with_create_false_is_not_found_and_creates_nothing(
            self, tmp_path: Path) -> None:
        url = default_store_url(str(tmp_path / "state"))
        with pytest.raises(NotFound) as err:
            open_store(url, create=False)
        path = tmp_path / "state" / "events.sqlite"
        assert str(err.value) == f"no event store at {path} (oomlens watch creates it)"
        assert not (tmp_path / "state").exists()

    def test_an_empty_file_with_create_false_is_not_found(self, tmp_path: Path) -> None:
        (tmp_path / "events.sqlite").write_bytes(b"")
        with pytest.raises(NotFound):
            open_store(f"sqlite://{tmp_path}/events.sqlite", create=False)
        assert (tmp_path / "events.sqlite").read_bytes() == b""

    @pytest.mark.parametrize("create", [True, False])
    @pytest.mark.parametrize("content", [
        b"x", b"#!/bin/sh\necho not a store\n" * 40, b"\0" * 4096,
        b"SQLite format 3\0" + bytes(range(256)) * 4,
    ], ids=["one-byte", "script", "zeros", "bad-pages"])  # fmt: skip
    def test_a_foreign_file_is_refused_and_left_alone(self, tmp_path: Path, content: bytes,
                                                      create: bool) -> None:
        path = tmp_path / "events.sqlite"
        path.write_bytes(content)
        with pytest.raises(OomlensError) as err:
            open_store(f"sqlite://{path}", create=create)
        assert str(err.value) == (f"{path} is not an oomlens event store: it is not an SQLite "
                                  "database")
        assert path.read_bytes() == content

    def test_created_directories_and_files_are_private(self, tmp_path: Path) -> None:
        old_umask = os.umask(0o022)
        try:
            with open_store(default_store_url(str(tmp_path / "var" / "oomlens"))) as store:
                store.add(record(1), now=0.0)
                wal_mode = mode(tmp_path / "var" / "oomlens" / "events.sqlite-wal")
        finally:
            os.umask(old_umask)
        state = tmp_path / "var" / "oomlens"
        assert [mode(tmp_path / "var"), mode(state)] == [0o700, 0o700]
        assert mode(state / "events.sqlite") == wal_mode == 0o600

    def test_reopened_store_keeps_its_events(self, tmp_path: Path) -> None:
        url = default_store_url(str(tmp_path))
        with open_store(url) as store:
            added = store.add(record(1), now=0.0)
        with open_store(url, create=False) as store:
            assert store.events(EventQuery()) == [added]
            assert (store.backend, store.display) == ("sqlite", url)


class TestPostgresql:
    def test_unreachable_server_names_host_and_database_not_the_password(
            self, tmp_path: Path) -> None:
        url = f"postgresql://oomlens:{PASSWORD}@/oom?host={tmp_path}&connect_timeout=2"
        with pytest.raises(OomlensError) as err:
            open_store(url)
        message = str(err.value)
        assert message.startswith(f"cannot connect to the event store postgresql://oomlens@/oom"
                                  f"?host={tmp_path}&connect_timeout=2: ")
        assert str(tmp_path) in message
        assert PASSWORD not in message
        assert "\n" not in message

    def test_unknown_database_on_a_live_server(self, postgres_url: str) -> None:
        url = postgres_url.replace("/postgres?", f"/no_such_db?password={PASSWORD}&")
        with pytest.raises(OomlensError) as err:
            open_store(url)
        assert 'database "no_such_db" does not exist' in str(err.value)
        assert PASSWORD not in str(err.value)

    def test_an_empty_database_with_create_false_is_not_found(self,
                                                              postgres_db_url: str) -> None:
        with pytest.raises(NotFound) as err:
            open_store(postgres_db_url, create=False)
        assert str(err.value) == (f"no event store in {postgres_db_url}: the database has no "
                                  "oomlens tables (oomlens watch creates them)")

    def test_backend_and_display(self, postgres_db_url: str) -> None:
        with open_store(postgres_db_url) as store:
            assert (store.backend, store.display) == ("postgresql", postgres_db_url)
