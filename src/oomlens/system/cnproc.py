"""Exec events from the kernel's process connector (netlink), so the enforcer sees
a new program the moment it starts instead of on the next /proc scan.

The protocol (drivers/connector/cn_proc.c; include/uapi/linux/cn_proc.h,
include/uapi/linux/connector.h), in host byte order:

    nlmsghdr  {len u32, type u16 = NLMSG_DONE, flags u16, seq u32, pid u32}   16 bytes
    cn_msg    {idx u32, val u32, seq u32, ack u32, len u16, flags u16}       20 bytes
    proc_event{what u32, cpu u32, timestamp_ns u64, event_data union}       40 bytes

`timestamp_ns` is ktime_get_ns() (CLOCK_MONOTONIC); for PROC_EVENT_EXEC the union
starts with `process_pid u32, process_tgid u32` (proc_exec_connector()).

Subscribing: bind to multicast group CN_IDX_PROC and send PROC_CN_MCAST_LISTEN to
the kernel. cn_proc_mcast_ctl() answers with an ack, a proc_event with what =
PROC_EVENT_NONE, `event_data.ack.err` = 0 or a positive errno, and cn_msg.ack =
our ack + 1 (its cn_msg.seq is overwritten by send_msg()'s per-CPU counter, so only
`ack` identifies it; acks go to every listener, hence a random ack value). It
ignores, without an ack, a request from outside the initial user and pid
namespaces, and a payload whose length is not one it knows.

Kernels >= 6.6 (commit 2aa1f7a1f47c, "connector/cn_proc: Add filtering to fix some
bugs") also take an 8-byte `struct proc_input {mcast_op, event_type}` and then drop,
in cn_filter(), every event whose `what` is not in `event_type` -- the ack included,
since PROC_EVENT_NONE is 0. Older kernels ignore any payload whose length is not 4.
So the subscription is always confirmed with the 4-byte form (its ack arrives
synchronously, before send() returns; measured on 6.18), and, when the caller
says the kernel filters (a decision from the kernel release, made by the caller),
narrowed afterwards with the 8-byte form, whose own ack the filter drops. Events are
filtered to PROC_EVENT_EXEC here as well, whatever the kernel did.

Permissions: before 6.6 binding to the group needs CAP_NET_ADMIN (netlink_bind()
finds no NL_CFG_F_NONROOT_RECV) and cn_proc_mcast_ctl() checks it too; since 6.6
(commit bfdfdc2f3b70, "connector/cn_proc: Allow non-root users access") anyone may
listen. Failures become AccessDenied or Unsupported, so the daemon falls back to
polling /proc.
"""

from __future__ import annotations

import errno
import os
import socket
import struct
import time
from dataclasses import dataclass

from oomlens.errors import AccessDenied, OomlensError, Unsupported

NETLINK_CONNECTOR = 11  # include/uapi/linux/netlink.h
NLMSG_DONE = 3
CN_IDX_PROC = 1  # include/uapi/linux/connector.h
CN_VAL_PROC = 1
PROC_CN_MCAST_LISTEN = 1  # include/uapi/linux/cn_proc.h: enum proc_cn_mcast_op
PROC_CN_MCAST_IGNORE = 2
PROC_EVENT_NONE = 0  # enum proc_cn_event
PROC_EVENT_EXEC = 2
SO_RCVBUFFORCE = 33  # include/uapi/asm-generic/socket.h (not exported by Python)

_WHERE = "the netlink process connector"
_NOT_ACKED = (
    "the kernel did not acknowledge the process-events subscription: the kernel lacks "
    "CONFIG_PROC_EVENTS, or this process is not in the initial user and pid namespaces "
    "(cn_proc ignores requests from other namespaces, e.g. inside a container)"
)
_NEEDS_NET_ADMIN = "kernels before 6.6 need CAP_NET_ADMIN to listen to process events"
_ACK_TIMEOUT_S = 1.0  # the ack is normally queued before send() returns
_SUBSCRIBE_ATTEMPTS = 3  # ENOBUFS during the handshake can drop the ack
_RECV_SIZE = 65536
_MAX_DATAGRAMS_PER_READ = 8192  # then return: the fd stays readable for the next poll

_NLMSGHDR = struct.Struct("=IHHII")
_CN_MSG = struct.Struct("=IIIIHH")
_NLMSG_LEN = struct.Struct("=I")
# nlmsghdr (len, type), cn_msg (idx, val, len), proc_event (what, timestamp_ns),
# exec (process_pid, process_tgid): everything an exec event is read for, at once.
_EXEC = struct.Struct("=IH10xII8xH2xI4xQii")
# ... and for an ack: cn_msg.ack and event_data.ack.err.
_ACK = struct.Struct("=IH10xII4xIH2xI12xI")
_CN_DATA_OFFSET = _NLMSGHDR.size + _CN_MSG.size  # where proc_event starts
_EXEC_DATA_LEN = _EXEC.size - _CN_DATA_OFFSET  # proc_event header + pid + tgid
_ACK_DATA_LEN = _ACK.size - _CN_DATA_OFFSET


@dataclass(frozen=True, slots=True)
class ExecEvent:
    """A task called execve(). `pid` is the thread's id, `tgid` the process's (they
    differ when a non-leader thread execs; the kernel then makes it the leader).
    `timestamp_ns` is CLOCK_MONOTONIC."""

    pid: int
    tgid: int
    timestamp_ns: int


class Overrun(OomlensError):
    """The receive buffer overflowed (ENOBUFS): events were lost, so the caller must
    rescan /proc. The socket keeps working."""

    def __init__(self) -> None:
        super().__init__("process events were lost (receive buffer overrun): rescan /proc")


def kernel_filters_events(release: str) -> bool:
    """Whether a kernel of this release (`uname -r`, e.g. "6.18.44-fc") filters
    process events by type: 6.6 and later (see the module doc). An unparsable
    release says False: the 4-byte form works everywhere."""
    major, _, rest = release.partition(".")
    minor = rest[: len(rest) - len(rest.lstrip("0123456789"))]
    if not (major.isascii() and major.isdigit() and minor):
        return False
    return (int(major), int(minor)) >= (6, 6)


def _nlmsg_align(length: int) -> int:
    return (length + 3) & ~3


def _parse_into(buf: bytes | bytearray | memoryview, size: int, out: list[ExecEvent]) -> None:
    """Append the exec events among the netlink messages in buf[:size]. Stops at the
    first message whose length does not fit (nothing after it can be located)."""
    offset = 0
    while size - offset >= _NLMSGHDR.size:
        if size - offset >= _EXEC.size:
            nlmsg_len, nl_type, idx, val, cn_len, what, stamp, pid, tgid = _EXEC.unpack_from(
                buf, offset)
            if (what == PROC_EVENT_EXEC and nl_type == NLMSG_DONE and idx == CN_IDX_PROC
                    and val == CN_VAL_PROC and cn_len >= _EXEC_DATA_LEN
                    and _CN_DATA_OFFSET + cn_len <= nlmsg_len <= size - offset):
                out.append(ExecEvent(pid, tgid, stamp))
        else:
            nlmsg_len = _NLMSG_LEN.unpack_from(buf, offset)[0]
        if nlmsg_len < _NLMSGHDR.size:
            return
        offset += _nlmsg_align(nlmsg_len)


def parse_datagram(data: bytes) -> list[ExecEvent]:
    """The exec events in one datagram (it may hold several netlink messages). Other
    events, acks, malformed and truncated messages are skipped; never raises."""
    events: list[ExecEvent] = []
    _parse_into(data, len(data), events)
    return events


def parse_ack(data: bytes | bytearray | memoryview, size: int, ack: int) -> int | None:
    """The `err` of the cn_proc ack for a request sent with cn_msg.ack = `ack` (the
    kernel answers with ack + 1), or None if buf[:size] holds no such ack."""
    offset = 0
    want = (ack + 1) & 0xFFFFFFFF
    while size - offset >= _NLMSGHDR.size:
        nlmsg_len = _NLMSG_LEN.unpack_from(data, offset)[0]
        if nlmsg_len < _NLMSGHDR.size or nlmsg_len > size - offset:
            return None
        if nlmsg_len >= _ACK.size:
            _, nl_type, idx, val, cn_ack, cn_len, what, err = _ACK.unpack_from(data, offset)
            if (what == PROC_EVENT_NONE and nl_type == NLMSG_DONE and idx == CN_IDX_PROC
                    and val == CN_VAL_PROC and cn_ack == want and cn_len >= _ACK_DATA_LEN):
                return int(err)
        offset += _nlmsg_align(nlmsg_len)
    return None


def control_message(op: int, ack: int, event_type: int | None = None) -> bytes:
    """A PROC_CN_MCAST_* request: the 4-byte form, or with `event_type` the 8-byte
    `struct proc_input` (kernels >= 6.6)."""
    payload = struct.pack("=I", op) if event_type is None else struct.pack("=II", op, event_type)
    cn_msg = _CN_MSG.pack(CN_IDX_PROC, CN_VAL_PROC, 0, ack, len(payload), 0) + payload
    return _NLMSGHDR.pack(_NLMSGHDR.size + len(cn_msg), NLMSG_DONE, 0, 0, 0) + cn_msg


def _connector_error(err: OSError, doing: str) -> OomlensError:
    if err.errno in (errno.EPERM, errno.EACCES):
        return AccessDenied(_WHERE, hint=f"{doing}: {_NEEDS_NET_ADMIN}")
    if err.errno in (errno.EPROTONOSUPPORT, errno.EAFNOSUPPORT, errno.ENOENT,
                     errno.ECONNREFUSED):
        return Unsupported(f"{_WHERE} is not available ({doing}: {err.strerror}): "
                           "the kernel lacks CONFIG_CONNECTOR or CONFIG_PROC_EVENTS")
    return OomlensError(f"{_WHERE}: {doing} failed: {err.strerror}")


def _open_socket() -> socket.socket:
    try:
        sock = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC,
                             NETLINK_CONNECTOR)
    except OSError as err:
        raise _connector_error(err, "socket()") from err
    try:
        sock.bind((0, CN_IDX_PROC))
    except OSError as err:
        sock.close()
        raise _connector_error(err, "bind()") from err
    return sock


def _set_rcvbuf(sock: socket.socket, size: int) -> None:
    """SO_RCVBUFFORCE passes net.core.rmem_max (needs CAP_NET_ADMIN); SO_RCVBUF is
    capped by it. The kernel doubles either value for bookkeeping."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, size)
    except PermissionError:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)


class ExecEvents:
    """A subscription to exec events. Usage:

        with ExecEvents(filter_in_kernel=kernel_filters_events(os.uname().release)) as ev:
            poll ev.fileno() for POLLIN; events = ev.read()  # Overrun: rescan /proc

    The socket is non-blocking. `rcvbuf_bytes` bounds what the kernel queues while
    the reader is busy; the kernel doubles it, and each event costs ~830 bytes of
    buffer accounting (measured on 6.18), so 8 MiB holds ~20,000 events.
    """

    def __init__(self, filter_in_kernel: bool, rcvbuf_bytes: int = 8 << 20) -> None:
        self._sock = _open_socket()
        self._buf = bytearray(_RECV_SIZE)
        self._view = memoryview(self._buf)
        self._pending: list[ExecEvent] = []
        self._listens = 0  # LISTEN requests the kernel may have counted
        try:
            self._subscribe()
            if filter_in_kernel:
                self._send(control_message(PROC_CN_MCAST_LISTEN, 0, PROC_EVENT_EXEC))
            _set_rcvbuf(self._sock, rcvbuf_bytes)
            self._sock.setblocking(False)
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> ExecEvents:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def fileno(self) -> int:
        return self._sock.fileno()

    def _send(self, message: bytes) -> None:
        try:
            self._sock.send(message)
        except OSError as err:
            raise _connector_error(err, "send()") from err

    def _subscribe(self) -> None:
        """Send the 4-byte LISTEN and wait for its ack, keeping exec events that
        arrive meanwhile. An ack lost to ENOBUFS is asked for again."""
        for _ in range(_SUBSCRIBE_ATTEMPTS):
            ack = int.from_bytes(os.urandom(4), "little") & 0x7FFFFFFF
            self._send(control_message(PROC_CN_MCAST_LISTEN, ack))
            self._listens += 1
            try:
                err = self._await_ack(ack)
            except Overrun:
                continue
            if err is None:
                raise Unsupported(_NOT_ACKED)
            if err in (errno.EPERM, errno.EACCES):
                raise AccessDenied(_WHERE, hint=_NEEDS_NET_ADMIN)
            if err != 0:
                raise Unsupported(f"{_WHERE} refused to subscribe: {os.strerror(err)}")
            return
        raise OomlensError(f"{_WHERE}: events flood the socket faster than the "
                           "subscription can be confirmed")

    def _await_ack(self, ack: int) -> int | None:
        """The ack's err, or None when no ack came in time. Raises Overrun when
        events (perhaps the ack) were lost."""
        deadline = time.monotonic() + _ACK_TIMEOUT_S
        while (remaining := deadline - time.monotonic()) > 0:
            self._sock.settimeout(remaining)
            try:
                size = self._sock.recv_into(self._buf)
            except TimeoutError:
                return None
            except OSError as err:
                if err.errno == errno.ENOBUFS:
                    raise Overrun() from None
                raise _connector_error(err, "recv()") from err
            _parse_into(self._view, size, self._pending)
            found = parse_ack(self._view, size, ack)
            if found is not None:
                return found
        return None

    def read(self) -> list[ExecEvent]:
        """Every exec event queued now, without blocking (up to a bound per call, so
        a flood cannot starve the caller; the fd then stays readable). Raises
        Overrun once when the kernel dropped events; events read before it are
        kept for the next call."""
        events, self._pending = self._pending, []
        recv_into, buf, view = self._sock.recv_into, self._buf, self._view
        for _ in range(_MAX_DATAGRAMS_PER_READ):
            try:
                size = recv_into(buf)
            except BlockingIOError:
                break
            except OSError as err:
                if err.errno == errno.ENOBUFS:
                    self._pending = events
                    raise Overrun() from None
                raise _connector_error(err, "recv()") from err
            _parse_into(view, size, events)
        return events

    def close(self) -> None:
        """Unsubscribe (kernels before 6.6 count listeners only by LISTEN/IGNORE, and
        build every event while the count is above 0), then close the socket."""
        if self._sock.fileno() < 0:
            return
        for _ in range(self._listens):
            try:
                self._sock.send(control_message(PROC_CN_MCAST_IGNORE, 0))
            except OSError:
                break  # best effort: closing must not fail
        self._listens = 0
        self._view.release()
        self._sock.close()
