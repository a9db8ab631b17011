"""policy/targets.py on a fake /proc: what each TARGET selector names, including the
ones this machine cannot show for real (systemd units, a v1 host's named systemd
hierarchy), and the plan `adjust --dry-run` prints for them."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from fakeproc import FakeProcess, write_fake_proc

from oomlens.cli.env import Env, ExitStatus
from oomlens.cli.main import main
from oomlens.errors import NotFound
from oomlens.policy.match import Matchers
from oomlens.policy.targets import Target, select, unit_of
from oomlens.system.snapshot import scan_processes

SSHD = FakeProcess(10, comm="sshd", cmdline=b"/usr/sbin/sshd\0-D\0",
                   cgroup="1:name=systemd:/system.slice/ssh.service\n0::/\n")
SESSION = FakeProcess(11, comm="sshd", ppid=10, cmdline=b"sshd: alice\0",
                      cgroup="1:name=systemd:/user.slice/user-1000.slice/session-3.scope\n")
SHELL = FakeProcess(12, comm="bash", ppid=11, uid=1000, cmdline=b"-bash\0",
                    cgroup="0::/user.slice/user-1000.slice/session-3.scope\n")
PG = FakeProcess(20, comm="postgres", cmdline=b"/usr/lib/postgresql/15/bin/postgres\0",
                 cgroup="0::/system.slice/postgresql@15-main.service\n")
ALL = (SSHD, SESSION, SHELL, PG)


@pytest.fixture
def proc_root(tmp_path: Path) -> str:
    return str(write_fake_proc(tmp_path / "proc", ALL))


def pids_of(proc_root: str, target: Target) -> list[int]:
    processes, _ = scan_processes(proc_root)
    return [p.pid for p in select(processes, target, proc_root)]


class TestSelect:
    def test_unit_from_the_named_systemd_hierarchy_of_a_v1_host(self, proc_root: str) -> None:
        assert pids_of(proc_root, Target(matchers=Matchers(units=("ssh.service",)))) == [10]

    def test_unit_from_the_unified_hierarchy_and_instances(self, proc_root: str) -> None:
        target = Target(matchers=Matchers(units=("postgresql@15-main.service",)))
        assert pids_of(proc_root, target) == [20]

    def test_cgroup_path_covers_everything_below(self, proc_root: str) -> None:
        target = Target(matchers=Matchers(cgroups=("/user.slice",)))
        assert pids_of(proc_root, target) == [11, 12]

    def test_selectors_combine_with_and(self, proc_root: str) -> None:
        target = Target(matchers=Matchers(names=("sshd",), cgroups=("/user.slice/*",)))
        assert pids_of(proc_root, target) == [11]

    def test_pid_with_a_matcher_keeps_only_matching_pids(self, proc_root: str) -> None:
        with pytest.raises(NotFound, match="no process matches pid=12 comm=sshd"):
            pids_of(proc_root, Target(pids=(12,), matchers=Matchers(names=("sshd",))))

    def test_children_follow_the_parent_tree(self, proc_root: str) -> None:
        assert pids_of(proc_root, Target(pids=(10,), children=True)) == [10, 11, 12]

    def test_a_missing_pid_is_named(self, proc_root: str) -> None:
        with pytest.raises(NotFound, match="no process with pid 99"):
            pids_of(proc_root, Target(pids=(99,)))


def test_unit_of_prefers_any_hierarchy_over_the_memory_cgroup() -> None:
    assert unit_of(("/", "/system.slice/cron.service"), "/other.service") == "cron.service"
    assert unit_of((), "/system.slice/cron.service") == "cron.service"
    assert unit_of(None, None) is None


def test_adjust_unit_dry_run_plans_old_to_new(proc_root: str, tmp_path: Path) -> None:
    out, err = io.StringIO(), io.StringIO()
    env = Env(out, err, stdout_isatty=False, colour=False, columns=120, proc_root=proc_root,
              state_dir=str(tmp_path / "state"))
    status = main(["protect", "--unit", "ssh", "--dry-run", "--json"], env)
    assert status == ExitStatus.OK, err.getvalue()
    doc = json.loads(out.getvalue())
    assert [(c["pid"], c["old"], c["new"], c["result"]) for c in doc["changes"]] == [
        (10, 0, -1000, "planned")]
    assert doc["target"] == "unit=ssh.service"
    assert not (tmp_path / "state").exists()
