"""policy/journal.py: the change journal on real SQLite files: round trips, intent
committed before outcome (seen from a second connection, and after a crash), undo
bookkeeping, two processes writing at once, schema versions, foreign files, modes
and a permission refusal by the kernel (as an unprivileged user)."""

from __future__ import annotations

import multiprocessing
import os
import shutil
import sqlite3
import stat
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from oomlens.errors import AccessDenied, NotFound, OomlensError
from oomlens.policy.journal import (
    JOURNAL_NAME,
    SCHEMA_VERSION,
    Batch,
    BatchKind,
    Change,
    ChangeKind,
    ChangeState,
    Intent,
    Journal,
)

T0 = datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=UTC)
SECOND = timedelta(seconds=1)
NOBODY = 65534
HOSTILE_CMDLINE = "sh -c 'echo \"ä\"; exit 1'\nsecond line\ttab"
DROP_IN = "[Service]\nOOMScoreAdjust=-900\n"


class Clock:
    """Advances one second per reading, so every recorded time is distinct and known."""

    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        now = self.now
        self.now += SECOND
        return now


@pytest.fixture
def state_dir(tmp_path: Path) -> str:
    return str(tmp_path / "state")


@pytest.fixture
def journal(state_dir: str) -> Iterator[Journal]:
    with Journal.open(state_dir, clock=Clock()) as opened:
        yield opened


def adj(pid: int, old: int = 0, new: int = -500, undoes: int | None = None) -> Intent:
    return Intent(kind=ChangeKind.OOM_SCORE_ADJ, target=str(pid), old=str(old), new=str(new),
                  cause=f"oomlens protect {pid}", pid=pid, start_time_ticks=pid * 10,
                  boot_id="b00t", comm=f"proc{pid}", cmdline=f"/bin/proc{pid}", undoes=undoes)


def run_batch(journal: Journal, kind: BatchKind, intents: list[Intent],
              states: list[ChangeState | None]) -> list[int]:
    """One batch; each change gets its outcome, or stays an intent where state is None."""
    batch = journal.begin_batch("root", f"oomlens {kind}", kind)
    change_ids = journal.record_intents(batch, intents)
    for change_id, state in zip(change_ids, states, strict=True):
        if state is not None:
            error = "refused" if state is ChangeState.FAILED else None
            journal.record_outcome(change_id, state, error)
    return change_ids


def ids(changes: list[Change]) -> list[int]:
    return [change.id for change in changes]


APPLIED, FAILED = ChangeState.APPLIED, ChangeState.FAILED


# Round trips


def test_batch_and_changes_round_trip(state_dir: str) -> None:
    with Journal.open(state_dir, clock=Clock()) as journal:
        batch = journal.begin_batch("root", "oomlens protect sshd", BatchKind.COMMAND)
        process = Intent(kind=ChangeKind.OOM_SCORE_ADJ, target="4242", old="0", new="-900",
                         cause='rule "ssh" (/etc/oomlens/policy.toml:3)', pid=4242,
                         start_time_ticks=987_654_321, boot_id="6f0c-boot", comm="a) R 1 (x",
                         cmdline=HOSTILE_CMDLINE)
        drop_in = Intent(kind=ChangeKind.FILE, target="/etc/systemd/system/x.service.d/o.conf",
                         old=None, new=DROP_IN, cause="oomlens protect --persist x")
        assert journal.record_intents(batch, [process, drop_in]) == [1, 2]
        journal.record_outcome(1, APPLIED)
    assert batch == Batch(id=1, at=T0, actor="root", command="oomlens protect sshd",
                          kind=BatchKind.COMMAND)
    with Journal.open(state_dir) as reopened:
        assert reopened.change(1) == Change(
            id=1, batch=1, at=T0 + SECOND, actor="root", kind=ChangeKind.OOM_SCORE_ADJ,
            target="4242", pid=4242, start_time_ticks=987_654_321, boot_id="6f0c-boot",
            comm="a) R 1 (x", cmdline=HOSTILE_CMDLINE, old="0", new="-900",
            cause='rule "ssh" (/etc/oomlens/policy.toml:3)', state=APPLIED, error=None,
            undoes=None, undone_by=None, outcome_at=T0 + 2 * SECOND)
        file_change = reopened.change(2)
        assert reopened.changes() == [reopened.change(1), file_change]
    assert (file_change.kind, file_change.old, file_change.new) == (ChangeKind.FILE, None, DROP_IN)
    assert (file_change.pid, file_change.comm, file_change.cmdline) == (None, "", "")
    assert (file_change.state, file_change.outcome_at) == (ChangeState.INTENT, None)
    assert file_change.at.utcoffset() == timedelta(0)


def test_times_are_stored_as_utc_text_with_microseconds(state_dir: str) -> None:
    east = datetime(2024, 5, 1, 16, 0, 0, 5, tzinfo=timezone(timedelta(hours=2)))
    with Journal.open(state_dir, clock=lambda: east) as journal:
        batch = journal.begin_batch("root", "x", BatchKind.COMMAND)
        journal.record_intents(batch, [adj(1)])
    raw = sqlite3.connect(os.path.join(state_dir, JOURNAL_NAME))
    assert raw.execute("SELECT at FROM changes").fetchone() == ("2024-05-01T14:00:00.000005+00:00",)
    raw.close()
    assert batch.at == east


def test_naive_times_are_refused(journal: Journal) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        journal.changes(since=datetime(2024, 5, 1))


def test_reopened_journal_continues_ids(state_dir: str) -> None:
    with Journal.open(state_dir) as journal:
        assert run_batch(journal, BatchKind.COMMAND, [adj(1), adj(2)], [APPLIED, APPLIED]) == [1, 2]
    with Journal.open(state_dir) as journal:
        assert run_batch(journal, BatchKind.COMMAND, [adj(3)], [APPLIED]) == [3]
        assert [c.batch for c in journal.changes()] == [1, 1, 2]


def test_closed_journal_refuses_use(state_dir: str) -> None:
    with Journal.open(state_dir) as journal:
        pass
    with pytest.raises(OomlensError, match="closed"):
        journal.changes()


# Intent before outcome


def test_intent_is_committed_before_the_outcome(journal: Journal) -> None:
    batch = journal.begin_batch("root", "oomlens protect 7", BatchKind.COMMAND)
    [change_id] = journal.record_intents(batch, [adj(7)])
    with Journal.open(os.path.dirname(journal.path)) as other:
        seen = other.change(change_id)
        assert (seen.state, seen.outcome_at, seen.error) == (ChangeState.INTENT, None, None)
        journal.record_outcome(change_id, APPLIED)
        assert other.change(change_id).state == APPLIED


def _record_intent_then_die(state_dir: str) -> None:
    journal = Journal.open(state_dir)
    batch = journal.begin_batch("root", "oomlens protect 9", BatchKind.COMMAND)
    journal.record_intents(batch, [adj(9)])
    os._exit(0)


def test_crash_between_intent_and_outcome_leaves_an_intent(state_dir: str) -> None:
    child = multiprocessing.get_context("fork").Process(
        target=_record_intent_then_die, args=(state_dir,))
    child.start()
    child.join(60)
    assert child.exitcode == 0
    with Journal.open(state_dir) as journal:
        [change] = journal.changes()
        assert (change.state, change.pid, change.outcome_at) == (ChangeState.INTENT, 9, None)
        assert journal.undoable() == [change]


# Outcomes


def test_failed_outcome_keeps_the_error(journal: Journal) -> None:
    batch = journal.begin_batch("root", "oomlens protect 5", BatchKind.COMMAND)
    [change_id] = journal.record_intents(batch, [adj(5)])
    journal.record_outcome(change_id, FAILED, "permission denied on /proc/5/oom_score_adj")
    change = journal.change(change_id)
    assert (change.state, change.error) == (FAILED, "permission denied on /proc/5/oom_score_adj")
    assert change.outcome_at == T0 + 2 * SECOND
    assert journal.undoable() == []


def test_outcome_is_recorded_once(journal: Journal) -> None:
    [change_id] = run_batch(journal, BatchKind.COMMAND, [adj(5)], [APPLIED])
    with pytest.raises(OomlensError, match=r"change #1 already has an outcome \(applied\)"):
        journal.record_outcome(change_id, FAILED, "late")
    with pytest.raises(ValueError, match="APPLIED or FAILED"):
        journal.record_outcome(change_id, ChangeState.INTENT)
    assert journal.change(change_id).state == APPLIED


def test_unknown_ids_are_not_found(journal: Journal) -> None:
    with pytest.raises(NotFound) as err:
        journal.change(99)
    assert str(err.value) == f"no change #99 in the journal {journal.path}"
    with pytest.raises(NotFound, match="no change #98 in the journal"):
        journal.record_outcome(98, APPLIED)
    ghost = Batch(id=42, at=T0, actor="root", command="x", kind=BatchKind.COMMAND)
    with pytest.raises(NotFound, match="no batch #42 in the journal"):
        journal.record_intents(ghost, [adj(1)])


def test_intents_are_recorded_all_or_none(journal: Journal) -> None:
    batch = journal.begin_batch("root", "oomlens undo", BatchKind.UNDO)
    with pytest.raises(NotFound, match="no change #77"):
        journal.record_intents(batch, [adj(1), adj(2, undoes=77)])
    assert journal.changes() == []


# Undo bookkeeping


def test_applied_undo_marks_the_change_undone(journal: Journal) -> None:
    [original] = run_batch(journal, BatchKind.COMMAND, [adj(3, 0, -500)], [APPLIED])
    batch = journal.begin_batch("root", "oomlens undo", BatchKind.UNDO)
    [undo] = journal.record_intents(batch, [adj(3, -500, 0, undoes=original)])
    assert journal.change(original).undone_by is None
    journal.record_outcome(undo, APPLIED)
    assert journal.change(original).undone_by == undo
    assert (journal.change(undo).undoes, journal.change(undo).undone_by) == (original, None)
    assert journal.undoable() == []


def test_failed_undo_leaves_the_change_to_undo(journal: Journal) -> None:
    [original] = run_batch(journal, BatchKind.COMMAND, [adj(3)], [APPLIED])
    run_batch(journal, BatchKind.UNDO, [adj(3, -500, 0, undoes=original)], [FAILED])
    assert journal.change(original).undone_by is None
    assert ids(journal.undoable()) == [original]


def build_history(journal: Journal) -> None:
    """Batch 1 (command): 1, 2 applied. Batch 2 (policy): 3 failed, 4 unknown.
    Batch 3 (command): 5 applied, undone by 6 in batch 4 (undo). Batch 5: 7 failed."""
    assert run_batch(journal, BatchKind.COMMAND, [adj(1), adj(2)], [APPLIED, APPLIED]) == [1, 2]
    assert run_batch(journal, BatchKind.POLICY, [adj(3), adj(4)], [FAILED, None]) == [3, 4]
    assert run_batch(journal, BatchKind.COMMAND, [adj(5)], [APPLIED]) == [5]
    assert run_batch(journal, BatchKind.UNDO, [adj(5, -500, 0, undoes=5)], [APPLIED]) == [6]
    assert run_batch(journal, BatchKind.COMMAND, [adj(7)], [FAILED]) == [7]


def test_undoable_is_newest_first_without_failed_undone_or_undo_changes(
        journal: Journal) -> None:
    build_history(journal)
    undoable = journal.undoable()
    assert ids(undoable) == [4, 2, 1]
    assert [c.state for c in undoable] == [ChangeState.INTENT, APPLIED, APPLIED]


def test_undoable_last_batch_is_the_newest_batch_with_anything_to_undo(
        journal: Journal) -> None:
    build_history(journal)
    assert ids(journal.undoable(last_batch=True)) == [4]
    run_batch(journal, BatchKind.UNDO, [adj(4, -500, 0, undoes=4)], [APPLIED])
    assert ids(journal.undoable(last_batch=True)) == [2, 1]


def test_undoable_last_batch_means_the_batch_begun_last(journal: Journal) -> None:
    first = journal.begin_batch("root", "oomlens protect 1", BatchKind.COMMAND)
    second = journal.begin_batch("daemon", "enforce", BatchKind.POLICY)
    [late] = journal.record_intents(second, [adj(2)])
    [later] = journal.record_intents(first, [adj(1)])
    assert ids(journal.undoable(last_batch=True)) == [late]
    assert ids(journal.undoable()) == [later, late]


def test_undoable_since(journal: Journal) -> None:
    build_history(journal)
    batch_two_at = journal.change(3).at
    assert ids(journal.undoable(since=batch_two_at)) == [4]
    assert ids(journal.undoable(since=batch_two_at + timedelta(microseconds=1))) == []
    assert ids(journal.undoable(since=journal.change(1).at, last_batch=True)) == [4]
    assert ids(journal.undoable(since=T0 - SECOND)) == [4, 2, 1]


# Listing


def test_changes_filters(journal: Journal) -> None:
    build_history(journal)
    assert ids(journal.changes()) == [1, 2, 3, 4, 5, 6, 7]
    assert ids(journal.changes(batch=2)) == [3, 4]
    assert ids(journal.changes(pid=5)) == [5, 6]
    assert ids(journal.changes(since=journal.change(5).at)) == [5, 6, 7]
    assert ids(journal.changes(since=journal.change(3).at, pid=4)) == [4]
    assert [c.actor for c in journal.changes(batch=1)] == ["root", "root"]


def test_changes_limit_keeps_the_newest_oldest_first(journal: Journal) -> None:
    build_history(journal)
    assert ids(journal.changes(limit=2)) == [6, 7]
    assert ids(journal.changes(limit=1, batch=2)) == [4]
    assert ids(journal.changes(limit=50)) == [1, 2, 3, 4, 5, 6, 7]
    assert journal.changes(limit=0) == []
    with pytest.raises(ValueError, match="limit"):
        journal.changes(limit=-1)


# Two writers at once


def _write_many(state_dir: str, actor: str, count: int, start: Any, results: Any) -> None:
    try:
        start.wait(30)
        with Journal.open(state_dir) as journal:
            start.wait(30)
            for i in range(count):
                batch = journal.begin_batch(actor, f"oomlens protect {i}", BatchKind.COMMAND)
                intent = Intent(kind=ChangeKind.OOM_SCORE_ADJ, target=str(i), old="0",
                                new="-500", cause=f"{actor} {i}", pid=i)
                [change_id] = journal.record_intents(batch, [intent])
                journal.record_outcome(change_id, APPLIED)
        results.put((actor, "ok"))
    except BaseException as err:
        results.put((actor, f"{type(err).__name__}: {err}"))


def test_two_processes_write_at_once(state_dir: str) -> None:
    """Both open the (not yet existing) journal at the same moment, then both write."""
    context = multiprocessing.get_context("fork")
    start, results = context.Barrier(2), context.Queue()
    workers = [context.Process(target=_write_many, args=(state_dir, actor, 200, start, results))
               for actor in ("cli", "daemon")]
    for worker in workers:
        worker.start()
    outcomes = dict(results.get(timeout=180) for _ in workers)
    for worker in workers:
        worker.join(60)
    assert outcomes == {"cli": "ok", "daemon": "ok"}
    assert [worker.exitcode for worker in workers] == [0, 0]
    with Journal.open(state_dir) as journal:
        changes = journal.changes()
    assert ids(changes) == list(range(1, 401))
    assert sorted(c.batch for c in changes) == list(range(1, 401))
    assert {c.state for c in changes} == {APPLIED}
    for actor in ("cli", "daemon"):
        assert [c.cause for c in changes if c.actor == actor] == [
            f"{actor} {i}" for i in range(200)]


# The file: schema, foreign files, modes, permissions


def test_schema_version_wal_and_indexes(journal: Journal) -> None:
    raw = sqlite3.connect(journal.path)
    try:
        assert raw.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,) == (2,)
        assert raw.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        indexes = {name for (name,) in raw.execute(
            "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'changes'")}
    finally:
        raw.close()
    assert {"changes_pid", "changes_batch", "changes_at"} <= indexes


def test_a_version_1_journal_is_migrated_with_its_changes(state_dir: str) -> None:
    """A journal written by the oomlens before plans (version 1, its DDL as it was)
    keeps every row; its batches have no plan."""
    os.makedirs(state_dir)
    path = os.path.join(state_dir, JOURNAL_NAME)
    raw = sqlite3.connect(path)
    raw.execute("CREATE TABLE batches (id INTEGER PRIMARY KEY AUTOINCREMENT, at TEXT NOT NULL,"
                " actor TEXT NOT NULL, command TEXT NOT NULL, kind TEXT NOT NULL)")
    raw.execute("CREATE TABLE changes (id INTEGER PRIMARY KEY AUTOINCREMENT, batch INTEGER NOT"
                " NULL REFERENCES batches(id), at TEXT NOT NULL, outcome_at TEXT, kind TEXT NOT"
                " NULL, target TEXT NOT NULL, pid INTEGER, start_time_ticks INTEGER, boot_id"
                " TEXT, comm TEXT NOT NULL, cmdline TEXT NOT NULL, old TEXT, new TEXT, cause"
                " TEXT NOT NULL, state TEXT NOT NULL, error TEXT, undoes INTEGER REFERENCES"
                " changes(id), undone_by INTEGER REFERENCES changes(id))")
    raw.execute("INSERT INTO batches VALUES (1, ?, 'root', 'oomlens protect', 'command')",
                (T0.isoformat(timespec="microseconds"),))
    raw.execute("INSERT INTO changes (batch, at, kind, target, pid, comm, cmdline, old, new,"
                " cause, state) VALUES (1, ?, 'oom_score_adj', '7', 7, 'p', '', '0', '-5',"
                " 'c', 'applied')", (T0.isoformat(timespec="microseconds"),))
    raw.execute("PRAGMA user_version = 1")
    raw.commit()
    raw.close()
    with Journal.open(state_dir, clock=Clock()) as journal:
        [old] = journal.changes()
        assert (old.id, old.target, old.new, old.plan) == (1, "7", "-5", None)
        batch = journal.begin_batch("root", "oomlens apply p.toml", BatchKind.PLAN, plan="p1")
        assert batch.plan == "p1"
    raw = sqlite3.connect(path)
    try:
        assert raw.execute("PRAGMA user_version").fetchone() == (2,)
        assert raw.execute("SELECT id, plan FROM batches").fetchall() == [(1, None), (2, "p1")]
    finally:
        raw.close()


def test_changes_of_a_plan(journal: Journal) -> None:
    sysctl = Intent(kind=ChangeKind.SYSCTL, target="vm.swappiness", old="60", new="10",
                    cause="oomlens apply p.toml (plan p1: x)", boot_id="b00t")
    first = journal.begin_batch("root", "oomlens apply p.toml", BatchKind.PLAN, plan="p1")
    [one, two] = journal.record_intents(first, [sysctl, adj(7)])
    for change_id in (one, two):
        journal.record_outcome(change_id, ChangeState.APPLIED)
    run_batch(journal, BatchKind.COMMAND, [adj(8)], [ChangeState.APPLIED])
    again = journal.begin_batch("root", "oomlens apply p.toml", BatchKind.PLAN, plan="p1")
    [three] = journal.record_intents(again, [sysctl])
    assert journal.plan_applied("p1") and not journal.plan_applied("p2")
    assert [c.id for c in journal.undoable(plan="p1")] == [three, two, one]
    assert journal.change(one).plan == "p1" and journal.change(one).kind is ChangeKind.SYSCTL
    assert journal.undoable(plan="p2") == []


def test_newer_schema_is_refused_and_untouched(state_dir: str) -> None:
    os.makedirs(state_dir)
    path = os.path.join(state_dir, JOURNAL_NAME)
    raw = sqlite3.connect(path)
    raw.execute("CREATE TABLE changes_v3 (id INTEGER PRIMARY KEY)")
    raw.execute("PRAGMA user_version = 3")
    raw.commit()
    raw.close()
    before = Path(path).read_bytes()
    with pytest.raises(OomlensError) as err:
        Journal.open(state_dir)
    assert str(err.value) == (f"journal {path} has schema version 3, this oomlens knows up to 2:"
                              " upgrade oomlens")
    assert Path(path).read_bytes() == before
    assert not os.path.exists(path + "-wal")


@pytest.mark.parametrize("content", [
    b"x",
    b"#!/bin/sh\necho this is not a journal\n" * 40,
    b"\0" * 4096,
    b"SQLite format 3\0" + bytes(range(256)) * 4,
], ids=["one-byte", "script", "zeros", "bad-pages"])
def test_foreign_file_is_refused_naming_it(state_dir: str, content: bytes) -> None:
    os.makedirs(state_dir)
    path = os.path.join(state_dir, JOURNAL_NAME)
    Path(path).write_bytes(content)
    with pytest.raises(OomlensError) as err:
        Journal.open(state_dir)
    assert str(err.value) == f"{path} is not an oomlens journal: it is not an SQLite database"
    assert Path(path).read_bytes() == content


def test_state_dir_that_is_a_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "state").write_text("a file\n")
    with pytest.raises(OomlensError) as err:
        Journal.open(str(tmp_path / "state"))
    assert not isinstance(err.value, AccessDenied)
    assert str(err.value) == f"cannot open the journal at {tmp_path / 'state'}: Not a directory"


def mode(path: Path | str) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.mark.parametrize("umask", [0o000, 0o022, 0o277])
def test_created_directories_and_files_are_private(tmp_path: Path, umask: int) -> None:
    state = tmp_path / "var" / "lib" / "oomlens"
    old_umask = os.umask(umask)
    try:
        with Journal.open(str(state)) as journal:
            run_batch(journal, BatchKind.COMMAND, [adj(1)], [APPLIED])
            wal_mode = mode(journal.path + "-wal")
    finally:
        os.umask(old_umask)
    assert [mode(d) for d in (tmp_path / "var", tmp_path / "var" / "lib", state)] == [0o700] * 3
    assert mode(state / JOURNAL_NAME) == 0o600
    assert wal_mode == 0o600


def test_existing_state_dir_keeps_its_mode(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    state.chmod(0o750)
    Journal.open(str(state)).close()
    assert mode(state) == 0o750


@pytest.fixture
def locked_dir() -> Iterator[Path]:
    """A directory `nobody` can enter but not write: tmp_path's parents are 0o700."""
    top = Path(tempfile.mkdtemp(prefix="oomlens-journal-"))
    try:
        top.chmod(0o755)
        (top / "locked").mkdir(mode=0o755)
        yield top / "locked"
    finally:
        (top / "locked").chmod(0o755)
        shutil.rmtree(top)


def _open_unprivileged(state_dir: str, results: Any) -> None:
    try:
        if os.geteuid() == 0:
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
    except OSError as err:
        results.put(("cannot drop privileges", str(err), ""))
        return
    try:
        Journal.open(state_dir).close()
        results.put(("opened", "", ""))
    except AccessDenied as err:
        results.put(("denied", err.path, str(err)))
    except BaseException as err:
        results.put((type(err).__name__, "", str(err)))


@pytest.mark.parametrize("existing", [False, True], ids=["new-state-dir", "root-journal"])
def test_permission_denied_is_access_denied(locked_dir: Path, existing: bool) -> None:
    """The kernel refuses for real: a child drops to `nobody` (root ignores modes)."""
    state = locked_dir / "state"
    if existing:
        Journal.open(str(state)).close()
    if os.geteuid() != 0:
        locked_dir.chmod(0o555)
    context = multiprocessing.get_context("fork")
    results = context.Queue()
    child = context.Process(target=_open_unprivileged, args=(str(state), results))
    child.start()
    outcome, path, message = results.get(timeout=60)
    child.join(60)
    if outcome == "cannot drop privileges":
        pytest.skip(f"cannot become nobody here: {path}")
    denied = str(state / JOURNAL_NAME) if existing else str(state)
    assert (outcome, path) == ("denied", denied)
    assert message.startswith(f"permission denied on {denied}: the journal must be writable")
