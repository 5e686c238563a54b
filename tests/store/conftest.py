"""Fixtures of the results-database tests: one database per test, on SQLite and PostgreSQL.

PostgreSQL runs when ``LESIONQ_TEST_POSTGRES_URL`` is set (``eval "$(.ci/postgres.sh)"``
starts a throwaway server and prints it); each test gets its own schema (the
URL's ``search_path``), dropped afterwards. Without the variable those tests
skip, unless ``LESIONQ_REQUIRE_POSTGRES=1``, where they fail.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from lesionq.store import ResultsDB
from lesionq.store.engine import normalise_url

PG_ENV = "LESIONQ_TEST_POSTGRES_URL"
REQUIRE_ENV = "LESIONQ_REQUIRE_POSTGRES"
PG_SKIP_REASON = (
    "PostgreSQL not available: set LESIONQ_TEST_POSTGRES_URL (.ci/run starts a server with "
    ".ci/postgres.sh)"
)


def _postgres_base_url() -> str:
    url = os.environ.get(PG_ENV)
    if not url:
        if os.environ.get(REQUIRE_ENV) == "1":
            pytest.fail(f"{REQUIRE_ENV}=1 but {PG_ENV} is not set", pytrace=False)
        pytest.skip(PG_SKIP_REASON)
    return url


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """URL of an empty database: a SQLite file, or a fresh PostgreSQL schema."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'lesionq.sqlite'}"
        return
    base = normalise_url(_postgres_base_url())
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
    url = base.update_query_dict({"options": f"-csearch_path={schema}"})
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        with admin.begin() as conn:
            conn.exec_driver_sql(f'DROP SCHEMA "{schema}" CASCADE')
        admin.dispose()


@pytest.fixture
def db(db_url: str) -> Iterator[ResultsDB]:
    """An opened (migrated) results database."""
    store = ResultsDB.open(db_url)
    try:
        yield store
    finally:
        store.close()
