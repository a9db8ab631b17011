"""The exec sink on real `sh -c` commands: the event's JSON line on stdin, the
OOMLENS_* variables, a non-zero exit reported with the first stderr line, and a
command that never ends killed at the timeout together with its children."""

from __future__ import annotations

import json
import os
import signal
import threading
from pathlib import Path
from typing import Any

import pytest

from oomlens.notify import DeliveryFailed, Notice, Notifier, exec_sink
from oomlens.notify.command import exit_text, hook_environment


def notice(event: dict[str, Any]) -> Notice:
    return Notice(event, json.dumps(event, separators=(",", ":")))


def deliver(command: str, event: dict[str, Any], timeout: float = 10.0) -> None:
    exec_sink(command, timeout).deliver(notice(event), threading.Event())


def gone_or_zombie(pid: int) -> bool:
    """Dead: no /proc entry, or a zombie its (maybe non-reaping) new parent holds."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rpartition(")")[2].split()[0] in ("Z", "X")


class TestExecSink:
    def test_the_command_reads_exactly_the_json_line(self, tmp_path: Path,
                                                     event: dict[str, Any]) -> None:
        out = tmp_path / "stdin"
        lines: list[str] = []
        with Notifier([exec_sink(f"cat > '{out}'", 10.0)], log=lines.append) as notifier:
            notifier.submit(event)
        assert notifier.delivered == 1 and lines == []
        text = out.read_text()
        assert text == json.dumps(event, separators=(",", ":")) + "\n"
        assert json.loads(text) == event

    def test_the_variables_name_the_event(self, tmp_path: Path, event: dict[str, Any]) -> None:
        out = tmp_path / "env"
        deliver('printf "%s|%s|%s|%s" "$OOMLENS_EVENT_KIND" "$OOMLENS_VICTIM_COMM" '
                f'"$OOMLENS_VICTIM_PID" "$OOMLENS_HOST" > "{out}"', event)
        assert out.read_text() == "kernel|postgres|1234|db1"

    def test_an_event_without_a_victim_has_empty_victim_variables(
            self, lost_event: dict[str, Any]) -> None:
        assert hook_environment(lost_event) == {
            "OOMLENS_EVENT_KIND": "lost", "OOMLENS_VICTIM_COMM": "",
            "OOMLENS_VICTIM_PID": "", "OOMLENS_HOST": "db1",
        }

    def test_the_command_keeps_our_environment(self, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch,
                                               event: dict[str, Any]) -> None:
        monkeypatch.setenv("OOMLENS_TEST_TOKEN", "s3cret")
        out = tmp_path / "env"
        deliver(f'printf %s "$OOMLENS_TEST_TOKEN" > "{out}"', event)
        assert out.read_text() == "s3cret"

    def test_a_non_zero_exit_fails_with_status_and_first_stderr_line(
            self, event: dict[str, Any]) -> None:
        with pytest.raises(DeliveryFailed) as failed:
            deliver("echo >&2; echo 'curl: (6) no host' >&2; echo more >&2; exit 3", event)
        assert str(failed.value) == "exit status 3: curl: (6) no host"

    def test_a_failure_is_counted_and_logged(self, event: dict[str, Any]) -> None:
        lines: list[str] = []
        with Notifier([exec_sink("echo nope >&2; exit 2", 10.0)], log=lines.append) as notifier:
            notifier.submit(event)
        assert (notifier.delivered, notifier.failures) == (0, 1)
        assert lines == ["notify exec: event 17: exit status 2: nope"]

    def test_a_silent_failure_has_only_the_status(self, event: dict[str, Any]) -> None:
        with pytest.raises(DeliveryFailed, match=r"^exit status 1$"):
            deliver("false", event)

    def test_a_command_that_does_not_read_stdin_is_delivered(
            self, event: dict[str, Any]) -> None:
        deliver("true", {**event, "padding": "x" * 200_000})  # more than a pipe holds

    def test_at_the_timeout_the_whole_process_group_is_killed(
            self, tmp_path: Path, event: dict[str, Any]) -> None:
        child_file = tmp_path / "child"
        script = f'sleep 600 & echo $! > "{child_file}"; wait'
        with pytest.raises(DeliveryFailed, match=r"^timed out after 0.5 s, killed$"):
            deliver(script, event, timeout=0.5)
        child = int(child_file.read_text())
        try:
            assert wait_until_dead(child)  # the shell's child, not only the shell
        finally:
            if not gone_or_zombie(child):
                os.kill(child, signal.SIGKILL)

    def test_a_hook_killed_by_a_signal_says_so(self, event: dict[str, Any]) -> None:
        with pytest.raises(DeliveryFailed, match=r"^killed by SIGTERM$"):
            deliver("kill -TERM $$", event)


def wait_until_dead(pid: int) -> bool:
    """SIGKILL is delivered at once but the exit takes a moment to finish."""
    done = threading.Event()
    for _ in range(1000):
        if gone_or_zombie(pid):
            return True
        done.wait(0.01)
    return False


class TestExitText:
    @pytest.mark.parametrize(("returncode", "text"), [
        (0, "exit status 0"), (3, "exit status 3"), (-9, "killed by SIGKILL"),
        (-200, "killed by signal 200"),
    ])
    def test_exit_text(self, returncode: int, text: str) -> None:
        assert exit_text(returncode) == text
