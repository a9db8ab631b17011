"""`oomlens report` against the kernel: real OOM reports, made at test time in
sandbox memcgs, read back the way `oomlens report` reads them (/dev/kmsg records
in their wire format through `events_in`; log files through `investigate`; the
command itself on the live ring buffer), and compared with what the kernel did:
whom it killed (the sandbox saw that pid die of SIGKILL), the limit the test set,
the memcg's oom_kill counter, the pids, comms and oom_score_adj values of the
processes the test started.

The kernel prints the full report of at most 10 kills per 5 s (mm/oom_kill.c:
oom_rs, DEFAULT_RATELIMIT_INTERVAL 5 * HZ, DEFAULT_RATELIMIT_BURST 10); every kill
before it in that window, this file's or another test's, uses the same budget.
Each test that needs full reports first waits, if needed, until the ring buffer
shows few enough recent kills (`await_report_budget`); the burst test, which uses
all of it, leaves a fresh window behind it.
"""

from __future__ import annotations

import io
import json
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from kernelreport import report_events, report_tasks

from oomlens.cli.env import Env, ExitStatus
from oomlens.cli.main import main
from oomlens.kernel.badness import oom_badness
from oomlens.postmortem import investigate
from oomlens.report.diagnose import Diagnosis, diagnose
from oomlens.report.model import OomEvent, Trigger
from oomlens.report.schema import event_json
from oomlens.system.kmsg import KmsgReader, KmsgRecord, parse_killed_process
from oomlens.system.logs import kmsg_wire_lines, parse_btime
from oomlens.system.sandbox import MIB, Hog, OomKill, SandboxError, SandboxMemcg

pytestmark = pytest.mark.kernel
SandboxFactory = Callable[..., SandboxMemcg]  # the `sandbox` fixture (tests/conftest.py)

PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
PAGE_KB = PAGE_SIZE // 1024
# mm/oom_kill.c: oom_rs; lib/ratelimit.c counts in jiffies, the ring buffer's
# stamps are local_clock(): a margin for the two clocks and the window's start.
RATELIMIT_BURST = 10
RATELIMIT_WINDOW_S = 5.0 + 0.5
# After the kill line, records still coming (a second kill, the oom_reaper's line).
SETTLE_S = 0.2
# The OOM task table and the kill line read the central part of the rss counters
# (percpu_counter_read_positive), which misses up to (batch - 1) pages per CPU;
# batch = max(32, 2 * CPUs) (lib/percpu_counter.c: compute_batch_value()).
_CPUS = os.cpu_count() or 1
PERCPU_COUNTER_SLACK = _CPUS * (max(32, 2 * _CPUS) - 1)

# Scenario of tests 1, 4, 5: in 128 MiB (32768 pages, one adj point = 32 pages),
# big: 64 MiB adj 0 (~18.8 k points with the interpreter), small: 16 MiB adj 200
# (~12.9 k), grower: 8 MiB adj 100, grows into the ~29 MiB of room (~15.1 k). The
# kernel kills big, which is neither the trigger nor the highest adj.
LIMIT_MIB = 128
HOGS = ((64, 0), (16, 200))
GROWER = (8, 100)
# Test 2: parent 256 MiB (65536 pages, one adj point = 65 pages); child A holds
# big: 100 MiB adj 0 (~28 k points) and then the trigger, which asks for 100 MiB
# when only ~75 MiB are left (~21 k at the OOM); child B holds the victim, 60 MiB
# adj 300 (~37 k: the worst by badness, not the largest), and 8 MiB adj 0. Killing
# the victim frees room for the trigger to finish: one kill.
PARENT_LIMIT_MIB = 256
CHILD_LIMIT_MIB = 512  # looser than the parent's: the parent's limit decides
CHILD_PREFIX = "oomlens-test-child-"
# Test 3: 16 processes in a row, each asking for 64 MiB in 32 MiB.
BURST_LIMIT_MIB = 32
BURST_KILLS = 16
ALLOCATE_64_MIB = "x = b'1' * (64 << 20)"


# OOMs redone because the kernel killed twice (see memcg_oom), for the summary line.
REDONE: list[str] = []


@pytest.fixture(scope="module", autouse=True)
def _report_redone(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if REDONE and capture is not None:
        with capture.global_and_fixture_disabled():
            print(f"\nreal reports: OOMs redone after a double kill: {REDONE}")


def boot_time() -> float:
    btime = parse_btime(Path("/proc/stat").read_text())
    assert btime is not None, "no btime in /proc/stat"
    return btime


def comm_of(pid: int) -> str:
    return Path(f"/proc/{pid}/comm").read_text().rstrip("\n")


# -- the report budget -----------------------------------------------------------------


def recent_oom_kills(window_s: float) -> list[float]:
    """Ring-buffer times (s since boot) of the OOM kills in the last `window_s`
    seconds, oldest first: every kill took one of oom_rs's turns, printed or not."""
    with KmsgReader() as reader:
        records = reader.read_available()
    now = time.clock_gettime(time.CLOCK_MONOTONIC)
    return sorted(r.ts_us / 1e6 for r in records
                  if r.ts_us / 1e6 >= now - window_s and parse_killed_process(r.message))


def await_report_budget(reports: int) -> float:
    """Sleep until the next `reports` OOM kills get their full report; returns the
    seconds slept. Enough: the current window began less than a window ago and holds
    at most the kills of the last window, or it is over."""
    slept = 0.0
    while True:
        kills = recent_oom_kills(RATELIMIT_WINDOW_S)
        surplus = len(kills) + reports - RATELIMIT_BURST
        if surplus <= 0:
            return slept
        wait = kills[surplus - 1] + RATELIMIT_WINDOW_S - time.clock_gettime(
            time.CLOCK_MONOTONIC) + 0.05
        time.sleep(max(wait, 0.05))
        slept += max(wait, 0.05)


# -- one memcg OOM ---------------------------------------------------------------------


@dataclass
class MemcgOom:
    """One OOM in a sandbox, with what the test knows independently of the log."""

    box: SandboxMemcg
    hogs: list[Hog]  # the grower last
    pids: set[int]  # the processes in the memcg when the OOM was triggered
    comms: dict[int, str]
    adjs: dict[int, int]  # as the test set them
    kill: OomKill
    records: list[KmsgRecord]  # from just before the trigger
    oom_kills: int  # the memcg's oom_kill counter, increase
    started_s: float  # CLOCK_MONOTONIC before the trigger
    boot_time: float

    @property
    def grower(self) -> Hog:
        return self.hogs[-1]

    def events(self) -> list[OomEvent]:
        return report_events(self.records, self.boot_time)


def memcg_oom(sandbox: SandboxFactory) -> MemcgOom:
    """Tests 1, 4, 5: HOGS and GROWER in a new sandbox; the grower grows until a kill.

    Now and then the kernel kills twice: the victim has left the task list but its
    pages are still charged when the grower's next charge fails (test_victim_prediction
    counts these, about 1 in 100). That is the kernel's business, not the report's:
    such an OOM is redone once, in a new sandbox."""
    for _ in range(2):
        oom = _memcg_oom_once(sandbox(LIMIT_MIB * MIB))
        if oom.oom_kills == 1:
            return oom
        REDONE.append(f"{oom.box.path}: {oom.oom_kills} kills")
        oom.box.close()
    pytest.fail(f"the kernel killed more than once, twice: {REDONE[-2:]}")


def _memcg_oom_once(box: SandboxMemcg) -> MemcgOom:
    hogs = [box.start_hog(size, adj) for size, adj in (*HOGS, GROWER)]
    pids = set(box.procs())
    assert pids == {h.pid for h in hogs}
    comms = {pid: comm_of(pid) for pid in pids}
    await_report_budget(1)
    before = box.oom_kill_count()
    with KmsgReader() as reader:
        reader.follow_from_end()
        started = time.clock_gettime(time.CLOCK_MONOTONIC)
        kill = box.trigger_oom(hogs[-1])
        time.sleep(SETTLE_S)
        records = reader.read_available()
        assert reader.lost == 0, f"{reader.lost} kernel log records lost"
    return MemcgOom(box, hogs, pids, comms, {h.pid: h.oom_score_adj for h in hogs}, kill,
                    records, box.oom_kill_count() - before, started, boot_time())


def the_event(oom: MemcgOom) -> tuple[OomEvent, Diagnosis, dict[str, Any]]:
    """The one event of the OOM, its diagnosis and its oomlens.report/1 form."""
    events = oom.events()
    assert len(events) == oom.oom_kills == 1, [(e.victim, e.trigger) for e in events]
    event = events[0]
    diagnosis = diagnose(event)
    return event, diagnosis, event_json(event, diagnosis)


# -- 1: a memcg OOM, the report against the kill ------------------------------------


def test_memcg_oom_report_matches_the_kill(sandbox: SandboxFactory) -> None:
    oom = memcg_oom(sandbox)
    box = oom.box
    event, diagnosis, document = the_event(oom)
    big, victim = oom.hogs[0].pid, oom.kill.victim_pid
    grower = oom.grower.pid
    assert victim == big, f"scenario did not play out: kernel killed {victim}, not {big}"

    assert document["complete"] and document["missing"] == []
    assert event.victim is not None
    assert (event.victim.pid, event.victim.comm) == (victim, oom.comms[victim])
    assert event.victim.oom_score_adj == oom.adjs[victim]
    assert event.kill_message == "Memory cgroup out of memory"
    assert (event.trigger.pid, event.trigger.comm) == (grower, oom.comms[grower])
    assert event.trigger.oom_score_adj == oom.adjs[grower]
    assert document["scope"] == "memcg" and event.constraint == "CONSTRAINT_MEMCG"
    assert event.kernel_version == os.uname().release

    memcg = event.memcg
    assert memcg is not None and memcg.memory is not None and memcg.memsw is not None
    assert (memcg.oom_memcg, memcg.task_memcg) == (box.path, box.path)
    assert memcg.memory.limit_kb == LIMIT_MIB * 1024
    assert memcg.memory.limit_kb - 64 <= memcg.memory.usage_kb <= memcg.memory.limit_kb
    assert memcg.memsw.limit_kb == LIMIT_MIB * 1024  # no swap (sandbox: memsw == limit)

    rows = {row.pid: row for row in event.tasks}
    assert set(rows) == oom.pids, "task table != the memcg's processes"
    assert {pid: row.oom_score_adj for pid, row in rows.items()} == oom.adjs
    assert {pid: row.name for pid, row in rows.items()} == oom.comms

    assert diagnosis.totalpages == LIMIT_MIB * MIB // PAGE_SIZE
    assert diagnosis.choice_checks_out is True and diagnosis.predicted_pid == victim
    assert diagnosis.main is not None and diagnosis.main.code == "memcg_limit"
    assert diagnosis.main.evidence["cgroup"] == box.path
    assert diagnosis.main.evidence["limit_kb"] == LIMIT_MIB * 1024

    # The kill line and the victim's row: the same mm, read a moment apart.
    row = rows[victim]
    assert row.rss_anon is not None and row.total_vm is not None
    assert row.pgtables_bytes is not None
    assert event.victim.anon_rss_kb is not None
    drift_kb = abs(event.victim.anon_rss_kb - row.rss_anon * PAGE_KB)
    assert drift_kb <= PERCPU_COUNTER_SLACK * PAGE_KB, (event.victim, row)
    assert event.victim.anon_rss_kb >= HOGS[0][0] * 1024  # its buffer is resident
    assert event.victim.total_vm_kb == row.total_vm * PAGE_KB
    assert event.victim.pgtables_kb == row.pgtables_bytes // 1024


# -- 2: a parent memcg's OOM over two children ---------------------------------------


@pytest.fixture
def child_memcgs(sandbox: SandboxFactory) -> Callable[[SandboxMemcg], SandboxMemcg]:
    """`child_memcgs(parent)` -> a child SandboxMemcg (limit CHILD_LIMIT_MIB) of a
    sandbox; the `sandbox` fixture closes it before its parent."""

    def make(parent: SandboxMemcg) -> SandboxMemcg:
        return sandbox(CHILD_LIMIT_MIB * MIB, CHILD_PREFIX, parent.timeout, parent=parent.path)

    return make


@dataclass
class ParentOom:
    parent: SandboxMemcg
    child_a: SandboxMemcg
    child_b: SandboxMemcg
    big: Hog  # in child A
    victim: Hog  # in child B
    small: Hog  # in child B
    trigger: Hog  # in child A, started last
    records: list[KmsgRecord]
    kills: tuple[int, int]  # the oom_kill counters of child A and child B, increase


def parent_oom(sandbox: SandboxFactory,
               child_memcgs: Callable[[SandboxMemcg], SandboxMemcg]) -> ParentOom:
    """Test 2's OOM; redone once if the kernel killed twice (see memcg_oom)."""
    for _ in range(2):
        oom = _parent_oom_once(sandbox, child_memcgs)
        if oom is not None:
            return oom
    pytest.fail(f"the kernel killed more than once, twice: {REDONE[-2:]}")


def _parent_oom_once(sandbox: SandboxFactory,
                     child_memcgs: Callable[[SandboxMemcg], SandboxMemcg]) -> ParentOom | None:
    parent = sandbox(PARENT_LIMIT_MIB * MIB)
    child_a, child_b = child_memcgs(parent), child_memcgs(parent)
    big = child_a.start_hog(100, 0)
    victim, small = child_b.start_hog(60, 300), child_b.start_hog(8, 0)
    assert parent.procs() == []  # every process is in a child
    await_report_budget(1)
    before = child_a.oom_kill_count(), child_b.oom_kill_count()

    def kills() -> tuple[int, int]:
        return child_a.oom_kill_count() - before[0], child_b.oom_kill_count() - before[1]

    with KmsgReader() as reader:
        reader.follow_from_end()
        try:
            # Charges the parent past its limit while it allocates; returns once its
            # 100 MiB are resident, that is once the kernel made room.
            trigger = child_a.start_hog(100, 0)
        except SandboxError:
            if sum(kills()) <= 1:
                raise
            trigger = None  # killed by a second kill
        assert victim.process.wait(timeout=parent.timeout) == -signal.SIGKILL
        time.sleep(SETTLE_S)
        records = reader.read_available()
        assert reader.lost == 0
    if trigger is None or sum(kills()) != 1:
        REDONE.append(f"{parent.path}: {sum(kills())} kills")
        for box in (child_a, child_b, parent):
            box.close()
        return None
    return ParentOom(parent, child_a, child_b, big, victim, small, trigger, records, kills())


def test_parent_memcg_oom_ranks_the_tasks_of_every_child(
    sandbox: SandboxFactory, child_memcgs: Callable[[SandboxMemcg], SandboxMemcg],
) -> None:
    oom = parent_oom(sandbox, child_memcgs)
    parent, child_b, records = oom.parent, oom.child_b, oom.records
    big, victim, small, trigger = oom.big, oom.victim, oom.small, oom.trigger
    # The victim's memcg counts the kill (v1: only it; v2: it and its ancestors).
    assert oom.kills == (0, 1)

    (event,) = report_events(records, boot_time())
    diagnosis = diagnose(event)
    assert event.victim is not None and event.victim.pid == victim.pid
    assert event.trigger.pid == trigger.pid
    assert event_json(event, diagnosis)["missing"] == []
    memcg = event.memcg
    assert memcg is not None and memcg.memory is not None
    assert memcg.oom_memcg == parent.path and memcg.task_memcg == child_b.path
    assert memcg.stats_path == parent.path
    assert memcg.memory.limit_kb == PARENT_LIMIT_MIB * 1024

    # The table covers the whole subtree: the processes of both children.
    assert {row.pid for row in event.tasks} == {big.pid, trigger.pid, victim.pid, small.pid}
    tasks = report_tasks(event, PAGE_SIZE)
    totalpages = PARENT_LIMIT_MIB * MIB // PAGE_SIZE
    points = {}
    for task in tasks:
        terms = oom_badness(task, totalpages)
        assert terms is not None, task
        points[task.pid] = terms.points
    assert max(points, key=lambda pid: points[pid]) == victim.pid, points
    largest = max(tasks, key=lambda t: t.rss_pages + t.swapents + t.pgtables_pages)
    assert largest.pid == big.pid, "the victim was to be the worst, not the largest"
    assert diagnosis.totalpages == totalpages
    assert diagnosis.predicted_pid == victim.pid and diagnosis.choice_checks_out is True


# -- 4: one kill in three log formats --------------------------------------------------


def dmesg_lines(records: Sequence[KmsgRecord]) -> list[str]:
    """`dmesg` without options: `[%5lu.%06lu] msg` (kernel/printk: print_time())."""
    return [f"[{r.ts_us // 1_000_000:5d}.{r.ts_us % 1_000_000:06d}] {part}\n"
            for r in records for part in r.message.split("\n")]


def syslog_lines(records: Sequence[KmsgRecord], boot: float, host: str) -> list[str]:
    """rsyslog's traditional format with the kernel's own stamp in the message:
    `Mon DD HH:MM:SS host kernel: [sec] msg`."""
    lines: list[str] = []
    for r in records:
        local = time.localtime(boot + r.ts_us / 1e6)
        stamp = f"{time.strftime('%b', local)} {local.tm_mday:2d} {time.strftime('%T', local)}"
        sec, usec = divmod(r.ts_us, 1_000_000)
        lines.extend(f"{stamp} {host} kernel: [{sec:5d}.{usec:06d}] {part}\n"
                     for part in r.message.split("\n"))
    return lines


def facts(event: OomEvent) -> dict[str, object]:
    """What the kernel printed, without where the copy came from."""
    return {
        "victim": event.victim, "trigger": event.trigger, "constraint": event.constraint,
        "oom_kill": event.oom_kill_fields, "memcg": event.memcg, "memory": event.memory,
        "columns": event.task_columns, "tasks": event.tasks,
        "kernel_version": event.kernel_version, "kill_message": event.kill_message,
        "has_header": event.has_header,
    }


def test_the_same_kill_in_three_log_formats_is_one_event(
    sandbox: SandboxFactory, tmp_path: Path,
) -> None:
    oom = memcg_oom(sandbox)
    kmsg_event, kmsg_diagnosis, _ = the_event(oom)
    header = next(r for r in oom.records if "invoked oom-killer" in r.message)
    paths = [tmp_path / "kmsg.log", tmp_path / "dmesg.log", tmp_path / "syslog"]
    paths[0].write_text("".join(line + "\n" for line in kmsg_wire_lines(oom.records)))
    paths[1].write_text("".join(dmesg_lines(oom.records)))
    paths[2].write_text("".join(syslog_lines(oom.records, oom.boot_time, "testhost")))

    merged = investigate([str(p) for p in paths])
    assert merged.problems == ()
    assert [(s.events, s.error) for s in merged.sources] == [(1, None)] * 3
    assert len(merged.events) == 1 and merged.duplicates == 2
    assert facts(merged.events[0].event) == facts(kmsg_event)

    for path in paths:  # each copy alone says the same
        (alone,) = investigate([str(path)]).events
        what = path.name
        assert facts(alone.event) == facts(kmsg_event), what
        assert alone.event.monotonic == pytest.approx(header.ts_us / 1e6, abs=1e-6), what
        assert alone.diagnosis.predicted_pid == kmsg_diagnosis.predicted_pid == oom.kill.victim_pid
        assert alone.diagnosis.choice_checks_out is True, what
        assert [f.code for f in alone.diagnosis.findings] == [
            f.code for f in kmsg_diagnosis.findings], what
    syslog = investigate([str(paths[2])]).events[0].event
    local = time.localtime(oom.boot_time + header.ts_us / 1e6)
    assert syslog.stream == "testhost"
    assert syslog.wallclock == datetime(*local[:6])


# -- 5: `oomlens report` on the live ring buffer ----------------------------------------


def test_report_command_reads_the_live_ring_buffer(
    sandbox: SandboxFactory, tmp_path: Path,
) -> None:
    oom = memcg_oom(sandbox)
    victim = oom.kill.victim_pid
    log_dir = tmp_path / "log"
    log_dir.mkdir()
    out, err = io.StringIO(), io.StringIO()
    env = Env(out, err, stdout_isatty=False, colour=False, columns=100,
              log_dir=str(log_dir), kmsg="/dev/kmsg")
    status = main(["report", "--json", "--pid", str(victim)], env)
    assert status == ExitStatus.OK, err.getvalue()
    document = json.loads(out.getvalue())
    kmsg = [(s["kind"], s["error"]) for s in document["sources"] if s["name"] == "/dev/kmsg"]
    assert kmsg == [("kmsg", None)], document["sources"]
    assert all(victim in (e["trigger"]["pid"], (e["victim"] or {}).get("pid"))
               for e in document["events"]), "--pid kept another pid's event"
    ours = [e for e in document["events"] if e["victim"] and e["victim"]["pid"] == victim
            and e["monotonic"] >= oom.started_s - 1]
    assert len(ours) == 1, ours
    event = ours[0]
    assert event["source"] == "/dev/kmsg" and event["complete"]
    assert event["victim"]["comm"] == oom.comms[victim]
    assert event["victim"]["oom_score_adj"] == oom.adjs[victim]
    assert event["trigger"]["pid"] == oom.grower.pid
    assert event["memcg"]["oom_memcg"] == oom.box.path
    assert event["analysis"]["predicted_pid"] == victim
    # Dated from the boot time (btime, whole seconds): the kill happened just now.
    assert event["time"] is not None
    when = datetime.fromisoformat(event["time"])
    assert abs((datetime.now(UTC) - when).total_seconds()) < 30, event["time"]


# -- 3: a burst of kills, most of them rate-limited ---------------------------------


def test_ratelimited_burst_gives_lone_kills_that_borrow_nothing(
    sandbox: SandboxFactory,
) -> None:
    box = sandbox(BURST_LIMIT_MIB * MIB)
    await_report_budget(RATELIMIT_BURST)  # a fresh window: the burst starts it
    try:
        pids, records, kills, lost = _burst(box)
    finally:
        await_report_budget(RATELIMIT_BURST)  # and a fresh one for whoever comes next
    assert lost == 0, f"{lost} kernel log records lost"
    assert kills == BURST_KILLS, f"oom_kill counter moved by {kills}"

    events = report_events(records, boot_time())
    assert len([e for e in events if e.victim is not None]) == kills == len(events)
    assert [e.victim.pid for e in events if e.victim] == pids, "one event per kill, in order"
    span = (events[-1].monotonic or 0) - (events[0].monotonic or 0)
    assert span < 5.0, f"the burst took {span:.2f} s: not one ratelimit window"

    diagnoses = [diagnose(e, previous)
                 for e, previous in zip(events, [None, *events[:-1]], strict=True)]
    missing = [event_json(e, d)["missing"] for e, d in zip(events, diagnoses, strict=True)]
    complete = sum(1 for m in missing if not m)
    summary = [(e.victim.pid if e.victim else None, m)
               for e, m in zip(events, missing, strict=True)]
    assert 1 <= complete <= RATELIMIT_BURST, summary
    assert all(not m for m in missing[:complete]), f"complete reports first: {summary}"
    assert complete < len(events), "no kill was rate-limited"

    for event, diagnosis in zip(events[:complete], diagnoses[:complete], strict=True):
        assert event.victim is not None and event.trigger.pid == event.victim.pid
        assert event.memcg is not None and event.memcg.oom_memcg == box.path
        assert event.memcg.memory is not None
        assert event.memcg.memory.limit_kb == BURST_LIMIT_MIB * 1024
        assert "ratelimited" not in {f.code for f in diagnosis.findings}
    for event, diagnosis, parts in zip(events[complete:], diagnoses[complete:],
                                       missing[complete:], strict=True):
        assert parts == ["header", "mem_info", "task_table"], parts
        assert event.kill_message == "Memory cgroup out of memory"
        # Nothing borrowed from the reports before it.
        assert event.tasks == [] and event.task_columns == ()
        assert event.trigger == Trigger() and event.memcg is None
        assert event.constraint is None and event.oom_kill_fields == {}
        (lone,) = [f for f in diagnosis.findings if f.code == "ratelimited"]
        assert lone.evidence["burst"] is True


def _burst(box: SandboxMemcg) -> tuple[list[int], list[KmsgRecord], int, int]:
    """BURST_KILLS processes in a row, each killed before the next starts: their
    pids, the records read, the oom_kill counter's increase, records lost."""
    pids: list[int] = []
    records: list[KmsgRecord] = []
    with KmsgReader() as reader:
        reader.follow_from_end()
        before = box.oom_kill_count()
        for _ in range(BURST_KILLS):
            process = box.spawn([sys.executable, "-I", "-S", "-c", ALLOCATE_64_MIB])
            pids.append(process.pid)
            assert process.wait(timeout=box.timeout) == -signal.SIGKILL
            records.extend(reader.read_available())  # keep up with the ring buffer
        time.sleep(SETTLE_S)
        records.extend(reader.read_available())
        return pids, records, box.oom_kill_count() - before, reader.lost
