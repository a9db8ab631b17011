"""The exec sink: a shell command run for each event (`oomlens watch --exec CMD`).

The command runs in its own session, so that at the timeout one `killpg` ends it
and everything it started (a `curl` the script forked keeps running after `sh` is
killed otherwise). Its stderr goes to an unnamed temporary file, not a pipe: a
background child that inherited a pipe would keep us waiting for end-of-file.
Its stdout is discarded, since the watcher's own stdout may be a JSON stream.
A hook still running when the watcher exits outlives it (its own session takes it
out of our process group); under systemd, stopping the unit ends it with the rest
of the unit's cgroup.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
from collections.abc import Mapping
from typing import IO, Any

from oomlens.notify.core import DeliveryFailed, Notice, Sink

# /bin/sh by absolute path: a root daemon does not look its shell up in $PATH.
SHELL = "/bin/sh"
# Enough of stderr for its first line.
_STDERR_READ = 4096


def hook_environment(event: Mapping[str, Any]) -> dict[str, str]:
    """The variables a hook script reads instead of parsing JSON (empty where the
    event has no such field, e.g. a lost kill has no victim)."""
    victim = event.get("victim") or {}

    def text(value: Any) -> str:
        # Popen refuses a NUL in the environment, and event text is not ours to trust.
        return "" if value is None else str(value).replace("\0", "")

    return {
        "OOMLENS_EVENT_KIND": text(event.get("kind")),
        "OOMLENS_VICTIM_COMM": text(victim.get("comm")),
        "OOMLENS_VICTIM_PID": text(victim.get("pid")),
        "OOMLENS_HOST": text(event.get("host")),
    }


def exit_text(returncode: int) -> str:
    """`exit status 3`, or `killed by SIGTERM` for a negative return code."""
    if returncode >= 0:
        return f"exit status {returncode}"
    try:
        return f"killed by {signal.Signals(-returncode).name}"
    except ValueError:
        return f"killed by signal {-returncode}"


def first_line(stream: IO[bytes]) -> str:
    """The first non-blank line of what a command wrote to `stream`."""
    stream.seek(0)
    head = stream.read(_STDERR_READ).decode("utf-8", "replace")
    return next((line.strip() for line in head.splitlines() if line.strip()), "")


def run_with_timeout(argv: list[str], stdin: bytes, timeout: float, *,
                     env: Mapping[str, str], **popen: Any) -> tuple[int, str]:
    """Run `argv` in a new session with `stdin`; returns its return code and the
    first line of its stderr. At `timeout` the whole process group is killed and
    `DeliveryFailed` raised. `popen` passes `user`/`group`/`cwd` (the desktop sink)."""
    import tempfile  # with shutil, bz2, lzma and random: only once a hook runs

    with tempfile.TemporaryFile() as stderr:
        # Leaving the `with` closes our end of stdin and reaps the shell.
        with subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                              stderr=stderr, env=env, start_new_session=True,
                              **popen) as proc:
            try:
                proc.communicate(stdin, timeout=timeout)
            except subprocess.TimeoutExpired:
                _kill_group(proc.pid)
                raise DeliveryFailed(f"timed out after {timeout:g} s, killed") from None
        return proc.returncode, first_line(stderr)


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError):  # the group has already gone
        os.killpg(pgid, signal.SIGKILL)


def exec_sink(command: str, timeout: float) -> Sink:
    """Run `sh -c COMMAND` per event: the event's JSON as one line on stdin, the
    `hook_environment` variables added to ours. A non-zero exit is a failure,
    reported with the status and the first line of the command's stderr."""

    def deliver(notice: Notice, stop: threading.Event) -> None:
        env = {**os.environ, **hook_environment(notice.event)}
        payload = (notice.json + "\n").encode()
        returncode, stderr = run_with_timeout([SHELL, "-c", command], payload, timeout,
                                              env=env)
        if returncode != 0:
            raise DeliveryFailed(exit_text(returncode) + (f": {stderr}" if stderr else ""))

    return Sink("exec", deliver)
