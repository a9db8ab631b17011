"""Helpers for the tests that run inside the kernel lab guest (never on the host).

- `in_lab()`: both marks of the guest are there (OOMLENS_IN_LAB=1 from the guest's
  run script and `oomlens_lab=1` on the guest kernel's command line), so nothing
  here can run on a real machine by accident;
- `V2Memcg`: a cgroup v2 memory cgroup with limits, processes of known size inside
  it, and removal that always happens;
- `start_hog`: a python process holding N MiB of resident memory, that grows on
  request until the OOM counter it watches moves;
- `capture_oom`: the kernel log records of one OOM kill (from `/dev/kmsg`);
- `parse_task_table`: the "Tasks state" table the kernel prints for an OOM, as
  `oomlens.kernel.task.Task` values in scan order;
- swap on/off (zram, set up by the guest's /init) through libc.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import re
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from oomlens.kernel.task import Task
from oomlens.system.kmsg import KilledProcess, KmsgReader, KmsgRecord, parse_killed_process
from oomlens.system.meminfo import parse_flat, read_meminfo

CGROUP_ROOT = Path("/sys/fs/cgroup")
# Named like tests/conftest.py's sandboxes, so its end-of-session check covers them.
MEMCG_PREFIX = "oomlens-test-lab-"
MIB = 1 << 20
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
ZRAM = b"/dev/zram0"
CAP_SYS_RESOURCE = 24
WAIT_S = 60.0

_LIBC = ctypes.CDLL(None, use_errno=True)


def in_lab() -> bool:
    if os.environ.get("OOMLENS_IN_LAB") != "1":
        return False
    try:
        return "oomlens_lab=1" in Path("/proc/cmdline").read_text().split()
    except OSError:
        return False


def wait_for(condition: Callable[[], bool], what: str, timeout: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.01)


# -- swap -----------------------------------------------------------------------------


def swap_total_kib() -> int:
    return read_meminfo().swap_total_kib


def set_swap(on: bool) -> None:
    """swapon/swapoff the guest's zram device (formatted by /init)."""
    if (swap_total_kib() > 0) == on:
        return
    rc = _LIBC.swapon(ZRAM, 0) if on else _LIBC.swapoff(ZRAM)
    if rc != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{'swapon' if on else 'swapoff'} {ZRAM.decode()}: "
                      f"{os.strerror(err)}")


@contextlib.contextmanager
def swap_state(on: bool) -> Iterator[None]:
    """Swap on (or off) for the block; the previous state afterwards."""
    before = swap_total_kib() > 0
    set_swap(on)
    try:
        yield
    finally:
        set_swap(before)


# -- processes ------------------------------------------------------------------------

# argv: size in bytes, oom_score_adj, counter file ("" = none). Touches every page
# with a distinct value (zram stores same-filled pages for free, which would hide
# swap use), prints "ready", and on "grow" allocates 1 MiB at a time until the
# counter file's oom_kill moves. Exits when stdin closes.
HOG_SCRIPT = r"""
import mmap, sys
size, adj, counter = int(sys.argv[1]), sys.argv[2], sys.argv[3]
with open("/proc/self/oom_score_adj", "w") as f:
    f.write(adj)
keep = []
def grab(n):
    m = mmap.mmap(-1, n, flags=mmap.MAP_PRIVATE)
    for i, off in enumerate(range(0, n, mmap.PAGESIZE)):
        m[off:off + 8] = (len(keep) * 65536 + i + 1).to_bytes(8, "little")
    keep.append(m)
def kills():
    if not counter:
        return 0
    with open(counter) as f:
        for line in f:
            key, _, value = line.partition(" ")
            if key == "oom_kill":
                return int(value)
    return 0
if size:
    grab(size)
print("ready", flush=True)
if sys.stdin.readline().strip() == "grow":
    start = kills()
    while kills() == start:
        grab(1 << 20)
    print("stopped", flush=True)
    sys.stdin.readline()
"""


@dataclass(eq=False)
class Hog:
    process: subprocess.Popen[bytes]
    size_mib: int
    oom_score_adj: int

    @property
    def pid(self) -> int:
        return self.process.pid

    def send(self, line: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(line.encode() + b"\n")
        self.process.stdin.flush()


def _read_line(process: subprocess.Popen[bytes], timeout: float = WAIT_S) -> str | None:
    import select

    assert process.stdout is not None
    fd = process.stdout.fileno()
    data = b""
    deadline = time.monotonic() + timeout
    while not data.endswith(b"\n"):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(f"pid {process.pid} said nothing within {timeout} s")
        if select.select([fd], [], [], remaining)[0]:
            chunk = os.read(fd, 256)
            if not chunk:
                return None
            data += chunk
    return data.decode().strip()


def rss_anon_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1])
    return 0


def start_hog(size_mib: int, oom_score_adj: int, *, cgroup: Path | None = None,
              counter: Path | None = None, wait_resident: bool = True) -> Hog:
    """A python process holding `size_mib` MiB; it joins `cgroup` before it allocates."""
    procs = None if cgroup is None else str(cgroup / "cgroup.procs")

    def join() -> None:
        if procs is not None:
            with open(procs, "w") as f:
                f.write(str(os.getpid()))

    argv = [sys.executable, "-I", "-S", "-c", HOG_SCRIPT, str(size_mib * MIB),
            str(oom_score_adj), "" if counter is None else str(counter)]
    pipe = subprocess.PIPE
    process = subprocess.Popen(argv, stdin=pipe, stdout=pipe, stderr=pipe,
                               preexec_fn=join)  # noqa: PLW1509
    hog = Hog(process, size_mib, oom_score_adj)
    line = _read_line(process)
    if line != "ready":
        process.kill()
        _, err = process.communicate(timeout=WAIT_S)
        raise RuntimeError(f"hog {process.pid} failed: {err.decode(errors='replace')}")
    if wait_resident:
        wait_for(lambda: rss_anon_kib(hog.pid) >= size_mib * 1024 * 9 // 10
                 or _swapped_kib(hog.pid) > 0,
                 f"{size_mib} MiB resident in {hog.pid}")
    return hog


def _swapped_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmSwap:"):
            return int(line.split()[1])
    return 0


def stop(process: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        process.kill()
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.communicate(timeout=WAIT_S)


# -- cgroup v2 ------------------------------------------------------------------------


def _write(path: Path, value: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_TRUNC)
    try:
        os.write(fd, value.encode())
    finally:
        os.close(fd)


def enable_memory_controller() -> None:
    control = CGROUP_ROOT / "cgroup.subtree_control"
    if "memory" not in control.read_text().split():
        _write(control, "+memory")


@dataclass(eq=False)
class V2Memcg:
    """A memory cgroup under the v2 root: `memory.max`, `memory.swap.max`."""

    max_bytes: int
    swap_max_bytes: int | None  # None: "max"
    directory: Path = field(init=False)
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def __post_init__(self) -> None:
        enable_memory_controller()
        self.directory = CGROUP_ROOT / f"{MEMCG_PREFIX}{os.getpid()}-{secrets.token_hex(4)}"
        self.directory.mkdir()
        _write(self.directory / "memory.max", str(self.max_bytes))
        swap = "max" if self.swap_max_bytes is None else str(self.swap_max_bytes)
        _write(self.directory / "memory.swap.max", swap)

    @property
    def path(self) -> str:
        """The cgroup path, as the kernel prints it in oom_memcg=..."""
        return "/" + self.directory.name

    @property
    def events_file(self) -> Path:
        return self.directory / "memory.events"

    def oom_kills(self) -> int:
        return parse_flat(self.events_file.read_text()).get("oom_kill", 0)

    def pids(self) -> list[int]:
        return [int(p) for p in (self.directory / "cgroup.procs").read_text().split()]

    def hog(self, size_mib: int, oom_score_adj: int, *, wait_resident: bool = True) -> Hog:
        hog = start_hog(size_mib, oom_score_adj, cgroup=self.directory,
                        counter=self.events_file, wait_resident=wait_resident)
        self.processes.append(hog.process)
        return hog

    def close(self) -> None:
        """Kill everything inside and remove the cgroup (retrying while busy)."""
        if not self.directory.exists():
            return
        with contextlib.suppress(OSError):
            _write(self.directory / "cgroup.kill", "1")
        for process in self.processes:
            stop(process)
        deadline = time.monotonic() + WAIT_S
        while True:
            try:
                self.directory.rmdir()
                return
            except FileNotFoundError:
                return
            except OSError as err:
                if err.errno != errno.EBUSY or time.monotonic() > deadline:
                    raise
                time.sleep(0.02)


# -- the kernel log of an OOM ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class OomCapture:
    """The records of one OOM kill, from `invoked oom-killer` to `Killed process`."""

    records: tuple[KmsgRecord, ...]
    killed: KilledProcess
    everything: tuple[KmsgRecord, ...] = ()  # all records read, from before the header

    @property
    def messages(self) -> list[str]:
        return [r.message for r in self.records]

    def line(self, prefix: str) -> str:
        for message in self.messages:
            if message.startswith(prefix):
                return message
        raise AssertionError(f"no {prefix!r} line in the OOM report")


@contextlib.contextmanager
def kmsg_from_now() -> Iterator[KmsgReader]:
    with KmsgReader() as reader:
        reader.follow_from_end()
        yield reader


def await_oom(reader: KmsgReader, is_ours: Callable[[KilledProcess], bool],
              timeout: float = WAIT_S) -> OomCapture:
    """Read the log until a `Killed process` line that `is_ours`; return the records
    of that OOM (from its `invoked oom-killer` header on)."""
    records: list[KmsgRecord] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for record in reader.read_available():
            records.append(record)
            killed = parse_killed_process(record.message)
            if killed is not None and is_ours(killed):
                starts = [i for i, r in enumerate(records) if "invoked oom-killer" in r.message]
                first = starts[-1] if starts else 0
                return OomCapture(tuple(records[first:]), killed, tuple(records))
        time.sleep(0.01)
    tail = "\n".join(r.message for r in records[-20:])
    raise TimeoutError(f"no matching 'Killed process' line within {timeout} s; log tail:\n{tail}")


_ROW = re.compile(r"^\[\s*(\d+)\]\s+(.*)$")


@dataclass(frozen=True, slots=True)
class TableRow:
    pid: int
    values: dict[str, int]
    name: str


def parse_task_table(messages: list[str]) -> list[TableRow]:
    """The rows after "Tasks state (memory values in pages):" (mm/oom_kill.c:
    dump_tasks()), keyed by the header's column names: 6.1 prints `rss`, later
    kernels also `rss_anon rss_file rss_shmem`."""
    try:
        start = next(i for i, m in enumerate(messages) if m.startswith("Tasks state"))
    except StopIteration:
        raise AssertionError("no 'Tasks state' table in the OOM report") from None
    header = messages[start + 1]
    columns = header.replace("[  pid  ]", "pid").split()
    if columns[0] != "pid" or columns[-1] != "name":
        raise AssertionError(f"unexpected task table header: {header!r}")
    rows: list[TableRow] = []
    for message in messages[start + 2:]:
        match = _ROW.match(message)
        if match is None:
            break
        fields = match.group(2).split(None, len(columns) - 2)
        values = dict(zip(columns[1:-1], (int(v) for v in fields[:-1]), strict=True))
        rows.append(TableRow(int(match.group(1)), values, fields[-1]))
    return rows


def table_tasks(rows: list[TableRow]) -> list[Task]:
    """Tasks as the kernel saw them, scan order = table order (dump_tasks() walks the
    tasks the way select_bad_process() does)."""
    tasks = []
    for order, row in enumerate(rows):
        v = row.values
        if "rss_anon" in v:
            anon, file, shmem = v["rss_anon"], v["rss_file"], v["rss_shmem"]
        else:  # before the split columns the table shows get_mm_rss() only
            anon, file, shmem = v["rss"], 0, 0
        tasks.append(Task(
            pid=row.pid, comm=row.name, oom_score_adj=v["oom_score_adj"],
            rss_anon_pages=anon, rss_file_pages=file, rss_shmem_pages=shmem,
            swapents=v["swapents"], pgtables_bytes=v["pgtables_bytes"], page_size=PAGE_SIZE,
            scan_order=order,
        ))
    return tasks


def died_of_sigkill(process: subprocess.Popen[bytes], timeout: float = WAIT_S) -> bool:
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        return False
    return process.returncode == -signal.SIGKILL


def read_sysctl(name: str) -> int:
    return int(Path("/proc/sys", name.replace(".", "/")).read_text())
