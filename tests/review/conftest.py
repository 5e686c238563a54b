"""Fixtures of the review-app tests: a synthetic output folder and results database.

``env`` runs on SQLite, and on PostgreSQL when ``LESIONQ_TEST_POSTGRES_URL`` is
set (``db_url`` of tests/conftest.py: each test gets its own schema; skipped
without the variable unless ``LESIONQ_REQUIRE_POSTGRES=1``). ``env_sqlite`` is SQLite only.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from review_helpers import ReviewEnv, build

from lesionq.review import create_app


@pytest.fixture
def env(db_url: str, tmp_path: Path) -> Iterator[ReviewEnv]:
    """Two recorded visits with images, four accounts (SQLite and PostgreSQL)."""
    e = build(db_url, tmp_path / "out")
    try:
        yield e
    finally:
        e.db.close()


@pytest.fixture
def env_sqlite(tmp_path: Path) -> Iterator[ReviewEnv]:
    """As ``env``, SQLite only."""
    e = build(f"sqlite:///{tmp_path / 'lesionq.sqlite'}", tmp_path / "out")
    try:
        yield e
    finally:
        e.db.close()


@pytest.fixture
def app(env_sqlite: ReviewEnv) -> Iterator[FastAPI]:
    """The review app on ``env_sqlite`` (2 readers required)."""
    a = create_app(env_sqlite.url, env_sqlite.out)
    yield a
    a.state.db.close()


@pytest.fixture
def clients(app: FastAPI) -> Iterator[Callable[[], TestClient]]:
    """``clients() -> TestClient``: a new browser (own cookie jar) on ``app``."""
    made: list[TestClient] = []

    def make() -> TestClient:
        c = TestClient(app)
        made.append(c)
        return c

    yield make
    for c in made:
        c.close()
