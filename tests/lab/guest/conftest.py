"""Guest-side lab tests: collected only inside the kernel lab guest.

On the host these files are not collected at all (they would create cgroup v2
memcgs, set -1000 and trigger global OOMs on the real machine); the host runs them
through tests/lab/test_lab.py, which boots the guest once and reports each of them.

Sandbox memcgs are tests/conftest.py's `sandbox` fixture (SandboxMemcg), here on the
guest's cgroup v2 hierarchy, named `oomlens-test-lab-*` and with the lab's longer
deadlines (the guest runs under software emulation).
"""

from __future__ import annotations

import functools
import subprocess
from collections.abc import Iterator

import pytest
from guestlib import MEMCG_PREFIX, WAIT_S, SandboxFactory, in_lab, stop

from oomlens.system.memcg import MemcgMount, find_memcg_mount

if not in_lab():
    collect_ignore_glob = ["test_*.py"]


@pytest.fixture(scope="session")
def memcg_mount() -> MemcgMount:
    """The guest's cgroup v2 memory controller (its absence fails, never skips)."""
    mount = find_memcg_mount()
    assert mount is not None and mount.version == 2, f"no cgroup v2 memcg in the guest: {mount}"
    return mount


@pytest.fixture
def sandbox(sandbox: SandboxFactory) -> SandboxFactory:
    """`sandbox(limit_bytes, swap_limit_bytes=0)` -> a created SandboxMemcg, closed at
    teardown (tests/conftest.py)."""
    return functools.partial(sandbox, prefix=MEMCG_PREFIX, timeout=WAIT_S)


@pytest.fixture
def reap() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Processes appended here are killed and reaped at teardown."""
    processes: list[subprocess.Popen[bytes]] = []
    yield processes
    for process in processes:
        stop(process)
