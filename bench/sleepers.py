"""Launcher for the benchmark's extra processes; bench/extra_procs.py starts it as a
subprocess, inside the sandbox memory cgroup when there is one (SandboxMemcg.spawn
joins the cgroup before exec, so every sleeper started here is born, and charged,
inside it).

    python bench/sleepers.py COUNT

It starts COUNT `sleep 600` processes, prints their pids on one line
(`READY pid pid ...`) and then waits for its stdin to close. On EOF, on any error, and
on SIGTERM it SIGKILLs and reaps every sleeper it started. Because the pipe closes when
bench/run.py exits for any reason (even SIGKILL), sleepers never outlive the benchmark
for long; `sleep 600` bounds them even if this launcher is SIGKILLed too.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
from types import FrameType

SLEEP_SECONDS = "600"


def _stop(sleepers: list[subprocess.Popen[bytes]]) -> None:
    for proc in sleepers:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
    for proc in sleepers:
        proc.wait()


def _on_sigterm(_signum: int, _frame: FrameType | None) -> None:
    raise SystemExit(143)


def main(argv: list[str]) -> int:
    count = int(argv[1])
    # Own session: a Ctrl-C in the terminal reaches bench/run.py only, whose cleanup
    # then closes our stdin; the sleepers are never signalled by the terminal.
    os.setsid()
    signal.signal(signal.SIGTERM, _on_sigterm)
    sleepers: list[subprocess.Popen[bytes]] = []
    try:
        sleep = shutil.which("sleep") or "sleep"
        for _ in range(count):
            try:
                sleepers.append(subprocess.Popen(
                    [sleep, SLEEP_SECONDS],
                    stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL, close_fds=True,
                ))
            except OSError as err:  # out of pids, memory, or no `sleep`: report, go on
                print(f"sleepers: started {len(sleepers)} of {count}: {err}",
                      file=sys.stderr)
                break
        sys.stdout.write("READY " + " ".join(str(p.pid) for p in sleepers) + "\n")
        sys.stdout.flush()
        sys.stdin.read()  # until bench/run.py closes the pipe (or dies)
    finally:
        _stop(sleepers)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
