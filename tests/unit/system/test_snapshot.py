"""system/snapshot.py: scan_processes() and take_snapshot() on a complete fake /proc tree
(tests/fixtures/fakeproc.py) with a fake cgroupfs (tests/fixtures/fakecgroup.py):
ordinary processes, a kernel thread, a zombie, a process that vanishes mid-scan, and
fields the kernel refuses."""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fakecgroup import make_v1_memcg, make_v2_memcg, make_v2_root
from fakeproc import (
    CAP_SYS_ADMIN_BIT,
    CAPS_ROOT_NO_SYS_RESOURCE,
    PF_KTHREAD,
    FakeProcess,
    mountinfo_text,
    write_fake_proc,
)

from oomlens.errors import OomlensError, ProcessGone, Unsupported
from oomlens.kernel.domain import DomainKind
from oomlens.kernel.task import Ineligible, ineligible_reason
from oomlens.system import procfs, snapshot
from oomlens.system.snapshot import (
    PAGE_SIZE,
    Process,
    ScanNotes,
    scan_processes,
    take_snapshot,
)

MIB = 1 << 20
pytestmark = pytest.mark.skipif(PAGE_SIZE != 4096, reason="fixtures assume 4 KiB pages")

INIT = FakeProcess(pid=1, comm="init", ppid=0, start_time_ticks=1,
                   cap_eff=CAPS_ROOT_NO_SYS_RESOURCE, rss_anon_kib=4096, rss_file_kib=8192,
                   cmdline=b"/sbin/init\0")
KTHREADD = FakeProcess(pid=2, comm="kthreadd", ppid=0, flags=PF_KTHREAD | 0x40,
                       start_time_ticks=1, has_mm=False, cmdline=b"", oom_score=0,
                       cap_eff=0x000001FFFFFFFFFF)
WEB = FakeProcess(pid=300, comm="web server", start_time_ticks=5000, uid=33,
                  rss_anon_kib=40_000, rss_file_kib=8_000, rss_shmem_kib=4_000,
                  swap_kib=1_024, pte_kib=200, oom_score_adj=300, oom_score=900,
                  cmdline=b"/usr/sbin/web\0--port\x0080\0",
                  cgroup="4:memory:/system.slice/web.service\n0::/\n")
ZOMBIE = FakeProcess(pid=301, comm="defunct", state="Z", ppid=300, start_time_ticks=5001,
                     has_mm=False, cmdline=b"", oom_score=0)
HOSTILE = FakeProcess(pid=302, comm="a) R 1 (x\nz", start_time_ticks=5002, ppid=300,
                      rss_anon_kib=400, cap_eff=1 << 21, oom_score_adj=-500)


def build(tmp_path: Path, processes: list[FakeProcess], **kwargs: object) -> Path:
    return write_fake_proc(tmp_path / "proc", processes, **kwargs)  # type: ignore[arg-type]


def by_pid(processes: list[Process] | tuple[Process, ...]) -> dict[int, Process]:
    return {p.pid: p for p in processes}


# --- scan_processes --------------------------------------------------------------------


class TestScanProcesses:
    def test_ordinary_process(self, tmp_path: Path) -> None:
        root = build(tmp_path, [WEB])
        procs, notes = scan_processes(str(root))
        assert notes == ScanNotes()
        (web,) = procs
        assert web.pid == 300 and web.comm == "web server"
        assert web.ppid == 1
        assert web.state == "S"
        assert web.uid == 33
        assert web.start_time_ticks == 5000
        assert web.oom_score == 900
        assert web.cmdline == "/usr/sbin/web --port 80"
        task = web.task
        assert task.oom_score_adj == 300
        assert (task.rss_anon_pages, task.rss_file_pages, task.rss_shmem_pages) == (
            10_000, 2_000, 1_000)
        assert task.swapents == 256
        assert task.pgtables_bytes == 200 * 1024
        assert task.pgtables_pages == 50
        assert task.page_size == 4096
        assert not task.is_kthread and task.has_mm and not task.is_global_init
        assert not task.cap_sys_admin
        assert task.scan_order == (5000 << 22) | 300
        assert ineligible_reason(task) is None

    def test_memcg_without_cgroup_map_needs_a_version(self, tmp_path: Path) -> None:
        root = build(tmp_path, [WEB])
        (web,) = scan_processes(str(root))[0]
        assert web.memcg is None and web.unit is None
        (web,) = scan_processes(str(root), memcg_version=1)[0]
        assert web.memcg == "/system.slice/web.service"
        assert web.unit == "web.service"
        (web,) = scan_processes(str(root), memcg_version=2)[0]
        assert web.memcg == "/"

    def test_memcg_map_wins_over_proc_cgroup(self, tmp_path: Path) -> None:
        root = build(tmp_path, [WEB])
        (web,) = scan_processes(str(root), {300: "/user.slice/x.scope"}, 1)[0]
        assert web.memcg == "/user.slice/x.scope"
        assert web.unit == "x.scope"

    def test_global_init(self, tmp_path: Path) -> None:
        (init,) = scan_processes(str(build(tmp_path, [INIT])))[0]
        assert init.task.is_global_init
        assert init.task.cap_sys_admin
        assert init.user == "root"
        assert ineligible_reason(init.task) is Ineligible.GLOBAL_INIT

    def test_kernel_thread(self, tmp_path: Path) -> None:
        (kthread,) = scan_processes(str(build(tmp_path, [KTHREADD])))[0]
        assert kthread.task.is_kthread
        assert not kthread.task.has_mm
        assert kthread.task.rss_pages == 0
        assert kthread.cmdline == ""
        assert ineligible_reason(kthread.task) is Ineligible.KTHREAD

    def test_zombie_has_no_mm(self, tmp_path: Path) -> None:
        (zombie,) = scan_processes(str(build(tmp_path, [ZOMBIE])))[0]
        assert zombie.state == "Z"
        assert not zombie.task.is_kthread
        assert not zombie.task.has_mm
        assert zombie.oom_score == 0
        assert ineligible_reason(zombie.task) is Ineligible.NO_MM

    def test_hostile_comm(self, tmp_path: Path) -> None:
        (proc,) = scan_processes(str(build(tmp_path, [HOSTILE])))[0]
        assert proc.comm == "a) R 1 (x\nz"
        assert proc.ppid == 300
        assert proc.state == "S"
        assert proc.task.oom_score_adj == -500
        assert proc.task.cap_sys_admin
        assert proc.task.rss_anon_pages == 100

    def test_vanished_process_is_skipped_and_counted(self, tmp_path: Path) -> None:
        gone = FakeProcess(pid=4000, vanished=True)
        root = build(tmp_path, [WEB, gone])
        assert (root / "4000").is_dir()
        procs, notes = scan_processes(str(root))
        assert [p.pid for p in procs] == [300]
        assert notes.gone == 1
        assert notes.denied == {}

    @pytest.mark.parametrize("missing", ["status", "oom_score_adj", "oom_score", "cmdline"])
    def test_vanishing_between_reads_is_gone(self, tmp_path: Path, missing: str) -> None:
        root = build(tmp_path, [WEB, ZOMBIE])
        (root / "300" / missing).unlink()
        procs, notes = scan_processes(str(root))
        assert [p.pid for p in procs] == [301]
        assert notes.gone == 1

    def test_reaped_zombie_with_empty_files_is_gone(self, tmp_path: Path) -> None:
        root = build(tmp_path, [ZOMBIE])
        (root / "301" / "stat").write_text("")
        procs, notes = scan_processes(str(root))
        assert procs == []
        assert notes.gone == 1

    def test_user_names(self, tmp_path: Path) -> None:
        unknown = FakeProcess(pid=500, uid=4_000_000_000 - 7)
        procs = by_pid(scan_processes(str(build(tmp_path, [INIT, unknown])))[0])
        assert procs[1].user == "root"
        assert procs[500].user == str(4_000_000_000 - 7)

    def test_full_tree(self, tmp_path: Path) -> None:
        root = build(tmp_path, [INIT, KTHREADD, WEB, ZOMBIE, HOSTILE,
                                FakeProcess(pid=9999, vanished=True)])
        procs, notes = scan_processes(str(root))
        assert sorted(p.pid for p in procs) == [1, 2, 300, 301, 302]
        assert notes.gone == 1


def deny(monkeypatch: pytest.MonkeyPatch, suffix: str) -> None:
    """Make every read of a path ending in `suffix` fail with EACCES, as the kernel does
    for a non-root reader (root ignores chmod 000, so a real chmod cannot test this).
    Every reader name the two modules use is wrapped, whichever the scan calls."""
    for module in (snapshot, procfs):
        for name in ("read_bytes", "read_record", "read_text"):
            real = getattr(module, name, None)
            if real is not None:
                monkeypatch.setattr(module, name, _denying(real, suffix))


def _denying(real: Callable[[str], Any], suffix: str) -> Callable[[str], Any]:
    def read(path: str) -> Any:
        if path.endswith(suffix):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), path)
        return real(path)

    return read


class TestDenied:
    def test_unreadable_oom_score_is_none_and_noted(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        root = build(tmp_path, [WEB, ZOMBIE])
        deny(monkeypatch, "/300/oom_score")
        procs = by_pid(scan_processes(str(root))[0])
        notes = scan_processes(str(root))[1]
        assert procs[300].oom_score is None
        assert procs[300].task.oom_score_adj == 300  # oom_score_adj is a different file
        assert procs[301].oom_score == 0
        assert notes.denied == {"oom_score": 1}
        assert notes.gone == 0

    def test_unreadable_cmdline_is_empty_and_noted(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        root = build(tmp_path, [WEB])
        deny(monkeypatch, "/cmdline")
        procs, notes = scan_processes(str(root))
        assert procs[0].cmdline == ""
        assert procs[0].task.rss_anon_pages == 10_000
        assert notes.denied == {"cmdline": 1}

    def test_unreadable_status_skips_the_process(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        root = build(tmp_path, [WEB, ZOMBIE])
        deny(monkeypatch, "/300/status")
        procs, notes = scan_processes(str(root))
        assert [p.pid for p in procs] == [301]
        assert notes.gone == 0
        assert sum(notes.denied.values()) == 1

    def test_unreadable_status_is_noted_by_field(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        root = build(tmp_path, [WEB])
        deny(monkeypatch, "/300/status")
        notes = scan_processes(str(root))[1]
        assert notes.denied == {"status": 1}


# --- take_snapshot ---------------------------------------------------------------------


def v1_world(tmp_path: Path) -> Path:
    """A v1 machine: memory hierarchy under tmp_path/memory with a limited web.service."""
    cg = tmp_path / "memory"
    make_v1_memcg(cg, "/", procs=[1, 302])
    make_v1_memcg(cg, "/system.slice", procs=[])
    make_v1_memcg(cg, "/system.slice/web.service", limit_bytes=256 * MIB,
                  usage_bytes=60 * MIB, oom_kill=1, procs=[300, 301])
    make_v1_memcg(cg, "/user.slice", procs=[])
    mountinfo = mountinfo_text(memory_v1=(cg, "/"), cgroup2=tmp_path / "unified")
    return build(tmp_path, [INIT, KTHREADD, WEB, ZOMBIE, HOSTILE,
                            FakeProcess(pid=303, start_time_ticks=6000,
                                        cgroup="4:memory:/user.slice/late.scope\n")],
                 mountinfo=mountinfo)


class TestTakeSnapshot:
    def test_v1_machine(self, tmp_path: Path) -> None:
        snap = take_snapshot(str(v1_world(tmp_path)))
        assert snap.kernel_release == "6.1.0-18-amd64"
        assert snap.kernel_version == (6, 1, 0)
        assert snap.page_size == 4096
        assert snap.meminfo.mem_total_kib == 24_684_100
        assert snap.meminfo.swap_total_kib == 0
        assert snap.sysctls["vm.swappiness"] == 60
        assert snap.sysctls["vm.overcommit_memory"] == 0
        assert snap.pressure is not None and snap.pressure.full is not None
        assert snap.memcg_mount is not None
        assert (snap.memcg_mount.version, snap.memcg_mount.root) == (1, str(tmp_path / "memory"))
        assert [m.path for m in snap.memcgs] == ["/system.slice/web.service"]
        assert snap.notes == ScanNotes()

        procs = by_pid(snap.processes)
        assert sorted(procs) == [1, 2, 300, 301, 302, 303]
        assert procs[300].memcg == "/system.slice/web.service"
        assert procs[300].unit == "web.service"
        assert procs[301].memcg == "/system.slice/web.service"
        assert procs[1].memcg == "/"
        # Not in any cgroup.procs (started after the listing): its own /proc/<pid>/cgroup.
        assert procs[303].memcg == "/user.slice/late.scope"
        assert snap.process(300) is procs[300]
        with pytest.raises(ProcessGone):
            snap.process(12345)

    def test_domains(self, tmp_path: Path) -> None:
        snap = take_snapshot(str(v1_world(tmp_path)))
        assert snap.total_swap_pages == 0
        assert snap.global_domain.kind is DomainKind.GLOBAL
        assert snap.global_domain.path == "/"
        assert snap.global_domain.totalpages == 24_684_100 // 4
        (domain,) = snap.memcg_domains()
        assert (domain.kind, domain.path, domain.totalpages) == (
            DomainKind.MEMCG, "/system.slice/web.service", 65_536)

    def test_v2_machine(self, tmp_path: Path) -> None:
        cg = make_v2_root(tmp_path / "cgroup", procs=[1])
        make_v2_memcg(cg, "/system.slice", procs=[])
        make_v2_memcg(cg, "/system.slice/web.service", max_bytes=512 * MIB,
                      swap_max_bytes=0, procs=[300])
        swap_meminfo = "MemTotal: 8000000 kB\nMemFree: 4000000 kB\nSwapTotal: 1048576 kB\n"
        root = build(tmp_path, [INIT, WEB], mountinfo=mountinfo_text(cgroup2=cg),
                     meminfo=swap_meminfo, sysctls={"vm/swappiness": 0},
                     osrelease="6.18.44-fc-v509", pressure=None)
        snap = take_snapshot(str(root))
        assert snap.kernel_version == (6, 18, 44)
        assert snap.pressure is None
        assert snap.memcg_mount is not None and snap.memcg_mount.version == 2
        assert snap.sysctls == {"vm.swappiness": 0}
        assert by_pid(snap.processes)[300].memcg == "/system.slice/web.service"
        assert snap.total_swap_pages == 262_144
        assert snap.global_domain.totalpages == 2_000_000 + 262_144
        (memcg,) = snap.memcgs
        assert memcg.swappiness == 0  # vm.swappiness from the fake /proc/sys
        assert memcg.totalpages(snap.total_swap_pages) == 131_072

    def test_no_memory_cgroup(self, tmp_path: Path) -> None:
        snap = take_snapshot(str(build(tmp_path, [INIT, WEB])))
        assert snap.memcg_mount is None
        assert snap.memcgs == ()
        assert snap.memcg_domains() == []
        assert all(p.memcg is None for p in snap.processes)

    def test_vanished_process_counted(self, tmp_path: Path) -> None:
        root = build(tmp_path, [INIT, FakeProcess(pid=77, vanished=True)])
        snap = take_snapshot(str(root))
        assert [p.pid for p in snap.processes] == [1]
        assert snap.notes.gone == 1

    def test_denied_oom_score(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        root = build(tmp_path, [INIT, WEB])
        deny(monkeypatch, "/1/oom_score")
        snap = take_snapshot(str(root))
        assert snap.process(1).oom_score is None
        assert snap.process(300).oom_score == 900
        assert snap.notes.denied == {"oom_score": 1}

    def test_no_procfs(self, tmp_path: Path) -> None:
        with pytest.raises(Unsupported, match="procfs"):
            take_snapshot(str(tmp_path / "nothing"))

    def test_no_osrelease(self, tmp_path: Path) -> None:
        with pytest.raises(OomlensError, match="kernel release"):
            take_snapshot(str(build(tmp_path, [INIT], osrelease=None)))


def test_cap_bit_constant_matches_procfs() -> None:
    assert CAP_SYS_ADMIN_BIT == 1 << procfs.CAP_SYS_ADMIN
