"""The doctor's unit tests run on a fake machine (tests/fixtures/fakemachine.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from fakemachine import FakeMachine


@pytest.fixture
def machine(tmp_path: Path) -> FakeMachine:
    return FakeMachine(tmp_path)
