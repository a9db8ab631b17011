"""policy/undo.py for sysctl changes, on a fake /proc/sys: the old value put back and
journaled, a value changed since skipped unless forced, a dry run that writes nothing.
(Processes and files: tests/kernel/test_protect_real.py and the doctor's apply tests.)"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from oomlens.policy.apply import Result
from oomlens.policy.journal import BatchKind, Change, ChangeKind, ChangeState, Intent, Journal
from oomlens.policy.undo import UndoContext, undo_changes


@pytest.fixture
def proc(tmp_path: Path) -> Path:
    (tmp_path / "proc" / "sys" / "vm").mkdir(parents=True)
    return tmp_path / "proc"


@pytest.fixture
def journal(tmp_path: Path) -> Iterator[Journal]:
    with Journal.open(str(tmp_path / "state")) as opened:
        yield opened


def applied(journal: Journal, proc: Path, old: str | None, new: str) -> Change:
    """vm.swappiness changed old -> new, as `oomlens apply` records it."""
    (proc / "sys" / "vm" / "swappiness").write_text(f"{new}\n")
    batch = journal.begin_batch("root", "oomlens apply p.toml", BatchKind.PLAN, plan="p1")
    [change_id] = journal.record_intents(batch, [Intent(
        kind=ChangeKind.SYSCTL, target="vm.swappiness", old=old, new=new, cause="apply")])
    journal.record_outcome(change_id, ChangeState.APPLIED)
    return journal.change(change_id)


def undo(journal: Journal, proc: Path, change: Change, **options: bool) -> Result:
    dry = options.get("dry_run", False)
    batch = None if dry else journal.begin_batch("root", "oomlens undo", BatchKind.UNDO)
    [restore] = undo_changes([change], UndoContext(journal, batch, "b00t", str(proc), **options))
    return restore.result


def value(proc: Path) -> str:
    return (proc / "sys" / "vm" / "swappiness").read_text()


def test_restores_and_journals(journal: Journal, proc: Path) -> None:
    change = applied(journal, proc, "60", "10")
    assert undo(journal, proc, change) is Result.APPLIED
    assert value(proc) == "60\n"
    restore = journal.changes()[-1]
    assert (restore.kind, restore.old, restore.new, restore.undoes) == (
        ChangeKind.SYSCTL, "10", "60", change.id)
    assert journal.change(change.id).undone_by == restore.id


def test_changed_since_is_skipped_unless_forced(journal: Journal, proc: Path) -> None:
    change = applied(journal, proc, "60", "10")
    (proc / "sys" / "vm" / "swappiness").write_text("30\n")
    assert undo(journal, proc, change) is Result.CHANGED
    assert value(proc) == "30\n"
    assert undo(journal, proc, change, force=True) is Result.APPLIED
    assert value(proc) == "60\n"


def test_dry_run_and_a_missing_old_value(journal: Journal, proc: Path) -> None:
    change = applied(journal, proc, "60", "10")
    assert undo(journal, proc, change, dry_run=True) is Result.PLANNED
    assert value(proc) == "10\n"
    assert undo(journal, proc, applied(journal, proc, None, "10")) is Result.FAILED
