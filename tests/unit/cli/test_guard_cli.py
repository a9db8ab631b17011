"""`oomlens guard`'s refusals to start: each one line on stderr and exit status 2,
before any probe is opened or any process scanned."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import pytest

from oomlens.cli.env import Env
from oomlens.cli.main import main


def run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    env = Env(out, err, stdout_isatty=False, colour=False, columns=100)
    return main(["guard", *argv], env), out.getvalue(), err.getvalue()


@pytest.mark.parametrize(("argv", "message"), [
    (["--max-interval", "0.001"], "--max-interval: 0.001 s is below the shortest sleep"),
    (["--kill-below", "5 parsecs"], "--kill-below: not a size or percent"),
    (["--kill-below", "100%"], "--kill-below: 100% is not above 0% and below 100%"),
    (["--avoid", "("], "--avoid"),
    (["--no-system"], "--no-system needs at least one --cgroup"),
])
def test_a_bad_option_is_one_line_and_exit_2(argv: list[str], message: str) -> None:
    status, out, err = run(*argv)
    assert status == 2
    assert out == ""
    assert err.count("\n") == 1 and message in err


LEAN = """
import io, os, signal, sys
from oomlens.cli.env import Env
from oomlens.cli.main import main

class Out(io.StringIO):
    def write(self, text):
        if "started" in text:  # serving: the guard's steady state
            os.kill(os.getpid(), signal.SIGTERM)
        return super().write(text)

status = main(["guard", "--dry-run", "--store", "sqlite:///" + sys.argv[1]],
              Env(Out(), sys.stderr, stdout_isatty=False, colour=False, columns=80))
print(status, " ".join(sorted(sys.modules)))
"""


def test_a_guard_that_has_not_killed_loads_no_store_driver_report_or_notifier(
        tmp_path: Path) -> None:
    """The guard's resident memory is mostly what it imports: while it only
    watches, no database driver, report analysis, enforcer, notifier, TOML parser
    (no policy file) or ctypes.util (its find_library spawns compilers)."""
    done = subprocess.run([sys.executable, "-c", LEAN, str(tmp_path / "events.sqlite")],
                          capture_output=True, text=True, timeout=60, check=True)
    status, modules = done.stdout.split(" ", 1)
    loaded = set(modules.split())
    assert status == "0" and "oomlens.daemons.guard" in loaded
    unwanted = {"sqlite3", "psycopg", "tomllib", "ctypes.util", "subprocess", "socket",
                "threading", "oomlens.report", "oomlens.daemons.enforce",
                "oomlens.policy.journal", "oomlens.notify", "oomlens.store.db"}
    assert loaded & unwanted == set()
