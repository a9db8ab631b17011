"""`/dev/kmsg` records and the `Killed process` line, on text the kernel printed here."""

from __future__ import annotations

import pytest

from oomlens.errors import NotFound
from oomlens.system.kmsg import parse_killed_process, parse_kmsg_record
from oomlens.system.memcg import MemcgMount

KILLED_MEMCG = (
    "Memory cgroup out of memory: Killed process 1840 (python3) total-vm:221356kB, "
    "anon-rss:65152kB, file-rss:6632kB, shmem-rss:0kB, UID:0 pgtables:200kB oom_score_adj:0"
)


def test_record_fields_and_continuation_lines() -> None:
    record = parse_kmsg_record(f"3,1234,42574577,-,caller=T1840;{KILLED_MEMCG}\n SUBSYSTEM=x\n")
    assert (record.facility_prio, record.seq, record.ts_us) == (3, 1234, 42574577)
    assert record.level == 3 and record.facility == 0
    assert record.message == KILLED_MEMCG
    assert record.properties == ("SUBSYSTEM=x",)


def test_escaped_bytes_are_restored() -> None:
    record = parse_kmsg_record("6,1,2,-;comm a\\x0ab")
    assert record.message == "comm a\nb"


@pytest.mark.parametrize("text", ["no header here", "6,1;x", "a,b,c,-;x"])
def test_not_a_record(text: str) -> None:
    with pytest.raises(ValueError, match="not a /dev/kmsg record"):
        parse_kmsg_record(text)


def test_killed_process_memcg() -> None:
    killed = parse_killed_process(KILLED_MEMCG)
    assert killed is not None
    assert (killed.pid, killed.comm, killed.oom_score_adj, killed.memcg) == (1840, "python3", 0,
                                                                             True)


def test_killed_process_global_old_format_has_no_adj() -> None:
    line = ("Out of memory: Killed process 4242 (my app) total-vm:1kB, anon-rss:1kB, "
            "file-rss:0kB, shmem-rss:0kB")
    killed = parse_killed_process(line)
    assert killed is not None
    assert (killed.pid, killed.comm, killed.oom_score_adj, killed.memcg) == (4242, "my app",
                                                                             None, False)


def test_other_lines_are_not_kills() -> None:
    assert parse_killed_process("oom_reaper: reaped process 1840 (python3)") is None


def test_prefix_is_matched_on_path_boundaries() -> None:
    mount = MemcgMount(1, "/sys/fs/cgroup/memory", "/docker/ab")
    assert mount.fs_path("/docker/ab/x") == "/sys/fs/cgroup/memory/x"
    with pytest.raises(NotFound, match="outside this mount"):
        mount.fs_path("/docker/abc/x")


def test_escaped_utf8_bytes_become_one_character() -> None:
    record = parse_kmsg_record("6,1,2,-;Killed process 7 (caf\\xc3\\xa9) total-vm:1kB\n")
    assert record.message == "Killed process 7 (café) total-vm:1kB"
    assert parse_kmsg_record("6,1,2,-;back\\x5cslash\n").message == "back\\slash"
