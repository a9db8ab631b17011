"""cgroup v2 memcg OOMs: the kernel kills the task oomlens predicts.

Each scenario starts hogs of known size and oom_score_adj in a v2 sandbox memcg
(`memory.max`, `memory.swap.max`), makes one of them grow until the memcg is out of
memory and reads whom the kernel killed (`/dev/kmsg`, `memory.events`:
`SandboxMemcg.trigger_oom()`). Two
predictions are checked against it:
- exact: oomlens's rules (`select_bad_process`) over the task table the kernel
  printed for that OOM, with totalpages from `memcg_totalpages_v2()`;
- in advance: `rank_domain()` over a snapshot taken before the trigger (the
  scenarios leave a wide margin, so the grower's final size cannot change it).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import pytest
from guestlib import OomCapture, Record, SandboxFactory, read_sysctl, swap_state, swap_total_kib

from oomlens.kernel.domain import memcg_totalpages_v2
from oomlens.kernel.select import select_bad_process
from oomlens.ranking import find_domain, rank_domain
from oomlens.system.sandbox import MIB
from oomlens.system.snapshot import PAGE_SIZE, take_snapshot

pytestmark = pytest.mark.guest


@dataclass(frozen=True)
class Scenario:
    name: str
    max_mib: int
    swap_max_mib: int  # 0: no swap for this memcg
    hogs: tuple[tuple[int, int], ...]  # (MiB, oom_score_adj)
    grower: int  # index into hogs
    expected: int  # index of the victim the numbers are designed to produce
    largest_dies: bool  # whether that victim is also the process with the most memory

    def __str__(self) -> str:
        return self.name


SCENARIOS = (
    # A big hog protected by -300 outlives a small one pushed by +500: the naive
    # "largest process dies" guess would be wrong.
    Scenario("negative-adj-protects-biggest", 128, 0,
             ((48, -300), (8, 0), (4, 500), (24, 0)),
             grower=1, expected=2, largest_dies=False),
    # The grower itself dies (+400 and the most memory); -1000 is never a candidate.
    Scenario("grower-dies-minus-1000-spared", 128, 0,
             ((40, -300), (8, -1000), (16, 100), (4, 400)),
             grower=3, expected=3, largest_dies=True),
    # With zram swap and memory.swap.max: totalpages = max + min(swap.max, swap
    # total), swapped pages count as swapents.
    Scenario("with-swap", 64, 32,
             ((32, -200), (4, 600), (12, 0)),
             grower=2, expected=1, largest_dies=False),
)


@pytest.mark.parametrize("scenario", SCENARIOS, ids=str)
def test_memcg_v2_victim_prediction(
    scenario: Scenario, sandbox: SandboxFactory, record_property: Record
) -> None:
    with swap_state(on=scenario.swap_max_mib > 0):
        group = sandbox(scenario.max_mib * MIB, swap_limit_bytes=scenario.swap_max_mib * MIB)
        hogs = [group.start_hog(size, adj) for size, adj in scenario.hogs]
        pids = {h.pid for h in hogs}

        snapshot = take_snapshot()
        domain = find_domain(snapshot, group.path)
        advance = next(r for r in rank_domain(snapshot, domain) if r.ranked.rank == 1)

        swappiness = read_sysctl("vm.swappiness")
        total_swap_pages = swap_total_kib() * 1024 // PAGE_SIZE
        totalpages = memcg_totalpages_v2(
            scenario.max_mib * MIB // PAGE_SIZE, scenario.swap_max_mib * MIB // PAGE_SIZE,
            swappiness, total_swap_pages,
        )
        assert domain.totalpages == totalpages, "snapshot's memcg domain != memory.max(+swap)"

        # Names a kill of one of the hogs only, and only once that hog died of SIGKILL.
        kill = group.trigger_oom(hogs[scenario.grower])
        kills = group.oom_kill_count()

    oom = OomCapture.of_kill(kill)
    assert oom.killed.pid in pids and kill.victim_pid in kill.sigkilled
    tasks = oom.tasks()
    predicted = select_bad_process(tasks, totalpages)
    oom_kill_line = oom.line("oom-kill:")
    record_property("memcg", group.path)
    record_property("totalpages", totalpages)
    record_property("hogs", ", ".join(f"{h.pid}:{h.size_mib}MiB/adj{h.oom_score_adj}"
                                      for h in hogs))
    record_property("table", "; ".join(
        f"{t.pid} rss={t.rss_pages} swap={t.swapents} pt={t.pgtables_pages} "
        f"adj={t.oom_score_adj}" for t in tasks))
    record_property("kernel_victim", oom.killed.pid)
    record_property("predicted_from_table", None if predicted is None else predicted.pid)
    record_property("predicted_in_advance", advance.process.pid)
    record_property("memory.events oom_kill", kills)

    assert "constraint=CONSTRAINT_MEMCG" in oom_kill_line
    assert f"oom_memcg={group.path}" in oom_kill_line
    assert oom.killed.memcg, "not reported as 'Memory cgroup out of memory'"
    assert kills == 1
    assert {t.pid for t in tasks} == pids, "task table != the memcg's processes"
    assert predicted is not None and predicted.pid == oom.killed.pid, (
        f"kernel killed {oom.killed.pid}, oomlens predicts "
        f"{None if predicted is None else predicted.pid} from the kernel's own table"
    )
    assert advance.process.pid == oom.killed.pid, "snapshot before the trigger predicted wrong"
    assert oom.killed.pid == hogs[scenario.expected].pid, "scenario did not play out as designed"
    if scenario.swap_max_mib:
        assert sum(t.swapents for t in tasks) > 0, "no swapents in a with-swap scenario"
    largest = max(tasks, key=lambda t: t.rss_pages + t.swapents + t.pgtables_pages)
    record_property("largest_process", largest.pid)
    assert (largest.pid == oom.killed.pid) == scenario.largest_dies, (
        f"largest process {largest.pid}, victim {oom.killed.pid}: not as designed"
    )


def random_scenario(seed: int) -> Scenario:
    """3-5 hogs of 4-24 MiB with adj in -500..800 in a 96 MiB memcg (every other seed
    with 32 MiB of swap). The victim is whatever the kernel picks: the exact check is
    against the kernel's own task table, so no outcome is designed in."""
    rng = random.Random(seed)
    count = rng.randint(3, 5)
    hogs = tuple((rng.randint(4, 24), rng.randint(-500, 800)) for _ in range(count))
    return Scenario(f"random-{seed}", 96, 32 if seed % 2 else 0, hogs,
                    grower=rng.randrange(count), expected=-1, largest_dies=False)


@pytest.mark.parametrize("seed", range(8))
def test_memcg_v2_random_scenarios(
    seed: int, sandbox: SandboxFactory, record_property: Record
) -> None:
    scenario = random_scenario(seed)
    with swap_state(on=scenario.swap_max_mib > 0):
        group = sandbox(scenario.max_mib * MIB, swap_limit_bytes=scenario.swap_max_mib * MIB)
        hogs = [group.start_hog(size, adj) for size, adj in scenario.hogs]
        totalpages = memcg_totalpages_v2(
            scenario.max_mib * MIB // PAGE_SIZE, scenario.swap_max_mib * MIB // PAGE_SIZE,
            read_sysctl("vm.swappiness"), swap_total_kib() * 1024 // PAGE_SIZE,
        )
        kill = group.trigger_oom(hogs[scenario.grower])
    oom = OomCapture.of_kill(kill)
    predicted = select_bad_process(oom.tasks(), totalpages)
    record_property("scenario", f"seed {seed}: {scenario.hogs}, grower {scenario.grower}")
    record_property("kernel_victim", oom.killed.pid)
    record_property("predicted_from_table", None if predicted is None else predicted.pid)
    assert predicted is not None and predicted.pid == oom.killed.pid, (
        f"seed {seed}: kernel killed {oom.killed.pid}, oomlens predicts "
        f"{None if predicted is None else predicted.pid} from the kernel's own table"
    )
