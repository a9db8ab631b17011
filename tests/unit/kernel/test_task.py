"""kernel/task.py: which tasks the OOM killer can never pick (mm/oom_kill.c:
oom_unkillable_task(), oom_badness()) and the Task's derived page counts."""

from __future__ import annotations

import pytest

from oomlens.kernel.task import (
    OOM_SCORE_ADJ_MAX,
    OOM_SCORE_ADJ_MIN,
    Ineligible,
    Task,
    ineligible_reason,
)


def task(**changes: object) -> Task:
    fields: dict[str, object] = {
        "pid": 4242, "comm": "worker", "oom_score_adj": 0, "rss_anon_pages": 1000,
        "rss_file_pages": 200, "rss_shmem_pages": 30, "swapents": 7, "pgtables_bytes": 16384,
    }
    fields.update(changes)
    return Task(**fields)  # type: ignore[arg-type]


def test_limits() -> None:
    assert (OOM_SCORE_ADJ_MIN, OOM_SCORE_ADJ_MAX) == (-1000, 1000)


def test_ordinary_process_is_eligible() -> None:
    assert ineligible_reason(task()) is None


def test_kernel_thread() -> None:
    kthread = task(is_kthread=True, has_mm=False, rss_anon_pages=0, rss_file_pages=0)
    assert ineligible_reason(kthread) is Ineligible.KTHREAD


def test_kernel_thread_with_a_borrowed_mm_is_still_ineligible() -> None:
    # kthread_use_mm(): a kernel thread can have an mm, PF_KTHREAD still rules it out.
    assert ineligible_reason(task(is_kthread=True, has_mm=True)) is Ineligible.KTHREAD


def test_global_init() -> None:
    assert ineligible_reason(task(pid=1, is_global_init=True)) is Ineligible.GLOBAL_INIT


def test_pid_1_of_a_child_namespace_is_eligible() -> None:
    # is_global_init() is about the initial pid namespace: a container's init can die.
    assert ineligible_reason(task(pid=1, is_global_init=False)) is None


def test_no_mm_zombie() -> None:
    zombie = task(has_mm=False, rss_anon_pages=0, rss_file_pages=0, rss_shmem_pages=0)
    assert ineligible_reason(zombie) is Ineligible.NO_MM


def test_oom_score_adj_min() -> None:
    assert ineligible_reason(task(oom_score_adj=-1000)) is Ineligible.OOM_SCORE_ADJ_MIN


@pytest.mark.parametrize("adj", [-999, -1, 0, 1, 1000])
def test_any_other_adj_is_eligible(adj: int) -> None:
    assert ineligible_reason(task(oom_score_adj=adj)) is None


def test_reasons_explain_themselves() -> None:
    assert "kernel thread" in Ineligible.KTHREAD
    assert "-1000" in Ineligible.OOM_SCORE_ADJ_MIN
    assert len({str(r) for r in Ineligible}) == len(Ineligible)


def test_rss_pages_is_anon_file_shmem() -> None:
    # get_mm_rss(): MM_FILEPAGES + MM_ANONPAGES + MM_SHMEMPAGES (swap is separate).
    assert task().rss_pages == 1230


@pytest.mark.parametrize(
    ("pgtables_bytes", "page_size", "pages"),
    [(16384, 4096, 4), (16383, 4096, 3), (4095, 4096, 0), (65536, 16384, 4), (0, 4096, 0)],
)
def test_pgtables_pages_truncates(pgtables_bytes: int, page_size: int, pages: int) -> None:
    assert task(pgtables_bytes=pgtables_bytes, page_size=page_size).pgtables_pages == pages


def test_task_is_frozen() -> None:
    t = task()
    with pytest.raises(AttributeError):
        t.oom_score_adj = 5  # type: ignore[misc]
