"""Exec events from this kernel's process connector, against processes the test
starts: each exec is seen with its pid and a CLOCK_MONOTONIC stamp; a receive
buffer too small for a burst gives one Overrun and then events again. The raw
protocol claims the module relies on (the ack is queued before send() returns;
after the 8-byte filter only exec events come, the filter's own ack included) are
checked on a bare socket.
"""

from __future__ import annotations

import os
import select
import socket
import struct
import subprocess
import time
from collections.abc import Iterator

import pytest

from oomlens.system.cnproc import (
    CN_IDX_PROC,
    NETLINK_CONNECTOR,
    PROC_CN_MCAST_IGNORE,
    PROC_CN_MCAST_LISTEN,
    PROC_EVENT_EXEC,
    ExecEvent,
    ExecEvents,
    Overrun,
    control_message,
    kernel_filters_events,
    parse_ack,
)

pytestmark = pytest.mark.kernel

FILTERS = kernel_filters_events(os.uname().release)
SEEN_WITHIN_S = 2.0
BURST = 300
TINY_RCVBUF = 4096  # the kernel doubles it; each queued event costs ~830 bytes here


def wait_for_exec(events: ExecEvents, pid: int,
                  timeout: float = SEEN_WITHIN_S) -> tuple[ExecEvent, list[ExecEvent]]:
    """Poll and read until an exec event of `pid` arrives (or fail after `timeout`):
    that event, and every event read meanwhile."""
    poller = select.poll()
    poller.register(events.fileno(), select.POLLIN)
    deadline = time.monotonic() + timeout
    seen: list[ExecEvent] = []
    while (remaining := deadline - time.monotonic()) > 0:
        poller.poll(remaining * 1000)
        seen += events.read()
        for event in seen:
            if event.pid == pid:
                return event, seen
    pytest.fail(f"no exec event for pid {pid} within {timeout} s; saw {len(seen)} others")


@pytest.mark.parametrize("filter_in_kernel", sorted({False, FILTERS}))
def test_exec_of_a_child_is_seen_with_its_pid(filter_in_kernel: bool) -> None:
    with ExecEvents(filter_in_kernel=filter_in_kernel) as events:
        before = time.monotonic_ns()
        child = subprocess.Popen(["/bin/true"])
        try:
            event, _ = wait_for_exec(events, child.pid)
        finally:
            child.wait(timeout=10)
        after = time.monotonic_ns()
    assert event.tgid == child.pid
    assert before <= event.timestamp_ns <= after  # ktime_get_ns() is CLOCK_MONOTONIC


def test_fork_and_exit_events_are_not_taken_for_execs() -> None:
    """Unfiltered, the kernel also sends the shell's forks and exits; a fork event
    read as an exec would name its parent (the shell, or pytest) as the pid."""
    with ExecEvents(filter_in_kernel=False) as events:
        shell = subprocess.Popen(["sh", "-c", "/bin/true; /bin/true"])
        try:
            _, seen = wait_for_exec(events, shell.pid)
        finally:
            shell.wait(timeout=10)
        time.sleep(0.05)
        seen += events.read()
    assert [e.pid for e in seen if e.pid in (shell.pid, os.getpid())] == [shell.pid]


def test_overrun_is_raised_once_and_events_arrive_after_it() -> None:
    with ExecEvents(filter_in_kernel=FILTERS, rcvbuf_bytes=TINY_RCVBUF) as events:
        # One shell execs BURST times while nobody reads; it reaps its own children.
        subprocess.run(["sh", "-c", f"i=0; while [ $i -lt {BURST} ]; do /bin/true; "
                        "i=$((i+1)); done"], check=True, timeout=60)
        with pytest.raises(Overrun, match="rescan /proc"):
            events.read()
        events.read()  # what was still queued after the loss
        child = subprocess.Popen(["/bin/true"])
        try:
            event, _ = wait_for_exec(events, child.pid)
        finally:
            child.wait(timeout=10)
        assert event.pid == child.pid


def test_read_without_events_returns_at_once() -> None:
    with ExecEvents(filter_in_kernel=FILTERS) as events:
        events.read()
        start = time.monotonic()
        events.read()
        assert time.monotonic() - start < 0.1


def test_close_twice_is_harmless() -> None:
    events = ExecEvents(filter_in_kernel=FILTERS)
    events.close()
    events.close()


class TestProtocolAgainstKernel:
    """What cnproc.py's module doc claims about cn_proc_mcast_ctl(), on a bare socket."""

    @pytest.fixture
    def sock(self) -> Iterator[socket.socket]:
        sock = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_CONNECTOR)
        sock.bind((0, CN_IDX_PROC))
        sock.setblocking(False)
        yield sock
        sock.send(control_message(PROC_CN_MCAST_IGNORE, 0))
        sock.close()

    def test_ack_is_queued_before_send_returns(self, sock: socket.socket) -> None:
        sock.send(control_message(PROC_CN_MCAST_LISTEN, 4242))
        acks = []
        while True:  # non-blocking: only what is queued already
            try:
                data = sock.recv(65536)
            except BlockingIOError:
                break
            acks.append(parse_ack(data, len(data), 4242))
        assert 0 in acks

    @pytest.mark.skipif(not FILTERS, reason="kernel < 6.6 has no event filter")
    def test_filter_drops_everything_but_exec_including_its_ack(
            self, sock: socket.socket) -> None:
        sock.send(control_message(PROC_CN_MCAST_LISTEN, 7, PROC_EVENT_EXEC))
        subprocess.run(["/bin/true"], check=True, timeout=10)  # fork, exec, exit
        time.sleep(0.05)
        whats = []
        while True:
            try:
                data = sock.recv(65536)
            except BlockingIOError:
                break
            whats.append(struct.unpack_from("=I", data, 36)[0])
        assert whats and set(whats) == {PROC_EVENT_EXEC}
