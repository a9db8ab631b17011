"""The protection commands against this kernel, on processes the test starts:
`adjust`/`protect` by every selector, dry runs, exact undo, pid reuse and exited
processes, the EACCES rule without CAP_SYS_RESOURCE, the legacy oom_adj mapping
(checked against the kernel's own oom_adj_write()), the safety refusals on hogs in a
sandbox memcg, `run` (through the installed entry point: it execs), systemd drop-ins
in a temporary directory, and the journal.

Commands run in-process (`main(argv, env)`, streams captured, `--json` parsed); the
oracle is always `/proc/PID/oom_score_adj` read by the test, never oomlens's output
alone. Journals and drop-ins live under tmp_path; every process is killed and reaped.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import secrets
import shlex
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from oomlens.cli.env import Env, ExitStatus
from oomlens.cli.main import main
from oomlens.system.oomadj import has_cap_sys_resource
from oomlens.system.sandbox import MIB, Hog, SandboxMemcg

pytestmark = pytest.mark.kernel
SandboxFactory = Callable[..., SandboxMemcg]  # the `sandbox` fixture (tests/conftest.py)

ACTOR = "tester via sudo (root, uid 0)"
NOBODY = 65534
SANDBOX_PREFIX = "oomlens-test-protect-"
OOMLENS = Path(sys.executable).with_name("oomlens")
DENIED_HINT = "CAP_SYS_RESOURCE"

needs_no_cap = pytest.mark.skipif(
    has_cap_sys_resource(), reason="this process has CAP_SYS_RESOURCE: negative values succeed")


# --- oracles ---------------------------------------------------------------------------


def read_adj(pid: int) -> int:
    with open(f"/proc/{pid}/oom_score_adj") as handle:
        return int(handle.read())


def write_adj(pid: int, value: int) -> None:
    with open(f"/proc/{pid}/oom_score_adj", "w") as handle:
        handle.write(str(value))


def start_ticks(pid: int) -> int:
    """Field 22 of /proc/PID/stat (fields counted after the last ')')."""
    with open(f"/proc/{pid}/stat") as handle:
        text = handle.read()
    return int(text[text.rindex(")") + 2:].split()[19])


def comm(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/comm") as handle:
            return handle.read().rstrip("\n")
    except OSError:
        return None


def children_of(ppid: int) -> list[int]:
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as handle:
                text = handle.read()
        except OSError:
            continue
        if int(text[text.rindex(")") + 2:].split()[1]) == ppid:
            found.append(int(name))
    return sorted(found)


def kernel_oom_adj_to_score_adj(oom_adj: int) -> int:
    """fs/proc/base.c: oom_adj_write(), v6.x: 15 (OOM_ADJ_MAX) -> 1000, else
    oom_adj * OOM_SCORE_ADJ_MAX / -OOM_DISABLE in C (truncation toward zero)."""
    if oom_adj == 15:
        return 1000
    magnitude = abs(oom_adj) * 1000 // 17
    return -magnitude if oom_adj < 0 else magnitude


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.005)


# --- the CLI, in-process ----------------------------------------------------------------


@dataclass(frozen=True)
class Ran:
    status: int
    out: str
    err: str


@dataclass(frozen=True)
class Cli:
    state_dir: Path
    systemd_dir: Path

    @property
    def journal_file(self) -> Path:
        return self.state_dir / "journal.sqlite"

    def __call__(self, *argv: object) -> Ran:
        out, err = io.StringIO(), io.StringIO()
        env = Env(out, err, stdout_isatty=False, colour=False, columns=200,
                  state_dir=str(self.state_dir), actor=ACTOR,
                  systemd_dir=str(self.systemd_dir))
        status = main([str(a) for a in argv], env)
        return Ran(status, out.getvalue(), err.getvalue())

    def json(self, *argv: object, status: int = ExitStatus.OK) -> Any:
        ran = self(*argv, "--json")
        assert ran.status == status, (ran.status, ran.out, ran.err)
        return json.loads(ran.out)

    def journal(self, *argv: object) -> list[dict[str, Any]]:
        changes: list[dict[str, Any]] = self.json("journal", *argv)["changes"]
        return changes


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    return Cli(tmp_path / "state", tmp_path / "systemd")


def results(doc: dict[str, Any]) -> dict[int, str]:
    """pid -> result of an adjust document."""
    return {c["pid"]: c["result"] for c in doc["changes"]}


# --- processes the tests start -----------------------------------------------------------


class Procs:
    """Children that are killed and reaped at teardown, whatever the test did; extra
    cleanups (grandchildren first) run before, newest first."""

    def __init__(self, bindir: Path) -> None:
        self.bindir = bindir
        self._started: list[subprocess.Popen[bytes]] = []
        self._cleanups: list[Callable[[], None]] = []

    def unique_binary(self) -> Path:
        """/bin/sleep copied under a name no other process has (`comm` = the name)."""
        path = self.bindir / f"olt-{secrets.token_hex(4)}"
        shutil.copy2("/bin/sleep", path)
        return path

    def start(self, argv: list[str], **kwargs: Any) -> subprocess.Popen[bytes]:
        child = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                 **kwargs)
        self._started.append(child)
        return child  # Popen returns after the exec succeeded (its error pipe closed)

    def sleeper(self, binary: Path | str = "/bin/sleep", *args: str,
                user: int | None = None) -> subprocess.Popen[bytes]:
        argv = [str(binary), *(args or ("60",))]
        if user is None:
            return self.start(argv)
        # Only the binary's own directory is open to `nobody` (tmp_path is 0700): the
        # child changes into it while still root, then runs it by a relative path.
        binary = Path(binary)
        assert binary.parent == self.bindir
        return self.start([f"./{binary.name}", *argv[1:]], cwd=self.bindir, user=user,
                          group=user, extra_groups=[])

    def shell_with_two_children(self, binary: Path) -> tuple[int, list[int]]:
        """A shell running two copies of `binary` and waiting for them."""
        shell = self.start(["/bin/sh", "-c", '"$0" 60 & "$0" 60 & wait', str(binary)])
        kids: list[int] = []

        def both_started() -> bool:
            kids[:] = [p for p in children_of(shell.pid) if comm(p) == binary.name]
            return len(kids) == 2

        def kill_kids_first() -> None:
            # The shell's `wait` reaps them; it then exits and is reaped below.
            for kid in children_of(shell.pid) if shell.poll() is None else ():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(kid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                shell.wait(timeout=10)

        self._cleanups.append(kill_kids_first)
        wait_for(both_started, f"two children of shell {shell.pid}")
        return shell.pid, list(kids)

    def close(self) -> None:
        for cleanup in reversed(self._cleanups):
            cleanup()
        for child in self._started:
            if child.poll() is None:
                child.kill()
        for child in self._started:
            child.wait(timeout=10)


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[Procs]:
    if read_adj(os.getpid()) != 0:
        pytest.skip("children inherit oom_score_adj: these tests expect pytest's to be 0")
    bindir = tmp_path / "bin"
    bindir.mkdir(mode=0o755)
    bindir.chmod(0o755)
    started = Procs(bindir)
    try:
        yield started
    finally:
        started.close()


def sandbox_sleeper(box: SandboxMemcg, binary: Path) -> int:
    """`binary` running inside the sandbox (it joins, then execs)."""
    child = box.spawn([str(binary), "60"])
    wait_for(lambda: comm(child.pid) == binary.name, f"{binary.name} in {box.path}")
    assert child.pid in box.procs()
    return child.pid


# --- 1. selectors -------------------------------------------------------------------------


class TestSelectors:
    def test_pid(self, cli: Cli, procs: Procs) -> None:
        target, bystander = procs.sleeper(), procs.sleeper()
        old = read_adj(target.pid)
        doc = cli.json("adjust", "--pid", target.pid, "--score", 123)
        [change] = doc["changes"]
        assert (change["pid"], change["old"], change["new"], change["result"]) == (
            target.pid, old, 123, "applied")
        assert isinstance(change["change_id"], int)
        assert (read_adj(target.pid), read_adj(bystander.pid)) == (123, old)

    def test_name(self, cli: Cli, procs: Procs) -> None:
        binary = procs.unique_binary()
        first, second = procs.sleeper(binary), procs.sleeper(binary)
        bystander = procs.sleeper()
        doc = cli.json("adjust", "--name", binary.name, "--score", 150)
        assert results(doc) == {first.pid: "applied", second.pid: "applied"}
        assert [read_adj(p.pid) for p in (first, second, bystander)] == [150, 150, 0]

    def test_cmd_regex(self, cli: Cli, procs: Procs) -> None:
        token = f"6{secrets.randbelow(10**6):06d}.5"  # a unique argument to sleep
        target, bystander = procs.sleeper("/bin/sleep", token), procs.sleeper()
        doc = cli.json("adjust", "--cmd", rf"\b{re.escape(token)}$", "--score", 160)
        assert results(doc) == {target.pid: "applied"}
        assert (read_adj(target.pid), read_adj(bystander.pid)) == (160, 0)

    def test_exe(self, cli: Cli, procs: Procs) -> None:
        binary = procs.unique_binary()
        target, bystander = procs.sleeper(binary), procs.sleeper()
        exe = os.path.realpath(binary)
        assert os.readlink(f"/proc/{target.pid}/exe") == exe
        doc = cli.json("adjust", "--exe", exe, "--score", 170)
        assert results(doc) == {target.pid: "applied"}
        assert (read_adj(target.pid), read_adj(bystander.pid)) == (170, 0)

    @pytest.mark.parametrize("user", ["nobody", str(NOBODY)])
    def test_user(self, cli: Cli, procs: Procs, user: str) -> None:
        binary = procs.unique_binary()
        as_root, as_nobody = procs.sleeper(binary), procs.sleeper(binary, user=NOBODY)
        with open(f"/proc/{as_nobody.pid}/status") as status:
            assert re.search(rf"^Uid:\t{NOBODY}\t", status.read(), re.M)
        doc = cli.json("adjust", "--user", user, "--name", binary.name, "--score", 180)
        assert results(doc) == {as_nobody.pid: "applied"}
        assert (read_adj(as_nobody.pid), read_adj(as_root.pid)) == (180, 0)

    def test_cgroup_path_and_glob(self, cli: Cli, procs: Procs,
                                  sandbox: SandboxFactory) -> None:
        box = sandbox(64 * MIB, prefix=SANDBOX_PREFIX)
        binary = procs.unique_binary()
        inside = sandbox_sleeper(box, binary)
        outside = procs.sleeper(binary)  # same name, not in the sandbox
        doc = cli.json("adjust", "--cgroup", box.path, "--score", 190)
        assert results(doc) == {inside: "applied"}
        assert (read_adj(inside), read_adj(outside.pid)) == (190, 0)

        glob = box.path[:-8] + "*"  # the sandbox's name ends in 8 random hex digits
        doc = cli.json("adjust", "--cgroup", glob, "--score", 195)
        assert results(doc) == {inside: "applied"}
        assert (read_adj(inside), read_adj(outside.pid)) == (195, 0)

    def test_children(self, cli: Cli, procs: Procs) -> None:
        binary = procs.unique_binary()
        shell, kids = procs.shell_with_two_children(binary)
        bystander = procs.sleeper(binary)
        doc = cli.json("adjust", "--pid", shell, "--children", "--score", 210)
        assert results(doc) == dict.fromkeys([shell, *kids], "applied")
        assert [read_adj(p) for p in (shell, *kids)] == [210, 210, 210]
        assert read_adj(bystander.pid) == 0

    def test_selectors_combine_with_and(self, cli: Cli, procs: Procs) -> None:
        binary = procs.unique_binary()
        target = procs.sleeper(binary)
        doc = cli.json("adjust", "--name", binary.name, "--user", "root", "--score", 111)
        assert results(doc) == {target.pid: "applied"}
        ran = cli("adjust", "--name", binary.name, "--user", "nobody", "--score", 222)
        assert ran.status == ExitStatus.USAGE
        assert "no process matches" in ran.err
        assert f"comm={binary.name}" in ran.err and "user=nobody" in ran.err
        assert read_adj(target.pid) == 111


def test_kernel_threads_are_left_alone(cli: Cli) -> None:
    before = read_adj(2)
    doc = cli.json("adjust", "--pid", 2, "--score", 5)
    assert comm(2) == "kthreadd"
    assert (doc["kernel_threads_skipped"], doc["changes"]) == ([2], [])
    assert read_adj(2) == before
    assert cli.journal() == []


# --- 2. dry run ----------------------------------------------------------------------------


def test_dry_run_changes_nothing(cli: Cli, procs: Procs) -> None:
    target = procs.sleeper()
    old = read_adj(target.pid)
    doc = cli.json("adjust", "--pid", target.pid, "--score", 400, "--dry-run")
    assert doc["dry_run"] is True
    assert doc["changes"] == [{
        "pid": target.pid, "comm": "sleep", "cmdline": "/bin/sleep 60", "old": old, "new": 400,
        "result": "planned", "change_id": None, "error": None}]
    text = cli("adjust", "--pid", target.pid, "--score", 400, "--dry-run")
    assert text.status == ExitStatus.OK
    assert "planned" in text.out and "nothing changed (dry run)" in text.out
    assert read_adj(target.pid) == old
    assert not cli.journal_file.exists()
    assert cli.journal() == []


# --- 3. undo ---------------------------------------------------------------------------------


class TestUndo:
    def test_undo_last_walks_back_each_command(self, cli: Cli, procs: Procs) -> None:
        target = procs.sleeper()
        assert read_adj(target.pid) == 0
        cli.json("adjust", "--pid", target.pid, "--score", 300)
        cli.json("adjust", "--pid", target.pid, "--score", 700)
        assert read_adj(target.pid) == 700

        [restore] = cli.json("undo", "--last")["restores"]
        assert (restore["result"], restore["current"], restore["restore_to"]) == (
            "applied", "700", "300")
        assert read_adj(target.pid) == 300

        [restore] = cli.json("undo", "--last")["restores"]
        assert (restore["result"], restore["current"], restore["restore_to"]) == (
            "applied", "300", "0")
        assert read_adj(target.pid) == 0

        assert cli.json("undo", "--last")["restores"] == []
        assert cli("undo", "--last").out == "nothing to undo\n"
        rows = cli.journal()
        assert [(r["old"], r["new"], r["undoes"]) for r in rows] == [
            ("0", "300", None), ("300", "700", None),
            ("700", "300", rows[1]["id"]), ("300", "0", rows[0]["id"])]
        assert (rows[0]["undone_by"], rows[1]["undone_by"]) == (rows[3]["id"], rows[2]["id"])

    def test_undo_all_restores_each_original(self, cli: Cli, procs: Procs) -> None:
        a, b = procs.sleeper(), procs.sleeper()
        write_adj(b.pid, 50)  # b's original value is not the inherited one
        cli.json("adjust", "--pid", a.pid, "--score", 100)
        cli.json("adjust", "--pid", b.pid, "--score", 200)
        cli.json("adjust", "--pid", a.pid, "--score", 400)
        doc = cli.json("undo", "--all")
        assert [(r["undoes"]["pid"], r["current"], r["restore_to"], r["result"])
                for r in doc["restores"]] == [
            (a.pid, "400", "100", "applied"), (b.pid, "200", "50", "applied"),
            (a.pid, "100", "0", "applied")]
        assert (read_adj(a.pid), read_adj(b.pid)) == (0, 50)

    def test_undo_one_change_by_id(self, cli: Cli, procs: Procs) -> None:
        a, b = procs.sleeper(), procs.sleeper()
        doc = cli.json("adjust", "--pid", a.pid, "--pid", b.pid, "--score", 250)
        ids = {c["pid"]: c["change_id"] for c in doc["changes"]}
        [restore] = cli.json("undo", ids[a.pid])["restores"]
        assert (restore["undoes"]["id"], restore["result"]) == (ids[a.pid], "applied")
        assert (read_adj(a.pid), read_adj(b.pid)) == (0, 250)
        again = cli("undo", ids[a.pid])
        assert again.status == ExitStatus.USAGE
        assert f"change #{ids[a.pid]} was already undone" in again.err
        assert (read_adj(a.pid), read_adj(b.pid)) == (0, 250)

    def test_changed_since_is_skipped_unless_forced(self, cli: Cli, procs: Procs) -> None:
        target = procs.sleeper()
        cli.json("adjust", "--pid", target.pid, "--score", 300)
        write_adj(target.pid, 500)  # someone else's later decision
        [skipped] = cli.json("undo", "--last", status=ExitStatus.PROBLEM)["restores"]
        assert (skipped["result"], skipped["current"], skipped["change_id"]) == (
            "changed", "500", None)
        assert "now 500, not 300" in skipped["why"]
        assert read_adj(target.pid) == 500
        [forced] = cli.json("undo", "--last", "--force")["restores"]
        assert (forced["result"], forced["current"], forced["restore_to"]) == (
            "applied", "500", "0")
        assert read_adj(target.pid) == 0


# --- 4. identity ------------------------------------------------------------------------------


def rewrite_journal(cli: Cli, sql: str, *params: object) -> None:
    conn = sqlite3.connect(cli.journal_file)
    try:
        with conn:
            assert conn.execute(sql, params).rowcount == 1
    finally:
        conn.close()


class TestIdentity:
    def test_reused_pid_is_skipped(self, cli: Cli, procs: Procs) -> None:
        target = procs.sleeper()
        [change] = cli.json("adjust", "--pid", target.pid, "--score", 300)["changes"]
        [row] = cli.journal()
        assert row["start_time_ticks"] == start_ticks(target.pid)
        # As if the pid now belonged to a process that started one tick later.
        rewrite_journal(cli, "UPDATE changes SET start_time_ticks = start_time_ticks + 1 "
                        "WHERE id = ?", change["change_id"])
        [restore] = cli.json("undo", "--last")["restores"]
        assert restore["result"] == "reused"
        assert f"pid {target.pid} now belongs to another process" in restore["why"]
        assert read_adj(target.pid) == 300
        assert [r["state"] for r in cli.journal()] == ["applied"]  # nothing recorded

    def test_change_from_another_boot_is_gone(self, cli: Cli, procs: Procs) -> None:
        target = procs.sleeper()
        [change] = cli.json("adjust", "--pid", target.pid, "--score", 300)["changes"]
        rewrite_journal(cli, "UPDATE changes SET boot_id = ? WHERE id = ?",
                        "00000000-0000-0000-0000-000000000000", change["change_id"])
        [restore] = cli.json("undo", "--last")["restores"]
        assert restore["result"] == "gone" and "reboot" in restore["why"]
        assert read_adj(target.pid) == 300

    def test_exited_process_is_gone(self, cli: Cli, procs: Procs) -> None:
        target = procs.sleeper()
        cli.json("adjust", "--pid", target.pid, "--score", 300)
        target.kill()
        target.wait(timeout=10)
        [restore] = cli.json("undo", "--last")["restores"]
        assert (restore["result"], restore["why"]) == ("gone", "the process exited")


# --- 5. permission (no CAP_SYS_RESOURCE) --------------------------------------------------------


@needs_no_cap
class TestPermission:
    def test_protect_is_denied_and_journaled_as_failed(self, cli: Cli, procs: Procs) -> None:
        target = procs.sleeper()
        doc = cli.json("protect", "--pid", target.pid, status=ExitStatus.PERMISSION)
        [change] = doc["changes"]
        assert (change["old"], change["new"], change["result"]) == (0, -1000, "denied")
        assert DENIED_HINT in change["error"]
        assert doc["refused"] == []
        assert read_adj(target.pid) == 0

        text = cli("protect", "--pid", target.pid)
        assert text.status == ExitStatus.PERMISSION
        assert re.search(rf"^error: .*{DENIED_HINT}", text.out, re.M)
        assert read_adj(target.pid) == 0

        rows = cli.journal()
        assert [(r["pid"], r["old"], r["new"], r["state"]) for r in rows] == [
            (target.pid, "0", "-1000", "failed")] * 2
        assert all(DENIED_HINT in r["error"] for r in rows)
        assert cli.json("undo", "--all")["restores"] == []  # nothing was applied

    def test_undo_of_a_failed_change_is_refused(self, cli: Cli, procs: Procs) -> None:
        target = procs.sleeper()
        [change] = cli.json("protect", "--pid", target.pid,
                            status=ExitStatus.PERMISSION)["changes"]
        write_adj(target.pid, 300)  # a later, unrelated decision
        for argv in ([change["change_id"]], [change["change_id"], "--force"]):
            ran = cli("undo", *argv)
            assert (ran.status, read_adj(target.pid)) == (ExitStatus.USAGE, 300), ran
            assert f"change #{change['change_id']} failed" in ran.err
        assert [r["state"] for r in cli.journal()] == ["failed"]

    def test_batch_below_the_floor_is_denied_for_each(self, cli: Cli, procs: Procs) -> None:
        a, b = procs.sleeper(), procs.sleeper()
        write_adj(a.pid, 300)  # lowering 300 -> -5 still crosses the floor (0)
        doc = cli.json("adjust", "--pid", a.pid, "--pid", b.pid, "--score", -5,
                       status=ExitStatus.PERMISSION)
        assert results(doc) == {a.pid: "denied", b.pid: "denied"}
        assert (read_adj(a.pid), read_adj(b.pid)) == (300, 0)
        assert sorted((r["pid"], r["old"], r["state"]) for r in cli.journal()) == sorted(
            [(a.pid, "300", "failed"), (b.pid, "0", "failed")])

def test_target_exiting_mid_batch_is_gone_not_a_failure(
        cli: Cli, procs: Procs, monkeypatch: pytest.MonkeyPatch) -> None:
    """A real exit between the scan and the write (the hook only times it)."""
    import oomlens.cli.commands.adjust as adjust_command

    a, b = procs.sleeper(), procs.sleeper()
    plan_for = adjust_command.build_plan

    def plan_then_b_exits(*args: Any) -> Any:
        plan = plan_for(*args)
        b.kill()
        b.wait(timeout=10)
        return plan

    monkeypatch.setattr(adjust_command, "build_plan", plan_then_b_exits)
    doc = cli.json("adjust", "--pid", a.pid, "--pid", b.pid, "--score", 260)
    assert results(doc) == {a.pid: "applied", b.pid: "gone"}
    assert read_adj(a.pid) == 260
    assert [(r["pid"], r["state"]) for r in cli.journal()] == [(a.pid, "applied")]


# --- 6. legacy oom_adj -----------------------------------------------------------------------


class TestLegacyAdj:
    def test_every_value_maps_as_the_kernel_does(self, cli: Cli, procs: Procs) -> None:
        target = procs.sleeper()
        for oom_adj in range(-17, 16):
            doc = cli.json("adjust", "--legacy-adj", oom_adj, "--dry-run", "--pid", target.pid)
            expected = kernel_oom_adj_to_score_adj(oom_adj)
            assert (doc["legacy_oom_adj"], doc["oom_score_adj"]) == (oom_adj, expected)
            assert doc["changes"][0]["new"] == expected
        assert (kernel_oom_adj_to_score_adj(-17), kernel_oom_adj_to_score_adj(-1),
                kernel_oom_adj_to_score_adj(8)) == (-1000, -58, 470)
        assert read_adj(target.pid) == 0
        assert not cli.journal_file.exists()

    def test_applied_value_equals_the_kernels_own_mapping(self, cli: Cli,
                                                          procs: Procs) -> None:
        """Non-negative values only: a negative one needs CAP_SYS_RESOURCE here."""
        ours, kernels = procs.sleeper(), procs.sleeper()
        for oom_adj in range(16):
            with open(f"/proc/{kernels.pid}/oom_adj", "w") as legacy:
                legacy.write(str(oom_adj))
            status = cli("adjust", "--legacy-adj", oom_adj, "--pid", ours.pid).status
            assert status == ExitStatus.OK
            assert read_adj(ours.pid) == read_adj(kernels.pid), f"oom_adj {oom_adj}"
            assert read_adj(ours.pid) == kernel_oom_adj_to_score_adj(oom_adj)


# --- 7. safety refusals ----------------------------------------------------------------------


@dataclass(frozen=True)
class Hogs:
    box: SandboxMemcg
    small: Hog
    big: Hog


@pytest.fixture
def hogs(sandbox: SandboxFactory) -> Hogs:
    """20 MiB and 40 MiB resident in a 128 MiB sandbox: protecting the small one
    leaves the memcg about two thirds killable."""
    box = sandbox(128 * MIB, prefix=SANDBOX_PREFIX)
    return Hogs(box, box.start_hog(20), box.start_hog(40))


def refusal_messages(doc: dict[str, Any]) -> list[str]:
    return [r["message"] for r in doc["refused"]]


class TestSafety:
    def test_max_protected_share(self, cli: Cli, hogs: Hogs) -> None:
        pid = hogs.small.pid
        doc = cli.json("protect", "--pid", pid, "--max-protected-share", "0.0001%",
                       status=ExitStatus.PROBLEM)
        [message] = refusal_messages(doc)
        held = re.search(rf"^pid {pid} \(.+\) holds (\d+) MiB, (\d+\.\d)% of RAM", message)
        assert held, message
        assert 20 <= int(held.group(1)) < 40
        assert "more than the 0.0% that may be made unkillable" in message
        assert doc["refused"][0]["pid"] == pid
        assert (doc["dry_run"], doc["forced"], results(doc)) == (True, False, {pid: "planned"})
        assert doc["journal"] is None and not cli.journal_file.exists()
        assert read_adj(pid) == 0

        text = cli("protect", "--pid", pid, "--max-protected-share", "0.0001%")
        assert text.status == ExitStatus.PROBLEM
        assert f"refused: pid {pid}" in text.out and text.out.endswith("nothing changed\n")

    def test_min_killable_share_global_and_memcg(self, cli: Cli, hogs: Hogs) -> None:
        pid = hogs.small.pid
        doc = cli.json("protect", "--pid", pid, "--min-killable-share", "99.9999%",
                       status=ExitStatus.PROBLEM)
        messages = refusal_messages(doc)
        assert len(messages) == 2, messages
        assert "in processes of the global OOM domain" in messages[0]
        assert f"in processes of the memcg {hogs.box.path} OOM domain" in messages[1]
        # 20 MiB of the hogs' ~60 MiB (plus interpreters) would become unkillable.
        killable = re.search(r"leaving (\d+\.\d)% killable", messages[1])
        assert killable and 50 < float(killable.group(1)) < 75, messages[1]
        assert all("less than the 100.0% that must stay killable" in m for m in messages)
        assert not cli.journal_file.exists()
        assert read_adj(pid) == 0

    @needs_no_cap
    def test_force_attempts_the_write(self, cli: Cli, hogs: Hogs) -> None:
        pid = hogs.small.pid
        doc = cli.json("protect", "--pid", pid, "--min-killable-share", "99.9999%",
                       "--force", status=ExitStatus.PERMISSION)
        assert doc["forced"] is True and len(doc["refused"]) == 2
        assert results(doc) == {pid: "denied"}
        assert read_adj(pid) == 0
        assert [(r["pid"], r["state"]) for r in cli.journal()] == [(pid, "failed")]

    def test_zero_killable_share_is_taken_literally(self, cli: Cli, hogs: Hogs) -> None:
        """0% is a value, not "unset": with nothing required to stay killable,
        protecting every process of the sandbox is not refused."""
        pids = [hogs.small.pid, hogs.big.pid]
        argv = [a for pid in pids for a in ("--pid", pid)]
        assert cli.json("protect", *argv, "--dry-run",
                        status=ExitStatus.PROBLEM)["refused"]  # 50% by default
        doc = cli.json("protect", *argv, "--min-killable-share", "0%", "--dry-run")
        assert (doc["refused"], results(doc)) == ([], dict.fromkeys(pids, "planned"))

    @pytest.mark.parametrize(("option", "share", "needle"), [
        ("--max-protected-share", "0%", "must be more than 0%"),
        ("--min-killable-share", "100%", "less than 100%"),
    ])
    def test_shares_that_refuse_everything_are_usage_errors(
            self, cli: Cli, procs: Procs, option: str, share: str, needle: str) -> None:
        target = procs.sleeper()
        ran = cli("protect", "--pid", target.pid, option, share)
        assert ran.status == ExitStatus.USAGE
        assert needle in ran.err and option in ran.err
        assert read_adj(target.pid) == 0 and not cli.journal_file.exists()


# --- 8. run ------------------------------------------------------------------------------------


def oomlens_run(tmp_path: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    if not OOMLENS.exists():
        pytest.skip(f"no installed entry point at {OOMLENS}")
    env = {k: v for k, v in os.environ.items() if not k.startswith("OOMLENS_")}
    env["OOMLENS_STATE_DIR"] = str(tmp_path / "state")
    return subprocess.run([str(OOMLENS), "run", *argv], capture_output=True, text=True,
                          env=env, timeout=30, check=False)


class TestRun:
    def test_value_is_set_before_exec(self, cli: Cli, tmp_path: Path) -> None:
        script = "cat /proc/self/oom_score_adj; echo $$"
        done = oomlens_run(tmp_path, "--score", "300", "--", "sh", "-c", script)
        assert done.returncode == 0, done.stderr
        value, pid = done.stdout.split()
        assert value == "300"
        [row] = cli.journal()
        assert (row["pid"], row["old"], row["new"], row["state"]) == (int(pid), "0", "300",
                                                                      "applied")
        assert row["cmdline"] == shlex.join(["sh", "-c", script])
        assert row["cause"] == shlex.join(["oomlens", "run", "--score", "300", "--", "sh",
                                           "-c", script])

    def test_no_descriptor_leaks_into_the_command(self, tmp_path: Path) -> None:
        """The journal and the /proc handle are closed before the exec."""
        done = oomlens_run(tmp_path, "--score", "2", "--", "sh", "-c", "ls /proc/$$/fd")
        assert done.returncode == 0, done.stderr
        assert sorted(done.stdout.split()) == ["0", "1", "2"]

    @needs_no_cap
    def test_denied_value_does_not_run_the_command(self, cli: Cli, tmp_path: Path) -> None:
        marker = tmp_path / "ran"
        done = oomlens_run(tmp_path, "--score", "-5", "--", "touch", str(marker))
        assert done.returncode == ExitStatus.PERMISSION
        assert DENIED_HINT in done.stderr
        assert not marker.exists()
        assert [(r["new"], r["state"]) for r in cli.journal()] == [("-5", "failed")]

    def test_missing_command_is_127(self, tmp_path: Path) -> None:
        done = oomlens_run(tmp_path, "--score", "1", "--", "/nonexistent")
        assert done.returncode == ExitStatus.COMMAND_NOT_FOUND
        assert "/nonexistent: command not found" in done.stderr


# --- 9. systemd drop-ins ------------------------------------------------------------------------


class TestDropin:
    def test_write_dry_run_idempotent_remove_undo(self, cli: Cli) -> None:
        path = cli.systemd_dir / "foo.service.d" / "50-oomlens-oom.conf"
        dry = cli.json("systemd-dropin", "foo", "--score", -500, "--dry-run")
        assert (dry["dry_run"], dry["changed"], dry["change_id"]) == (True, True, None)
        assert not cli.systemd_dir.exists() and not cli.journal_file.exists()

        doc = cli.json("systemd-dropin", "foo", "--score", -500)
        assert (doc["unit"], doc["path"], doc["changed"]) == ("foo.service", str(path), True)
        written = path.read_text()
        assert written == doc["content"] == dry["content"]
        assert re.search(r"^\[Service\]\nOOMScoreAdjust=-500\n\Z", written, re.M)

        again = cli("systemd-dropin", "foo", "--score", -500)
        assert again.status == ExitStatus.OK
        assert again.out.startswith(f"{path} already says so: nothing to do\n")
        assert len(cli.journal()) == 1

        removed = cli.json("systemd-dropin", "foo", "--remove")
        assert (removed["changed"], removed["content"]) == (True, None)
        assert not path.exists() and not path.parent.exists()

        [restore] = cli.json("undo", "--last")["restores"]
        assert (restore["result"], restore["current"]) == ("applied", None)
        assert path.read_bytes() == written.encode()
        rows = cli.journal()
        assert [(r["kind"], r["target"], r["old"], r["new"]) for r in rows] == [
            ("file", str(path), None, written), ("file", str(path), written, None),
            ("file", str(path), None, written)]

    @pytest.mark.parametrize(("unit", "needle"), [
        ("../x", "not a systemd unit name"),
        ("foo.slice", "applies to units that start processes"),
    ])
    def test_bad_unit_names(self, cli: Cli, unit: str, needle: str) -> None:
        ran = cli("systemd-dropin", unit, "--score", -500)
        assert ran.status == ExitStatus.USAGE
        assert needle in ran.err
        assert not cli.systemd_dir.exists() and not cli.journal_file.exists()


# --- 10. journal ------------------------------------------------------------------------------


def test_journal_lists_who_why_what_and_filters_by_pid(cli: Cli, procs: Procs) -> None:
    a, b = procs.sleeper(), procs.sleeper()
    cli.json("adjust", "--pid", a.pid, "--score", 300)
    cli.json("prefer", "--pid", b.pid)
    with open("/proc/sys/kernel/random/boot_id") as boot:
        boot_id = boot.read().strip()
    rows = cli.journal()
    assert [(r["pid"], r["comm"], r["old"], r["new"], r["state"], r["kind"]) for r in rows] == [
        (a.pid, "sleep", "0", "300", "applied", "oom_score_adj"),
        (b.pid, "sleep", "0", "500", "applied", "oom_score_adj")]
    assert [r["cause"] for r in rows] == [
        f"oomlens adjust --pid {a.pid} --score 300 --json", f"oomlens prefer --pid {b.pid} --json"]
    assert {r["actor"] for r in rows} == {ACTOR}
    assert [r["start_time_ticks"] for r in rows] == [start_ticks(a.pid), start_ticks(b.pid)]
    assert {r["boot_id"] for r in rows} == {boot_id}
    assert rows[0]["batch"] != rows[1]["batch"]

    [only_b] = cli.journal("--pid", b.pid)
    assert only_b == rows[1]
    assert cli.journal("--pid", 4194303) == []
    text = cli("journal")
    assert text.status == ExitStatus.OK
    assert ACTOR in text.out and f"oomlens prefer --pid {b.pid}" in text.out
