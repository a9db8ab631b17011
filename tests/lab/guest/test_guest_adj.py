"""CAP_SYS_RESOURCE in the guest: negative oom_score_adj values work, -1000 included,
and the kernel's oom_adj <-> oom_score_adj mapping is what oomlens.kernel.adj says."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from guestlib import CAP_SYS_RESOURCE, Record

from oomlens.kernel.adj import OOM_ADJ_MAX, oom_adj_to_score_adj, score_adj_to_oom_adj

pytestmark = pytest.mark.guest


def _cap_eff() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("CapEff:"):
            return int(line.split()[1], 16)
    raise AssertionError("no CapEff in /proc/self/status")


def _sleeper(reap: list[subprocess.Popen[bytes]]) -> subprocess.Popen[bytes]:
    child = subprocess.Popen(["sleep", "60"])
    reap.append(child)
    return child


def test_oom_score_adj_minus_1000_written_and_read_back(
    reap: list[subprocess.Popen[bytes]], record_property: Record
) -> None:
    assert _cap_eff() & (1 << CAP_SYS_RESOURCE), "CAP_SYS_RESOURCE missing in the guest"
    child = _sleeper(reap)
    proc = Path(f"/proc/{child.pid}")
    (proc / "oom_score_adj").write_text("-1000")
    assert int((proc / "oom_score_adj").read_text()) == -1000
    assert int((proc / "oom_adj").read_text()) == -17
    assert int((proc / "oom_score").read_text()) == 0  # OOM_SCORE_ADJ_MIN: never killed
    record_property("pid", child.pid)
    record_property("oom_score_adj", -1000)
    record_property("oom_score", 0)


def _kernel_oom_adj_reads(proc: Path) -> dict[int, int]:
    """oom_score_adj -> what the kernel's /proc/<pid>/oom_adj reads, for every value."""
    reads = {}
    for score_adj in range(-1000, 1001):
        (proc / "oom_score_adj").write_text(str(score_adj))
        reads[score_adj] = int((proc / "oom_adj").read_text())
    return reads


def test_oom_adj_mapping_matches_the_kernel(
    reap: list[subprocess.Popen[bytes]], record_property: Record
) -> None:
    """Every oom_score_adj read back as oom_adj, and every oom_adj written, against
    oomlens.kernel.adj; values where oomlens goes past OOM_ADJUST_MAX are left to
    test_oom_adj_read_is_clamped_to_15 (a known oomlens bug)."""
    proc = Path(f"/proc/{_sleeper(reap).pid}")
    reads = _kernel_oom_adj_reads(proc)
    unclamped = [s for s in reads if score_adj_to_oom_adj(s) > OOM_ADJ_MAX]
    wrong = {s: (k, score_adj_to_oom_adj(s)) for s, k in reads.items()
             if s not in unclamped and k != score_adj_to_oom_adj(s)}
    assert not wrong, f"score_adj: (kernel oom_adj, oomlens) {wrong}"
    written = {}
    for oom_adj in range(-17, 16):
        (proc / "oom_adj").write_text(str(oom_adj))
        written[oom_adj] = int((proc / "oom_score_adj").read_text())
    wrong = {a: (k, oom_adj_to_score_adj(a)) for a, k in written.items()
             if k != oom_adj_to_score_adj(a)}
    assert not wrong, f"oom_adj: (kernel oom_score_adj, oomlens) {wrong}"
    record_property("oom_score_adj_values_read", len(reads) - len(unclamped))
    record_property("oom_adj_values_written", len(written))
    record_property("left_to_the_clamp_test",
                    f"{min(unclamped)}..{max(unclamped)}" if unclamped else "none")


def test_oom_adj_read_is_clamped_to_15(
    reap: list[subprocess.Popen[bytes]], record_property: Record
) -> None:
    proc = Path(f"/proc/{_sleeper(reap).pid}")
    reads = _kernel_oom_adj_reads(proc)
    assert max(reads.values()) == OOM_ADJ_MAX  # the kernel's side
    wrong = {s: (k, score_adj_to_oom_adj(s)) for s, k in reads.items()
             if k != score_adj_to_oom_adj(s)}
    record_property("kernel_reads_for_942_999", sorted({reads[s] for s in range(942, 1000)}))
    record_property("oomlens_disagrees_on", f"{min(wrong)}..{max(wrong)}" if wrong else "none")
    assert not wrong, f"score_adj: (kernel oom_adj, oomlens) for {len(wrong)} values"
