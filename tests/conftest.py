"""Shared fixtures: the preconditions of `kernel` tests, sandbox memcgs that always
clean up, and a last check that no sandbox cgroup outlives the session. Puts
`tests/fixtures/` on sys.path, so every test can import its helper modules
(`import kernelreport`, `import procutil`).

Kernel tests skip (with the reason) where they cannot run; with
OOMLENS_REQUIRE_KERNEL_TESTS=1 a missing precondition fails them instead, so a CI
job that is meant to run them cannot pass by skipping.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import signal
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from oomlens.errors import OomlensError
from oomlens.system.kmsg import KmsgReader
from oomlens.system.memcg import MemcgMount, find_memcg_mount, walk
from oomlens.system.sandbox import SandboxMemcg

_FIXTURES = str(Path(__file__).resolve().parent / "fixtures")
if _FIXTURES not in sys.path:
    sys.path.insert(0, _FIXTURES)

from procutil import pid_alive  # noqa: E402  (needs the path above)

SANDBOX_PREFIX = "oomlens-test-"
REQUIRE_ENV = "OOMLENS_REQUIRE_KERNEL_TESTS"
# SandboxMemcg names cgroups PREFIX + [more prefix] + creator pid + "-" + 8 hex digits.
_SANDBOX_NAME = re.compile(r"^oomlens-test-.*?(\d+)-[0-9a-f]{8}$")

SandboxFactory = Callable[..., SandboxMemcg]


@functools.cache
def kernel_test_problems() -> tuple[str, ...]:
    """What is missing for kernel tests here (empty if nothing). Checked once."""
    problems: list[str] = []
    if os.geteuid() != 0:
        problems.append(f"root (euid is {os.geteuid()}) to create memory cgroups")
    mount = find_memcg_mount()
    if mount is None:
        problems.append(
            "a memory cgroup controller (v1 at /sys/fs/cgroup/memory or a cgroup2 "
            "hierarchy with `memory` in cgroup.controllers)"
        )
    elif not problems:
        probe = os.path.join(mount.root, f"{SANDBOX_PREFIX}probe-{os.getpid()}")
        try:
            os.mkdir(probe)
            os.rmdir(probe)
        except OSError as err:
            problems.append(f"a writable memory cgroup hierarchy ({probe}: {err.strerror})")
    try:
        KmsgReader().close()
    except OomlensError as err:
        problems.append(f"a readable /dev/kmsg ({err})")
    return tuple(problems)


def pytest_runtest_setup(item: pytest.Item) -> None:
    """Skip (or, when required, fail) `kernel` tests before their fixtures run."""
    if item.get_closest_marker("kernel") is None:
        return
    problems = kernel_test_problems()
    if not problems:
        return
    reason = "kernel test needs " + "; ".join(problems)
    if os.environ.get(REQUIRE_ENV) == "1":
        pytest.fail(f"{reason} ({REQUIRE_ENV}=1, so this is a failure)", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def memcg_mount() -> MemcgMount:
    mount = find_memcg_mount()
    if mount is None:
        pytest.skip("no memory cgroup controller")
    return mount


@pytest.fixture
def sandbox(memcg_mount: MemcgMount) -> Iterator[SandboxFactory]:
    """`sandbox(limit_bytes, prefix="oomlens-test-...", timeout=20.0,
    swap_limit_bytes=0, parent=None)` -> a created SandboxMemcg (`parent`: the
    cgroup path of another sandbox to nest it in).

    Every sandbox made is closed at teardown (processes killed and reaped, cgroup
    removed), the last made first, so children go before their parents, whatever
    the test did; a failed cleanup fails the test.
    """
    made: list[SandboxMemcg] = []

    def make(limit_bytes: int, prefix: str = SANDBOX_PREFIX, timeout: float = 20.0,
             swap_limit_bytes: int | None = 0, parent: str | None = None) -> SandboxMemcg:
        if not prefix.startswith(SANDBOX_PREFIX):
            raise ValueError(f"test sandboxes must be named {SANDBOX_PREFIX}*")
        box = SandboxMemcg(memcg_mount, prefix, limit_bytes, timeout=timeout,
                           swap_limit_bytes=swap_limit_bytes, parent=parent)
        made.append(box)
        box.create()
        return box

    yield make
    failures: list[str] = []
    for box in reversed(made):
        try:
            box.close()
        except Exception as err:  # keep cleaning the others
            failures.append(f"{box.path}: {err}")
    if failures:
        pytest.fail("sandbox cleanup failed: " + "; ".join(failures), pytrace=False)


def leftover_sandboxes(mount: MemcgMount) -> list[str]:
    """Sandbox cgroup directories made by this session, or by a session that is gone
    (a concurrent test run's live sandboxes are not ours to judge)."""
    left: list[str] = []
    for _path, directory in walk(mount):
        match = _SANDBOX_NAME.match(os.path.basename(directory))
        if os.path.basename(directory).startswith(SANDBOX_PREFIX) and (
            match is None or int(match.group(1)) == os.getpid()
            or not pid_alive(int(match.group(1)))
        ):
            left.append(directory)
    return left


def _force_remove(directory: str) -> None:
    """Last-resort cleanup of a leftover sandbox: SIGKILL its processes, rmdir it."""
    deadline = time.monotonic() + 10
    while os.path.isdir(directory) and time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            with open(os.path.join(directory, "cgroup.procs")) as procs:
                for pid in procs.read().split():
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(int(pid), signal.SIGKILL)
            os.rmdir(directory)
        time.sleep(0.01)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Fail the session if a sandbox cgroup was left behind (after removing it)."""
    if os.geteuid() != 0:
        return
    mount = find_memcg_mount()
    if mount is None:
        return
    left = leftover_sandboxes(mount)
    if not left:
        return
    for directory in sorted(left, key=len, reverse=True):
        _force_remove(directory)
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    message = f"sandbox cgroups left behind (now removed): {', '.join(left)}"
    if reporter is not None:
        reporter.write("\n")
        reporter.write_line(message, red=True)
    session.exitstatus = pytest.ExitCode.TESTS_FAILED


# PostgreSQL for the history store's tests (tests/fixtures/pgserver.py).
POSTGRES_URL_ENV = "OOMLENS_TEST_POSTGRES_URL"


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A PostgreSQL server for the session: $OOMLENS_TEST_POSTGRES_URL (its user must
    be allowed to CREATE DATABASE), else a throwaway one in a temporary directory,
    stopped and removed at the end. Where neither can be had the tests skip, or fail
    with OOMLENS_REQUIRE_KERNEL_TESTS=1 (CI must not pass by skipping them)."""
    if os.environ.get(POSTGRES_URL_ENV):
        yield os.environ[POSTGRES_URL_ENV]
        return
    import tempfile

    import pgserver

    directory = tempfile.mkdtemp(prefix="oomlens-pg-")
    try:
        url = pgserver.start(directory)
    except (pgserver.PgServerError, OSError) as err:
        pgserver.stop(directory)
        reason = f"PostgreSQL tests need a server ({err}; or set {POSTGRES_URL_ENV})"
        if os.environ.get(REQUIRE_ENV) == "1":
            pytest.fail(f"{reason} ({REQUIRE_ENV}=1, so this is a failure)", pytrace=False)
        pytest.skip(reason)
    try:
        yield url
    finally:
        pgserver.stop(directory)


@pytest.fixture
def postgres_db_url(postgres_url: str) -> Iterator[str]:
    """A new empty database on the session's server for one test, dropped after it."""
    import pgserver

    with pgserver.fresh_database(postgres_url) as url:
        yield url
