"""The kernel's messages from `journalctl -o json`: `journal_lines` on each field
variant, and `JournalLog` over a fake `journalctl` (a shell script in tmp_path) that
prints prepared JSON for the backfill run and, when run with `-f`, copies a FIFO
this test writes to, so the follower prints exactly when the test says."""

from __future__ import annotations

import json
import os
import select
import stat
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from oomlens.daemons.selfcare import HostInfo
from oomlens.daemons.watch import Watcher
from oomlens.errors import OomlensError
from oomlens.report.model import LogLine
from oomlens.store.db import EventQuery, default_store_url, open_store
from oomlens.store.record import StoredEvent
from oomlens.system.journalk import SOURCE, JournalLog, journal_lines

WAIT_S = 10.0  # for the fake journalctl to start, print or exit
BASE_ARGV = ["-k", "-b", "-o", "json", "--no-pager"]

FAKE_JOURNALCTL = """\
#!/bin/sh
# A fake journalctl: records its argv and pid, then plays the files next to it.
dir=$(dirname "$0")
mode=backfill
for arg in "$@"; do [ "$arg" = "-f" ] && mode=follow; done
printf '%s\\n' "$@" > "$dir/argv.$mode"
echo $$ > "$dir/pid.$mode"
[ -f "$dir/$mode.err" ] && cat "$dir/$mode.err" >&2
[ -f "$dir/$mode.jsonl" ] && cat "$dir/$mode.jsonl"
[ -f "$dir/$mode.status" ] && exit "$(cat "$dir/$mode.status")"
[ "$mode" = follow ] && exec cat "$dir/follow.fifo"
exit 0
"""

KILL = ("Memory cgroup out of memory: Killed process 1001 (python3) total-vm:8000kB,"
        " anon-rss:4000kB, file-rss:0kB, shmem-rss:0kB, UID:0 pgtables:40kB oom_score_adj:0")


def entry(message: Any, *, cursor: str | None = None, transport: str = "kernel",
          source_us: str | None = None, journal_us: str | None = None) -> dict[str, Any]:
    """A `journalctl -o json` entry; `source_us` is _SOURCE_MONOTONIC_TIMESTAMP (the
    kernel's stamp), `journal_us` __MONOTONIC_TIMESTAMP (when journald got it)."""
    found: dict[str, Any] = {"MESSAGE": message, "_TRANSPORT": transport}
    for name, value in (("__CURSOR", cursor), ("_SOURCE_MONOTONIC_TIMESTAMP", source_us),
                        ("__MONOTONIC_TIMESTAMP", journal_us)):
        if value is not None:
            found[name] = value
    return found


def jsonl(*entries: dict[str, Any] | str) -> str:
    return "".join((e if isinstance(e, str) else json.dumps(e)) + "\n" for e in entries)


class FakeJournal:
    """The script, its files and the FIFO its follower copies to its stdout."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.dir.mkdir()
        self.command = self.dir / "journalctl"
        self.command.write_text(FAKE_JOURNALCTL)
        self.command.chmod(self.command.stat().st_mode | stat.S_IXUSR)
        fifo = self.dir / "follow.fifo"
        os.mkfifo(fifo)
        # Read-write: never blocks, and the follower's cat sees EOF only once we close it.
        self.fifo: int | None = os.open(fifo, os.O_RDWR)
        self.logs: list[JournalLog] = []

    def set(self, mode: str, *, jsonl: str | None = None, err: str | None = None,
            status: int | None = None) -> None:
        for suffix, text in (("jsonl", jsonl), ("err", err),
                             ("status", None if status is None else str(status))):
            if text is not None:
                (self.dir / f"{mode}.{suffix}").write_text(text)

    def open(self, *, backfill: bool) -> JournalLog:
        log = JournalLog(backfill=backfill, command=(str(self.command),))
        self.logs.append(log)
        return log

    def argv(self, mode: str) -> list[str] | None:
        """The argv of the run (waiting for a follower to write it); None: never run."""
        if mode == "follow" and not self.logs:  # no JournalLog got as far as its follower
            return None
        path = self.dir / f"argv.{mode}"
        if mode == "backfill":  # subprocess.run(): done before JournalLog() returned
            return path.read_text().splitlines() if path.exists() else None
        return written(path).splitlines()

    def pid(self, mode: str) -> int:
        return int(written(self.dir / f"pid.{mode}"))

    def follow(self, text: str) -> None:
        """What the running follower prints next (one write: < PIPE_BUF, atomic)."""
        assert self.fifo is not None and len(text.encode()) < select.PIPE_BUF
        os.write(self.fifo, text.encode())

    def end_follow(self) -> None:
        if self.fifo is not None:
            os.close(self.fifo)
            self.fifo = None

    def close(self) -> None:
        for log in self.logs:
            log.close()
        self.end_follow()


@pytest.fixture
def journal(tmp_path: Path) -> Iterator[FakeJournal]:
    fake = FakeJournal(tmp_path / "bin")
    yield fake
    fake.close()


def written(path: Path) -> str:
    """A file the fake journalctl writes at its start, once it is there in full."""
    deadline = time.monotonic() + WAIT_S
    while not (path.exists() and (text := path.read_text()).endswith("\n")):
        assert time.monotonic() < deadline, f"{path} was not written"
        time.sleep(0.005)
    return text


def read_until(log: JournalLog, count: int) -> list[LogLine]:
    """read_lines() as the follower's output arrives, until `count` lines came."""
    got: list[LogLine] = []
    deadline = time.monotonic() + WAIT_S
    poller = select.poll()
    poller.register(log.fileno(), select.POLLIN)
    while len(got) < count:
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"only {len(got)} of {count} lines from the follower"
        if poller.poll(int(remaining * 1000) + 1):
            got += log.read_lines()
    return got


def wait_for_exit(log: JournalLog) -> None:
    """Until the follower closed its stdout (it exited): POLLHUP on our end."""
    poller = select.poll()
    poller.register(log.fileno(), select.POLLIN)
    deadline = time.monotonic() + WAIT_S
    while not any(events & select.POLLHUP for _, events in poller.poll(100)):
        assert time.monotonic() < deadline, "the follower did not exit"


def reaped(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


BACKFILL = jsonl(
    entry("Linux version 6.18.44", cursor="s=ab;i=1", source_us="0"),
    entry([104, 105, 0xFF], cursor="s=ab;i=2", journal_us="2500000"),
    entry("Started Session 4 of User root.", cursor="s=ab;i=3", transport="journal"),
    "{not json",
    '"a JSON string, not an object"',
    entry(None, cursor="s=ab;i=4"),
)


class TestJournalLog:
    def test_the_backfill_comes_first_then_the_follower_after_its_last_cursor(
            self, journal: FakeJournal) -> None:
        journal.set("backfill", jsonl=BACKFILL)
        log = journal.open(backfill=True)
        assert journal.argv("backfill") == BASE_ARGV
        backfill = log.read_lines()
        assert [(line.text, line.kernel) for line in backfill] == [
            ("Linux version 6.18.44", True), ("hi\ufffd", True),
            ("Started Session 4 of User root.", False)]
        assert [line.monotonic for line in backfill] == [0.0, 2.5, None]
        assert all(line.source == SOURCE and line.seq is None for line in backfill)

        assert journal.argv("follow") == [*BASE_ARGV, "-f", "--after-cursor", "s=ab;i=4"]
        journal.follow(jsonl(entry(KILL, source_us="42574577")))
        (followed,) = read_until(log, 1)
        assert (followed.text, followed.monotonic, followed.kernel) == (KILL, 42.574577, True)
        assert log.read_lines() == []  # nothing new: not the backfill again

    def test_without_backfill_the_follower_starts_at_the_end(
            self, journal: FakeJournal) -> None:
        journal.set("backfill", jsonl=BACKFILL)
        log = journal.open(backfill=False)
        assert journal.argv("backfill") is None
        assert journal.argv("follow") == [*BASE_ARGV, "-f", "-n", "0"]
        assert log.read_lines() == []
        journal.follow(jsonl(entry(KILL)))
        assert [line.text for line in read_until(log, 1)] == [KILL]

    def test_an_empty_journal_leaves_no_cursor_to_follow_after(
            self, journal: FakeJournal) -> None:
        journal.set("backfill", jsonl="")
        log = journal.open(backfill=True)
        assert journal.argv("follow") == [*BASE_ARGV, "-f", "-n", "0"]
        assert log.read_lines() == []

    def test_a_line_split_across_reads_is_joined(self, journal: FakeJournal) -> None:
        log = journal.open(backfill=False)
        text = json.dumps(entry(KILL, source_us="7000000"))
        journal.follow(jsonl(entry("first")) + text[:40])
        assert [line.text for line in read_until(log, 1)] == ["first"]
        journal.follow(text[40:] + "\n")
        (joined,) = read_until(log, 1)
        assert (joined.text, joined.monotonic) == (KILL, 7.0)

    def test_a_follower_that_exits_is_an_error_with_its_status_and_first_words(
            self, journal: FakeJournal) -> None:
        journal.set("follow", err="Failed to seek to cursor: Invalid argument\nmore\n",
                    status=1)
        log = journal.open(backfill=False)
        wait_for_exit(log)
        with pytest.raises(OomlensError) as raised:
            log.read_lines()
        assert str(raised.value) == (
            "journalctl exited with status 1: Failed to seek to cursor: Invalid argument")
        assert reaped(journal.pid("follow"))

    def test_a_follower_that_ends_quietly_is_an_error_too(self, journal: FakeJournal) -> None:
        log = journal.open(backfill=False)
        journal.follow(jsonl(entry("last words")))
        assert [line.text for line in read_until(log, 1)] == ["last words"]  # cat is reading
        journal.end_follow()
        wait_for_exit(log)
        with pytest.raises(OomlensError, match=r"^journalctl exited with status 0$"):
            log.read_lines()

    def test_a_failed_backfill_is_an_error_and_starts_no_follower(
            self, journal: FakeJournal) -> None:
        journal.set("backfill", err="No journal files were found.\n", status=1)
        with pytest.raises(OomlensError) as raised:
            journal.open(backfill=True)
        assert str(raised.value) == (
            "journalctl exited with status 1: No journal files were found.")
        assert journal.argv("follow") is None

    def test_close_stops_and_reaps_the_follower(self, journal: FakeJournal) -> None:
        log = journal.open(backfill=False)
        pid = journal.pid("follow")
        assert not reaped(pid)
        log.close()
        assert reaped(pid)
        log.close()  # twice is harmless

    def test_lines_read_before_the_follower_exited_are_not_lost(
            self, journal: FakeJournal) -> None:
        journal.set("backfill", jsonl=jsonl(entry("backfilled", cursor="s=ab;i=9")))
        journal.set("follow", jsonl=jsonl(entry(KILL)), err="journal rotated\n", status=1)
        log = journal.open(backfill=True)
        wait_for_exit(log)
        assert [line.text for line in log.read_lines()] == ["backfilled", KILL]
        with pytest.raises(OomlensError, match="status 1: journal rotated"):
            log.read_lines()


# show_mem() prints the Mem-Info counters with one printk() holding newlines
# (mm/show_mem.c: __show_free_areas()); /dev/kmsg escapes them as \x0a, journald
# unescapes them, so the journal keeps one entry whose MESSAGE has newlines.
MEM_INFO = ("active_anon:5834472 inactive_anon:370666 isolated_anon:0\n"
            " active_file:491652 inactive_file:603072 isolated_file:0\n"
            " unevictable:0 dirty:0 writeback:0\n"
            " free:1449232 free_pcp:2854 free_cma:0")
GLOBAL_REPORT = (
    "bwa invoked oom-killer: gfp_mask=0x1100dca(GFP_HIGHUSER_MOVABLE|__GFP_ZERO), order=0,"
    " oom_score_adj=0",
    "CPU: 33 PID: 22050 Comm: bwa Not tainted 5.15.0-105-generic #115-Ubuntu",
    "Mem-Info:",
    MEM_INFO,
    "Node 1 Normal free:30584kB min:67560kB low:84448kB high:101340kB"
    " reserved_highatomic:0KB active_anon:15608440kB present:16777216kB managed:16512040kB",
    "8912763 pages RAM",
    "Tasks state (memory values in pages):",
    "[  pid  ]   uid  tgid total_vm      rss pgtables_bytes swapents oom_score_adj name",
    "[  22050]  2001 22050  4121220  3881430 31211520        0             0 bwa",
    "oom-kill:constraint=CONSTRAINT_NONE,nodemask=(null),cpuset=/,mems_allowed=0-1,global_oom,"
    "task_memcg=/hpc.slice/job4242.scope,task=bwa,pid=22050,uid=2001",
    "Out of memory: Killed process 22050 (bwa) total-vm:16484880kB, anon-rss:15520840kB,"
    " file-rss:4880kB, shmem-rss:0kB, UID:2001 pgtables:30480kB oom_score_adj:0",
)


def journal_report(messages: Sequence[str]) -> str:
    return jsonl(*(entry(m, cursor=f"s=ab;i={i}", source_us=str(900_000 + i))
                   for i, m in enumerate(messages)))


def backfilled(journal: FakeJournal, messages: Sequence[str], tmp_path: Path) -> StoredEvent:
    """The one event a watcher stores from a journal holding `messages`."""
    journal.set("backfill", jsonl=journal_report(messages))
    log = journal.open(backfill=True)
    with open_store(default_store_url(str(tmp_path / "state"))) as store:
        watcher = Watcher(store, HostInfo("h", "boot", 1_750_000_000.0),
                          clock=lambda: 1_750_000_100.0, emit=lambda _s, _l: None,
                          log=lambda _e: None)
        watcher.feed(log.read_lines(), live=False)
        watcher.settle(live=False, everything=True)
        (stored,) = store.events(EventQuery())
    log.close()
    return stored


class TestMultiLineMessages:
    def test_a_message_with_newlines_is_one_line_per_line(self, journal: FakeJournal) -> None:
        journal.set("backfill", jsonl=journal_report(GLOBAL_REPORT))
        lines = journal.open(backfill=True).read_lines()
        assert [line.text for line in lines] == [
            text for message in GLOBAL_REPORT for text in message.split("\n")]

    def test_a_global_report_from_the_journal_is_stored(
            self, journal: FakeJournal, tmp_path: Path) -> None:
        stored = backfilled(journal, GLOBAL_REPORT, tmp_path)
        kill_stamp = (900_000 + len(GLOBAL_REPORT) - 1) / 1e6
        assert stored.record.key == f"boot:t{kill_stamp:.6f}:22050"
        assert (stored.record.scope, stored.record.complete) == ("global", True)

    def test_a_memcg_report_has_no_such_record_and_is_stored(
            self, journal: FakeJournal, tmp_path: Path) -> None:
        memcg = [m for m in GLOBAL_REPORT if m not in ("Mem-Info:", MEM_INFO)]
        stored = backfilled(journal, memcg, tmp_path)
        kill_stamp = (900_000 + len(memcg) - 1) / 1e6
        assert stored.record.key == f"boot:t{kill_stamp:.6f}:22050"
        assert stored.record.time == pytest.approx(1_750_000_000.0 + kill_stamp)


def journal_line(entry: dict[str, object]) -> LogLine | None:
    """The one line of a one-line entry (None for an entry that makes none)."""
    lines = journal_lines(entry)
    assert len(lines) <= 1
    return lines[0] if lines else None


class TestJournalLine:
    def test_a_kernel_message_with_its_source_timestamp(self) -> None:
        line = journal_line(entry(KILL, source_us="42574577",
                                  journal_us="42580000"))
        assert line == LogLine(KILL, "journal", 0, "", 42.574577, None, None, True)

    def test_the_journals_own_monotonic_timestamp_when_there_is_no_source_one(self) -> None:
        line = journal_line(entry("x", journal_us="1500000"))
        assert line is not None and line.monotonic == 1.5

    @pytest.mark.parametrize("stamp", ["", "12.5", "-3", "abc"])
    def test_a_timestamp_that_is_no_number_is_none(self, stamp: str) -> None:
        line = journal_line(entry("x", source_us=stamp))
        assert line is not None and line.monotonic is None

    def test_a_number_that_is_not_a_string_is_none(self) -> None:
        line = journal_line({"MESSAGE": "x", "_SOURCE_MONOTONIC_TIMESTAMP": 1500000})
        assert line is not None and line.monotonic is None

    def test_a_message_of_bytes_is_decoded_with_replacement(self) -> None:
        line = journal_line(entry(list("Killed process 7 (a\udcff)".encode("utf-8",
                                                                           "surrogateescape"))))
        assert line is not None and line.text == "Killed process 7 (a\ufffd)"

    @pytest.mark.parametrize("transport", ["syslog", "journal", "stdout", "audit", ""])
    def test_only_the_kernel_transport_is_the_kernel(self, transport: str) -> None:
        line = journal_line(entry(KILL, transport=transport))
        assert line is not None and line.kernel is False

    def test_no_transport_is_not_the_kernel(self) -> None:
        line = journal_line({"MESSAGE": KILL})
        assert line is not None and line.kernel is False

    @pytest.mark.parametrize("message", [None, 42, {"a": 1}])
    def test_an_entry_without_a_textual_message_is_no_line(self, message: object) -> None:
        assert journal_line(entry(message)) is None
        assert journal_line({"_TRANSPORT": "kernel"}) is None
