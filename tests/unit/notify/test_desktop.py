"""The desktop sink with a fake notify-send (a shell script on PATH that writes its
arguments and environment to a file), a fake /run/user and a fake /proc: which
sessions are notified, with what, as whom; and the notification's text."""

from __future__ import annotations

import os
import pwd
import shutil
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from oomlens.notify import DeliveryFailed, Notice, Notifier, desktop_sink
from oomlens.notify.desktop import dbus_address, describe, graphical_sessions

UID = os.geteuid()
NOBODY = 65534
FAKE_NOTIFY_SEND = """#!/bin/sh
if [ -e "{base}/fail" ]; then echo 'GDBus.Error: no notification server' >&2; exit 1; fi
printf '%s\\0' "$@" "UID=$(id -u)" "DBUS=$DBUS_SESSION_BUS_ADDRESS" \\
    "XDG=$XDG_RUNTIME_DIR" "HOME=$HOME" > "{base}/calls/$$"
"""


@dataclass
class Desktop:
    """A fake machine: notify-send in `bin`, sessions under `run`, processes in `proc`."""

    base: Path

    @property
    def run(self) -> Path:
        return self.base / "run"

    @property
    def proc(self) -> Path:
        return self.base / "proc"

    def session(self, uid: int) -> None:
        """A session bus for `uid` (a plain file: only its existence is checked)."""
        (self.run / str(uid)).mkdir(parents=True)
        (self.run / str(uid) / "bus").touch()

    def process(self, pid: int, uid: int, environ: bytes) -> None:
        directory = self.proc / str(pid)
        directory.mkdir(parents=True)
        (directory / "environ").write_bytes(environ)
        os.chown(directory, uid, -1)

    def calls(self) -> list[list[str]]:
        return [path.read_text().split("\0")[:-1]
                for path in sorted((self.base / "calls").iterdir())]

    def sink(self) -> Any:
        return desktop_sink(proc_root=str(self.proc), run_user=str(self.run))


@pytest.fixture
def desktop(monkeypatch: pytest.MonkeyPatch) -> Iterator[Desktop]:
    """Made under /tmp, world-readable, so notify-send also runs as another user."""
    base = Path(tempfile.mkdtemp(prefix="oomlens-desktop-"))
    try:
        base.chmod(0o755)
        for name in ("bin", "run", "proc", "calls"):
            (base / name).mkdir()
        (base / "calls").chmod(0o777)
        script = base / "bin" / "notify-send"
        script.write_text(FAKE_NOTIFY_SEND.format(base=base))
        script.chmod(0o755)
        monkeypatch.setenv("PATH", f"{base / 'bin'}{os.pathsep}{os.environ['PATH']}")
        yield Desktop(base)
    finally:
        shutil.rmtree(base)


def deliver(sink: Any, event: dict[str, Any]) -> None:
    sink.deliver(Notice(event, "{}"), threading.Event())


class TestDesktopSink:
    def test_a_graphical_session_gets_the_notification(self, desktop: Desktop,
                                                       event: dict[str, Any]) -> None:
        desktop.session(UID)
        desktop.process(4242, UID, b"HOME=/root\0WAYLAND_DISPLAY=wayland-0\0")
        deliver(desktop.sink(), event)
        summary, body = describe(event)
        assert desktop.calls() == [[
            "--urgency=critical", "--app-name=oomlens", "--", summary, body,
            f"UID={UID}", f"DBUS=unix:path={desktop.run}/{UID}/bus",
            f"XDG={desktop.run}/{UID}", f"HOME={pwd.getpwuid(UID).pw_dir}",
        ]]
        assert summary == "OOM kill: postgres (1234)"

    def test_no_session_is_no_call_and_no_failure(self, desktop: Desktop,
                                                  event: dict[str, Any]) -> None:
        lines: list[str] = []
        with Notifier([desktop.sink()], log=lines.append) as notifier:
            notifier.submit(event)
        assert desktop.calls() == []
        assert (notifier.delivered, notifier.failures, lines) == (1, 0, [])

    def test_a_bus_without_a_display_is_not_a_session(self, desktop: Desktop,
                                                      event: dict[str, Any]) -> None:
        desktop.session(UID)  # a lingering user: a bus, services, no display
        desktop.process(4242, UID, b"HOME=/root\0DISPLAY=\0")
        deliver(desktop.sink(), event)
        assert desktop.calls() == []

    def test_a_bus_whose_user_has_no_process_is_not_a_session(
            self, desktop: Desktop, event: dict[str, Any]) -> None:
        desktop.session(UID)
        deliver(desktop.sink(), event)
        assert desktop.calls() == []

    def test_a_display_without_a_bus_is_not_a_session(self, desktop: Desktop) -> None:
        desktop.process(4242, UID, b"DISPLAY=:0\0")
        assert graphical_sessions(str(desktop.proc), str(desktop.run)) == []

    def test_no_notify_send_is_no_sink(self, tmp_path: Path,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("PATH", str(tmp_path))
        assert desktop_sink() is None

    def test_a_failing_notify_send_fails_with_its_stderr(self, desktop: Desktop,
                                                          event: dict[str, Any]) -> None:
        desktop.session(UID)
        desktop.process(4242, UID, b"DISPLAY=:0\0")
        (desktop.base / "fail").touch()
        with pytest.raises(DeliveryFailed) as failed:
            deliver(desktop.sink(), event)
        assert str(failed.value) == (f"uid {UID}: exit status 1: "
                                     "GDBus.Error: no notification server")

    @pytest.mark.skipif(UID != 0, reason="only root runs notify-send as another user")
    def test_root_notifies_each_user_as_that_user(self, desktop: Desktop,
                                                  event: dict[str, Any]) -> None:
        desktop.session(UID)
        desktop.session(NOBODY)
        desktop.process(100, UID, b"DISPLAY=:0\0")
        desktop.process(200, NOBODY, b"DISPLAY=:1\0")
        deliver(desktop.sink(), event)
        calls = desktop.calls()
        users = sorted(entry for call in calls for entry in call if entry.startswith("UID="))
        assert users == sorted([f"UID={UID}", f"UID={NOBODY}"])
        assert f"DBUS=unix:path={desktop.run}/{NOBODY}/bus" in [
            entry for call in calls for entry in call]


class TestDescribe:
    def test_a_kill_with_a_victim(self, event: dict[str, Any]) -> None:
        assert describe(event) == (
            "OOM kill: postgres (1234)",
            "on db1\nmemory cgroup limit of /system.slice/postgresql.service\n"
            "RSS 1.2 GiB\nfinding: memcg-limit-hit\noomlens history show 17",
        )

    def test_kills_the_log_lost(self, lost_event: dict[str, Any]) -> None:
        assert describe(lost_event) == ("OOM kills the kernel log lost: 2",
                                        "on db1\noomlens history show 18")

    def test_a_memcg_kill_without_a_victim(self) -> None:
        event = {"kind": "memcg", "host": "h", "scope": "memcg", "cgroup": "/a", "victim": None}
        assert describe(event) == ("OOM kill in /a", "on h\nmemory cgroup limit of /a")

    def test_hostile_text_stays_one_summary_line_and_no_markup(
            self, event: dict[str, Any]) -> None:
        hostile = {**event, "victim": {**event["victim"], "comm": "evil\n<b>x"},
                   "cgroup": "/a<i>&", "scope": "memcg"}
        summary, body = describe(hostile)
        assert summary == "OOM kill: evil <b>x (1234)"  # the summary is not markup
        assert "memory cgroup limit of /a&lt;i&gt;&amp;" in body


class TestDbusAddress:
    def test_plain_paths_are_unchanged(self) -> None:
        assert dbus_address("/run/user/1000/bus") == "unix:path=/run/user/1000/bus"

    def test_other_bytes_are_escaped(self) -> None:
        assert dbus_address("/tmp/a b;c/bus") == "unix:path=/tmp/a%20b%3bc/bus"
