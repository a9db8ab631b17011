"""policy/safety.py on processes built directly (no I/O): what counts as held memory,
the big-process rule and the killable share of each OOM domain (global and every
limited memcg a protected process is in), with their boundaries."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from oomlens.kernel.domain import DomainKind, OomDomain
from oomlens.kernel.task import Task
from oomlens.policy.plan import Plan, Step, build_plan
from oomlens.policy.rules import Limits
from oomlens.policy.safety import held_pages, refusals
from oomlens.system.snapshot import Process

PAGE = 4096
MEM_TOTAL_PAGES = 1000
GLOBAL = OomDomain(DomainKind.GLOBAL, "/", MEM_TOTAL_PAGES)
# Each rule alone: the other one cannot refuse.
ONLY_BIG = Limits(max_protected_share=0.30, min_killable_share=0.0)
ONLY_DOMAIN = Limits(max_protected_share=1.0, min_killable_share=0.50)


def proc(pid: int, pages: int, memcg: str | None = "/", *, adj: int = 0, swapents: int = 0,
         pgtables_bytes: int = 0, **flags: bool) -> Process:
    task = Task(
        pid=pid, comm=f"p{pid}", oom_score_adj=adj, rss_anon_pages=pages, rss_file_pages=0,
        rss_shmem_pages=0, swapents=swapents, pgtables_bytes=pgtables_bytes, page_size=PAGE,
        scan_order=pid, **flags,
    )
    return Process(task=task, ppid=1, cmdline=f"/bin/p{pid}", uid=0, user="root", state="S",
                   start_time_ticks=pid, oom_score=None, memcg=memcg, unit=None)


def memcg(path: str, totalpages: int = 500) -> OomDomain:
    return OomDomain(DomainKind.MEMCG, path, totalpages)


def refused(protect: list[Process], processes: list[Process], limits: Limits,
            domains: Sequence[OomDomain] = (GLOBAL,), new: int = -1000) -> list[str]:
    plan = build_plan(protect, new)
    found = refusals(plan, processes, domains, MEM_TOTAL_PAGES, PAGE, limits)
    return [r.message for r in found]


def test_held_pages_is_what_oom_badness_weighs() -> None:
    task = proc(10, 100, swapents=30, pgtables_bytes=3 * PAGE + 100).task
    assert held_pages(task) == 100 + 30 + 3


class TestBigProcess:
    def test_exactly_at_the_limit_is_allowed(self) -> None:
        at_limit = proc(10, 300)  # 300 / 1000 == 30%
        assert refused([at_limit], [at_limit], ONLY_BIG) == []

    def test_one_page_more_is_refused_with_the_numbers(self) -> None:
        big = proc(10, 301)
        plan = build_plan([big], -1000)
        [refusal] = refusals(plan, [big], [GLOBAL], MEM_TOTAL_PAGES, PAGE, ONLY_BIG)
        assert refusal.pid == 10
        assert refusal.message.startswith(
            "pid 10 (p10) holds 1.2 MiB, 30.1% of RAM (3.9 MiB), more than the 30.0% "
            "that may be made unkillable")
        assert refusal.message.endswith("(--force to do it anyway)")

    def test_swap_and_page_tables_count(self) -> None:
        big = proc(10, 280, swapents=20, pgtables_bytes=PAGE)  # 301 pages held
        assert len(refused([big], [big], ONLY_BIG)) == 1

    def test_each_big_process_is_named(self) -> None:
        a, b, small = proc(10, 400), proc(11, 500), proc(12, 10)
        messages = refused([a, small, b], [a, b, small], ONLY_BIG)
        assert [m.split(" (")[0] for m in messages] == ["pid 10", "pid 11"]


class TestGlobalDomain:
    def test_refused_when_too_little_stays_killable(self) -> None:
        a, b = proc(10, 600), proc(11, 400)
        [message] = refused([a], [a, b], ONLY_DOMAIN)
        assert "of the global OOM domain" in message
        assert "leaving 40.0% killable, less than the 50.0%" in message

    def test_exactly_at_the_limit_is_allowed(self) -> None:
        a, b = proc(10, 500), proc(11, 500)
        assert refused([a], [a, b], ONLY_DOMAIN) == []

    def test_already_protected_memory_counts_as_unkillable(self) -> None:
        a, b, old = proc(10, 300), proc(11, 400), proc(12, 300, adj=-1000)
        assert refused([a], [a, b, old], ONLY_DOMAIN)  # 40% killable after
        assert refused([a], [a, b, proc(12, 300)], ONLY_DOMAIN) == []  # 70% killable

    def test_what_the_oom_killer_never_weighs_does_not_count(self) -> None:
        """Kernel threads, init and processes without an mm are in neither total."""
        a, b = proc(10, 500), proc(11, 500)
        ignored = [proc(1, 10_000, is_global_init=True), proc(2, 10_000, is_kthread=True),
                   proc(3, 10_000, has_mm=False)]
        assert refused([a], [a, b, *ignored], ONLY_DOMAIN) == []
        assert refused([a], [a, proc(11, 499), *ignored], ONLY_DOMAIN)

    def test_an_already_protected_target_is_no_new_protection(self) -> None:
        huge = proc(10, 900, adj=-1000)
        assert refused([huge], [huge, proc(11, 100)], Limits()) == []

    def test_several_targets_together(self) -> None:
        a, b, c = proc(10, 300), proc(11, 300), proc(12, 400)
        assert refused([a], [a, b, c], ONLY_DOMAIN) == []
        assert refused([a, b], [a, b, c], ONLY_DOMAIN)  # 40% killable left


BOX = memcg("/box")
DOMAINS = (GLOBAL, BOX, memcg("/other"))
# Plenty of killable memory outside /box, so the global domain never refuses.
OUTSIDE = proc(99, 100_000, "/elsewhere")


class TestMemcgDomains:

    def test_a_memcg_left_with_nothing_killable_is_refused(self) -> None:
        x, y = proc(10, 100, "/box"), proc(11, 100, "/box/inner")
        [message] = refused([x, y], [x, y, OUTSIDE], ONLY_DOMAIN, DOMAINS)
        assert "of the memcg /box OOM domain, leaving 0.0% killable" in message

    def test_half_killable_memcg_is_allowed(self) -> None:
        x, y = proc(10, 100, "/box"), proc(11, 100, "/box/inner")
        assert refused([x], [x, y, OUTSIDE], ONLY_DOMAIN, DOMAINS) == []

    def test_a_memcg_the_plan_does_not_touch_is_not_checked(self) -> None:
        """/other is all unkillable already, but this plan changes nothing there."""
        x, y = proc(10, 100, "/box"), proc(11, 100, "/box")
        stuck = proc(20, 100, "/other", adj=-1000)
        assert refused([x], [x, y, stuck, OUTSIDE], ONLY_DOMAIN, DOMAINS) == []

    def test_a_sibling_with_a_common_prefix_is_not_inside(self) -> None:
        """/boxer is not below /box: its processes do not keep /box killable."""
        x = proc(10, 100, "/box")
        boxer = proc(11, 10_000, "/boxer")
        [message] = refused([x], [x, boxer, OUTSIDE], ONLY_DOMAIN, DOMAINS)
        assert "memcg /box OOM domain" in message

    def test_ancestor_domains_are_checked_too(self) -> None:
        inner = memcg("/box/inner", 200)
        x = proc(10, 100, "/box/inner")
        y = proc(11, 50, "/box")
        messages = refused([x], [x, y, OUTSIDE], ONLY_DOMAIN, [GLOBAL, BOX, inner])
        assert ["memcg /box OOM" in m for m in messages] == [True, False]
        assert "memcg /box/inner OOM" in messages[1]

    def test_global_and_memcg_refusals_come_together(self) -> None:
        x = proc(10, 100, "/box")
        messages = refused([x], [x, proc(11, 50)], ONLY_DOMAIN, DOMAINS)
        assert ["global OOM domain" in m for m in messages] == [True, False]
        assert "memcg /box OOM domain" in messages[1]

    def test_a_process_outside_any_memcg_touches_no_memcg_domain(self) -> None:
        x = proc(10, 100, None)
        stuck = proc(20, 100, "/box", adj=-1000)
        assert refused([x], [x, stuck, OUTSIDE], ONLY_DOMAIN, DOMAINS) == []


class TestNonProtectingPlans:
    """Only a new -1000 makes memory unkillable: nothing else is ever refused."""

    STRICT = Limits(max_protected_share=0.01, min_killable_share=0.99)

    @pytest.mark.parametrize("new", [-999, -500, 0, 500, 1000])
    def test_never_refused(self, new: int) -> None:
        huge = proc(10, 990, "/box")
        domains = [GLOBAL, memcg("/box")]
        assert refused([huge], [huge, proc(11, 10)], self.STRICT, domains, new=new) == []

    def test_unprotecting_is_never_refused(self) -> None:
        huge = proc(10, 990, adj=-1000)
        assert refused([huge], [huge], self.STRICT, new=0) == []

    def test_planned_values_are_weighed_in_place(self) -> None:
        """A plan that also unprotects a process counts that process as killable."""
        protect, unprotect = proc(10, 10), proc(11, 990, adj=-1000)
        mixed = Plan((Step(protect, -1000), Step(unprotect, 0)), ())
        alone = Plan((Step(protect, -1000),), ())
        everyone = [protect, unprotect]
        assert refusals(alone, everyone, [GLOBAL], MEM_TOTAL_PAGES, PAGE, ONLY_DOMAIN)
        assert refusals(mixed, everyone, [GLOBAL], MEM_TOTAL_PAGES, PAGE, ONLY_DOMAIN) == []
