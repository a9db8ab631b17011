"""The cgroup v2 file layer of SandboxMemcg on a fake cgroupfs tree (no root, no
processes): create enables `+memory` in the parent when needed and writes
memory.max and memory.swap.max; cleanup removes the cgroup and undoes what it did."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest
from fakecgroup import make_v2_root

from oomlens.errors import NotFound, Unsupported
from oomlens.system.memcg import MemcgMount
from oomlens.system.sandbox import MAX_LIMIT_BYTES, MIB, SandboxError, SandboxMemcg

LIMIT = 64 * MIB
PREFIX = "oomlens-test-unit-"


class FakeKernelSandbox(SandboxMemcg):
    """Plays the kernel on a plain directory tree: mkdir creates the files a cgroup2
    child gets (memory.* only if the parent delegates memory), writes to
    cgroup.subtree_control apply `+x`/`-x`, rmdir refuses while processes remain."""

    missing: tuple[str, ...] = ()
    busy_rmdirs = 0

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.writes: list[tuple[str, str]] = []

    def _make_dir(self, directory: str) -> None:
        os.mkdir(directory)
        child, parent = Path(directory), Path(directory).parent
        delegated = (parent / "cgroup.subtree_control").read_text().split()
        files = {"cgroup.procs": "", "cgroup.controllers": " ".join(delegated),
                 "cgroup.subtree_control": ""}
        if "memory" in delegated:
            files |= {"memory.max": "max\n", "memory.swap.max": "max\n",
                      "memory.current": "0\n", "memory.events": "oom 0\noom_kill 0\n"}
        for name, text in files.items():
            if name not in self.missing:
                (child / name).write_text(text)

    def _remove_dir(self, directory: str) -> None:
        if self.busy_rmdirs:
            self.busy_rmdirs -= 1
            raise OSError(errno.EBUSY, "Device or resource busy")
        if (Path(directory) / "cgroup.procs").read_text().strip():
            raise OSError(errno.EBUSY, "Device or resource busy")
        for entry in Path(directory).iterdir():
            entry.unlink()
        os.rmdir(directory)

    def _write(self, path: str, value: str) -> None:
        self.writes.append((path, value))
        if os.path.basename(path) == "cgroup.subtree_control" and os.path.exists(path):
            enabled = Path(path).read_text().split()
            name = value[1:]
            if value.startswith("+") and name not in enabled:
                enabled.append(name)
            elif value.startswith("-") and name in enabled:
                enabled.remove(name)
            value = " ".join(enabled)
        super()._write(path, value)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    cgroup_root = make_v2_root(tmp_path / "cgroup", controllers="cpu io memory pids")
    (cgroup_root / "cgroup.subtree_control").write_text("")
    return cgroup_root


def mount(root: Path) -> MemcgMount:
    return MemcgMount(2, str(root), "/")


def subtree(directory: Path) -> list[str]:
    return (directory / "cgroup.subtree_control").read_text().split()


def test_create_enables_memory_in_parent_then_writes_limits(root: Path) -> None:
    box = FakeKernelSandbox(mount(root), PREFIX, LIMIT)
    box.create()
    directory = Path(box.directory)
    assert directory.parent == root and box.name.startswith(PREFIX)
    assert box.path == f"/{box.name}"
    assert (str(root / "cgroup.subtree_control"), "+memory") in box.writes
    assert subtree(root) == ["memory"]
    assert (directory / "memory.max").read_text() == str(LIMIT)
    assert (directory / "memory.swap.max").read_text() == "0"
    assert box.procs() == [] and box.oom_kill_count() == 0


def test_parent_that_already_delegates_memory_is_not_written(root: Path) -> None:
    (root / "cgroup.subtree_control").write_text("cpu memory\n")
    box = FakeKernelSandbox(mount(root), PREFIX, LIMIT)
    box.create()
    assert all(not path.endswith("cgroup.subtree_control") for path, _ in box.writes)
    box.close()
    assert subtree(root) == ["cpu", "memory"]


def test_parent_without_the_memory_controller_is_unsupported(tmp_path: Path) -> None:
    cgroup_root = make_v2_root(tmp_path / "cgroup", controllers="cpu pids")
    (cgroup_root / "cgroup.subtree_control").write_text("")
    box = FakeKernelSandbox(mount(cgroup_root), PREFIX, LIMIT)
    with pytest.raises(Unsupported, match="memory controller"):
        box.create()
    assert not os.path.exists(box.directory)


def test_close_removes_the_cgroup_and_undoes_the_delegation(root: Path) -> None:
    with FakeKernelSandbox(mount(root), PREFIX, LIMIT) as box:
        assert os.path.isdir(box.directory)
    assert not os.path.exists(box.directory)
    assert subtree(root) == []
    box.close()  # idempotent


def test_delegation_stays_while_another_child_uses_it(root: Path) -> None:
    (root / "someone-else").mkdir()
    with FakeKernelSandbox(mount(root), PREFIX, LIMIT) as box:
        pass
    assert not os.path.exists(box.directory)
    assert subtree(root) == ["memory"]


def test_nested_parent(root: Path) -> None:
    parent = root / "workload"
    parent.mkdir()
    (parent / "cgroup.controllers").write_text("memory pids\n")
    (parent / "cgroup.subtree_control").write_text("pids\n")
    with FakeKernelSandbox(mount(root), PREFIX, LIMIT, parent="/workload") as box:
        assert box.path == f"/workload/{box.name}"
        assert Path(box.directory).parent == parent
        assert subtree(parent) == ["pids", "memory"]
        assert (Path(box.directory) / "memory.max").read_text() == str(LIMIT)
    assert subtree(parent) == ["pids"]


def test_a_failed_limit_write_leaves_nothing_behind(root: Path) -> None:
    box = FakeKernelSandbox(mount(root), PREFIX, LIMIT)
    box.missing = ("memory.max",)
    with pytest.raises(NotFound):
        box.create()
    assert not os.path.exists(box.directory)
    assert subtree(root) == []


def test_without_swap_accounting_there_is_no_swap_max_to_write(root: Path) -> None:
    box = FakeKernelSandbox(mount(root), PREFIX, LIMIT)
    box.missing = ("memory.swap.max",)
    with box:
        assert (Path(box.directory) / "memory.max").read_text() == str(LIMIT)
        assert not (Path(box.directory) / "memory.swap.max").exists()


def test_oom_kill_counter_comes_from_memory_events(root: Path) -> None:
    with FakeKernelSandbox(mount(root), PREFIX, LIMIT) as box:
        (Path(box.directory) / "memory.events").write_text("oom 4\noom_kill 3\n")
        assert box.oom_kill_count() == 3


def test_remove_retries_while_the_kernel_says_busy(root: Path) -> None:
    box = FakeKernelSandbox(mount(root), PREFIX, LIMIT, timeout=5)
    box.create()
    box.busy_rmdirs = 3
    box.close()
    assert not os.path.exists(box.directory)


def test_remove_gives_up_after_its_deadline(root: Path) -> None:
    box = FakeKernelSandbox(mount(root), PREFIX, LIMIT, timeout=0.05)
    box.create()
    box.busy_rmdirs = 10**9
    with pytest.raises(SandboxError, match="cannot remove"):
        box.remove()
    box.busy_rmdirs = 0
    box.remove()
    assert not os.path.exists(box.directory)


@pytest.mark.parametrize("limit", [0, -1, MAX_LIMIT_BYTES + 1, 4 << 30])
def test_limits_above_512_mib_or_not_positive_are_refused(root: Path, limit: int) -> None:
    with pytest.raises(ValueError, match="sandbox limit"):
        SandboxMemcg(mount(root), PREFIX, limit)


@pytest.mark.parametrize("prefix", ["", "a/b", ".hidden"])
def test_bad_prefixes_are_refused(root: Path, prefix: str) -> None:
    with pytest.raises(ValueError, match="prefix"):
        SandboxMemcg(mount(root), prefix, LIMIT)


def test_names_are_unique_and_nothing_exists_before_create(root: Path) -> None:
    first = SandboxMemcg(mount(root), PREFIX, MAX_LIMIT_BYTES)
    second = SandboxMemcg(mount(root), PREFIX, MAX_LIMIT_BYTES)
    assert first.name != second.name
    assert not os.path.exists(first.directory)
    with pytest.raises(SandboxError, match="create"):
        first.spawn(["true"])
    first.close()  # nothing to clean up: no error


@pytest.mark.parametrize(("swap", "written"), [(0, "0"), (32 << 20, str(32 << 20)),
                                                (None, "max")])
def test_swap_allowance_is_written_to_swap_max(root: Path, swap: int | None,
                                               written: str) -> None:
    box = FakeKernelSandbox(mount(root), PREFIX, LIMIT, swap_limit_bytes=swap)
    box.create()
    assert (Path(box.directory) / "memory.swap.max").read_text() == written
    box.close()


def test_finite_swap_without_swap_accounting_is_unsupported(root: Path) -> None:
    box = FakeKernelSandbox(mount(root), PREFIX, LIMIT, swap_limit_bytes=1 << 20)
    box.missing = ("memory.swap.max",)
    with pytest.raises(Unsupported, match="cannot allow"):
        box.create()
    assert not Path(box.directory).exists()
