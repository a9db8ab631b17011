"""`oom_adj` (deprecated, -17..15) and `oom_score_adj` (-1000..1000).

fs/proc/base.c: oom_adj_write() maps a written oom_adj to oom_score_adj
(15 -> 1000, else oom_adj * 1000 / 17, so -17 -> -1000); oom_adj_read() maps back
(1000 -> 15, else oom_score_adj * 17 / 1000, clamped to 15: 942..999 would give 16
and read as 15, as measured on 6.1 in the kernel lab), which is lossy: 500 reads as
8, and writing 8 gives 470. Both divisions are C divisions of possibly negative values.
"""

from __future__ import annotations

from oomlens.kernel.cdiv import c_div
from oomlens.kernel.task import OOM_SCORE_ADJ_MAX, OOM_SCORE_ADJ_MIN

OOM_ADJ_MIN = -17
OOM_ADJ_MAX = 15
OOM_DISABLE = -17


def oom_adj_to_score_adj(oom_adj: int) -> int:
    """The oom_score_adj the kernel stores when `oom_adj` is written."""
    if not OOM_ADJ_MIN <= oom_adj <= OOM_ADJ_MAX:
        raise ValueError(f"oom_adj must be in {OOM_ADJ_MIN}..{OOM_ADJ_MAX}, not {oom_adj}")
    if oom_adj == OOM_ADJ_MAX:
        return OOM_SCORE_ADJ_MAX
    return c_div(oom_adj * OOM_SCORE_ADJ_MAX, -OOM_DISABLE)


def score_adj_to_oom_adj(oom_score_adj: int) -> int:
    """What `/proc/<pid>/oom_adj` reads for a given oom_score_adj."""
    if not OOM_SCORE_ADJ_MIN <= oom_score_adj <= OOM_SCORE_ADJ_MAX:
        raise ValueError(f"oom_score_adj must be in -1000..1000, not {oom_score_adj}")
    return min(c_div(oom_score_adj * -OOM_DISABLE, OOM_SCORE_ADJ_MAX), OOM_ADJ_MAX)
