"""Whether oomlens runs inside a container, and what says so.

Why it matters: `/proc/sysrq-trigger` belongs to the kernel, not to the container. A
SysRq-f written from inside a container makes the *host's* OOM killer choose among
every process of the machine, so `oomlens simulate sysrq` refuses there unless told.

The signs are the ones `systemd-detect-virt --container` and the runtimes themselves
leave: the `container=` variable that container managers put in the environment of
the container's pid 1 (and that its children usually inherit), systemd's
`/run/systemd/container`, Docker's `/.dockerenv`, Podman's `/run/.containerenv`, and a
container runtime's name in pid 1's cgroup paths (without a cgroup namespace). None
of them is proof alone; any one is reason enough to refuse a host-wide kill.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping

from oomlens.system.procfs import read_bytes

# Files a container manager creates inside the container's root.
MARKER_FILES = ("run/systemd/container", ".dockerenv", "run/.containerenv")
# Names of container runtimes and orchestrators as they appear in cgroup paths
# (`/docker/<id>`, `/kubepods/...`, `/lxc/<name>`, `/machine.slice/libpod-<id>.scope`).
RUNTIME_WORDS = ("docker", "kubepods", "lxc", "libpod", "containerd", "crio", "machine-")


def container_evidence(
    markers: Iterable[str], environ: Mapping[str, str], pid1_environ: bytes | None,
    pid1_cgroup: str | None,
) -> list[str]:
    """What points to a container, one phrase each (empty: nothing does).

    `markers`: the MARKER_FILES that exist; `environ`: our environment;
    `pid1_environ`: `/proc/1/environ` (None if it cannot be read); `pid1_cgroup`:
    `/proc/1/cgroup` (None if it cannot be read)."""
    found = [f"/{name} exists" for name in markers]
    if environ.get("container"):
        found.append(f"container={environ['container']} in the environment")
    if pid1_environ is not None:
        for entry in pid1_environ.split(b"\0"):
            if entry.startswith(b"container=") and len(entry) > len(b"container="):
                found.append(f"{entry.decode('utf-8', 'replace')} in pid 1's environment")
    for line in (pid1_cgroup or "").splitlines():
        path = line.split(":", 2)[-1]
        words = [w for w in RUNTIME_WORDS if w in path]
        if words:
            found.append(f"pid 1's cgroup {path} names {words[0]}")
            break
    return found


def detect_container(root: str = "/", proc_root: str = "/proc",
                     environ: Mapping[str, str] | None = None) -> list[str]:
    """`container_evidence` for this system (`root`: the file system root to look in)."""
    markers = [name for name in MARKER_FILES if os.path.exists(os.path.join(root, name))]
    return container_evidence(
        markers, os.environ if environ is None else environ,
        _read_or_none(f"{proc_root}/1/environ"), _text_or_none(f"{proc_root}/1/cgroup"),
    )


def _read_or_none(path: str) -> bytes | None:
    """The file's bytes, or None where it cannot be read (pid 1's environ needs
    PTRACE_MODE_READ: root without CAP_SYS_PTRACE in a container is refused)."""
    try:
        return read_bytes(path)
    except OSError:
        return None


def _text_or_none(path: str) -> str | None:
    data = _read_or_none(path)
    return None if data is None else data.decode("utf-8", "replace")
