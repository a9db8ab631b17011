"""The kernel lab on the host side: one guest boot per session, shared by every
`lab` test, and its numbers in the terminal summary.

`lab_run` boots the guest once (only if a lab test is selected) and runs the guest
tests (`tests/lab/guest`, marker `guest`) there. Where the lab cannot run (no QEMU,
no static busybox, no kernel package) lab tests skip with the reason; with
OOMLENS_REQUIRE_KERNEL_TESTS=1 they fail instead.
"""

from __future__ import annotations

import labvm
import pytest

GUEST_SELECTION = ("tests/lab/guest", "-m", "guest", "-v")
_RUNS: list[labvm.LabResult] = []


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "guest: runs inside the kernel lab guest only (tests/lab/guest)"
    )


@pytest.fixture(scope="session")
def lab_run() -> labvm.LabResult:
    """The one guest run of this session (booted on first use)."""
    if _RUNS:
        return _RUNS[0]
    try:
        result = labvm.run_pytest(GUEST_SELECTION)
    except labvm.LabUnavailable as err:
        labvm.skip_or_fail(str(err))
        raise  # unreachable: skip_or_fail always raises
    _RUNS.append(result)
    return result


def _format_props(props: tuple[tuple[str, str], ...], indent: str) -> list[str]:
    return [f"{indent}{name}: {value}" for name, value in props]


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not _RUNS:
        return
    result = _RUNS[0]
    write = terminalreporter.write_line
    terminalreporter.section("kernel lab")
    write(result.summary())
    if result.guest_uptime_ready_s is not None:
        done = result.guest_uptime_done_s
        write(f"guest uptime: ready at {result.guest_uptime_ready_s:.1f} s, tests done at "
              f"{'?' if done is None else f'{done:.1f}'} s")
    for case in result.cases:
        write(f"  {case.outcome.upper():7} {case.name} ({case.seconds:.1f} s)")
        for line in _format_props(case.properties, "            "):
            write(line)
    if not result.ok:
        write(f"guest files of this run: {labvm.LAST_RUN}")
