"""kernel/domain.py: totalpages of the global and memcg OOM domains
(mm/memcontrol.c: mem_cgroup_get_max(); mm/oom_kill.c: mem_cgroup_out_of_memory() uses
`?: 1`) and which memcg domains a task belongs to."""

from __future__ import annotations

import random

import pytest

from oomlens.kernel.domain import (
    LONG_MAX,
    DomainKind,
    OomDomain,
    domains_of,
    global_totalpages,
    is_within,
    memcg_totalpages_v1,
    memcg_totalpages_v2,
    page_counter_max,
)

COUNTER_MAX_4K = page_counter_max(4096)


def test_page_counter_max() -> None:
    # include/linux/page_counter.h: PAGE_COUNTER_MAX = LONG_MAX / PAGE_SIZE.
    assert LONG_MAX == 9_223_372_036_854_775_807
    assert COUNTER_MAX_4K == 2_251_799_813_685_247
    assert page_counter_max(65536) == 140_737_488_355_327


class TestGlobalTotalpages:
    def test_this_machine_no_swap(self) -> None:
        # MemTotal 24684100 kB with 4 KiB pages, no swap.
        assert global_totalpages(24_684_100, 0, 4096) == 6_171_025

    def test_with_swap(self) -> None:
        assert global_totalpages(24_684_100, 2_097_148, 4096) == 6_171_025 + 524_287

    def test_16k_pages(self) -> None:
        assert global_totalpages(16_384_000, 1_638_400, 16384) == 1_024_000 + 102_400


class TestMemcgV1:
    LIMIT = 65_536  # 256 MiB

    def test_swappiness_0_ignores_swap(self) -> None:
        assert memcg_totalpages_v1(self.LIMIT, self.LIMIT + 1000, 0, 5000) == self.LIMIT

    def test_swappiness_adds_memsw_headroom(self) -> None:
        # min(memsw 66_536 - mem 65_536, total swap 5000) = 1000.
        assert memcg_totalpages_v1(self.LIMIT, self.LIMIT + 1000, 60, 5000) == self.LIMIT + 1000

    def test_headroom_capped_by_total_swap(self) -> None:
        assert memcg_totalpages_v1(self.LIMIT, self.LIMIT + 9000, 1, 5000) == self.LIMIT + 5000

    def test_memsw_unlimited_adds_all_swap(self) -> None:
        assert memcg_totalpages_v1(self.LIMIT, COUNTER_MAX_4K, 60, 5000) == self.LIMIT + 5000

    def test_memsw_below_mem_wraps_and_picks_total_swap(self) -> None:
        # unsigned long swap = memsw.max - max wraps to ~2**64, min() takes total swap.
        assert memcg_totalpages_v1(self.LIMIT, 1000, 60, 5000) == self.LIMIT + 5000

    def test_memsw_equal_mem_adds_nothing(self) -> None:
        assert memcg_totalpages_v1(self.LIMIT, self.LIMIT, 60, 5000) == self.LIMIT

    def test_no_swap_on_machine(self) -> None:
        assert memcg_totalpages_v1(self.LIMIT, COUNTER_MAX_4K, 60, 0) == self.LIMIT

    def test_zero_is_one(self) -> None:
        assert memcg_totalpages_v1(0, 0, 0, 5000) == 1
        assert memcg_totalpages_v1(0, 0, 60, 0) == 1


class TestMemcgV2:
    MAX = 65_536

    def test_swap_max_counts_when_swappiness_nonzero(self) -> None:
        assert memcg_totalpages_v2(self.MAX, 1000, 60, 5000) == self.MAX + 1000

    def test_swappiness_0_ignores_swap(self) -> None:
        assert memcg_totalpages_v2(self.MAX, 1000, 0, 5000) == self.MAX

    def test_swap_max_unlimited_adds_all_swap(self) -> None:
        assert memcg_totalpages_v2(self.MAX, COUNTER_MAX_4K, 60, 5000) == self.MAX + 5000

    def test_swap_max_0(self) -> None:
        assert memcg_totalpages_v2(self.MAX, 0, 60, 5000) == self.MAX

    def test_zero_is_one(self) -> None:
        assert memcg_totalpages_v2(0, 0, 60, 5000) == 1
        assert memcg_totalpages_v2(0, 1000, 0, 5000) == 1


class TestIsWithin:
    @pytest.mark.parametrize(
        ("path", "ancestor"),
        [("/a/b", "/a/b"), ("/a/b/c", "/a/b"), ("/a/b/c", "/a"), ("/a", "/"), ("/", "/"),
         ("/a/b/c", "/a/b/")],
    )
    def test_within(self, path: str, ancestor: str) -> None:
        assert is_within(path, ancestor)

    @pytest.mark.parametrize(
        ("path", "ancestor"),
        [("/a/bc", "/a/b"), ("/a", "/a/b"), ("/b", "/a"), ("/", "/a"), ("/ab/c", "/a")],
    )
    def test_not_within(self, path: str, ancestor: str) -> None:
        assert not is_within(path, ancestor)


def memcg(path: str, totalpages: int = 65_536) -> OomDomain:
    return OomDomain(DomainKind.MEMCG, path, totalpages)


DOMAINS = [memcg("/a/b/c"), memcg("/x"), memcg("/a"), memcg("/a/bc"), memcg("/a/b")]


class TestDomainsOf:
    def test_ancestors_included_outermost_first(self) -> None:
        assert [d.path for d in domains_of("/a/b/c/d", DOMAINS)] == ["/a", "/a/b", "/a/b/c"]

    def test_exact_domain(self) -> None:
        assert [d.path for d in domains_of("/a/b", DOMAINS)] == ["/a", "/a/b"]

    def test_sibling_with_common_prefix_is_not_an_ancestor(self) -> None:
        assert [d.path for d in domains_of("/a/bc/x", DOMAINS)] == ["/a", "/a/bc"]

    def test_no_limited_ancestor(self) -> None:
        assert domains_of("/y/z", DOMAINS) == []
        assert domains_of("/", DOMAINS) == []

    def test_unknown_memcg(self) -> None:
        assert domains_of(None, DOMAINS) == []

    @pytest.mark.parametrize("seed", range(5))
    def test_input_order_does_not_matter(self, seed: int) -> None:
        shuffled = DOMAINS[:]
        random.Random(seed).shuffle(shuffled)
        assert [d.path for d in domains_of("/a/b/c", shuffled)] == ["/a", "/a/b", "/a/b/c"]

    def test_returns_the_domain_objects(self) -> None:
        found = domains_of("/x/1", DOMAINS)
        assert found == [memcg("/x")]
        assert found[0].totalpages == 65_536


def test_domain_labels() -> None:
    assert OomDomain(DomainKind.GLOBAL, "/", 6_171_025).label == "global"
    assert memcg("/a/b").label == "memcg /a/b"
