"""Checks of who the OOM killer may take: critical services left unprotected,
unkillable (-1000) processes holding much memory, the deprecated oom_adj interface
still in use, and systemd's OOMScoreAdjust= drop-ins."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from oomlens.doctor.facts import Facts
from oomlens.doctor.finding import (
    Evidence,
    Finding,
    ProtectService,
    SetScoreAdj,
    Severity,
)
from oomlens.kernel.adj import OOM_ADJ_MAX, OOM_ADJ_MIN, oom_adj_to_score_adj
from oomlens.kernel.task import OOM_SCORE_ADJ_MIN
from oomlens.system.snapshot import Process
from oomlens.units import format_bytes, format_share

PROTECTED_SHARE_WARN = 0.10  # a -1000 process above this share of RAM is a panic risk
PROTECTED_SHARE_CRITICAL = 0.50
# Far below any workload but still killable: a -1000 process can never be killed, and
# a service's children inherit its value at fork.
KILLABLE_PROTECTION = -900
# oom_score_adj values that only fs/proc/base.c: oom_adj_write() produces: oom_adj
# -16..14 (not 0) scaled by 1000/17. -17 and 15 give -1000 and 1000, which anyone may write.
OOM_ADJ_ONLY_VALUES = {oom_adj_to_score_adj(adj): adj
                       for adj in range(OOM_ADJ_MIN + 1, OOM_ADJ_MAX) if adj != 0}


@dataclass(frozen=True, slots=True)
class CriticalService:
    """Processes found by name (comm) that an OOM kill must not take first."""

    label: str
    comms: tuple[str, ...]
    severity: Severity
    oom_score_adj: int | None  # what the plan sets; None: the doctor only advises
    role: str


CRITICAL_SERVICES = (
    CriticalService("ssh", ("sshd", "sshd-session", "dropbear"), Severity.WARNING,
                    KILLABLE_PROTECTION, "the way in to repair the machine"),
    CriticalService("container runtime", ("containerd", "dockerd", "crio", "kubelet"),
                    Severity.WARNING, KILLABLE_PROTECTION,
                    "the parent of every container: killing it stops or orphans them all"),
    CriticalService("database", ("postgres", "postmaster", "mysqld", "mariadbd", "mongod",
                                 "redis-server", "etcd"), Severity.INFO, None,
                    "often the biggest process, so the kernel's first choice; a kill costs a "
                    "crash recovery"),
)


def _adj_evidence(f: Facts, proc: Process) -> Evidence:
    where = f" in {proc.unit}" if proc.unit else ""
    return Evidence(f.proc(str(proc.pid), "oom_score_adj"),
                    f"{proc.task.oom_score_adj} ({proc.comm}, pid {proc.pid}{where})")


def _leaders(procs: Sequence[Process]) -> list[Process]:
    """The processes whose parent is not one of `procs`: a service's main processes
    (their children inherit the value they have when they fork)."""
    pids = {p.pid for p in procs}
    return [p for p in procs if p.ppid not in pids]


def check_critical_services(f: Facts) -> list[Finding]:
    out = []
    for service in CRITICAL_SERVICES:
        procs = [p for p in f.processes if p.comm in service.comms and p.pid != 1
                 and not p.task.is_kthread]
        exposed = [p for p in _leaders(procs) if p.task.oom_score_adj >= 0]
        if not exposed:
            continue
        names = sorted({p.comm for p in exposed})
        out.append(Finding(
            "unprotected-service", service.severity,
            f"{service.label} ({', '.join(names)}) is not protected from the OOM killer: "
            f"oom_score_adj {', '.join(str(p.task.oom_score_adj) for p in exposed)}",
            tuple(_adj_evidence(f, p) for p in exposed),
            f"The {service.label} is {service.role}. With oom_score_adj >= 0 the kernel "
            "weighs it by its memory alone (mm/oom_kill.c: oom_badness()).",
            _service_fix(service, exposed),
            _service_proposals(f, service, exposed)))
    return out


def _service_fix(service: CriticalService, exposed: Sequence[Process]) -> str:
    if service.oom_score_adj is None:
        return ("If it must outlive the rest, give it a moderate value such as -500 "
                "(OOMScoreAdjust=-500 in its unit, or a policy rule): still killable, but "
                "after the others of its size. -1000 would make it unkillable.")
    units = sorted({p.unit for p in exposed if p.unit})
    durable = (f"OOMScoreAdjust={service.oom_score_adj} in {', '.join(units)}" if units
               else "a rule of the protection policy (`oomlens enforce`)")
    return (f"Set oom_score_adj {service.oom_score_adj} now and {durable} for later starts "
            "(the plan does both). Not -1000: that would make it, and every session or "
            "container it forks, unkillable.")


def _service_proposals(f: Facts, service: CriticalService,
                       exposed: Sequence[Process]) -> tuple[SetScoreAdj | ProtectService, ...]:
    value = service.oom_score_adj
    if value is None:
        return ()
    live = tuple(SetScoreAdj(p.pid, p.start_time_ticks, p.comm, p.cmdline, value)
                 for p in exposed)
    units = sorted({p.unit for p in exposed if p.unit and f.systemd_running})
    comms = tuple(sorted({p.comm for p in exposed}))
    if units:
        return (*live, *(ProtectService(service.label, comms, unit, value) for unit in units))
    return (*live, ProtectService(service.label, comms, None, value))


def check_protected_hogs(f: Facts) -> list[Finding]:
    total = f.mem_total_pages
    out = []
    for proc in f.processes:
        task = proc.task
        share = task.rss_pages / total if total else 0.0
        if task.oom_score_adj != OOM_SCORE_ADJ_MIN or share <= PROTECTED_SHARE_WARN:
            continue
        out.append(Finding(
            "protected-hog",
            Severity.CRITICAL if share >= PROTECTED_SHARE_CRITICAL else Severity.WARNING,
            f"{proc.comm} (pid {proc.pid}) is unkillable (oom_score_adj -1000) and holds "
            f"{format_share(share)} of RAM ({format_bytes(task.rss_pages * f.page_size)})",
            (_adj_evidence(f, proc),
             Evidence(f.proc(str(proc.pid), "status"),
                      f"RssAnon+RssFile+RssShmem {task.rss_pages * f.page_size // 1024} kB")),
            "mm/oom_kill.c: oom_badness() never picks a -1000 process. If it grows, the OOM "
            "killer kills everything else first, and with nothing killable left a "
            "system-wide OOM panics (out_of_memory(): 'System is deadlocked on memory').",
            f"Give it {KILLABLE_PROTECTION}: still last in line, but killable (the plan sets "
            "it now; raising needs no privilege). Make it last in its unit's OOMScoreAdjust= "
            "or the policy too.",
            (SetScoreAdj(proc.pid, proc.start_time_ticks, proc.comm, proc.cmdline,
                         KILLABLE_PROTECTION),)))
    return out


def _legacy_value(proc: Process) -> str:
    adj = proc.task.oom_score_adj
    return (f"{adj} = oom_adj {OOM_ADJ_ONLY_VALUES[adj]} x 1000/17 ({proc.comm}, "
            f"pid {proc.pid})")


def check_oom_adj(f: Facts) -> list[Finding]:
    """What can be seen of the deprecated interface; not every use can be (see why)."""
    legacy = [p for p in f.processes if not p.task.is_kthread
              and p.task.oom_score_adj in OOM_ADJ_ONLY_VALUES]
    use = f.oom_adj_use
    warnings = use.kernel_warnings if use else ()
    mentions = use.mentions if use else ()
    if not (legacy or warnings or mentions):
        return []
    evidence = [Evidence(use.kernel_log if use else "kernel log", line) for line in warnings]
    evidence += [Evidence(f"{m.path}:{m.line}", m.text) for m in mentions]
    evidence += [Evidence(f.proc(str(p.pid), "oom_score_adj"), _legacy_value(p)) for p in legacy]
    parts = [f"{len(warnings)} kernel warning(s)" if warnings else "",
             f"{len(mentions)} script or unit line(s)" if mentions else "",
             f"{len(legacy)} process(es) with a value only oom_adj writes" if legacy else ""]
    return [Finding(
        "oom-adj-used",
        Severity.WARNING if warnings or mentions else Severity.INFO,
        "the deprecated oom_adj interface is in use: " + ", ".join(p for p in parts if p),
        tuple(evidence),
        "oom_adj (-17..15) is the interface before 2.6.36. fs/proc/base.c: oom_adj_write() "
        "scales a write into oom_score_adj (15 -> 1000, else x 1000/17 truncated, so -17 -> "
        "-1000) and warns 'oom_adj is deprecated' once per boot (pr_warn_once), naming only "
        "the first writer. What is checked: that warning in the kernel log, lines naming "
        "oom_adj in boot scripts, cron jobs and local units, and processes whose value only "
        "that scaling produces (-941, -882, ..., 823; inherited at fork). A value of -1000 or "
        "1000 set through oom_adj, or one rewritten since, cannot be told apart.",
        "Write oom_score_adj (-1000..1000) instead: OOMScoreAdjust= in units, `oomlens "
        "adjust` or the policy elsewhere; `oomlens adjust --legacy-adj N` translates an old "
        "value the kernel's way.")]


def check_score_adjust_dropins(f: Facts) -> list[Finding]:
    settings = f.score_adjust_settings
    if not settings:
        return []
    shown = ", ".join(f"{s.unit}={s.value}" for s in settings)
    idle = "" if f.systemd_running else " (systemd does not run here: they have no effect)"
    return [Finding(
        "oom-score-adjust-dropins", Severity.INFO,
        f"{len(settings)} OOMScoreAdjust= drop-in(s): {shown}{idle}",
        tuple(Evidence(f"{s.path}:{s.line}", f"OOMScoreAdjust={s.value}") for s in settings),
        "systemd applies OOMScoreAdjust= to every process it starts for the unit "
        "(systemd.exec(5)), at each start, whatever was set by hand since; -1000 makes the "
        "unit's processes unkillable.",
        "Review them; `oomlens systemd-dropin UNIT --remove` takes oomlens's own away.")]


PROTECTION_CHECKS = (check_critical_services, check_protected_hogs, check_oom_adj,
                     check_score_adjust_dropins)
