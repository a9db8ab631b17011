"""system/psi.py: /proc/pressure/memory (kernel/sched/psi.c: psi_show()) on a real 6.18
file and variants."""

from __future__ import annotations

from pathlib import Path

import pytest
from fakeproc import REAL_DIR, write_fake_proc

from oomlens.system.psi import Pressure, PressureLine, parse_psi, read_memory_pressure

BUSY = (
    "some avg10=12.34 avg60=5.67 avg300=0.89 total=123456789\n"
    "full avg10=1.50 avg60=0.25 avg300=0.01 total=4567890\n"
)


def test_parse_real_file() -> None:
    pressure = parse_psi((REAL_DIR / "pressure_memory").read_text())
    assert pressure == Pressure(
        some=PressureLine(0.0, 0.0, 0.0, 796),
        full=PressureLine(0.0, 0.0, 0.0, 668),
    )


def test_parse_values() -> None:
    pressure = parse_psi(BUSY)
    assert pressure.some == PressureLine(12.34, 5.67, 0.89, 123_456_789)
    assert pressure.full == PressureLine(1.5, 0.25, 0.01, 4_567_890)


def test_no_full_line() -> None:
    # /proc/pressure/cpu before 5.13 has only "some".
    pressure = parse_psi("some avg10=0.10 avg60=0.20 avg300=0.30 total=42\n")
    assert pressure.some == PressureLine(0.1, 0.2, 0.3, 42)
    assert pressure.full is None


@pytest.mark.parametrize("text", ["", "full avg10=0.00 avg60=0.00 avg300=0.00 total=0\n"])
def test_no_some_line_is_an_error(text: str) -> None:
    with pytest.raises(ValueError, match="some"):
        parse_psi(text)


def test_read_memory_pressure(tmp_path: Path) -> None:
    root = write_fake_proc(tmp_path / "proc", pressure=BUSY)
    pressure = read_memory_pressure(str(root))
    assert pressure is not None
    assert pressure.some.avg10 == 12.34
    assert pressure.full is not None
    assert pressure.full.total_us == 4_567_890


def test_read_memory_pressure_missing_file_is_none(tmp_path: Path) -> None:
    # CONFIG_PSI off or psi=0 on the command line: no /proc/pressure at all.
    root = write_fake_proc(tmp_path / "proc", pressure=None)
    assert not (root / "pressure").exists()
    assert read_memory_pressure(str(root)) is None


def test_read_memory_pressure_empty_file_is_none(tmp_path: Path) -> None:
    root = write_fake_proc(tmp_path / "proc", pressure="")
    assert read_memory_pressure(str(root)) is None


def test_read_memory_pressure_garbage_is_none(tmp_path: Path) -> None:
    root = write_fake_proc(tmp_path / "proc", pressure="nonsense\n")
    assert read_memory_pressure(str(root)) is None
