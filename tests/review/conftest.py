"""Fixtures of the review-app tests: a synthetic output folder and results database.

``env`` runs on SQLite, and on PostgreSQL when ``LESIONQ_TEST_POSTGRES_URL`` is
set (as in tests/store: each test gets its own schema; skipped without the
variable unless ``LESIONQ_REQUIRE_POSTGRES=1``). ``env_sqlite`` is SQLite only.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from fastapi import FastAPI
from fastapi.testclient import TestClient
from review_helpers import ReviewEnv, build

from lesionq.review import create_app
from lesionq.store import normalise_url

PG_ENV = "LESIONQ_TEST_POSTGRES_URL"
REQUIRE_ENV = "LESIONQ_REQUIRE_POSTGRES"
PG_SKIP_REASON = (
    "PostgreSQL not available: set LESIONQ_TEST_POSTGRES_URL (.ci/run starts a server with "
    ".ci/postgres.sh)"
)


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """URL of an empty database: a SQLite file, or a fresh PostgreSQL schema."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'lesionq.sqlite'}"
        return
    url = os.environ.get(PG_ENV)
    if not url:
        if os.environ.get(REQUIRE_ENV) == "1":
            pytest.fail(f"{REQUIRE_ENV}=1 but {PG_ENV} is not set", pytrace=False)
        pytest.skip(PG_SKIP_REASON)
    base = normalise_url(url)
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(base, poolclass=sa.pool.NullPool)
    try:
        with admin.begin() as conn:
            conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
    except sa.exc.OperationalError as exc:
        admin.dispose()
        if os.environ.get(REQUIRE_ENV) == "1":
            raise
        pytest.skip(f"{PG_SKIP_REASON}; connecting to {base!r} failed: {exc.orig}")
    scoped = base.update_query_dict({"options": f"-csearch_path={schema}"})
    try:
        yield scoped.render_as_string(hide_password=False)
    finally:
        with admin.begin() as conn:
            conn.exec_driver_sql(f'DROP SCHEMA "{schema}" CASCADE')
        admin.dispose()


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
