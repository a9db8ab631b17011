"""Memory cgroups, v1 and v2 behind one interface: where they are, their limits,
usage and OOM counters, and which processes are in which.

A `MemcgMount` names the hierarchy; `read_memcg` reads one cgroup into a `Memcg`
whatever the version. Paths are cgroup paths ("/a/b"), as the kernel prints them in
`oom-kill:...oom_memcg=/a/b` and `/proc/<pid>/cgroup`.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass

from oomlens.errors import NotFound, OomlensError
from oomlens.kernel.domain import (
    DomainKind,
    OomDomain,
    memcg_totalpages_v1,
    memcg_totalpages_v2,
    page_counter_max,
)
from oomlens.system.meminfo import parse_flat
from oomlens.system.procfs import read_text


@dataclass(frozen=True, slots=True)
class MemcgMount:
    """The mounted memory controller hierarchy. `root` is the mount point; `prefix` is
    the cgroup path of that mount's root (non-"/" inside a cgroup namespace or a bind
    mount of a sub-tree)."""

    version: int
    root: str
    prefix: str = "/"

    def fs_path(self, cgroup_path: str) -> str:
        """Filesystem directory of a cgroup path as seen in /proc/<pid>/cgroup."""
        rel = cgroup_path
        if self.prefix != "/":
            prefix = self.prefix.rstrip("/")
            if rel != prefix and not rel.startswith(prefix + "/"):
                raise NotFound(f"memory cgroup {cgroup_path} is outside this mount "
                               f"({self.prefix} at {self.root})")
            rel = rel[len(prefix) :]
        return os.path.join(self.root, rel.lstrip("/"))

    def cgroup_path(self, fs_dir: str) -> str:
        rel = os.path.relpath(fs_dir, self.root)
        tail = "" if rel == "." else rel
        base = self.prefix.rstrip("/")
        return f"{base}/{tail}" if tail else (self.prefix or "/")


def parse_mountinfo(text: str) -> tuple[MemcgMount | None, MemcgMount | None]:
    """Find the memory controller's v1 mount and the cgroup2 mount in
    `/proc/self/mountinfo`, each with the cgroup path of its root (field 4: not "/"
    for a sub-tree mount, as in a container).

    Whether the cgroup2 hierarchy has the memory controller needs a read of its
    `cgroup.controllers`.
    """
    v1: MemcgMount | None = None
    v2: MemcgMount | None = None
    for line in text.splitlines():
        left, _, right = line.partition(" - ")
        fields = left.split()
        after = right.split()
        if len(fields) < 5 or len(after) < 3:
            continue
        fstype, options = after[0], after[2]
        root, mount_point = _unescape(fields[3]), _unescape(fields[4])
        if fstype == "cgroup" and "memory" in options.split(",") and v1 is None:
            v1 = MemcgMount(1, mount_point, root)
        elif fstype == "cgroup2" and v2 is None:
            v2 = MemcgMount(2, mount_point, root)
    return v1, v2


def _unescape(field: str) -> str:
    """mountinfo escapes space, tab, newline and backslash as octal (\\040)."""
    if "\\" not in field:
        return field
    return (
        field.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n")
        .replace("\\134", "\\")
    )


def find_memcg_mount(proc_root: str = "/proc") -> MemcgMount | None:
    """The memory cgroup hierarchy of this system, v1 preferred when both exist (the
    kernel uses v1 when the memory controller is bound there), or None."""
    v1, v2 = parse_mountinfo(read_text(f"{proc_root}/self/mountinfo"))
    if v1 is not None:
        return v1
    if v2 is not None:
        try:
            controllers = read_text(os.path.join(v2.root, "cgroup.controllers")).split()
        except OSError:
            return None
        if "memory" in controllers:
            return v2
    return None


@dataclass(frozen=True, slots=True)
class Memcg:
    """One memory cgroup's limits and state, version-neutral.

    `limit_bytes` None means unlimited. `swap_limit_bytes` is v2's memory.swap.max or,
    on v1, memsw.limit - memory.limit (None: unlimited or not accounted).
    `swappiness` is the cgroup's own on v1 and vm.swappiness on v2.
    """

    path: str
    version: int
    limit_bytes: int | None
    swap_limit_bytes: int | None
    usage_bytes: int
    swap_usage_bytes: int | None
    swappiness: int
    oom_kill: int
    oom_kill_disable: bool
    raw_limit_pages: int
    raw_swap_limit_pages: int

    def totalpages(self, total_swap_pages: int) -> int:
        """`mem_cgroup_get_max()` for this memcg (see kernel/domain.py)."""
        if self.version == 1:
            return memcg_totalpages_v1(
                self.raw_limit_pages, self.raw_swap_limit_pages, self.swappiness,
                total_swap_pages,
            )
        return memcg_totalpages_v2(
            self.raw_limit_pages, self.raw_swap_limit_pages, self.swappiness, total_swap_pages
        )

    def domain(self, total_swap_pages: int) -> OomDomain:
        return OomDomain(DomainKind.MEMCG, self.path, self.totalpages(total_swap_pages))


def _read_int(directory: str, name: str) -> int | None:
    try:
        text = read_text(os.path.join(directory, name)).strip()
    except FileNotFoundError:
        return None
    return None if text == "max" else int(text)


def _read_flat_keyed(directory: str, name: str) -> dict[str, int]:
    try:
        return parse_flat(read_text(os.path.join(directory, name)))
    except FileNotFoundError:
        return {}


def read_memcg(mount: MemcgMount, path: str, page_size: int, vm_swappiness: int) -> Memcg:
    """Read one memory cgroup. Raises NotFound if it does not exist."""
    directory = mount.fs_path(path)
    if not os.path.isdir(directory):
        raise NotFound(f"memory cgroup {path} does not exist (looked in {directory})")
    try:
        if mount.version == 1:
            return _read_v1(directory, path, page_size)
        return _read_v2(directory, path, page_size, vm_swappiness)
    except FileNotFoundError as err:
        raise NotFound(f"memory cgroup {path} vanished while reading it") from err
    except PermissionError as err:
        raise OomlensError(f"cannot read memory cgroup {path}: {err.strerror}") from err


def _limit(raw_bytes: int | None, counter_max: int, page_size: int) -> tuple[int | None, int]:
    """(bytes or None if unlimited, the page counter's value in pages)."""
    if raw_bytes is None:
        return None, counter_max
    pages = raw_bytes // page_size
    return (None if pages >= counter_max else raw_bytes), min(pages, counter_max)


def _read_v1(directory: str, path: str, page_size: int) -> Memcg:
    counter_max = page_counter_max(page_size)
    limit, limit_pages = _limit(_read_int(directory, "memory.limit_in_bytes"), counter_max,
                                page_size)
    memsw, memsw_pages = _limit(_read_int(directory, "memory.memsw.limit_in_bytes"),
                                counter_max, page_size)
    usage = _read_int(directory, "memory.usage_in_bytes") or 0
    memsw_usage = _read_int(directory, "memory.memsw.usage_in_bytes")
    oom = _read_flat_keyed(directory, "memory.oom_control")
    swappiness = _read_int(directory, "memory.swappiness")
    swap_limit = None if memsw is None or limit is None else max(memsw - limit, 0)
    return Memcg(
        path=path, version=1, limit_bytes=limit, swap_limit_bytes=swap_limit,
        usage_bytes=usage,
        swap_usage_bytes=None if memsw_usage is None else max(memsw_usage - usage, 0),
        swappiness=60 if swappiness is None else swappiness,
        oom_kill=oom.get("oom_kill", 0), oom_kill_disable=bool(oom.get("oom_kill_disable", 0)),
        raw_limit_pages=limit_pages, raw_swap_limit_pages=memsw_pages,
    )


def _read_v2(directory: str, path: str, page_size: int, vm_swappiness: int) -> Memcg:
    counter_max = page_counter_max(page_size)
    limit, limit_pages = _limit(_read_int(directory, "memory.max"), counter_max, page_size)
    swap, swap_pages = _limit(_read_int(directory, "memory.swap.max"), counter_max, page_size)
    events = _read_flat_keyed(directory, "memory.events")
    return Memcg(
        path=path, version=2, limit_bytes=limit, swap_limit_bytes=swap,
        usage_bytes=_read_int(directory, "memory.current") or 0,
        swap_usage_bytes=_read_int(directory, "memory.swap.current"),
        swappiness=vm_swappiness, oom_kill=events.get("oom_kill", 0), oom_kill_disable=False,
        raw_limit_pages=limit_pages, raw_swap_limit_pages=swap_pages,
    )


def walk(mount: MemcgMount) -> Iterator[tuple[str, str]]:
    """(cgroup path, directory) of every cgroup in the hierarchy, parents first."""
    stack = [mount.root]
    while stack:
        directory = stack.pop()
        yield mount.cgroup_path(directory), directory
        try:
            with os.scandir(directory) as entries:
                subdirs = [e.path for e in entries if e.is_dir(follow_symlinks=False)]
        except (FileNotFoundError, NotADirectoryError):
            continue
        stack.extend(sorted(subdirs, reverse=True))


def pid_to_cgroup(mount_root: str, prefix: str = "/") -> dict[int, str]:
    """Which cgroup each process is in, from every cgroup's `cgroup.procs`.

    One read per cgroup instead of one `/proc/<pid>/cgroup` read per process; the
    kernel walks memcgs the same way for a memcg OOM (mm/memcontrol.c:
    mem_cgroup_scan_tasks()).
    """
    mount = MemcgMount(0, mount_root, prefix)
    owner: dict[int, str] = {}
    for path, directory in walk(mount):
        try:
            text = read_text(os.path.join(directory, "cgroup.procs"))
        except OSError:
            continue
        for field in text.split():
            owner[int(field)] = path
    return owner


def limited_memcgs(
    mount: MemcgMount, page_size: int, vm_swappiness: int
) -> list[Memcg]:
    """Every memcg whose own memory (or, v1, memory+swap) limit is set: each is an OOM
    domain. The hierarchy's root never has a limit."""
    found: list[Memcg] = []
    for path, _directory in walk(mount):
        if path == "/":  # only the real root cannot have a limit (mem_cgroup_is_root())
            continue
        try:
            memcg = read_memcg(mount, path, page_size, vm_swappiness)
        except NotFound:
            continue
        if memcg.limit_bytes is not None or (
            memcg.version == 1 and memcg.raw_swap_limit_pages < page_counter_max(page_size)
        ):
            found.append(memcg)
    return found


def systemd_unit(cgroup_path: str | None) -> str | None:
    """The systemd unit a cgroup path names (`/system.slice/ssh.service` ->
    `ssh.service`; the deepest service or scope wins)."""
    if not cgroup_path:
        return None
    for part in reversed(cgroup_path.split("/")):
        if part.endswith((".service", ".scope")):
            return part
    return None
