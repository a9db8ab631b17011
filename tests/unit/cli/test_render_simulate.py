"""cli/render/simulate.py: a `simulate run` result as `oomlens.simulate/1` and as text,
with a real kernel report (tests/fixtures/reports) as its kill."""

from __future__ import annotations

import io
from pathlib import Path

from oomlens.cli.env import Env
from oomlens.cli.render.simulate import run_json, run_lines
from oomlens.kernel.badness import CURRENT_ERA
from oomlens.kernel.domain import DomainKind, OomDomain
from oomlens.kernel.select import Ranked
from oomlens.kernel.task import Task
from oomlens.ranking import RankedProcess
from oomlens.report.diagnose import diagnose
from oomlens.report.pipeline import events_in
from oomlens.simulate.sandboxrun import RunResult
from oomlens.simulate.verdict import Prediction, check_kill
from oomlens.system.snapshot import Process

MIB = 1 << 20
REPORT = Path(__file__).resolve().parents[2] / "fixtures" / "reports" / \
    "linux-4.4-memcg-v1-oneline-stats.txt"
DOMAIN = OomDomain(DomainKind.MEMCG, "/oomlens-simulate-1-ab", 16_384)
ENV = Env(io.StringIO(), io.StringIO(), stdout_isatty=False, colour=False, columns=100)


def ranked(pid: int, comm: str) -> RankedProcess:
    task = Task(pid=pid, comm=comm, oom_score_adj=0, rss_anon_pages=10_000, rss_file_pages=0,
                rss_shmem_pages=0, swapents=0, pgtables_bytes=0)
    process = Process(task=task, ppid=1, cmdline=comm, uid=0, user="root", state="S",
                      start_time_ticks=0, oom_score=None, memcg=DOMAIN.path, unit=None)
    return RankedProcess(process, Ranked(task, 1, None, None), DOMAIN, 666, CURRENT_ERA)


def result(predicted_pid: int, oom_kills: int) -> RunResult:
    (event,) = events_in([REPORT.read_bytes()], str(REPORT))
    prediction = Prediction((ranked(predicted_pid, "java"),), "sample", 0.0)
    check = check_kill(event, diagnose(event), prediction)
    return RunResult(DOMAIN.path, 1, DOMAIN, 64 * MIB, 0, pid=24500, returncode=-9,
                     checks=[check], oom_kills=oom_kills, peak_bytes=64 * MIB - 4096,
                     peak_source="memory.max_usage_in_bytes", samples=12)


def test_json() -> None:
    doc = run_json(result(24511, 2), ["java", "-jar", "x.jar"], 4096)
    assert (doc["schema"], doc["command"], doc["outcome"]) == (
        "oomlens.simulate/1", "run", "oom_killed")
    assert doc["exit"] == {"code": None, "signal": "SIGKILL"}
    assert doc["sandbox"]["memcg_version"] == 1 and doc["sandbox"]["totalpages"] == 16_384
    (kill,) = doc["kills"]
    assert kill["victim"] == {"pid": 24511, "comm": "java", "oom_score_adj": None}
    assert kill["predicted"]["pid"] == 24511 and kill["verdict"] == "matched"
    assert kill["event"]["victim"]["anon_rss_kb"] == 2074520
    assert doc["kills_not_in_log"] == 1 and doc["verdict"] == "matched"
    assert doc["headroom_bytes"] == 4096


def test_text() -> None:
    lines = run_lines(result(1, 1), ["java", "-jar", "x.jar"], ENV)
    assert lines[0] == ("Sandbox memory cgroup /oomlens-simulate-1-ab (cgroup v1): limit "
                        "64 MiB, no swap; removed")
    assert lines[1] == "Command: java -jar x.jar (pid 24500): killed by SIGKILL"
    # The report's task table names 24511 by oomlens's rules: the prediction was stale.
    assert lines[2].startswith("Kill 1: the kernel killed java (pid 24511); oomlens predicted "
                               "java (pid 1): moved (the prediction named another process")
    assert any(line.startswith("  Victim: java (pid 24511)") for line in lines)
    assert lines[-1] == ("Peak usage 64 MiB of 64 MiB (memory.max_usage_in_bytes): headroom "
                         "4.0 KiB (0.0%)")
