"""Read the facts the checks need (the doctor's I/O shell).

`gather(..., deep=False)` is what the status screen affords: the snapshot it took
anyway plus a dozen small files (sysctls, the boot command line, /proc/swaps, zram,
zswap, the crash kernel, PSI, the OOM daemons' programs). `deep=True` adds what
`oomlens doctor` reads on top: every memory cgroup's controls, the units' drop-ins,
scripts naming oom_adj and the kernel log's oom_adj warning.
"""

from __future__ import annotations

import dataclasses
import os
import re
from dataclasses import dataclass

from oomlens.doctor.facts import Facts, OomAdjUse
from oomlens.errors import OomlensError
from oomlens.system.kmsg import KmsgReader
from oomlens.system.memcg import MemcgMount, walk
from oomlens.system.meminfo import read_sysctls
from oomlens.system.oomconfig import (
    find_oom_adj_mentions,
    find_score_adjust_dropins,
    installed_oom_daemons,
    unit_dirs,
)
from oomlens.system.snapshot import Snapshot
from oomlens.system.tunables import (
    EXTRA_SYSCTLS,
    MemcgControls,
    psi_problem,
    read_cmdline,
    read_kexec_crash_loaded,
    read_memcg_controls,
    read_swaps,
    read_zram,
    read_zswap_enabled,
)

# fs/proc/base.c: __set_oom_adj(): pr_warn_once("%s (%d): /proc/%d/oom_adj is
# deprecated, please use /proc/%d/oom_score_adj instead.\n", ...)
OOM_ADJ_WARNING = re.compile(r"/proc/\d+/oom_adj is deprecated")


@dataclass(frozen=True, slots=True)
class Roots:
    """Where to read: /proc, /sys, the file system root (units, scripts, programs),
    the unit directory that replaces /etc/systemd/system, and the kernel log."""

    proc: str = "/proc"
    sys: str = "/sys"
    fs: str = "/"
    systemd_dir: str | None = None
    kmsg: str = "/dev/kmsg"


def gather(snapshot: Snapshot, roots: Roots, *, oom_kills: int | None, now: float,
           deep: bool) -> Facts:
    facts = Facts(
        proc_root=roots.proc, sys_root=roots.sys, kernel_release=snapshot.kernel_release,
        page_size=snapshot.page_size, meminfo=snapshot.meminfo,
        sysctls={**snapshot.sysctls, **read_sysctls(roots.proc, EXTRA_SYSCTLS)},
        psi_problem=None if snapshot.pressure is not None else psi_problem(roots.proc),
        memcg_mount=snapshot.memcg_mount, memcgs=snapshot.memcgs,
        processes=snapshot.processes, oom_kills_since_boot=oom_kills,
        cmdline=read_cmdline(roots.proc), kexec_crash_loaded=read_kexec_crash_loaded(roots.sys),
        swaps=read_swaps(roots.proc), zswap_enabled=read_zswap_enabled(roots.sys),
        zram=read_zram(roots.sys),
        systemd_running=os.path.isdir(os.path.join(roots.fs, "run", "systemd", "system")),
        installed_daemons=installed_oom_daemons(roots.fs), now=now,
    )
    if not deep:
        return facts
    return dataclasses.replace(
        facts,
        memcg_controls=memcg_controls(snapshot.memcg_mount),
        score_adjust_settings=find_score_adjust_dropins(unit_dirs(roots.fs, roots.systemd_dir)),
        oom_adj_use=oom_adj_use(roots),
    )


def memcg_controls(mount: MemcgMount | None) -> dict[str, MemcgControls]:
    """Every cgroup's controls but the root's (it has none to set)."""
    if mount is None:
        return {}
    return {path: read_memcg_controls(mount, path) for path, _ in walk(mount)
            if path != mount.prefix}


def oom_adj_use(roots: Roots) -> OomAdjUse:
    warnings: tuple[str, ...] = ()
    unread = None
    try:
        with KmsgReader(roots.kmsg) as reader:
            warnings = tuple(r.message for r in reader.read_available()
                             if OOM_ADJ_WARNING.search(r.message))
    except OomlensError as err:
        unread = str(err)
    return OomAdjUse(warnings, roots.kmsg, unread, find_oom_adj_mentions(roots.fs))
