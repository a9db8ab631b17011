"""The exporter's next victim of a real memory cgroup is the one the kernel kills.

A sandbox memcg holds three hogs; oomlens_top_candidate_badness_ratio for that
domain must name the one the kernel then kills when another grows until the memcg
is out of memory, with the share recomputed here from /proc/<pid>/status; its limit
and headroom must be the cgroup's own.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from oomlens.errors import NotFound
from oomlens.metrics import OomCollector, render_once
from oomlens.store.db import Store
from oomlens.system.sandbox import MIB, SandboxMemcg
from oomlens.system.snapshot import PAGE_SIZE

pytestmark = pytest.mark.kernel
SandboxFactory = Callable[..., SandboxMemcg]  # the `sandbox` fixture (tests/conftest.py)

LIMIT_MIB = 128
# Pages a resting hog's status may move by between the scrape and our read.
SLACK_PAGES = 64


def no_store() -> Store:
    raise NotFound("no store: these tests are about /proc and the memory cgroups")


def samples(name: str) -> dict[tuple[tuple[str, str], ...], float]:
    text = render_once(OomCollector("/proc", no_store)).decode()
    return {tuple(sorted(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples
            if s.name == name}


def badness_pages(pid: int, adj: int, totalpages: int) -> int:
    """rss + swap + page tables + adj * (totalpages / 1000), from /proc/<pid>/status
    (mm/oom_kill.c: oom_badness(), 5.9+)."""
    status = Path(f"/proc/{pid}/status").read_text()
    kib = {key: int(value) for key, value in re.findall(r"^(\w+):\s+(\d+) kB$", status, re.M)}
    pages = (kib["RssAnon"] + kib["RssFile"] + kib["RssShmem"] + kib["VmSwap"]) * 1024
    return pages // PAGE_SIZE + kib["VmPTE"] * 1024 // PAGE_SIZE + adj * (totalpages // 1000)


def test_top_candidate_of_a_memcg_is_the_kernels_victim(sandbox: SandboxFactory) -> None:
    box = sandbox(LIMIT_MIB * MIB)
    totalpages = LIMIT_MIB * MIB // PAGE_SIZE  # no swap in the sandbox
    # favoured: 8 MiB + 1000 * 32 pages beats big (40 MiB + 500 * 32 pages), which
    # beats the grower at any size the limit leaves it.
    box.start_hog(40, oom_score_adj=500)
    favoured = box.start_hog(8, oom_score_adj=1000)
    grower = box.start_hog(4)

    top = {dict(k)["domain"]: (dict(k), v)
           for k, v in samples("oomlens_top_candidate_badness_ratio").items()}
    labels, share = top[box.path]
    comm = Path(f"/proc/{favoured.pid}/comm").read_text().rstrip("\n")
    assert (labels["pid"], labels["comm"]) == (str(favoured.pid), comm)
    expected = badness_pages(favoured.pid, 1000, totalpages) / totalpages
    assert share == pytest.approx(expected, abs=SLACK_PAGES / totalpages)

    limit = samples("oomlens_memcg_limit_bytes")
    headroom = samples("oomlens_memcg_headroom_bytes")
    key = (("cgroup", box.path),)
    assert limit[key] == LIMIT_MIB * MIB
    assert headroom[key] == pytest.approx(LIMIT_MIB * MIB - box.state().usage_bytes,
                                          abs=SLACK_PAGES * PAGE_SIZE)

    assert box.trigger_oom(grower).victim_pid == favoured.pid
