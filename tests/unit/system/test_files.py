"""system/files.py: the files oomlens owns, replaced atomically and removed without
taking a directory that holds them along."""

from __future__ import annotations

import os
from pathlib import Path

from oomlens.system.files import read_optional, remove, write_atomic


def test_write_then_remove_restores_absence_and_keeps_the_directory(tmp_path: Path) -> None:
    sysctl_d = tmp_path / "sysctl.d"  # a system directory that happens to be empty
    sysctl_d.mkdir()
    path = str(sysctl_d / "90-oomlens-abc.conf")
    write_atomic(path, "vm.swappiness = 10\n", mode=0o640)
    assert read_optional(path) == "vm.swappiness = 10\n"
    assert os.stat(path).st_mode & 0o777 == 0o640
    assert [p.name for p in sysctl_d.iterdir()] == ["90-oomlens-abc.conf"]  # no temp left
    remove(path)
    remove(path)  # already gone: fine
    assert read_optional(path) is None
    assert sysctl_d.is_dir()


def test_a_drop_in_directory_is_pruned_when_asked_and_left_empty_otherwise(
        tmp_path: Path) -> None:
    unit_d = tmp_path / "foo.service.d"
    path = str(unit_d / "50-oomlens-oom.conf")
    write_atomic(path, "[Service]\nOOMScoreAdjust=-500\n")
    remove(path, prune_directory=True)
    assert not unit_d.exists()
    write_atomic(path, "x")
    (unit_d / "other.conf").write_text("y")
    remove(path, prune_directory=True)  # not empty: stays
    assert [p.name for p in unit_d.iterdir()] == ["other.conf"]
