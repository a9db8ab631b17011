"""The lab's own parsing, on the host without booting anything: the kernel's OOM task
table (both column layouts; tests/fixtures/tasktable.py, shared with tests/kernel),
junit XML from the guest, module dependencies."""

from __future__ import annotations

import labvm
import pytest
from tasktable import parse_task_table, table_tasks

# mm/oom_kill.c: dump_task(), printk formats of 6.1 and of 6.9+ (split rss columns).
V6_1 = [
    "Tasks state (memory values in pages):",
    "[  pid  ]   uid  tgid total_vm      rss pgtables_bytes swapents oom_score_adj name",
    "[    122]     0   122    16938    14465   159744        0          -300 python",
    "[    124]     0   124     4392     3166    69632      512           500 my (odd) name",
    "Memory cgroup out of memory: Killed process 124 (my (odd) name) total-vm:17568kB",
]
V6_9 = [
    "Tasks state (memory values in pages):",
    "[  pid  ]   uid  tgid total_vm      rss rss_anon rss_file rss_shmem pgtables_bytes "
    "swapents oom_score_adj name",
    "[   4711]  1000  4711    70000    5000     4000      900       100   200704"
    "        7             0 worker",
]


def test_task_table_6_1_layout() -> None:
    rows = parse_task_table(V6_1)
    assert rows is not None
    assert [r.pid for r in rows] == [122, 124]
    assert rows[1].name == "my (odd) name"
    tasks = table_tasks(rows)
    assert tasks[0].rss_pages == 14465 and tasks[0].oom_score_adj == -300
    assert tasks[1].swapents == 512 and tasks[1].pgtables_bytes == 69632
    assert [t.scan_order for t in tasks] == [0, 1]


def test_task_table_split_rss_layout() -> None:
    rows = parse_task_table(V6_9)
    assert rows is not None
    (task,) = table_tasks(rows)
    assert (task.rss_anon_pages, task.rss_file_pages, task.rss_shmem_pages) == (4000, 900, 100)
    assert task.swapents == 7 and task.pgtables_bytes == 200704 and task.comm == "worker"
    assert rows[0].values["tgid"] == 4711 and rows[0].values["rss"] == 5000


def test_task_table_last_one_wins_and_stray_lines_are_passed_over() -> None:
    """The last OOM's table counts; another CPU's line inside it is not a row; the
    table ends at `oom-kill:`."""
    messages = [
        *V6_1[:-1], "oom-kill:constraint=CONSTRAINT_MEMCG,task=python,pid=122",
        *V6_9[:3], "some other CPU's printk",
        "[   4712]  1000  4712    70000     300      200      100         0    65536"
        "        0          -100  two  spaces",
        "oom-kill:constraint=CONSTRAINT_MEMCG,task=worker,pid=4711",
        "[      9] not a row of the table",
    ]
    rows = parse_task_table(messages)
    assert rows is not None
    assert [(r.pid, r.name) for r in rows] == [(4711, "worker"), (4712, " two  spaces")]
    assert [t.scan_order for t in table_tasks(rows)] == [0, 1]
    assert table_tasks(rows)[1].oom_score_adj == -100


def test_task_table_missing_or_malformed() -> None:
    assert parse_task_table(["Mem-Info:", "oom-kill:pid=1"]) is None
    with pytest.raises(ValueError, match="does not fit the header"):
        parse_task_table([*V6_1[:2], "[    122]     0   122    16938    14465 python"])


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
