"""metrics.py and `oomlens exporter`: every value parsed back from the text format and
compared with what the fake /proc, the store or the real /proc says; the HTTP server
scraped for real; the CLI run in-process, and as a daemon stopped by a signal."""

from __future__ import annotations

import io
import json
import re
import shutil
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from pathlib import Path

import pytest
from fakecgroup import make_v2_memcg, make_v2_root
from fakeproc import FakeProcess, mountinfo_text, write_fake_proc
from prometheus_client.parser import text_string_to_metric_families

from oomlens import metrics
from oomlens.cli.env import Env, ExitStatus
from oomlens.cli.main import main
from oomlens.errors import AccessDenied, OomlensError, UsageError
from oomlens.metrics import (
    OomCollector,
    kill_families,
    parse_address,
    render_once,
    serve,
)
from oomlens.store.db import KillCount, Store, default_store_url, open_store
from oomlens.store.record import EventKind, EventRecord, lost_record, memcg_record
from oomlens.system.snapshot import PAGE_SIZE

MIB = 1 << 20
REPO = Path(__file__).resolve().parents[2]
needs_4k_pages = pytest.mark.skipif(PAGE_SIZE != 4096, reason="fixtures assume 4 KiB pages")

# --- a fake machine -------------------------------------------------------------------
# 8 000 000 kB of RAM and 1 GiB of swap: global totalpages = 2 000 000 + 262 144.
MEMINFO = ("MemTotal:        8000000 kB\nMemFree:         3000000 kB\n"
           "MemAvailable:    5000000 kB\nSwapTotal:       1048576 kB\n"
           "SwapFree:         524288 kB\n")
PSI = ("some avg10=1.50 avg60=0.75 avg300=0.25 total=123456\n"
       "full avg10=0.50 avg60=0.20 avg300=0.05 total=6789\n")
VMSTAT = "nr_free_pages 750000\noom_kill 7\npgfault 123\n"
MEMCG = "/app.slice/db.service"
INIT = FakeProcess(pid=1, comm="init", ppid=0, start_time_ticks=1, cmdline=b"/sbin/init\0")
# In MEMCG: 100 000 + 200 pages, adj 0.
DB = FakeProcess(pid=300, comm="db", start_time_ticks=3000, rss_anon_kib=400_000,
                 rss_file_kib=0, pte_kib=800, cgroup=f"0::{MEMCG}\n")
# In MEMCG: 10 000 + 12 pages and oom_score_adj 300; a hostile name.
WORKER = FakeProcess(pid=301, comm='w"k\\r\n}', start_time_ticks=3001, rss_anon_kib=40_000,
                     rss_file_kib=0, pte_kib=48, oom_score_adj=300, cgroup=f"0::{MEMCG}\n")
# Outside any limited memcg: 50 000 + 100 pages.
CACHE = FakeProcess(pid=400, comm="cache", start_time_ticks=4000, rss_anon_kib=200_000,
                    rss_file_kib=0, pte_kib=400)


def fake_machine(tmp_path: Path, *, pressure: str | None = PSI) -> Path:
    cgroup = make_v2_root(tmp_path / "cgroup", procs=[1, 400])
    make_v2_memcg(cgroup, "/app.slice")
    make_v2_memcg(cgroup, MEMCG, max_bytes=512 * MIB, swap_max_bytes=0,
                  current_bytes=460 * MIB, procs=[300, 301])
    root = write_fake_proc(tmp_path / "proc", [INIT, DB, WORKER, CACHE], meminfo=MEMINFO,
                           mountinfo=mountinfo_text(cgroup2=cgroup), pressure=pressure,
                           osrelease="6.12.0-1-amd64")
    (root / "vmstat").write_text(VMSTAT)
    return root


# --- the store ----------------------------------------------------------------------------

T0 = 1_700_000_000.0


def kernel(n: int, host: str, comm: str, *, kills: int = 1, **fields: object) -> EventRecord:
    return EventRecord(key=f"{host}-boot:{n}:{1000 + n}", kind=EventKind.KERNEL, host=host,
                       boot_id=f"{host}-boot", time=T0 + n, victim_pid=1000 + n,
                       victim_comm=comm, kills=kills, complete=True,
                       **fields)  # type: ignore[arg-type]


RECORDS = [
    kernel(100, "web1", "java", kills=3, scope="memcg", cgroup="/app.slice/java.service",
           main_finding="MEMCG_LIMIT"),
    kernel(500, "web1", "java", kills=2, scope="memcg", cgroup="/app.slice/java.service",
           main_finding="MEMCG_LIMIT"),
    lost_record(host="web1", boot_id="web1-boot", detected_at=T0 + 300, counter_from=10,
                counter_to=14, reason="ring buffer overrun"),
    kernel(50, "web2", "postgres", scope="global"),
    memcg_record(host="web2", boot_id="web2-boot", detected_at=T0 + 60, cgroup="/user.slice",
                 counter_from=0, counter_to=2),
]


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A store holding RECORDS, on either database."""
    if request.param == "sqlite":
        url = default_store_url(str(tmp_path / "state"))
    else:
        url = request.getfixturevalue("postgres_db_url")
    with open_store(url) as store:
        for record in RECORDS:
            store.add(record, now=T0 + 1000)
    return url


def sqlite_store(tmp_path: Path, records: Iterable[EventRecord] = RECORDS) -> str:
    url = default_store_url(str(tmp_path / "state"))
    with open_store(url) as store:
        for record in records:
            store.add(record, now=T0 + 1000)
    return url


def reader(url: str) -> Callable[[], Store]:
    return lambda: open_store(url, create=False)


def no_store(tmp_path: Path) -> Callable[[], Store]:
    return reader(default_store_url(str(tmp_path / "no-state")))


def collector(proc: Path, opener: Callable[[], Store] | None = None,
              report: Callable[[str, str | None], None] | None = None) -> OomCollector:
    """Without `opener`, a store that does not exist (yet)."""
    return OomCollector(str(proc), opener or no_store(proc), report)


# --- parsing the exposition back --------------------------------------------------------

Samples = dict[str, dict[tuple[tuple[str, str], ...], float]]


def parse(text: str) -> Samples:
    """{sample name: {sorted label pairs: value}}, from the text format."""
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return out


def scrape(c: OomCollector) -> Samples:
    return parse(render_once(c).decode())


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[name][tuple(sorted(labels.items()))]


def types(text: str) -> dict[str, str]:
    return {f.name: f.type for f in text_string_to_metric_families(text)}


# --- system metrics against the fake /proc ------------------------------------------------


@needs_4k_pages
class TestSystemMetricsAgainstFakeProc:
    def test_memory_and_swap_are_meminfo_in_bytes(self, tmp_path: Path) -> None:
        got = scrape(collector(fake_machine(tmp_path)))
        assert value(got, "oomlens_memory_total_bytes") == 8_000_000 * 1024
        assert value(got, "oomlens_memory_available_bytes") == 5_000_000 * 1024
        assert value(got, "oomlens_swap_total_bytes") == 1_048_576 * 1024
        assert value(got, "oomlens_swap_free_bytes") == 524_288 * 1024

    def test_kernel_counter_is_vmstat_oom_kill(self, tmp_path: Path) -> None:
        text = render_once(collector(fake_machine(tmp_path))).decode()
        assert value(parse(text), "oomlens_kernel_oom_kills_total") == 7
        assert types(text)["oomlens_kernel_oom_kills"] == "counter"

    def test_pressure_is_psi_percent_over_100(self, tmp_path: Path) -> None:
        got = scrape(collector(fake_machine(tmp_path)))["oomlens_memory_pressure_ratio"]
        expected = {("some", "avg10"): 0.015, ("some", "avg60"): 0.0075,
                    ("some", "avg300"): 0.0025, ("full", "avg10"): 0.005,
                    ("full", "avg60"): 0.002, ("full", "avg300"): 0.0005}
        assert {(dict(k)["kind"], dict(k)["window"]): v for k, v in got.items()} == \
            pytest.approx(expected)

    def test_no_psi_means_no_pressure_samples(self, tmp_path: Path) -> None:
        got = scrape(collector(fake_machine(tmp_path, pressure=None)))
        assert "oomlens_memory_pressure_ratio" not in got
        assert value(got, "oomlens_up", part="memory") == 1

    def test_top_candidate_per_domain(self, tmp_path: Path) -> None:
        # Global: totalpages 2 262 144, adj counts 300 * 2262 pages: the worker
        # (10 012 + 678 600) beats db (100 200) and cache (50 100); init is exempt.
        # Memcg: totalpages 131 072 (512 MiB, no swap), adj counts 300 * 131 pages:
        # db (100 200) beats the worker (10 012 + 39 300).
        got = scrape(collector(fake_machine(tmp_path)))["oomlens_top_candidate_badness_ratio"]
        assert got == {
            (("comm", WORKER.comm), ("domain", "global"), ("pid", "301")):
                pytest.approx((10_012 + 300 * 2262) / 2_262_144),
            (("comm", "db"), ("domain", MEMCG), ("pid", "300")):
                pytest.approx(100_200 / 131_072),
        }

    def test_memcg_limit_and_headroom(self, tmp_path: Path) -> None:
        got = scrape(collector(fake_machine(tmp_path)))
        assert got["oomlens_memcg_limit_bytes"] == {(("cgroup", MEMCG),): 512 * MIB}
        assert got["oomlens_memcg_headroom_bytes"] == {(("cgroup", MEMCG),): 52 * MIB}

    def test_all_parts_up(self, tmp_path: Path) -> None:
        got = scrape(collector(fake_machine(tmp_path), reader(sqlite_store(tmp_path, []))))
        assert got["oomlens_up"] == {(("part", p),): 1 for p in ("memory", "domains", "store")}

    def test_share_on_a_0_to_1000_era_kernel(self, tmp_path: Path) -> None:
        root = fake_machine(tmp_path)
        (root / "sys" / "kernel" / "osrelease").write_text("3.2.0-4-amd64\n")
        got = scrape(collector(root))["oomlens_top_candidate_badness_ratio"]
        # 2.6.39-3.4: (rss + ptes + swap) * 1000 / totalpages + adj, out of 1000.
        worker = (10_012 * 1000 // 2_262_144 + 300) / 1000
        assert got[(("comm", WORKER.comm), ("domain", "global"), ("pid", "301"))] == \
            pytest.approx(worker)


# --- kill counts from the store --------------------------------------------------------------


def kill_samples(url: str, tmp_path: Path) -> Samples:
    return scrape(collector(fake_machine(tmp_path), reader(url)))


class TestKillCountsFromTheStore:
    def test_label_sets_and_sums(self, store_url: str, tmp_path: Path) -> None:
        got = kill_samples(store_url, tmp_path)["oomlens_oom_kills_total"]
        assert got == {
            (("cgroup", "/app.slice/java.service"), ("comm", "java"),
             ("finding", "MEMCG_LIMIT"), ("host", "web1"), ("kind", "kernel"),
             ("scope", "memcg")): 5,
            (("cgroup", ""), ("comm", ""), ("finding", ""), ("host", "web1"),
             ("kind", "lost"), ("scope", "")): 4,
            (("cgroup", ""), ("comm", "postgres"), ("finding", ""), ("host", "web2"),
             ("kind", "kernel"), ("scope", "global")): 1,
            (("cgroup", "/user.slice"), ("comm", ""), ("finding", ""), ("host", "web2"),
             ("kind", "memcg"), ("scope", "memcg")): 2,
        }

    def test_lost_per_host_with_zeros(self, store_url: str, tmp_path: Path) -> None:
        got = kill_samples(store_url, tmp_path)["oomlens_oom_kills_lost_total"]
        assert got == {(("host", "web1"),): 4, (("host", "web2"),): 0}

    def test_last_kill_time_per_host(self, store_url: str, tmp_path: Path) -> None:
        got = kill_samples(store_url, tmp_path)["oomlens_last_oom_kill_timestamp_seconds"]
        assert got == {(("host", "web1"),): T0 + 500, (("host", "web2"),): T0 + 60}

    def test_types(self, tmp_path: Path) -> None:
        text = render_once(collector(fake_machine(tmp_path), reader(sqlite_store(tmp_path))))
        assert {name: kind for name, kind in types(text.decode()).items()
                if "kill" in name} == {
            "oomlens_oom_kills": "counter", "oomlens_oom_kills_lost": "counter",
            "oomlens_last_oom_kill_timestamp_seconds": "gauge",
            "oomlens_kernel_oom_kills": "counter"}

    def test_empty_store_has_no_series(self, tmp_path: Path) -> None:
        got = scrape(collector(fake_machine(tmp_path), reader(sqlite_store(tmp_path, []))))
        assert not {"oomlens_oom_kills_total", "oomlens_oom_kills_lost_total"} & got.keys()
        assert value(got, "oomlens_up", part="store") == 1

    def test_none_and_empty_labels_are_one_series(self) -> None:
        rows = [KillCount("h", EventKind.KERNEL, None, "/a", None, None, 2, T0),
                KillCount("h", EventKind.KERNEL, "", "/a", "", "", 3, T0 + 1)]
        (total, _, _) = kill_families(rows)
        assert [(s.labels["comm"], s.value) for s in total.samples] == [("", 5)]

    def test_store_is_closed_after_each_scrape(self, tmp_path: Path) -> None:
        url = sqlite_store(tmp_path)
        opened: list[Store] = []

        def opener() -> Store:
            opened.append(open_store(url, create=False))
            return opened[-1]

        c = collector(fake_machine(tmp_path), opener)
        scrape(c)
        scrape(c)
        assert len(opened) == 2
        for store in opened:
            with pytest.raises(OomlensError):  # closed: no query runs
                store.kill_counts()


# --- a failing part costs that part only --------------------------------------------------


class TestParts:
    def test_missing_store_costs_the_store_part(self, tmp_path: Path) -> None:
        got = scrape(collector(fake_machine(tmp_path)))
        assert value(got, "oomlens_up", part="store") == 0
        assert value(got, "oomlens_up", part="memory") == 1
        assert value(got, "oomlens_up", part="domains") == 1
        assert "oomlens_oom_kills_total" not in got
        assert "oomlens_memory_total_bytes" in got

    def test_unreachable_postgresql_costs_the_store_part(self, tmp_path: Path) -> None:
        with socket.socket() as closed:  # a port nothing listens on
            closed.bind(("127.0.0.1", 0))
            url = f"postgresql://oomlens@127.0.0.1:{closed.getsockname()[1]}/oomlens"
        got = scrape(collector(fake_machine(tmp_path), reader(url)))
        assert value(got, "oomlens_up", part="store") == 0
        assert value(got, "oomlens_memory_total_bytes") == 8_000_000 * 1024

    def test_unreadable_meminfo_costs_memory_and_domains(self, tmp_path: Path) -> None:
        root = fake_machine(tmp_path)
        (root / "meminfo").unlink()
        got = scrape(collector(root, reader(sqlite_store(tmp_path))))
        assert got["oomlens_up"] == {(("part", "memory"),): 0, (("part", "domains"),): 0,
                                     (("part", "store"),): 1}
        assert "oomlens_memory_total_bytes" not in got
        assert value(got, "oomlens_oom_kills_lost_total", host="web1") == 4

    def test_transitions_are_reported_once(self, tmp_path: Path) -> None:
        events: list[tuple[str, str | None]] = []
        url = default_store_url(str(tmp_path / "state"))
        c = collector(fake_machine(tmp_path), reader(url), lambda p, why: events.append((p, why)))
        scrape(c)
        scrape(c)
        sqlite_store(tmp_path)  # `oomlens watch` creates the store
        scrape(c)
        scrape(c)
        assert [(part, why is None) for part, why in events] == [("store", False),
                                                                  ("store", True)]
        assert f"no event store at {tmp_path}/state/events.sqlite" in str(events[0][1])


# --- addresses and the HTTP server ---------------------------------------------------------


@pytest.mark.parametrize(("address", "expected"), [
    ("127.0.0.1:9717", ("127.0.0.1", 9717)),
    ("localhost:0", ("localhost", 0)),
    ("[::1]:9717", ("::1", 9717)),
    ("[::]:80", ("::", 80)),
    (":9717", ("0.0.0.0", 9717)),
])
def test_parse_address(address: str, expected: tuple[str, int]) -> None:
    assert parse_address(address) == expected


BAD_ADDRESSES = ["9717", "127.0.0.1", "127.0.0.1:", "127.0.0.1:http", "::1:9717",
                 "[::1]9717", "[]:9717", "host:65536", "host:-1", "host:٣"]


@pytest.mark.parametrize("address", BAD_ADDRESSES)
def test_bad_address_is_a_usage_error(address: str) -> None:
    with pytest.raises(UsageError) as raised:
        parse_address(address)
    assert len(str(raised.value).splitlines()) == 1


def get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain")
        body: bytes = response.read()
        return body.decode()


@needs_4k_pages
class TestServe:
    def test_scrape_over_http(self, tmp_path: Path) -> None:
        server = serve("127.0.0.1:0", collector(fake_machine(tmp_path),
                                                reader(sqlite_store(tmp_path))))
        try:
            assert re.fullmatch(r"http://127\.0\.0\.1:\d+/metrics", server.url)
            got = parse(get(server.url))
        finally:
            server.close()
        assert value(got, "oomlens_memory_total_bytes") == 8_000_000 * 1024
        assert value(got, "oomlens_oom_kills_lost_total", host="web1") == 4
        assert not server.thread.is_alive()
        with pytest.raises(urllib.error.URLError):
            get(server.url)

    def test_ipv6_loopback(self, tmp_path: Path) -> None:
        try:
            with socket.socket(socket.AF_INET6) as probe:
                probe.bind(("::1", 0))
        except OSError:
            pytest.skip("no IPv6 loopback here")
        server = serve("[::1]:0", collector(fake_machine(tmp_path)))
        try:
            assert server.url.startswith("http://[::1]:")
            assert value(parse(get(server.url)), "oomlens_up", part="store") == 0
        finally:
            server.close()

    def test_port_in_use_is_a_usage_error(self, tmp_path: Path) -> None:
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            address = f"127.0.0.1:{taken.getsockname()[1]}"
            with pytest.raises(UsageError, match=f"cannot listen on {address}"):
                serve(address, collector(fake_machine(tmp_path)))

    def test_privileged_port_is_access_denied(self, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
        # What bind() says to a process without CAP_NET_BIND_SERVICE (tests run as root).
        def refuse(*_: object) -> None:
            raise PermissionError(13, "Permission denied")

        monkeypatch.setattr(metrics, "start_http_server", refuse)
        with pytest.raises(AccessDenied, match="CAP_NET_BIND_SERVICE"):
            serve("127.0.0.1:80", collector(fake_machine(tmp_path)))


# --- the command ---------------------------------------------------------------------------


def run_cli(*argv: str, proc_root: str = "/proc") -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    env = Env(out, err, stdout_isatty=False, colour=False, columns=120, proc_root=proc_root)
    return main(list(argv), env), out.getvalue(), err.getvalue()


@pytest.mark.parametrize("address", [*BAD_ADDRESSES, "no-such-host.invalid:9717"])
def test_exporter_bad_listen_exits_2_with_one_line(address: str, tmp_path: Path) -> None:
    status, out, err = run_cli("exporter", "--listen", address, "--state-dir", str(tmp_path))
    assert status == ExitStatus.USAGE
    assert out == ""
    assert len(err.splitlines()) == 1 and address in err


def test_exporter_bad_store_url_exits_2(tmp_path: Path) -> None:
    status, _, err = run_cli("exporter", "--once", "--store", "mysql://db/x")
    assert status == ExitStatus.USAGE
    assert len(err.splitlines()) == 1 and "unsupported store URL" in err


@needs_4k_pages
def test_exporter_once_without_a_store(tmp_path: Path) -> None:
    proc = fake_machine(tmp_path)
    status, out, err = run_cli("exporter", "--once", "--state-dir", str(tmp_path / "state"),
                               proc_root=str(proc))
    assert status == ExitStatus.OK
    got = parse(out)
    assert value(got, "oomlens_memory_available_bytes") == 5_000_000 * 1024
    assert value(got, "oomlens_up", part="store") == 0
    assert err == (f"oomlens exporter: store metrics absent: no event store at "
                   f"{tmp_path}/state/events.sqlite (oomlens watch creates it)\n")


@needs_4k_pages
def test_exporter_once_with_a_store(tmp_path: Path) -> None:
    url = sqlite_store(tmp_path)
    status, out, err = run_cli("exporter", "--once", "--store", url,
                               proc_root=str(fake_machine(tmp_path)))
    assert (status, err) == (ExitStatus.OK, "")
    got = parse(out)
    assert got["oomlens_up"] == {(("part", p),): 1 for p in ("memory", "domains", "store")}
    assert value(got, "oomlens_oom_kills_lost_total", host="web1") == 4


class TestAgainstRealProc:
    def test_memory_total_is_meminfo_total(self, tmp_path: Path) -> None:
        status, out, _ = run_cli("exporter", "--once", "--state-dir", str(tmp_path))
        assert status == ExitStatus.OK
        meminfo = Path("/proc/meminfo").read_text()
        total_kib = int(re.search(r"^MemTotal:\s+(\d+) kB$", meminfo, re.M).group(1))  # type: ignore[union-attr]
        got = parse(out)
        assert value(got, "oomlens_memory_total_bytes") == total_kib * 1024
        assert value(got, "oomlens_up", part="memory") == 1
        assert value(got, "oomlens_up", part="domains") == 1

    def test_top_candidate_of_the_global_domain_is_a_live_process(self,
                                                                  tmp_path: Path) -> None:
        got = scrape(collector(Path("/proc")))["oomlens_top_candidate_badness_ratio"]
        (labels,) = [dict(k) for k in got if dict(k)["domain"] == "global"]
        comm = Path(f"/proc/{labels['pid']}/comm").read_text().rstrip("\n")
        assert comm == labels["comm"]


def start_exporter(tmp_path: Path) -> tuple[subprocess.Popen[str], str]:
    """`oomlens exporter` as a daemon on a free port; (process, URL from its line)."""
    daemon = subprocess.Popen(
        [sys.executable, "-m", "oomlens", "exporter", "--listen", "127.0.0.1:0",
         "--state-dir", str(tmp_path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, cwd=REPO)
    assert daemon.stdout is not None
    line = daemon.stdout.readline()
    found = re.fullmatch(r"oomlens exporter: serving (http://127\.0\.0\.1:\d+/metrics) "
                         r"\(kills from sqlite://.*/events\.sqlite\)\n", line)
    if found is None:
        daemon.kill()
        pytest.fail(f"unexpected first line {line!r}; stderr: {daemon.communicate()[1]}")
    return daemon, found.group(1)


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT])
def test_exporter_serves_until_signalled(stop: signal.Signals, tmp_path: Path) -> None:
    daemon, url = start_exporter(tmp_path)
    try:
        got = parse(get(url))
        assert value(got, "oomlens_up", part="store") == 0
        assert value(got, "oomlens_up", part="memory") == 1
        daemon.send_signal(stop)
        out, err = daemon.communicate(timeout=30)
    finally:
        if daemon.poll() is None:
            daemon.kill()
            daemon.wait()
    assert daemon.returncode == 0
    assert out == ""
    # Told once, at start; the scrape that failed the same way again says nothing.
    assert err.splitlines() == [f"oomlens exporter: store metrics absent: no event store at "
                                f"{tmp_path}/events.sqlite (oomlens watch creates it)"]


def test_prometheus_client_is_loaded_only_by_the_metrics_commands() -> None:
    code = ("import sys; from oomlens.cli.main import build_parser; "
            "from oomlens.cli.commands import status, watch; build_parser(); "
            "print('prometheus_client' in sys.modules)")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True, cwd=REPO).stdout
    assert loaded == "False\n"


# --- contrib: alert rules and dashboard ----------------------------------------------------

ALERTS = REPO / "contrib" / "prometheus" / "oomlens-alerts.yml"
DASHBOARD = REPO / "contrib" / "grafana" / "oomlens-dashboard.json"


@needs_4k_pages
@pytest.mark.parametrize("path", [ALERTS, DASHBOARD], ids=["alerts", "dashboard"])
def test_contrib_uses_only_exported_metrics(path: Path, tmp_path: Path) -> None:
    text = render_once(collector(fake_machine(tmp_path), reader(sqlite_store(tmp_path))))
    exported = set(parse(text.decode()))
    used = set(re.findall(r"\boomlens_[a-z0-9_]+", path.read_text()))
    assert used and used <= exported, used - exported


def test_alert_rules_load() -> None:
    yaml = pytest.importorskip("yaml")
    (group,) = yaml.safe_load(ALERTS.read_text())["groups"]
    names = [rule["alert"] for rule in group["rules"]]
    assert names == ["OomKillRecent", "OomKillsLost", "MemoryHeadroomLow",
                     "MemoryPressureHigh", "OomTopCandidateProtectedService",
                     "OomlensPartDown"]
    for rule in group["rules"]:
        assert rule["expr"] and rule["labels"]["severity"] in {"warning", "info"}
        assert {"summary", "description"} <= rule["annotations"].keys()


def test_alert_rules_pass_promtool() -> None:
    if shutil.which("promtool") is None:
        pytest.skip("promtool is not installed (Debian: the prometheus package)")
    checked = subprocess.run(["promtool", "check", "rules", str(ALERTS)], check=False,
                             capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_dashboard_imports_with_a_datasource_input() -> None:
    board = json.loads(DASHBOARD.read_text())
    (source,) = board["__inputs"]
    assert (source["type"], source["pluginId"]) == ("datasource", "prometheus")
    placeholder = "${" + source["name"] + "}"
    panels = [p for p in board["panels"] if p["type"] != "row"]
    assert len({p["id"] for p in board["panels"]}) == len(board["panels"])
    for panel in panels:
        assert panel["datasource"]["uid"] == placeholder
        assert all(t["datasource"]["uid"] == placeholder and t["expr"]
                   for t in panel["targets"])
    titles = " ".join(p["title"] for p in panels).lower()
    for subject in ("victim", "lost", "available", "pressure", "headroom", "next victim"):
        assert subject in titles
