"""The CLI run in-process (streams captured) against this machine's /proc: exit codes,
JSON shapes and the one-line errors of bad input."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from oomlens.cli.env import Env, ExitStatus
from oomlens.cli.main import main


def run(*argv: str, proc_root: str = "/proc") -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    env = Env(out, err, stdout_isatty=False, colour=False, columns=120, proc_root=proc_root)
    status = main(list(argv), env)
    return status, out.getvalue(), err.getvalue()


def run_json(*argv: str) -> Any:
    status, out, err = run(*argv, "--json")
    assert status == ExitStatus.OK, err
    return json.loads(out)


class TestLs:
    def test_json_is_in_kill_order_with_required_keys(self) -> None:
        rows = run_json("ls")
        required = {"rank", "pid", "comm", "eligible", "badness", "oom_score",
                    "predicted_oom_score", "oom_score_adj"}
        assert rows and all(required <= row.keys() for row in rows)
        ranked = [r for r in rows if r["rank"] is not None]
        assert [r["rank"] for r in ranked] == list(range(1, len(ranked) + 1))
        badness = [r["badness"] for r in ranked]
        assert badness == sorted(badness, reverse=True)
        assert all(r["eligible"] is (r["rank"] is not None) for r in rows)

    def test_prediction_matches_kernel_for_a_quiet_process(self) -> None:
        # Not this process: `ls` runs in it and allocates between reading its
        # status and its oom_score.
        with subprocess.Popen(["sleep", "30"]) as quiet:
            try:
                rows = run_json("ls")
            finally:
                quiet.kill()
        row = next(r for r in rows if r["pid"] == quiet.pid)
        assert row["predicted_oom_score"] == row["oom_score"]

    def test_limit_and_match(self) -> None:
        assert len(run_json("ls", "--limit", "3")) == 3
        rows = run_json("ls", "--match", "^pytest$|python")
        assert rows and all("python" in r["comm"] or "python" in r["cmdline"]
                            or r["comm"] == "pytest" for r in rows)

    def test_kernel_threads_only_with_all(self) -> None:
        plain = run_json("ls")
        everything = run_json("ls", "--all")
        assert not any(r["pid"] == 2 for r in plain)
        kthreadd = next(r for r in everything if r["pid"] == 2)
        assert kthreadd["eligible"] is False
        assert kthreadd["ineligible_reason"] == "KTHREAD"

    def test_all_domains_starts_with_global(self) -> None:
        domains = run_json("ls", "--all-domains")
        assert domains[0]["kind"] == "global"
        assert domains[0]["totalpages"] > 0

    def test_text_output_has_no_colour_when_not_a_tty(self) -> None:
        status, out, _ = run("ls")
        assert status == 0
        assert "\x1b[" not in out
        assert out.splitlines()[0].split()[:3] == ["RANK", "PID", "USER"]


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["ls", "--cgroup", "/no/such/cgroup"], "not a memory cgroup with a limit"),
        (["ls", "--match", "("], "not a valid regular expression"),
        (["explain", "4194303"], "does not exist"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(argv: list[str], needle: str) -> None:
    status, out, err = run(*argv)
    assert status == ExitStatus.USAGE
    assert needle in err
    assert len(err.strip().splitlines()) == 1
    assert "Traceback" not in err + out


@pytest.mark.parametrize("argv", [["ls", "--limit", "0"], ["explain", "abc"],
                                  ["top", "--interval", "-1"], ["nosuch"]])
def test_invalid_option_values_exit_2(argv: list[str]) -> None:
    assert run(*argv)[0] == ExitStatus.USAGE


def test_no_procfs_is_unsupported(tmp_path: Path) -> None:
    status, _, err = run("ls", proc_root=str(tmp_path))
    assert status == ExitStatus.UNSUPPORTED
    assert "no procfs" in err


class TestExplain:
    def test_terms_add_up(self) -> None:
        # A process whose memory stands still: the kernel's oom_score is read a
        # moment after oomlens's own reads (pytest's own RSS moves between them).
        with subprocess.Popen(["sleep", "30"]) as quiet:
            try:
                doc = run_json("explain", str(quiet.pid))
            finally:
                quiet.kill()
        assert doc["schema"] == "oomlens.explain/1"
        glob = doc["domains"][0]
        assert glob["kind"] == "global"
        assert glob["badness"] == (glob["rss_pages"] + glob["swapents"] + glob["pgtables_pages"]
                                   + glob["adj_pages"])
        assert glob["adj_unit_pages"] == glob["totalpages"] // 1000
        assert doc["predicted_oom_score"] == doc["oom_score"]

    def test_init_is_not_eligible(self) -> None:
        doc = run_json("explain", "1")
        assert doc["domains"][0]["eligible"] is False
        assert "is_global_init" in doc["domains"][0]["ineligible_reason"]

    def test_text_names_the_folklore(self) -> None:
        status, out, _ = run("explain", str(os.getpid()))
        assert status == 0
        assert "badness = rss" in out
        assert "Nice value" in out and "oom_adj -17" in out


class TestStatus:
    def test_json_schema(self) -> None:
        doc = run_json()
        assert doc["schema"] == "oomlens.status/1"
        assert doc["domains"][0]["kind"] == "global"
        assert 0 < len(doc["domains"][0]["next_victims"]) <= 5
        assert doc["memory"]["mem_total_kib"] > 0

    def test_check_exit_status_follows_warnings(self) -> None:
        doc = run_json()
        status, _, _ = run("--check")
        has_warning = any(w["severity"] == "warning" for w in doc["warnings"])
        assert status == (ExitStatus.PROBLEM if has_warning else ExitStatus.OK)


def test_top_once_prints_header_and_rows() -> None:
    status, out, _ = run("top", "--once")
    assert status == 0
    lines = out.splitlines()
    assert lines[0].startswith("oomlens top")
    assert lines[3].split()[:2] == ["RANK", "PID"]
    assert len(lines) > 4


@pytest.mark.parametrize("command", ["ls --all", "explain 1"])
def test_broken_pipe_is_quiet(command: str) -> None:
    """`oomlens ls | head` must not print a traceback when the reader is gone. `true`
    exits long before the interpreter has started, so the writes (or the final flush of
    buffered output) hit EPIPE."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    script = f"{sys.executable} -m oomlens {command} | true; echo $?"
    proc = subprocess.run(["bash", "-o", "pipefail", "-c", script], capture_output=True,
                          text=True, timeout=60, check=False, env=env)
    assert proc.stdout.strip() == "0"
    assert "Traceback" not in proc.stderr and "BrokenPipe" not in proc.stderr
