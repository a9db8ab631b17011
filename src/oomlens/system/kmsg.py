"""`/dev/kmsg`: the kernel log as structured records, and the one line of an OOM kill
that everything keys on.

Why `/dev/kmsg` and not `dmesg` or syslog: every record carries a sequence number
(gaps show lost records), a monotonic timestamp, and `SEEK_END` gives "only what
happens from now on", which is what a watcher or a test harness needs.
(Documentation/ABI/testing/dev-kmsg; kernel/printk/printk.c: devkmsg_read().)

Each read() returns exactly one record:
`prio,seq,ts_us,flag[,more];message` followed by optional continuation lines that
start with a space (`SUBSYSTEM=...`, `DEVICE=...`). Non-printable bytes and the
backslash in the message arrive escaped as `\\xHH`.
"""

from __future__ import annotations

import errno
import os
import re
from dataclasses import dataclass

from oomlens.errors import OomlensError
from oomlens.kernel.printk import unescape_devkmsg
from oomlens.system.procfs import translate_os_error

# kernel/printk/printk.c: CONSOLE_EXT_LOG_MAX is 8 KiB; a smaller read buffer
# gets EINVAL, so read with room to spare.
_READ_SIZE = 16384


@dataclass(frozen=True, slots=True)
class KmsgRecord:
    """One kernel log record. `facility_prio` is `(facility << 3) | level` as the
    kernel prints it; `properties` holds the continuation lines (without the
    leading space) that some drivers attach."""

    facility_prio: int
    seq: int
    ts_us: int
    message: str
    properties: tuple[str, ...] = ()

    @property
    def level(self) -> int:
        """Syslog level 0 (emerg) .. 7 (debug)."""
        return self.facility_prio & 7

    @property
    def facility(self) -> int:
        return self.facility_prio >> 3


def parse_kmsg_record(text: str) -> KmsgRecord:
    """Parse one record as read from `/dev/kmsg`. Raises ValueError if it is not one."""
    first, *rest = text.rstrip("\n").split("\n")
    header, sep, message = first.partition(";")
    fields = header.split(",")
    if not sep or len(fields) < 4:
        raise ValueError(f"not a /dev/kmsg record: {text[:80]!r}")
    try:
        prio, seq, ts_us = int(fields[0]), int(fields[1]), int(fields[2])
    except ValueError as err:
        raise ValueError(f"not a /dev/kmsg record: {text[:80]!r}") from err
    props = tuple(unescape_devkmsg(line[1:]) for line in rest if line.startswith(" "))
    return KmsgRecord(prio, seq, ts_us, unescape_devkmsg(message), props)


@dataclass(frozen=True, slots=True)
class KilledProcess:
    """The `Killed process PID (COMM) ...` line of an OOM kill, minimally parsed.

    `memcg` is True for a memory cgroup OOM (the line starts with "Memory cgroup out
    of memory"); `oom_score_adj` is None on kernels that do not print it (< 5.1).
    The full report (header, Mem-Info, task table) is parsed elsewhere.
    """

    pid: int
    comm: str
    oom_score_adj: int | None
    memcg: bool


# mm/oom_kill.c: __oom_kill_process(). The comm is greedy up to ") total-vm" (or
# the end) because a comm may itself contain parentheses.
_KILLED = re.compile(r"\bKilled process (\d+) \((.*?)\)(?= total-vm|$)")
_ADJ = re.compile(r"\boom_score_adj:(-?\d+)")


def parse_killed_process(message: str) -> KilledProcess | None:
    """The victim named by a `Killed process` message, or None for any other line."""
    match = _KILLED.search(message)
    if match is None:
        return None
    adj = _ADJ.search(message, match.end())
    return KilledProcess(
        pid=int(match.group(1)),
        comm=match.group(2),
        oom_score_adj=None if adj is None else int(adj.group(1)),
        memcg=message.startswith("Memory cgroup out of memory"),
    )


class KmsgReader:
    """Non-blocking reader of `/dev/kmsg` (a context manager).

    `lost` counts records that were overwritten before we read them: after an
    overrun the kernel returns EPIPE once and resumes at the oldest record, and the
    sequence gap says how many we missed (at least 1 per EPIPE when the gap cannot
    be seen, e.g. before the first record). `overruns` counts the EPIPEs.
    """

    def __init__(self, path: str = "/dev/kmsg") -> None:
        self.path = path
        self.lost = 0
        self.overruns = 0
        self._last_seq: int | None = None
        self._overrun_pending = False
        try:
            self._fd: int | None = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as err:
            raise translate_os_error(err, path) from err

    def fileno(self) -> int:
        """For select()/poll(): readable when a new record is available."""
        if self._fd is None:
            raise OomlensError(f"{self.path} reader is closed")
        return self._fd

    def follow_from_end(self) -> None:
        """Skip everything already logged: later reads return only new records."""
        os.lseek(self.fileno(), 0, os.SEEK_END)
        self._last_seq = None

    def read_available(self) -> list[KmsgRecord]:
        """Every record available now (never blocks)."""
        records: list[KmsgRecord] = []
        while (record := self._read_one()) is not None:
            records.append(record)
        return records

    def _read_one(self) -> KmsgRecord | None:
        """The next record, or None when there is none yet (EAGAIN)."""
        while True:
            try:
                data = os.read(self.fileno(), _READ_SIZE)
            except BlockingIOError:
                return None
            except OSError as err:
                if err.errno != errno.EPIPE:
                    raise translate_os_error(err, self.path) from err
                self.overruns += 1
                self._overrun_pending = True
                continue
            if not data:
                return None
            record = parse_kmsg_record(data.decode("utf-8", "replace"))
            self._count_gap(record.seq)
            return record

    def _count_gap(self, seq: int) -> None:
        gap = 0 if self._last_seq is None else max(seq - self._last_seq - 1, 0)
        if self._overrun_pending and gap == 0:
            gap = 1
        self.lost += gap
        self._overrun_pending = False
        self._last_seq = seq

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> KmsgReader:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
