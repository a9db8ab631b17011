"""Sandbox memory cgroups: a small memcg with a hard limit, processes of known size
inside it, and a real OOM kill on demand.

Why: the only honest check of oomlens's model is the kernel itself, so the kernel
tests (and later `oomlens simulate`) make the kernel choose a victim in a place where
that cannot hurt anything. Safety rules this module enforces:
- the limit is at most 512 MiB and there is no swap (v1: memsw limit == limit;
  v2: memory.swap.max = 0), so a runaway hog is contained; swap has to be asked for
  (`swap_limit_bytes`: a finite amount, or unlimited where swap itself is small, as
  in the kernel lab's zram guest). `oomlens simulate` raises the bound
  (`max_limit_bytes`) to what the host can spare, and nests a sandbox without a
  limit of its own in a limited cgroup (its parent's limit contains it);
- every process joins the cgroup *before* it allocates anything: a shell writes its
  own pid to `cgroup.procs` and then execs the real program;
- `close()` (or leaving the `with` block) kills everything in the cgroup and removes
  it, also after errors; every wait has a deadline.

The file layer (`create`, `write_limits`, `remove`) is separate from the process
layer so it can be tested on a fake cgroupfs tree without root.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import IO

from oomlens.errors import AccessDenied, OomlensError, Unsupported
from oomlens.system.kmsg import KilledProcess, KmsgReader, KmsgRecord, parse_killed_process
from oomlens.system.memcg import Memcg, MemcgMount, read_memcg
from oomlens.system.meminfo import parse_flat, read_sysctls
from oomlens.system.procfs import parse_status, read_bytes, read_text, translate_os_error

MIB = 1 << 20
MAX_LIMIT_BYTES = 512 * MIB
DEFAULT_TIMEOUT_S = 20.0
_POLL_S = 0.005
_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")

# $1 is the cgroup.procs file; the rest is the command. `$$` is the shell's pid,
# which `exec` hands on to the command, so the command starts inside the cgroup.
_JOIN_THEN_EXEC = 'echo $$ > "$1" || exit 125; shift; exec "$@"'

# argv: size in bytes, oom_score_adj, OOM counter file. Writes "ready" once its
# memory is resident; on "grow" allocates 1 MiB at a time until the cgroup's
# oom_kill counter moves (so it stops after one kill instead of causing more), says
# "stopped", and grows again on the next "grow". Exits on any other line and when
# stdin closes, so a hog never outlives its parent's pipe.
HOG_SCRIPT = r"""
import mmap, re, sys
size, adj, counter = int(sys.argv[1]), sys.argv[2], sys.argv[3]
try:
    with open("/proc/self/oom_score_adj", "w") as f:
        f.write(adj)
except PermissionError:
    sys.exit("oomlens-hog: EACCES writing oom_score_adj")
keep = []
def grab(n):
    keep.append(mmap.mmap(-1, n, flags=mmap.MAP_PRIVATE))
    for off in range(0, n, mmap.PAGESIZE):
        keep[-1][off] = 1
def kills():
    with open(counter) as f:
        return int(re.search(r"^oom_kill (\d+)", f.read(), re.M).group(1))
if size:
    grab(size)
print("ready", flush=True)
while sys.stdin.readline().strip() == "grow":
    start = kills()
    while kills() == start:
        grab(1 << 20)
    print("stopped", flush=True)
"""


class SandboxError(OomlensError):
    """The sandbox could not do what was asked (a hog failed, the kernel did not act)."""


class SandboxTimeout(SandboxError):
    """Something the sandbox waited for did not happen within its deadline."""


@dataclass(eq=False)
class Hog:
    """A process holding `size_mib` MiB of resident anonymous memory in the sandbox."""

    process: subprocess.Popen[bytes]
    size_mib: int
    oom_score_adj: int

    @property
    def pid(self) -> int:
        return self.process.pid

    def send(self, line: str) -> None:
        stdin = _pipe(self.process.stdin)
        stdin.write(line.encode() + b"\n")
        stdin.flush()


@dataclass(frozen=True, slots=True)
class OomKill:
    """What one triggered OOM did. `records` are the kernel log records from the
    trigger up to and including the first `Killed process` line (header, task table,
    oom-kill line); `oom_kills` is how far the cgroup's counter moved (now and then
    2: the kernel may kill again before the first victim's pages are uncharged);
    `sigkilled` are the hogs that had died of SIGKILL when we looked."""

    killed: KilledProcess
    records: tuple[KmsgRecord, ...]
    oom_kills: int
    sigkilled: tuple[int, ...]
    lost_records: int

    @property
    def victim_pid(self) -> int:
        return self.killed.pid


def _pipe(stream: IO[bytes] | None) -> IO[bytes]:
    if stream is None:
        raise SandboxError("process was started without this pipe")
    return stream


class SandboxMemcg:
    """One sandbox memory cgroup, v1 or v2 (a context manager: create ... close)."""

    def __init__(
        self,
        mount: MemcgMount,
        prefix: str,
        limit_bytes: int | None,
        *,
        parent: str | None = None,
        timeout: float = DEFAULT_TIMEOUT_S,
        kmsg_path: str = "/dev/kmsg",
        swap_limit_bytes: int | None = 0,
        max_limit_bytes: int = MAX_LIMIT_BYTES,
    ) -> None:
        """`swap_limit_bytes`: swap the cgroup may use on top of `limit_bytes` (0: none,
        the default; None: no swap limit). `limit_bytes` None: no limit of its own, only
        for a sandbox nested in a limited `parent` (the parent's limit applies, on v2
        without delegating the memory controller to it). `max_limit_bytes` bounds both
        limits."""
        if limit_bytes is None:
            if parent is None:
                raise ValueError("a sandbox without a limit of its own must have a parent")
        elif not 0 < limit_bytes <= max_limit_bytes:
            raise ValueError(f"sandbox limit must be 1..{max_limit_bytes} bytes, not {limit_bytes}")
        if swap_limit_bytes is not None and not 0 <= swap_limit_bytes <= max_limit_bytes:
            raise ValueError(f"sandbox swap limit must be 0..{max_limit_bytes} bytes or None, "
                             f"not {swap_limit_bytes}")
        if not prefix or "/" in prefix or prefix.startswith("."):
            raise ValueError(f"bad sandbox name prefix {prefix!r}")
        self.mount = mount
        self.limit_bytes = limit_bytes
        self.swap_limit_bytes = swap_limit_bytes
        self.timeout = timeout
        self.kmsg_path = kmsg_path
        self.name = f"{prefix}{os.getpid()}-{secrets.token_hex(4)}"
        base = (mount.prefix if parent is None else parent).rstrip("/")
        self.path = f"{base}/{self.name}"
        self.directory = mount.fs_path(self.path)
        self.hogs: list[Hog] = []
        self._children: list[subprocess.Popen[bytes]] = []
        self._created = False
        self._enabled_parent_memory = False

    def _make_dir(self, directory: str) -> None:
        """mkdir; the kernel fills in the interface files (a seam for fake trees)."""
        os.mkdir(directory)

    def _remove_dir(self, directory: str) -> None:
        """rmdir of a cgroup (a seam for fake trees)."""
        os.rmdir(directory)

    def _file(self, name: str, directory: str | None = None) -> str:
        return os.path.join(self.directory if directory is None else directory, name)

    def _write(self, path: str, value: str) -> None:
        try:
            fd = os.open(path, os.O_WRONLY | os.O_TRUNC | os.O_CLOEXEC)
            try:
                os.write(fd, value.encode())
            finally:
                os.close(fd)
        except OSError as err:
            error = translate_os_error(err, path)
            if type(error) is OomlensError:
                error = SandboxError(f"cannot write {value!r} to {path}: {err.strerror}")
            raise error from err

    def create(self) -> None:
        """Make the cgroup and set its limits; on failure nothing is left behind."""
        if self._created:
            return
        try:
            if self.mount.version == 2 and self.limit_bytes is not None:
                self._enable_memory_in_parent()
            try:
                self._make_dir(self.directory)
            except OSError as err:
                raise translate_os_error(err, self.directory) from err
            self._created = True
            if self.limit_bytes is not None:
                self.write_limits()
        except BaseException:
            self.remove()
            raise

    def _enable_memory_in_parent(self) -> None:
        """On v2 a child has memory.* files only if its parent delegates the memory
        controller (`+memory` in the parent's cgroup.subtree_control)."""
        parent = os.path.dirname(self.directory)
        if "memory" in read_text(self._file("cgroup.subtree_control", parent)).split():
            return
        if "memory" not in read_text(self._file("cgroup.controllers", parent)).split():
            raise Unsupported(f"the memory controller is not available in {parent}")
        self._write(self._file("cgroup.subtree_control", parent), "+memory")
        self._enabled_parent_memory = True

    def write_limits(self) -> None:
        """Hard limit = `limit_bytes`; swap: `swap_limit_bytes` (none by default).
        Without swap accounting (no memsw / swap.max file) a finite swap allowance
        cannot be set: Unsupported."""
        if self.limit_bytes is None:
            raise SandboxError(f"{self.path} has no limit of its own to write")
        limit, swap = str(self.limit_bytes), self.swap_limit_bytes
        if self.mount.version == 1:
            memsw = "-1" if swap is None else str(self.limit_bytes + swap)
            swap_file, swap_value = "memory.memsw.limit_in_bytes", memsw
            # memsw must stay >= the memory limit, so set the memory limit first.
            self._write(self._file("memory.limit_in_bytes"), limit)
        else:
            swap_file, swap_value = "memory.swap.max", "max" if swap is None else str(swap)
            self._write(self._file("memory.max"), limit)
        if os.path.exists(self._file(swap_file)):
            self._write(self._file(swap_file), swap_value)
        elif swap:
            raise Unsupported(f"no {swap_file} in {self.directory}: cannot allow "
                              f"{swap} bytes of swap")

    def remove(self) -> None:
        """rmdir the cgroup (retrying while the kernel still sees it busy) and undo
        `+memory` in the parent if we added it and nothing else uses it."""
        deadline = time.monotonic() + self.timeout
        while self._created:
            try:
                self._remove_dir(self.directory)
                self._created = False
            except FileNotFoundError:
                self._created = False
            except OSError as err:
                if err.errno != errno.EBUSY or time.monotonic() > deadline:
                    raise SandboxError(f"cannot remove {self.directory}: {err.strerror}") from err
                time.sleep(_POLL_S)
        if self._enabled_parent_memory:
            self._disable_memory_in_parent()

    def _disable_memory_in_parent(self) -> None:
        parent = os.path.dirname(self.directory)
        with os.scandir(parent) as entries:
            if any(e.is_dir(follow_symlinks=False) for e in entries):
                return
        try:
            self._write(self._file("cgroup.subtree_control", parent), "-memory")
        except OomlensError:
            return
        self._enabled_parent_memory = False

    def procs(self) -> list[int]:
        """Pids in the cgroup now."""
        return [int(f) for f in read_text(self._file("cgroup.procs")).split()]

    def oom_kill_count(self) -> int:
        """Kills the kernel made in this cgroup (v1 memory.oom_control, v2
        memory.events)."""
        return parse_flat(read_text(self._counter_file())).get("oom_kill", 0)

    def _counter_file(self) -> str:
        return self._file("memory.oom_control" if self.mount.version == 1 else "memory.events")

    def usage_bytes(self) -> int:
        """Memory charged to the cgroup now (v1 memory.usage_in_bytes, v2
        memory.current)."""
        name = "memory.usage_in_bytes" if self.mount.version == 1 else "memory.current"
        return int(read_text(self._file(name)))

    def peak_usage_bytes(self) -> int | None:
        """The most memory charged to the cgroup since it was made: v1
        memory.max_usage_in_bytes, v2 memory.peak (5.19+); None where the kernel
        keeps no peak."""
        name = "memory.max_usage_in_bytes" if self.mount.version == 1 else "memory.peak"
        try:
            return int(read_text(self._file(name)))
        except FileNotFoundError:
            return None

    def state(self) -> Memcg:
        swappiness = read_sysctls(names=("vm/swappiness",)).get("vm.swappiness", 60)
        return read_memcg(self.mount, self.path, _PAGE_SIZE, swappiness)

    def spawn(self, argv: Sequence[str], *, stdin: int | None = subprocess.DEVNULL,
              stdout: int | None = subprocess.DEVNULL, stderr: int | None = subprocess.DEVNULL,
              ) -> subprocess.Popen[bytes]:
        """Run `argv` inside the cgroup (it joins before exec, so before allocating).
        A stream given as None is inherited from this process. If joining fails the
        child exits 125; if `argv` cannot be executed, 126 or 127 (as sh(1) says)."""
        if not self._created:
            raise SandboxError("create() the sandbox before starting processes in it")
        wrapper = ["/bin/sh", "-c", _JOIN_THEN_EXEC, "oomlens-sandbox", self._file("cgroup.procs")]
        child = subprocess.Popen(
            [*wrapper, *argv], stdin=stdin, stdout=stdout, stderr=stderr, close_fds=True
        )
        self._children.append(child)
        return child

    def wait_procs(self, count: int) -> None:
        """Wait until at least `count` processes are in the cgroup."""
        self._wait_for(lambda: len(self.procs()) >= count, f"{count} processes in {self.path}")

    def start_hog(self, size_mib: int, oom_score_adj: int = 0, *,
                  counter_file: str | None = None) -> Hog:
        """Start a process holding `size_mib` MiB resident (or, where the sandbox
        allows swap, partly swapped out); returns once it is. A grown hog stops once
        the `oom_kill` count in `counter_file` moves (default: this cgroup's own;
        /proc/vmstat's counts every OOM kill of the machine)."""
        swap, limit = self.swap_limit_bytes, self.limit_bytes
        if size_mib < 0 or (limit is not None and swap is not None
                            and size_mib * MIB >= limit + swap):
            raise ValueError(f"hog of {size_mib} MiB does not fit in {limit} bytes"
                             + (f" + {swap} bytes of swap" if swap else ""))
        if not -1000 <= oom_score_adj <= 1000:
            raise ValueError(f"oom_score_adj must be in -1000..1000, not {oom_score_adj}")
        argv = [sys.executable, "-I", "-S", "-c", HOG_SCRIPT,
                str(size_mib * MIB), str(oom_score_adj), counter_file or self._counter_file()]
        pipe = subprocess.PIPE
        hog = Hog(self.spawn(argv, stdin=pipe, stdout=pipe, stderr=pipe), size_mib, oom_score_adj)
        self.hogs.append(hog)
        if self._read_line(hog.process) != "ready":
            raise self._hog_failed(hog)
        self.wait_resident(hog)
        return hog

    def _read_line(self, process: subprocess.Popen[bytes]) -> str | None:
        """One line from the child's stdout, or None at EOF (it died)."""
        fd = _pipe(process.stdout).fileno()
        data = b""
        deadline = time.monotonic() + self.timeout
        while not data.endswith(b"\n"):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise SandboxTimeout(f"pid {process.pid} said nothing within {self.timeout} s")
            if select.select([fd], [], [], remaining)[0]:
                chunk = os.read(fd, 256)
                if not chunk:
                    return None
                data += chunk
        return data.decode().strip()

    def _hog_failed(self, hog: Hog) -> OomlensError:
        try:
            hog.process.wait(timeout=self.timeout)
        except subprocess.TimeoutExpired:
            hog.process.kill()
        err = _pipe(hog.process.stderr).read().decode(errors="replace").strip()
        if "EACCES writing oom_score_adj" in err:
            return AccessDenied(f"/proc/{hog.pid}/oom_score_adj", hog.pid,
                                f"setting oom_score_adj {hog.oom_score_adj} needs CAP_SYS_RESOURCE")
        return SandboxError(f"hog {hog.pid} failed (exit {hog.process.returncode}): {err}")

    def wait_resident(self, hog: Hog) -> None:
        """Wait until the hog's RssAnon (plus VmSwap: pages swapped out were touched
        too) covers its size, so its pages are all touched."""
        path = f"/proc/{hog.pid}/status"

        def resident() -> bool:
            status = parse_status(read_bytes(path))
            return status.rss_anon_kib + status.swap_kib >= hog.size_mib * 1024

        self._wait_for(resident, f"{hog.size_mib} MiB resident in pid {hog.pid}")

    def _wait_for(self, condition: Callable[[], bool], what: str) -> None:
        deadline = time.monotonic() + self.timeout
        while not condition():
            if time.monotonic() > deadline:
                raise SandboxTimeout(f"timed out after {self.timeout} s waiting for {what}")
            time.sleep(_POLL_S)

    def trigger_oom(self, grower: Hog) -> OomKill:
        """Make `grower` allocate until the cgroup is out of memory, and report whom
        the kernel killed: the first `Killed process` record naming a sandbox
        process after the trigger, cross-checked against who died of SIGKILL."""
        before = self.oom_kill_count()
        members = set(self.procs())
        with KmsgReader(self.kmsg_path) as kmsg:
            kmsg.follow_from_end()
            grower.send("grow")
            records, killed = self._await_kill(kmsg, members, before)
            lost = kmsg.lost
        victim = next((c for c in self._children if c.pid == killed.pid), None)
        if victim is None:
            raise SandboxError(f"kernel killed pid {killed.pid}, not a process we started")
        try:
            victim.wait(timeout=self.timeout)
        except subprocess.TimeoutExpired as err:
            raise SandboxTimeout(f"victim {killed.pid} alive after {self.timeout} s") from err
        if victim.returncode != -signal.SIGKILL:
            raise SandboxError(f"kernel named {killed.pid}, but it exited {victim.returncode}")
        sigkilled = tuple(h.pid for h in self.hogs if h.process.poll() == -signal.SIGKILL)
        return OomKill(killed, tuple(records), self.oom_kill_count() - before, sigkilled, lost)

    def _await_kill(
        self, kmsg: KmsgReader, members: set[int], before: int
    ) -> tuple[list[KmsgRecord], KilledProcess]:
        records: list[KmsgRecord] = []
        killed: KilledProcess | None = None
        deadline = time.monotonic() + self.timeout
        while True:
            for record in kmsg.read_available():
                if killed is None:
                    records.append(record)
                    found = parse_killed_process(record.message)
                    if found is not None and found.pid in members:
                        killed = found
            if killed is not None and self.oom_kill_count() > before:
                return records, killed
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise SandboxTimeout(
                    f"no OOM kill in {self.path} within {self.timeout} s "
                    f"(kill line seen: {killed is not None})"
                )
            select.select([kmsg], [], [], min(remaining, 0.05))

    def kill_all(self) -> None:
        """SIGKILL every process in the cgroup and every child we started; reap ours."""
        deadline = time.monotonic() + self.timeout
        while True:
            pids = self.procs() if self._created and os.path.isdir(self.directory) else []
            for child in self._children:
                if child.poll() is None:
                    child.kill()
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            running = [c for c in self._children if c.poll() is None]
            if not pids and not running:
                break
            if time.monotonic() > deadline:
                left = pids or [c.pid for c in running]
                raise SandboxTimeout(f"processes {left} survived SIGKILL for {self.timeout} s")
            time.sleep(_POLL_S)
        for child in self._children:
            for stream in (child.stdin, child.stdout, child.stderr):
                if stream is not None:
                    stream.close()
        self._children.clear()
        self.hogs.clear()

    def close(self) -> None:
        """Kill everything in the cgroup and remove it (also after errors)."""
        try:
            self.kill_all()
        finally:
            self.remove()

    def __enter__(self) -> SandboxMemcg:
        self.create()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
