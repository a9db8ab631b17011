"""system/memcg.py: finding the memory controller in mountinfo, reading v1 and v2
cgroups from fake cgroupfs trees (tests/fixtures/fakecgroup.py), the OOM domains they
form, and which process is where."""

from __future__ import annotations

from pathlib import Path

import pytest
from fakecgroup import V1_UNLIMITED, make_v1_memcg, make_v2_memcg, make_v2_root
from fakeproc import mountinfo_text, write_fake_proc

from oomlens.errors import NotFound
from oomlens.kernel.domain import DomainKind, page_counter_max
from oomlens.system.memcg import (
    MemcgMount,
    find_memcg_mount,
    limited_memcgs,
    parse_mountinfo,
    pid_to_cgroup,
    read_memcg,
    systemd_unit,
    walk,
)

PAGE = 4096
MOUNTINFO_DIR = Path(__file__).resolve().parents[2] / "fixtures" / "mountinfo"
COUNTER_MAX = page_counter_max(PAGE)
MIB = 1 << 20

# --- mountinfo -------------------------------------------------------------------------

# Inside a Docker container on a v1 host (no cgroup namespace): the memory hierarchy's
# root is the container's cgroup, mounted at the usual place.
MOUNTINFO_V1_CONTAINER = (MOUNTINFO_DIR / "v1_container.txt").read_text()

# This project's machines: hybrid, v1 memory and a cgroup2 mount without memory.
MOUNTINFO_HYBRID = (MOUNTINFO_DIR / "hybrid.txt").read_text()

MOUNTINFO_V2 = (MOUNTINFO_DIR / "v2.txt").read_text()


class TestParseMountinfo:
    def test_v1_with_non_root_prefix(self) -> None:
        v1, v2 = parse_mountinfo(MOUNTINFO_V1_CONTAINER)
        assert v1 == MemcgMount(1, "/sys/fs/cgroup/memory", "/docker/0123abcd")
        assert v2 is None

    def test_hybrid(self) -> None:
        v1, v2 = parse_mountinfo(MOUNTINFO_HYBRID)
        assert v1 == MemcgMount(1, "/sys/fs/cgroup/memory", "/")
        assert v2 == MemcgMount(2, "/sys/fs/cgroup/unified", "/")

    def test_pure_v2(self) -> None:
        # "memory_recursiveprot" is a cgroup2 option, not the v1 controller.
        assert parse_mountinfo(MOUNTINFO_V2) == (None, MemcgMount(2, "/sys/fs/cgroup", "/"))

    def test_escaped_spaces_and_backslashes(self) -> None:
        text = (
            "35 31 0:32 /my\\040group /mnt/cg\\040v1\\134x rw - cgroup cgroup rw,memory\n"
            "41 31 0:38 / /mnt/unified\\011tab rw - cgroup2 none rw\n"
        )
        v1, v2 = parse_mountinfo(text)
        assert v1 == MemcgMount(1, "/mnt/cg v1\\x", "/my group")
        assert v2 is not None and v2.root == "/mnt/unified\ttab"

    def test_memory_must_be_an_option_of_a_cgroup_mount(self) -> None:
        text = (
            "40 31 0:37 / /sys/fs/cgroup/systemd rw - cgroup cgroup rw,name=systemd\n"
            "50 31 0:40 / /memory rw - tmpfs memory rw,memory\n"
            "51 31 0:41 / /sys/fs/cgroup/mem rw - cgroup cgroup rw,memoryx\n"
        )
        assert parse_mountinfo(text) == (None, None)

    def test_combined_controllers(self) -> None:
        text = "35 31 0:32 / /sys/fs/cgroup/cpu,memory rw - cgroup cgroup rw,cpu,memory\n"
        v1, _ = parse_mountinfo(text)
        assert v1 == MemcgMount(1, "/sys/fs/cgroup/cpu,memory", "/")

    def test_first_mount_wins(self) -> None:
        text = (
            "35 31 0:32 / /a rw - cgroup cgroup rw,memory\n"
            "36 31 0:32 / /b rw - cgroup cgroup rw,memory\n"
        )
        v1, _ = parse_mountinfo(text)
        assert v1 is not None and v1.root == "/a"

    def test_garbage_lines_are_skipped(self) -> None:
        assert parse_mountinfo("\nnonsense\n1 2 3 - x\n") == (None, None)


class TestFindMount:
    def test_v1_preferred(self, tmp_path: Path) -> None:
        v2_root = make_v2_root(tmp_path / "unified", controllers="cpu memory")
        text = mountinfo_text(memory_v1=(tmp_path / "memory", "/"), cgroup2=v2_root)
        proc = write_fake_proc(tmp_path / "proc", mountinfo=text)
        assert find_memcg_mount(str(proc)) == MemcgMount(1, str(tmp_path / "memory"), "/")
        assert parse_mountinfo(text)[1] == MemcgMount(2, str(v2_root), "/")

    def test_v2_with_memory_controller(self, tmp_path: Path) -> None:
        v2_root = make_v2_root(tmp_path / "cgroup")
        proc = write_fake_proc(tmp_path / "proc", mountinfo=mountinfo_text(cgroup2=v2_root))
        assert find_memcg_mount(str(proc)) == MemcgMount(2, str(v2_root), "/")

    def test_v2_sub_tree_mount_keeps_its_prefix(self, tmp_path: Path) -> None:
        v2_root = make_v2_root(tmp_path / "cgroup")
        mountinfo = (
            f"41 31 0:38 /system.slice/docker-abc.scope {v2_root} rw,nosuid - "
            "cgroup2 cgroup2 rw\n"
        )
        proc = write_fake_proc(tmp_path / "proc", mountinfo=mountinfo)
        mount = find_memcg_mount(str(proc))
        assert mount == MemcgMount(2, str(v2_root), "/system.slice/docker-abc.scope")

    def test_v2_without_memory_controller(self, tmp_path: Path) -> None:
        v2_root = make_v2_root(tmp_path / "cgroup", controllers="cpu io pids")
        proc = write_fake_proc(tmp_path / "proc", mountinfo=mountinfo_text(cgroup2=v2_root))
        assert find_memcg_mount(str(proc)) is None

    def test_v2_unreadable_controllers(self, tmp_path: Path) -> None:
        proc = write_fake_proc(
            tmp_path / "proc", mountinfo=mountinfo_text(cgroup2=tmp_path / "missing")
        )
        assert find_memcg_mount(str(proc)) is None

    def test_none(self, tmp_path: Path) -> None:
        proc = write_fake_proc(tmp_path / "proc")
        assert find_memcg_mount(str(proc)) is None


class TestMountPaths:
    def test_root_prefix(self) -> None:
        mount = MemcgMount(1, "/sys/fs/cgroup/memory", "/")
        assert mount.fs_path("/a/b") == "/sys/fs/cgroup/memory/a/b"
        assert mount.fs_path("/") == "/sys/fs/cgroup/memory/"
        assert mount.cgroup_path("/sys/fs/cgroup/memory") == "/"
        assert mount.cgroup_path("/sys/fs/cgroup/memory/a/b") == "/a/b"

    def test_non_root_prefix(self) -> None:
        mount = MemcgMount(1, "/sys/fs/cgroup/memory", "/docker/0123abcd")
        assert mount.fs_path("/docker/0123abcd/x") == "/sys/fs/cgroup/memory/x"
        assert mount.fs_path("/docker/0123abcd") == "/sys/fs/cgroup/memory/"
        assert mount.cgroup_path("/sys/fs/cgroup/memory") == "/docker/0123abcd"
        assert mount.cgroup_path("/sys/fs/cgroup/memory/x/y") == "/docker/0123abcd/x/y"

    @pytest.mark.parametrize("path", ["/", "/a", "/a/b/c"])
    def test_round_trip(self, path: str) -> None:
        mount = MemcgMount(2, "/sys/fs/cgroup", "/")
        assert mount.cgroup_path(mount.fs_path(path)) == path


# --- read_memcg ------------------------------------------------------------------------


class TestReadV1:
    def test_limited_without_swap_limit(self, tmp_path: Path) -> None:
        make_v1_memcg(
            tmp_path, "/box", limit_bytes=256 * MIB, usage_bytes=100 * MIB,
            memsw_usage_bytes=110 * MIB, swappiness=30, oom_kill=2,
        )
        memcg = read_memcg(MemcgMount(1, str(tmp_path)), "/box", PAGE, 60)
        assert memcg.path == "/box"
        assert memcg.version == 1
        assert memcg.limit_bytes == 256 * MIB
        assert memcg.swap_limit_bytes is None
        assert memcg.usage_bytes == 100 * MIB
        assert memcg.swap_usage_bytes == 10 * MIB
        assert memcg.swappiness == 30  # the cgroup's own on v1, not vm.swappiness
        assert memcg.oom_kill == 2
        assert memcg.oom_kill_disable is False
        assert memcg.raw_limit_pages == 65_536
        assert memcg.raw_swap_limit_pages == COUNTER_MAX
        assert memcg.totalpages(0) == 65_536
        # memsw unlimited: all of the machine's swap counts.
        assert memcg.totalpages(5000) == 65_536 + 5000

    def test_memsw_limit(self, tmp_path: Path) -> None:
        make_v1_memcg(tmp_path, "/box", limit_bytes=256 * MIB, memsw_limit_bytes=300 * MIB,
                      oom_kill_disable=1)
        memcg = read_memcg(MemcgMount(1, str(tmp_path)), "/box", PAGE, 60)
        assert memcg.swap_limit_bytes == 44 * MIB
        assert memcg.oom_kill_disable is True
        assert memcg.raw_swap_limit_pages == 76_800
        assert memcg.totalpages(1_000_000) == 65_536 + 11_264
        assert memcg.totalpages(100) == 65_536 + 100

    def test_swappiness_0(self, tmp_path: Path) -> None:
        make_v1_memcg(tmp_path, "/box", limit_bytes=256 * MIB, swappiness=0)
        memcg = read_memcg(MemcgMount(1, str(tmp_path)), "/box", PAGE, 60)
        assert memcg.totalpages(5000) == 65_536

    def test_domain(self, tmp_path: Path) -> None:
        make_v1_memcg(tmp_path, "/a/b", limit_bytes=512 * MIB)
        domain = read_memcg(MemcgMount(1, str(tmp_path)), "/a/b", PAGE, 60).domain(0)
        assert domain.kind is DomainKind.MEMCG
        assert (domain.path, domain.totalpages) == ("/a/b", 131_072)

    def test_unlimited(self, tmp_path: Path) -> None:
        make_v1_memcg(tmp_path, "/free")
        memcg = read_memcg(MemcgMount(1, str(tmp_path)), "/free", PAGE, 60)
        assert memcg.limit_bytes is None
        assert memcg.raw_limit_pages == COUNTER_MAX

    def test_without_swap_accounting(self, tmp_path: Path) -> None:
        make_v1_memcg(tmp_path, "/box", limit_bytes=64 * MIB, memsw_limit_bytes=None,
                      swappiness=None)
        memcg = read_memcg(MemcgMount(1, str(tmp_path)), "/box", PAGE, 10)
        assert memcg.swap_usage_bytes is None
        assert memcg.swap_limit_bytes is None
        assert memcg.swappiness == 60  # missing file: the v1 default

    def test_limit_not_page_aligned_rounds_down(self, tmp_path: Path) -> None:
        make_v1_memcg(tmp_path, "/box", limit_bytes=256 * MIB + 100)
        memcg = read_memcg(MemcgMount(1, str(tmp_path)), "/box", PAGE, 60)
        assert memcg.raw_limit_pages == 65_536

    def test_with_prefix(self, tmp_path: Path) -> None:
        make_v1_memcg(tmp_path, "/inner", limit_bytes=128 * MIB)
        mount = MemcgMount(1, str(tmp_path), "/docker/0123abcd")
        memcg = read_memcg(mount, "/docker/0123abcd/inner", PAGE, 60)
        assert memcg.path == "/docker/0123abcd/inner"
        assert memcg.limit_bytes == 128 * MIB

    def test_missing_is_not_found(self, tmp_path: Path) -> None:
        with pytest.raises(NotFound, match="/nope"):
            read_memcg(MemcgMount(1, str(tmp_path)), "/nope", PAGE, 60)


class TestReadV2:
    def test_limits(self, tmp_path: Path) -> None:
        make_v2_memcg(tmp_path, "/app.slice/web.service", max_bytes=256 * MIB,
                      swap_max_bytes=16 * MIB, current_bytes=200 * MIB,
                      swap_current_bytes=MIB, oom=4, oom_kill=3)
        memcg = read_memcg(MemcgMount(2, str(tmp_path)), "/app.slice/web.service", PAGE, 60)
        assert memcg.version == 2
        assert memcg.limit_bytes == 256 * MIB
        assert memcg.swap_limit_bytes == 16 * MIB
        assert memcg.usage_bytes == 200 * MIB
        assert memcg.swap_usage_bytes == MIB
        assert memcg.oom_kill == 3  # memory.events oom_kill, not oom
        assert memcg.swappiness == 60  # vm.swappiness on v2
        assert memcg.raw_limit_pages == 65_536
        assert memcg.raw_swap_limit_pages == 4096
        assert memcg.totalpages(1_000_000) == 65_536 + 4096
        assert memcg.totalpages(1000) == 65_536 + 1000

    def test_max_is_unlimited(self, tmp_path: Path) -> None:
        make_v2_memcg(tmp_path, "/u")
        memcg = read_memcg(MemcgMount(2, str(tmp_path)), "/u", PAGE, 60)
        assert memcg.limit_bytes is None
        assert memcg.swap_limit_bytes is None
        assert memcg.raw_limit_pages == COUNTER_MAX
        assert memcg.raw_swap_limit_pages == COUNTER_MAX

    def test_swap_max_unlimited_adds_machine_swap(self, tmp_path: Path) -> None:
        make_v2_memcg(tmp_path, "/c", max_bytes=256 * MIB)
        memcg = read_memcg(MemcgMount(2, str(tmp_path)), "/c", PAGE, 60)
        assert memcg.totalpages(2000) == 65_536 + 2000

    def test_vm_swappiness_0(self, tmp_path: Path) -> None:
        make_v2_memcg(tmp_path, "/c", max_bytes=256 * MIB)
        memcg = read_memcg(MemcgMount(2, str(tmp_path)), "/c", PAGE, 0)
        assert memcg.swappiness == 0
        assert memcg.totalpages(2000) == 65_536

    def test_swap_max_0(self, tmp_path: Path) -> None:
        make_v2_memcg(tmp_path, "/c", max_bytes=256 * MIB, swap_max_bytes=0)
        memcg = read_memcg(MemcgMount(2, str(tmp_path)), "/c", PAGE, 60)
        assert memcg.swap_limit_bytes == 0
        assert memcg.totalpages(2000) == 65_536

    def test_without_events_file(self, tmp_path: Path) -> None:
        directory = make_v2_memcg(tmp_path, "/c", max_bytes=MIB)
        (directory / "memory.events").unlink()
        (directory / "memory.swap.current").unlink()
        memcg = read_memcg(MemcgMount(2, str(tmp_path)), "/c", PAGE, 60)
        assert memcg.oom_kill == 0
        assert memcg.swap_usage_bytes is None


# --- the hierarchy ---------------------------------------------------------------------


def v1_tree(root: Path) -> MemcgMount:
    make_v1_memcg(root, "/", procs=[1, 2])
    make_v1_memcg(root, "/a", limit_bytes=256 * MIB, procs=[100, 101])
    make_v1_memcg(root, "/a/b", procs=[200])
    make_v1_memcg(root, "/a/b/c", limit_bytes=64 * MIB, procs=[300])
    make_v1_memcg(root, "/ab", procs=[400])
    make_v1_memcg(root, "/d", memsw_limit_bytes=512 * MIB, procs=[])
    return MemcgMount(1, str(root))


def v2_tree(root: Path) -> MemcgMount:
    make_v2_root(root, procs=[1])
    make_v2_memcg(root, "/system.slice", procs=[])
    make_v2_memcg(root, "/system.slice/db.service", max_bytes=512 * MIB, procs=[10, 11])
    make_v2_memcg(root, "/user.slice", max_bytes=2048 * MIB, procs=[])
    make_v2_memcg(root, "/user.slice/user-1000.slice/session-3.scope", procs=[20])
    return MemcgMount(2, str(root))


def test_walk_parents_first(tmp_path: Path) -> None:
    paths = [path for path, _ in walk(v1_tree(tmp_path))]
    assert paths == ["/", "/a", "/a/b", "/a/b/c", "/ab", "/d"]


class TestLimitedMemcgs:
    def test_v1_only_limited_root_skipped(self, tmp_path: Path) -> None:
        found = limited_memcgs(v1_tree(tmp_path), PAGE, 60)
        # /d has only a memory+swap limit: a v1 memsw limit is an OOM domain too.
        assert [m.path for m in found] == ["/a", "/a/b/c", "/d"]
        assert [m.limit_bytes for m in found] == [256 * MIB, 64 * MIB, None]

    def test_v2_only_limited_root_skipped(self, tmp_path: Path) -> None:
        found = limited_memcgs(v2_tree(tmp_path), PAGE, 60)
        assert [m.path for m in found] == ["/system.slice/db.service", "/user.slice"]

    def test_v1_with_prefix_unlimited_mount_root(self, tmp_path: Path) -> None:
        make_v1_memcg(tmp_path, "/", procs=[1])
        make_v1_memcg(tmp_path, "/job", limit_bytes=256 * MIB, procs=[5])
        mount = MemcgMount(1, str(tmp_path), "/docker/0123abcd")
        found = limited_memcgs(mount, PAGE, 60)
        assert [m.path for m in found] == ["/docker/0123abcd/job"]

    def test_v1_with_prefix_limited_mount_root_is_a_domain(self, tmp_path: Path) -> None:
        # `docker run --memory 1g` on a v1 host: the memory mount's root *is* the
        # container's cgroup, and its limit is the OOM domain of everything inside.
        make_v1_memcg(tmp_path, "/", limit_bytes=1024 * MIB, procs=[1])
        make_v1_memcg(tmp_path, "/job", limit_bytes=256 * MIB, procs=[5])
        mount = MemcgMount(1, str(tmp_path), "/docker/0123abcd")
        found = limited_memcgs(mount, PAGE, 60)
        assert [m.path for m in found] == ["/docker/0123abcd", "/docker/0123abcd/job"]
        assert found[0].limit_bytes == 1024 * MIB

    def test_empty_hierarchy(self, tmp_path: Path) -> None:
        make_v2_root(tmp_path)
        assert limited_memcgs(MemcgMount(2, str(tmp_path)), PAGE, 60) == []

    def test_vanished_cgroup_is_skipped(self, tmp_path: Path) -> None:
        mount = v2_tree(tmp_path)
        # A cgroup directory without its files (rmdir racing the walk) is not an error.
        (tmp_path / "empty").mkdir()
        paths = [m.path for m in limited_memcgs(mount, PAGE, 60)]
        assert paths == ["/system.slice/db.service", "/user.slice"]


class TestPidToCgroup:
    def test_v1(self, tmp_path: Path) -> None:
        mount = v1_tree(tmp_path)
        assert pid_to_cgroup(mount.root) == {
            1: "/", 2: "/", 100: "/a", 101: "/a", 200: "/a/b", 300: "/a/b/c", 400: "/ab",
        }

    def test_v2(self, tmp_path: Path) -> None:
        mount = v2_tree(tmp_path)
        assert pid_to_cgroup(mount.root) == {
            1: "/", 10: "/system.slice/db.service", 11: "/system.slice/db.service",
            20: "/user.slice/user-1000.slice/session-3.scope",
        }

    def test_prefix(self, tmp_path: Path) -> None:
        make_v1_memcg(tmp_path, "/", procs=[1])
        make_v1_memcg(tmp_path, "/job", procs=[7])
        assert pid_to_cgroup(str(tmp_path), "/docker/0123abcd") == {
            1: "/docker/0123abcd", 7: "/docker/0123abcd/job",
        }

    def test_cgroup_without_procs_file(self, tmp_path: Path) -> None:
        make_v1_memcg(tmp_path, "/", procs=[1])
        (tmp_path / "halfmade").mkdir()
        assert pid_to_cgroup(str(tmp_path)) == {1: "/"}

    def test_missing_root(self, tmp_path: Path) -> None:
        assert pid_to_cgroup(str(tmp_path / "nothing")) == {}


def test_v1_unlimited_constant() -> None:
    assert V1_UNLIMITED == COUNTER_MAX * PAGE


@pytest.mark.parametrize(
    ("path", "unit"),
    [
        ("/system.slice/ssh.service", "ssh.service"),
        ("/user.slice/user-1000.slice/session-3.scope", "session-3.scope"),
        ("/user.slice/user-1000.slice/user@1000.service/app.slice/app-firefox.scope",
         "app-firefox.scope"),
        ("/system.slice/docker-abc.scope/inner.service", "inner.service"),
        ("/system.slice", None),
        ("/", None),
        ("", None),
        (None, None),
        ("/docker/0123abcd", None),
        ("/system.slice/foo.service.d", None),
    ],
)
def test_systemd_unit(path: str | None, unit: str | None) -> None:
    assert systemd_unit(path) == unit
