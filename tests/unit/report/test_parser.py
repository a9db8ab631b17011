"""Report assembly: the rules that are easy to get wrong (which event a line
belongs to), on small hand-made inputs. Whole real reports are in test_corpus.py."""

from __future__ import annotations

from oomlens.report.model import LogLine, OomEvent
from oomlens.report.parser import ReportParser, parse_lines


def _parse(text: str, stream: str = "") -> list[OomEvent]:
    lines = [LogLine(t, "t", i, stream) for i, t in enumerate(text.splitlines(), 1)]
    return list(parse_lines(lines))


HEAD_618 = """\
python3 invoked oom-killer: gfp_mask=0xcc0(GFP_KERNEL), order=0, oom_score_adj=0
CPU: 1 UID: 0 PID: 29754 Comm: python3 Not tainted 6.18.44-fc-v509 #1 PREEMPT(none)
memory: usage 403996kB, limit 403996kB, failcnt 0
memory+swap: usage 403996kB, limit 403996kB, failcnt 0
kmem: usage 1044kB, limit 9007199254740988kB, failcnt 0
Memory cgroup stats for /oomlens-test:
cache 0
rss 412622848
Tasks state (memory values in pages):
[  pid  ]   uid  tgid total_vm      rss rss_anon rss_file rss_shmem pgtables_bytes swapents oom_score_adj name
[  29752]     0 29752     5772     5020     3488     1532         0    94208        0           689 python3
[  29753]     0 29753    74892    74141    72608     1533         0   643072        0             0 tmux: client
oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset=/,mems_allowed=0-1,3,oom_memcg=/oomlens-test,task_memcg=/oomlens-test,task=tmux: client,pid=29753,uid=0
Memory cgroup out of memory: Killed process 29753 (tmux: client) total-vm:299568kB, anon-rss:290432kB, file-rss:6132kB, shmem-rss:0kB, UID:0 pgtables:628kB oom_score_adj:0
"""


def test_a_6_18_memcg_report_in_full() -> None:
    (event,) = _parse(HEAD_618)
    assert event.kernel_version == "6.18.44-fc-v509"
    assert (event.trigger.pid, event.trigger.uid, event.trigger.cpu) == (29754, 0, 1)
    assert (event.trigger.gfp_mask, event.trigger.gfp_flags) == ("0xcc0", "GFP_KERNEL")
    assert event.constraint == "CONSTRAINT_MEMCG"
    assert event.oom_kill_fields["mems_allowed"] == "0-1,3"
    assert event.oom_kill_fields["task"] == "tmux: client"
    assert event.memcg is not None and event.memcg.memory is not None
    assert event.memcg.memory.limit_kb == 403996
    assert event.memcg.oom_memcg == "/oomlens-test"
    assert event.memcg.stats == {"cache": 0, "rss": 412622848}
    assert [t.name for t in event.tasks] == ["python3", "tmux: client"]
    assert event.tasks[0].oom_score_adj == 689
    assert event.tasks[1].pgtables_bytes == 643072
    victim = event.victim
    assert victim is not None
    assert (victim.pid, victim.comm, victim.anon_rss_kb, victim.pgtables_kb) == (
        29753, "tmux: client", 290432, 628)


def test_the_reaper_line_goes_to_its_own_victim_even_after_the_next_report() -> None:
    second = HEAD_618.replace("29753", "40000").replace("tmux: client", "worker")
    reaped = "oom_reaper: reaped process 29753 (tmux: client), now anon-rss:0kB, file-rss:0kB"
    first, other = _parse(HEAD_618 + second + reaped)
    assert first.victim is not None and first.victim.reaped
    assert other.victim is not None and not other.victim.reaped


def test_a_reaper_line_for_an_unknown_pid_marks_nothing() -> None:
    (event,) = _parse(HEAD_618 + "oom_reaper: reaped process 1 (other), now anon-rss:0kB")
    assert event.victim is not None and not event.victim.reaped


def test_rate_limited_kills_are_events_of_their_own() -> None:
    lone = ("Memory cgroup out of memory: Killed process {pid} (python3) total-vm:1kB, "
            "anon-rss:{pid}kB, file-rss:0kB, shmem-rss:0kB, UID:0 pgtables:4kB oom_score_adj:0\n")
    events = _parse(HEAD_618 + lone.format(pid=1001) + lone.format(pid=1002))
    assert [e.victim.pid for e in events if e.victim] == [29753, 1001, 1002]
    assert not events[1].has_header and not events[1].tasks
    assert events[1].victim is not None and events[1].victim.anon_rss_kb == 1001


def test_oom_group_kills_belong_to_the_event() -> None:
    text = HEAD_618 + (
        "Tasks in /oomlens-test are going to be killed due to memory.oom.group set\n"
        "Memory cgroup out of memory: Killed process 29752 (python3) total-vm:1kB, "
        "anon-rss:1kB, file-rss:0kB, shmem-rss:0kB, UID:0 pgtables:4kB oom_score_adj:689\n"
    )
    (event,) = _parse(text)
    assert event.oom_group == "/oomlens-test"
    assert [v.pid for v in event.group_victims] == [29752]


def test_a_head_without_tail_does_not_take_the_next_reports_tail() -> None:
    head = HEAD_618.split("Tasks state", maxsplit=1)[0]
    events = _parse(head + HEAD_618.replace("29753", "777"))
    assert len(events) == 2
    assert events[0].victim is None and events[0].has_header and not events[0].tasks
    assert events[1].victim is not None and events[1].victim.pid == 777


def test_a_tail_after_a_complete_report_is_a_partial_event_of_its_own() -> None:
    tail = "\n".join(HEAD_618.splitlines()[8:]).replace("29753", "888")
    first, second = _parse(HEAD_618 + tail)
    assert first.victim is not None and first.victim.pid == 29753
    assert second.victim is not None and second.victim.pid == 888
    assert not second.has_header and second.memcg is not None
    assert second.memcg.memory is None and second.kernel_version is None
    assert len(second.tasks) == 2


def test_no_killable_processes_and_the_panic_that_follows() -> None:
    text = (
        "a invoked oom-killer: gfp_mask=0x100cca(GFP_HIGHUSER_MOVABLE), order=0, oom_score_adj=0\n"
        "Mem-Info:\nactive_anon:10 inactive_anon:20 isolated_anon:0\n"
        "Out of memory and no killable processes...\n"
        "Kernel panic - not syncing: System is deadlocked on memory\n"
        "Linux version 6.1.0 (boot after the panic)\n"
    )
    (event,) = _parse(text)
    assert event.no_killable and event.panic == "System is deadlocked on memory"
    assert event.memory.meminfo == {"active_anon": 10, "inactive_anon": 20, "isolated_anon": 0}


def test_an_unrelated_panic_is_not_an_oom_panic() -> None:
    (event,) = _parse(HEAD_618 + "Kernel panic - not syncing: Fatal exception in interrupt\n")
    assert event.panic is None


def test_2_6_32_per_cpu_lines_do_not_end_the_counters() -> None:
    text = (
        "java invoked oom-killer: gfp_mask=0x201da, order=0, oom_adj=0, oom_score_adj=0\n"
        "Mem-Info:\nNode 0 DMA per-cpu:\nCPU    0: hi:    0, btch:   1 usd:   0\n"
        "active_anon:100 inactive_anon:5 isolated_anon:0\n"
        " active_file:7 inactive_file:8 isolated_file:0\n"
        "Node 0 DMA free:15728kB min:4kB low:4kB high:4kB present:15332kB\n"
    )
    (event,) = _parse(text)
    assert event.trigger.oom_adj == 0 and event.trigger.oom_score_adj == 0
    assert event.memory.meminfo["active_anon"] == 100
    assert event.memory.meminfo["inactive_file"] == 8
    assert event.memory.zones[0].present_kb == 15332


def test_interleaved_hosts_are_separate_streams() -> None:
    a = [LogLine(t, "t", i, "hostA") for i, t in enumerate(HEAD_618.splitlines())]
    other = HEAD_618.replace("29753", "555")
    b = [LogLine(t, "t", i, "hostB") for i, t in enumerate(other.splitlines())]
    mixed = [line for pair in zip(a, b, strict=True) for line in pair]
    events = list(parse_lines(mixed))
    assert sorted((e.stream, e.victim.pid) for e in events if e.victim) == [
        ("hostA", 29753), ("hostB", 555)]
    assert all(len(e.tasks) == 2 for e in events)


def test_flush_emits_an_open_report() -> None:
    parser = ReportParser()
    for i, text in enumerate(HEAD_618.splitlines()[:4]):
        assert parser.feed(LogLine(text, "t", i)) == []
    (event,) = parser.flush()
    assert event.has_header and event.victim is None


def test_non_kernel_lines_are_ignored() -> None:
    line = LogLine("Killed process 1 (x) total-vm:1kB", "t", 1, kernel=False)
    assert list(parse_lines([line])) == []


def test_sacrifice_child_keeps_the_selection_and_the_child() -> None:
    text = (
        "Out of memory: Kill process 100 (parent) score 900 or sacrifice child\n"
        "Killed process 101 (child) total-vm:10kB, anon-rss:5kB, file-rss:0kB, shmem-rss:0kB\n"
    )
    (event,) = _parse(text)
    assert event.selection is not None and event.selection.pid == 100
    assert event.victim is not None and event.victim.pid == 101 and event.victim.score is None


def test_rhel_uid_variants() -> None:
    rhel6 = _parse("Killed process 2360, UID 48, (httpd) total-vm:1kB, anon-rss:2kB, file-rss:3kB\n")
    rhel7 = _parse("Killed process 2361 (httpd), UID 48, total-vm:1kB, anon-rss:2kB, file-rss:3kB, shmem-rss:0kB\n")
    for events, pid in ((rhel6, 2360), (rhel7, 2361)):
        victim = events[0].victim
        assert victim is not None
        assert (victim.pid, victim.comm, victim.uid, victim.file_rss_kb) == (pid, "httpd", 48, 3)


def test_settle_closes_a_report_at_its_kill_line_and_keeps_one_in_progress() -> None:
    parser = ReportParser()
    lines = HEAD_618.splitlines()
    for i, text in enumerate(lines[:-1]):
        parser.feed(LogLine(text, "t", i))
    assert parser.settle() == []  # header and table seen, no kill line yet
    parser.feed(LogLine(lines[-1], "t", len(lines)))
    (event,) = parser.settle()
    assert event.victim is not None and event.victim.pid == 29753 and event.tasks
    assert parser.settle() == [] and parser.flush() == []
    reaped = "oom_reaper: reaped process 29753 (tmux: client), now anon-rss:0kB, file-rss:0kB"
    parser.feed(LogLine(reaped, "t", 99))
    assert event.victim.reaped  # a settled event still gets its reaper line
