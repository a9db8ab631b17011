"""Every store test runs on both databases: a fresh SQLite file in tmp_path and a
fresh PostgreSQL database (tests/conftest.py: postgres_db_url)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from oomlens.store.db import Store, default_store_url, open_store


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return default_store_url(str(tmp_path / "state"))
    url: str = request.getfixturevalue("postgres_db_url")
    return url


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    with open_store(store_url) as opened:
        yield opened
