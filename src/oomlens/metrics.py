"""Prometheus metrics: the OOM kills the history store holds, memory headroom and
pressure, and the next victim of every OOM domain, all computed when scraped.

Only `oomlens exporter` and `oomlens watch --metrics` import this module, because it
loads prometheus_client. The collector has no thread and no cache of its own: each
scrape reads `/proc`, the memory cgroups and the store afresh, so what Prometheus
stores is what the machine showed at that instant. Metric names, types and labels
are a public contract (docs/metrics.md).

The scrape is made of parts ("memory", "domains", "store"); a part that fails (the
store is down, a `/proc` file cannot be read) loses only its own metrics and shows
as `oomlens_up{part=...} 0`, instead of failing the whole scrape.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from functools import partial
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, generate_latest, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from oomlens.errors import AccessDenied, OomlensError, UsageError
from oomlens.kernel.domain import DomainKind, OomDomain
from oomlens.ranking import RankedProcess, all_domains, rank_domain
from oomlens.store.db import KillCount, Store, open_store
from oomlens.store.record import EventKind
from oomlens.system.meminfo import read_meminfo, read_vmstat
from oomlens.system.psi import Pressure, read_memory_pressure
from oomlens.system.snapshot import Snapshot, take_snapshot

KIB = 1024
KILL_LABELS = ("host", "kind", "comm", "cgroup", "scope", "finding")
PSI_WINDOWS = ("avg10", "avg60", "avg300")
ADDRESS_FORMS = "HOST:PORT, [IPV6]:PORT or :PORT (all interfaces)"

StoreOpener = Callable[[], Store]
# (part, why it failed) when a part starts failing or its reason changes, (part, None)
# when it works again: the exporter logs transitions, not every failed scrape.
PartReporter = Callable[[str, str | None], None]


class OomCollector:
    """A prometheus_client custom collector over one machine and one history store.

    `proc_root` is where `/proc` is (a fake one in tests); `store_opener` opens the
    history store afresh for every scrape. Re-opening rather than keeping a
    connection: the HTTP server answers each scrape in a new thread and a sqlite3
    connection belongs to the thread that made it; a database that restarted or a
    store file that appeared after start needs no reconnect logic; and at one scrape
    every 15-60 s the cost of opening (a file open, or one PostgreSQL handshake) is
    noise next to the /proc scan.
    """

    def __init__(self, proc_root: str, store_opener: StoreOpener,
                 report: PartReporter | None = None) -> None:
        self._proc_root = proc_root
        self._open_store = store_opener
        self._report = report
        self._failing: dict[str, str] = {}
        self._lock = threading.Lock()  # scrapes run concurrently, one thread each

    def describe(self) -> Iterable[Metric]:
        """Nothing: registering the collector must not scrape /proc and the store
        (without `describe`, a registry with auto_describe would call `collect`)."""
        return []

    def collect(self) -> Iterator[Metric]:
        """Every metric family, part by part, then `oomlens_up` saying which parts
        worked."""
        up = GaugeMetricFamily("oomlens_up", "1 if this part of the scrape worked, "
                               "0 if it failed (its metrics are then absent)",
                               labels=["part"])
        parts: tuple[tuple[str, Callable[[], list[Metric]]], ...] = (
            ("memory", self._memory), ("domains", self._domains), ("store", self._kills))
        for part, read in parts:
            try:
                families = read()
            # LookupError and ValueError: a /proc file not in the kernel's format (no
            # MemTotal line, a number that is not one).
            except (OomlensError, OSError, LookupError, ValueError) as err:
                self._note(part, " ".join(str(err).split()) or type(err).__name__)
                up.add_metric([part], 0.0)
                continue
            self._note(part, None)
            up.add_metric([part], 1.0)
            yield from families
        yield up

    def _note(self, part: str, problem: str | None) -> None:
        with self._lock:
            before = self._failing.get(part)
            if problem is None:
                self._failing.pop(part, None)
            else:
                self._failing[part] = problem
        if before != problem and self._report is not None:
            self._report(part, problem)

    def _memory(self) -> list[Metric]:
        """/proc/meminfo, /proc/vmstat oom_kill and /proc/pressure/memory: three small
        reads that stay apart from the (slower, more fragile) process scan."""
        mem = read_meminfo(self._proc_root)
        families: list[Metric] = [
            GaugeMetricFamily("oomlens_memory_total_bytes", "MemTotal of /proc/meminfo",
                              value=mem.mem_total_kib * KIB),
            GaugeMetricFamily("oomlens_memory_available_bytes",
                              "MemAvailable of /proc/meminfo: what can be allocated "
                              "without swapping", value=mem.mem_available_kib * KIB),
            GaugeMetricFamily("oomlens_swap_total_bytes", "SwapTotal of /proc/meminfo",
                              value=mem.swap_total_kib * KIB),
            GaugeMetricFamily("oomlens_swap_free_bytes", "SwapFree of /proc/meminfo",
                              value=mem.swap_free_kib * KIB),
        ]
        kernel_kills = read_vmstat(self._proc_root).get("oom_kill")
        if kernel_kills is not None:  # the counter exists since Linux 4.13
            families.append(CounterMetricFamily(
                "oomlens_kernel_oom_kills_total",
                "OOM kills since boot as the kernel counts them (/proc/vmstat oom_kill)",
                value=kernel_kills))
        families.append(_pressure_family(read_memory_pressure(self._proc_root)))
        return families

    def _domains(self) -> list[Metric]:
        """The first victim of every OOM domain and each limited memcg's headroom, from
        one snapshot (the same pass over /proc the status screen makes)."""
        snapshot = take_snapshot(self._proc_root)
        top = GaugeMetricFamily(
            "oomlens_top_candidate_badness_ratio",
            "The process an OOM in this domain would kill first: its badness over the "
            "domain's totalpages", labels=["domain", "comm", "pid"])
        for domain in all_domains(snapshot):
            first = _first_victim(snapshot, domain)
            if first is not None and first.share is not None:
                top.add_metric([_domain_label(domain), first.process.comm,
                                str(first.process.pid)], first.share)
        limit = GaugeMetricFamily("oomlens_memcg_limit_bytes",
                                  "Memory limit of a limited memory cgroup (an OOM domain)",
                                  labels=["cgroup"])
        headroom = GaugeMetricFamily(
            "oomlens_memcg_headroom_bytes",
            "Limit minus usage of a limited memory cgroup: what it can still charge "
            "before reclaim and then its OOM killer", labels=["cgroup"])
        for memcg in snapshot.memcgs:
            if memcg.limit_bytes is not None:
                limit.add_metric([memcg.path], memcg.limit_bytes)
                headroom.add_metric([memcg.path], memcg.limit_bytes - memcg.usage_bytes)
        return [top, limit, headroom]

    def _kills(self) -> list[Metric]:
        store = self._open_store()
        try:
            counts = store.kill_counts()
        finally:
            store.close()
        return kill_families(counts)


def kill_families(counts: Iterable[KillCount]) -> list[Metric]:
    """The store's kill counts as counters: per label set, lost kills per host, and
    the time of the last kill per host.

    Rows are summed per label set because None and "" become the same label value
    (the store keeps them apart). Every host gets a lost-kill series, 0 included, so
    `increase()` sees the first lost kill (a series that appears already at 1 shows
    no increase).
    """
    kills: dict[tuple[str, ...], int] = {}
    lost: dict[str, int] = {}
    last: dict[str, float] = {}
    for row in counts:
        host = row.host
        labels = (host, str(row.kind), row.comm or "", row.cgroup or "", row.scope or "",
                  row.main_finding or "")
        kills[labels] = kills.get(labels, 0) + row.kills
        lost[host] = lost.get(host, 0) + (row.kills if row.kind is EventKind.LOST else 0)
        last[host] = max(last.get(host, row.last_time), row.last_time)
    total = CounterMetricFamily("oomlens_oom_kills_total",
                                "OOM kills recorded in the history store",
                                labels=list(KILL_LABELS))
    for label_values, value in sorted(kills.items()):
        total.add_metric(list(label_values), value)
    lost_total = CounterMetricFamily(
        "oomlens_oom_kills_lost_total",
        "OOM kills the kernel counted but no log line showed (kind=lost)", labels=["host"])
    stamp = GaugeMetricFamily("oomlens_last_oom_kill_timestamp_seconds",
                              "Time of the last recorded OOM kill (seconds since the epoch)",
                              labels=["host"])
    for host in sorted(lost):
        lost_total.add_metric([host], lost[host])
        stamp.add_metric([host], last[host])
    return [total, lost_total, stamp]


def _pressure_family(pressure: Pressure | None) -> GaugeMetricFamily:
    """PSI averages as ratios (the kernel prints percent); no samples without PSI."""
    family = GaugeMetricFamily(
        "oomlens_memory_pressure_ratio",
        "Share of wall time tasks stalled on memory (/proc/pressure/memory): some = at "
        "least one task, full = all non-idle tasks", labels=["kind", "window"])
    if pressure is None:
        return family
    for kind, line in (("some", pressure.some), ("full", pressure.full)):
        if line is None:
            continue
        for window, percent in zip(PSI_WINDOWS, (line.avg10, line.avg60, line.avg300),
                                   strict=True):
            family.add_metric([kind, window], percent / 100)
    return family


def _first_victim(snapshot: Snapshot, domain: OomDomain) -> RankedProcess | None:
    ranked = rank_domain(snapshot, domain)  # eligible first, in kill order
    return ranked[0] if ranked and ranked[0].ranked.rank is not None else None


def _domain_label(domain: OomDomain) -> str:
    return "global" if domain.kind is DomainKind.GLOBAL else domain.path


def registry_of(collector: OomCollector) -> CollectorRegistry:
    """A registry holding only our collector: no default process or GC metrics of the
    exporter's own Python process mixed into the machine's."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    return registry


def render_once(collector: OomCollector) -> bytes:
    """One scrape in the Prometheus text exposition format (`exporter --once`)."""
    return generate_latest(registry_of(collector))


def parse_address(address: str) -> tuple[str, int]:
    """`HOST:PORT`, `[IPV6]:PORT` or `:PORT` -> (host, port). `:PORT` binds every
    IPv4 interface (`[::]:PORT` every IPv6 one, and IPv4 too where the kernel allows);
    port 0 picks a free port."""
    host, colon, port_text = address.rpartition(":")
    if not colon:
        raise UsageError(f"metrics address {address!r}: expected {ADDRESS_FORMS}")
    if host.startswith("[") and host.endswith("]") and len(host) > 2:
        host = host[1:-1]
    elif ":" in host or "[" in host or "]" in host:
        raise UsageError(f"metrics address {address!r}: an IPv6 address goes in brackets, "
                         "as in [::1]:9717")
    if not (port_text.isascii() and port_text.isdigit()) or int(port_text) > 65535:
        raise UsageError(f"metrics address {address!r}: the port must be a number from 0 "
                         "to 65535")
    return host or "0.0.0.0", int(port_text)


@dataclass(frozen=True)
class MetricsServer:
    """prometheus_client's HTTP server (one thread, a new thread per scrape) and the
    URL it serves, with the port it really bound (port 0 picks one)."""

    httpd: WSGIServer
    thread: threading.Thread
    url: str

    def close(self) -> None:
        """Stop serving, close the socket and wait for the server thread."""
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join()


def serve(address: str, collector: OomCollector) -> MetricsServer:
    """Serve `collector` on `address` (see parse_address) in a background thread.

    Raises UsageError for an address that is malformed, unknown or unavailable (in
    use, not on this host) and AccessDenied for a privileged port."""
    host, port = parse_address(address)
    try:
        httpd, thread = start_http_server(port, host, registry_of(collector))
    except PermissionError as err:
        raise AccessDenied(address, hint="ports below 1024 need root or "
                           "CAP_NET_BIND_SERVICE") from err
    except OSError as err:  # socket.gaierror included: an unknown host name
        raise UsageError(f"cannot listen on {address}: {err.strerror or err}") from err
    bound, port = httpd.socket.getsockname()[:2]
    shown = f"[{bound}]" if ":" in bound else bound
    return MetricsServer(httpd, thread, f"http://{shown}:{port}/metrics")


def store_collector(store_url: str, proc_root: str,
                    report: PartReporter | None = None) -> OomCollector:
    """The collector over this machine and the history store at `store_url`. The
    store is opened with create=False: a scrape never creates an empty store, so a
    missing one shows as `oomlens_up{part="store"} 0` until `oomlens watch` makes it."""
    return OomCollector(proc_root, partial(open_store, store_url, create=False), report)


def serve_metrics(address: str, store_url: str, proc_root: str,
                  report: PartReporter | None = None) -> MetricsServer:
    """`oomlens watch --metrics`: serve the store's and this machine's metrics on
    `address` (`oomlens exporter` builds the collector itself, to collect once at
    start)."""
    return serve(address, store_collector(store_url, proc_root, report))
