"""Checks of the sysctls that decide what an OOM does: panic or kill, whom, what the
report shows, how much memory can be promised, and the kernel's own reserve."""

from __future__ import annotations

from oomlens.doctor.facts import Facts
from oomlens.doctor.finding import Evidence, Finding, SetSysctl, Severity
from oomlens.kernel.overcommit import (
    OVERCOMMIT_ALWAYS,
    OVERCOMMIT_NEVER,
    vm_commit_limit_kib,
)
from oomlens.kernel.watermarks import (
    KHUGEPAGED_MAX_SHARE,
    default_min_free_kbytes,
    watermark_gap_share,
)
from oomlens.system.tunables import boot_parameter
from oomlens.units import format_bytes, format_share

COMMIT_NEAR_SHARE = 0.90
MIN_FREE_MARGIN = 0.90  # lowmem is a little below MemTotal: allow for it
WATERMARK_SCALE_FACTOR_HIGH = 1000  # 10 % between watermarks: up to 20 % kept free
PANIC_REBOOT_SECONDS = "10"
KIB = 1024


def sysctl_evidence(f: Facts, name: str) -> Evidence:
    value = f.sysctls.get(name)
    return Evidence(f.proc("sys", *name.split(".")), "absent" if value is None else str(value))


def _meminfo(f: Facts, key: str, kib: int) -> Evidence:
    return Evidence(f"{f.proc('meminfo')} {key}", f"{kib} kB ({format_bytes(kib * KIB)})")


def check_panic_on_oom(f: Facts) -> list[Finding]:
    mode = f.sysctls.get("vm.panic_on_oom")
    if not mode:
        return []
    crashkernel = boot_parameter(f.cmdline, "crashkernel")
    loaded = f.kexec_crash_loaded
    evidence = (
        sysctl_evidence(f, "vm.panic_on_oom"),
        Evidence(f.proc("cmdline"),
                 "no crashkernel=" if crashkernel is None else f"crashkernel={crashkernel}"),
        Evidence(f.sys("kernel", "kexec_crash_loaded"),
                 "absent (kernel without kexec)" if loaded is None else str(int(loaded))),
    )
    scope = ("every OOM, memory cgroup limits included," if mode == 2
             else "a system-wide OOM")
    if loaded:
        return [Finding(
            "panic-on-oom", Severity.WARNING,
            f"vm.panic_on_oom = {mode}: {scope} panics the kernel (kdump saves a vmcore)",
            evidence, _PANIC_WHY,
            "If a panic per OOM is not deliberate (clusters fence a node this way), set "
            "vm.panic_on_oom = 0.")]
    return [Finding(
        "panic-on-oom", Severity.CRITICAL,
        f"vm.panic_on_oom = {mode}: {scope} panics the kernel, and no crash kernel is "
        "loaded to save a vmcore",
        evidence, _PANIC_WHY + " Without a loaded crash kernel nothing of the panic is kept.",
        "Set vm.panic_on_oom = 0 (the plan does). If a panic is wanted, boot with "
        "crashkernel= and enable kdump (kdump-tools, kexec -p) so that each one leaves a "
        "vmcore.",
        (SetSysctl("vm.panic_on_oom", "0"),))]


_PANIC_WHY = (
    "mm/oom_kill.c: check_panic_on_oom() panics instead of killing one process: 1 for "
    "system-wide OOMs only (memory cgroup, cpuset and mempolicy OOMs still kill), 2 for "
    "every OOM; only a SysRq-f OOM never panics. The whole machine goes down for what "
    "killing one process would have ended."
)


def check_panic_reboot(f: Facts) -> list[Finding]:
    if f.sysctls.get("kernel.panic") != 0:
        return []
    panics = bool(f.sysctls.get("vm.panic_on_oom"))
    return [Finding(
        "panic-no-reboot", Severity.WARNING if panics else Severity.INFO,
        "kernel.panic = 0: after a panic the machine stays halted until someone resets it"
        + (", and vm.panic_on_oom makes every OOM such a panic" if panics else ""),
        (sysctl_evidence(f, "kernel.panic"), sysctl_evidence(f, "vm.panic_on_oom")),
        "kernel/panic.c: panic() reboots kernel.panic seconds after a panic when it is "
        "positive (at once when negative) and otherwise spins forever.",
        f"Set kernel.panic = {PANIC_REBOOT_SECONDS} (a reboot 10 s after a panic, time for "
        "the console to show it; a loaded kdump kernel runs first).",
        (SetSysctl("kernel.panic", PANIC_REBOOT_SECONDS),) if panics else ())]


def check_oom_kill_allocating_task(f: Facts) -> list[Finding]:
    if not f.sysctls.get("vm.oom_kill_allocating_task"):
        return []
    return [Finding(
        "kill-allocating-task", Severity.WARNING,
        "vm.oom_kill_allocating_task = 1: a system-wide OOM kills whichever task "
        "allocated, not the one holding the most memory",
        (sysctl_evidence(f, "vm.oom_kill_allocating_task"),),
        "mm/oom_kill.c: out_of_memory() then kills `current` (if it is killable and not "
        "at -1000) without select_bad_process(): the victim is whoever asked for the page "
        "that ran out, often a small bystander, while the hog keeps its memory and the "
        "OOMs repeat. Memory cgroup OOMs are not affected.",
        "Set vm.oom_kill_allocating_task = 0 (the plan does). It exists for machines with "
        "so many tasks that the scan is too slow.",
        (SetSysctl("vm.oom_kill_allocating_task", "0"),))]


def check_oom_dump_tasks(f: Facts) -> list[Finding]:
    if f.sysctls.get("vm.oom_dump_tasks") != 0:
        return []
    return [Finding(
        "no-task-dump", Severity.WARNING,
        "vm.oom_dump_tasks = 0: OOM reports leave out the task table",
        (sysctl_evidence(f, "vm.oom_dump_tasks"),),
        "mm/oom_kill.c: dump_header() prints the per-process table (rss, swap, page "
        "tables, oom_score_adj of every candidate) only when it is set. Without it a report "
        "names the victim but not who else held the memory: `oomlens report` cannot "
        "recompute the kernel's choice or name the biggest consumers.",
        "Set vm.oom_dump_tasks = 1 (the plan does); only machines with hundreds of "
        "thousands of tasks need it off.",
        (SetSysctl("vm.oom_dump_tasks", "1"),))]


def check_overcommit(f: Facts) -> list[Finding]:
    mode = f.sysctls.get("vm.overcommit_memory")
    if mode is None:
        return []
    mem = f.meminfo
    computed = vm_commit_limit_kib(
        mem.mem_total_kib, mem.hugetlb_kib, mem.swap_total_kib,
        f.sysctls.get("vm.overcommit_ratio", 50), f.sysctls.get("vm.overcommit_kbytes", 0),
        f.page_size)
    evidence = (
        sysctl_evidence(f, "vm.overcommit_memory"), sysctl_evidence(f, "vm.overcommit_ratio"),
        sysctl_evidence(f, "vm.overcommit_kbytes"),
        _meminfo(f, "CommitLimit", mem.commit_limit_kib),
        Evidence("CommitLimit recomputed (mm/util.c: vm_commit_limit())", f"{computed} kB"),
        _meminfo(f, "Committed_AS", mem.committed_as_kib),
        _meminfo(f, "MemTotal", mem.mem_total_kib), _meminfo(f, "SwapTotal", mem.swap_total_kib),
    )
    if mode == OVERCOMMIT_NEVER:
        return _strict_overcommit(f, evidence)
    if mode == OVERCOMMIT_ALWAYS:
        return [Finding(
            "overcommit-always", Severity.INFO,
            "vm.overcommit_memory = 1: allocations never fail, every shortage is met by "
            "the OOM killer", evidence,
            "mm/util.c: __vm_enough_memory() accepts every request in this mode; programs "
            "that would handle ENOMEM never see it.",
            "Fine for workloads that reserve far more than they touch (some databases, "
            "fork-heavy servers); otherwise 0 (the default heuristic).")]
    if mem.committed_as_kib > mem.mem_total_kib + mem.swap_total_kib:
        return [Finding(
            "overcommitted", Severity.INFO,
            f"{format_bytes(mem.committed_as_kib * KIB)} of memory is promised, more than "
            f"RAM and swap ({format_bytes((mem.mem_total_kib + mem.swap_total_kib) * KIB)})",
            evidence,
            "With vm.overcommit_memory = 0 the kernel refuses only a single request larger "
            "than RAM + swap (mm/util.c: __vm_enough_memory()); what is promised beyond that "
            "is paid for by the OOM killer if the processes ever touch it.",
            "Nothing to do while they do not; `oomlens ls` shows who holds memory now.")]
    return []


def _strict_overcommit(f: Facts, evidence: tuple[Evidence, ...]) -> list[Finding]:
    mem, out = f.meminfo, []
    limit, committed = mem.commit_limit_kib, mem.committed_as_kib
    if limit and committed >= limit * COMMIT_NEAR_SHARE:
        out.append(Finding(
            "commit-limit-near", Severity.WARNING,
            f"vm.overcommit_memory = 2 and {format_share(committed / limit)} of the commit "
            f"limit is committed ({format_bytes(committed * KIB)} of "
            f"{format_bytes(limit * KIB)})", evidence,
            "mm/util.c: __vm_enough_memory() refuses any allocation that would pass "
            "CommitLimit (less the admin and user reserves): mmap, brk and fork fail with "
            "ENOMEM in whichever process asks next; the OOM killer does not run.",
            "Raise vm.overcommit_ratio (or set vm.overcommit_kbytes), add swap (CommitLimit "
            "counts all of it), or find the process that reserves address space it does not "
            "use (VmSize far above VmRSS in /proc/PID/status)."))
    if limit < mem.mem_total_kib:
        out.append(Finding(
            "commit-limit-below-ram", Severity.WARNING,
            f"vm.overcommit_memory = 2 lets processes commit only {format_bytes(limit * KIB)}"
            f" of {format_bytes(mem.mem_total_kib * KIB)} RAM", evidence,
            "mm/util.c: vm_commit_limit() is overcommit_ratio % of RAM (less huge pages) "
            "plus swap, or overcommit_kbytes plus swap; with the default ratio of 50 and "
            "little swap, allocations fail with half the memory unused.",
            "Raise vm.overcommit_ratio to what RAM minus the kernel's and the page cache's "
            "needs allows (80-95 is common), or set vm.overcommit_kbytes."))
    return out


def check_swappiness(f: Facts) -> list[Finding]:
    if f.sysctls.get("vm.swappiness") != 0 or not f.meminfo.swap_total_kib:
        return []
    return [Finding(
        "swappiness-zero", Severity.INFO,
        "vm.swappiness = 0 with swap: anonymous memory is swapped only when the page cache "
        "is nearly gone", (sysctl_evidence(f, "vm.swappiness"),
                           _meminfo(f, "SwapTotal", f.meminfo.swap_total_kib)),
        "mm/vmscan.c: get_scan_count() scans anonymous pages under swappiness 0 only when "
        "file pages are too few; in a cgroup v1 memory cgroup with swappiness 0 its "
        "processes never swap, and the cgroup's OOM domain leaves swap out of its totalpages "
        "(mm/memcontrol.c: mem_cgroup_get_max()).",
        "Deliberate for latency-critical machines; otherwise 10-60 lets idle anonymous "
        "memory make room before the OOM killer has to.")]


def check_min_free_kbytes(f: Facts) -> list[Finding]:
    value = f.sysctls.get("vm.min_free_kbytes")
    if value is None:
        return []
    total = f.meminfo.mem_total_kib
    default = default_min_free_kbytes(total)
    evidence = (sysctl_evidence(f, "vm.min_free_kbytes"), _meminfo(f, "MemTotal", total),
                Evidence("the kernel's value for this memory (mm/page_alloc.c: "
                         "calculate_min_free_kbytes())", f"{default} kB"))
    if value < default * MIN_FREE_MARGIN:
        return [Finding(
            "min-free-kbytes-low", Severity.WARNING,
            f"vm.min_free_kbytes = {value} kB, below the {default} kB the kernel sets for "
            "this much memory", evidence,
            "The min watermark is the reserve that only atomic allocations (interrupts, "
            "network receive) and the OOM path may use; below the kernel's own value those "
            "allocations fail (`page allocation failure: order:0`) and kswapd wakes later.",
            f"Set vm.min_free_kbytes = {default} (the plan does).",
            (SetSysctl("vm.min_free_kbytes", str(default)),))]
    if value > total * KHUGEPAGED_MAX_SHARE:
        return [Finding(
            "min-free-kbytes-high", Severity.WARNING,
            f"vm.min_free_kbytes = {value} kB keeps {format_share(value / total)} of RAM "
            "free for the kernel", evidence,
            "Applications and the page cache can never use the min reserve, and the low and "
            "high watermarks lie above it: OOMs come with that much memory still free. Even "
            "khugepaged's recommendation is capped at 5 % of memory (mm/khugepaged.c: "
            "set_recommended_min_free_kbytes()).",
            f"Lower it towards the kernel's {default} kB (more with transparent huge pages: "
            "khugepaged raises it when it starts).")]
    return []


def check_watermark_scale_factor(f: Facts) -> list[Finding]:
    value = f.sysctls.get("vm.watermark_scale_factor")
    if value is None or value <= WATERMARK_SCALE_FACTOR_HIGH:
        return []
    gap = watermark_gap_share(value)
    return [Finding(
        "watermark-scale-factor-high", Severity.WARNING,
        f"vm.watermark_scale_factor = {value}: kswapd keeps up to {format_share(2 * gap)} of "
        "memory free", (sysctl_evidence(f, "vm.watermark_scale_factor"),),
        f"mm/page_alloc.c: __setup_per_zone_wmarks() puts the low and high watermarks "
        f"{format_share(gap)} of each zone apart; kswapd wakes below low and reclaims until "
        "high, so up to twice that share is kept from the page cache and applications.",
        "Set it back to the default 10 (the plan does); 100-500 helps machines whose "
        "allocations come in bursts faster than kswapd reclaims.",
        (SetSysctl("vm.watermark_scale_factor", "10"),))]


SYSCTL_CHECKS = (check_panic_on_oom, check_panic_reboot, check_oom_kill_allocating_task,
                 check_oom_dump_tasks, check_overcommit, check_swappiness, check_min_free_kbytes,
                 check_watermark_scale_factor)
