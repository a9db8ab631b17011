"""Global OOMs the guest survives: a real out-of-memory in the root cgroup, and
SysRq-f. The raw report is checked for the victim and the constraint, and oomlens's
rules over the kernel's own task table (global totalpages) name the same victim."""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from guestlib import Record, SandboxFactory, await_oom, died_of_sigkill, kmsg_from_now, swap_state

from oomlens.kernel.domain import global_totalpages
from oomlens.kernel.select import select_bad_process
from oomlens.system.meminfo import read_meminfo
from oomlens.system.sandbox import MIB
from oomlens.system.snapshot import PAGE_SIZE

pytestmark = pytest.mark.guest
GLOBAL_OOM_TIMEOUT_S = 120.0


@contextlib.contextmanager
def unkillable_self() -> Iterator[None]:
    """This pytest process at -1000 for the block, so a global OOM cannot take it."""
    path = Path("/proc/self/oom_score_adj")
    before = path.read_text().strip()
    path.write_text("-1000")
    try:
        yield
    finally:
        path.write_text(before)


def _adj_zero() -> None:
    with open("/proc/self/oom_score_adj", "w") as f:  # undo the inherited -1000
        f.write("0")


def _global_totalpages() -> int:
    info = read_meminfo()
    return global_totalpages(info.mem_total_kib, info.swap_total_kib, PAGE_SIZE)


def test_global_oom_report_names_the_victim(
    reap: list[subprocess.Popen[bytes]], record_property: Record
) -> None:
    with swap_state(on=False), unkillable_self(), kmsg_from_now() as reader:
        totalpages = _global_totalpages()
        tail = subprocess.Popen(["tail", "/dev/zero"], stdout=subprocess.DEVNULL,
                                preexec_fn=_adj_zero)  # noqa: PLW1509
        reap.append(tail)
        oom = await_oom(reader, lambda k: k.pid == tail.pid, timeout=GLOBAL_OOM_TIMEOUT_S)
        assert died_of_sigkill(tail), f"tail exited with {tail.returncode}"
    header = oom.messages[0]
    oom_kill_line = oom.line("oom-kill:")
    tasks = oom.tasks()
    predicted = select_bad_process(tasks, totalpages)
    record_property("victim", f"{oom.killed.pid} ({oom.killed.comm})")
    record_property("header", header)
    record_property("oom_kill_line", oom_kill_line)
    record_property("killed_line", oom.line("Out of memory: Killed process"))
    record_property("table_rows", len(tasks))
    record_property("totalpages", totalpages)
    record_property("predicted_from_table", None if predicted is None else predicted.pid)
    # Whoever's allocation failed invokes the killer (tail, or the -1000 pytest).
    assert " invoked oom-killer: " in header and "order=0," in header, header
    assert oom.killed.pid == tail.pid and oom.killed.comm == "tail"
    assert not oom.killed.memcg
    assert "constraint=CONSTRAINT_NONE" in oom_kill_line
    assert "global_oom" in oom_kill_line
    assert f"pid={tail.pid}," in oom_kill_line
    assert os.getpid() in {t.pid for t in tasks}, "the -1000 pytest is listed in the table"
    assert predicted is not None and predicted.pid == tail.pid


def test_sysrq_f_kills_the_predicted_task(
    sandbox: SandboxFactory, record_property: Record
) -> None:
    with swap_state(on=True):
        # The sandbox only keeps the hog contained: SysRq-f is a global OOM.
        hog = sandbox(64 * MIB).start_hog(16, 1000)
        with kmsg_from_now() as reader:
            totalpages = _global_totalpages()
            Path("/proc/sysrq-trigger").write_text("f")
            oom = await_oom(reader, lambda k: True)
        assert died_of_sigkill(hog.process)
    everything = [r.message for r in oom.everything]
    tasks = oom.tasks()
    predicted = select_bad_process(tasks, totalpages)
    record_property("victim", f"{oom.killed.pid} ({oom.killed.comm})")
    record_property("header", oom.messages[0])
    record_property("totalpages", totalpages)
    record_property("predicted_from_table", None if predicted is None else predicted.pid)
    assert any("Manual OOM execution" in m for m in everything)
    assert "order=-1" in oom.messages[0]
    assert "constraint=CONSTRAINT_NONE" in oom.line("oom-kill:")
    assert oom.killed.pid == hog.pid
    assert predicted is not None and predicted.pid == hog.pid
