"""Guest-side lab tests: collected only inside the kernel lab guest.

On the host these files are not collected at all (they would create cgroup v2
memcgs, set -1000 and trigger global OOMs on the real machine); the host runs them
through tests/lab/test_lab.py, which boots the guest once and reports each of them.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator

import pytest
from guestlib import V2Memcg, in_lab, stop

if not in_lab():
    collect_ignore_glob = ["test_*.py"]

MemcgFactory = Callable[..., V2Memcg]


@pytest.fixture
def memcg() -> Iterator[MemcgFactory]:
    """`memcg(max_bytes, swap_max_bytes=0)` -> a V2Memcg, removed at teardown."""
    made: list[V2Memcg] = []

    def make(max_bytes: int, swap_max_bytes: int | None = 0) -> V2Memcg:
        group = V2Memcg(max_bytes, swap_max_bytes)
        made.append(group)
        return group

    yield make
    for group in reversed(made):
        group.close()


@pytest.fixture
def reap() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Processes appended here are killed and reaped at teardown."""
    processes: list[subprocess.Popen[bytes]] = []
    yield processes
    for process in processes:
        stop(process)
