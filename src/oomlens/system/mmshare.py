"""Which processes share one address space (an mm: CLONE_VM without CLONE_THREAD).

The kernel kills them together (mm/oom_kill.c: __oom_kill_process()) and sets their
oom_score_adj together (fs/proc/base.c: __set_oom_adj()). kcmp(KCMP_VM) says for sure
(system/oomadj.py: shares_mm), one pair at a time, so the pairs worth asking about
are narrowed first, without I/O beyond one read per suspect:
- the counters that live in the mm (anon, file, shmem, swap, page tables) read the
  same from every process on it;
- so do the mm's addresses of code and stack in /proc/<pid>/stat (fields 26-28,
  fs/proc/array.c: do_task_stat()), which address space layout randomisation makes
  differ between two runs of one program. A reader without ptrace access to the
  process (another user's, without CAP_SYS_PTRACE) sees 0 there.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence

from oomlens.system.procfs import read_record
from oomlens.system.snapshot import Process

MmGroups = Mapping[int, frozenset[int]]
"""pid -> every pid sharing its mm (itself included); a process alone is absent."""

# kcmp() calls one look may make (about 10 us each): enough for every real case;
# thousands of identical idle processes without ASLR are left unconfirmed.
KCMP_BUDGET = 10_000
# proc(5) numbers the stat fields from 1; after the comm's ")" the split starts at 3.
_START_CODE, _START_STACK = 26 - 3, 28 - 3


def mm_suspects(processes: Iterable[Process],
                layout: Callable[[int], Hashable] | None = None) -> list[list[Process]]:
    """Sets of two or more processes that may share one mm: equal, non-zero counters
    and, with `layout(pid)`, an equal layout."""
    by_counters: dict[Hashable, list[Process]] = {}
    for proc in processes:
        task = proc.task
        if task.has_mm and not task.is_kthread and task.rss_pages:
            by_counters.setdefault(task.mm_counters, []).append(proc)
    groups = [group for group in by_counters.values() if len(group) > 1]
    if layout is None:
        return groups
    by_layout: dict[Hashable, list[Process]] = {}
    for n, group in enumerate(groups):
        for proc in group:
            by_layout.setdefault((n, layout(proc.pid)), []).append(proc)
    return [group for group in by_layout.values() if len(group) > 1]


def confirm_mm_groups(
    suspects: Iterable[Sequence[Process]], same_mm: Callable[[int, int], bool | None],
    budget: int = KCMP_BUDGET,
) -> tuple[dict[int, frozenset[int]], list[tuple[int, int]]]:
    """The suspects that really share an mm (`same_mm(a, b)`: True, False, or None
    when the kernel would not say), and the pairs left unconfirmed: those it would
    not say about, and those beyond `budget` questions."""
    groups: dict[int, frozenset[int]] = {}
    unconfirmed: list[tuple[int, int]] = []
    for suspect in suspects:
        left = [p.pid for p in suspect]
        while len(left) > 1:
            first, rest = left[0], left[1:]
            asked = rest[:budget]
            budget -= len(asked)
            answers = {pid: same_mm(first, pid) for pid in asked}
            answers.update(dict.fromkeys(rest[len(asked):]))
            unconfirmed.extend((first, pid) for pid, same in answers.items() if same is None)
            group = frozenset([first, *(pid for pid, same in answers.items() if same)])
            if len(group) > 1:
                groups.update(dict.fromkeys(group, group))
            left = [pid for pid in rest if pid not in group]
    return groups, unconfirmed


def mm_layout(proc_root: str, pid: int) -> tuple[int, ...] | None:
    """(start_code, end_code, start_stack) of the process's mm, or None when it is
    gone or unreadable."""
    try:
        text = read_record(f"{proc_root}/{pid}/stat").decode("utf-8", "replace")
    except OSError:
        return None
    fields = text[text.rindex(")") + 2:].split()
    try:
        return tuple(int(f) for f in fields[_START_CODE:_START_STACK + 1])
    except ValueError:
        return None


def shared_mm_groups(processes: Iterable[Process], proc_root: str = "/proc",
                     ) -> tuple[dict[int, frozenset[int]], list[tuple[int, int]]]:
    """Which of `processes` share an mm, and the pairs that could not be confirmed.
    kcmp() knows the pids of our own pid namespace only: with another `proc_root`
    every suspect pair stays unconfirmed."""
    from oomlens.system.oomadj import shares_mm

    suspects = mm_suspects(processes, lambda pid: mm_layout(proc_root, pid))
    if proc_root != "/proc":
        return confirm_mm_groups(suspects, lambda a, b: None)
    return confirm_mm_groups(suspects, shares_mm)
