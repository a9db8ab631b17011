"""`oomlens watch` as a real daemon (`python -m oomlens watch --json`, a subprocess)
against real OOM kills in sandbox memcgs, with the store read back afterwards and
compared with what the kernel did: its `Killed process` lines, the sandbox's own
oom_kill counter and /proc/vmstat oom_kill. Every test runs on both backends:
SQLite and PostgreSQL (a throwaway server, fixture `postgres_url`).

Kills come from `alloc_and_die`: a python that allocates past its sandbox's limit
at once, so the kernel kills it and nothing else (the only process in the cgroup).
The watcher follows only the sandbox (`--cgroup`); other tenants' kills on this
kernel may still reach the store through /dev/kmsg, so every count is of events
in the sandbox's cgroup.
"""

from __future__ import annotations

import http.server
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest
from daemon import HANDLED, LINE_WITHIN_S, Daemon, caught_signals

from oomlens.store.db import EventQuery, open_store
from oomlens.store.record import EventKind, StoredEvent
from oomlens.system.kmsg import KmsgReader
from oomlens.system.meminfo import read_vmstat
from oomlens.system.sandbox import SandboxMemcg

pytestmark = pytest.mark.kernel

MIB = 1 << 20
LIMIT = 48 * MIB
# Allocates (and touches) twice the sandbox's limit: killed by the memcg OOM killer.
ALLOC_AND_DIE = [sys.executable, "-I", "-S", "-c", f"b = bytearray({2 * LIMIT})"]
BURST = 50
BURST_SECONDS = 10.0


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/events.sqlite"
    url: str = request.getfixturevalue("postgres_db_url")
    return url


Start = Callable[..., Daemon]


@pytest.fixture
def watch(tmp_path: Path, store_url: str) -> Iterator[Start]:
    """`watch(*options)` -> a running `oomlens watch --json` past its start
    (backfill and the first reconciliation done); killed at teardown."""
    started: list[Daemon] = []

    def start(*options: str) -> Daemon:
        argv = [sys.executable, "-m", "oomlens", "watch", "--json", "--store", store_url,
                *options]
        daemon = Daemon(argv, tmp_path / f"watch-{len(started)}.err", key="kind")
        started.append(daemon)
        deadline = time.monotonic() + LINE_WITHIN_S
        while " started: " not in daemon.stderr():
            if daemon.process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"watch did not start: {daemon.stderr()}")
            time.sleep(0.01)
        return daemon

    yield start
    for daemon in started:
        daemon.kill()


def alloc_and_die(box: SandboxMemcg) -> int:
    """One process that the kernel kills in `box`; its pid once it is dead."""
    child = box.spawn(ALLOC_AND_DIE)
    child.wait(timeout=box.timeout)
    assert child.returncode == -signal.SIGKILL, f"pid {child.pid} exited {child.returncode}"
    return child.pid


def stored(store_url: str, **query: Any) -> list[StoredEvent]:
    with open_store(store_url, create=False) as store:
        return store.events(EventQuery(**query))


def kernel_kills() -> int:
    return read_vmstat()["oom_kill"]


def wait_victims(daemon: Daemon, pids: set[int], timeout: float = LINE_WITHIN_S) -> None:
    deadline = time.monotonic() + timeout
    while not pids <= {(e.get("victim") or {}).get("pid") for e in daemon.entries("kernel")}:
        if time.monotonic() > deadline:
            pytest.fail(f"no event for {pids} within {timeout} s: {daemon.stderr()}")
        time.sleep(0.01)


def test_one_kill_is_one_stored_event_with_the_kernels_victim(
        watch: Start, sandbox: Callable[..., SandboxMemcg], store_url: str) -> None:
    box = sandbox(LIMIT)
    daemon = watch("--cgroup", box.path, "--no-backfill")
    hog = box.start_hog(8)
    grower = box.start_hog(8)
    kill = box.trigger_oom(grower)
    wait_victims(daemon, {kill.victim_pid})
    assert daemon.stop() == 0
    (event,) = stored(store_url, cgroup=box.path)
    record = event.record
    assert record.kind == EventKind.KERNEL
    assert (record.victim_pid, record.victim_comm) == (kill.killed.pid, kill.killed.comm)
    assert record.victim_oom_score_adj == kill.killed.oom_score_adj
    assert record.scope == "memcg" and record.cgroup == box.path
    assert record.complete and record.kills == 1
    killed_seq = next(r.seq for r in kill.records if "Killed process" in r.message)
    assert record.seq == killed_seq
    assert record.key.endswith(f":{killed_seq}:{kill.victim_pid}")
    assert any(f"Killed process {kill.victim_pid} " in text for text in record.lines)
    assert record.detail["victim"]["pid"] == kill.victim_pid
    assert hog.process.poll() is None or kill.victim_pid == hog.pid


def test_a_burst_beyond_the_print_rate_limit_gives_every_kill(
        watch: Start, sandbox: Callable[..., SandboxMemcg], store_url: str) -> None:
    box = sandbox(LIMIT)
    daemon = watch("--cgroup", box.path, "--no-backfill")
    counter_before, kernel_before = box.oom_kill_count(), kernel_kills()
    began = time.monotonic()
    pids = {alloc_and_die(box) for _ in range(BURST)}
    took = time.monotonic() - began
    wait_victims(daemon, pids)
    assert daemon.stop() == 0
    # A rate-limited kill prints only its kill line, which names no cgroup: count
    # by victim (pids are not reused within the test's few seconds).
    events = [e for e in stored(store_url) if e.record.victim_pid in pids]
    assert len(events) == BURST, f"{len(events)} events for {BURST} kills in {took:.1f} s"
    assert {e.record.victim_pid for e in events} == pids
    # The victim's cgroup, where its report said it or it was read before it exited.
    assert {e.record.cgroup for e in events} <= {box.path, None}
    assert box.oom_kill_count() - counter_before == BURST
    assert kernel_kills() - kernel_before >= BURST
    # mm/oom_kill.c: oom_kill_process() prints the report only within oom_rs
    # (10 per 5 s); the kill line always. Beyond the limit, events are kill lines only.
    partial = [e for e in events if not e.record.complete]
    assert took > BURST_SECONDS or partial, f"{BURST} kills in {took:.1f} s, all complete"
    assert all(e.record.victim_comm for e in events)


def flood_kmsg_past(seq: int) -> int:
    """Write user-space lines to /dev/kmsg until the ring buffer no longer holds
    record `seq`; the number written. A new fd per 10 lines: the write rate limit
    is per open file (kernel/printk/printk.c: devkmsg_write(), devkmsg_open())."""
    line = b"oomlens-test flood " + b"x" * 900 + b"\n"
    written = 0
    while True:
        with KmsgReader() as reader:
            first = reader.read_available()[:1]
        if first and first[0].seq > seq:
            return written
        if written > 200_000:
            pytest.fail("the ring buffer did not wrap after 200 000 lines")
        for _ in range(50):
            fd = os.open("/dev/kmsg", os.O_WRONLY)
            try:
                for _ in range(10):
                    os.write(fd, line)
            finally:
                os.close(fd)
            written += 10


def test_a_stalled_reader_that_gets_epipe_records_the_lost_kills(
        watch: Start, sandbox: Callable[..., SandboxMemcg], store_url: str) -> None:
    box = sandbox(LIMIT)
    daemon = watch("--cgroup", box.path, "--no-backfill")
    kernel_before = kernel_kills()
    started_at = daemon.entries("lost")[-1]["time"] if daemon.entries("lost") else ""
    os.kill(daemon.pid, signal.SIGSTOP)
    try:
        with KmsgReader() as marker:
            marker.follow_from_end()
            pids = {alloc_and_die(box) for _ in range(3)}
            last_seq = max(r.seq for r in marker.read_available())
        flood_kmsg_past(last_seq)
    finally:
        os.kill(daemon.pid, signal.SIGCONT)
    deadline = time.monotonic() + LINE_WITHIN_S
    while not [e for e in daemon.entries("lost") if e["time"] > started_at]:
        assert time.monotonic() < deadline, f"no lost event: {daemon.stderr()}"
        time.sleep(0.05)
    kernel_after = kernel_kills()
    assert daemon.stop() == 0
    events = stored(store_url)
    seen = {e.record.victim_pid for e in events if e.record.kind == EventKind.KERNEL}
    assert not pids & seen  # their lines were overwritten before the watcher read them
    lost_kills = sum(e.record.kills for e in events if e.record.kind == EventKind.LOST
                     and e.record.detail["oom_kill_to"] <= kernel_after
                     and e.record.detail["oom_kill_to"] > kernel_before)
    assert lost_kills >= 3
    assert "overran" in next(e.record.detail["reason"] for e in events
                             if e.record.kind == EventKind.LOST
                             and e.record.detail["oom_kill_to"] > kernel_before)
    assert not [e for e in events if "oomlens-test flood" in " ".join(e.record.lines)]


def test_a_restart_backfills_without_duplicates(
        watch: Start, sandbox: Callable[..., SandboxMemcg], store_url: str) -> None:
    box = sandbox(LIMIT)
    first = watch("--cgroup", box.path)
    seen = {alloc_and_die(box) for _ in range(2)}
    wait_victims(first, seen)
    assert first.stop() == 0
    while_down = alloc_and_die(box)  # killed while no watcher runs
    second = watch("--cgroup", box.path)
    assert second.stop() == 0
    ours = {*seen, while_down}
    events = [e for e in stored(store_url) if e.record.victim_pid in ours]
    assert sorted(e.record.victim_pid for e in events) == sorted(ours)
    backfilled = [e for e in second.entries("kernel") if e["victim"]["pid"] == while_down]
    assert len(backfilled) == 1 and backfilled[0]["live"] is False
    assert not [e for e in second.entries("kernel") if e["victim"]["pid"] in seen]
    third = watch("--cgroup", box.path, "--once")
    assert third.process.wait(timeout=LINE_WITHIN_S) == 0
    assert len([e for e in stored(store_url) if e.record.victim_pid in ours]) == 3
    assert not third.entries("lost")  # everything the kernel counted is accounted for


def test_without_a_kernel_log_the_cgroups_counter_makes_the_event(
        watch: Start, sandbox: Callable[..., SandboxMemcg], store_url: str) -> None:
    box = sandbox(LIMIT)
    daemon = watch("--cgroup", box.path, "--source", "none")
    alloc_and_die(box)
    line = daemon.wait_for("memcg")
    assert daemon.stop() == 0
    assert (line["cgroup"], line["kills"]) == (box.path, 1)
    (event,) = stored(store_url, cgroup=box.path, kind=EventKind.MEMCG)
    assert event.record.detail["oom_kill_to"] - event.record.detail["oom_kill_from"] == 1


def test_a_forged_kill_line_from_user_space_is_not_an_event(
        watch: Start, store_url: str) -> None:
    daemon = watch("--no-backfill")
    fd = os.open("/dev/kmsg", os.O_WRONLY)
    try:
        os.write(fd, b"Memory cgroup out of memory: Killed process 4242 (forged) "
                     b"total-vm:1kB, anon-rss:1kB, file-rss:0kB, shmem-rss:0kB\n")
    finally:
        os.close(fd)
    time.sleep(0.5)
    assert daemon.stop() == 0
    assert not [e for e in stored(store_url) if e.record.victim_comm == "forged"]


def test_sighup_reopens_the_store_and_sigterm_stops_cleanly(
        watch: Start, sandbox: Callable[..., SandboxMemcg], store_url: str,
        tmp_path: Path) -> None:
    box = sandbox(LIMIT)
    daemon = watch("--cgroup", box.path, "--no-backfill")
    deadline = time.monotonic() + LINE_WITHIN_S
    while not set(HANDLED) <= caught_signals(daemon.pid):
        assert time.monotonic() < deadline, daemon.stderr()
        time.sleep(0.005)
    daemon.process.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + LINE_WITHIN_S
    while " reopened: " not in daemon.stderr():
        assert time.monotonic() < deadline, daemon.stderr()
        time.sleep(0.01)
    pid = alloc_and_die(box)
    wait_victims(daemon, {pid})
    assert daemon.stop() == 0
    assert [e.record.victim_pid for e in stored(store_url, cgroup=box.path)] == [pid]
    assert " stopped: " in daemon.stderr()


def test_it_says_once_why_it_could_not_lower_its_own_score(
        watch: Start) -> None:
    daemon = watch("--no-backfill")
    with open(f"/proc/{daemon.pid}/oom_score_adj") as handle:
        adj = int(handle.read())
    assert daemon.stop() == 0
    if adj == -900:  # CAP_SYS_RESOURCE: lowered
        assert " unprotected: " not in daemon.stderr()
    else:  # this machine: EACCES, said once
        assert daemon.stderr().count(" unprotected: ") == 1
        assert "CAP_SYS_RESOURCE" in daemon.stderr()


def test_history_lists_what_watch_stored(
        watch: Start, sandbox: Callable[..., SandboxMemcg], store_url: str) -> None:
    box = sandbox(LIMIT)
    daemon = watch("--cgroup", box.path, "--no-backfill")
    pid = alloc_and_die(box)
    wait_victims(daemon, {pid})
    assert daemon.stop() == 0
    done = subprocess.run([sys.executable, "-m", "oomlens", "history", "--store", store_url,
                           "--cgroup", box.path], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert f"({pid})" in done.stdout


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class Posts(http.server.BaseHTTPRequestHandler):
    received: ClassVar[list[dict[str, Any]]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).received.append(json.loads(body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *_: object) -> None:
        pass


@pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)
def test_a_kill_reaches_the_exec_hook_the_webhook_and_the_metrics(
        watch: Start, sandbox: Callable[..., SandboxMemcg], store_url: str,
        tmp_path: Path) -> None:
    box = sandbox(LIMIT)
    hook_out = tmp_path / "hook.json"
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Posts)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    Posts.received.clear()
    port = free_port()
    try:
        daemon = watch("--cgroup", box.path, "--no-backfill",
                       "--exec", f"cat > {hook_out}",
                       "--webhook", f"http://127.0.0.1:{server.server_address[1]}/oom",
                       "--metrics", f"127.0.0.1:{port}")
        pid = alloc_and_die(box)
        wait_victims(daemon, {pid})
        deadline = time.monotonic() + LINE_WITHIN_S
        while not (hook_out.exists() and hook_out.read_text().endswith("\n")
                   and Posts.received):
            assert time.monotonic() < deadline, daemon.stderr()
            time.sleep(0.02)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as page:
            metrics = page.read().decode()
        assert daemon.stop() == 0
    finally:
        server.shutdown()
        server.server_close()
    hooked = json.loads(hook_out.read_text())
    assert hooked["victim"]["pid"] == pid and hooked["kind"] == "kernel"
    assert [p["victim"]["pid"] for p in Posts.received if p["kind"] == "kernel"] == [pid]
    kills = [line for line in metrics.splitlines()
             if line.startswith("oomlens_oom_kills_total{") and f'cgroup="{box.path}"' in line]
    assert len(kills) == 1 and kills[0].endswith(" 1.0"), kills
