"""Another writer's line inside a report's task table (report/parser.py).

Each dump_task() row is its own printk record, and oom_lock serialises only OOM
reports: any other CPU may log between two rows (a driver, the audit subsystem).
The parser's docstring says such lines may interleave; the rows after one must
still be the report's. Found by tests/kernel/test_report_real.py's helper
(tests/fixtures/kernelreport.py), which counts row lines against parsed rows.
"""

from __future__ import annotations

from oomlens.report.diagnose import diagnose
from oomlens.report.pipeline import events_in

REPORT = [
    "python invoked oom-killer: gfp_mask=0xcc0(GFP_KERNEL), order=0, oom_score_adj=0",
    "CPU: 0 UID: 0 PID: 8391 Comm: python Not tainted 6.18.44-fc-v509 #1 PREEMPT(none)",
    "memory: usage 65536kB, limit 65536kB, failcnt 0",
    "memory+swap: usage 65536kB, limit 65536kB, failcnt 0",
    "Tasks state (memory values in pages):",
    "[  pid  ]   uid  tgid total_vm      rss rss_anon rss_file rss_shmem pgtables_bytes "
    "swapents oom_score_adj name",
    "[   8389]     0  8389     5771     4987     3488     1499         0    86016        0"
    "           100 python",
    "e1000e 0000:00:19.0 eth0: NIC Link is Up 1000 Mbps Full Duplex, Flow Control: None",
    "[   8390]     0  8390     8331     7568     6048     1520         0   102400        0"
    "             0 python",
    "[   8391]     0  8391     9099     8195     6688     1507         0   110592        0"
    "             0 python",
    "oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset=/,mems_allowed=0,"
    "oom_memcg=/t,task_memcg=/t,task=python,pid=8391,uid=0",
    "Memory cgroup out of memory: Killed process 8391 (python) total-vm:36396kB, "
    "anon-rss:26752kB, file-rss:6028kB, shmem-rss:0kB, UID:0 pgtables:108kB "
    "oom_score_adj:0",
]


def test_a_foreign_line_inside_the_task_table_loses_no_row() -> None:
    wire = "".join(f"6,{seq},{4_324_263_000 + seq},-;{m}\n" for seq, m in enumerate(REPORT))
    (event,) = events_in([wire.encode()], "kmsg")
    assert [row.pid for row in event.tasks] == [8389, 8390, 8391]
    diagnosis = diagnose(event)
    assert diagnosis.predicted_pid == 8391 and diagnosis.choice_checks_out is True
