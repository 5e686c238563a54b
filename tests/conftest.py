"""Shared pytest fixtures.

``db_url`` (results-database tests of tests/store and tests/review): an empty
database on SQLite, and on PostgreSQL when ``LESIONQ_TEST_POSTGRES_URL`` is set
(``eval "$(.ci/postgres.sh)"`` starts a throwaway server and prints it); each
PostgreSQL test gets its own schema (the URL's ``search_path``), dropped
afterwards. Without the variable those cases skip, unless
``LESIONQ_REQUIRE_POSTGRES=1``, where they fail.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from lesionq.store.engine import normalise_url

os.environ.setdefault("NIPYPE_NO_ET", "1")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = (REPO / ".." / "shared" / "data" / "ljubljana").resolve()


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Path to the real Ljubljana BIDS subset in ``../shared/data``; skips when absent."""
    if not (SHARED_DATA / "dataset_description.json").is_file():
        pytest.skip(
            f"real data not available at {SHARED_DATA} (only present in the project's CI "
            "and dev machines; a fresh clone has it not)"
        )
    return SHARED_DATA


@pytest.fixture(scope="session")
def repo_root() -> Path:
    """Repository root."""
    return REPO


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
