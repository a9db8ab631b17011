"""Identity-safe oom_score_adj writes against this kernel, on processes the test
starts: values read back through /proc, the EACCES rule of __set_oom_adj() without
CAP_SYS_RESOURCE, a handle that outlives its process (even when the pid is given
to another process) writes nothing, kernel threads, and kcmp's view of shared mms,
including a real CLONE_VM pair whose values the kernel keeps in step.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest
from pidreuse import reused_pid
from procutil import sleeper

from oomlens.errors import AccessDenied, ProcessGone, UsageError
from oomlens.system.oomadj import (
    PidReused,
    ProcessHandle,
    boot_id,
    has_cap_sys_resource,
    shares_mm,
)
from oomlens.system.procfs import pids

pytestmark = pytest.mark.kernel

SENTINEL_ADJ = 437  # a value no other process here is expected to have
TICK_S = 1 / os.sysconf("SC_CLK_TCK")


def read_adj(pid: int) -> int:
    with open(f"/proc/{pid}/oom_score_adj") as handle:
        return int(handle.read())


def pids_with_adj(value: int) -> set[int]:
    found = set()
    for pid in pids("/proc"):
        with contextlib.suppress(OSError):
            if read_adj(pid) == value:
                found.add(pid)
    return found


@pytest.fixture
def child() -> Iterator[subprocess.Popen[bytes]]:
    with sleeper() as proc:
        yield proc




def test_set_then_read_back(child: subprocess.Popen[bytes]) -> None:
    inherited = read_adj(child.pid)
    with ProcessHandle.open(child.pid) as handle:
        assert (handle.comm, handle.is_kthread) == ("sleep", False)
        handle.set_oom_score_adj(300)
        assert handle.oom_score_adj() == 300
        assert read_adj(child.pid) == 300
        handle.set_oom_score_adj(inherited)  # lowering, but not below the floor: allowed
        assert read_adj(child.pid) == inherited


@pytest.mark.skipif(has_cap_sys_resource(), reason="this process has CAP_SYS_RESOURCE")
def test_below_the_floor_is_access_denied_with_the_reason(
        child: subprocess.Popen[bytes]) -> None:
    with ProcessHandle.open(child.pid) as handle:
        handle.set_oom_score_adj(300)
        with pytest.raises(AccessDenied, match="needs CAP_SYS_RESOURCE") as denied:
            handle.set_oom_score_adj(-1)
        assert (denied.value.pid, denied.value.path) == (
            child.pid, f"/proc/{child.pid}/oom_score_adj")
        assert handle.oom_score_adj() == 300


def test_out_of_range_is_a_usage_error(child: subprocess.Popen[bytes]) -> None:
    inherited = read_adj(child.pid)
    with ProcessHandle.open(child.pid) as handle:
        with pytest.raises(UsageError, match="1001 is out of range"):
            handle.set_oom_score_adj(1001)
        assert read_adj(child.pid) == inherited


def start_ticks(pid: int) -> int:
    with ProcessHandle.open(pid) as handle:
        return handle.start_time_ticks


def test_wrong_start_time_is_pid_reused(child: subprocess.Popen[bytes]) -> None:
    start = start_ticks(child.pid)
    with pytest.raises(PidReused, match=f"pid {child.pid} now belongs to another process "
                                        rf"\(started at {start}, expected {start + 1}\)"):
        ProcessHandle.open(child.pid, start_time_ticks=start + 1)
    with ProcessHandle.open(child.pid, start_time_ticks=start) as handle:
        assert handle.pid == child.pid


def test_unknown_pid_is_process_gone() -> None:
    with open("/proc/sys/kernel/pid_max") as pid_max:
        missing = int(pid_max.read()) + 1  # never allocated
    with pytest.raises(ProcessGone):
        ProcessHandle.open(missing)


def test_handle_outliving_its_process_writes_nothing() -> None:
    before = pids_with_adj(SENTINEL_ADJ)
    with sleeper() as proc:
        handle = ProcessHandle.open(proc.pid)
    with handle:  # the sleeper is reaped now
        with pytest.raises(ProcessGone, match=f"process {proc.pid} \\(sleep\\)"):
            handle.set_oom_score_adj(SENTINEL_ADJ)
        with pytest.raises(ProcessGone):
            handle.oom_score_adj()
    assert pids_with_adj(SENTINEL_ADJ) == before


def test_handle_across_pid_reuse_does_not_reach_the_new_process() -> None:
    """A pid reused right away often has the very same start tick (USER_HZ is 100;
    measured: 19 of 20 reuses here), so a start-time check alone would accept the
    stranger: the open directory is what refuses it."""
    with sleeper() as old:
        handle = ProcessHandle.open(old.pid)
    with handle, reused_pid(old.pid) as new:
        with pytest.raises(ProcessGone):
            handle.set_oom_score_adj(SENTINEL_ADJ)
        assert read_adj(new.pid) == read_adj(os.getpid())  # still the inherited value


def test_reused_pid_with_a_later_start_is_pid_reused() -> None:
    with sleeper() as old:
        start = start_ticks(old.pid)
    time.sleep(3 * TICK_S)  # so the new process starts on a later tick
    with reused_pid(old.pid), pytest.raises(PidReused):
        ProcessHandle.open(old.pid, start_time_ticks=start)


def test_reads_through_the_directory(child: subprocess.Popen[bytes]) -> None:
    with ProcessHandle.open(child.pid) as handle:
        assert b"\nPid:\t%d\n" % child.pid in handle.read("status")
        assert handle.read("cmdline") == b"sleep\x0060\x00"
        exe = handle.readlink("exe")
        assert exe is not None and exe == os.readlink(f"/proc/{child.pid}/exe")
        child.kill()
        child.wait(timeout=10)
        with pytest.raises(ProcessGone):
            handle.read("status")
        with pytest.raises(ProcessGone):
            handle.readlink("exe")


def test_kthreadd_is_a_kernel_thread() -> None:
    with ProcessHandle.open(2) as kthreadd:
        assert (kthreadd.comm, kthreadd.is_kthread) == ("kthreadd", True)
        assert kthreadd.readlink("exe") is None  # no mm, no executable
    with ProcessHandle.open(os.getpid()) as me:
        assert not me.is_kthread


def test_boot_id_and_capability_probe() -> None:
    assert len(boot_id()) == 36 and boot_id() == boot_id()
    with open("/proc/self/status") as status:
        cap_eff = int(next(line for line in status if line.startswith("CapEff:")).split()[1],
                      16)
    assert has_cap_sys_resource() is bool(cap_eff >> 24 & 1)


def test_shares_mm_self_and_child(child: subprocess.Popen[bytes]) -> None:
    assert shares_mm(os.getpid(), os.getpid()) is True
    assert shares_mm(os.getpid(), child.pid) is False
    assert shares_mm(child.pid, os.getpid()) is False


def test_shares_mm_unknown_pid_is_none() -> None:
    with open("/proc/sys/kernel/pid_max") as pid_max:
        missing = int(pid_max.read()) + 1
    assert shares_mm(os.getpid(), missing) is None


# A helper process clones a second process with CLONE_VM (no CLONE_THREAD, no
# CLONE_VFORK): the child shares the helper's mm and sits in syscall(SYS_pause) on
# its own stack, never touching Python. The helper prints its pid and reaps it.
_CLONE_VM_HELPER = """
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
libc.clone.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p]
stack = ctypes.create_string_buffer(64 * 1024)
top = (ctypes.addressof(stack) + len(stack)) & ~15
CLONE_VM, SIGCHLD, SYS_pause = 0x100, 17, 34
pid = libc.clone(ctypes.cast(libc.syscall, ctypes.c_void_p), top, CLONE_VM | SIGCHLD,
                 SYS_pause)
if pid < 0:
    sys.exit(f"clone: {os.strerror(ctypes.get_errno())}")
print(pid, flush=True)
os.waitpid(pid, 0)
"""


@pytest.fixture
def clone_vm_pair() -> Iterator[tuple[int, int]]:
    if os.uname().machine != "x86_64":
        pytest.skip("the CLONE_VM helper uses x86_64 syscall numbers")
    helper = subprocess.Popen([sys.executable, "-c", _CLONE_VM_HELPER],
                              stdout=subprocess.PIPE, text=True)
    clone_pid = 0
    try:
        assert helper.stdout is not None
        clone_pid = int(helper.stdout.readline())
        yield helper.pid, clone_pid
    finally:
        if clone_pid:
            with contextlib.suppress(ProcessLookupError):
                os.kill(clone_pid, signal.SIGKILL)  # the helper reaps it and exits
        try:
            helper.wait(timeout=10)
        except subprocess.TimeoutExpired:
            helper.kill()
            helper.wait(timeout=10)


def test_clone_vm_pair_shares_mm_and_oom_score_adj(clone_vm_pair: tuple[int, int]) -> None:
    helper, clone = clone_vm_pair
    assert shares_mm(helper, clone) is True
    assert shares_mm(os.getpid(), clone) is False
    with ProcessHandle.open(clone) as handle:
        handle.set_oom_score_adj(300)
    # __set_oom_adj(): MMF_MULTIPROCESS, so the other process on the mm follows.
    assert (read_adj(clone), read_adj(helper)) == (300, 300)
