"""`oomlens history` run in-process over a store of real kernel reports (and lost
and memcg records): the table, one event in full, statistics, the JSON contract
(oomlens.history/1), filters, and the one-line errors."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest

from oomlens.cli.env import Env, ExitStatus
from oomlens.cli.main import main
from oomlens.report.diagnose import diagnose
from oomlens.report.pipeline import events_in
from oomlens.store.db import default_store_url, open_store
from oomlens.store.fromreport import kernel_record
from oomlens.store.record import (
    EventRecord,
    StoredEvent,
    lost_record,
    memcg_record,
    record_json,
)

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"
T0 = 1_750_000_000.0  # 2025-06-15 15:06:40 UTC, 20:36:40 at UTC+05:30
PHP_FPM = "oomanalyser/proxmox-5.15.158-2-pve-cgroupv2-lxc-oom-php-fpm.txt"
BURST = "reports/linux-6.12-ratelimited-burst.txt"
OOM_GROUP = "reports/linux-5.15-memcg-v2-oom-group.txt"


# Local times: a zone with a half hour shows that they are converted.
pytestmark = pytest.mark.usefixtures("local_time_is_utc_plus_0530")


def kernel(name: str, *, host: str = "web1", at: float = T0) -> list[EventRecord]:
    data = (FIXTURES / name).read_bytes()
    events = list(events_in([data], "kmsg", year=2025))
    return [kernel_record(e, diagnose(e, events[i - 1] if i else None), host=host,
                          boot_id="boot-a", boot_time=None, detected_at=at + i)
            for i, e in enumerate(events)]


def kills_of(comm: str, sizes: list[int], *, host: str) -> list[EventRecord]:
    """Rate-limited kill lines of one process name, a minute apart."""
    log = "".join(
        f"[{100 + i * 60:5d}.000000] Out of memory: Killed process {7000 + i} ({comm}) "
        f"total-vm:2000000kB, anon-rss:{kb}kB, file-rss:0kB, shmem-rss:0kB, UID:0 "
        "pgtables:100kB oom_score_adj:0\n" for i, kb in enumerate(sizes))
    events = list(events_in([log.encode()], "kmsg"))
    return [kernel_record(e, diagnose(e), host=host, boot_id="boot-b", boot_time=T0 - 100,
                          detected_at=T0) for e in events]


def fill(url: str) -> list[StoredEvent]:
    """ids 1: php-fpm (complete), 2-5: the node burst (1 complete, 3 rate-limited),
    6: gunicorn with 5 memory.oom.group victims, 7: 3 lost kills, 8: a memcg kill,
    9-11: `leaky` on db1 growing."""
    records = [
        *kernel(PHP_FPM), *kernel(BURST, at=T0 + 60), *kernel(OOM_GROUP, at=T0 + 120),
        lost_record(host="web1", boot_id="boot-a", detected_at=T0 + 200, counter_from=10,
                    counter_to=13, reason="ring buffer overrun"),
        memcg_record(host="web1", boot_id="boot-a", detected_at=T0 + 300,
                     cgroup="/system.slice/batch.service", counter_from=0, counter_to=1),
        *kills_of("leaky", [100_000, 150_000, 300_000], host="db1"),
    ]  # fmt: skip
    with open_store(url) as store:
        stored = [store.add(r, now=r.time + 1) for r in records]
    assert all(s is not None for s in stored)
    return [s for s in stored if s is not None]


@pytest.fixture
def state(tmp_path: Path) -> Path:
    return tmp_path / "state"


@pytest.fixture
def stored(state: Path) -> list[StoredEvent]:
    return fill(default_store_url(str(state)))


def run(state: Path, *argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    env = Env(out, err, stdout_isatty=False, colour=False, columns=100, state_dir=str(state))
    return main(["history", *argv], env), out.getvalue(), err.getvalue()


def run_json(state: Path, *argv: str) -> Any:
    status, out, err = run(state, *argv, "--json")
    assert (status, err) == (ExitStatus.OK, "")
    return json.loads(out)


def listed_ids(state: Path, *argv: str) -> list[int]:
    return [e["id"] for e in run_json(state, *argv)["events"]]


class TestList:
    def test_table(self, state: Path, stored: list[StoredEvent]) -> None:
        status, out, err = run(state)
        assert (status, err) == (ExitStatus.OK, "")
        lines = out.splitlines()
        assert lines[0].split() == ["ID", "TIME", "HOST", "KIND", "VICTIM", "RSS", "CGROUP",
                                    "FINDING"]
        rows = {line.split()[0]: line for line in lines[1:12]}
        assert rows["1"].split() == ["1", "2025-06-15", "20:36:40", "web1", "kernel", "php-fpm",
                                     "(3902942)", "12", "GiB", "/lxc/39004", "memcg_limit"]
        assert rows["3"].split()[4:9] == ["kernel*", "node", "(81190)", "693", "MiB"]
        assert rows["6"].split()[5:8] == ["gunicorn", "(40157)", "+5"]
        assert rows["7"].split()[4:] == ["lost", "—", "3", "kills", "lost", "-", "-", "-"]
        assert rows["8"].split()[4:] == ["memcg", "—", "1", "kill", "(cgroup", "counter)", "-",
                                         "/system.slice/batch.service", "-"]
        assert lines[12:] == ["* incomplete: the log did not show the whole report"]

    def test_oldest_first_by_time(self, state: Path, stored: list[StoredEvent]) -> None:
        by_time = sorted(stored, key=lambda s: (s.record.time, s.id))
        assert listed_ids(state) == [s.id for s in by_time]

    def test_json_is_the_event_records(self, state: Path, stored: list[StoredEvent]) -> None:
        document = run_json(state)
        assert document["schema"] == "oomlens.history/1"
        assert document["store"] == default_store_url(str(state))
        by_id = {s.id: s for s in stored}
        assert document["events"] == [
            json.loads(json.dumps(record_json(by_id[e["id"]]))) for e in document["events"]]
        assert "detail" not in document["events"][0]

    @pytest.mark.parametrize(("argv", "expected"), [
        (["--host", "db1"], [9, 10, 11]),
        (["--comm", "node"], [2, 3, 4, 5]),
        (["--cgroup", "/system.slice"], [2, 8]),
        (["--cgroup", "/lxc/39004/"], [1]),
        (["--finding", "process_group"], [1, 2, 6]),
        (["--kind", "lost"], [7]),
        (["--kind", "memcg", "--host", "web1"], [8]),
        (["--since", "2025-06-15T15:10:00+00:00"], [7, 8]),
        (["--until", "2025-06-15 20:37:40"], [1, 9, 2, 10]),  # local time: T0 + 60
    ])  # fmt: skip
    def test_filters(self, state: Path, stored: list[StoredEvent], argv: list[str],
                     expected: list[int]) -> None:
        assert listed_ids(state, *argv) == expected

    def test_limit_keeps_the_last_and_says_so(self, state: Path,
                                              stored: list[StoredEvent]) -> None:
        assert listed_ids(state, "--limit", "2") == [7, 8]
        status, out, _ = run(state, "--limit", "2")
        assert status == ExitStatus.OK
        assert out.splitlines()[-1] == ("The last 2 shown (--limit N for more); oomlens history "
                                        "show ID for one in full.")

    def test_no_kills_yet(self, state: Path) -> None:
        url = default_store_url(str(state))
        open_store(url).close()
        assert run(state) == (ExitStatus.OK, f"No OOM kills recorded in {url}.\n", "")
        assert run_json(state)["events"] == []

    def test_nothing_matches(self, state: Path, stored: list[StoredEvent]) -> None:
        assert run(state, "--comm", "nginx") == (ExitStatus.OK, "No stored OOM kill matches.\n",
                                                 "")

    @pytest.mark.parametrize("argv", [[], ["--json"], ["stats"], ["show", "1"]])
    def test_no_store_is_one_line_and_exit_2(self, state: Path, argv: list[str]) -> None:
        path = state / "events.sqlite"
        assert run(state, *argv) == (
            ExitStatus.USAGE, "", f"oomlens: no event store at {path} (oomlens watch creates "
            "it)\n")
        assert not state.exists()

    def test_bad_store_url(self, state: Path) -> None:
        status, out, err = run(state, "--store", "sqlite:events.sqlite")
        assert (status, out) == (ExitStatus.USAGE, "")
        assert err == ("oomlens: bad store URL sqlite:events.sqlite: the SQLite path must be "
                       "absolute (sqlite:///ABSOLUTE/PATH)\n")


class TestShow:
    def test_text(self, state: Path, stored: list[StoredEvent]) -> None:
        status, out, err = run(state, "show", "1")
        assert (status, err) == (ExitStatus.OK, "")
        lines = out.splitlines()
        assert lines[:5] == [
            "Event 1: kernel on web1 at 2025-06-15 20:36:40 (recorded 2025-06-15 20:36:41)",
            "Key boot-a:kmsg:1:3902942, boot boot-a",
            "Scope: memcg (CONSTRAINT_MEMCG), cgroup /lxc/39004",
            "Victim: php-fpm (pid 3902942, uid 1000), rss 12 GiB, oom_score_adj 0",
            "Trigger: php-fpm",
        ]
        main_finding = stored[0].record.detail["findings"][0]
        assert f"Main finding [warning] memcg_limit: {main_finding['message']}" in lines
        assert f"    fix: {main_finding['fix']}" in lines
        assert "Other findings: process_group" in lines
        consumers = lines.index("Top consumers (task table):")
        assert lines[consumers + 2].split()[:3] == ["21", "×", "php-fpm"]
        log = lines.index("Kernel log (159 lines):")
        assert lines[log + 1:] == ["  " + line for line in stored[0].record.lines]

    def test_incomplete_and_group_and_lost(self, state: Path, stored: list[StoredEvent]) -> None:
        assert "Incomplete: missing header, mem_info, task_table" in run(state, "show", "3")[1]
        assert ("Victim: gunicorn (pid 40157, uid 1000), rss 333 MiB, oom_score_adj 985, 6 "
                "kills with its memory.oom.group, reaped") in run(state, "show", "6")[1]
        lost = run(state, "show", "7")[1].splitlines()
        assert lost[2:] == ["Victim: — 3 kills lost", "Counted: /proc/vmstat oom_kill went "
                            "from 10 to 13 (ring buffer overrun)"]

    def test_json_is_the_full_record(self, state: Path, stored: list[StoredEvent]) -> None:
        document = run_json(state, "show", "6")
        assert document["schema"] == "oomlens.history/1"
        assert document["store"] == default_store_url(str(state))
        assert document["event"] == json.loads(json.dumps(record_json(stored[5], full=True)))
        assert document["event"]["lines"] == list(stored[5].record.lines)
        assert document["event"]["detail"]["victim"]["pid"] == 40157

    def test_unknown_id_is_one_line_and_exit_2(self, state: Path,
                                               stored: list[StoredEvent]) -> None:
        url = default_store_url(str(state))
        for argv in (["show", "99"], ["show", "99", "--json"]):
            assert run(state, *argv) == (ExitStatus.USAGE, "",
                                         f"oomlens: no event #99 in {url}\n")

    @pytest.mark.parametrize(("argv", "message"), [
        (["show"], "history show needs an event ID (the first column of oomlens history)"),
        (["list", "3"], "an event ID goes with `history show`, not `history list`"),
        (["stats", "3"], "an event ID goes with `history show`, not `history stats`"),
    ])  # fmt: skip
    def test_id_and_action_must_go_together(self, state: Path, stored: list[StoredEvent],
                                            argv: list[str], message: str) -> None:
        assert run(state, *argv) == (ExitStatus.USAGE, "", f"oomlens: {message}\n")


class TestStats:
    def test_text(self, state: Path, stored: list[StoredEvent]) -> None:
        status, out, err = run(state, "stats")
        assert (status, err) == (ExitStatus.OK, "")
        lines = out.splitlines()
        assert lines[0] == (f"18 OOM kills in 11 stored events ({default_store_url(str(state))})")
        days = lines.index("Kills per day (UTC):")
        assert [line.split() for line in lines[days + 1:days + 3]] == [
            ["DAY", "KILLS"], ["2025-06-15", "18"]]
        victims = lines.index("Top victims:")
        assert [line.split() for line in lines[victims + 2:victims + 6]] == [
            ["gunicorn", "6"], ["node", "4"], ["leaky", "3"], ["php-fpm", "1"]]
        assert "Main findings:" in lines
        assert "Hosts:" in lines
        assert lines[-2:] == ["Growing from one kill to the next (a leak signal):",
                              "  db1  leaky: 98 MiB -> 146 MiB -> 293 MiB"]

    def test_json(self, state: Path, stored: list[StoredEvent]) -> None:
        document = run_json(state, "stats")
        assert document["schema"] == "oomlens.history/1"
        assert document["stats"] == {
            "events": 11, "kills": 18, "per_day": {"2025-06-15": 18},
            "per_comm": {"gunicorn": 6, "node": 4, "leaky": 3, "php-fpm": 1},
            "per_cgroup": {"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod"
                           "7d2f1c4e_0a9b_4c3d_8e7f_61a2b3c4d5e6.slice/cri-containerd-4f3e2d1c0"
                           "b9a88776655443322110ffeeddccbbaa99887766554433221100ff.scope": 6,
                           "/lxc/39004": 1, "/system.slice/batch.service": 1,
                           "/system.slice/render-farm.service": 1},
            "per_finding": {"memcg_limit": 8, "ratelimited": 6},
            "per_host": {"web1": 15, "db1": 3},
            "growth": [{"host": "db1", "comm": "leaky", "kills": 3,
                        "rss_kb": [100_000, 150_000, 300_000]}],
        }  # fmt: skip

    def test_filtered(self, state: Path, stored: list[StoredEvent]) -> None:
        stats = run_json(state, "stats", "--host", "web1", "--kind", "kernel")["stats"]
        assert (stats["events"], stats["kills"], stats["growth"]) == (6, 11, [])


def test_a_postgresql_store(tmp_path: Path, postgres_db_url: str) -> None:
    stored = fill(postgres_db_url)
    document = run_json(tmp_path, "--store", postgres_db_url)
    assert document["store"] == postgres_db_url
    assert [e["id"] for e in document["events"]] == [
        s.id for s in sorted(stored, key=lambda s: (s.record.time, s.id))]
    assert run_json(tmp_path, "stats", "--store", postgres_db_url)["stats"]["kills"] == 18
    shown = run_json(tmp_path, "show", "1", "--store", postgres_db_url)["event"]
    assert shown == json.loads(json.dumps(record_json(stored[0], full=True)))
    assert not (tmp_path / "events.sqlite").exists()
