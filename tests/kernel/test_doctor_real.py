"""`oomlens doctor`, `apply` and `undo --plan` against this kernel: the facts are the
kernel's (sysctls, CommitLimit recomputed to the kB), a sandbox memcg near its limit and
with oom_kill_disable found with its files' values, a real oom_adj write recognised by
its value, and plan -> apply -> undo on real sysctls (vm.swappiness and
vm.watermark_scale_factor, restored in teardown whatever happens) and on a real
process's oom_score_adj (raised; lowered without CAP_SYS_RESOURCE: EACCES).

Commands run in-process; the oracle is always the kernel's file read by the test.
Persisted sysctls go to a temporary sysctl.d, the journal to tmp_path.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from oomlens.cli.env import Env, ExitStatus
from oomlens.cli.main import main
from oomlens.doctor.checks import run_checks
from oomlens.doctor.gather import Roots, gather
from oomlens.doctor.plan import ItemKind, Plan, PlanItem
from oomlens.doctor.planfile import format_plan
from oomlens.kernel.overcommit import vm_commit_limit_kib
from oomlens.system.meminfo import read_vmstat
from oomlens.system.oomadj import boot_id, has_cap_sys_resource
from oomlens.system.sandbox import MIB, SandboxMemcg
from oomlens.system.snapshot import take_snapshot
from oomlens.system.tunables import DOCTOR_SYSCTLS, parse_swaps

pytestmark = pytest.mark.kernel
SandboxFactory = Callable[..., SandboxMemcg]
REVERSIBLE = ("vm/swappiness", "vm/watermark_scale_factor")


def read(path: str) -> str:
    with open(path) as handle:
        return handle.read().strip()


def sysctl(name: str) -> str:
    return read(f"/proc/sys/{name}")


def set_sysctl(name: str, value: str) -> None:
    with open(f"/proc/sys/{name}", "w") as handle:
        handle.write(value)


@pytest.fixture
def saved_sysctls() -> Iterator[dict[str, str]]:
    """The reversible sysctls' values now; written back at teardown, whatever the test did."""
    saved = {name: sysctl(name) for name in REVERSIBLE}
    try:
        yield saved
    finally:
        for name, value in saved.items():
            if sysctl(name) != value:
                set_sysctl(name, value)


@pytest.fixture
def sleeper() -> Iterator[subprocess.Popen[bytes]]:
    with subprocess.Popen(["sleep", "60"]) as proc:
        try:
            yield proc
        finally:
            proc.kill()


def facts_now() -> Any:
    return gather(take_snapshot(), Roots(), oom_kills=read_vmstat().get("oom_kill"),
                  now=time.time(), deep=True)


class Cli:
    def __init__(self, tmp_path: Path) -> None:
        self.tmp = tmp_path
        self.sysctl_dir = tmp_path / "sysctl.d"

    def __call__(self, *argv: str) -> tuple[int, Any, str]:
        out, err = io.StringIO(), io.StringIO()
        env = Env(out, err, stdout_isatty=False, colour=False, columns=120,
                  state_dir=str(self.tmp / "state"), systemd_dir=str(self.tmp / "systemd"),
                  sysctl_dir=str(self.sysctl_dir))
        status = main([*argv, "--json"], env)
        return status, json.loads(out.getvalue()) if out.getvalue() else None, err.getvalue()

    def plan(self, *items: PlanItem, plan_id: str = "kerneltest") -> tuple[Plan, str]:
        plan = Plan(plan_id, "2025-06-15T10:00:00+00:00", os.uname().nodename, boot_id(),
                    os.uname().release, items)
        path = str(self.tmp / f"{plan_id}.toml")
        Path(path).write_text(format_plan(plan, path))
        return plan, path


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    return Cli(tmp_path)


def sysctl_item(name: str, after: str) -> PlanItem:
    return PlanItem(ItemKind.SYSCTL, name.replace("/", "."), sysctl(name), after, "test",
                    "kernel-test")


def adj_item(proc: subprocess.Popen[bytes], after: int) -> PlanItem:
    start = int(read(f"/proc/{proc.pid}/stat").rsplit(")", 1)[1].split()[19])
    return PlanItem(ItemKind.OOM_SCORE_ADJ, str(proc.pid), read(f"/proc/{proc.pid}/oom_score_adj"),
                    str(after), "test", "kernel-test", pid=proc.pid, start_time_ticks=start,
                    comm="sleep")


class TestFactsAreTheKernels:
    def test_sysctls_swaps_and_commit_limit(self) -> None:
        facts = facts_now()
        for name in DOCTOR_SYSCTLS:
            assert facts.sysctls[name.replace("/", ".")] == int(sysctl(name)), name
        mem = facts.meminfo
        assert vm_commit_limit_kib(
            mem.mem_total_kib, mem.hugetlb_kib, mem.swap_total_kib,
            facts.sysctls["vm.overcommit_ratio"], facts.sysctls["vm.overcommit_kbytes"],
            facts.page_size) == mem.commit_limit_kib
        assert facts.swaps == parse_swaps(read("/proc/swaps") + "\n")
        assert facts.memcg_mount is not None and facts.memcg_controls is not None

    def test_doctor_json_matches_its_exit_status(self, cli: Cli) -> None:
        status, doc, _ = cli("doctor")
        above_info = doc["counts"]["critical"] + doc["counts"]["warning"]
        assert status == (ExitStatus.PROBLEM if above_info else ExitStatus.OK)
        kills = next(f for f in doc["findings"] if f["code"] == "oom-kills")  # tests kill here
        assert int(kills["evidence"][0]["value"]) <= read_vmstat()["oom_kill"]
        if not parse_swaps(read("/proc/swaps") + "\n"):
            swap = next(f for f in doc["findings"] if f["code"] == "no-swap")
            assert {"source": "/proc/meminfo SwapTotal", "value": "0 kB"} in swap["evidence"]

    def test_status_screen_has_the_top_findings(self, cli: Cli) -> None:
        _, screen, _ = cli()
        top = screen["doctor"]["top"]
        order = ["critical", "warning", "info"]
        assert 0 < len(top) <= 5
        assert [f["severity"] for f in top] == sorted((f["severity"] for f in top),
                                                      key=order.index)
        assert sum(screen["doctor"]["counts"].values()) >= len(top)


def test_sandbox_near_its_limit_and_with_oom_kill_disable(sandbox: SandboxFactory) -> None:
    box = sandbox(64 * MIB)
    box.start_hog(60)
    near = next(f for f in run_checks(facts_now()) if f.code == "memcg-near-limit"
                and box.path in f.summary)
    values = {e.source: e.value for e in near.evidence}
    assert values[f"{box.directory}/memory.limit_in_bytes"] == str(64 * MIB)
    usage = int(values[f"{box.directory}/memory.usage_in_bytes"])
    assert 60 * MIB <= usage <= int(read(f"{box.directory}/memory.max_usage_in_bytes"))
    control = f"{box.directory}/memory.oom_control"
    with open(control, "w") as handle:
        handle.write("1")
    try:
        hang = next(f for f in run_checks(facts_now()) if f.code == "memcg-oom-kill-disabled"
                    and box.path in f.summary)
        assert hang.severity.value == "warning"
        assert [e.value for e in hang.evidence] == ["oom_kill_disable 1", "under_oom 0"]
    finally:
        with open(control, "w") as handle:
            handle.write("0")


def test_an_oom_adj_write_is_recognised_by_its_value(sleeper: subprocess.Popen[bytes]) -> None:
    with open(f"/proc/{sleeper.pid}/oom_adj", "w") as handle:
        handle.write("5")  # raising: no capability needed; 5 * 1000 / 17 = 294
    assert read(f"/proc/{sleeper.pid}/oom_score_adj") == "294"
    finding = next(f for f in run_checks(facts_now()) if f.code == "oom-adj-used")
    assert (f"/proc/{sleeper.pid}/oom_score_adj",
            f"294 = oom_adj 5 x 1000/17 (sleep, pid {sleeper.pid})") in \
        [(e.source, e.value) for e in finding.evidence]


class TestPlanApplyUndo:
    def test_every_value_comes_back(self, cli: Cli, saved_sysctls: dict[str, str],
                                    sleeper: subprocess.Popen[bytes]) -> None:
        swappiness = str(int(saved_sysctls["vm/swappiness"]) % 100 + 1)
        scale = str(int(saved_sysctls["vm/watermark_scale_factor"]) + 2)
        plan, path = cli.plan(sysctl_item("vm/swappiness", swappiness),
                              sysctl_item("vm/watermark_scale_factor", scale),
                              adj_item(sleeper, 100))
        persisted = cli.sysctl_dir / plan.sysctl_file_name

        status, doc, _ = cli("apply", path, "--dry-run")
        assert status == ExitStatus.OK and [i["result"] for i in doc["items"]] == ["planned"] * 3
        assert {n: sysctl(n) for n in REVERSIBLE} == saved_sysctls
        assert read(f"/proc/{sleeper.pid}/oom_score_adj") == "0" and not persisted.exists()

        status, doc, _ = cli("apply", path)
        assert status == ExitStatus.OK
        assert (sysctl("vm/swappiness"), sysctl("vm/watermark_scale_factor")) == (swappiness,
                                                                                 scale)
        assert read(f"/proc/{sleeper.pid}/oom_score_adj") == "100"
        assert persisted.read_text().splitlines()[-2:] == [
            f"vm.swappiness = {swappiness}", f"vm.watermark_scale_factor = {scale}"]

        status, doc, _ = cli("undo", "--plan", plan.id)
        assert status == ExitStatus.OK and len(doc["restores"]) == 4
        assert {n: sysctl(n) for n in REVERSIBLE} == saved_sysctls
        assert read(f"/proc/{sleeper.pid}/oom_score_adj") == "0" and not persisted.exists()

    def test_drift_refuses_and_changes_nothing(self, cli: Cli,
                                               saved_sysctls: dict[str, str]) -> None:
        plan, path = cli.plan(sysctl_item("vm/swappiness", "7"),
                              sysctl_item("vm/watermark_scale_factor", "12"))
        drifted = str(int(saved_sysctls["vm/swappiness"]) % 100 + 3)
        set_sysctl("vm/swappiness", drifted)
        status, doc, _ = cli("apply", path)
        assert status == ExitStatus.PROBLEM and doc["items"] == []
        assert doc["refused"] == [f"sysctl vm.swappiness: planned from "
                                  f"{saved_sysctls['vm/swappiness']}, now {drifted}"]
        assert sysctl("vm/swappiness") == drifted
        assert sysctl("vm/watermark_scale_factor") == saved_sysctls["vm/watermark_scale_factor"]
        assert not (cli.sysctl_dir / plan.sysctl_file_name).exists()

    def test_a_value_the_kernel_refuses_is_not_persisted(self, cli: Cli,
                                                         saved_sysctls: dict[str, str]) -> None:
        plan, path = cli.plan(sysctl_item("vm/swappiness", "999"),  # 0..200: EINVAL
                              sysctl_item("vm/watermark_scale_factor", "11"))
        status, doc, _ = cli("apply", path)
        assert status == ExitStatus.PROBLEM
        assert [(i["kind"], i["result"]) for i in doc["items"]] == [
            ("sysctl", "failed"), ("sysctl", "applied"), ("sysctl.d", "applied")]
        assert doc["items"][0]["error"] == ("the kernel refused vm.swappiness = 999: out of its "
                                            "range")
        assert sysctl("vm/swappiness") == saved_sysctls["vm/swappiness"]
        text = (cli.sysctl_dir / plan.sysctl_file_name).read_text()
        assert "vm.watermark_scale_factor = 11" in text and "swappiness" not in text
        status, doc, _ = cli("undo", "--plan", plan.id)
        assert [r["undoes"]["target"] for r in doc["restores"]] == [
            str(cli.sysctl_dir / plan.sysctl_file_name), "vm.watermark_scale_factor"]
        assert {n: sysctl(n) for n in REVERSIBLE} == saved_sysctls

    @pytest.mark.skipif(has_cap_sys_resource(), reason="with CAP_SYS_RESOURCE it succeeds")
    def test_lowering_oom_score_adj_without_cap_sys_resource(
            self, cli: Cli, sleeper: subprocess.Popen[bytes]) -> None:
        plan, path = cli.plan(adj_item(sleeper, -900))
        status, doc, _ = cli("apply", path)
        assert status == ExitStatus.PERMISSION
        [item] = doc["items"]
        assert item["result"] == "denied" and "CAP_SYS_RESOURCE" in item["error"]
        assert read(f"/proc/{sleeper.pid}/oom_score_adj") == "0"
        status, journal, _ = cli("journal")
        assert [(c["state"], c["plan"]) for c in journal["changes"]] == [("failed", plan.id)]
        assert cli("undo", "--plan", plan.id)[1]["restores"] == []  # nothing was changed
