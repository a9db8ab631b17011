"""The two databases the event store runs on, behind one small interface: SQL text
with `?` placeholders in, tuples out, transactions begun explicitly.

SQLite is the default: a private file in the state directory, opened as every
oomlens SQLite file is (system/sqlitedb.py). PostgreSQL is for a fleet writing to
one place; psycopg is imported only for a postgresql:// URL, so the watcher daemon
loads no driver it does not use. The store's queries are the same text on both;
what differs (placeholders, the id column, how to begin, how to look for a table,
the errors) is here and nowhere else.

URLs: `sqlite:///ABSOLUTE/PATH` (`sqlite:////ABSOLUTE/PATH` is read the same) and
`postgresql://...` or `postgres://...` (libpq's URL syntax). A relative SQLite path
is refused: SQLAlchemy reads `sqlite:///x` as relative where file URLs read it as
absolute, and a daemon's working directory is `/`, so whichever we chose would
surprise someone; `--state-dir` is the way to put the default file elsewhere.
"""

from __future__ import annotations

import abc
import contextlib
import sqlite3
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

from oomlens.errors import NotFound, OomlensError, Unsupported, UsageError
from oomlens.system.sqlitedb import DbFile, open_private, use_wal

if TYPE_CHECKING:
    import psycopg

STORE_NAME = "events.sqlite"
STORE_FILE = DbFile(
    "event store",
    "the event store must be writable: run oomlens as root or use a state directory you own",
    created_by="oomlens watch",
)
_URL_FORMS = "sqlite:///ABSOLUTE/PATH or postgresql://USER@HOST/DB"
_PG_SCHEMES = ("postgresql", "postgres")
PG_CONNECT_TIMEOUT_S = 10


@dataclass(frozen=True, slots=True)
class StoreUrl:
    backend: str  # "sqlite" | "postgresql"
    target: str  # the file's path, or the URL as libpq takes it
    display: str  # the URL without a password, for messages and output


def parse_url(url: str) -> StoreUrl:
    """Check a store URL without connecting; a bad one is a UsageError that names
    what is wrong and never echoes a password."""
    try:
        parts = urlsplit(url)
    except ValueError as err:  # "Invalid IPv6 URL"; it does not quote the URL
        raise UsageError(f"bad store URL: {err} (use {_URL_FORMS})") from err
    if parts.scheme == "sqlite":
        return StoreUrl("sqlite", _sqlite_path(url), url)
    if parts.scheme in _PG_SCHEMES:
        display = _without_password(url)
        _check_libpq_url(url, display)
        return StoreUrl("postgresql", url, display)
    scheme = f" (scheme {parts.scheme!r})" if parts.scheme else ""
    raise UsageError(f"unsupported store URL{scheme}: use {_URL_FORMS}")


def _sqlite_path(url: str) -> str:
    parts = urlsplit(url)
    if parts.netloc or parts.query or parts.fragment:
        raise UsageError(f"bad store URL {url}: an SQLite URL has no host, query or "
                         "fragment (use sqlite:///ABSOLUTE/PATH)")
    path = unquote(parts.path)
    if not path.startswith("/"):
        raise UsageError(f"bad store URL {url}: the SQLite path must be absolute "
                         "(sqlite:///ABSOLUTE/PATH)")
    if path.endswith("/"):
        raise UsageError(f"bad store URL {url}: it names a directory, not a file")
    return "/" + path.lstrip("/")


def _without_password(url: str) -> str:
    """The URL with the password left out of the user info and the query."""
    parts = urlsplit(url)
    userinfo, at, hostport = parts.netloc.rpartition("@")
    netloc = f"{userinfo.partition(':')[0]}{at}{hostport}"
    query = "&".join(p for p in parts.query.split("&") if not p.startswith("password="))
    scheme = url.partition(":")[0]
    return (f"{scheme}://{netloc}{parts.path}" + (f"?{query}" if query else "")
            + (f"#{parts.fragment}" if parts.fragment else ""))


def _password_free(message: str, url: str) -> str:
    """One line, and no password even where the driver quotes the URL back."""
    line = " ".join(message.split())
    secrets = [urlsplit(url).password or ""]
    secrets += [unquote(p[len("password="):]) for p in urlsplit(url).query.split("&")
                if p.startswith("password=")]
    for secret in filter(None, secrets):
        line = line.replace(secret, "***")
    return line


def _psycopg() -> Any:
    try:
        import psycopg
    except ImportError as err:
        raise Unsupported("a postgresql:// store needs psycopg "
                          "(pip install 'psycopg[binary]')") from err
    return psycopg


def _check_libpq_url(url: str, display: str) -> None:
    psycopg = _psycopg()
    try:
        psycopg.conninfo.conninfo_to_dict(url)
    except psycopg.Error as err:
        raise UsageError(f"bad store URL {display}: {_password_free(str(err), url)}") from err


class Database(abc.ABC):
    """One connection in autocommit mode: every statement commits on its own unless
    a `write`, `snapshot` or `migration` block groups them. One per process (and
    thread): a connection must not cross a fork."""

    backend = ""
    id_column = ""  # the DDL of an ever-increasing id, never reused
    _table_exists_sql = ""
    _begin_write = "BEGIN"
    _begin_snapshot = "BEGIN"

    def __init__(self, conn: Any, display: str) -> None:
        self._conn = conn
        self.display = display

    def rows(self, sql: str, params: Sequence[object] = ()) -> list[tuple[Any, ...]]:
        with self._errors():
            return list(self._conn.execute(self._sql(sql), params).fetchall())

    def run(self, sql: str, params: Sequence[object] = ()) -> int:
        """Execute a statement that returns no rows; how many rows it changed."""
        with self._errors():
            count: int = self._conn.execute(self._sql(sql), params).rowcount
            return count

    def table_exists(self, name: str) -> bool:
        return bool(self.rows(self._table_exists_sql, (name,)))

    @contextlib.contextmanager
    def write(self) -> Iterator[None]:
        """One transaction, committed on success, rolled back otherwise; it takes
        the write lock at its start (see `_begin_write`)."""
        with self._transaction(self._begin_write):
            yield

    @contextlib.contextmanager
    def snapshot(self) -> Iterator[None]:
        """Reads that see one state of the store, whatever is written meanwhile."""
        with self._transaction(self._begin_snapshot):
            yield

    @contextlib.contextmanager
    def migration(self) -> Iterator[None]:
        """A write transaction that no other process's migration runs beside."""
        with self.write():
            yield

    @abc.abstractmethod
    def setup(self) -> None:
        """Connection settings made once the schema version was found acceptable."""

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._conn.close()

    @contextlib.contextmanager
    def _transaction(self, begin: str) -> Iterator[None]:
        self.run(begin)
        try:
            yield
        except BaseException:
            with contextlib.suppress(Exception):  # a broken connection cannot roll back
                self._conn.execute("ROLLBACK")
            raise
        self.run("COMMIT")

    def _sql(self, sql: str) -> str:
        return sql

    @abc.abstractmethod
    def _errors(self) -> contextlib.AbstractContextManager[None]:
        """Turns the driver's errors into oomlens errors that name the store."""


class SqliteDatabase(Database):
    backend = "sqlite"
    id_column = "INTEGER PRIMARY KEY AUTOINCREMENT"
    _table_exists_sql = "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?"
    # Takes the write lock up front, so a writer waits in the busy handler instead of
    # failing when a read would have to become a write (system/sqlitedb.py).
    _begin_write = "BEGIN IMMEDIATE"

    def __init__(self, conn: sqlite3.Connection, display: str, path: str) -> None:
        super().__init__(conn, display)
        self.path = path

    def setup(self) -> None:
        with self._errors():
            use_wal(self._conn)
            self._conn.execute("PRAGMA synchronous=NORMAL")

    @contextlib.contextmanager
    def _errors(self) -> Iterator[None]:
        try:
            yield
        except sqlite3.Error as err:
            raise STORE_FILE.sqlite_error(err, self.path) from err


class PostgresDatabase(Database):
    backend = "postgresql"
    id_column = "BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY"
    _table_exists_sql = ("SELECT 1 FROM information_schema.tables"
                         " WHERE table_schema = current_schema() AND table_name = ?")
    _begin_snapshot = "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"
    # pg_advisory_xact_lock(): hosts that start at once migrate one after the other
    # (the key is "oomlens" in ASCII; it is freed when the transaction ends).
    _MIGRATION_LOCK = 0x6F6F6D6C656E73

    def __init__(self, conn: psycopg.Connection[Any], display: str, url: str) -> None:
        super().__init__(conn, display)
        self._url = url
        self._error_class: type[Exception] = _psycopg().Error

    def setup(self) -> None:
        """Nothing to set: the server's defaults are the store's."""

    @contextlib.contextmanager
    def migration(self) -> Iterator[None]:
        with self.write():
            self.rows("SELECT pg_advisory_xact_lock(?)", (self._MIGRATION_LOCK,))
            yield

    def _sql(self, sql: str) -> str:
        """psycopg's placeholders are `%s` (so a literal `%` is `%%`)."""
        return sql.replace("%", "%%").replace("?", "%s")

    @contextlib.contextmanager
    def _errors(self) -> Iterator[None]:
        try:
            yield
        except self._error_class as err:
            message = _password_free(str(err), self._url)
            raise OomlensError(f"event store {self.display}: {message}") from err


def connect(url: StoreUrl, *, create: bool) -> Database:
    if url.backend == "sqlite":
        conn = open_private(url.target, STORE_FILE, create=create)
        return SqliteDatabase(conn, url.display, url.target)
    psycopg = _psycopg()
    params = psycopg.conninfo.conninfo_to_dict(url.target)
    params.setdefault("connect_timeout", str(PG_CONNECT_TIMEOUT_S))
    params.setdefault("application_name", "oomlens")
    try:
        conn = psycopg.connect(psycopg.conninfo.make_conninfo(**params), autocommit=True)
    except psycopg.Error as err:
        message = _password_free(str(err), url.target)
        raise OomlensError(f"cannot connect to the event store {url.display}: {message}") from err
    return PostgresDatabase(conn, url.display, url.target)


def missing_store(db: Database) -> NotFound:
    """The error for a store that `create=False` found without its tables."""
    if isinstance(db, SqliteDatabase):
        return STORE_FILE.missing(db.path)
    return NotFound(f"no event store in {db.display}: the database has no oomlens tables "
                    "(oomlens watch creates them)")
