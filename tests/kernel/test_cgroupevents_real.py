"""system/cgroupevents.py against the kernel: real OOM kills in sandbox memcgs wake
`MemcgOomEvents.fileno()` and move the counts `changed()` reports, checked against
each sandbox's own oom_kill counter and against who died of SIGKILL. No kernel log
is read: this is the path `oomlens watch` takes where /dev/kmsg is unreadable.

Every test runs once per cgroup version (the `memcg_mount` fixture below overrides
the session one, so the `sandbox` fixture builds on it): a version the machine does
not offer with a memory controller skips with the reason. Here that is v2: cgroup2
is mounted without the memory controller, which v1 holds.

A hog is the only process in its sandbox, so each OOM kills exactly once (after
the one victim, nothing in the memcg is eligible).
"""

from __future__ import annotations

import re
import select
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from oomlens.errors import NotFound
from oomlens.system.cgroupevents import MemcgOomEvents, oom_kill_count
from oomlens.system.memcg import MemcgMount, parse_mountinfo
from oomlens.system.meminfo import parse_flat
from oomlens.system.sandbox import MIB, SandboxMemcg

pytestmark = pytest.mark.kernel
SandboxFactory = Callable[..., SandboxMemcg]  # the `sandbox` fixture (tests/conftest.py)

LIMIT = 32 * MIB
HOG_MIB = 4
CHILD_LIMIT = 512 * MIB  # looser than the parent's: the parent's limit decides
CHILD_PREFIX = "oomlens-test-child-"
WAIT_S = 10.0  # for a wake-up that must come
QUIET_S = 0.5  # to see that nothing more comes

Change = tuple[str, int, int]


@pytest.fixture(params=[1, 2], ids=["v1", "v2"])
def memcg_mount(request: pytest.FixtureRequest) -> MemcgMount:
    """The memory cgroup hierarchy of version `request.param`, or a skip saying why
    this machine has none."""
    v1, v2 = parse_mountinfo(Path("/proc/self/mountinfo").read_text())
    if request.param == 1:
        if v1 is None:
            pytest.skip("no cgroup v1 memory hierarchy is mounted here")
        return v1
    if v2 is None:
        pytest.skip("no cgroup2 hierarchy is mounted here")
    if "memory" not in (Path(v2.root) / "cgroup.controllers").read_text().split():
        pytest.skip(f"cgroup2 at {v2.root} has no memory controller here "
                    "(the kernel binds it to one hierarchy: cgroup v1 on this machine)")
    return v2


def follow(events: MemcgOomEvents, timeout: float,
           want: int | None = None) -> tuple[list[Change], list[str]]:
    """What a watcher loop does: poll the fd and call changed() at each wake-up.
    Returns the changes and the gone cgroups seen until there are `want` of them
    together, or until `timeout` (all of it when `want` is None)."""
    poller = select.poll()
    poller.register(events.fileno(), select.POLLIN)
    changes: list[Change] = []
    gone: list[str] = []
    deadline = time.monotonic() + timeout
    while (remaining := deadline - time.monotonic()) > 0:
        if poller.poll(int(remaining * 1000) + 1):
            changes.extend(events.changed())
            gone.extend(events.gone)
            if want is not None and len(changes) + len(gone) >= want:
                break
    return changes, gone


def kill_one_hog(box: SandboxMemcg) -> None:
    """Start a hog and let it grow into the limit; return at once (the test's watcher
    is what notices the kill)."""
    box.start_hog(HOG_MIB).send("grow")


def assert_killed(box: SandboxMemcg) -> None:
    for hog in box.hogs:
        assert hog.process.wait(timeout=box.timeout) == -signal.SIGKILL


def test_each_kill_wakes_the_fd_and_moves_the_count_by_one(
    sandbox: SandboxFactory, memcg_mount: MemcgMount
) -> None:
    box = sandbox(LIMIT)
    with MemcgOomEvents(memcg_mount) as events:
        assert events.add(box.path) == 0
        kill_one_hog(box)
        assert follow(events, WAIT_S, want=1) == ([(box.path, 0, 1)], [])
        assert_killed(box)
        assert box.oom_kill_count() == oom_kill_count(memcg_mount, box.path) == 1
        assert follow(events, QUIET_S) == ([], []), "one kill, one report"

        kill_one_hog(box)
        assert follow(events, WAIT_S, want=1) == ([(box.path, 1, 2)], [])
        assert_killed(box)
        assert box.oom_kill_count() == oom_kill_count(memcg_mount, box.path) == 2


def test_a_kill_in_one_of_two_watched_cgroups_reports_only_that_one(
    sandbox: SandboxFactory, memcg_mount: MemcgMount
) -> None:
    quiet, killing = sandbox(LIMIT), sandbox(LIMIT)
    quiet.start_hog(HOG_MIB)
    with MemcgOomEvents(memcg_mount) as events:
        assert [events.add(b.path) for b in (quiet, killing)] == [0, 0]
        assert events.paths() == sorted([quiet.path, killing.path])
        kill_one_hog(killing)
        assert follow(events, WAIT_S, want=1) == ([(killing.path, 0, 1)], [])
        assert follow(events, QUIET_S) == ([], [])
        assert_killed(killing)
        assert quiet.oom_kill_count() == 0 and quiet.hogs[0].process.poll() is None


def test_a_removed_cgroup_lands_in_gone_without_an_exception(
    sandbox: SandboxFactory, memcg_mount: MemcgMount
) -> None:
    kept, removed = sandbox(LIMIT), sandbox(LIMIT)
    with MemcgOomEvents(memcg_mount) as events:
        events.add(kept.path)
        events.add(removed.path)
        removed.close()
        assert follow(events, WAIT_S, want=1) == ([], [removed.path])
        assert events.paths() == [kept.path]
        kill_one_hog(kept)  # the others still work
        assert follow(events, WAIT_S, want=1) == ([(kept.path, 0, 1)], [])


def test_a_missing_cgroup_is_not_found_with_its_path(
    sandbox: SandboxFactory, memcg_mount: MemcgMount
) -> None:
    missing = sandbox(LIMIT).path + "-missing"
    with MemcgOomEvents(memcg_mount) as events:
        with pytest.raises(NotFound, match=re.escape(missing)):
            events.add(missing)
        assert events.paths() == []
    with pytest.raises(NotFound, match=re.escape(missing)):
        oom_kill_count(memcg_mount, missing)


def test_a_kill_in_a_child_moves_the_parents_count_on_v2_only(
    sandbox: SandboxFactory, memcg_mount: MemcgMount
) -> None:
    """The parent's limit decides, the victim is in the child. v2's memory.events
    counts the subtree (memcg_memory_event() walks up); v1 counts the victim's memcg
    only, though it signals the parent (the OOMing memcg) and the child alike."""
    parent = sandbox(LIMIT)
    child = sandbox(CHILD_LIMIT, prefix=CHILD_PREFIX, parent=parent.path)
    with MemcgOomEvents(memcg_mount) as events:
        events.add(parent.path)
        events.add(child.path)
        kill_one_hog(child)
        expected = [(child.path, 0, 1)]
        if memcg_mount.version == 2:
            expected.insert(0, (parent.path, 0, 1))
        changes, gone = follow(events, WAIT_S, want=len(expected))
        changes += follow(events, QUIET_S)[0]
        assert (sorted(changes), gone) == (expected, [])
        assert_killed(child)
        assert parent.oom_kill_count() == (1 if memcg_mount.version == 2 else 0)


def test_an_oom_without_a_kill_wakes_the_fd_but_reports_nothing(
    sandbox: SandboxFactory, memcg_mount: MemcgMount
) -> None:
    """v1 oom_kill_disable: the hog waits in the kernel (mm/memcontrol-v1.c:
    mem_cgroup_oom_synchronize(), TASK_KILLABLE) and the eventfd is signalled, but
    nothing is killed. The test SIGKILLs the hog and clears the setting itself."""
    if memcg_mount.version != 1:
        pytest.skip("oom_kill_disable is a cgroup v1 setting: v2 cannot turn the OOM "
                    "killer off for a cgroup")
    box = sandbox(LIMIT)
    control = Path(box.directory) / "memory.oom_control"
    control.write_text("1")
    try:
        with MemcgOomEvents(memcg_mount) as events:
            events.add(box.path)
            poller = select.poll()
            poller.register(events.fileno(), select.POLLIN)
            kill_one_hog(box)
            assert poller.poll(int(WAIT_S * 1000)), "the OOM did not wake the fd"
            deadline = time.monotonic() + WAIT_S
            while parse_flat(control.read_text()).get("under_oom") != 1:
                assert time.monotonic() < deadline, control.read_text()
                time.sleep(0.01)
            assert follow(events, QUIET_S) == ([], [])
            assert box.oom_kill_count() == 0
            assert box.hogs[0].process.poll() is None, "the hog waits, alive"
    finally:
        try:
            box.kill_all()
        finally:
            control.write_text("0")
