"""Checks of the userspace OOM daemons: which are installed and running, two that
would kill for the same shortage, and those that cannot work here (no PSI, no
cgroup v2)."""

from __future__ import annotations

import os
from collections.abc import Sequence

from oomlens.doctor.facts import Facts
from oomlens.doctor.finding import Evidence, Finding, Severity
from oomlens.system.snapshot import Process

GUARD = "oomlens guard"
# The daemons that need pressure stall information and the unified hierarchy.
NEEDS_PSI_AND_V2 = ("systemd-oomd", "oomd")
_COMMS = {"earlyoom": "earlyoom", "nohang": "nohang", "systemd-oomd": "systemd-oomd",
          "oomd": "oomd"}


def is_oomlens_guard(argv: Sequence[str]) -> bool:
    """`oomlens guard ...`, `python -m oomlens guard ...`, `.../bin/oomlens --json guard`:
    the first word after the program that is not an option is `guard`."""
    for i, word in enumerate(argv):
        if os.path.basename(word) == "oomlens" or word in ("oomlens", "oomlens.cli.main"):
            rest = [w for w in argv[i + 1:] if not w.startswith("-")]
            return bool(rest) and rest[0] == "guard"
    return False


def daemon_of(proc: Process) -> str | None:
    """Which userspace OOM daemon a process is, by its name or command line."""
    if proc.task.is_kthread:
        return None
    if proc.comm in _COMMS:
        return _COMMS[proc.comm]
    argv = proc.cmdline.split()
    if any(os.path.basename(word) == "nohang" for word in argv[:2]):
        return "nohang"  # a Python script: comm is the interpreter's on some systems
    return GUARD if is_oomlens_guard(argv) else None


def running_daemons(processes: Sequence[Process]) -> dict[str, list[Process]]:
    running: dict[str, list[Process]] = {}
    for proc in processes:
        name = daemon_of(proc)
        if name is not None:
            running.setdefault(name, []).append(proc)
    return running


def is_dry_run(proc: Process) -> bool:
    """Started to decide and log only (`oomlens guard --dry-run`, `earlyoom --dryrun`)."""
    return any(word in ("--dry-run", "--dryrun") for word in proc.cmdline.split())


def _state(name: str, running: dict[str, list[Process]]) -> str:
    if name not in running:
        return f"{name} (installed, not running)"
    pids = ", ".join(str(p.pid) + (" dry run" if is_dry_run(p) else "") for p in running[name])
    return f"{name} (running, pid {pids})"


def _evidence(f: Facts, running: dict[str, list[Process]]) -> tuple[Evidence, ...]:
    ev = [Evidence(path, "installed") for paths in f.installed_daemons.values() for path in paths]
    ev += [Evidence(f.proc(str(p.pid), "cmdline"), f"{name}: {p.cmdline or p.comm}")
           for name, procs in running.items() for p in procs]
    return tuple(ev)


def check_oom_daemons(f: Facts) -> list[Finding]:
    running = running_daemons(f.processes)
    names = sorted(set(running) | set(f.installed_daemons))
    if not names:
        return []
    evidence = _evidence(f, running)
    killing = {n: procs for n, procs in running.items()
               if any(not is_dry_run(p) for p in procs)}
    out = [Finding(
        "oom-daemons", Severity.INFO,
        "userspace OOM daemons: " + "; ".join(_state(n, running) for n in names), evidence,
        "A userspace OOM daemon kills before the kernel has to, by its own rules (available "
        "memory, swap, PSI), so which one runs decides who dies first.",
        "Nothing to do if this is the one you chose.")]
    if len(killing) > 1:
        out.append(Finding(
            "oom-daemons-conflict", Severity.WARNING,
            "more than one userspace OOM killer runs: " + ", ".join(sorted(killing)), evidence,
            "Each watches the same memory and kills on its own: one shortage can cost two "
            "processes, picked by different rules, and each kill resets the others' view.",
            "Keep one: stop and disable the others (e.g. `systemctl disable --now earlyoom`)."))
    blind = [n for n in NEEDS_PSI_AND_V2 if n in running]
    v2 = f.memcg_mount is not None and f.memcg_mount.version == 2
    if blind and (f.psi_problem is not None or not v2):
        missing = [what for what, absent in (("PSI", f.psi_problem is not None),
                                             ("the cgroup v2 memory controller", not v2))
                   if absent]
        out.append(Finding(
            "oom-daemon-cannot-act", Severity.WARNING,
            f"{', '.join(blind)} runs without {' and '.join(missing)}: it cannot act", evidence,
            "systemd-oomd and oomd decide on the memory pressure (PSI) of cgroup v2 cgroups; "
            "without them they watch nothing and never kill.",
            "Boot with psi=1 and the unified cgroup hierarchy, or use a daemon that works on "
            "available memory (earlyoom, `oomlens guard`)."))
    return out


DAEMON_CHECKS = (check_oom_daemons,)
