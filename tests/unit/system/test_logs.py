"""system/logs.py: finding kernel log sources (fake /var/log trees, fake `dmesg` and
`journalctl` on a PATH of our own) and reading them (compressed by magic, corrupt,
not UTF-8, stdin, the real /dev/kmsg)."""

from __future__ import annotations

import bz2
import errno
import gzip
import io
import lzma
import os
import re
import time
from collections.abc import Callable, Generator, Iterator
from pathlib import Path
from typing import BinaryIO

import pytest

from oomlens.errors import AccessDenied, OomlensError, Unsupported
from oomlens.system import logs
from oomlens.system.logs import (
    LogSource,
    SourceProblem,
    default_sources,
    explicit_sources,
    parse_btime,
    read_chunks,
)

BTIME = 1795776906
KMSG_LINE = re.compile(r"^(\d+),(\d+),(\d+),-;")


def lines_of(n: int, tag: str) -> list[str]:
    return [f"{tag} line {i}" for i in range(n)]


def text(lines: list[str]) -> bytes:
    return "".join(f"{line}\n" for line in lines).encode()


def tool(bin_dir: Path, name: str, script: str) -> None:
    """A fake command: /bin/sh builtins only, as PATH holds nothing else."""
    path = bin_dir / name
    path.write_text(f"#!/bin/sh\n{script}\n")
    path.chmod(0o755)


@pytest.fixture
def bin_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty PATH (no real dmesg or journalctl) that tests fill with fakes."""
    path = tmp_path / "bin"
    path.mkdir()
    monkeypatch.setenv("PATH", str(path))
    monkeypatch.setattr(logs, "RUNTIME_JOURNAL", str(tmp_path / "run-journal"))
    return path


@pytest.fixture
def proc_root(tmp_path: Path) -> str:
    root = tmp_path / "proc"
    root.mkdir()
    (root / "stat").write_text(f"cpu  1 2 3\nintr 5\nctxt 9\nbtime {BTIME}\nprocesses 7\n")
    return str(root)


def read_lines(source: LogSource, stdin: BinaryIO | None = None) -> Generator[str, None, None]:
    """The source's text as lines, split the way the report scanner splits it."""
    carry = b""
    chunks = read_chunks(source, stdin)
    try:
        for chunk in chunks:
            *lines, carry = (carry + chunk).split(b"\n")
            for line in lines:
                yield line.decode("utf-8", "replace")
        if carry:
            yield carry.decode("utf-8", "replace")
    finally:
        chunks.close()


def read_all(source: LogSource) -> list[str]:
    return list(read_lines(source))


def until_error(lines: Iterator[str]) -> tuple[list[str], OomlensError | None]:
    got: list[str] = []
    try:
        for line in lines:
            got.append(line)
    except OomlensError as err:
        return got, err
    return got, None


# --- default discovery -----------------------------------------------------------------


class TestDefaultSources:
    def make_log_dir(self, tmp_path: Path) -> Path:
        log_dir = tmp_path / "log"
        log_dir.mkdir()
        (log_dir / "kern.log").write_bytes(text(lines_of(2, "live")))
        (log_dir / "kern.log.1").write_bytes(text(lines_of(2, "one")))
        (log_dir / "kern.log.2.gz").write_bytes(gzip.compress(text(lines_of(2, "two"))))
        (log_dir / "kern.log.3.xz").write_bytes(lzma.compress(text(lines_of(2, "three"))))
        (log_dir / "kern.log.4.bz2").write_bytes(bz2.compress(text(lines_of(2, "four"))))
        (log_dir / "messages").write_bytes(text(lines_of(1, "m")))
        (log_dir / "messages-20250201").write_bytes(text(lines_of(1, "feb")))
        (log_dir / "messages-20250101").write_bytes(text(lines_of(1, "jan")))
        (log_dir / "syslog.1").write_bytes(text(lines_of(1, "s")))
        for other in ("auth.log", "wtmp", "dpkg.log", "kern.logger", "messagesx"):
            (log_dir / other).write_bytes(b"not ours\n")
        return log_dir

    def test_families_oldest_first(self, tmp_path: Path, bin_dir: Path, proc_root: str) -> None:
        log_dir = self.make_log_dir(tmp_path)
        sources, problems = default_sources(
            log_dir=str(log_dir), kmsg=str(tmp_path / "no-kmsg"), proc_root=proc_root
        )
        assert problems == []
        assert [os.path.basename(s.name) for s in sources] == [
            "kern.log.4.bz2",
            "kern.log.3.xz",
            "kern.log.2.gz",
            "kern.log.1",
            "kern.log",
            "messages-20250101",
            "messages-20250201",
            "messages",
            "syslog.1",
        ]
        assert {(s.kind, s.boot_time) for s in sources} == {("file", None)}
        assert sources[0].path == str(log_dir / "kern.log.4.bz2")
        assert sources[0].year == time.localtime().tm_year
        timeline = [line for s in sources[:5] for line in read_all(s)]
        assert timeline == [
            *lines_of(2, "four"),
            *lines_of(2, "three"),
            *lines_of(2, "two"),
            *lines_of(2, "one"),
            *lines_of(2, "live"),
        ]

    def test_year_is_the_mtime_year(self, tmp_path: Path, bin_dir: Path) -> None:
        (tmp_path / "kern.log.1").write_bytes(b"x\n")
        os.utime(tmp_path / "kern.log.1", (1_500_000_000, 1_500_000_000))  # mid-July 2017
        sources, _ = default_sources(log_dir=str(tmp_path), kmsg=str(tmp_path / "none"))
        assert [(s.year, s.month) for s in sources] == [(2017, 7)]

    def test_nothing_there_is_no_problem(self, tmp_path: Path, bin_dir: Path) -> None:
        for log_dir in (tmp_path, tmp_path / "missing"):
            assert default_sources(log_dir=str(log_dir), kmsg=str(tmp_path / "none")) == ([], [])

    def test_readable_kmsg_comes_first(
        self, tmp_path: Path, bin_dir: Path, proc_root: str
    ) -> None:
        kmsg = tmp_path / "kmsg"
        kmsg.write_bytes(b"")
        (tmp_path / "syslog").write_bytes(b"x\n")
        tool(bin_dir, "dmesg", "exit 0")
        sources, _ = default_sources(log_dir=str(tmp_path), kmsg=str(kmsg), proc_root=proc_root)
        assert sources[0] == LogSource(str(kmsg), "kmsg", str(kmsg), None, float(BTIME))
        assert [s.kind for s in sources] == ["kmsg", "file"]

    def test_no_kmsg_falls_back_to_dmesg_if_installed(
        self, tmp_path: Path, bin_dir: Path, proc_root: str
    ) -> None:
        missing = str(tmp_path / "no-kmsg")
        assert default_sources(log_dir=str(tmp_path), kmsg=missing, proc_root=proc_root) == (
            [],
            [],
        )
        tool(bin_dir, "dmesg", "exit 0")
        sources, problems = default_sources(
            log_dir=str(tmp_path), kmsg=missing, proc_root=proc_root
        )
        assert sources == [LogSource("dmesg", "dmesg", None, None, float(BTIME))]
        assert problems == []

    def test_denied_kmsg_without_dmesg_is_a_problem(
        self, tmp_path: Path, bin_dir: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        kmsg = str(tmp_path / "kmsg")
        Path(kmsg).write_bytes(b"")
        deny_open(monkeypatch, kmsg)
        sources, problems = default_sources(log_dir=str(tmp_path / "none"), kmsg=kmsg)
        assert sources == []
        assert len(problems) == 1 and problems[0].name == kmsg
        assert problems[0].message.startswith("permission denied")

    def test_journal_needs_journalctl_and_a_journal_directory(
        self, tmp_path: Path, bin_dir: Path
    ) -> None:
        log_dir = tmp_path / "log"
        (log_dir / "journal").mkdir(parents=True)
        none = str(tmp_path / "none")
        assert default_sources(log_dir=str(log_dir), kmsg=none) == ([], [])
        tool(bin_dir, "journalctl", "exit 0")
        sources, _ = default_sources(log_dir=str(log_dir), kmsg=none)
        assert sources == [LogSource("journalctl -k", "journal", None, None, None)]
        (log_dir / "journal").rmdir()
        assert default_sources(log_dir=str(log_dir), kmsg=none) == ([], [])

    def test_a_directory_named_like_a_log_is_a_problem(
        self, tmp_path: Path, bin_dir: Path
    ) -> None:
        (tmp_path / "kern.log.1").mkdir()
        (tmp_path / "kern.log").write_bytes(b"x\n")
        sources, problems = default_sources(log_dir=str(tmp_path), kmsg=str(tmp_path / "none"))
        assert [s.name for s in sources] == [str(tmp_path / "kern.log")]
        assert problems == [
            SourceProblem(str(tmp_path / "kern.log.1"), "not a log file: it is a directory")
        ]

    def test_unreadable_file_is_a_problem(
        self, tmp_path: Path, bin_dir: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        denied = str(tmp_path / "messages")
        Path(denied).write_bytes(b"x\n")
        deny_open(monkeypatch, denied)
        sources, problems = default_sources(log_dir=str(tmp_path), kmsg=str(tmp_path / "none"))
        assert sources == []
        assert [p.name for p in problems] == [denied]
        assert re.fullmatch(r"permission denied( \(run as root\))?", problems[0].message)

    def test_zstd_is_a_problem(self, tmp_path: Path, bin_dir: Path) -> None:
        (tmp_path / "kern.log.2.zst").write_bytes(b"\x28\xb5\x2f\xfd" + b"\0" * 20)
        sources, problems = default_sources(log_dir=str(tmp_path), kmsg=str(tmp_path / "none"))
        assert sources == []
        assert len(problems) == 1 and problems[0].message.startswith("zstd not supported")


def deny_open(monkeypatch: pytest.MonkeyPatch, path: str) -> None:
    """os.open that refuses `path` as the kernel would refuse a non-root user
    (chmod 000 does not stop root)."""
    real_open: Callable[..., int] = os.open

    def fake_open(file: str, flags: int, *args: int, **kwargs: int) -> int:
        if os.fspath(file) == path:
            raise PermissionError(errno.EACCES, "Permission denied", path)
        return real_open(file, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", fake_open)


def test_parse_btime() -> None:
    assert parse_btime(f"cpu 1 2\nbtime {BTIME}\n") == float(BTIME)
    assert parse_btime("cpu 1 2\n") is None


# --- explicit sources ------------------------------------------------------------------


class TestExplicitSources:
    def test_directory_is_searched_recursively_by_family(self, tmp_path: Path) -> None:
        root = tmp_path / "sosreport"
        (root / "var/log/journal/abc").mkdir(parents=True)
        (root / "var/crash/127.0.0.1-2025-01-01").mkdir(parents=True)
        files = {
            "var/log/kern.log": b"live\n",
            "var/log/kern.log.1": b"one\n",
            "var/log/kern.log.2.gz": gzip.compress(b"two\n"),
            "var/log/dmesg": b"boot\n",
            "var/log/app.log-20250101": b"app\n",
            "var/log/journal/abc/system.journal": b"LPKSHHRH\0\0\0\0",
            "var/log/wtmp": b"\0\0\0\0",
            "var/crash/127.0.0.1-2025-01-01/vmcore-dmesg.txt": b"crash\n",
            "notes.md": b"# notes\n",
        }
        for name, data in files.items():
            (root / name).write_bytes(data)
        sources, problems = explicit_sources([str(root)])
        assert problems == []
        assert [os.path.relpath(s.name, root) for s in sources] == [
            "var/crash/127.0.0.1-2025-01-01/vmcore-dmesg.txt",
            "var/log/app.log-20250101",
            "var/log/dmesg",
            "var/log/kern.log.2.gz",
            "var/log/kern.log.1",
            "var/log/kern.log",
        ]

    def test_missing_path_is_a_problem_and_the_others_are_read(self, tmp_path: Path) -> None:
        paste = tmp_path / "paste.txt"
        paste.write_bytes(b"[ 1.0] Out of memory\n")
        missing = str(tmp_path / "nope.log")
        sources, problems = explicit_sources([missing, str(paste)])
        assert [s.name for s in sources] == [str(paste)]
        assert problems == [SourceProblem(missing, "no such file")]

    def test_empty_directory_is_a_problem(self, tmp_path: Path) -> None:
        (tmp_path / "journal.journal").write_bytes(b"LPKSHHRH")
        assert explicit_sources([str(tmp_path)]) == (
            [],
            [SourceProblem(str(tmp_path), "no log files in this directory")],
        )

    def test_binary_files_named_explicitly_are_problems(self, tmp_path: Path) -> None:
        journal = tmp_path / "system.journal"
        journal.write_bytes(b"LPKSHHRH\0\0\0\0" + os.urandom(64))
        binary = tmp_path / "core.txt"
        binary.write_bytes(b"ELF\0\0\0\n")
        sources, problems = explicit_sources([str(journal), str(binary)])
        assert sources == []
        assert "systemd journal" in problems[0].message
        assert problems[1] == SourceProblem(str(binary), "not a log file: binary data")

    def test_stdin_and_the_same_file_twice(self, tmp_path: Path) -> None:
        log = tmp_path / "kern.log"
        log.write_bytes(b"x\n")
        sources, problems = explicit_sources(["-", str(log), str(tmp_path), "-"])
        assert sources == [
            LogSource("-", "stdin", None, None, None),
            LogSource(str(log), "file", str(log), sources[1].year, None, sources[1].month),
        ]
        assert problems == []

    def test_corrupt_gzip_head_is_a_problem(self, tmp_path: Path) -> None:
        bad = tmp_path / "kern.log.2.gz"
        bad.write_bytes(b"\x1f\x8b\x63" + b"junk" * 10)
        sources, problems = explicit_sources([str(bad)])
        assert sources == []
        assert problems[0].message.startswith("not a log file: gzip data is corrupt")

    def test_dev_kmsg_is_the_ring_buffer(self, proc_root: str) -> None:
        if not os.path.exists("/dev/kmsg"):
            pytest.skip("no /dev/kmsg here")
        sources, problems = explicit_sources(["/dev/kmsg"], proc_root=proc_root)
        if problems:
            pytest.skip(f"/dev/kmsg: {problems[0].message}")
        assert sources == [LogSource("/dev/kmsg", "kmsg", "/dev/kmsg", None, float(BTIME))]


# --- reading ---------------------------------------------------------------------------


def file_source(path: Path) -> LogSource:
    return LogSource(str(path), "file", str(path), None, None)


class TestReadFiles:
    def test_gzip_is_found_by_magic_not_name(self, tmp_path: Path) -> None:
        path = tmp_path / "paste.log"
        path.write_bytes(gzip.compress(text(lines_of(3, "gz"))))
        assert read_all(file_source(path)) == lines_of(3, "gz")

    @pytest.mark.parametrize("compress", [lzma.compress, bz2.compress], ids=["xz", "bzip2"])
    def test_xz_and_bzip2_by_magic(
        self, tmp_path: Path, compress: Callable[[bytes], bytes]
    ) -> None:
        path = tmp_path / "kern.log"
        path.write_bytes(compress(text(lines_of(3, "c"))))
        assert read_all(file_source(path)) == lines_of(3, "c")

    def test_multi_member_gzip(self, tmp_path: Path) -> None:
        path = tmp_path / "kern.log.1.gz"
        path.write_bytes(gzip.compress(b"a\n") + gzip.compress(b"b\n"))
        assert read_all(file_source(path)) == ["a", "b"]

    def test_newlines_cr_and_last_line(self, tmp_path: Path) -> None:
        path = tmp_path / "paste.txt"
        path.write_bytes(b"one\r\ntwo\n\nlast")
        assert read_all(file_source(path)) == ["one\r", "two", "", "last"]

    def test_invalid_utf8_is_replaced(self, tmp_path: Path) -> None:
        path = tmp_path / "kern.log"
        path.write_bytes(b"comm \xff\xfe ok\n\xc3\xa9t\xc3\xa9\n")
        assert read_all(file_source(path)) == ["comm \ufffd\ufffd ok", "\u00e9t\u00e9"]

    def test_truncated_gzip_raises_after_the_good_lines(self, tmp_path: Path) -> None:
        original = [os.urandom(40).hex() for _ in range(5000)]  # barely compressible
        data = gzip.compress(text(original))
        path = tmp_path / "kern.log.2.gz"
        path.write_bytes(data[: len(data) // 2])
        got, err = until_error(read_lines(file_source(path)))
        assert err is not None
        assert f"{path}: gzip data is corrupt after" in str(err)
        assert 0 < len(got) < len(original)
        assert got[:-1] == original[: len(got) - 1]  # the last one may be cut short
        assert original[len(got) - 1].startswith(got[-1])

    def test_corrupt_gzip_body_raises(self, tmp_path: Path) -> None:
        data = bytearray(gzip.compress(text([os.urandom(40).hex() for _ in range(5000)])))
        data[len(data) // 2 : len(data) // 2 + 64] = b"\0" * 64
        path = tmp_path / "kern.log.2.gz"
        path.write_bytes(bytes(data))
        got, err = until_error(read_lines(file_source(path)))
        assert err is not None and "gzip data is corrupt" in str(err)
        assert got  # what came before the damage

    def test_corrupt_bzip2_raises(self, tmp_path: Path) -> None:
        path = tmp_path / "kern.log.4.bz2"
        path.write_bytes(b"BZh9" + b"\x31\x41\x59\x26\x53\x59" + b"garbage" * 20)
        with pytest.raises(OomlensError, match="bzip2 data is corrupt"):
            read_all(file_source(path))

    def test_zstd_raises_unsupported(self, tmp_path: Path) -> None:
        path = tmp_path / "kern.log.zst"
        path.write_bytes(b"\x28\xb5\x2f\xfd" + b"\0" * 8)
        with pytest.raises(Unsupported, match="zstd not supported"):
            read_all(file_source(path))

    def test_missing_and_denied_files_raise_oomlens_errors(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        with pytest.raises(OomlensError, match="does not exist"):
            read_all(file_source(tmp_path / "gone.log"))
        with pytest.raises(OomlensError, match="Is a directory"):
            read_all(file_source(tmp_path))
        path = tmp_path / "kern.log"
        path.write_bytes(b"x\n")
        deny_open(monkeypatch, str(path))
        with pytest.raises(AccessDenied):
            read_all(file_source(path))


class TestReadStdin:
    stdin_source = LogSource("-", "stdin", None, None, None)

    def test_plain(self) -> None:
        assert list(read_lines(self.stdin_source, io.BytesIO(b"a\nb\n"))) == ["a", "b"]

    def test_gzip_from_a_pipe(self) -> None:
        read_fd, write_fd = os.pipe()
        os.write(write_fd, gzip.compress(text(lines_of(50, "p"))))
        os.close(write_fd)
        with open(read_fd, "rb") as pipe:
            assert list(read_lines(self.stdin_source, pipe)) == lines_of(50, "p")

    def test_short_plain_from_a_pipe(self) -> None:
        read_fd, write_fd = os.pipe()
        os.write(write_fd, b"ab")
        os.close(write_fd)
        with open(read_fd, "rb") as pipe:
            assert list(read_lines(self.stdin_source, pipe)) == ["ab"]


class TestReadCommands:
    dmesg = LogSource("dmesg", "dmesg", None, None, None)
    journal = LogSource("journalctl -k", "journal", None, None, None)

    def test_dmesg_output_is_streamed(self, bin_dir: Path) -> None:
        tool(bin_dir, "dmesg", "echo \"$@\"; printf '[    1.000000] Out of memory\\n'")
        assert read_all(self.dmesg) == ["--kernel --nopager", "[    1.000000] Out of memory"]

    def test_journalctl_reads_every_boot(self, bin_dir: Path) -> None:
        tool(bin_dir, "journalctl", 'echo "$@"')
        assert read_all(self.journal) == ["_TRANSPORT=kernel -o short-iso --no-pager -q"]

    def test_failure_raises_after_the_lines(self, bin_dir: Path) -> None:
        tool(
            bin_dir,
            "dmesg",
            "echo first; echo 'dmesg: read kernel buffer failed: Operation not permitted' >&2; "
            "exit 1",
        )
        got, err = until_error(read_lines(self.dmesg))
        assert got == ["first"]
        assert str(err) == (
            "dmesg failed (exit status 1): "
            "dmesg: read kernel buffer failed: Operation not permitted"
        )

    def test_missing_command_is_unsupported(self, bin_dir: Path) -> None:
        with pytest.raises(Unsupported, match="journalctl is not installed"):
            read_all(self.journal)

    def test_stopping_early_ends_the_command(self, bin_dir: Path) -> None:
        tool(bin_dir, "dmesg", "while :; do echo line; done")
        lines = read_lines(self.dmesg)
        assert next(lines) == "line"
        lines.close()  # must not hang on the endless writer


# --- the real ring buffer --------------------------------------------------------------


def test_real_kmsg_yields_wire_format_lines_in_seq_order() -> None:
    try:
        os.close(os.open("/dev/kmsg", os.O_RDONLY | os.O_NONBLOCK))
    except OSError as err:
        pytest.skip(f"/dev/kmsg is not readable here: {err.strerror}")
    lines = list(read_lines(LogSource("/dev/kmsg", "kmsg", "/dev/kmsg", None, None)))
    assert lines, "a booted kernel has logged something"
    seqs = []
    for line in lines:
        match = KMSG_LINE.match(line)
        assert match, line
        seqs.append(int(match.group(2)))
    assert seqs == sorted(seqs)
    assert len(set(seqs)) > 1 or len(lines) == 1
