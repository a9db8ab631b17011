"""`oomlens simulate` in-process on a fake /proc and cgroupfs (no root, nothing
started, nothing killed): the `oomlens.simulate/1` documents of `order` and of the
refusals, the text, and the one-line errors with their exit statuses. What needs a
real kernel is in tests/kernel/test_simulate_real.py."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path
from typing import Any

import pytest
from fakecgroup import make_v1_memcg
from fakeproc import FakeProcess, mountinfo_text, write_fake_proc

from oomlens.cli.env import Env, ExitStatus
from oomlens.cli.main import main
from oomlens.system import container

MIB = 1 << 20
PAGE = 4096
pytestmark = pytest.mark.skipif(os.sysconf("SC_PAGE_SIZE") != PAGE,
                                reason="fixtures assume 4 KiB pages")

# In /box (256 MiB = 65_536 pages, one adj point = 65 pages):
#   100: 40_000 anon + 2_000 file + 100 PTE pages = 42_100 points, frees 40_100 pages
#   101: 10_000 anon + 12 PTE pages + 300 * 65 = 29_512 points, frees 10_012 pages
#   102:  5_000 anon + 12 PTE pages = 5_012 points, frees 5_012 pages
# Outside: 300 with 100_000 anon pages. Globally (6_171_025 pages, one adj point =
# 6_171 pages) 101's oom_score_adj 300 outweighs everything: it dies first there.
BOX = "4:memory:/box\n0::/\n"
INIT = FakeProcess(pid=1, comm="init", ppid=0, start_time_ticks=1, rss_anon_kib=4096,
                   rss_file_kib=0, pte_kib=16, cmdline=b"/sbin/init\0")
BIG = FakeProcess(pid=100, comm="big", start_time_ticks=100, rss_anon_kib=160_000,
                  rss_file_kib=8_000, pte_kib=400, cgroup=BOX, cmdline=b"/bin/big\0")
SMALL = FakeProcess(pid=101, comm="small", start_time_ticks=101, rss_anon_kib=40_000,
                    rss_file_kib=0, pte_kib=48, oom_score_adj=300, cgroup=BOX,
                    cmdline=b"/bin/small\0")
TINY = FakeProcess(pid=102, comm="tiny", start_time_ticks=102, rss_anon_kib=20_000,
                   rss_file_kib=0, pte_kib=48, cgroup=BOX, cmdline=b"/bin/tiny\0--multi\nline\0")
OUTSIDE = FakeProcess(pid=300, comm="outside", start_time_ticks=300, rss_anon_kib=400_000,
                      rss_file_kib=0, pte_kib=800, cmdline=b"/bin/outside\0")
KTHREAD = FakeProcess(pid=2, comm="kthreadd", ppid=0, flags=0x00200000, has_mm=False,
                      cmdline=b"")


def fake_system(tmp_path: Path, *, oom_kill_disable: int = 0,
                meminfo: str | None = None) -> str:
    cgroups = tmp_path / "memory"
    directory = make_v1_memcg(cgroups, "/box", limit_bytes=256 * MIB, memsw_limit_bytes=256 * MIB,
                              usage_bytes=100 * MIB, procs=[100, 101, 102],
                              oom_kill_disable=oom_kill_disable)
    (directory / "memory.stat").write_text("total_inactive_file 0\n")
    extra: dict[str, Any] = {} if meminfo is None else {"meminfo": meminfo}
    proc = write_fake_proc(tmp_path / "proc", [INIT, KTHREAD, BIG, SMALL, TINY, OUTSIDE],
                           mountinfo=mountinfo_text(memory_v1=(cgroups, "/")), **extra)
    return str(proc)


def run(proc_root: str, *argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    env = Env(out, err, stdout_isatty=False, colour=False, columns=120, proc_root=proc_root,
              kmsg=os.path.join(proc_root, "kmsg"))
    status = main(["simulate", *argv], env)
    return status, out.getvalue(), err.getvalue()


def run_json(proc_root: str, *argv: str, status: int = ExitStatus.OK) -> Any:
    code, out, err = run(proc_root, *argv, "--json")
    assert code == status, err
    document = json.loads(out)
    assert document["schema"] == "oomlens.simulate/1"
    return document


class TestOrder:
    def test_global_first_victim(self, tmp_path: Path) -> None:
        doc = run_json(fake_system(tmp_path), "order")
        assert (doc["command"], doc["outcome"]) == ("order", "predicted")
        assert doc["domain"]["kind"] == "global" and doc["need_bytes"] is None
        (kill,) = doc["kills"]
        assert kill["process"]["pid"] == 101 and kill["process"]["rank"] == 1
        assert kill["process"]["badness"] == 10_012 + 300 * 6_171
        assert kill["freed_bytes"] == (10_000 + 12) * PAGE
        assert kill["rss_bytes"] == 10_000 * PAGE and kill["also_killed"] == []
        assert doc["need_met"] is True and doc["freed_bytes"] == kill["freed_bytes"]

    def test_memcg_until_need(self, tmp_path: Path) -> None:
        doc = run_json(fake_system(tmp_path), "order", "--domain", "/box", "--need", "190M")
        assert doc["domain"] == {"domain": "memcg /box", "kind": "memcg", "path": "/box",
                                 "totalpages": 65_536, "total_bytes": 256 * MIB,
                                 "adj_unit_pages": 65}
        assert [k["process"]["pid"] for k in doc["kills"]] == [100, 101]
        assert [k["process"]["badness"] for k in doc["kills"]] == [42_100, 29_512]
        assert [k["freed_total_bytes"] for k in doc["kills"]] == [40_100 * PAGE, 50_112 * PAGE]
        assert doc["need_bytes"] == 190 * MIB and doc["need_met"] is True
        assert doc["eligible_processes"] == 3

    def test_need_as_a_share_of_the_domain(self, tmp_path: Path) -> None:
        doc = run_json(fake_system(tmp_path), "order", "--domain", "/box", "--need", "90%")
        assert doc["need_bytes"] == 256 * MIB * 90 // 100
        assert len(doc["kills"]) == 3 and doc["need_met"] is False
        assert "charges fail" in doc["notes"][0]

    def test_what_if(self, tmp_path: Path) -> None:
        doc = run_json(fake_system(tmp_path), "order", "--domain", "/box", "--adj", "102=1000")
        assert doc["overrides"] == [{"pid": 102, "comm": "tiny", "oom_score_adj_was": 0,
                                     "oom_score_adj": 1000, "named_pid": 102}]
        (kill,) = doc["kills"]
        assert kill["process"]["pid"] == 102
        assert kill["process"]["badness"] == 5_012 + 1000 * 65
        assert kill["process"]["oom_score_adj"] == 1000

    def test_text(self, tmp_path: Path) -> None:
        status, out, err = run(fake_system(tmp_path), "order", "--domain", "box", "--need",
                               "300M", "--adj", "101=0")
        assert status == ExitStatus.OK, err
        lines = out.splitlines()
        assert lines[0].startswith("Kill order in the memcg /box domain: totalpages 65536")
        assert lines[1] == ("What if: pid 101 (small) had oom_score_adj 0 instead of 300")
        assert lines[2].split() == ["STEP", "PID", "BADNESS", "SHARE", "ADJ", "RSS", "SWAP",
                                    "FREES", "FREED", "COMMAND"]
        rows = [line.split() for line in lines[3:6]]
        assert [row[1] for row in rows] == ["100", "101", "102"]
        assert rows[1][4] == "300->0"
        assert lines[5].endswith("/bin/tiny --multi line")  # one line per row
        assert "cannot be freed" in out


@pytest.mark.parametrize(("argv", "needle"), [
    (["order", "--domain", "/nope"], "not a memory cgroup with a limit"),
    (["order", "--adj", "999=1"], "process 999 does not exist"),
    (["order", "--domain", "/box", "--adj", "300=5"], "is not in the memcg /box domain"),
    (["order", "--adj", "100=1", "--adj", "100=2"], "given twice"),
    (["order", "--adj", "2=100"], "kernel thread"),
    (["order", "--need", "lots"], "--need: not a size or percent"),
    (["oom", "/"], "not the root"),
    (["oom", "/nope"], "not a memory cgroup with a limit"),
    (["run", "--limit", "64M"], "name the command"),
    (["run", "--limit", "64M", "--", "true"], "is for reading only"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path: Path, argv: list[str], needle: str) -> None:
    status, out, err = run(fake_system(tmp_path), *argv)
    assert status == ExitStatus.USAGE, err
    assert needle in err and len(err.strip().splitlines()) == 1
    assert "Traceback" not in err + out


@pytest.mark.parametrize("argv", [
    ["order", "--adj", "1=5000"], ["order", "--adj", "x"], ["order", "--adj", "0=1"],
    ["run", "--limit", "10%", "--", "true"], ["run", "--limit", "0", "--", "true"],
    ["run", "--", "true"], ["oom"], ["nosuch"],
])
def test_invalid_option_values_exit_2(tmp_path: Path, argv: list[str]) -> None:
    assert run(fake_system(tmp_path), *argv)[0] == ExitStatus.USAGE


def test_run_says_why_a_command_cannot_run(tmp_path: Path) -> None:
    script = tmp_path / "script"
    script.write_text("#!/bin/sh\n")
    proc = fake_system(tmp_path)
    status, _, err = run(proc, "run", "--limit", "64M", "--", str(tmp_path / "missing"))
    assert (status, err.strip()) == (ExitStatus.COMMAND_NOT_FOUND,
                                     f"oomlens: {tmp_path / 'missing'}: no such file")
    status, _, err = run(proc, "run", "--limit", "64M", "--", str(script))
    assert status == ExitStatus.CANNOT_EXECUTE and "not executable" in err
    status, _, err = run(proc, "run", "--limit", "64M", "--", "no-such-command-oomlens")
    assert status == ExitStatus.COMMAND_NOT_FOUND and "command not found" in err


class TestOomRefusals:
    def test_without_yes_kill_the_prediction_and_exit_2(self, tmp_path: Path) -> None:
        code, out, err = run(fake_system(tmp_path), "oom", "/box", "--json")
        assert code == ExitStatus.USAGE and "--yes-kill" in err
        doc = json.loads(out)
        assert (doc["command"], doc["outcome"]) == ("oom", "refused")
        assert doc["room_bytes"] == 156 * MIB and doc["refusal"] is None
        assert doc["predicted"]["pid"] == 100
        helper = [r for r in doc["prediction"]["ranking"] if r["pid"] is None]
        # The helper grows into the room: 39_936 pages and 78 pages of page tables.
        assert [h["badness"] for h in helper] == [39_936 + 78]
        assert [r["rank"] for r in doc["prediction"]["ranking"]] == [1, 2, 3, 4]
        assert doc["kills"] == [] and doc["helper"] is None

    def test_text_marks_the_helper(self, tmp_path: Path) -> None:
        code, out, _ = run(fake_system(tmp_path), "oom", "/box")
        assert code == ExitStatus.USAGE
        assert "(oomlens's helper, when grown)" in out
        assert out.splitlines()[-1] == "Predicted victim: big (pid 100)"

    def test_oom_kill_disable_is_refused_with_exit_1(self, tmp_path: Path) -> None:
        code, out, err = run(fake_system(tmp_path, oom_kill_disable=1), "oom", "/box",
                             "--yes-kill", "--json")
        assert code == ExitStatus.PROBLEM and "oom_kill_disable" in err
        assert json.loads(out)["refusal"].startswith("/box has oom_kill_disable set")

    def test_room_the_host_cannot_spare_is_refused(self, tmp_path: Path) -> None:
        meminfo = "MemTotal: 2097152 kB\nMemFree: 0 kB\nMemAvailable: 300000 kB\n"
        code, _, err = run(fake_system(tmp_path, meminfo=meminfo), "oom", "/box", "--yes-kill")
        assert code == ExitStatus.PROBLEM and "the host would run out first" in err

    def test_yes_kill_needs_this_systems_proc(self, tmp_path: Path) -> None:
        code, _, err = run(fake_system(tmp_path), "oom", "/box", "--yes-kill")
        assert code == ExitStatus.USAGE and "is for reading only" in err


class TestSysrq:
    @pytest.fixture
    def no_container(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr(container, "detect_container", lambda **_: [])

    def test_unsupported_without_sysrq_trigger(self, tmp_path: Path, no_container: None) -> None:
        code, out, err = run(fake_system(tmp_path), "sysrq", "--yes-really", "--json")
        assert code == ExitStatus.UNSUPPORTED and "no /proc/sysrq-trigger" in err
        doc = json.loads(out)
        assert (doc["outcome"], doc["predicted"]["pid"]) == ("unsupported", 101)
        assert doc["domain"]["kind"] == "global"

    def test_refused_in_a_container(self, tmp_path: Path,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
        proc = fake_system(tmp_path)
        Path(proc, "sysrq-trigger").write_text("")
        monkeypatch.setattr(container, "detect_container", lambda **_: ["/.dockerenv exists"])
        code, out, err = run(proc, "sysrq", "--yes-really", "--json")
        assert code == ExitStatus.PROBLEM and "--in-container" in err
        assert json.loads(out)["container"] == {"detected": True,
                                                "evidence": ["/.dockerenv exists"]}
        assert Path(proc, "sysrq-trigger").read_text() == ""

    def test_refused_without_yes_really(self, tmp_path: Path, no_container: None) -> None:
        proc = fake_system(tmp_path)
        Path(proc, "sysrq-trigger").write_text("")
        code, out, err = run(proc, "sysrq")
        assert code == ExitStatus.USAGE and "--yes-really" in err
        assert "Predicted victim: small (pid 101)" in out
        assert Path(proc, "sysrq-trigger").read_text() == ""

    def test_triggered_writes_f_and_waits_for_the_kill(self, tmp_path: Path,
                                                       no_container: None) -> None:
        proc = fake_system(tmp_path)
        Path(proc, "sysrq-trigger").write_text("")
        Path(proc, "kmsg").write_text("")  # a log in which no kill ever appears
        code, out, _ = run(proc, "sysrq", "--yes-really", "--timeout", "0.2", "--json")
        assert Path(proc, "sysrq-trigger").read_text() == "f"
        assert code == ExitStatus.PROBLEM
        assert json.loads(out)["outcome"] == "timed_out"
