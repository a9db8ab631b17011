"""guard/victim.py: the exclusions in their order with their reasons, preference over
the kernel's order, and no bystander when nothing acceptable is left. Candidates come
from the kernel model (`kernel/select.py: rank_tasks`) over realistic sizes."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from oomlens.errors import UsageError
from oomlens.guard.victim import Candidate, Choice, Preferences, choose, parse_patterns
from oomlens.kernel.select import rank_tasks, select_bad_process
from oomlens.kernel.task import Task

PAGE = 4096
TOTALPAGES = 4_194_304 + 1_048_576  # 16 GiB RAM + 4 GiB swap, in pages
MIB_PAGES = 256


def task(pid: int, comm: str, rss_mib: int, *, adj: int = 0, kthread: bool = False,
         has_mm: bool = True) -> Task:
    return Task(pid=pid, comm=comm, oom_score_adj=adj, rss_anon_pages=rss_mib * MIB_PAGES,
                rss_file_pages=0, rss_shmem_pages=0, swapents=0, pgtables_bytes=rss_mib * 2048,
                is_kthread=kthread, has_mm=has_mm and not kthread, is_global_init=pid == 1,
                scan_order=pid)


def candidates(tasks: list[Task], actions: dict[int, str] | None = None,
               cmdlines: dict[int, str] | None = None) -> list[Candidate]:
    """Candidates as the daemon builds them: points and rank from the kernel model."""
    actions, cmdlines = actions or {}, cmdlines or {}
    return [
        Candidate(pid=r.task.pid, comm=r.task.comm,
                  cmdline=cmdlines.get(r.task.pid, f"/usr/bin/{r.task.comm}"), uid=1000,
                  start_time_ticks=r.task.scan_order, points=r.points, rank=r.rank,
                  oom_score_adj=r.task.oom_score_adj, rss_bytes=r.task.rss_pages * PAGE,
                  cgroup="/user.slice", kthread=r.task.is_kthread,
                  policy_action=actions.get(r.task.pid))
        for r in rank_tasks(tasks, TOTALPAGES)
    ]


DESKTOP = [
    task(1, "systemd", 12),
    task(2, "kthreadd", 0, kthread=True),
    task(310, "systemd-journal", 40, adj=-250),
    task(700, "sshd", 8, adj=-1000),
    task(1200, "postgres", 2048, adj=-500),
    task(2100, "java", 3072),
    task(2200, "firefox", 1800, adj=100),
    task(2300, "chrome", 900, adj=300),
    task(2400, "bash", 5),
    task(2500, "defunct", 0, has_mm=False),
    task(2600, "oomlens", 30, adj=-900),
]


NO_PREFERENCES = Preferences()


def pick(cands: list[Candidate], prefs: Preferences = NO_PREFERENCES) -> Choice:
    return choose(cands, prefs, domain="/")


def victim_pid(choice: Choice) -> int | None:
    return None if choice.victim is None else choice.victim.pid


def skipped(choice: Choice) -> dict[int, str]:
    return {c.pid: reason for c, reason in choice.skipped}


# --- the kernel's order ----------------------------------------------------------------


def test_without_preferences_the_kernels_choice_dies() -> None:
    choice = pick(candidates(DESKTOP))
    # chrome: 900 MiB is 230400 pages, and adj 300 adds 300 x 5242880 / 1000 = 1572864.
    kernel = select_bad_process(DESKTOP, TOTALPAGES)
    assert kernel is not None
    assert victim_pid(choice) == kernel.pid == 2300
    assert choice.why == (
        "11 processes in /; passed over: 1 pid 1, 1 kernel threads, 1 oom_score_adj -1000, "
        "1 ineligible",
        "none preferred: the kernel's order decides",
        "victim: pid 2300 (chrome): 1803450 points, rank 1, RSS 900.0 MiB, oom_score_adj 300",
    )


def test_the_kernel_order_holds_down_the_list() -> None:
    cands = candidates(DESKTOP)
    order = []
    while (choice := pick(cands)).victim is not None:
        order.append(choice.victim.pid)
        cands = [c for c in cands if c.pid != choice.victim.pid]
    assert order == [2300, 2200, 2100, 2400, 310, 1200, 2600]
    assert order == [r.task.pid for r in rank_tasks(DESKTOP, TOTALPAGES) if r.rank]


def test_equal_points_go_by_the_kernels_rank() -> None:
    # Same size, same adj: the later-scanned task ranks first (oom_evaluate_task()).
    cands = candidates([task(10, "worker", 500), task(11, "worker", 500),
                        task(9, "worker", 500)])
    assert len({c.points for c in cands}) == 1
    assert victim_pid(pick(cands)) == 11
    shuffled = sorted(cands, key=lambda c: c.pid)
    assert victim_pid(pick(shuffled)) == 11


# --- the exclusions, each with its reason ----------------------------------------------


@pytest.mark.parametrize(("pid", "reason"), [
    (1, "pid 1 (init): its death panics the kernel, which never kills it"),
    (2, "kernel thread: the kernel never kills one (PF_KTHREAD)"),
    (700, "oom_score_adj -1000: the kernel never kills it, nor do we"),
    (2500, "ineligible: the kernel gives it no badness here (no memory of its own)"),
])
def test_what_the_kernel_never_kills_we_never_kill(pid: int, reason: str) -> None:
    assert skipped(pick(candidates(DESKTOP)))[pid] == reason


def test_pid_1_is_passed_over_even_if_it_ranks_first() -> None:
    # A model that ranks pid 1 (a container's init seen from outside would not be pid 1).
    init = Candidate(1, "systemd", "/sbin/init", 0, 1, 999, 1, 0, 10 << 30, "/", False)
    choice = pick([init])
    assert choice.victim is None
    assert skipped(choice)[1] == "pid 1 (init): its death panics the kernel, which never kills it"


def test_the_guard_and_its_spared_pids_are_passed_over() -> None:
    prefs = Preferences(self_pid=2300, spare_pids=frozenset({2100}))
    choice = pick(candidates(DESKTOP), prefs)
    assert skipped(choice)[2300] == "the guard itself"
    assert skipped(choice)[2100] == "spared: the guard's own session or helper"
    assert victim_pid(choice) == 2200
    assert choice.why[0] == ("11 processes in /; passed over: 1 pid 1, 1 kernel threads, "
                             "2 spared, 1 oom_score_adj -1000, 1 ineligible")


def test_an_avoid_regex_skips_the_biggest() -> None:
    prefs = Preferences(avoid=parse_patterns(["^chrom"], "--avoid"))
    choice = pick(candidates(DESKTOP), prefs)
    assert skipped(choice)[2300] == "avoided: --avoid /^chrom/ matches its command name"
    assert victim_pid(choice) == 2200
    assert choice.why[-2:] == (
        "ranked ahead but passed over: pid 2300 (chrome): avoided: --avoid /^chrom/ matches "
        "its command name",
        "victim: pid 2200 (firefox): 985900 points, rank 2, RSS 1.8 GiB, oom_score_adj 100",
    )


def test_an_avoid_regex_searches_the_command_line() -> None:
    cands = candidates(DESKTOP, cmdlines={2300: "/opt/google/chrome/chrome --type=renderer"})
    prefs = Preferences(avoid=parse_patterns(["--type=renderer"], "--avoid"))
    assert skipped(pick(cands, prefs))[2300] == (
        "avoided: --avoid /--type=renderer/ matches its command line")


def test_a_protect_rule_avoids() -> None:
    choice = pick(candidates(DESKTOP, actions={2300: "protect", 2200: "score"}))
    assert skipped(choice)[2300] == "avoided: a protect rule of the policy file matches it"
    assert victim_pid(choice) == 2200


def test_the_first_exclusion_in_order_is_the_reason_given() -> None:
    # -1000 and avoided: the kernel's own rule is named.
    prefs = Preferences(avoid=parse_patterns(["sshd"], "--avoid"), self_pid=1)
    choice = pick(candidates(DESKTOP), prefs)
    assert skipped(choice)[700] == "oom_score_adj -1000: the kernel never kills it, nor do we"
    assert skipped(choice)[1].startswith("pid 1 (init)")


# --- preference ------------------------------------------------------------------------


def test_a_prefer_regex_beats_the_kernels_order() -> None:
    prefs = Preferences(prefer=parse_patterns(["bash"], "--prefer"))
    choice = pick(candidates(DESKTOP), prefs)
    assert victim_pid(choice) == 2400
    assert choice.why[1:] == (
        "preferred: pid 2400 (bash): --prefer /bash/ matches its command name; first of 1 "
        "preferred in the kernel's order",
        "it goes ahead of the kernel's own first choice, pid 2300 (chrome) (1803450 points, "
        "rank 1, RSS 900.0 MiB, oom_score_adj 300)",
        "victim: pid 2400 (bash): 1282 points, rank 4, RSS 5.0 MiB, oom_score_adj 0",
    )


def test_among_the_preferred_the_kernels_order_decides() -> None:
    cands = candidates(DESKTOP, actions={2400: "prefer", 2200: "prefer", 1200: "prefer"})
    choice = pick(cands)
    assert victim_pid(choice) == 2200
    assert choice.why[1] == ("preferred: pid 2200 (firefox): a prefer rule of the policy file "
                             "matches it; first of 3 preferred in the kernel's order")


def test_preferring_the_kernels_own_choice_needs_no_overtaking_line() -> None:
    prefs = Preferences(prefer=parse_patterns(["chrome"], "--prefer"))
    choice = pick(candidates(DESKTOP), prefs)
    assert victim_pid(choice) == 2300
    assert not any(line.startswith("it goes ahead") for line in choice.why)


def test_avoid_beats_prefer() -> None:
    prefs = Preferences(avoid=parse_patterns(["bash"], "--avoid"),
                        prefer=parse_patterns(["bash"], "--prefer"))
    choice = pick(candidates(DESKTOP), prefs)
    assert victim_pid(choice) == 2300
    assert skipped(choice)[2400] == "avoided: --avoid /bash/ matches its command name"


def test_minus_1000_is_never_killed_even_preferred_and_biggest() -> None:
    cands = candidates([task(50, "giant", 12_000, adj=-1000), task(60, "small", 10)],
                       actions={50: "prefer"})
    prefs = Preferences(prefer=parse_patterns(["giant"], "--prefer"))
    assert victim_pid(pick(cands, prefs)) == 60


# --- nothing acceptable ----------------------------------------------------------------


def test_nothing_acceptable_is_no_victim_and_a_loud_line() -> None:
    cands = candidates([task(1, "systemd", 12), task(700, "sshd", 8, adj=-1000),
                        task(1200, "postgres", 2048)])
    prefs = Preferences(avoid=parse_patterns(["postgres"], "--avoid"))
    choice = choose(cands, prefs, domain="/system.slice/db.service")
    assert choice.victim is None
    assert choice.why == (
        "3 processes in /system.slice/db.service; passed over: 1 pid 1, 1 oom_score_adj -1000, "
        "1 avoided",
        "nothing acceptable to kill in /system.slice/db.service: all 3 passed over (1 pid 1, "
        "1 oom_score_adj -1000, 1 avoided); not picking a bystander",
    )
    assert [c.pid for c, _ in choice.skipped] == [1200, 1, 700]


def test_an_empty_domain_is_no_victim() -> None:
    assert pick([]).why == (
        "0 processes in /; passed over: none",
        "nothing acceptable to kill in /: no processes; not picking a bystander",
    )


# --- hostile names, input checks -------------------------------------------------------


def test_a_hostile_comm_cannot_fake_a_line() -> None:
    evil = replace(candidates([task(4000, "x", 4000)])[0], comm="x\nvictim: pid 1")
    choice = pick([evil])
    assert choice.why[-1].startswith('victim: pid 4000 ("x\\nvictim: pid 1"): ')
    assert all("\n" not in line for line in choice.why)


def test_parse_patterns() -> None:
    assert [p.pattern for p in parse_patterns(["^java$", "chrom(e|ium)"], "--prefer")] == [
        "^java$", "chrom(e|ium)"]
    with pytest.raises(UsageError) as caught:
        parse_patterns(["ok", "chrom(e"], "--avoid")
    assert str(caught.value) == (
        "--avoid: invalid regular expression 'chrom(e': missing ), unterminated subpattern "
        "at position 5")
    with pytest.raises(UsageError, match=r"^--prefer: an empty pattern matches every process$"):
        parse_patterns([""], "--prefer")


@pytest.mark.parametrize(("points", "rank", "action", "message"), [
    (None, 3, None, "points and rank are both set or both None"),
    (10, None, None, "points and rank are both set or both None"),
    (10, 1, "kill", "unknown policy action 'kill'"),
])
def test_candidate_checks_its_fields(points: int | None, rank: int | None, action: str | None,
                                     message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Candidate(5, "x", "x", 0, 0, points, rank, 0, 0, None, False, action)


# --- property: never a bystander, never two -------------------------------------------


@st.composite
def domains(draw: st.DrawFn) -> tuple[list[Candidate], Preferences]:
    n = draw(st.integers(0, 12))
    tasks = [task(pid, draw(st.sampled_from(["java", "bash", "sshd", "chrome"])),
                  draw(st.integers(0, 4000)), adj=draw(st.sampled_from([-1000, -500, 0, 500])),
                  kthread=draw(st.booleans()) and pid > 1, has_mm=draw(st.booleans()))
             for pid in range(1, n + 1)]
    actions = {pid: draw(st.sampled_from(["protect", "prefer", "score"]))
               for pid in draw(st.sets(st.integers(1, n))) if n} if n else {}
    prefs = Preferences(
        avoid=parse_patterns(draw(st.lists(st.sampled_from(["java", "^ss"]), max_size=1)), "a"),
        prefer=parse_patterns(draw(st.lists(st.sampled_from(["bash", "ch"]), max_size=1)), "p"),
        self_pid=draw(st.integers(0, n)), spare_pids=frozenset(draw(st.sets(st.integers(1, 12)))))
    return candidates(tasks, actions), prefs


@given(domains())
def test_the_victim_is_acceptable_and_the_first_in_its_class(
        domain: tuple[list[Candidate], Preferences]) -> None:
    cands, prefs = domain
    choice = pick(cands, prefs)
    passed = {c.pid for c, _ in choice.skipped}
    acceptable = [c for c in cands if c.pid not in passed]
    assert len(passed) == len(choice.skipped)
    if choice.victim is None:
        assert not acceptable
        assert "not picking a bystander" in choice.why[-1]
        return
    v = choice.victim
    assert v in acceptable
    assert v.pid != 1 and not v.kthread and v.oom_score_adj != -1000 and v.points is not None
    assert v.pid != prefs.self_pid and v.pid not in prefs.spare_pids
    assert v.policy_action != "protect"
    assert not any(p.search(v.comm) or p.search(v.cmdline) for p in prefs.avoid)

    def preferred(c: Candidate) -> bool:
        return c.policy_action == "prefer" or any(
            p.search(c.comm) or p.search(c.cmdline) for p in prefs.prefer)

    pool = [c for c in acceptable if preferred(c)] or acceptable
    assert v.rank == min(c.rank for c in pool if c.rank is not None)
