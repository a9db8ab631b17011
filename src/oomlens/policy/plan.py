"""What a change of `oom_score_adj` would do, before anything is written: the steps
(pid, command, old -> new), the processes left alone and why, and the processes the
kernel would change too because they share the memory of a target. Pure: takes
snapshot processes, returns values.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from oomlens.kernel.task import OOM_SCORE_ADJ_MAX, OOM_SCORE_ADJ_MIN
from oomlens.system.snapshot import Process


@dataclass(frozen=True, slots=True)
class Step:
    """One process and the value it is to get."""

    process: Process
    new: int

    @property
    def old(self) -> int:
        return self.process.task.oom_score_adj

    @property
    def changes(self) -> bool:
        return self.old != self.new


@dataclass(frozen=True, slots=True)
class Plan:
    """Steps in pid order; `kernel_threads`: selected kernel threads left alone (the
    OOM killer never kills them, and their value means nothing)."""

    steps: tuple[Step, ...]
    kernel_threads: tuple[Process, ...]


def check_score(value: int) -> int:
    """`oom_score_adj` bounds (include/uapi/linux/oom.h); the kernel answers EINVAL
    outside them (fs/proc/base.c: oom_score_adj_write())."""
    if not OOM_SCORE_ADJ_MIN <= value <= OOM_SCORE_ADJ_MAX:
        raise ValueError(f"oom_score_adj must be in {OOM_SCORE_ADJ_MIN}..{OOM_SCORE_ADJ_MAX}, "
                         f"not {value}")
    return value


def with_descendants(processes: Sequence[Process], pids: Iterable[int]) -> set[int]:
    """`pids` and every process below them in the parent tree (`--children`)."""
    children: dict[int, list[int]] = {}
    for proc in processes:
        children.setdefault(proc.ppid, []).append(proc.pid)
    found: set[int] = set()
    todo = list(pids)
    while todo:
        pid = todo.pop()
        if pid not in found:
            found.add(pid)
            todo.extend(children.get(pid, ()))
    return found


def build_plan(selected: Sequence[Process], new: int) -> Plan:
    """Steps for the selected processes; kernel threads are never touched."""
    check_score(new)
    ordered = sorted(selected, key=lambda p: p.pid)
    return Plan(
        steps=tuple(Step(p, new) for p in ordered if not p.task.is_kthread),
        kernel_threads=tuple(p for p in ordered if p.task.is_kthread),
    )


def shared_mm_suspects(plan: Plan, processes: Sequence[Process]) -> dict[int, list[Process]]:
    """Processes outside the plan that may share a target's memory, by target pid.

    fs/proc/base.c: __set_oom_adj() also sets the value of every other process that
    shares the target's mm (CLONE_VM without CLONE_THREAD: MMF_MULTIPROCESS), except
    vfork children. Processes sharing one mm read the same mm counters, so equal,
    non-zero counters single out the few pairs worth confirming with kcmp(KCMP_VM).
    """
    planned = {step.process.pid for step in plan.steps}
    by_counters: dict[tuple[int, int, int, int, int], list[Process]] = {}
    for proc in processes:
        if proc.task.has_mm and not proc.task.is_kthread and proc.task.rss_pages:
            by_counters.setdefault(proc.task.mm_counters, []).append(proc)
    suspects: dict[int, list[Process]] = {}
    for step in plan.steps:
        peers = by_counters.get(step.process.task.mm_counters, [])
        others = [p for p in peers if p.pid not in planned]
        if others and step.process.task.rss_pages:
            suspects[step.process.pid] = others
    return suspects
