"""system/pidfd.py without touching another process: each errno of pidfd_open(),
pidfd_send_signal() and process_mrelease() translated (the calls monkeypatched),
identity checked against a fake /proc, exit waits on a pipe standing in for the pidfd,
and terminate()'s sequence against a scripted victim. No signal ever leaves the test
process: the signals sent through real fds are signal 0, the null signal.
"""

from __future__ import annotations

import errno
import os
import signal
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from fakeproc import FakeProcess, write_process

from oomlens.errors import AccessDenied, OomlensError, ProcessGone, Unsupported, UsageError
from oomlens.system import pidfd
from oomlens.system.oomadj import PidReused
from oomlens.system.pidfd import SYS_PROCESS_MRELEASE, KillOutcome, Victim, terminate

START = 4242


def raising(code: int) -> Callable[..., int]:
    def call(*_args: object) -> int:
        raise OSError(code, os.strerror(code))

    return call


@pytest.fixture
def fake_proc(tmp_path: Path) -> str:
    """A /proc with this test process in it, started at tick START."""
    write_process(tmp_path, FakeProcess(pid=os.getpid(), comm="py test", start_time_ticks=START))
    return str(tmp_path)


@pytest.fixture
def me() -> Iterator[Victim]:
    """A Victim holding a real pidfd of this (live) test process."""
    with Victim(os.pidfd_open(os.getpid()), os.getpid(), "self", START) as victim:
        yield victim


class TestSyscallTable:
    def test_process_mrelease_is_448_where_we_know_it(self) -> None:
        # arch/x86/entry/syscalls/syscall_64.tbl; include/uapi/asm-generic/unistd.h
        assert SYS_PROCESS_MRELEASE == {"x86_64": 448, "aarch64": 448}

    def test_an_unknown_architecture_is_enosys(self, monkeypatch: pytest.MonkeyPatch) -> None:
        uname = os.uname()
        fake = os.uname_result((*uname[:4], "mips64"))
        monkeypatch.setattr(pidfd.os, "uname", lambda: fake)
        assert pidfd._process_mrelease(-1) == errno.ENOSYS


class TestOpen:
    def test_the_scanned_process_is_held(self, fake_proc: str) -> None:
        with Victim.open(os.getpid(), START, fake_proc) as victim:
            assert (victim.pid, victim.comm, victim.start_time_ticks) == (
                os.getpid(), "py test", START)
            assert not victim.has_exited()
            assert repr(victim) == f"Victim(pid={os.getpid()}, comm='py test', start={START})"

    def test_another_start_time_is_pid_reused_and_the_fd_closed(self, fake_proc: str) -> None:
        before = len(os.listdir("/proc/self/fd"))
        with pytest.raises(PidReused, match=rf"started at {START}, expected {START - 1}"):
            Victim.open(os.getpid(), START - 1, fake_proc)
        assert len(os.listdir("/proc/self/fd")) == before

    def test_no_stat_is_process_gone(self, tmp_path: Path) -> None:
        with pytest.raises(ProcessGone, match=f"process {os.getpid()} "):
            Victim.open(os.getpid(), START, str(tmp_path))

    @pytest.mark.parametrize("code", [errno.ESRCH, errno.ENOENT, errno.EINVAL])
    def test_no_such_process_is_process_gone(self, monkeypatch: pytest.MonkeyPatch,
                                             fake_proc: str, code: int) -> None:
        """ESRCH: nothing has the number; ENOENT (6.18) or EINVAL (before 6.9): only a
        thread of another process has it now."""
        monkeypatch.setattr(pidfd.os, "pidfd_open", raising(code))
        with pytest.raises(ProcessGone):
            Victim.open(os.getpid(), START, fake_proc)

    def test_no_pidfd_open_is_unsupported(self, monkeypatch: pytest.MonkeyPatch,
                                          fake_proc: str) -> None:
        monkeypatch.setattr(pidfd.os, "pidfd_open", raising(errno.ENOSYS))
        with pytest.raises(Unsupported, match=r"before 5\.3"):
            Victim.open(os.getpid(), START, fake_proc)

    def test_out_of_fds_is_an_error_with_the_reason(self, monkeypatch: pytest.MonkeyPatch,
                                                    fake_proc: str) -> None:
        monkeypatch.setattr(pidfd.os, "pidfd_open", raising(errno.EMFILE))
        with pytest.raises(OomlensError, match=f"pidfd_open of pid {os.getpid()} failed: "
                                               "Too many open files"):
            Victim.open(os.getpid(), START, fake_proc)

    @pytest.mark.parametrize("pid", [0, -1])
    def test_not_a_pid_is_a_usage_error(self, pid: int) -> None:
        with pytest.raises(UsageError, match=f"not a process id: {pid}"):
            Victim.open(pid, START)


class TestSignal:
    def test_sent_through_the_pidfd(self, monkeypatch: pytest.MonkeyPatch, me: Victim) -> None:
        sent: list[tuple[int, int]] = []
        monkeypatch.setattr(pidfd.signal, "pidfd_send_signal",
                            lambda fd, signo: sent.append((fd, signo)))
        assert me.signal(signal.SIGTERM) is True
        assert sent == [(me._fd, signal.SIGTERM)]

    def test_the_null_signal_really_goes(self, me: Victim) -> None:
        assert me.signal(0) is True

    def test_esrch_is_false(self, monkeypatch: pytest.MonkeyPatch, me: Victim) -> None:
        monkeypatch.setattr(pidfd.signal, "pidfd_send_signal", raising(errno.ESRCH))
        assert me.signal(0) is False

    def test_eperm_is_access_denied(self, monkeypatch: pytest.MonkeyPatch, me: Victim) -> None:
        monkeypatch.setattr(pidfd.signal, "pidfd_send_signal", raising(errno.EPERM))
        with pytest.raises(AccessDenied, match=f"pid {os.getpid()} \\(signal 0\\)"):
            me.signal(0)

    def test_an_exited_process_gets_nothing(self, monkeypatch: pytest.MonkeyPatch,
                                            me: Victim) -> None:
        monkeypatch.setattr(Victim, "has_exited", lambda self: True)
        monkeypatch.setattr(pidfd.signal, "pidfd_send_signal", raising(errno.EBADF))
        assert me.signal(signal.SIGKILL) is False


class TestWaitExit:
    """A pipe's read end polls POLLIN like a pidfd whose process exited."""

    def test_readable_means_exited(self) -> None:
        read_end, write_end = os.pipe()
        victim = Victim(read_end, 1, "fake", START)
        try:
            assert victim.wait_exit(0) is False
            assert victim.wait_exit(0.01) is False
            os.write(write_end, b"x")
            assert victim.wait_exit(10) is True
            assert victim.has_exited() is True
        finally:
            victim.close()
            victim.close()  # twice is fine
            os.close(write_end)


class TestReleaseMemory:
    @pytest.mark.parametrize(("code", "released"),
                             [(0, True), (errno.ESRCH, False), (errno.EINVAL, False)])
    def test_done_or_nothing_to_do(self, monkeypatch: pytest.MonkeyPatch, me: Victim,
                                   code: int, released: bool) -> None:
        monkeypatch.setattr(pidfd, "_process_mrelease", lambda fd: code)
        assert me.release_memory() is released

    def test_enosys_is_unsupported(self, monkeypatch: pytest.MonkeyPatch, me: Victim) -> None:
        monkeypatch.setattr(pidfd, "_process_mrelease", lambda fd: errno.ENOSYS)
        with pytest.raises(Unsupported, match=r"before 5\.15"):
            me.release_memory()

    def test_eagain_says_what_failed(self, monkeypatch: pytest.MonkeyPatch, me: Victim) -> None:
        monkeypatch.setattr(pidfd, "_process_mrelease", lambda fd: errno.EAGAIN)
        with pytest.raises(OomlensError, match=f"process_mrelease of pid {os.getpid()} failed: "
                                               "Resource temporarily unavailable"):
            me.release_memory()

    def test_eperm_is_access_denied(self, monkeypatch: pytest.MonkeyPatch, me: Victim) -> None:
        monkeypatch.setattr(pidfd, "_process_mrelease", lambda fd: errno.EPERM)
        with pytest.raises(AccessDenied):
            me.release_memory()

    def test_the_real_call_refuses_a_live_process(self, me: Victim) -> None:
        """This process is not dying: task_will_free_mem() is false, EINVAL."""
        if os.uname().machine not in SYS_PROCESS_MRELEASE:
            pytest.skip("no process_mrelease number for this architecture")
        assert me.release_memory() is False


@dataclass
class ScriptedVictim:
    """Plays a process for terminate(): which signals it accepts, whether it exits
    within the grace, what releasing its memory does."""

    accepts: dict[int, bool] = field(default_factory=lambda: {signal.SIGTERM: True,
                                                              signal.SIGKILL: True})
    exits_on_term: bool = False
    release: Callable[[], bool] = lambda: True
    calls: list[str] = field(default_factory=list)

    def signal(self, signo: int) -> bool:
        self.calls.append(signal.Signals(signo).name)
        return self.accepts[signo]

    def wait_exit(self, timeout: float) -> bool:
        self.calls.append(f"wait {timeout}")
        return self.exits_on_term

    def release_memory(self) -> bool:
        self.calls.append("release")
        return self.release()


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        self.now += 0.25
        return self.now


def run(victim: ScriptedVictim, needed: bool = True) -> tuple[KillOutcome, list[str]]:
    def still_needed() -> bool:
        victim.calls.append("still needed?")
        return needed

    outcome = terminate(victim, 2.5, still_needed=still_needed, clock=Clock())  # type: ignore[arg-type]
    return outcome, victim.calls


class TestTerminate:
    def test_gone_before_sigterm(self) -> None:
        victim = ScriptedVictim(accepts={signal.SIGTERM: False})
        outcome, calls = run(victim)
        assert outcome == KillOutcome(False, False, False, True, 0.25)
        assert calls == ["SIGTERM"]

    def test_exits_on_sigterm_within_the_grace(self) -> None:
        outcome, calls = run(ScriptedVictim(exits_on_term=True))
        assert outcome == KillOutcome(True, False, False, False, 0.25)
        assert calls == ["SIGTERM", "wait 2.5"]

    def test_ignores_sigterm_then_sigkill_and_release(self) -> None:
        outcome, calls = run(ScriptedVictim())
        assert outcome == KillOutcome(False, True, True, False, 0.25)
        assert calls == ["SIGTERM", "wait 2.5", "still needed?", "SIGKILL", "release"]

    def test_memory_recovered_during_the_grace_spares_it(self) -> None:
        outcome, calls = run(ScriptedVictim(), needed=False)
        assert outcome == KillOutcome(False, False, False, False, 0.25)
        assert calls == ["SIGTERM", "wait 2.5", "still needed?"]

    def test_exit_at_the_end_of_the_grace_counts_as_on_term(self) -> None:
        victim = ScriptedVictim(accepts={signal.SIGTERM: True, signal.SIGKILL: False})
        outcome, calls = run(victim)
        assert outcome == KillOutcome(True, False, False, False, 0.25)
        assert calls == ["SIGTERM", "wait 2.5", "still needed?", "SIGKILL"]

    def test_nothing_to_release_is_not_an_error(self) -> None:
        outcome, _calls = run(ScriptedVictim(release=lambda: False))
        assert (outcome.killed, outcome.released, outcome.release_error) == (True, False, None)

    def test_a_release_failure_keeps_the_kill(self) -> None:
        def unsupported() -> bool:
            raise Unsupported("process_mrelease() is missing: a kernel before 5.15")

        outcome, _calls = run(ScriptedVictim(release=unsupported))
        assert (outcome.killed, outcome.released) == (True, False)
        assert outcome.release_error == "process_mrelease() is missing: a kernel before 5.15"
