"""Checks of memory as a whole: headroom now, swap (none, full, zram, zswap) and
whether pressure stall information (PSI) is there to see trouble coming."""

from __future__ import annotations

from oomlens.doctor.facts import Facts
from oomlens.doctor.finding import Evidence, Finding, Severity
from oomlens.system.tunables import boot_parameter
from oomlens.units import format_bytes, format_share

LOW_AVAILABLE_SHARE = 0.10
SWAP_FULL_SHARE = 0.90
KIB = 1024


def check_low_available(f: Facts) -> list[Finding]:
    mem = f.meminfo
    if not mem.mem_total_kib or mem.mem_available_kib >= mem.mem_total_kib * LOW_AVAILABLE_SHARE:
        return []
    share = mem.mem_available_kib / mem.mem_total_kib
    return [Finding(
        "low-available", Severity.WARNING,
        f"only {format_share(share)} of memory is available "
        f"({format_bytes(mem.mem_available_kib * KIB)} of {format_bytes(mem.mem_total_kib * KIB)})",
        (Evidence(f"{f.proc('meminfo')} MemAvailable", f"{mem.mem_available_kib} kB"),
         Evidence(f"{f.proc('meminfo')} MemTotal", f"{mem.mem_total_kib} kB")),
        "MemAvailable (fs/proc/meminfo.c: si_mem_available()) estimates what can be "
        "allocated without swapping: free memory above the watermarks plus the page cache "
        "and slab that reclaim can free. Near zero, the next burst ends in reclaim stalls "
        "and then an OOM kill.",
        "See who holds it (`oomlens ls`: the kill order, biggest first); add memory or swap, "
        "or cap the biggest consumers with memory cgroup limits.")]


def _swap_evidence(f: Facts) -> tuple[Evidence, ...]:
    if f.swaps is None:
        return (Evidence(f.proc("swaps"), "absent (kernel without CONFIG_SWAP)"),)
    if not f.swaps:
        return (Evidence(f.proc("swaps"), "no swap areas"),)
    return tuple(Evidence(f.proc("swaps"), f"{a.filename} ({a.type}) size {a.size_kib} kB, "
                          f"used {a.used_kib} kB, priority {a.priority}") for a in f.swaps)


def check_swap(f: Facts) -> list[Finding]:
    if not f.swaps:
        return [Finding(
            "no-swap", Severity.INFO, "no swap: anonymous memory can never leave RAM",
            (*_swap_evidence(f), Evidence(f"{f.proc('meminfo')} SwapTotal",
                                          f"{f.meminfo.swap_total_kib} kB")),
            "Without swap, reclaim can only drop page cache: heaps and tmpfs stay, memory "
            "runs out sooner, and the OOM killer comes after the page cache (program text "
            "included) has been thrashed away. A little swap lets rarely used anonymous "
            "pages make room first.",
            "Add a swap file or zram (`oomlens doctor --plan FILE --swap-file SIZE` writes "
            "the commands into the plan); keep latency-critical services out of it with "
            "memory.swap.max = 0 (cgroup v2).")]
    size = sum(a.size_kib for a in f.swaps)
    used = sum(a.used_kib for a in f.swaps)
    if not size or used < size * SWAP_FULL_SHARE:
        return []
    return [Finding(
        "swap-nearly-full", Severity.WARNING,
        f"swap is {format_share(used / size)} full ({format_bytes(used * KIB)} of "
        f"{format_bytes(size * KIB)})", _swap_evidence(f),
        "Once swap is full, anonymous memory has nowhere to go and the next shortage ends "
        "in the OOM killer; a machine living in swap also stalls on every fault.",
        "Find who uses it (`oomlens ls --sort swap`); add swap or memory, or limit those "
        "processes' memory cgroups.")]


def _zram_swaps(f: Facts) -> list[str]:
    names = {a.filename.rsplit("/", 1)[-1] for a in f.swaps or ()}
    return [z.name for z in f.zram if z.name in names]


def check_zram_zswap(f: Facts) -> list[Finding]:
    out = []
    zram_swaps = _zram_swaps(f)
    for device in f.zram:
        if device.name not in zram_swaps:
            continue
        held = "" if device.orig_data_bytes is None or device.compr_data_bytes is None else (
            f", holding {format_bytes(device.orig_data_bytes)} in "
            f"{format_bytes(device.compr_data_bytes)} of RAM")
        out.append(Finding(
            "zram-swap", Severity.INFO,
            f"swap on zram: /dev/{device.name}, {format_bytes(device.disksize_bytes)}{held}",
            (Evidence(f.sys("block", device.name, "disksize"), str(device.disksize_bytes)),
             Evidence(f.sys("block", device.name, "mm_stat"),
                      f"orig_data_size {device.orig_data_bytes}, "
                      f"compr_data_size {device.compr_data_bytes}"), *_swap_evidence(f)),
            "zram swaps into compressed RAM: swapped pages still take memory (about a third "
            "of their size, depending on the data), while the global OOM domain counts the "
            "whole swap size in totalpages (RAM + SwapTotal).",
            "Nothing to do; a zram device larger than RAM / 2 rarely pays off."))
    zswap = Evidence(f.sys("module", "zswap", "parameters", "enabled"),
                     "Y" if f.zswap_enabled else "N")
    if f.zswap_enabled and not f.swaps:
        out.append(Finding(
            "zswap-without-swap", Severity.INFO,
            "zswap is enabled but there is no swap: it never holds anything",
            (zswap, *_swap_evidence(f)),
            "zswap (mm/zswap.c) is a compressed cache in front of a swap device; pages "
            "reach it only on their way to swap.",
            "Nothing to do, or add swap for it to work in front of."))
    if f.zswap_enabled and zram_swaps:
        out.append(Finding(
            "zswap-over-zram", Severity.WARNING,
            "zswap is enabled in front of zram swap: pages are compressed twice",
            (zswap, *_swap_evidence(f)),
            "zswap keeps compressed pages in a RAM pool before they reach the swap device; "
            "with zram as that device, memory holds zswap's copy and zram's, and pages "
            "written back from zswap are decompressed only to be compressed again.",
            "Turn zswap off: zswap.enabled=0 on the kernel command line, or `echo N > "
            "/sys/module/zswap/parameters/enabled`."))
    return out


def check_psi(f: Facts) -> list[Finding]:
    if f.psi_problem is None:
        return []
    psi = boot_parameter(f.cmdline, "psi")
    disabled = "EOPNOTSUPP" in f.psi_problem
    return [Finding(
        "no-psi", Severity.INFO, "no memory pressure information (PSI) on this kernel",
        (Evidence(f.proc("pressure", "memory"), f.psi_problem),
         Evidence(f.proc("cmdline"), "no psi=" if psi is None else f"psi={psi}")),
        "PSI (kernel/sched/psi.c) measures the time tasks stall waiting for memory: the "
        "early signal that systemd-oomd, oomd, nohang and `oomlens guard --psi-full` act "
        "on, and what tells a slow machine from a full one.",
        "Boot with psi=1 (kernels built with CONFIG_PSI_DEFAULT_DISABLED need it)."
        if disabled else "Use a kernel built with CONFIG_PSI=y (4.20 or later).")]


MEMORY_CHECKS = (check_low_available, check_swap, check_zram_zswap, check_psi)
