"""Shared pytest fixtures.

``chromium`` (browser tests of tests/qc, tests/review and the end-to-end test):
opens Debian's headless ``/usr/bin/chromium`` through Playwright (no ``playwright
install``); skips when the browser or the ``playwright`` package is missing, unless
``LESIONQ_REQUIRE_BROWSER=1``, where it fails. ``keep_artifacts`` copies screenshots
to ``$LESIONQ_TEST_ARTIFACTS`` (``1``: the repository's ``test-artifacts/``).

``db_url`` (results-database tests of tests/store and tests/review): an empty
database on SQLite, and on PostgreSQL when ``LESIONQ_TEST_POSTGRES_URL`` is set
(``eval "$(.ci/postgres.sh)"`` starts a throwaway server and prints it); each
PostgreSQL test gets its own schema (the URL's ``search_path``), dropped
afterwards. Without the variable those cases skip, unless
``LESIONQ_REQUIRE_POSTGRES=1``, where they fail.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from collections.abc import Callable, Iterator
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


CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def _require_browser(reason: str) -> None:
    if os.environ.get("LESIONQ_REQUIRE_BROWSER") == "1":
        pytest.fail(f"LESIONQ_REQUIRE_BROWSER=1 but {reason}", pytrace=False)
    pytest.skip(f"{reason}; browser test skipped")


@pytest.fixture(scope="session")
def chromium() -> Callable[[], contextlib.AbstractContextManager]:
    """``with chromium() as browser:`` a headless Debian Chromium (Playwright ``Browser``)."""
    if not CHROMIUM.is_file():
        _require_browser(f"{CHROMIUM} not found (Debian package 'chromium')")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _require_browser("the playwright Python package is not installed")

    @contextlib.contextmanager
    def open_browser() -> Iterator:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(
                executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
            )
            try:
                yield browser
            finally:
                browser.close()

    return open_browser


def watch_page(page) -> tuple[list[str], list[str]]:  # noqa: ANN001
    """Collect a Playwright page's console messages and page errors, and failed requests."""
    messages: list[str] = []
    failed: list[str] = []
    page.on("console", lambda m: messages.append(f"{m.type}: {m.text}"))
    page.on("pageerror", lambda e: messages.append(f"pageerror: {e}"))
    page.on("requestfailed", lambda r: failed.append(f"{r.url} {r.failure}"))
    return messages, failed


@pytest.fixture(scope="session")
def page_watcher() -> Callable[..., tuple[list[str], list[str]]]:
    """:func:`watch_page` as a fixture (test modules cannot import conftest in importlib mode)."""
    return watch_page


@pytest.fixture(scope="session")
def keep_artifacts() -> Callable[..., None]:
    """``keep_artifacts(*files, folder="")``: copy files to the test-artifacts folder, if set."""

    def keep(*files: Path, folder: str = "") -> None:
        value = os.environ.get("LESIONQ_TEST_ARTIFACTS")
        if not value:
            return
        dest = (REPO / "test-artifacts" if value == "1" else Path(value)) / folder
        dest.mkdir(parents=True, exist_ok=True)
        for f in files:
            shutil.copy2(f, dest / Path(f).name)

    return keep


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
