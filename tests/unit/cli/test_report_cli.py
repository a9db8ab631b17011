"""`oomlens report` in-process on the shipped corpus: sources, filters, exit codes,
the JSON contract, and bad input that loses nothing."""

from __future__ import annotations

import gzip
import io
import json
from pathlib import Path
from typing import Any

import pytest

from oomlens.cli.env import Env, ExitStatus
from oomlens.cli.main import main

CORPUS = Path(__file__).resolve().parents[2] / "fixtures" / "oomanalyser"
PROXMOX = CORPUS / "proxmox-5.15.158-2-pve-cgroupv2-lxc-oom-php-fpm.txt"
RHEL7 = CORPUS / "rhel7-3.10.0-514.6.1.el7-global-oom-mysqld.txt"
EVENT_KEYS = {
    "complete", "missing", "time", "kernel_version", "scope", "constraint", "trigger",
    "victim", "memcg", "memory", "tasks", "findings",
}  # fmt: skip


def run(*argv: str, stdin: bytes = b"", tmp: Path | None = None) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    env = Env(out, err, stdout_isatty=False, colour=False, columns=100,
              log_dir=str(tmp or "/nonexistent"), kmsg=str((tmp or Path("/x")) / "no-kmsg"),
              stdin=io.BytesIO(stdin))  # fmt: skip
    return main(["report", *argv], env), out.getvalue(), err.getvalue()


def run_json(*argv: str, stdin: bytes = b"", expect: int = ExitStatus.OK) -> Any:
    status, out, err = run(*argv, "--json", stdin=stdin)
    assert status == expect, err
    return json.loads(out)


def test_json_contract_over_the_corpus() -> None:
    document = run_json(str(CORPUS))
    assert document["schema"] == "oomlens.report/1"
    assert len(document["sources"]) == 6 and all(s["error"] is None for s in document["sources"])
    events = document["events"]
    assert len(events) == 6
    assert all(event.keys() >= EVENT_KEYS for event in events)
    assert events[0]["time"] == "2025-08-12T03:54:03"  # the only dated one comes first
    victims = sorted(e["victim"]["comm"] for e in events if e["victim"])
    assert victims == ["doxygen", "java", "mysqld", "php-fpm", "unattended-upgr"]
    for event in events:
        assert all({"code", "severity", "message", "evidence", "fix"} <= f.keys()
                   for f in event["findings"])


def test_filters() -> None:
    assert [e["victim"]["pid"] for e in run_json(str(CORPUS), "--comm", "php-fpm")["events"]] == [
        3902942]
    assert len(run_json(str(CORPUS), "--pid", "6576")["events"]) == 2  # java and mysqld
    assert len(run_json(str(CORPUS), "--last", "2")["events"]) == 2
    dated = run_json(str(CORPUS), "--since", "2025-08-12T00:00:00")["events"]
    assert [e["victim"]["comm"] for e in dated] == ["php-fpm"]
    assert run_json(str(CORPUS), "--until", "2025-08-11")["events"] == []


def test_stdin_with_syslog_prefixes_and_crlf() -> None:
    lines = RHEL7.read_bytes().split(b"\n")
    data = b"\r\n".join(b"Apr 01 14:13:32 mysrv kernel: " + line for line in lines if line)
    (event,) = run_json("-", stdin=data)["events"]
    assert event["host"] == "mysrv"
    assert event["victim"]["comm"] == "mysqld" and len(event["tasks"]) == 85


def test_bad_sources_are_named_and_the_good_ones_still_read(tmp_path: Path) -> None:
    corrupt = tmp_path / "kern.log.1.gz"
    good_then_bad = gzip.compress(PROXMOX.read_bytes())
    corrupt.write_bytes(good_then_bad[: len(good_then_bad) - 20])
    status, out, err = run(str(RHEL7), str(tmp_path / "missing.log"), str(corrupt), "--json")
    assert status == ExitStatus.USAGE, err
    document = json.loads(out)
    errors = {Path(s["name"]).name: s["error"] for s in document["sources"]}
    assert errors["missing.log"] == "no such file"
    assert "gzip data is corrupt" in errors["kern.log.1.gz"]
    assert errors[RHEL7.name] is None
    assert any(e["victim"] and e["victim"]["comm"] == "mysqld" for e in document["events"])


def test_human_output_has_the_summary_and_details() -> None:
    status, out, _ = run(str(PROXMOX), "--details")
    assert status == ExitStatus.OK
    assert "memcg_limit: /lxc/39004 reached its memory limit of 30 GiB" in out
    assert "21 × php-fpm" in out
    assert "The kernel's choice, recomputed with the 5.9 rules" in out and "checks out" in out


def test_no_default_source_at_all_is_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no dmesg, no journalctl
    status, _, err = run(tmp=tmp_path)
    assert status == ExitStatus.USAGE
    assert "no kernel log found" in err


def test_default_sources_read_var_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    (tmp_path / "kern.log").write_bytes(PROXMOX.read_bytes())
    (tmp_path / "syslog").write_bytes(PROXMOX.read_bytes())  # Debian logs it twice
    status, out, _ = run("--json", tmp=tmp_path)
    assert status == ExitStatus.OK
    document = json.loads(out)
    assert [Path(s["name"]).name for s in document["sources"]] == ["kern.log", "syslog"]
    assert len(document["events"]) == 1 and document["duplicates_dropped"] == 1


@pytest.mark.parametrize("bad", ["yesterdayish", "5y", ""])
def test_bad_time_is_a_usage_error(bad: str) -> None:
    status, _, _ = run(str(RHEL7), "--since", bad)
    assert status == ExitStatus.USAGE


def test_status_screen_shows_the_last_kills_of_the_kernel_log(tmp_path: Path) -> None:
    kmsg = tmp_path / "kmsg.txt"  # a saved ring buffer in the /dev/kmsg wire format
    lines = [line for line in PROXMOX.read_text().splitlines() if line.strip()]
    kmsg.write_text("".join(f"6,{n},{n * 1000},-;{line[26:]}\n" for n, line in enumerate(lines)))
    out, err = io.StringIO(), io.StringIO()
    env = Env(out, err, stdout_isatty=False, colour=False, columns=100, kmsg=str(kmsg))
    assert main(["--json"], env) == ExitStatus.OK, err.getvalue()
    (kill,) = json.loads(out.getvalue())["recent_oom_kills"]
    assert kill["victim"]["pid"] == 3902942
    assert kill["main_finding"]["code"] == "memcg_limit"
    out.truncate(0)
    assert main([], env) == ExitStatus.OK
    assert "php-fpm (3902942)  memcg_limit: /lxc/39004" in out.getvalue()
