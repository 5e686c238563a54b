"""Fixtures of the results-database tests: one database per test, on SQLite and PostgreSQL.

``db_url`` (SQLite, and PostgreSQL when ``LESIONQ_TEST_POSTGRES_URL`` is set) comes
from tests/conftest.py.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from lesionq.store import ResultsDB


@pytest.fixture
def db(db_url: str) -> Iterator[ResultsDB]:
    """An opened (migrated) results database."""
    store = ResultsDB.open(db_url)
    try:
        yield store
    finally:
        store.close()
