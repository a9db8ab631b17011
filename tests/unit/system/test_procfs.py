"""system/procfs.py: parsers of /proc/<pid>/{stat,status,cmdline,cgroup} on real texts
(tests/fixtures/proc_6.18/, copied from a 6.18 kernel) and hostile ones, and the one
OS-error translator."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest
from fakeproc import REAL_DIR, FakeProcess, stat_text, status_text

from oomlens.errors import AccessDenied, NotFound, OomlensError, ProcessGone
from oomlens.system.procfs import (
    CAP_SYS_ADMIN,
    PF_KTHREAD,
    has_cap,
    parse_cmdline,
    parse_proc_cgroup,
    parse_stat,
    parse_status,
    pids,
    read_bytes,
    read_text,
    translate_os_error,
)


def real(name: str) -> bytes:
    return (REAL_DIR / name).read_bytes()


# --- stat ------------------------------------------------------------------------------


class TestParseStat:
    def test_real_sleep(self) -> None:
        stat = parse_stat(real("sleep.stat").decode())
        assert stat.comm == "sleep"
        assert stat.state == "S"
        assert stat.ppid == 15033
        assert stat.flags == 4194304
        assert not stat.flags & PF_KTHREAD
        assert stat.start_time_ticks == 53740

    def test_real_kthreadd(self) -> None:
        stat = parse_stat(real("kthreadd.stat").decode())
        assert (stat.comm, stat.state, stat.ppid) == ("kthreadd", "S", 0)
        assert stat.flags & PF_KTHREAD
        assert stat.start_time_ticks == 25

    def test_real_zombie(self) -> None:
        stat = parse_stat(real("zombie.stat").decode())
        assert (stat.comm, stat.state, stat.ppid) == ("python3", "Z", 15033)
        assert stat.start_time_ticks == 53760

    def test_real_hostile_comm(self) -> None:
        # prctl(PR_SET_NAME, "a) R 1 (x\nz"): the kernel prints comm unescaped in stat.
        stat = parse_stat(real("hostile.stat").decode())
        assert stat.comm == "a) R 1 (x\nz"
        assert stat.state == "S"
        assert stat.ppid == 15033
        assert stat.flags == 4194368
        assert stat.start_time_ticks == 53790

    @pytest.mark.parametrize(
        "comm",
        [
            ") R 1 (",
            "a) R 1 (",
            "x) Z 99 (",
            "))",
            "(",
            "my prog",
            "  spaces  ",
            "new\nline",
            "",
            "tab\there",
            "0 1 2 3 4 5 6",
            "a) Z 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20",
        ],
    )
    def test_hostile_comm_cannot_fake_fields(self, comm: str) -> None:
        proc = FakeProcess(pid=4321, comm=comm, state="R", ppid=77, flags=0x400040,
                           start_time_ticks=987_654)
        stat = parse_stat(stat_text(proc))
        assert stat.comm == comm
        assert stat.state == "R"
        assert stat.ppid == 77
        assert stat.flags == 0x400040
        assert stat.start_time_ticks == 987_654


# --- status ----------------------------------------------------------------------------


class TestParseStatus:
    def test_real_normal_process(self) -> None:
        status = parse_status(real("sleep.status"))
        assert status.has_mm
        assert status.uid == 0
        assert status.rss_anon_kib == 108
        assert status.rss_file_kib == 1684
        assert status.rss_shmem_kib == 0
        assert status.swap_kib == 0
        assert status.pte_kib == 40
        assert status.cap_eff == 0x000001FFFEFFFFFF
        assert has_cap(status.cap_eff, CAP_SYS_ADMIN)
        assert not has_cap(status.cap_eff, 24)  # CAP_SYS_RESOURCE: not on this machine

    def test_real_kernel_thread_has_no_memory_lines(self) -> None:
        assert b"RssAnon" not in real("kthreadd.status")
        status = parse_status(real("kthreadd.status"))
        assert not status.has_mm
        assert (status.rss_anon_kib, status.rss_file_kib, status.rss_shmem_kib) == (0, 0, 0)
        assert (status.swap_kib, status.pte_kib) == (0, 0)
        assert status.cap_eff == 0x000001FFFFFFFFFF

    def test_real_zombie_has_no_mm(self) -> None:
        status = parse_status(real("zombie.status"))
        assert not status.has_mm
        assert status.rss_anon_kib == 0

    def test_real_hostile_name_is_escaped_and_harmless(self) -> None:
        # proc_task_name(escape=true) prints "\n" as backslash-n: no fake "RssAnon:" line.
        status = parse_status(real("hostile.status"))
        assert status.has_mm
        assert status.rss_anon_kib == 7616
        assert status.pte_kib == 76

    def test_name_that_mimics_a_memory_line(self) -> None:
        proc = FakeProcess(pid=9, comm="x\nRssAnon:\t999999 kB", rss_anon_kib=12, uid=1000)
        status = parse_status(status_text(proc).encode())
        assert status.rss_anon_kib == 12
        assert status.uid == 1000

    def test_uid_is_the_real_uid(self) -> None:
        text = b"Name:\tx\nUid:\t1000\t0\t0\t0\nRssAnon:\t4 kB\n"
        assert parse_status(text).uid == 1000

    def test_swap_and_shmem(self) -> None:
        proc = FakeProcess(pid=9, rss_anon_kib=400, rss_file_kib=200, rss_shmem_kib=100,
                           swap_kib=2048, pte_kib=96, cap_eff=0)
        status = parse_status(status_text(proc).encode())
        assert (status.rss_anon_kib, status.rss_file_kib, status.rss_shmem_kib) == (400, 200, 100)
        assert (status.swap_kib, status.pte_kib, status.cap_eff) == (2048, 96, 0)
        assert not has_cap(status.cap_eff, CAP_SYS_ADMIN)


# --- cmdline ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"sleep\x0030\x00", "sleep 30"),
        (b"python3\x00-m\x00http.server\x00", "python3 -m http.server"),
        (b"", ""),
        (b"nginx: worker process\x00\x00\x00", "nginx: worker process"),
        (b"no-trailing-nul", "no-trailing-nul"),
        (b"arg with spaces\x00x\x00", "arg with spaces x"),
        (b"bad\xff\xfeutf8\x00", "bad\ufffd\ufffdutf8"),
    ],
)
def test_parse_cmdline(data: bytes, expected: str) -> None:
    assert parse_cmdline(data) == expected


def test_parse_cmdline_real() -> None:
    assert parse_cmdline(real("sleep.cmdline")) == "sleep 30"


# --- cgroup ----------------------------------------------------------------------------

V1_HYBRID = (
    "12:name=systemd:/user.slice/memory\n"
    "11:pids:/user.slice/user-1000.slice/session-3.scope\n"
    "5:cpu,cpuacct:/user.slice\n"
    "4:memory:/user.slice/user-1000.slice/session-3.scope\n"
    "3:cpuset:/\n"
    "0::/user.slice/user-1000.slice/session-3.scope\n"
)


class TestParseProcCgroup:
    def test_v1_memory_line_among_several(self) -> None:
        assert parse_proc_cgroup(V1_HYBRID, 1) == "/user.slice/user-1000.slice/session-3.scope"

    def test_real_v1(self) -> None:
        text = real("sleep.cgroup").decode()
        assert parse_proc_cgroup(text, 1) == "/user.slice/user-1000.slice/session-3.scope"
        assert parse_proc_cgroup(text, 2) == "/"

    @pytest.mark.parametrize("controllers", ["memory,foo", "foo,memory", "cpu,memory,blkio"])
    def test_v1_combined_controllers(self, controllers: str) -> None:
        text = f"5:cpu:/\n4:{controllers}:/x\n1:name=systemd:/\n"
        assert parse_proc_cgroup(text, 1) == "/x"

    @pytest.mark.parametrize(
        "text",
        [
            "12:name=systemd:/memory\n5:cpu:/\n0::/\n",
            "3:name=memoryless:/y\n0::/\n",
            "0::/memory\n",
        ],
    )
    def test_v1_memory_elsewhere_on_the_line_is_not_the_controller(self, text: str) -> None:
        assert parse_proc_cgroup(text, 1) is None

    def test_v1_path_with_colon(self) -> None:
        assert parse_proc_cgroup("4:memory:/a:b/c\n", 1) == "/a:b/c"

    def test_v2(self) -> None:
        assert parse_proc_cgroup("0::/user.slice/x.scope\n", 2) == "/user.slice/x.scope"

    def test_v2_in_hybrid(self) -> None:
        assert parse_proc_cgroup(V1_HYBRID, 2) == "/user.slice/user-1000.slice/session-3.scope"

    def test_v2_missing(self) -> None:
        assert parse_proc_cgroup("4:memory:/x\n", 2) is None

    def test_v2_root(self) -> None:
        assert parse_proc_cgroup("0::/\n", 2) == "/"


# --- errors ----------------------------------------------------------------------------


class TestTranslateOsError:
    @pytest.mark.parametrize("code", [errno.ENOENT, errno.ESRCH])
    def test_gone_with_pid(self, code: int) -> None:
        err = translate_os_error(OSError(code, "gone"), "/proc/42/stat", 42)
        assert type(err) is ProcessGone
        assert isinstance(err, ProcessGone)
        assert err.pid == 42
        assert "42" in str(err)

    @pytest.mark.parametrize("code", [errno.EACCES, errno.EPERM])
    def test_denied(self, code: int) -> None:
        err = translate_os_error(PermissionError(code, "denied"), "/proc/42/environ", 42)
        assert isinstance(err, AccessDenied)
        assert err.path == "/proc/42/environ"
        assert err.pid == 42
        assert "/proc/42/environ" in str(err)

    def test_denied_without_pid(self) -> None:
        err = translate_os_error(OSError(errno.EACCES, "denied"), "/proc/kcore")
        assert isinstance(err, AccessDenied)
        assert err.pid is None

    def test_missing_file_without_pid_is_not_found(self) -> None:
        err = translate_os_error(FileNotFoundError(errno.ENOENT, "x"), "/proc/pressure/memory")
        assert isinstance(err, NotFound)
        assert not isinstance(err, ProcessGone)
        assert "/proc/pressure/memory" in str(err)

    def test_other_errors_are_generic(self) -> None:
        err = translate_os_error(OSError(errno.EIO, "Input/output error"), "/proc/1/stat", 1)
        assert type(err) is OomlensError
        assert "Input/output error" in str(err)


# --- readers ---------------------------------------------------------------------------


def test_read_bytes_large_file(tmp_path: Path) -> None:
    # More than the first 16 KiB read: the rest is read in a loop.
    data = bytes(range(256)) * 300
    (tmp_path / "big").write_bytes(data)
    assert read_bytes(str(tmp_path / "big")) == data


@pytest.mark.parametrize("size", [0, 1, 16383, 16384, 16385])
def test_read_bytes_sizes(tmp_path: Path, size: int) -> None:
    (tmp_path / "f").write_bytes(b"x" * size)
    assert read_bytes(str(tmp_path / "f")) == b"x" * size


def test_read_text_replaces_bad_utf8(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"ok\xff")
    assert read_text(str(tmp_path / "f")) == "ok\ufffd"


def test_read_bytes_missing_raises_file_not_found(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        read_bytes(str(tmp_path / "nope"))


def test_pids_lists_only_numeric_entries(tmp_path: Path) -> None:
    for name in ("1", "42", "self", "thread-self", "meminfo", "sys", "1000000"):
        (tmp_path / name).mkdir()
    assert sorted(pids(str(tmp_path))) == [1, 42, 1_000_000]
