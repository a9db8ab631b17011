"""TARGET selectors of `adjust`/`protect`/`prefer`: which processes of a snapshot they
name. Selectors combine like pgrep's: every selector given must match (AND), the
values of one selector are alternatives (OR); `--pid` names processes directly.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from oomlens.errors import NotFound
from oomlens.policy.match import Matchers, Need, Subject
from oomlens.policy.plan import with_descendants
from oomlens.system.memcg import systemd_unit
from oomlens.system.procfs import read_cgroup_paths, read_exe
from oomlens.system.snapshot import Process


@dataclass(frozen=True, slots=True)
class Target:
    pids: tuple[int, ...] = ()
    matchers: Matchers = field(default_factory=Matchers)
    children: bool = False

    def describe(self) -> str:
        parts = [f"pid={','.join(map(str, self.pids))}"] if self.pids else []
        if not self.matchers.is_empty():
            parts.append(self.matchers.describe())
        if self.children:
            parts.append("and their descendants")
        return " ".join(parts)


def unit_of(cgroups: Sequence[str] | None, memcg: str | None) -> str | None:
    """The systemd unit from any hierarchy (the named systemd one on v1 hosts, the
    unified one on v2), else from the memory cgroup path."""
    for path in cgroups or ():
        unit = systemd_unit(path)
        if unit is not None:
            return unit
    return systemd_unit(memcg)


def subject_of(proc: Process, needs: Need, proc_root: str) -> Subject:
    """A snapshot process as matchers see it, with the extra reads they need."""
    cgroups = read_cgroup_paths(proc_root, proc.pid) if needs & Need.CGROUP else None
    return Subject(
        pid=proc.pid, comm=proc.comm, uid=proc.uid, user=proc.user, cmdline=proc.cmdline,
        exe=read_exe(proc_root, proc.pid) if needs & Need.EXE else None,
        cgroups=cgroups, unit=unit_of(cgroups, proc.memcg),
    )


def select(processes: Sequence[Process], target: Target, proc_root: str) -> list[Process]:
    """The processes `target` names. Raises NotFound when it names none (a typo must
    not look like success), or when a `--pid` does not exist."""
    known = {p.pid: p for p in processes}
    missing = [pid for pid in target.pids if pid not in known]
    if missing:
        raise NotFound(f"no process with pid {', '.join(map(str, missing))}")
    chosen = set(target.pids)
    if not target.matchers.is_empty():
        needs = target.matchers.needs()
        pool = [known[pid] for pid in target.pids] if target.pids else processes
        chosen = {p.pid for p in pool
                  if target.matchers.matches(subject_of(p, needs, proc_root))}
    if target.children:
        chosen = with_descendants(processes, chosen)
    found = [known[pid] for pid in sorted(chosen) if pid in known]
    if not found:
        raise NotFound(f"no process matches {target.describe()}")
    return found
