"""Where the kernel log is on this machine, and its lines as raw text.

The thin I/O layer under `oomlens report`: find the sources (the live ring buffer,
the journal, syslog files with their rotations, or whatever the user named) and
yield their lines. Nothing here parses a line (`report/lines.py` strips the
prefixes) and nothing follows a log: each source is read as it is now, to its end.

A source that cannot be read is a `SourceProblem`, never an exception, so that one
bad file does not hide the others; errors met while reading are OomlensErrors that
name the source, raised after the lines already yielded (which stay valid).
"""

from __future__ import annotations

import io
import os
import re
import stat
import sys
import time
from collections.abc import Generator, Iterable, Iterator, Sequence
from contextlib import closing
from dataclasses import dataclass
from typing import TYPE_CHECKING, BinaryIO, Literal, Protocol, cast

from oomlens.errors import AccessDenied, NotFound, OomlensError, Unsupported
from oomlens.system.kmsg import KmsgReader, KmsgRecord
from oomlens.system.procfs import read_text, translate_os_error

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

SourceKind = Literal["kmsg", "dmesg", "journal", "file", "stdin"]

SYSLOG_NAMES = ("messages", "kern.log", "syslog")
DMESG_ARGV = ("dmesg", "--kernel", "--nopager")
# `journalctl -k` reads only the current boot; the match reads every boot kept.
JOURNAL_ARGV = ("journalctl", "_TRANSPORT=kernel", "-o", "short-iso", "--no-pager", "-q")
RUNTIME_JOURNAL = "/run/log/journal"

_KMSG_DEVICE = (1, 11)  # major, minor: Documentation/admin-guide/devices.txt
_COMPRESSED_SUFFIXES = (".gz", ".xz", ".bz2", ".zst")
# `kern.log.2` (logrotate's default) or `messages-20250101` (its `dateext`).
_ROTATION = re.compile(r"(?P<stem>.+?)(?:\.(?P<num>\d+)|-(?P<date>\d{4}-?\d\d-?\d\d[\d-]*))?")
_GZIP_MAGIC = b"\x1f\x8b"
_XZ_MAGIC = b"\xfd7zXZ\x00"
_BZIP2_MAGIC = re.compile(rb"BZh[1-9]")
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_JOURNAL_MAGIC = "LPKSHHRH"  # systemd: src/libsystemd/sd-journal/journal-def.h
_HEAD_SIZE = 8
_SNIFF_SIZE = 8192
# Kernel lines are < 1 KiB (LOG_LINE_MAX); the cap keeps memory flat on a file
# that has no newlines at all.
CHUNK_SIZE = 1 << 20


@dataclass(frozen=True, slots=True)
class LogSource:
    """One place to read kernel lines from.

    `name` is what the user sees ("/dev/kmsg", "journalctl -k", a path, "-").
    `year` and `month` are the local year and month of a file's mtime, since
    syslog prefixes carry no year: the mtime is the last write, so a line dated
    in a later month than the mtime's is from the year before. `boot_time` (epoch
    seconds, `btime` in /proc/stat) turns ring-buffer timestamps into wall-clock
    time; it drifts by the time spent suspended, which the ring buffer's clock
    does not count.
    """

    name: str
    kind: SourceKind
    path: str | None
    year: int | None
    boot_time: float | None
    month: int | None = None


@dataclass(frozen=True, slots=True)
class SourceProblem:
    """A source that will not be read, and why (one sentence, without the name)."""

    name: str
    message: str


class _ByteStream(Protocol):
    def read1(self, size: int = -1, /) -> bytes: ...
    def close(self) -> None: ...


def default_sources(
    *, log_dir: str = "/var/log", kmsg: str = "/dev/kmsg", proc_root: str = "/proc"
) -> tuple[list[LogSource], list[SourceProblem]]:
    """This machine's kernel logs: the ring buffer (`/dev/kmsg`, else `dmesg`), the
    journal, then `messages`, `kern.log` and `syslog` in `log_dir` with their
    rotations, each family oldest first. Missing files are not sources."""
    sources: list[LogSource] = []
    problems: list[SourceProblem] = []
    _add(_ring_buffer_source(kmsg, proc_root), sources, problems)
    if _journal_available(log_dir):
        sources.append(LogSource("journalctl -k", "journal", None, None, None))
    try:
        names = os.listdir(log_dir)
    except FileNotFoundError:
        names = []
    except OSError as err:
        problems.append(_problem(err, log_dir))
        names = []
    paths = [os.path.join(log_dir, n) for n in names if _split_name(n)[0] in SYSLOG_NAMES]
    for path in sorted(paths, key=_order_key):
        _add(_file_source(path, proc_root), sources, problems)
    return sources, problems


def explicit_sources(
    args: Sequence[str], *, proc_root: str = "/proc"
) -> tuple[list[LogSource], list[SourceProblem]]:
    """The sources the user named: files, `-` for stdin, or directories searched
    recursively for log files (oldest rotation first). The same file named twice
    is read once."""
    sources: list[LogSource] = []
    problems: list[SourceProblem] = []
    for arg in args:
        if arg == "-":
            found: list[LogSource | SourceProblem] = [LogSource("-", "stdin", None, None, None)]
        elif os.path.isdir(arg):
            found = _search(arg, proc_root)
        else:
            found = [_file_source(arg, proc_root)]
        for result in found:
            _add(result, sources, problems)
    return _unique(sources), problems


def read_chunks(source: LogSource, stdin: BinaryIO | None = None) -> Generator[bytes, None, None]:
    """The bytes of `source` in chunks of up to CHUNK_SIZE, as they are read (a
    chunk may end mid-line). Compressed data (gzip, xz, bzip2) is recognised by its
    magic bytes and decompressed as it streams. /dev/kmsg records come in its wire
    format `prio,seq,ts_us,-;message`, one per line.

    Errors (unreadable file, corrupt data, failed command) are raised as
    OomlensErrors while iterating, after the data read before them.
    """
    if source.kind == "kmsg":
        return _kmsg_chunks(source.path or source.name)
    if source.kind == "dmesg":
        return _command_chunks(DMESG_ARGV, source.name)
    if source.kind == "journal":
        return _command_chunks(JOURNAL_ARGV, source.name)
    if source.kind == "stdin":
        return _decoded_chunks(stdin if stdin is not None else sys.stdin.buffer, source.name)
    return _file_chunks(source.path or source.name)


def plain_file_size(source: LogSource) -> int | None:
    """The size of `source` if it is an uncompressed regular file (it can then be
    read in parallel pieces), else None."""
    if source.kind != "file" or source.path is None:
        return None
    try:
        with open(source.path, "rb", opener=os.open) as raw:
            info = os.fstat(raw.fileno())
            head = raw.read(_HEAD_SIZE)
    except OSError:
        return None
    compressed = (head.startswith((_GZIP_MAGIC, _XZ_MAGIC, _ZSTD_MAGIC))
                  or _BZIP2_MAGIC.match(head) is not None)  # fmt: skip
    return info.st_size if stat.S_ISREG(info.st_mode) and not compressed else None


# --- discovery ------------------------------------------------------------------------


def _add(
    result: LogSource | SourceProblem | None,
    sources: list[LogSource],
    problems: list[SourceProblem],
) -> None:
    if isinstance(result, LogSource):
        sources.append(result)
    elif isinstance(result, SourceProblem):
        problems.append(result)


def _unique(sources: list[LogSource]) -> list[LogSource]:
    seen: set[str] = set()
    unique: list[LogSource] = []
    for source in sources:
        key = source.name if source.path is None else os.path.realpath(source.path)
        if key not in seen:
            seen.add(key)
            unique.append(source)
    return unique


def _ring_buffer_source(kmsg: str, proc_root: str) -> LogSource | SourceProblem | None:
    """`/dev/kmsg` if it opens; else `dmesg`, which may still get in (through
    syslog(2)); else a problem, unless there is no kmsg at all (a container)."""
    import shutil

    boot_time = _boot_time(proc_root)
    try:
        os.close(os.open(kmsg, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC))
    except OSError as err:
        if shutil.which(DMESG_ARGV[0]):
            return LogSource("dmesg", "dmesg", None, None, boot_time)
        if isinstance(err, FileNotFoundError):
            return None
        return _problem(err, kmsg)
    return LogSource(kmsg, "kmsg", kmsg, None, boot_time)


def _journal_available(log_dir: str) -> bool:
    import shutil

    has_journal = any(os.path.isdir(d) for d in (os.path.join(log_dir, "journal"), RUNTIME_JOURNAL))
    return has_journal and shutil.which(JOURNAL_ARGV[0]) is not None


def _boot_time(proc_root: str) -> float | None:
    try:
        text = read_text(os.path.join(proc_root, "stat"))
    except OSError:
        return None
    return parse_btime(text)


def parse_btime(text: str) -> float | None:
    """`btime` of /proc/stat: the boot time in epoch seconds (fs/proc/stat.c)."""
    for line in text.splitlines():
        if line.startswith("btime "):
            return float(line.split()[1])
    return None


def _split_name(name: str) -> tuple[str, tuple[int, str, int]]:
    """The family of a log file's name and its place in the family's timeline:
    date-suffixed rotations by date, then numbered ones from the highest number
    (the oldest), then the live file."""
    base = name
    for suffix in _COMPRESSED_SUFFIXES:
        if base.endswith(suffix):
            base = base.removesuffix(suffix)
            break
    match = _ROTATION.fullmatch(base)
    if match is None:
        return base, (2, "", 0)
    if match["num"] is not None:
        return match["stem"], (1, "", -int(match["num"]))
    if match["date"] is not None:
        return match["stem"], (0, match["date"], 0)
    return match["stem"], (2, "", 0)


def _order_key(path: str) -> tuple[str, str, tuple[int, str, int]]:
    stem, rotation = _split_name(os.path.basename(path))
    return os.path.dirname(path), stem, rotation


def _is_log_name(name: str) -> bool:
    stem, _ = _split_name(name)
    return stem in SYSLOG_NAMES or stem.endswith((".log", ".txt")) or stem.startswith("dmesg")


def _search(directory: str, proc_root: str) -> list[LogSource | SourceProblem]:
    """The log files under `directory`, by family, oldest first. Symlinked
    directories are not followed (no loops)."""
    found: list[LogSource | SourceProblem] = []

    def report(err: OSError) -> None:
        found.append(_problem(err, err.filename or directory))

    paths: list[str] = []
    for dirpath, _, filenames in os.walk(directory, onerror=report):
        paths.extend(os.path.join(dirpath, n) for n in filenames if _is_log_name(n))
    found.extend(_file_source(p, proc_root) for p in sorted(paths, key=_order_key))
    if not found:
        found.append(SourceProblem(directory, "no log files in this directory"))
    return found


def _file_source(path: str, proc_root: str) -> LogSource | SourceProblem:
    """A named path as a source, or why it cannot be one. Only regular files are
    sampled: reading the head of a pipe (`<(dmesg)`) would eat it."""
    try:
        info = os.stat(path)
    except OSError as err:
        return _problem(err, path)
    if stat.S_ISDIR(info.st_mode):
        return SourceProblem(path, "not a log file: it is a directory")
    if _is_kmsg_device(info):
        try:
            os.close(os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC))
        except OSError as err:
            return _problem(err, path)
        return LogSource(path, "kmsg", path, None, _boot_time(proc_root))
    if not stat.S_ISREG(info.st_mode):
        return LogSource(path, "file", path, None, None)
    reason = _sniff(path)
    if reason is not None:
        return SourceProblem(path, reason)
    mtime = time.localtime(info.st_mtime)
    return LogSource(path, "file", path, mtime.tm_year, None, mtime.tm_mon)


def _is_kmsg_device(info: os.stat_result) -> bool:
    return stat.S_ISCHR(info.st_mode) and (
        (os.major(info.st_rdev), os.minor(info.st_rdev)) == _KMSG_DEVICE
    )


def _sniff(path: str) -> str | None:
    """Why the file at `path` is not a readable log, or None if it is: its first
    bytes are read (decompressed) the way `read_chunks` will read them."""
    head = b""
    try:
        with closing(_file_chunks(path)) as chunks:
            for chunk in chunks:
                head += chunk
                if len(head) >= _SNIFF_SIZE:
                    break
    except OomlensError as err:
        # Corruption after good data is reported when reading reaches it.
        return None if head else _describe(err, path)
    if head.startswith(_JOURNAL_MAGIC.encode()):
        return "not a log file: a systemd journal file (read it with journalctl --file)"
    if b"\0" in head[:_SNIFF_SIZE]:
        return "not a log file: binary data"
    return None


def _problem(err: OSError, path: str) -> SourceProblem:
    return SourceProblem(path, _describe(translate_os_error(err, path), path))


def _describe(err: OomlensError, path: str) -> str:
    if isinstance(err, AccessDenied):
        return "permission denied" if os.geteuid() == 0 else "permission denied (run as root)"
    if isinstance(err, NotFound):
        return "no such file"
    return str(err).removeprefix(f"{path}: ")


# --- reading --------------------------------------------------------------------------


def kmsg_wire_lines(records: Iterable[KmsgRecord]) -> list[str]:
    """Records back in the /dev/kmsg wire format, `prio,seq,ts_us,-;message`. A
    message that holds newlines (escaped as `\\x0a` by the kernel, unescaped by
    KmsgReader) becomes one line per part, each with the record's header, as dmesg
    prints it; a backslash is escaped again, so that the normaliser's single
    unescape gives back exactly the message."""
    lines: list[str] = []
    for record in records:
        header = f"{record.facility_prio},{record.seq},{record.ts_us},-;"
        message = record.message.replace("\\", "\\x5c")
        lines.extend(header + part for part in message.split("\n"))
    return lines


def _kmsg_chunks(path: str) -> Generator[bytes, None, None]:
    """Every record in the ring buffer now, in the wire format."""
    with KmsgReader(path) as reader:
        try:
            records = reader.read_available()
        except ValueError as err:
            raise OomlensError(f"{path}: {err}") from err
    lines = kmsg_wire_lines(records)
    if lines:
        yield ("\n".join(lines) + "\n").encode("utf-8", "surrogateescape")


def _command_chunks(argv: Sequence[str], name: str) -> Generator[bytes, None, None]:
    """The stdout of a command, as it runs. Its stderr goes to a
    temporary file, not a pipe, so a chatty stderr cannot stall it."""
    import shutil
    import subprocess
    import tempfile

    program = shutil.which(argv[0])
    if program is None:
        raise Unsupported(f"{argv[0]} is not installed (not found on PATH)")
    with tempfile.TemporaryFile() as errors:
        try:
            proc = subprocess.Popen(
                [program, *argv[1:]],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=errors,
            )
        except OSError as err:
            raise translate_os_error(err, program) from err
        stdout = proc.stdout
        if stdout is None:  # for mypy: stdout=PIPE always sets it
            raise OomlensError(f"{argv[0]}: no output pipe")
        finished = False
        try:
            # Popen(stdout=PIPE) gives a BufferedReader (read1 exists).
            yield from _stream_chunks(cast(_ByteStream, stdout), name, "", ())
            finished = True
        finally:
            if not finished:
                proc.kill()
            stdout.close()
            status = proc.wait()
        if status != 0:
            errors.seek(0)
            raise OomlensError(_command_failure(name, status, errors.read()))


def _command_failure(command: str, status: int, stderr: bytes) -> str:
    how = f"was killed by signal {-status}" if status < 0 else f"failed (exit status {status})"
    said = [line.strip() for line in stderr.decode("utf-8", "replace").splitlines()]
    said = [line for line in said if line]
    return f"{command} {how}: {said[-1]}" if said else f"{command} {how}"


def _file_chunks(path: str) -> Generator[bytes, None, None]:
    # _decoded_chunks translates the errors of reading; the OSErrors caught here are
    # open()'s (EACCES, EISDIR). The opener is os.open so that a test can refuse a path.
    try:
        with open(path, "rb", opener=os.open) as raw:
            yield from _decoded_chunks(raw, path)
    except OSError as err:
        raise translate_os_error(err, path) from err


def _decoded_chunks(raw: BinaryIO, name: str) -> Generator[bytes, None, None]:
    try:
        head = raw.read(_HEAD_SIZE)
        if raw.seekable():
            raw.seek(-len(head), io.SEEK_CUR)
        else:
            raw = io.BufferedReader(_Prepended(head, raw))
    except OSError as err:
        raise translate_os_error(err, name) from err
    stream, fmt, data_errors = _decompressing(raw, head, name)
    try:
        yield from _stream_chunks(stream, name, fmt, data_errors)
    finally:
        if fmt:  # a decompressor around raw; raw itself belongs to the caller
            stream.close()


def _decompressing(
    raw: BinaryIO, head: bytes, name: str
) -> tuple[_ByteStream, str, tuple[type[Exception], ...]]:
    """A stream of the data in `raw`, decompressed if its magic bytes say so, with
    the format's name and the errors its decompressor raises on corrupt data."""
    if head.startswith(_GZIP_MAGIC):
        import gzip
        import zlib

        return gzip.GzipFile(fileobj=raw, mode="rb"), "gzip", (EOFError, zlib.error)
    if head.startswith(_XZ_MAGIC):
        import lzma

        return lzma.LZMAFile(raw), "xz", (EOFError, lzma.LZMAError)
    if _BZIP2_MAGIC.match(head):
        import bz2

        return bz2.BZ2File(raw), "bzip2", (EOFError,)
    if head.startswith(_ZSTD_MAGIC):
        raise Unsupported(f"{name}: zstd not supported (decompress it with unzstd first)")
    # Files, pipes and subprocess output are all opened buffered (read1 exists).
    return cast(_ByteStream, raw), "", ()


def _stream_chunks(
    stream: _ByteStream, name: str, fmt: str, data_errors: tuple[type[Exception], ...]
) -> Iterator[bytes]:
    offset = 0
    try:
        while chunk := stream.read1(CHUNK_SIZE):
            offset += len(chunk)
            yield chunk
    except data_errors as err:
        raise _corrupt(name, fmt, offset, err) from err
    except OSError as err:
        # Decompressors report bad data as OSErrors without an errno
        # (gzip.BadGzipFile, bz2's "Invalid data stream").
        if fmt and err.errno is None:
            raise _corrupt(name, fmt, offset, err) from err
        raise translate_os_error(err, name) from err


def _corrupt(name: str, fmt: str, offset: int, err: Exception) -> OomlensError:
    where = f"after {offset} bytes" if offset else "at its start"
    prefix = "" if offset else "not a log file: "
    return OomlensError(f"{name}: {prefix}{fmt} data is corrupt {where} ({err})")


class _Prepended(io.RawIOBase):
    """`head`, then the rest of `rest`: gives back the magic bytes read from a
    stream that cannot seek (a pipe on stdin)."""

    def __init__(self, head: bytes, rest: BinaryIO) -> None:
        super().__init__()
        self._head = head
        self._rest = rest

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: WriteableBuffer, /) -> int:
        view = memoryview(buffer).cast("B")
        if self._head:
            chunk, self._head = self._head[: len(view)], self._head[len(view) :]
        else:
            chunk = self._rest.read(len(view))
        view[: len(chunk)] = chunk
        return len(chunk)
