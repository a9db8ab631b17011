"""Events as the watcher submits them: `oomlens.event/1` objects built by the store's
own `record_json`, so the sinks are tested against the real contract."""

from __future__ import annotations

from typing import Any

import pytest

from oomlens.store.record import EventKind, EventRecord, StoredEvent, record_json

BOOT_ID = "0b1c7d2e-5f6a-4b3c-9d8e-7f6a5b4c3d2e"


@pytest.fixture
def event() -> dict[str, Any]:
    """A kernel kill of postgres (1234) in a memory cgroup."""
    record = EventRecord(
        key=f"{BOOT_ID}:5123:1234", kind=EventKind.KERNEL, host="db1", boot_id=BOOT_ID,
        time=1_700_000_000.0, monotonic=8123.5, seq=5123, scope="memcg",
        cgroup="/system.slice/postgresql.service", victim_pid=1234, victim_comm="postgres",
        victim_uid=26, victim_oom_score_adj=0, victim_rss_kb=1_258_291,
        trigger_comm="postgres", constraint="CONSTRAINT_MEMCG", complete=True,
        main_finding="memcg-limit-hit", findings=("memcg-limit-hit",),
    )
    return record_json(StoredEvent(17, record, 1_700_000_001.0))


@pytest.fixture
def lost_event() -> dict[str, Any]:
    """Kills the kernel counted and no log showed: no victim."""
    record = EventRecord(key=f"{BOOT_ID}:lost:3-5", kind=EventKind.LOST, host="db1",
                         boot_id=BOOT_ID, time=1_700_000_000.0, kills=2)
    return record_json(StoredEvent(18, record, 1_700_000_001.0))
