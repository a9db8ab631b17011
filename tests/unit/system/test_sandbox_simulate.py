"""What `oomlens simulate` adds to SandboxMemcg, on a fake cgroupfs tree (no root): a
nested sandbox without a limit of its own (v2: no delegation, nothing written), a
bound above 512 MiB, the usage and peak readers."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from fakecgroup import make_v2_root
from test_sandbox_v2 import FakeKernelSandbox

from oomlens.system.memcg import MemcgMount
from oomlens.system.sandbox import MAX_LIMIT_BYTES, MIB, SandboxError, SandboxMemcg

PREFIX = "oomlens-test-unit-"


@pytest.fixture
def root(tmp_path: Path) -> Path:
    cgroup_root = make_v2_root(tmp_path / "cgroup", controllers="cpu io memory pids")
    (cgroup_root / "cgroup.subtree_control").write_text("")
    target = cgroup_root / "target"
    target.mkdir()
    (target / "cgroup.controllers").write_text("memory pids\n")
    (target / "cgroup.subtree_control").write_text("")
    (target / "cgroup.procs").write_text("4242\n")  # a leaf that holds a process
    return cgroup_root


def mount(root: Path) -> MemcgMount:
    return MemcgMount(2, str(root), "/")


def test_nested_without_a_limit_writes_nothing_and_delegates_nothing(root: Path) -> None:
    box = FakeKernelSandbox(mount(root), PREFIX, None, parent="/target")
    with box:
        assert box.path == f"/target/{box.name}"
        assert box.writes == []
        assert (root / "target" / "cgroup.subtree_control").read_text() == ""
        assert not (Path(box.directory) / "memory.max").exists()
        with pytest.raises(SandboxError, match="no limit of its own"):
            box.write_limits()
    assert not os.path.exists(box.directory)
    assert (root / "target" / "cgroup.procs").read_text() == "4242\n"


def test_no_limit_needs_a_parent(root: Path) -> None:
    with pytest.raises(ValueError, match="must have a parent"):
        SandboxMemcg(mount(root), PREFIX, None)


def test_a_larger_bound_on_request(root: Path) -> None:
    big = 4 << 30
    with pytest.raises(ValueError, match="sandbox limit"):
        SandboxMemcg(mount(root), PREFIX, big)
    with FakeKernelSandbox(mount(root), PREFIX, big, max_limit_bytes=big) as box:
        assert (Path(box.directory) / "memory.max").read_text() == str(big)
    with pytest.raises(ValueError, match="swap limit"):
        SandboxMemcg(mount(root), PREFIX, MIB, swap_limit_bytes=MAX_LIMIT_BYTES + 1)


def test_usage_and_peak(root: Path) -> None:
    with FakeKernelSandbox(mount(root), PREFIX, 64 * MIB) as box:
        directory = Path(box.directory)
        (directory / "memory.current").write_text(f"{5 * MIB}\n")
        assert box.usage_bytes() == 5 * MIB
        assert box.peak_usage_bytes() is None  # before 5.19: no memory.peak
        (directory / "memory.peak").write_text(f"{9 * MIB}\n")
        assert box.peak_usage_bytes() == 9 * MIB


def test_v1_files(tmp_path: Path) -> None:
    directory = tmp_path / "memory" / "box"
    directory.mkdir(parents=True)
    box = SandboxMemcg(MemcgMount(1, str(tmp_path / "memory"), "/"), PREFIX, 64 * MIB)
    box.directory = str(directory)
    (directory / "memory.usage_in_bytes").write_text("4096\n")
    (directory / "memory.max_usage_in_bytes").write_text("8192\n")
    assert (box.usage_bytes(), box.peak_usage_bytes()) == (4096, 8192)
