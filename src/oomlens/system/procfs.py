"""Thin readers of `/proc/<pid>/*`, and the one place OS errors become oomlens errors.

Parsers take text and return values (`parse_stat`, `parse_status`); readers take an
explicit proc root so tests can point them at a fake tree. A process that exits
while we read it is normal: scans skip it and count it.
"""

from __future__ import annotations

import errno
import os
import pwd
import re
from dataclasses import dataclass

from oomlens.errors import AccessDenied, NotFound, OomlensError, ProcessGone

PF_KTHREAD = 0x00200000  # include/linux/sched.h
PF_EXITING = 0x00000004  # include/linux/sched.h: set by do_exit() before cgroup_exit()
CAP_SYS_ADMIN = 21  # include/uapi/linux/capability.h
_GONE = frozenset({errno.ENOENT, errno.ESRCH})
_DENIED = frozenset({errno.EACCES, errno.EPERM})


def translate_os_error(err: OSError, path: str, pid: int | None = None) -> OomlensError:
    """Map ENOENT/ESRCH to ProcessGone (for a pid) and EACCES/EPERM to AccessDenied."""
    if err.errno in _GONE and pid is not None:
        return ProcessGone(pid)
    if err.errno in _DENIED:
        return AccessDenied(path, pid)
    if err.errno in _GONE:
        return NotFound(f"{path} does not exist")
    return OomlensError(f"cannot read {path}: {err.strerror}")


def read_bytes(path: str, dir_fd: int | None = None) -> bytes:
    """Whole file with raw syscalls, reading until EOF: seq_files such as
    `cgroup.procs`, `mountinfo` and `vmstat` return about one page per read().
    With `dir_fd`, `path` is relative to that open directory."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC, dir_fd=dir_fd)
    try:
        chunks = []
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def read_record(path: str) -> bytes:
    """One read() of a per-process file built whole by single_open() (`stat`,
    `status`, `oom_score`, `oom_score_adj`; fs/proc/base.c): the first read returns all
    of it, so the EOF read that `read_bytes` needs is skipped on the scan's hot path."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        return os.read(fd, 65536)
    finally:
        os.close(fd)


def read_text(path: str) -> str:
    return read_bytes(path).decode("utf-8", "replace")


@dataclass(frozen=True, slots=True)
class Stat:
    """Fields of `/proc/<pid>/stat` we use (proc(5); fs/proc/array.c: do_task_stat())."""

    comm: str
    state: str
    ppid: int
    flags: int
    start_time_ticks: int


def parse_stat(text: str) -> Stat:
    """Parse `/proc/<pid>/stat`. Fields start after the *last* ')' so a comm such as
    `a) R 1 (` cannot fake them."""
    open_paren = text.index("(")
    close_paren = text.rindex(")")
    comm = text[open_paren + 1 : close_paren]
    fields = text[close_paren + 2 :].split()
    # fields[0] is field 3 (state); proc(5) numbers from 1.
    return Stat(comm, fields[0], int(fields[1]), int(fields[6]), int(fields[19]))


def _status_field(data: bytes, key: bytes) -> bytes | None:
    """The first word after `\nKey:` (a C-speed substring search per key: about 4x
    cheaper than a multi-line regex over the ~1.5 KiB of `status`)."""
    start = data.find(key)
    if start < 0:
        return None
    start += len(key)
    end = data.find(b"\n", start)
    return data[start:end].split(None, 1)[0]


@dataclass(frozen=True, slots=True)
class Status:
    """Memory and identity from `/proc/<pid>/status` (fs/proc/task_mmu.c: task_mem()).

    The memory lines are absent when the task has no mm (kernel thread, zombie):
    `has_mm` is then False and the sizes 0.
    """

    uid: int
    rss_anon_kib: int
    rss_file_kib: int
    rss_shmem_kib: int
    swap_kib: int
    pte_kib: int
    cap_eff: int
    has_mm: bool


def parse_status(data: bytes) -> Status:
    uid = int(_status_field(data, b"\nUid:") or b"0")
    cap_eff = int(_status_field(data, b"\nCapEff:") or b"0", 16)
    rss_anon = _status_field(data, b"\nRssAnon:")
    if rss_anon is None:
        return Status(uid, 0, 0, 0, 0, 0, cap_eff, has_mm=False)
    return Status(
        uid,
        int(rss_anon),
        int(_status_field(data, b"\nRssFile:") or b"0"),
        int(_status_field(data, b"\nRssShmem:") or b"0"),
        int(_status_field(data, b"\nVmSwap:") or b"0"),
        int(_status_field(data, b"\nVmPTE:") or b"0"),
        cap_eff,
        has_mm=True,
    )


def parse_cmdline(data: bytes) -> str:
    """NUL-separated argv as one line; empty for kernel threads and zombies."""
    return data.rstrip(b"\0").replace(b"\0", b" ").decode("utf-8", "replace")


_MEMCG_V1 = re.compile(r"^\d+:([^:]*\bmemory\b[^:]*):(.*)$", re.MULTILINE)
_UNIFIED = re.compile(r"^0::(.*)$", re.MULTILINE)


def parse_proc_cgroup(text: str, memcg_version: int) -> str | None:
    """The memory cgroup path from `/proc/<pid>/cgroup` (v1: the `memory` line;
    v2: the `0::` line)."""
    match = (_MEMCG_V1 if memcg_version == 1 else _UNIFIED).search(text)
    if match is None:
        return None
    return match.group(match.lastindex or 1)


def pids(proc_root: str) -> list[int]:
    return [int(name) for name in os.listdir(proc_root) if name.isdigit()]


def has_cap(cap_eff: int, capability: int) -> bool:
    return bool(cap_eff >> capability & 1)


def parse_cgroup_paths(text: str) -> tuple[str, ...]:
    """Every hierarchy's cgroup path in `/proc/<pid>/cgroup` (`id:controllers:path`
    per line; kernel/cgroup/cgroup.c: proc_cgroup_show()), without repeats."""
    paths: dict[str, None] = {}
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) == 3:
            paths[parts[2]] = None
    return tuple(paths)


def read_exe(proc_root: str, pid: int) -> str | None:
    """The executable's path (`/proc/<pid>/exe`); None for kernel threads, zombies and
    when the kernel refuses (another user's process without CAP_SYS_PTRACE)."""
    try:
        return os.readlink(f"{proc_root}/{pid}/exe")
    except OSError:
        return None


def read_cgroup_paths(proc_root: str, pid: int) -> tuple[str, ...] | None:
    try:
        return parse_cgroup_paths(read_text(f"{proc_root}/{pid}/cgroup"))
    except OSError:
        return None


class UserNames:
    """uid -> user name, each uid looked up once (the uid itself when it has none)."""

    def __init__(self) -> None:
        self._cache: dict[int, str] = {}

    def __call__(self, uid: int) -> str:
        name = self._cache.get(uid)
        if name is None:
            try:
                name = pwd.getpwuid(uid).pw_name
            except KeyError:
                name = str(uid)
            self._cache[uid] = name
        return name
