"""Event records for the store's tests: hand-made ones that set only the fields a
test is about, and kernel records made from real reports by the report pipeline
(the way the watcher makes them)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from oomlens.report.diagnose import diagnose
from oomlens.report.pipeline import events_in
from oomlens.store.fromreport import kernel_record
from oomlens.store.record import EventKind, EventRecord

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"
T0 = 1_750_000_000.0  # 2025-06-15 15:06:40 UTC
BOOT_TIME = 1_700_000_000.0


def record(n: int, **fields: Any) -> EventRecord:
    """Kill number `n`: key, pid and time follow from it unless given."""
    values: dict[str, Any] = {
        "key": f"boot-a:{n}:{1000 + n}", "kind": EventKind.KERNEL, "host": "web1",
        "boot_id": "boot-a", "time": T0 + n, "victim_pid": 1000 + n, "victim_comm": "app",
        "victim_rss_kb": 1000, "complete": True,
    }  # fmt: skip
    values.update(fields)
    return EventRecord(**values)


def kernel_records(log: bytes, *, host: str = "web1", boot_id: str = "boot-a",
                   ) -> list[EventRecord]:
    """The records of every OOM event in `log`, as the watcher would store them."""
    events = list(events_in([log], "kmsg", year=2025, boot_time=BOOT_TIME))
    return [kernel_record(event, diagnose(event, events[i - 1] if i else None), host=host,
                          boot_id=boot_id, boot_time=BOOT_TIME, detected_at=T0)
            for i, event in enumerate(events)]


def report(name: str) -> bytes:
    """A report of the corpus: `reports/NAME.txt` or `oomanalyser/NAME.txt`."""
    return (FIXTURES / name).read_bytes()


def kill_lines(kills: Sequence[tuple[str, int]], *, first_pid: int = 1000) -> bytes:
    """One rate-limited kill line per (comm, anon-rss kB), a minute apart, with the
    kernel's timestamps (mm/oom_kill.c: __oom_kill_process(), 6.x format)."""
    return "".join(
        f"[{100 + i * 60:5d}.000000] Out of memory: Killed process {first_pid + i} ({comm}) "
        f"total-vm:2000000kB, anon-rss:{kb}kB, file-rss:0kB, shmem-rss:0kB, UID:1000 "
        "pgtables:2160kB oom_score_adj:0\n"
        for i, (comm, kb) in enumerate(kills)
    ).encode()
