"""The lab's own parsing, on the host without booting anything: the kernel's OOM task
table as the guest tests read it (both column layouts, through oomlens.report:
tests/fixtures/kernelreport.py, shared with tests/kernel), junit XML from the guest,
module dependencies."""

from __future__ import annotations

import labvm
import pytest
from kernelreport import event_of_kill, report_tasks

from oomlens.system.kmsg import KmsgRecord

# mm/oom_kill.c: dump_task(), printk formats of 6.1 and of 6.9+ (split rss columns).
V6_1 = [
    "python invoked oom-killer: gfp_mask=0xcc0(GFP_KERNEL), order=0, oom_score_adj=0",
    "Tasks state (memory values in pages):",
    "[  pid  ]   uid  tgid total_vm      rss pgtables_bytes swapents oom_score_adj name",
    "[    122]     0   122    16938    14465   159744        0          -300 python",
    "[    124]     0   124     4392     3166    69632      512           500 my (odd) name",
    "oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset=/,mems_allowed=0,"
    "oom_memcg=/t,task_memcg=/t,task=my (odd) name,pid=124,uid=0",
    "Memory cgroup out of memory: Killed process 124 (my (odd) name) total-vm:17568kB, "
    "anon-rss:12664kB, file-rss:0kB, shmem-rss:0kB, UID:0 pgtables:68kB oom_score_adj:500",
]
V6_9 = [
    "worker invoked oom-killer: gfp_mask=0xcc0(GFP_KERNEL), order=0, oom_score_adj=0",
    "Tasks state (memory values in pages):",
    "[  pid  ]   uid  tgid total_vm      rss rss_anon rss_file rss_shmem pgtables_bytes "
    "swapents oom_score_adj name",
    "[   4711]  1000  4711    70000    5000     4000      900       100   200704"
    "        7             0 worker",
    "[   4712]  1000  4712    70000     300      200      100         0    65536"
    "        0          -100  two  spaces",
    "oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset=/,mems_allowed=0,"
    "oom_memcg=/t,task_memcg=/t,task=worker,pid=4711,uid=1000",
    "Memory cgroup out of memory: Killed process 4711 (worker) total-vm:280000kB, "
    "anon-rss:16000kB, file-rss:3600kB, shmem-rss:400kB, UID:1000 pgtables:196kB "
    "oom_score_adj:0",
]


def records(messages: list[str]) -> list[KmsgRecord]:
    return [KmsgRecord(6, seq, 1_000_000 + seq, m) for seq, m in enumerate(messages, 1)]


def test_task_table_6_1_layout() -> None:
    event = event_of_kill(records(V6_1), 124)
    assert event is not None
    tasks = report_tasks(event)
    assert [t.pid for t in tasks] == [122, 124]
    assert tasks[1].comm == "my (odd) name"
    assert tasks[0].rss_pages == 14465 and tasks[0].oom_score_adj == -300
    assert tasks[1].swapents == 512 and tasks[1].pgtables_bytes == 69632
    assert [t.scan_order for t in tasks] == [0, 1]


def test_task_table_split_rss_layout() -> None:
    event = event_of_kill(records(V6_9), 4711)
    assert event is not None
    task, other = report_tasks(event)
    assert (task.rss_anon_pages, task.rss_file_pages, task.rss_shmem_pages) == (4000, 900, 100)
    assert task.swapents == 7 and task.pgtables_bytes == 200704 and task.comm == "worker"
    assert other.oom_score_adj == -100 and other.comm == "two  spaces"


def test_the_table_of_the_named_kill() -> None:
    """Two OOMs in one capture: each kill gets its own table, never a neighbour's."""
    both = records([*V6_1, *V6_9])
    first, second = event_of_kill(both, 124), event_of_kill(both, 4711)
    assert first is not None and second is not None
    assert [t.pid for t in report_tasks(first)] == [122, 124]
    assert [t.pid for t in report_tasks(second)] == [4711, 4712]
    assert event_of_kill(both, 999) is None


def test_a_row_that_does_not_fit_the_header_is_an_error() -> None:
    """A table that lost a row would make a wrong prediction look like the kernel's."""
    short = [*V6_1[:3], "[    122]     0   122    16938    14465 python", *V6_1[4:]]
    event = event_of_kill(records(short), 124)
    assert event is not None
    with pytest.raises(ValueError, match=r"2 row lines, [01] rows parsed"):
        report_tasks(event)


def test_parse_junit_outcomes_and_properties() -> None:
    xml = """<testsuites><testsuite>
      <testcase classname="tests.lab.guest.test_x" name="test_a[p1]" time="1.5">
        <properties><property name="victim" value="124"/></properties></testcase>
      <testcase classname="tests.lab.guest.test_x" name="test_b" time="0.1">
        <failure message="assert 1 == 2">trace</failure></testcase>
      <testcase classname="tests.lab.guest.test_x" name="test_c" time="0">
        <skipped type="pytest.xfail" message="known bug"/></testcase>
      <testcase classname="tests.lab.guest.test_x" name="test_d" time="0">
        <skipped type="pytest.skip" message="no swap"/></testcase>
    </testsuite></testsuites>"""
    cases = labvm.parse_junit(xml)
    assert [(c.function, c.outcome) for c in cases] == [
        ("test_a", "passed"), ("test_b", "failed"), ("test_c", "xfailed"), ("test_d", "skipped"),
    ]
    assert cases[0].properties == (("victim", "124"),)
    assert cases[1].message == "assert 1 == 2" and cases[1].details == "trace"


def test_modinfo_depends() -> None:
    blob = b"\x7fELF...\0license=GPL\0depends=virtio,9pnet,virtio_ring\0retpoline=Y\0"
    assert labvm._modinfo_depends(blob) == ["virtio", "9pnet", "virtio_ring"]
    assert labvm._modinfo_depends(b"\0depends=\0name=x\0") == []
    assert labvm._modinfo_depends(b"\0name=x\0") == []


def test_failure_report_names_the_error() -> None:
    result = labvm.LabResult(command=["qemu"], release="6.1.0-56-amd64",
                             error="guest did not boot within 90 s",
                             console="line1\nKernel panic - not syncing: VFS")
    text = result.describe_failure()
    assert "FAILED (guest did not boot within 90 s)" in text
    assert "Kernel panic - not syncing" in text
    assert not result.ok
