"""The SQLite files oomlens keeps in its state directory (the change journal, the
event store): private, checked to be SQLite before SQLite touches them, in WAL mode,
and named in every error they cause.

Several processes share each file (a command and a daemon): WAL, so readers never
block the writer; the connection is in autocommit mode so that every write is an
explicit `BEGIN IMMEDIATE`, which takes the write lock up front and so waits in
SQLite's busy handler instead of failing on a read-to-write upgrade.
"""

from __future__ import annotations

import errno
import os
import sqlite3
import time
from dataclasses import dataclass

from oomlens.errors import AccessDenied, NotFound, OomlensError
from oomlens.system.procfs import translate_os_error

BUSY_TIMEOUT_S = 10.0
_DIR_MODE = 0o700
_FILE_MODE = 0o600
_SQLITE_MAGIC = b"SQLite format 3\x00"  # https://sqlite.org/fileformat.html, 1.3


@dataclass(frozen=True, slots=True)
class DbFile:
    """What one kind of oomlens database is called in messages ("journal"), what to
    do when it is denied, and which command creates it (for `create=False`)."""

    noun: str
    access_hint: str
    created_by: str = ""

    def os_error(self, err: OSError, path: str) -> OomlensError:
        """The one translator's error (system/procfs.py), with a hint on what to do."""
        where = err.filename if isinstance(err.filename, str) else path
        if isinstance(translate_os_error(err, where), AccessDenied):
            return AccessDenied(where, hint=self.access_hint)
        return OomlensError(f"cannot open the {self.noun} at {where}: {err.strerror}")

    def not_sqlite(self, path: str) -> OomlensError:
        return OomlensError(f"{path} is not an oomlens {self.noun}: it is not an SQLite database")

    def sqlite_error(self, err: sqlite3.Error, path: str) -> OomlensError:
        code = getattr(err, "sqlite_errorcode", None)
        if code == sqlite3.SQLITE_NOTADB:
            return self.not_sqlite(path)
        if code == sqlite3.SQLITE_PERM:
            return AccessDenied(path, hint=self.access_hint)
        return OomlensError(f"{self.noun} {path}: {err}")

    def missing(self, path: str) -> NotFound:
        creator = f" ({self.created_by} creates it)" if self.created_by else ""
        return NotFound(f"no {self.noun} at {path}{creator}")


def open_private(path: str, kind: DbFile, *, create: bool = True) -> sqlite3.Connection:
    """Connect to `path` in autocommit mode, creating its directories (0o700) and the
    file (0o600) when `create`; without it a missing file is `kind.missing`. WAL is
    not switched on here: a caller checks its schema version first, so that a file
    of a newer oomlens is refused before anything is written to it."""
    try:
        if create:
            _make_private_dirs(os.path.dirname(path))
            _create_private_file(path, kind)
        elif not os.path.exists(path):
            raise kind.missing(path)
        else:
            _require_sqlite_header(path, kind)
    except OSError as err:
        raise kind.os_error(err, path) from err
    try:
        return sqlite3.connect(path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
    except sqlite3.Error as err:
        raise kind.sqlite_error(err, path) from err


def _make_private_dirs(path: str) -> None:
    """`mkdir -p` giving every directory it creates mode 0o700 whatever the umask
    (os.makedirs gives parents the default mode); existing directories keep theirs."""
    try:
        os.mkdir(path, _DIR_MODE)
    except FileNotFoundError:
        parent = os.path.dirname(path)
        if parent == path:
            raise
        _make_private_dirs(parent)
        _make_private_dirs(path)
        return
    except FileExistsError:
        if os.path.isdir(path):
            return
        raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), path) from None
    os.chmod(path, _DIR_MODE)


def _create_private_file(path: str, kind: DbFile) -> None:
    """Create the file 0o600 before SQLite does (SQLite would use 0o644 less the
    umask; its -wal and -shm files copy this mode). An existing file must start with
    the SQLite header: SQLite takes a short file of garbage for an empty database and
    would write over it."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, _FILE_MODE)
    except FileExistsError:
        _require_sqlite_header(path, kind)
        return
    try:
        os.fchmod(fd, _FILE_MODE)
    finally:
        os.close(fd)


def _require_sqlite_header(path: str, kind: DbFile) -> None:
    with open(path, "rb") as db:
        head = db.read(len(_SQLITE_MAGIC))
    if head and head != _SQLITE_MAGIC:
        raise kind.not_sqlite(path)


def use_wal(conn: sqlite3.Connection) -> None:
    """Switch a new database to WAL (the mode then persists in the file). While another
    process switches it, SQLite fails at once with SQLITE_BUSY instead of calling the
    busy handler, which it skips where waiting could deadlock (sqlite.org/c3ref/
    busy_handler.html), so retry here until BUSY_TIMEOUT_S."""
    deadline = time.monotonic() + BUSY_TIMEOUT_S
    while conn.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
        try:
            conn.execute("PRAGMA journal_mode=WAL")
        except sqlite3.OperationalError as err:
            if err.sqlite_errorcode != sqlite3.SQLITE_BUSY or time.monotonic() > deadline:
                raise
            time.sleep(0.005)
