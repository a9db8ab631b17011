"""`/proc/meminfo`, `/proc/vmstat` and the OOM-related sysctls."""

from __future__ import annotations

import os
from dataclasses import dataclass

from oomlens.system.procfs import read_text


@dataclass(frozen=True, slots=True)
class MemInfo:
    """The lines of `/proc/meminfo` oomlens uses, in KiB as the kernel prints them."""

    mem_total_kib: int
    mem_free_kib: int
    mem_available_kib: int
    swap_total_kib: int
    swap_free_kib: int
    committed_as_kib: int
    commit_limit_kib: int
    hugetlb_kib: int = 0


def parse_meminfo(text: str) -> MemInfo:
    """Parse `/proc/meminfo` (fs/proc/meminfo.c: meminfo_proc_show())."""
    values: dict[str, int] = {}
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        parts = rest.split()
        if parts:
            values[key] = int(parts[0])
    return MemInfo(
        mem_total_kib=values["MemTotal"],
        mem_free_kib=values.get("MemFree", 0),
        mem_available_kib=values.get("MemAvailable", values.get("MemFree", 0)),
        swap_total_kib=values.get("SwapTotal", 0),
        swap_free_kib=values.get("SwapFree", 0),
        committed_as_kib=values.get("Committed_AS", 0),
        commit_limit_kib=values.get("CommitLimit", 0),
        hugetlb_kib=values.get("Hugetlb", 0),
    )


def read_meminfo(proc_root: str = "/proc") -> MemInfo:
    return parse_meminfo(read_text(f"{proc_root}/meminfo"))


def parse_flat(text: str) -> dict[str, int]:
    """`key value` lines (`/proc/vmstat`, `memory.stat`, `memory.events`)."""
    out: dict[str, int] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].lstrip("-").isdigit():
            out[parts[0]] = int(parts[1])
    return out


def read_vmstat(proc_root: str = "/proc") -> dict[str, int]:
    return parse_flat(read_text(f"{proc_root}/vmstat"))


OOM_SYSCTLS = (
    "vm/panic_on_oom",
    "vm/oom_kill_allocating_task",
    "vm/oom_dump_tasks",
    "vm/overcommit_memory",
    "vm/overcommit_ratio",
    "vm/swappiness",
    "vm/min_free_kbytes",
    "kernel/panic",
)


def read_sysctls(proc_root: str = "/proc", names: tuple[str, ...] = OOM_SYSCTLS) -> dict[str, int]:
    """`{"vm.panic_on_oom": 0, ...}` for the sysctls that exist here."""
    out: dict[str, int] = {}
    for name in names:
        try:
            text = read_text(os.path.join(proc_root, "sys", name)).strip()
        except OSError:
            continue
        if text.lstrip("-").isdigit():
            out[name.replace("/", ".")] = int(text)
    return out
