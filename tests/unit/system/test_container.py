"""system/container.py: the signs of a container, each named."""

from __future__ import annotations

from pathlib import Path

from oomlens.system.container import container_evidence, detect_container

HOST_CGROUP = "0::/init.scope\n"


def test_a_host_shows_nothing() -> None:
    assert container_evidence([], {}, b"HOME=/\0TERM=linux\0", HOST_CGROUP) == []
    assert container_evidence([], {"container": ""}, None, None) == []


def test_each_sign_is_named() -> None:
    found = container_evidence(
        [".dockerenv"], {"container": "podman"}, b"PATH=/bin\0container=lxc\0",
        "12:memory:/docker/0123abcd\n0::/\n")
    assert found == [
        "/.dockerenv exists",
        "container=podman in the environment",
        "container=lxc in pid 1's environment",
        "pid 1's cgroup /docker/0123abcd names docker",
    ]


def test_kubernetes_cgroup() -> None:
    found = container_evidence([], {}, None, "0::/kubepods/burstable/pod1/abc\n")
    assert found == ["pid 1's cgroup /kubepods/burstable/pod1/abc names kubepods"]


def test_detect_reads_markers_and_pid_1(tmp_path: Path) -> None:
    root, proc = tmp_path / "root", tmp_path / "proc"
    (root / "run").mkdir(parents=True)
    (root / "run" / ".containerenv").write_text("")
    (proc / "1").mkdir(parents=True)
    (proc / "1" / "cgroup").write_text("0::/machine.slice/libpod-1.scope\n")
    found = detect_container(str(root), str(proc), environ={})
    assert found == ["/run/.containerenv exists",
                     "pid 1's cgroup /machine.slice/libpod-1.scope names libpod"]


def test_unreadable_pid_1_is_no_sign(tmp_path: Path) -> None:
    assert detect_container(str(tmp_path), str(tmp_path / "proc"), environ={}) == []
