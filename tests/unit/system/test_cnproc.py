"""Process-connector datagrams built by hand the way drivers/connector/cn_proc.c
lays them out: exec events are found, everything else is skipped, nothing raises."""

from __future__ import annotations

import random
import struct

import pytest

from oomlens.system.cnproc import (
    CN_IDX_PROC,
    NLMSG_DONE,
    PROC_CN_MCAST_LISTEN,
    PROC_EVENT_EXEC,
    PROC_EVENT_NONE,
    ExecEvent,
    control_message,
    kernel_filters_events,
    parse_ack,
    parse_datagram,
)

PROC_EVENT_FORK = 0x1
PROC_EVENT_EXIT = 0x80000000
PROC_EVENT_SIZE = 40  # sizeof(struct proc_event) on 6.x


def message(what: int, data: bytes, *, idx: int = CN_IDX_PROC, nl_type: int = NLMSG_DONE,
            ack: int = 0, stamp: int = 1_000_000, cn_len: int = PROC_EVENT_SIZE) -> bytes:
    """One nlmsghdr + cn_msg + proc_event, as send_msg() builds it (76 bytes)."""
    event = struct.pack("=IIQ", what, 1, stamp) + data.ljust(PROC_EVENT_SIZE - 16, b"\0")
    cn_msg = struct.pack("=IIIIHH", idx, 1, 7, ack, cn_len, 0) + event
    return struct.pack("=IHHII", 16 + len(cn_msg), nl_type, 0, 7, 0) + cn_msg


def exec_message(pid: int, tgid: int, stamp: int = 1_000_000) -> bytes:
    return message(PROC_EVENT_EXEC, struct.pack("=ii", pid, tgid), stamp=stamp)


FORK = message(PROC_EVENT_FORK, struct.pack("=iiii", 10, 10, 11, 11))
EXIT = message(PROC_EVENT_EXIT, struct.pack("=iiIIii", 11, 11, 0, 17, 10, 10))
ACK = message(PROC_EVENT_NONE, struct.pack("=I", 0), ack=43)


def test_one_exec_event() -> None:
    assert parse_datagram(exec_message(4242, 4240, stamp=7004689248567)) == [
        ExecEvent(pid=4242, tgid=4240, timestamp_ns=7004689248567)]


def test_several_messages_in_one_datagram_in_order() -> None:
    data = exec_message(1, 1) + FORK + exec_message(2, 2) + EXIT + ACK + exec_message(3, 2)
    assert [(e.pid, e.tgid) for e in parse_datagram(data)] == [(1, 1), (2, 2), (3, 2)]


def test_fork_exit_and_ack_are_not_exec_events() -> None:
    assert parse_datagram(FORK + EXIT + ACK) == []


def test_messages_of_other_connectors_and_netlink_errors_are_skipped() -> None:
    other = message(PROC_EVENT_EXEC, struct.pack("=ii", 5, 5), idx=2)
    error = message(PROC_EVENT_EXEC, struct.pack("=ii", 6, 6), nl_type=2)  # NLMSG_ERROR
    assert parse_datagram(other + error + exec_message(7, 7)) == [ExecEvent(7, 7, 1_000_000)]


def test_short_cn_len_is_not_an_exec_event() -> None:
    assert parse_datagram(message(PROC_EVENT_EXEC, struct.pack("=ii", 5, 5), cn_len=20)) == []


@pytest.mark.parametrize("cut", [0, 1, 15, 16, 40, 59, 60, 75])
def test_truncated_message_is_skipped_and_earlier_ones_kept(cut: int) -> None:
    data = exec_message(1, 1) + exec_message(2, 2)[:cut]
    assert parse_datagram(data) == [ExecEvent(1, 1, 1_000_000)]


def test_a_length_below_the_header_stops_the_walk() -> None:
    bad = struct.pack("=IHHII", 8, NLMSG_DONE, 0, 0, 0)
    assert parse_datagram(exec_message(1, 1) + bad + exec_message(2, 2)) == [
        ExecEvent(1, 1, 1_000_000)]


def test_unaligned_lengths_are_rounded_up_like_nlmsg_align() -> None:
    # nlmsg_len 74 (16 + 20 + cn_len 38) puts the next message at 76.
    short = message(PROC_EVENT_EXEC, struct.pack("=ii", 1, 1), cn_len=38)
    first = struct.pack("=I", 74) + short[4:]
    assert parse_datagram(first + exec_message(2, 2)) == [
        ExecEvent(1, 1, 1_000_000), ExecEvent(2, 2, 1_000_000)]


def test_garbage_never_raises() -> None:
    rng = random.Random(20261127)
    for _ in range(2000):
        blob = rng.randbytes(rng.randrange(0, 300))
        if rng.random() < 0.5:  # a plausible header, to get past the first length check
            blob = exec_message(rng.randrange(1 << 22), 1)[: rng.randrange(77)] + blob
        for event in parse_datagram(blob):
            assert isinstance(event, ExecEvent)


def test_ack_is_matched_by_the_ack_field_plus_one() -> None:
    data = FORK + ACK
    assert parse_ack(data, len(data), 42) == 0
    assert parse_ack(data, len(data), 41) is None
    refused = message(PROC_EVENT_NONE, struct.pack("=I", 1), ack=43)  # err = EPERM
    assert parse_ack(refused, len(refused), 42) == 1


def test_control_messages_have_the_length_the_kernel_checks() -> None:
    four = control_message(PROC_CN_MCAST_LISTEN, 9)
    eight = control_message(PROC_CN_MCAST_LISTEN, 9, PROC_EVENT_EXEC)
    assert struct.unpack_from("=I", four)[0] == len(four) == 16 + 20 + 4
    assert struct.unpack_from("=H", four, 16 + 16)[0] == 4
    assert struct.unpack_from("=H", eight, 16 + 16)[0] == 8
    assert struct.unpack_from("=II", eight, 36) == (PROC_CN_MCAST_LISTEN, PROC_EVENT_EXEC)


@pytest.mark.parametrize(("release", "filters"), [
    ("6.18.44-fc-v509", True), ("6.6.0", True), ("6.6-rc1", True), ("6.5.13-generic", False),
    ("5.15.0-91-generic", False), ("3.10.0-1160.el7.x86_64", False), ("10.1", True),
    ("", False), ("garbage", False), ("6.", False),
])
def test_kernel_filters_events_from_6_6(release: str, filters: bool) -> None:
    assert kernel_filters_events(release) is filters
