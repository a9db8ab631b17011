"""One consistent-enough picture of the machine: every process with what the OOM
killer reads about it, memory, pressure, memory cgroups and their OOM domains.

One pass over `/proc`: per process `stat`, `status`, `oom_score_adj`, `oom_score` and
`cmdline` (five small reads); the memory cgroup of every process comes from each
cgroup's `cgroup.procs` instead of one more read per process.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from oomlens.errors import AccessDenied, OomlensError, ProcessGone, Unsupported
from oomlens.kernel.badness import KernelVersion, parse_kernel_version
from oomlens.kernel.domain import DomainKind, OomDomain, global_totalpages
from oomlens.kernel.task import Task
from oomlens.system import memcg as memcg_fs
from oomlens.system.meminfo import MemInfo, read_meminfo, read_sysctls
from oomlens.system.procfs import (
    CAP_SYS_ADMIN,
    PF_KTHREAD,
    UserNames,
    has_cap,
    parse_cmdline,
    parse_proc_cgroup,
    parse_stat,
    parse_status,
    pids,
    read_bytes,
    read_record,
    read_text,
    translate_os_error,
)
from oomlens.system.psi import Pressure, read_memory_pressure

PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
# Start times are clock ticks; pids stay below 2**22 (PID_MAX_LIMIT on 64-bit).
_PID_BITS = 22


@dataclass(frozen=True, slots=True)
class Process:
    """A process as oomlens shows it: the kernel's view (`task`) plus identity and
    display fields. `oom_score` is the kernel's own `/proc/<pid>/oom_score`."""

    task: Task
    ppid: int
    cmdline: str
    uid: int
    user: str
    state: str
    start_time_ticks: int
    oom_score: int | None
    memcg: str | None
    unit: str | None

    @property
    def pid(self) -> int:
        return self.task.pid

    @property
    def comm(self) -> str:
        return self.task.comm


@dataclass(slots=True)
class ScanNotes:
    """What a scan could not see: processes that exited mid-read (normal, counted) and
    fields the kernel refused (non-root)."""

    gone: int = 0
    denied: dict[str, int] = field(default_factory=dict)

    def deny(self, what: str) -> None:
        self.denied[what] = self.denied.get(what, 0) + 1


def _read_optional_int(path: str, pid: int, notes: ScanNotes, what: str) -> int | None:
    try:
        return int(read_record(path))
    except OSError as err:
        error = translate_os_error(err, path, pid)
        if isinstance(error, AccessDenied):
            notes.deny(what)
            return None
        raise error from err


def read_process(
    proc_root: str,
    pid: int,
    memcg_of: dict[int, str],
    memcg_version: int | None,
    users: UserNames,
    notes: ScanNotes,
) -> Process:
    """Read one process. Raises ProcessGone if it exits while we read."""
    base = f"{proc_root}/{pid}"
    path = f"{base}/stat"
    try:
        stat = parse_stat(read_record(path).decode("utf-8", "replace"))
        path = f"{base}/status"
        status = parse_status(read_record(path))
        path = f"{base}/oom_score_adj"
        adj = int(read_record(path))
    except OSError as err:
        raise translate_os_error(err, path, pid) from err
    except (ValueError, IndexError) as err:  # a zombie reaped between reads
        raise ProcessGone(pid) from err
    oom_score = _read_optional_int(f"{base}/oom_score", pid, notes, "oom_score")
    try:
        cmdline = parse_cmdline(read_bytes(f"{base}/cmdline"))
    except PermissionError:
        notes.deny("cmdline")
        cmdline = ""
    except OSError as err:
        raise translate_os_error(err, f"{base}/cmdline", pid) from err
    memcg = memcg_of.get(pid)
    if memcg is None and memcg_version is not None:
        memcg = _memcg_from_proc(base, memcg_version)
    kib_per_page = PAGE_SIZE // 1024
    is_kthread = bool(stat.flags & PF_KTHREAD)
    task = Task(
        pid=pid,
        comm=stat.comm,
        oom_score_adj=adj,
        rss_anon_pages=status.rss_anon_kib // kib_per_page,
        rss_file_pages=status.rss_file_kib // kib_per_page,
        rss_shmem_pages=status.rss_shmem_kib // kib_per_page,
        swapents=status.swap_kib // kib_per_page,
        pgtables_bytes=status.pte_kib * 1024,
        page_size=PAGE_SIZE,
        is_kthread=is_kthread,
        has_mm=status.has_mm and not is_kthread,
        is_global_init=pid == 1,
        cap_sys_admin=has_cap(status.cap_eff, CAP_SYS_ADMIN),
        scan_order=(stat.start_time_ticks << _PID_BITS) | pid,
    )
    return Process(
        task=task, ppid=stat.ppid, cmdline=cmdline, uid=status.uid, user=users(status.uid),
        state=stat.state, start_time_ticks=stat.start_time_ticks, oom_score=oom_score,
        memcg=memcg, unit=memcg_fs.systemd_unit(memcg),
    )


def _memcg_from_proc(base: str, memcg_version: int) -> str | None:
    """Fallback for a process that was not in any `cgroup.procs` when we listed them
    (it started after): read its own `/proc/<pid>/cgroup`."""
    try:
        return parse_proc_cgroup(read_text(f"{base}/cgroup"), memcg_version)
    except OSError:
        return None


def scan_processes(
    proc_root: str = "/proc",
    memcg_of: dict[int, str] | None = None,
    memcg_version: int | None = None,
) -> tuple[list[Process], ScanNotes]:
    """Every process that exists now, skipping (and counting) those that exit mid-read."""
    notes = ScanNotes()
    users = UserNames()
    found: list[Process] = []
    owners = memcg_of or {}
    for pid in pids(proc_root):
        try:
            found.append(read_process(proc_root, pid, owners, memcg_version, users, notes))
        except ProcessGone:
            notes.gone += 1
        except AccessDenied as err:
            notes.deny(os.path.basename(err.path) or "process")
    return found, notes


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Everything the ranking and the status screen need, read once."""

    kernel_release: str
    kernel_version: KernelVersion
    page_size: int
    meminfo: MemInfo
    sysctls: dict[str, int]
    pressure: Pressure | None
    memcg_mount: memcg_fs.MemcgMount | None
    memcgs: tuple[memcg_fs.Memcg, ...]
    processes: tuple[Process, ...]
    notes: ScanNotes

    @property
    def total_swap_pages(self) -> int:
        return self.meminfo.swap_total_kib // (self.page_size // 1024)

    @property
    def global_domain(self) -> OomDomain:
        return OomDomain(
            DomainKind.GLOBAL, "/",
            global_totalpages(self.meminfo.mem_total_kib, self.meminfo.swap_total_kib,
                              self.page_size),
        )

    def memcg_domains(self) -> list[OomDomain]:
        return [m.domain(self.total_swap_pages) for m in self.memcgs]

    def process(self, pid: int) -> Process:
        for proc in self.processes:
            if proc.pid == pid:
                return proc
        raise ProcessGone(pid)


def take_snapshot(proc_root: str = "/proc") -> Snapshot:
    """Read the whole picture. Raises Unsupported if there is no procfs at `proc_root`."""
    if not os.path.isdir(f"{proc_root}/self"):
        raise Unsupported(f"no procfs at {proc_root}: oomlens needs Linux /proc")
    meminfo = read_meminfo(proc_root)
    sysctls = read_sysctls(proc_root)
    mount = memcg_fs.find_memcg_mount(proc_root)
    memcg_of: dict[int, str] = {}
    memcgs: list[memcg_fs.Memcg] = []
    if mount is not None:
        memcg_of = memcg_fs.pid_to_cgroup(mount.root, mount.prefix)
        memcgs = memcg_fs.limited_memcgs(mount, PAGE_SIZE, sysctls.get("vm.swappiness", 60))
    processes, notes = scan_processes(proc_root, memcg_of, mount.version if mount else None)
    release = _kernel_release(proc_root)
    return Snapshot(
        kernel_release=release,
        kernel_version=parse_kernel_version(release),
        page_size=PAGE_SIZE,
        meminfo=meminfo,
        sysctls=sysctls,
        pressure=read_memory_pressure(proc_root),
        memcg_mount=mount,
        memcgs=tuple(memcgs),
        processes=tuple(processes),
        notes=notes,
    )


def _kernel_release(proc_root: str) -> str:
    try:
        return read_text(f"{proc_root}/sys/kernel/osrelease").strip()
    except OSError as err:
        raise OomlensError(f"cannot read the kernel release: {err.strerror}") from err
