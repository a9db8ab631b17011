"""simulate/trigger.py: how the wait for a kill treats the helper, with stand-in
helpers (small scripts that speak the hog's protocol) instead of real growth."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import pytest

from oomlens.daemons.signals import Signals
from oomlens.simulate.trigger import Trial, _await
from oomlens.simulate.verdict import Prediction
from oomlens.system.sandbox import Hog

SAYS_STOPPED = "import sys\nfor line in sys.stdin:\n    print('stopped', flush=True)\n"
SILENT = "import sys\nsys.stdin.readline()\n"
DIES = "raise SystemExit(0)"


@pytest.fixture
def helper(request: pytest.FixtureRequest) -> Iterator[Hog]:
    pipe = subprocess.PIPE
    process = subprocess.Popen([sys.executable, "-c", request.param], stdin=pipe, stdout=pipe)
    try:
        yield Hog(process, 0, 0)
    finally:
        process.kill()
        process.wait()
        for stream in (process.stdin, process.stdout):
            if stream is not None:
                stream.close()


def trial() -> Trial:
    return Trial(Prediction((), "estimate", 0.0))


@pytest.mark.parametrize("helper", [SAYS_STOPPED], indirect=True)
def test_a_helper_stopped_by_a_kill_elsewhere_grows_again(helper: Hog) -> None:
    waited = trial()
    helper.send("grow")
    with Signals() as signals:
        _await(lambda: bool(waited.notes), helper, signals, 10.0, waited)
    assert waited.notes == ["an OOM kill elsewhere on this machine stopped the helper; it "
                            "grew again"]
    assert not waited.timed_out and not waited.interrupted


@pytest.mark.parametrize("helper", [SILENT], indirect=True)
def test_a_kill_waits_for_the_helper_to_stop_until_the_timeout(helper: Hog) -> None:
    waited = trial()
    with Signals() as signals:
        _await(lambda: True, helper, signals, 0.2, waited)
    assert waited.timed_out and waited.notes == []


@pytest.mark.parametrize("helper", [DIES], indirect=True)
def test_a_dead_helper_ends_the_wait(helper: Hog) -> None:
    helper.process.wait()
    waited = trial()
    with Signals() as signals:
        _await(lambda: False, helper, signals, 10.0, waited)
    assert not waited.timed_out and waited.notes == []


def test_without_a_helper_the_kill_alone_ends_it() -> None:
    waited, calls = trial(), []

    def found() -> bool:
        calls.append(1)
        return len(calls) == 3

    with Signals() as signals:
        _await(found, None, signals, 10.0, waited)
    assert len(calls) == 3 and not waited.timed_out
