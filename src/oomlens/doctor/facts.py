"""Everything the doctor's checks look at, read once (doctor/gather.py) into plain
frozen data, so the checks are pure functions of it.

Facts the status screen does not gather (it must stay fast) are None: a check whose
facts are None says nothing, rather than "all is well".
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from oomlens.system.memcg import Memcg, MemcgMount
from oomlens.system.meminfo import MemInfo
from oomlens.system.oomconfig import OomAdjMention, ScoreAdjustSetting
from oomlens.system.snapshot import Process
from oomlens.system.tunables import MemcgControls, SwapArea, ZramDevice


@dataclass(frozen=True, slots=True)
class RecentKill:
    """One OOM kill from the history store or the kernel log. `time` is epoch
    seconds (None when the log had no usable time); `ref` names it for a reader
    (`history #12`, `kernel log`)."""

    time: float | None
    victim: str
    scope: str | None
    main_finding: str | None
    message: str | None
    ref: str


@dataclass(frozen=True, slots=True)
class Kills:
    """The recent kills and where they came from (`source`), or why none could be
    read (`unread`)."""

    source: str
    events: tuple[RecentKill, ...]
    unread: str | None = None


@dataclass(frozen=True, slots=True)
class OomAdjUse:
    """Signs of the deprecated oom_adj interface: the kernel's own warning (printed
    once per boot, for the first writer) and lines of scripts and units naming it."""

    kernel_warnings: tuple[str, ...]
    kernel_log: str  # where the warnings were looked for
    kernel_log_unread: str | None
    mentions: tuple[OomAdjMention, ...]


@dataclass(frozen=True, slots=True)
class Facts:
    proc_root: str
    sys_root: str
    kernel_release: str
    page_size: int
    meminfo: MemInfo
    sysctls: Mapping[str, int]
    psi_problem: str | None  # None: /proc/pressure/memory reads
    memcg_mount: MemcgMount | None
    memcgs: tuple[Memcg, ...]  # the memory cgroups with a limit
    processes: tuple[Process, ...]
    oom_kills_since_boot: int | None
    cmdline: str | None
    kexec_crash_loaded: bool | None
    swaps: tuple[SwapArea, ...] | None
    zswap_enabled: bool | None
    zram: tuple[ZramDevice, ...]
    systemd_running: bool
    installed_daemons: Mapping[str, tuple[str, ...]]
    now: float
    # Gathered by `oomlens doctor` only (None on the status screen):
    memcg_controls: Mapping[str, MemcgControls] | None = None  # every cgroup, by path
    score_adjust_settings: tuple[ScoreAdjustSetting, ...] | None = None
    oom_adj_use: OomAdjUse | None = None
    kills: Kills | None = None

    def proc(self, *parts: str) -> str:
        """A path under the proc root, for evidence."""
        return os.path.join(self.proc_root, *parts)

    def sys(self, *parts: str) -> str:
        return os.path.join(self.sys_root, *parts)

    @property
    def mem_total_pages(self) -> int:
        return self.meminfo.mem_total_kib // (self.page_size // 1024)
