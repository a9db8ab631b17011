"""system/cgroupevents.py on fake cgroupfs trees in tmp_path (no root, no OOM).

v2: the test plays the kernel by rewriting `memory.events` in place, as kernfs does
(same inode, so the inotify watch on it sees IN_MODIFY). v1: the test plays the
kernel by reading the `<eventfd> <control fd>` line that registration wrote to
`cgroup.event_control` and signalling that eventfd, as eventfd_signal() would.
"""

from __future__ import annotations

import os
import select
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from fakecgroup import make_v1_memcg, make_v2_memcg, make_v2_root

from oomlens.errors import NotFound, Unsupported
from oomlens.system import cgroupevents
from oomlens.system.cgroupevents import MemcgOomEvents, oom_kill_count
from oomlens.system.memcg import MemcgMount

WAIT_S = 5.0  # generous: a wake-up on a loaded CI machine
QUIET_S = 0.1  # long enough to see that nothing comes


def readable(events: MemcgOomEvents, timeout: float = WAIT_S) -> bool:
    poller = select.poll()
    poller.register(events.fileno(), select.POLLIN)
    return bool(poller.poll(int(timeout * 1000)))


def set_v2_events(directory: Path, oom_kill: int, oom: int | None = None) -> None:
    """Rewrite memory.events in place (same inode), as the kernel's counter moves."""
    oom = oom_kill if oom is None else oom
    (directory / "memory.events").write_text(
        f"low 0\nhigh 0\nmax {oom * 3}\noom {oom}\noom_kill {oom_kill}\noom_group_kill 0\n")


# --- v2 ----------------------------------------------------------------------------------


@pytest.fixture
def v2_root(tmp_path: Path) -> Path:
    root = make_v2_root(tmp_path / "cgroup")
    for path in ("/a", "/b", "/a/c"):
        make_v2_memcg(root, path, max_bytes=64 << 20)
    return root


@pytest.fixture
def v2(v2_root: Path) -> Iterator[MemcgOomEvents]:
    with MemcgOomEvents(MemcgMount(2, str(v2_root))) as events:
        yield events


class TestV2:
    def test_add_returns_the_count_now_and_paths_lists_each_once(
        self, v2: MemcgOomEvents, v2_root: Path
    ) -> None:
        set_v2_events(v2_root / "a", 3)
        assert v2.add("/a") == 3
        assert v2.add("/b") == 0
        assert v2.add("/a") == 3
        assert v2.paths() == ["/a", "/b"]
        assert not readable(v2, 0)

    def test_a_higher_oom_kill_wakes_the_fd_and_is_reported_once(
        self, v2: MemcgOomEvents, v2_root: Path
    ) -> None:
        v2.add("/a")
        set_v2_events(v2_root / "a", 1)
        assert readable(v2)
        assert v2.changed() == [("/a", 0, 1)]
        assert v2.gone == []
        assert not readable(v2, 0), "changed() drains the notifications"
        assert v2.changed() == []

    def test_a_rewrite_with_the_same_counter_reports_nothing(
        self, v2: MemcgOomEvents, v2_root: Path
    ) -> None:
        v2.add("/a")
        set_v2_events(v2_root / "a", 0, oom=2)  # an OOM without a kill
        assert readable(v2)
        assert v2.changed() == []
        assert v2.gone == []

    def test_only_the_cgroup_whose_counter_moved_is_reported(
        self, v2: MemcgOomEvents, v2_root: Path
    ) -> None:
        for path in ("/a", "/b", "/a/c"):
            v2.add(path)
        set_v2_events(v2_root / "b", 1)
        assert readable(v2)
        assert v2.changed() == [("/b", 0, 1)]

    def test_several_moves_before_one_call_give_one_tuple_each_in_path_order(
        self, v2: MemcgOomEvents, v2_root: Path
    ) -> None:
        for path in ("/a", "/b"):
            v2.add(path)
        set_v2_events(v2_root / "b", 1)
        set_v2_events(v2_root / "a", 1)
        set_v2_events(v2_root / "a", 2)
        assert readable(v2)
        assert v2.changed() == [("/a", 0, 2), ("/b", 0, 1)]
        set_v2_events(v2_root / "a", 3)
        assert readable(v2)
        assert v2.changed() == [("/a", 2, 3)]

    def test_a_deleted_cgroup_lands_in_gone_once(
        self, v2: MemcgOomEvents, v2_root: Path
    ) -> None:
        v2.add("/a/c")
        v2.add("/b")
        shutil.rmtree(v2_root / "a" / "c")
        assert readable(v2)
        assert v2.changed() == []
        assert v2.gone == ["/a/c"]
        assert v2.paths() == ["/b"]
        assert v2.changed() == [] and v2.gone == [], "gone is reset by each call"
        set_v2_events(v2_root / "b", 1)
        assert readable(v2)
        assert v2.changed() == [("/b", 0, 1)]

    def test_a_removal_seen_only_by_the_parent_directory_is_gone(
        self, v2: MemcgOomEvents, v2_root: Path, tmp_path: Path
    ) -> None:
        # kernfs says nothing to a watch on a removed cgroup's files; only the parent
        # directory gets IN_DELETE. A second link keeps the watched inode alive, so
        # on tmpfs too the unlink sends no IN_DELETE_SELF/IN_IGNORED to its watch.
        v2.add("/a/c")
        os.link(v2_root / "a" / "c" / "memory.events", tmp_path / "kept")
        shutil.rmtree(v2_root / "a" / "c")
        assert readable(v2)
        assert v2.changed() == []
        assert v2.gone == ["/a/c"]

    def test_a_cgroup_made_anew_under_the_same_name_is_gone(
        self, v2: MemcgOomEvents, v2_root: Path, tmp_path: Path
    ) -> None:
        # kernfs never hands out an inode number twice (it is the node's 64-bit id);
        # ext4 may at once, so a second link keeps the old number taken.
        v2.add("/b")
        os.link(v2_root / "b" / "memory.events", tmp_path / "kept")
        shutil.rmtree(v2_root / "b")
        make_v2_memcg(v2_root, "/b", oom_kill=0)
        assert readable(v2)
        assert v2.changed() == []
        assert v2.gone == ["/b"]
        assert v2.add("/b") == 0, "the new one can be watched again"

    def test_remove_stops_reporting_and_keeps_the_siblings_parent_watch(
        self, v2: MemcgOomEvents, v2_root: Path
    ) -> None:
        v2.add("/a")
        v2.add("/b")  # same parent directory as /a
        v2.remove("/a")
        v2.remove("/a")  # not watched any more: nothing to do
        assert v2.paths() == ["/b"]
        set_v2_events(v2_root / "a", 1)
        readable(v2, QUIET_S)  # IN_IGNORED of the removed watch may be queued
        assert v2.changed() == [] and v2.gone == []
        shutil.rmtree(v2_root / "b")
        assert readable(v2)
        assert v2.changed() == [] and v2.gone == ["/b"]

    def test_a_missing_cgroup_is_not_found_with_its_path(self, v2: MemcgOomEvents) -> None:
        with pytest.raises(NotFound, match="/nope"):
            v2.add("/nope")
        assert v2.paths() == []

    def test_the_v2_root_has_no_counter(self, v2: MemcgOomEvents, v2_root: Path) -> None:
        with pytest.raises(Unsupported, match=r"memory\.events"):
            v2.add("/")
        assert oom_kill_count(MemcgMount(2, str(v2_root)), "/") is None

    def test_a_kernel_without_oom_kill_is_unsupported_and_leaves_no_watch(
        self, v2: MemcgOomEvents, v2_root: Path
    ) -> None:
        (v2_root / "a" / "memory.events").write_text("low 0\nhigh 0\nmax 0\noom 0\n")  # < 4.13
        with pytest.raises(Unsupported, match="oom_kill"):
            v2.add("/a")
        assert v2.paths() == []
        assert oom_kill_count(MemcgMount(2, str(v2_root)), "/a") is None

    def test_close_closes_the_fd(self, v2_root: Path) -> None:
        events = MemcgOomEvents(MemcgMount(2, str(v2_root)))
        events.add("/a")
        fd = events.fileno()
        with events:
            pass
        events.close()
        with pytest.raises(OSError):
            os.fstat(fd)
        assert events.paths() == []


def test_oom_kill_count_reads_the_counter_and_names_a_missing_cgroup(v2_root: Path) -> None:
    mount = MemcgMount(2, str(v2_root))
    set_v2_events(v2_root / "a" / "c", 7)
    assert oom_kill_count(mount, "/a/c") == 7
    with pytest.raises(NotFound, match="/a/nope"):
        oom_kill_count(mount, "/a/nope")


# --- v1 ----------------------------------------------------------------------------------


def registered_eventfd(directory: Path) -> int:
    """The eventfd that registration wrote to cgroup.event_control (`<eventfd> <fd>`)."""
    return int((directory / "cgroup.event_control").read_text().split()[0])


def signal_v1(directory: Path) -> None:
    """What the kernel's eventfd_signal() does to the eventfd registered here."""
    os.eventfd_write(registered_eventfd(directory), 1)


def set_v1_oom_kill(directory: Path, oom_kill: int, under_oom: int = 0) -> None:
    (directory / "memory.oom_control").write_text(
        f"oom_kill_disable 0\nunder_oom {under_oom}\noom_kill {oom_kill}\n")


@pytest.fixture
def v1_root(tmp_path: Path) -> Path:
    root = tmp_path / "memory"
    for path in ("/x", "/y"):
        directory = make_v1_memcg(root, path, limit_bytes=64 << 20)
        (directory / "cgroup.event_control").write_text("")
    return root


@pytest.fixture
def v1(v1_root: Path) -> Iterator[MemcgOomEvents]:
    with MemcgOomEvents(MemcgMount(1, str(v1_root))) as events:
        yield events


class TestV1:
    def test_add_registers_an_eventfd_for_memory_oom_control(
        self, v1: MemcgOomEvents, v1_root: Path
    ) -> None:
        set_v1_oom_kill(v1_root / "x", 2)
        assert v1.add("/x") == 2
        assert v1.add("/x") == 2
        eventfd = registered_eventfd(v1_root / "x")
        os.fstat(eventfd)  # open: ours, registered with the kernel
        assert v1.paths() == ["/x"]
        assert not readable(v1, 0)
        v1.remove("/x")
        with pytest.raises(OSError):  # closed: the kernel unregisters it (EPOLLHUP)
            os.fstat(eventfd)
        assert v1.paths() == []

    def test_a_count_that_moves_after_the_signal_is_caught_by_a_reread(
        self, v1: MemcgOomEvents, v1_root: Path
    ) -> None:
        # The kernel signals at the OOM and counts the kill a little later.
        v1.add("/x")
        v1.add("/y")
        set_v1_oom_kill(v1_root / "x", 0, under_oom=1)
        signal_v1(v1_root / "x")
        assert readable(v1)
        assert v1.changed() == []
        set_v1_oom_kill(v1_root / "x", 1)
        assert readable(v1), "the re-read timer wakes the same fd"
        assert v1.changed() == [("/x", 0, 1)]

    def test_an_oom_without_a_kill_reports_nothing_and_the_rereads_end(
        self, v1: MemcgOomEvents, v1_root: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setattr(cgroupevents, "V1_RECHECK_S", (0.001, 0.002))
        v1.add("/x")
        signal_v1(v1_root / "x")
        wakeups = 0
        while readable(v1, QUIET_S):
            wakeups += 1
            assert v1.changed() == [] and v1.gone == []
            assert wakeups < 10, "the re-reads never stopped"
        assert wakeups == 3, "the signal, then one wake-up per re-read"

    def test_a_removed_cgroup_lands_in_gone(self, v1: MemcgOomEvents, v1_root: Path) -> None:
        v1.add("/x")
        v1.add("/y")
        eventfd = registered_eventfd(v1_root / "x")
        shutil.rmtree(v1_root / "x")
        os.eventfd_write(eventfd, 1)  # memcg_event_remove(): the last signal
        assert readable(v1)
        assert v1.changed() == []
        assert v1.gone == ["/x"]
        assert v1.paths() == ["/y"]
        with pytest.raises(OSError):
            os.fstat(eventfd)

    def test_missing_cgroup_and_missing_event_control(
        self, v1: MemcgOomEvents, v1_root: Path
    ) -> None:
        with pytest.raises(NotFound, match="/nope"):
            v1.add("/nope")
        (v1_root / "y" / "cgroup.event_control").unlink()
        with pytest.raises(NotFound, match="/y"):
            v1.add("/y")
        assert v1.paths() == []
