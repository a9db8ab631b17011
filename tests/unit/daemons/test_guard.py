"""daemons/guard.py with fake probes: the quiet (idle) look and when it must give
way to a proper one, the kill path's decisions (dry run, rate limit, nothing to
kill, the stored record), and the probes' reads on fake files."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest
from daemon import signals_restored
from hypothesis import given, settings
from hypothesis import strategies as st
from procutil import sleeper

from oomlens.daemons.guard import (
    Domain,
    Guard,
    GuardOptions,
    MemcgProbe,
    SystemProbe,
    Waker,
    serve,
)
from oomlens.errors import UsageError
from oomlens.guard.triggers import (
    DEFAULT_CEILING,
    DEFAULT_MAX_FILL_RATE,
    Amount,
    Assessor,
    Level,
    Sample,
    Thresholds,
    next_look,
)
from oomlens.guard.victim import Candidate, Choice, Preferences
from oomlens.store.record import EventKind, EventRecord
from oomlens.system.memcg import MemcgMount
from oomlens.system.procfs import parse_stat, read_text

GIB = 1 << 30
MIB = 1 << 20
TOTAL = 16 * GIB
THRESHOLDS = Thresholds(kill_below=Amount(percent=5), warn_below=Amount(percent=10))


@dataclass
class FakeProbe:
    """A domain whose available memory the test sets; counts each kind of read."""

    available: int
    total: int = TOTAL
    name: str = "system"
    cgroup: str | None = None
    samples: int = 0
    quicks: int = 0

    def sample(self, now: float) -> Sample:
        self.samples += 1
        return Sample(now, self.available, self.total)

    def quick(self) -> tuple[int, int]:
        self.quicks += 1
        return self.available, self.total

    def close(self) -> None:
        """Nothing held."""


@dataclass
class Clock:
    now: float = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Rig:
    probe: FakeProbe
    clock: Clock
    guard: ChosenGuard
    log: list[dict[str, Any]] = field(default_factory=list)
    records: list[EventRecord] = field(default_factory=list)

    @property
    def domain(self) -> Domain:
        return self.guard.domains[0]

    def events(self) -> list[str]:
        return [entry["event"] for entry in self.log]


class ChosenGuard(Guard):
    """The guard with its victim given (the real scan ranks the whole machine)."""

    choice: Choice = Choice(None, ("nobody acceptable",), ())

    def _choose(self, domain: Domain) -> tuple[Choice, list[Candidate]]:
        return self.choice, [] if self.choice.victim is None else [self.choice.victim]


def rig_of(available: int, *, dry_run: bool = False, thresholds: Thresholds = THRESHOLDS,
           **options: Any) -> Rig:
    probe, clock = FakeProbe(available), Clock()
    log: list[dict[str, Any]] = []
    records: list[EventRecord] = []
    domain = Domain(probe, thresholds, Assessor(thresholds))  # type: ignore[arg-type]
    guard = ChosenGuard([domain], Preferences(self_pid=os.getpid()), None,
                        GuardOptions(dry_run=dry_run, grace=0.5, **options), log.append,
                        records.append, clock)
    return Rig(probe, clock, guard, log, records)


@pytest.fixture
def sleeping() -> Iterator[subprocess.Popen[bytes]]:
    with sleeper() as child:
        yield child


def candidate_of(child: subprocess.Popen[bytes]) -> Candidate:
    stat = parse_stat(read_text(f"/proc/{child.pid}/stat"))
    return Candidate(pid=child.pid, comm="sleep", cmdline="sleep 60", uid=os.getuid(),
                     start_time_ticks=stat.start_time_ticks, points=1000, rank=1,
                     oom_score_adj=0, rss_bytes=MIB, cgroup="/", kthread=False,
                     policy_action=None)


class TestQuietLooks:
    def test_plenty_available_makes_the_next_looks_quick_reads(self) -> None:
        rig = rig_of(12 * GIB)
        rig.guard.look_all(woken=True)
        assert rig.domain.quiet is not None
        assert rig.domain.next_at == rig.clock.now + DEFAULT_CEILING
        for _ in range(5):
            assert rig.guard.look_quietly()
        assert (rig.probe.samples, rig.probe.quicks) == (1, 5)
        assert rig.guard.counters.looks == 6
        assert rig.log == []

    def test_a_drop_below_the_bound_ends_the_quiet_and_is_due_at_once(self) -> None:
        rig = rig_of(12 * GIB)
        rig.guard.look_all(woken=True)
        quiet = rig.domain.quiet
        assert quiet is not None
        rig.probe.available = quiet.above_bytes
        assert not rig.guard.look_quietly()
        assert rig.domain.quiet is None and rig.guard.due() == 0.0
        rig.guard.look_all()
        assert rig.probe.samples == 2

    def test_a_changed_total_ends_the_quiet(self) -> None:
        rig = rig_of(12 * GIB)
        rig.guard.look_all(woken=True)
        rig.probe.total = TOTAL // 2  # memory hot-removed, or a cgroup's limit lowered
        assert not rig.guard.look_quietly()

    def test_no_quiet_near_the_warn_level(self) -> None:
        # 10% + the 2% recover margin of 16 GiB is 1.92 GiB: 4.5 GiB clears it, but
        # 2 ceilings at 4 GiB/s (4 GiB) above the 5% kill level (0.8 GiB) it does not.
        rig = rig_of(4 * GIB + GIB // 2)
        rig.guard.look_all(woken=True)
        assert rig.domain.quiet is None
        assert not rig.guard.look_quietly()
        assert rig.domain.next_at < rig.clock.now + DEFAULT_CEILING

    def test_no_quiet_while_the_trend_is_faster_than_the_fill_rate(self) -> None:
        rig = rig_of(15 * GIB)
        for step in range(5):  # 15 GiB -> 11 GiB in 0.4 s: 10 GiB/s
            rig.probe.available = 15 * GIB - step * GIB
            rig.clock.now += 0.1
            rig.guard.look_all(woken=True)
        assert rig.domain.quiet is None

    def test_a_pressure_threshold_never_goes_quiet(self) -> None:
        rig = rig_of(12 * GIB)
        probe = rig.probe
        rig.guard.domains[0].probe.sample = (  # type: ignore[method-assign]
            lambda now: Sample(now, probe.available, probe.total, psi_some_avg10=0.0))
        rig.guard.look_all(woken=True)
        assert rig.domain.quiet is None


@settings(max_examples=300, deadline=None)
@given(kill_pct=st.floats(0.5, 40), warn_extra=st.floats(0, 40), margin=st.floats(0, 0.1),
       total=st.integers(256 * MIB, 1 << 42), first=st.floats(0, 1), later=st.floats(0, 1),
       ceiling=st.floats(0.05, 2.0))
def test_a_quiet_look_passes_only_where_a_proper_one_sleeps_the_ceiling_at_level_ok(
        kill_pct: float, warn_extra: float, margin: float, total: int, first: float,
        later: float, ceiling: float) -> None:
    thresholds = Thresholds(kill_below=Amount(percent=kill_pct),
                            warn_below=Amount(percent=min(kill_pct + warn_extra, 99)),
                            recover_margin=margin)
    rig = rig_of(int(total * first), thresholds=thresholds, ceiling=ceiling)
    rig.probe.total = total
    rig.guard.look_all(woken=True)
    rig.probe.available = int(total * later)
    if rig.guard.look_quietly():
        fresh = Assessor(thresholds)
        seen = Sample(0.0, rig.probe.available, total)
        assert fresh.assess(seen, rig.domain.trend).level is Level.OK
        assert next_look(seen, thresholds.kill_below.resolve(total), rig.domain.trend,
                         ceiling=ceiling) == ceiling
        assert rig.probe.available - thresholds.kill_below.resolve(total) >= (
            2 * ceiling * DEFAULT_MAX_FILL_RATE)


class TestKills:
    def test_a_dry_run_decides_and_sends_nothing(self, sleeping: subprocess.Popen[bytes]) -> None:
        rig = rig_of(100 * MIB, dry_run=True)
        rig.guard.choice = Choice(candidate_of(sleeping), ("the biggest",), ())
        rig.guard.look_all(woken=True)
        kill = next(e for e in rig.log if e["event"] == "kill")
        assert (kill["pid"], kill["dry_run"], kill["outcome"]) == (sleeping.pid, True, None)
        assert kill["triggers"] and kill["threshold_bytes"] == TOTAL * 5 // 100
        assert sleeping.poll() is None
        assert rig.records == []

    def test_a_kill_is_sent_logged_and_recorded_as_the_guards(
            self, sleeping: subprocess.Popen[bytes]) -> None:
        rig = rig_of(100 * MIB)
        rig.guard.choice = Choice(candidate_of(sleeping), ("the biggest",), ())
        rig.guard.look_all(woken=True)
        assert sleeping.wait(5) == -signal.SIGTERM
        kill = next(e for e in rig.log if e["event"] == "kill")
        assert kill["outcome"]["exited_on_term"] is True
        [record] = rig.records
        assert (record.kind, record.victim_pid, record.scope) == (
            EventKind.GUARD, sleeping.pid, "global")
        assert record.main_finding == f"guard_{kill['triggers'][0]}"
        assert rig.guard.counters.kills == 1

    def test_one_kill_per_interval(self, sleeping: subprocess.Popen[bytes]) -> None:
        rig = rig_of(100 * MIB, dry_run=True, kill_interval=1.0)
        rig.guard.choice = Choice(candidate_of(sleeping), ("the biggest",), ())
        rig.guard.look_all(woken=True)
        rig.clock.now += 0.5
        rig.guard.look_all(woken=True)
        assert rig.guard.counters.kills == 1
        rig.clock.now += 0.6
        rig.guard.look_all(woken=True)
        assert rig.guard.counters.kills == 2

    def test_nothing_acceptable_alerts_once_per_episode(self) -> None:
        rig = rig_of(100 * MIB)
        rig.guard.choice = Choice(None, ("every process is avoided",), ())
        for _ in range(3):
            rig.clock.now += 2
            rig.guard.look_all(woken=True)
        assert rig.events().count("nothing_to_kill") == 1
        assert rig.guard.counters.refusals == 3
        rig.probe.available = 12 * GIB  # recovered: the next episode alerts again
        rig.guard.look_all(woken=True)
        rig.probe.available = 100 * MIB
        rig.clock.now += 2
        rig.guard.look_all(woken=True)
        assert rig.events().count("nothing_to_kill") == 2

    def test_a_victim_gone_since_the_scan_is_not_signalled(
            self, sleeping: subprocess.Popen[bytes]) -> None:
        rig = rig_of(100 * MIB)
        stale = candidate_of(sleeping)  # as if the pid had been reused since the scan
        stale = replace(stale, start_time_ticks=stale.start_time_ticks + 1)
        rig.guard.choice = Choice(stale, ("the biggest",), ())
        rig.guard.look_all(woken=True)
        assert "victim_gone" in rig.events()
        assert sleeping.poll() is None and rig.records == []


def memcg_dir(tmp_path: Path, limit: str, usage: int, inactive_file: int) -> MemcgMount:
    box = tmp_path / "box"
    box.mkdir(exist_ok=True)
    (box / "memory.limit_in_bytes").write_text(limit + "\n")
    (box / "memory.usage_in_bytes").write_text(f"{usage}\n")
    (box / "memory.stat").write_text(
        f"cache 0\nrss {usage}\ninactive_file 7\ntotal_inactive_file {inactive_file}\n")
    return MemcgMount(1, str(tmp_path))


class TestMemcgProbe:
    def test_available_is_the_limit_less_the_working_set_and_quick_is_below_it(
            self, tmp_path: Path) -> None:
        probe = MemcgProbe(memcg_dir(tmp_path, str(256 * MIB), 200 * MIB, 30 * MIB), "/box")
        try:
            assert probe.sample(1.0) == Sample(1.0, 86 * MIB, 256 * MIB)
            assert probe.quick() == (56 * MIB, 256 * MIB)
            (tmp_path / "box" / "memory.usage_in_bytes").write_text(f"{100 * MIB}\n")
            assert probe.quick() == (156 * MIB, 256 * MIB)  # re-read through the open fd
        finally:
            probe.close()

    def test_a_cgroup_without_a_limit_is_refused(self, tmp_path: Path) -> None:
        with pytest.raises(UsageError, match="no limit to guard"):
            MemcgProbe(memcg_dir(tmp_path, str((1 << 63) - 4096), MIB, 0), "/box")

    def test_a_limit_removed_while_guarded_reads_as_endless_headroom(
            self, tmp_path: Path) -> None:
        probe = MemcgProbe(memcg_dir(tmp_path, str(256 * MIB), 250 * MIB, 0), "/box")
        try:
            (tmp_path / "box" / "memory.limit_in_bytes").write_text(f"{(1 << 63) - 4096}\n")
            seen = probe.sample(0.0)
            verdict = Assessor(Thresholds(kill_below=Amount(bytes=50 * MIB))).assess(
                seen, rig_of(0).domain.trend)
            assert verdict.level is Level.OK
        finally:
            probe.close()


def test_the_system_probe_reads_meminfo_once_per_look(tmp_path: Path) -> None:
    (tmp_path / "meminfo").write_text(
        "MemTotal:       16384 kB\nMemFree:    1 kB\nMemAvailable:    8192 kB\n"
        "SwapTotal:     1024 kB\nSwapFree:      512 kB\n")
    probe = SystemProbe(str(tmp_path), with_psi=False)
    try:
        assert probe.sample(2.0) == Sample(2.0, 8192 * 1024, 16384 * 1024, 512 * 1024,
                                           1024 * 1024)
        assert probe.quick() == (8192 * 1024, 16384 * 1024)
    finally:
        probe.close()


class TestServe:
    def test_a_waker_brings_a_proper_look_and_sigterm_ends_the_loop(self) -> None:
        rig = rig_of(12 * GIB)
        read_end, write_end = os.pipe()
        os.set_blocking(read_end, False)

        class Pipe:
            def fileno(self) -> int:
                return read_end

            def close(self) -> None:
                os.close(read_end)

        def drain() -> None:
            os.read(read_end, 64)

        waker = Waker(Pipe(), select.POLLIN, drain)
        ready = threading.Event()

        def poke() -> None:
            ready.wait(5)
            os.write(write_end, b"x")
            threading.Timer(0.2, os.kill, (os.getpid(), signal.SIGTERM)).start()

        threading.Thread(target=poke).start()
        with signals_restored():
            serve(rig.guard, [waker], ready.set, lambda: None)
        waker.close()
        os.close(write_end)
        # The first look and the woken one are proper looks; the rest were quiet.
        assert rig.probe.samples == 2
        assert rig.guard.counters.looks == rig.probe.samples + rig.probe.quicks


def test_a_v2_cgroup_reads_its_own_pressure_when_a_threshold_needs_it(tmp_path: Path) -> None:
    box = tmp_path / "box"
    box.mkdir()
    (box / "memory.max").write_text(f"{256 * MIB}\n")
    (box / "memory.current").write_text(f"{200 * MIB}\n")
    (box / "memory.stat").write_text(f"anon {150 * MIB}\ninactive_file {50 * MIB}\n")
    (box / "memory.pressure").write_text(
        "some avg10=12.50 avg60=3.00 avg300=1.00 total=123\n"
        "full avg10=4.25 avg60=1.00 avg300=0.50 total=45\n")
    mount = MemcgMount(2, str(tmp_path))
    with_psi, without = MemcgProbe(mount, "/box", with_psi=True), MemcgProbe(mount, "/box")
    try:
        assert with_psi.sample(0.0) == Sample(0.0, 106 * MIB, 256 * MIB, psi_some_avg10=12.5,
                                              psi_full_avg10=4.25)
        assert without.sample(0.0) == Sample(0.0, 106 * MIB, 256 * MIB)
        (box / "memory.max").write_text("max\n")
        assert without.quick()[1] == (1 << 63) - 4096
    finally:
        with_psi.close()
        without.close()
