"""`oomlens watch` run in-process (streams captured) on a fake /proc: `describe`'s one
line per event kind, `--once` against /proc/vmstat oom_kill (lost kills stored once,
a second run idempotent), `--json` (oomlens.event/1 with `live`), the journal as the
log (a fake `journalctl` on PATH), the fallback when no log can be read, and the
one-line usage errors."""

from __future__ import annotations

import io
import json
import re
import shutil
import signal
import socket
import stat
from pathlib import Path
from typing import Any

import pytest
from daemon import signals_restored
from fakeproc import write_fake_proc

from oomlens.cli.commands.watch import describe
from oomlens.cli.env import Env, ExitStatus
from oomlens.cli.main import main
from oomlens.report.diagnose import diagnose
from oomlens.report.pipeline import events_in
from oomlens.store.db import EventQuery, open_store
from oomlens.store.fromreport import kernel_record
from oomlens.store.record import (
    EventRecord,
    StoredEvent,
    lost_record,
    memcg_record,
)

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"
# One complete memcg report, then three kills whose reports the rate limit suppressed.
BURST = FIXTURES / "reports" / "linux-6.12-ratelimited-burst.txt"
HEAD_ONLY = FIXTURES / "reports" / "fragment-head-only.txt"
T0 = 1_750_000_000.0  # 2025-06-15 15:06:40 UTC, 20:36:40 at UTC+05:30
BOOT_ID = "0f6b5c2e-7d1a-4c53-9a4e-2b8f3d1c9e77"
# "2025-06-15 20:36:40.000": describe()'s local time to the millisecond.
TIME_PREFIX = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}  ")
# _log_to(): "<ISO time with offset> oomlens watch: <event>: <message> <k=v ...>".
LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}[+-]\d\d:\d\d oomlens watch: "
                      r"(?P<event>\w+): (?P<rest>.*)$")


# Local times: a zone with a half hour shows that they are converted.
pytestmark = pytest.mark.usefixtures("local_time_is_utc_plus_0530")


def kernel_records(path: Path) -> list[EventRecord]:
    events = list(events_in([path.read_bytes()], "kmsg"))
    return [kernel_record(e, diagnose(e, events[i - 1] if i else None), host="web1",
                          boot_id=BOOT_ID, boot_time=None, detected_at=T0 + i)
            for i, e in enumerate(events)]


class TestDescribe:
    def test_a_complete_kernel_report(self) -> None:
        complete = kernel_records(BURST)[0]
        assert describe(StoredEvent(1, complete, T0)) == (
            "2025-06-15 20:36:40.000  OOM kill  node (81234)  1005 MiB  "
            "memcg /system.slice/render-farm.service  [memcg_limit]  #1")

    def test_a_kill_line_alone_is_a_partial_report(self) -> None:
        partial = kernel_records(BURST)[1]
        assert describe(StoredEvent(2, partial, T0)) == (
            "2025-06-15 20:36:41.000  OOM kill  node (81190)  693 MiB  memcg  [ratelimited]"
            "  (partial report)  #2")

    def test_a_report_without_its_victim(self) -> None:
        (head,) = kernel_records(HEAD_ONLY)
        line = describe(StoredEvent(3, head, T0))
        assert TIME_PREFIX.sub("", line) == (
            f"OOM kill  no victim  {head.scope}  [{head.main_finding}]  (partial report)  #3")
        assert head.victim_pid is None and head.scope == "global"

    def test_a_record_without_scope(self) -> None:
        record = EventRecord("k", kernel_records(BURST)[0].kind, "web1", BOOT_ID, T0)
        assert describe(StoredEvent(4, record, T0)) == (
            "2025-06-15 20:36:40.000  OOM kill  no victim  unknown scope  (partial report)  #4")

    def test_lost_kills(self) -> None:
        record = lost_record(host="web1", boot_id=BOOT_ID, detected_at=T0, counter_from=10,
                             counter_to=13, reason="/dev/kmsg overran (12 records lost)")
        assert describe(StoredEvent(7, record, T0)) == (
            "2025-06-15 20:36:40.000  LOST      3 OOM kill(s) not in the log: "
            "/dev/kmsg overran (12 records lost)  #7")

    def test_memcg_counter_kills(self) -> None:
        record = memcg_record(host="web1", boot_id=BOOT_ID, detected_at=T0 + 0.25,
                              cgroup="/system.slice/batch.service", counter_from=3,
                              counter_to=5)
        assert describe(StoredEvent(8, record, T0)) == (
            "2025-06-15 20:36:40.250  OOM kill  2 kill(s) in memcg /system.slice/batch.service "
            "(from its counter; no kernel log followed)  #8")


_SIGNALS = (signal.SIGHUP, signal.SIGTERM, signal.SIGINT)


class Machine:
    """A fake /proc (no memory cgroup mount, no process of ours), a missing /dev/kmsg
    and a PATH with only what a test puts there."""

    def __init__(self, root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.root = root
        self.proc = write_fake_proc(root / "proc")
        (self.proc / "sys" / "kernel" / "random").mkdir(parents=True)
        (self.proc / "sys" / "kernel" / "random" / "boot_id").write_text(BOOT_ID + "\n")
        self.kmsg = root / "no-kmsg"
        self.bin = root / "bin"
        self.bin.mkdir()
        monkeypatch.setenv("PATH", str(self.bin))
        self.url = f"sqlite:///{root}/x.sqlite"
        self.oom_kill(0)

    def oom_kill(self, count: int) -> None:
        (self.proc / "vmstat").write_text(f"nr_free_pages 1000\noom_kill {count}\n")

    def watch(self, *argv: str) -> tuple[int, str, str]:
        out, err = io.StringIO(), io.StringIO()
        env = Env(out, err, stdout_isatty=False, colour=False, columns=100,
                  proc_root=str(self.proc), kmsg=str(self.kmsg),
                  state_dir=str(self.root / "state"))
        with signals_restored():
            status = main(["watch", *argv], env)
        return status, out.getvalue(), err.getvalue()

    def stored(self) -> list[StoredEvent]:
        with open_store(self.url, create=False) as store:
            return store.events(EventQuery())


@pytest.fixture
def machine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Machine:
    return Machine(tmp_path, monkeypatch)


def logged(err: str) -> dict[str, str]:
    """stderr's log lines by event: what follows `<event>: `."""
    found: dict[str, str] = {}
    for line in err.splitlines():
        match = LOG_LINE.match(line)
        assert match is not None, f"not a log line: {line!r}"
        found[match.group("event")] = match.group("rest")
    return found


REASON = "before oomlens watch started: no kernel log is followed"
CAT = shutil.which("cat") or "/bin/cat"
SLEEP = shutil.which("sleep") or "/bin/sleep"


class TestOnce:
    def test_kills_no_log_holds_are_stored_as_lost_once(self, machine: Machine) -> None:
        machine.oom_kill(5)
        status, out, err = machine.watch("--once", "--source", "none", "--store", machine.url)
        assert status == ExitStatus.OK
        assert TIME_PREFIX.sub("", out) == f"LOST      5 OOM kill(s) not in the log: {REASON}  #1\n"
        log = logged(err)
        assert log["started"] == (f" store={machine.url} log=none cgroups=0 backfilled=1")
        assert log["stopped"] == " stored=1 lost_kills=5"
        assert log["unprotected"].startswith("oom_score_adj not lowered: ")
        (event,) = machine.stored()
        assert (event.record.key, event.record.kills, event.record.host) == (
            f"{BOOT_ID}:lost:0-5", 5, socket.gethostname())

        status, out, err = machine.watch("--once", "--source", "none", "--store", machine.url)
        assert (status, out) == (ExitStatus.OK, "")
        assert logged(err)["stopped"] == " stored=0 lost_kills=0"
        assert len(machine.stored()) == 1

    def test_a_rising_counter_adds_only_the_new_kills(self, machine: Machine) -> None:
        machine.oom_kill(5)
        machine.watch("--once", "--source", "none", "--store", machine.url)
        machine.oom_kill(7)
        status, out, _ = machine.watch("--once", "--source", "none", "--store", machine.url)
        assert status == ExitStatus.OK
        assert TIME_PREFIX.sub("", out) == f"LOST      2 OOM kill(s) not in the log: {REASON}  #2\n"
        assert [e.record.key for e in machine.stored()] == [
            f"{BOOT_ID}:lost:0-5", f"{BOOT_ID}:lost:5-7"]

    def test_json_is_one_event_object_per_line(self, machine: Machine) -> None:
        machine.oom_kill(5)
        status, out, _ = machine.watch("--once", "--source", "none", "--store", machine.url,
                                       "--json")
        assert status == ExitStatus.OK
        (line,) = out.splitlines()
        event = json.loads(line)
        assert (event["schema"], event["live"], event["id"], event["kind"]) == (
            "oomlens.event/1", True, 1, "lost")
        assert (event["key"], event["kills"], event["boot_id"], event["victim"]) == (
            f"{BOOT_ID}:lost:0-5", 5, BOOT_ID, None)
        assert "detail" not in event
        status, out, _ = machine.watch("--once", "--source", "none", "--store", machine.url,
                                       "--json")
        assert (status, out) == (ExitStatus.OK, "")

    def test_the_default_store_is_in_the_state_directory(self, machine: Machine) -> None:
        machine.oom_kill(1)
        state = machine.root / "elsewhere"
        status, out, _ = machine.watch("--once", "--source", "none", "--state-dir", str(state))
        assert status == ExitStatus.OK and "LOST      1 OOM kill(s)" in out
        assert (state / "events.sqlite").is_file()

    def test_without_kmsg_or_journalctl_it_follows_the_counters_only(
            self, machine: Machine) -> None:
        machine.oom_kill(2)
        status, out, err = machine.watch("--once", "--store", machine.url)
        assert status == ExitStatus.OK
        assert logged(err)["no_log"] == (
            f"{machine.kmsg} does not exist; no journalctl either: following memory cgroup "
            "counters and /proc/vmstat oom_kill only")
        assert "log=none" in logged(err)["started"]
        assert TIME_PREFIX.sub("", out) == f"LOST      2 OOM kill(s) not in the log: {REASON}  #1\n"


# PATH holds only the test's bin directory: the script names its tools in full.
FAKE_JOURNALCTL = """\
#!/bin/sh
# The backfill run prints the prepared journal; the follower waits to be stopped.
for arg in "$@"; do [ "$arg" = "-f" ] && exec {sleep} 60; done
exec {cat} {journal}
"""


def journal_of(path: Path) -> str:
    """The report's lines as `journalctl -o json` entries of the kernel, 1 ms apart."""
    lines = path.read_text().splitlines()
    return "".join(json.dumps({"MESSAGE": text, "_TRANSPORT": "kernel",
                               "__CURSOR": f"s=1;i={i}",
                               "_SOURCE_MONOTONIC_TIMESTAMP": str(5_000_000 + 1000 * i)}) + "\n"
                   for i, text in enumerate(lines))


class TestJournalSource:
    @pytest.fixture
    def journalctl(self, machine: Machine) -> Path:
        script = machine.bin / "journalctl"
        journal = machine.bin / "journal.jsonl"
        script.write_text(FAKE_JOURNALCTL.format(sleep=SLEEP, cat=CAT, journal=journal))
        script.chmod(script.stat().st_mode | stat.S_IXUSR)
        journal.write_text(journal_of(BURST))
        return script

    def test_auto_falls_back_to_the_journal_and_backfills_it(
            self, machine: Machine, journalctl: Path) -> None:
        machine.oom_kill(4)
        status, out, err = machine.watch("--once", "--store", machine.url)
        assert status == ExitStatus.OK
        assert [TIME_PREFIX.sub("", line) for line in out.splitlines()] == [
            "OOM kill  node (81234)  1005 MiB  memcg /system.slice/render-farm.service"
            "  [memcg_limit]  #1  (backfilled)",
            "OOM kill  node (81190)  693 MiB  memcg  [ratelimited]  (partial report)  #2"
            "  (backfilled)",
            "OOM kill  node (81302)  732 MiB  memcg  [ratelimited]  (partial report)  #3"
            "  (backfilled)",
            "OOM kill  node (81317)  754 MiB  memcg  [ratelimited]  (partial report)  #4"
            "  (backfilled)",
        ]  # and no lost kills: the counter's 4 are all in the journal
        assert "log=journal" in logged(err)["started"]
        lines = BURST.read_text().splitlines()
        kill = next(i for i, line in enumerate(lines) if "Killed process 81190" in line)
        # No sequence numbers in the journal: the kill line's kernel timestamp keys it.
        assert machine.stored()[1].record.key == f"{BOOT_ID}:t{5 + kill / 1000:.6f}:81190"

    def test_json_says_backfilled_events_are_not_live(
            self, machine: Machine, journalctl: Path) -> None:
        machine.oom_kill(5)
        status, out, _ = machine.watch("--once", "--source", "journal", "--store", machine.url,
                                       "--json")
        assert status == ExitStatus.OK
        events: list[dict[str, Any]] = [json.loads(line) for line in out.splitlines()]
        assert [(e["kind"], e["live"]) for e in events] == [
            ("kernel", False)] * 4 + [("lost", True)]
        assert events[-1]["kills"] == 1 and events[-1]["key"] == f"{BOOT_ID}:lost:4-5"
        assert {e["schema"] for e in events} == {"oomlens.event/1"}


class TestUsageErrors:
    def test_cgroup_without_a_memory_cgroup_controller(self, machine: Machine) -> None:
        status, out, err = machine.watch("--once", "--source", "none", "--store", machine.url,
                                         "--cgroup", "/system.slice/x.service")
        assert (status, out, err) == (
            ExitStatus.USAGE, "", "oomlens: --cgroup: this system has no memory cgroup "
            "controller\n")

    @pytest.mark.parametrize("url", ["mysql://db/events", "sqlite://relative/x.sqlite",
                                     "sqlite:///tmp/"])
    def test_a_bad_store_url(self, machine: Machine, url: str) -> None:
        status, out, err = machine.watch("--once", "--source", "none", "--store", url)
        assert (status, out) == (ExitStatus.USAGE, "")
        assert err.startswith("oomlens: ") and err.count("\n") == 1
        assert "store URL" in err

    def test_a_webhook_that_is_not_http(self, machine: Machine) -> None:
        status, out, err = machine.watch("--once", "--source", "none", "--store", machine.url,
                                         "--webhook", "ftp://x")
        assert (status, out, err) == (
            ExitStatus.USAGE, "", "oomlens: webhook URL 'ftp://x' must be http:// or https:// "
            "with a host\n")

    def test_kmsg_demanded_but_missing(self, machine: Machine) -> None:
        status, out, err = machine.watch("--once", "--source", "kmsg", "--store", machine.url)
        assert (status, out, err) == (
            ExitStatus.USAGE, "", f"oomlens: {machine.kmsg} does not exist\n")

    def test_journal_demanded_but_not_installed(self, machine: Machine) -> None:
        status, out, err = machine.watch("--once", "--source", "journal", "--store",
                                         machine.url)
        assert status in (ExitStatus.PROBLEM, ExitStatus.UNSUPPORTED) and out == ""
        assert err.startswith("oomlens: ") and err.count("\n") == 1 and "journalctl" in err
