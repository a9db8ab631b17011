"""simulate/safety.py: what a simulation may take from the host, and the refusals."""

from __future__ import annotations

from dataclasses import replace

import pytest

from oomlens.errors import UsageError
from oomlens.simulate.safety import (
    check_sandbox_limits,
    check_trigger_target,
    reserve_bytes,
    room_refusal,
    spare_bytes,
)
from oomlens.system.memcg import Memcg
from oomlens.system.meminfo import MemInfo

MIB = 1 << 20
GIB = 1 << 30


def meminfo(total_gib: int, available_mib: int, swap_free_mib: int = 0) -> MemInfo:
    return MemInfo(mem_total_kib=total_gib << 20, mem_free_kib=0,
                   mem_available_kib=available_mib << 10, swap_total_kib=swap_free_mib << 10,
                   swap_free_kib=swap_free_mib << 10, committed_as_kib=0, commit_limit_kib=0)


def memcg(**changes: object) -> Memcg:
    base = Memcg(path="/box", version=1, limit_bytes=256 * MIB, swap_limit_bytes=0,
                 usage_bytes=100 * MIB, swap_usage_bytes=0, swappiness=60, oom_kill=0,
                 oom_kill_disable=False, raw_limit_pages=65_536, raw_swap_limit_pages=65_536)
    return replace(base, **changes)  # type: ignore[arg-type]


class TestSpare:
    def test_reserve_is_a_twentieth_of_ram_or_256_mib(self) -> None:
        assert reserve_bytes(meminfo(24, 0)) == 24 * GIB // 20
        assert reserve_bytes(meminfo(2, 0)) == 256 * MIB

    def test_spare_is_available_less_the_reserve(self) -> None:
        assert spare_bytes(meminfo(2, 1024)) == 768 * MIB
        assert spare_bytes(meminfo(2, 100)) == 0


class TestSandboxLimits:
    def test_within_what_the_host_spares(self) -> None:
        check_sandbox_limits(768 * MIB, 0, meminfo(2, 1024))

    def test_a_limit_the_host_cannot_spare(self) -> None:
        with pytest.raises(UsageError, match="more than this host can spare now, 768 MiB"):
            check_sandbox_limits(768 * MIB + 1, 0, meminfo(2, 1024))

    def test_swap_beyond_what_is_free(self) -> None:
        check_sandbox_limits(64 * MIB, 100 * MIB, meminfo(2, 1024, swap_free_mib=100))
        with pytest.raises(UsageError, match="of swap free"):
            check_sandbox_limits(64 * MIB, 101 * MIB, meminfo(2, 1024, swap_free_mib=100))


class TestRoomRefusal:
    def test_fine(self) -> None:
        assert room_refusal(memcg(), 156 * MIB, meminfo(24, 20_000)) is None

    def test_oom_kill_disable_would_hang(self) -> None:
        reason = room_refusal(memcg(oom_kill_disable=True), 156 * MIB, meminfo(24, 20_000))
        assert reason is not None and "oom_kill_disable" in reason

    def test_more_room_than_the_host_spares(self) -> None:
        reason = room_refusal(memcg(), 900 * MIB, meminfo(2, 1024))
        assert reason is not None and "the host would run out first" in reason

    def test_unlimited_swap_on_a_host_with_swap(self) -> None:
        unlimited = memcg(swap_limit_bytes=None)
        reason = room_refusal(unlimited, 10 * MIB, meminfo(24, 20_000, swap_free_mib=4096))
        assert reason is not None and "set a swap limit" in reason
        assert room_refusal(unlimited, 10 * MIB, meminfo(24, 20_000)) is None
        assert room_refusal(replace(unlimited, swappiness=0), 10 * MIB,
                            meminfo(24, 20_000, swap_free_mib=4096)) is None


@pytest.mark.parametrize("path", ["/", "", "global", "//"])
def test_the_root_is_no_trigger_target(path: str) -> None:
    with pytest.raises(UsageError, match="not the root"):
        check_trigger_target(path)


def test_a_cgroup_is() -> None:
    check_trigger_target("/box")
