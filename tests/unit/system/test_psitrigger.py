"""system/psitrigger.py on plain files in tmp_path standing in for a pressure file:
what is written (the NUL terminator psi_write() needs), the numbers refused before
any write, each errno of open() and write() translated, and open_trigger()'s one
retry with a 2 s window, against a fake kernel that plays psi_trigger_create()'s
rule for a process without CAP_SYS_RESOURCE.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from oomlens.errors import AccessDenied, NotFound, OomlensError, Unsupported, UsageError
from oomlens.system import psitrigger
from oomlens.system.psitrigger import PressureTrigger, open_trigger, round_up_window

SECOND_US = 1_000_000


@pytest.fixture
def pressure(tmp_path: Path) -> Path:
    path = tmp_path / "memory.pressure"
    path.write_bytes(b"")
    return path


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def fail_write(monkeypatch: pytest.MonkeyPatch, code: int) -> None:
    def write(_fd: int, _data: bytes) -> int:
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(psitrigger.os, "write", write)


def fake_kernel(monkeypatch: pytest.MonkeyPatch, privileged: bool = False,
                open_errno: int | None = None) -> list[bytes]:
    """psi_trigger_create() (6.5+) for writes to the fake file; returns what was
    accepted. `open_errno`: every writable open fails so (psi_open() before 6.5)."""
    accepted: list[bytes] = []
    real_write, real_open = os.write, os.open

    def write(fd: int, data: bytes) -> int:
        window = int(data.rstrip(b"\0").split()[2])
        if window % (2 * SECOND_US) and not privileged:
            raise OSError(errno.EINVAL, os.strerror(errno.EINVAL))
        accepted.append(data)
        return real_write(fd, data)

    def open_(path: str, flags: int, *args: int) -> int:
        if open_errno is not None:
            raise OSError(open_errno, os.strerror(open_errno))
        return real_open(path, flags, *args)

    monkeypatch.setattr(psitrigger.os, "write", write)
    monkeypatch.setattr(psitrigger.os, "open", open_)
    monkeypatch.setattr(psitrigger, "has_cap_sys_resource", lambda: privileged)
    return accepted


class TestWrite:
    def test_the_trigger_text_ends_with_nul(self, pressure: Path) -> None:
        """psi_write() turns the last byte written into NUL: without a terminator of
        our own, `some 150000 2000000` would arrive as a 200 ms window."""
        with PressureTrigger(str(pressure), "some", 150_000, 2 * SECOND_US) as trigger:
            assert trigger.fileno() >= 0
            assert (trigger.kind, trigger.stall_us, trigger.window_us) == (
                "some", 150_000, 2 * SECOND_US)
            assert repr(trigger) == f"PressureTrigger('{pressure}', 'some 150000 2000000')"
        assert pressure.read_bytes() == b"some 150000 2000000\0"

    def test_full_and_the_longest_text_fit_the_kernels_32_bytes(self, pressure: Path) -> None:
        PressureTrigger(str(pressure), "full", 10 * SECOND_US, 10 * SECOND_US).close()
        assert pressure.read_bytes() == b"full 10000000 10000000\0"
        assert len(pressure.read_bytes()) <= 32

    def test_close_is_idempotent(self, pressure: Path) -> None:
        before = open_fds()
        trigger = PressureTrigger(str(pressure), "some", 1, 2 * SECOND_US)
        trigger.close()
        trigger.close()
        assert open_fds() == before


class TestNumbers:
    @pytest.mark.parametrize(("kind", "stall", "window", "message"), [
        ("partial", 1, 2 * SECOND_US, "kind must be 'some' or 'full', not 'partial'"),
        ("some 1 2\0full", 1, 2 * SECOND_US, "kind must be"),
        ("some", 1, 0, "window must be 1 us..10 s, not 0 us"),
        ("some", 1, 12 * SECOND_US, "window must be 1 us..10 s"),
        ("some", 0, 2 * SECOND_US, "stall must be 1 us..the window"),
        ("some", -1, 2 * SECOND_US, "stall must be"),
        ("some", 3 * SECOND_US, 2 * SECOND_US, "stall must be"),
    ])
    def test_refused_before_the_kernel_sees_them(self, pressure: Path, kind: str, stall: int,
                                                 window: int, message: str) -> None:
        with pytest.raises(UsageError, match=message):
            PressureTrigger(str(pressure), kind, stall, window)
        assert pressure.read_bytes() == b""

    @pytest.mark.parametrize(("window", "rounded"), [
        (1, 2 * SECOND_US), (SECOND_US, 2 * SECOND_US), (2 * SECOND_US, 2 * SECOND_US),
        (2 * SECOND_US + 1, 4 * SECOND_US), (9_500_000, 10 * SECOND_US),
    ])
    def test_round_up_window(self, window: int, rounded: int) -> None:
        assert round_up_window(window) == rounded


class TestErrors:
    def test_no_file_is_unsupported(self, tmp_path: Path) -> None:
        with pytest.raises(Unsupported, match="no pressure stall information"):
            PressureTrigger(str(tmp_path / "pressure" / "memory"), "some", 1, 2 * SECOND_US)

    @pytest.mark.parametrize(("code", "error", "message"), [
        (errno.EOPNOTSUPP, Unsupported, "PSI is disabled"),
        (errno.ENODEV, NotFound, "its cgroup was removed"),
        (errno.EBUSY, OomlensError, "cannot set the PSI trigger 'some 1 2000000' on .*: "
                                    "Device or resource busy"),
    ])
    def test_write_errors(self, monkeypatch: pytest.MonkeyPatch, pressure: Path, code: int,
                          error: type[OomlensError], message: str) -> None:
        fail_write(monkeypatch, code)
        before = open_fds()
        with pytest.raises(error, match=message):
            PressureTrigger(str(pressure), "some", 1, 2 * SECOND_US)
        assert open_fds() == before

    def test_eperm_at_open_is_the_pre_6_5_capability_rule(
            self, monkeypatch: pytest.MonkeyPatch, pressure: Path) -> None:
        fake_kernel(monkeypatch, open_errno=errno.EPERM)
        with pytest.raises(AccessDenied, match=r"need CAP_SYS_RESOURCE before Linux 6\.5"):
            PressureTrigger(str(pressure), "some", 1, 2 * SECOND_US)

    def test_eacces_at_open_is_the_files_mode(self, monkeypatch: pytest.MonkeyPatch,
                                              pressure: Path) -> None:
        """A cgroup's memory.pressure that another user owns: no capability hint."""
        fake_kernel(monkeypatch, open_errno=errno.EACCES)
        with pytest.raises(AccessDenied) as denied:
            PressureTrigger(str(pressure), "some", 1, 2 * SECOND_US)
        assert str(denied.value) == f"permission denied on {pressure}"

    def test_einval_for_an_odd_window_without_the_cap_is_access_denied(
            self, monkeypatch: pytest.MonkeyPatch, pressure: Path) -> None:
        fake_kernel(monkeypatch)
        with pytest.raises(AccessDenied, match="not a multiple of 2 s needs CAP_SYS_RESOURCE"):
            PressureTrigger(str(pressure), "some", 150_000, SECOND_US)

    @pytest.mark.parametrize(("window", "privileged"),
                             [(SECOND_US, True), (2 * SECOND_US, False)])
    def test_other_einval_is_a_usage_error(self, monkeypatch: pytest.MonkeyPatch,
                                           pressure: Path, window: int,
                                           privileged: bool) -> None:
        fail_write(monkeypatch, errno.EINVAL)
        monkeypatch.setattr(psitrigger, "has_cap_sys_resource", lambda: privileged)
        with pytest.raises(UsageError, match=f"refused the PSI trigger 'some 1 {window}'"):
            PressureTrigger(str(pressure), "some", 1, window)


class TestOpenTrigger:
    def test_accepted_as_asked(self, monkeypatch: pytest.MonkeyPatch, pressure: Path) -> None:
        fake_kernel(monkeypatch)
        trigger, why = open_trigger(str(pressure), "some", 150_000, 4 * SECOND_US)
        assert trigger is not None and why is None
        assert trigger.window_us == 4 * SECOND_US
        trigger.close()

    def test_an_odd_window_is_retried_at_2_s_and_said(self, monkeypatch: pytest.MonkeyPatch,
                                                      pressure: Path) -> None:
        accepted = fake_kernel(monkeypatch)
        trigger, why = open_trigger(str(pressure), "some", 150_000, SECOND_US)
        assert trigger is not None
        assert trigger.window_us == 2 * SECOND_US
        trigger.close()
        assert accepted == [b"some 150000 2000000\0"]
        assert why is not None and why.startswith("PSI window 1 s refused (permission denied")
        assert why.endswith("; using 2 s")

    def test_privileged_gets_the_odd_window(self, monkeypatch: pytest.MonkeyPatch,
                                            pressure: Path) -> None:
        accepted = fake_kernel(monkeypatch, privileged=True)
        trigger, why = open_trigger(str(pressure), "some", 150_000, SECOND_US)
        assert trigger is not None and why is None
        trigger.close()
        assert accepted == [b"some 150000 1000000\0"]

    def test_retried_once_then_the_reason(self, monkeypatch: pytest.MonkeyPatch,
                                          pressure: Path) -> None:
        fake_kernel(monkeypatch, open_errno=errno.EPERM)
        trigger, why = open_trigger(str(pressure), "some", 150_000, SECOND_US)
        assert trigger is None
        assert why is not None and "; with a 2 s window: permission denied" in why

    def test_refused_at_2_s_is_not_retried(self, monkeypatch: pytest.MonkeyPatch,
                                           pressure: Path) -> None:
        opens: list[str] = []
        fake_kernel(monkeypatch, open_errno=errno.EPERM)
        failing_open: Callable[..., int] = psitrigger.os.open

        def counting_open(path: str, flags: int, *args: int) -> int:
            opens.append(path)
            return failing_open(path, flags, *args)

        monkeypatch.setattr(psitrigger.os, "open", counting_open)
        trigger, why = open_trigger(str(pressure), "some", 150_000, 2 * SECOND_US)
        assert (trigger, len(opens)) == (None, 1)
        assert why is not None and why.startswith("permission denied on")

    def test_no_psi_is_the_reason(self, tmp_path: Path) -> None:
        trigger, why = open_trigger(str(tmp_path / "nope"), "some", 1, 2 * SECOND_US)
        assert trigger is None
        assert why is not None and why.startswith(f"no {tmp_path / 'nope'}: ")

    def test_bad_numbers_are_raised(self, pressure: Path) -> None:
        with pytest.raises(UsageError):
            open_trigger(str(pressure), "some", 0, 2 * SECOND_US)
