"""Store URLs, checked without a database driver (the guard checks its --store at
start and loads sqlite3 only at its first kill).

`sqlite:///ABSOLUTE/PATH` (`sqlite:////ABSOLUTE/PATH` is read the same) and
`postgresql://...` or `postgres://...` (libpq's URL syntax). A relative SQLite path
is refused: SQLAlchemy reads `sqlite:///x` as relative where file URLs read it as
absolute, and a daemon's working directory is `/`, so whichever we chose would
surprise someone; `--state-dir` is the way to put the default file elsewhere.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

from oomlens.errors import Unsupported, UsageError

_URL_FORMS = "sqlite:///ABSOLUTE/PATH or postgresql://USER@HOST/DB"
_PG_SCHEMES = ("postgresql", "postgres")


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


def password_free(message: str, url: str) -> str:
    """One line, and no password even where the driver quotes the URL back."""
    line = " ".join(message.split())
    secrets = [urlsplit(url).password or ""]
    secrets += [unquote(p[len("password="):]) for p in urlsplit(url).query.split("&")
                if p.startswith("password=")]
    for secret in filter(None, secrets):
        line = line.replace(secret, "***")
    return line


def psycopg_module() -> Any:
    try:
        import psycopg
    except ImportError as err:
        raise Unsupported("a postgresql:// store needs psycopg "
                          "(pip install 'psycopg[binary]')") from err
    return psycopg


def _check_libpq_url(url: str, display: str) -> None:
    psycopg = psycopg_module()
    try:
        psycopg.conninfo.conninfo_to_dict(url)
    except psycopg.Error as err:
        raise UsageError(f"bad store URL {display}: {password_free(str(err), url)}") from err
