"""Database URLs, engines with the connection set-up of lesionq, and migrations.

* SQLite: WAL journal, ``busy_timeout`` of :data:`BUSY_TIMEOUT_S`, foreign keys
  on, and ``BEGIN IMMEDIATE`` for write transactions (connections whose execution
  option ``lesionq_write`` is true), so two processes writing at once queue for
  the write lock instead of failing.
* PostgreSQL: ``postgresql://`` is read as ``postgresql+psycopg://`` (psycopg 3).
* Migrations (Alembic, from :mod:`lesionq.store.migrations`) run in one
  transaction holding the write lock (SQLite) or an advisory lock (PostgreSQL).
"""

from __future__ import annotations

import logging
import sqlite3
import time
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util.exc import CommandError
from sqlalchemy import event

from ..errors import ConfigError

__all__ = [
    "DEFAULT_SQLITE_NAME",
    "BUSY_TIMEOUT_S",
    "HEAD_REVISION",
    "normalise_url",
    "create_store_engine",
    "alembic_config",
    "current_revision",
    "head_revision",
    "upgrade",
    "retryable",
]

LOGGER = logging.getLogger(__name__)

#: File name of the default SQLite database inside the output folder.
DEFAULT_SQLITE_NAME = "lesionq.sqlite"
#: How long a SQLite writer waits for the write lock of another process (seconds).
BUSY_TIMEOUT_S = 30.0
#: Target of :func:`upgrade`: the newest migration of this package's chain.
HEAD_REVISION = "head"
#: PostgreSQL advisory lock keys (arbitrary 63-bit constants).
LOCK_MIGRATIONS = 0x6C65_7369_6F6E_0001
LOCK_ENDPOINTS = 0x6C65_7369_6F6E_0002
_MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"


def normalise_url(url: str | sa.URL) -> sa.URL:
    """Parse a database URL; ``postgresql://`` gets the installed driver (psycopg 3).

    Examples
    --------
    >>> normalise_url("postgresql://u:secret@db.example/trial").drivername
    'postgresql+psycopg'
    >>> normalise_url("sqlite:///out/lesionq.sqlite").database
    'out/lesionq.sqlite'
    """
    try:
        u = sa.make_url(url)
    except sa.exc.ArgumentError as exc:
        raise ConfigError(f"results database: cannot parse URL {url!r}: {exc}") from exc
    if u.drivername in ("postgresql", "postgres"):
        u = u.set(drivername="postgresql+psycopg")
    if u.get_backend_name() not in ("sqlite", "postgresql"):
        raise ConfigError(
            f"results database: {u.render_as_string(hide_password=True)}: only SQLite "
            "(sqlite:///path) and PostgreSQL (postgresql://...) are supported"
        )
    return u


def _set_wal(cur: Any) -> str:
    """Switch the file to WAL (persistent), retrying while another process holds it.

    The switch needs the file to itself and SQLite does not always call the busy
    handler for it: two processes opening a new database at once would see
    "database is locked". Once one of them has switched, the mode is read, not set.
    """
    deadline = time.monotonic() + BUSY_TIMEOUT_S
    delay = 0.01
    while True:
        try:
            mode = str(cur.execute("PRAGMA journal_mode").fetchone()[0])
            if mode.lower() == "wal":
                return mode
            return str(cur.execute("PRAGMA journal_mode = WAL").fetchone()[0])
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(delay)
            delay = min(0.5, delay * 2)


def _on_sqlite_connect(dbapi_conn: Any, _record: Any) -> None:
    dbapi_conn.isolation_level = None  # transactions are begun by _on_sqlite_begin
    cur = dbapi_conn.cursor()
    try:
        cur.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
        cur.execute("PRAGMA foreign_keys = ON")
        mode = _set_wal(cur)
        if str(mode).lower() != "wal":
            raise ConfigError(
                f"results database: SQLite refused WAL journal mode (got {mode!r}); is the "
                "file on a network file system? Use PostgreSQL for shared storage"
            )
        cur.execute("PRAGMA synchronous = NORMAL")
    finally:
        cur.close()


def _on_sqlite_begin(conn: sa.Connection) -> None:
    write = conn.get_execution_options().get("lesionq_write", False)
    conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")


def create_store_engine(url: str | sa.URL) -> sa.Engine:
    """Engine for the results database with the connection set-up described above.

    Parameters
    ----------
    url : str or sqlalchemy.URL
        ``sqlite:///path/file.sqlite`` (the folder must exist) or
        ``postgresql://user:password@host:port/database``.
    """
    u = normalise_url(url)
    if u.get_backend_name() == "sqlite":
        if not u.database or u.database == ":memory:" or u.database.startswith("file:"):
            raise ConfigError(
                f"results database: {u}: give a SQLite file (sqlite:///path/lesionq.sqlite); "
                "in-memory databases are not shared between processes"
            )
        folder = Path(u.database).parent
        if not folder.is_dir():
            raise ConfigError(f"results database: folder {folder} of {u.database} does not exist")
        engine = sa.create_engine(u, connect_args={"timeout": BUSY_TIMEOUT_S})
        event.listen(engine, "connect", _on_sqlite_connect)
        event.listen(engine, "begin", _on_sqlite_begin)
        return engine
    return sa.create_engine(u, pool_pre_ping=True)


def alembic_config(url_or_connection: str | sa.URL | sa.Connection) -> Any:
    """Alembic ``Config`` for this package's migrations (no ``alembic.ini`` needed).

    Give a connection (used as is, inside its transaction) or a URL.
    """
    cfg = Config()
    cfg.set_main_option("script_location", str(_MIGRATIONS_DIR).replace("%", "%%"))
    cfg.set_main_option("path_separator", "os")
    if isinstance(url_or_connection, sa.Connection):
        cfg.attributes["connection"] = url_or_connection
    else:
        u = normalise_url(url_or_connection)
        cfg.set_main_option(
            "sqlalchemy.url", u.render_as_string(hide_password=False).replace("%", "%%")
        )
    return cfg


def current_revision(engine: sa.Engine) -> str | None:
    """The Alembic revision the database is at (None for an empty database)."""
    with engine.connect() as conn:
        rev = MigrationContext.configure(conn).get_current_revision()
        conn.rollback()
    return rev


def head_revision() -> str:
    """The newest revision of this package's migrations (e.g. ``"0001_initial"``)."""
    head = ScriptDirectory.from_config(alembic_config("sqlite:///unused.sqlite")).get_current_head()
    if head is None:  # pragma: no cover - the package ships its migrations
        raise ConfigError(f"results database: no migrations found in {_MIGRATIONS_DIR}")
    return head


def upgrade(engine: sa.Engine, revision: str = HEAD_REVISION) -> None:
    """Bring the schema to ``revision`` (default: the newest); idempotent.

    Safe when several processes open the same database at once: the migration
    runs in one transaction that holds the database's write lock (SQLite
    ``BEGIN IMMEDIATE``) or an advisory lock (PostgreSQL); the others wait,
    then find the schema up to date.
    """
    if revision == HEAD_REVISION and current_revision(engine) == head_revision():
        return
    with engine.connect() as conn:
        conn.execution_options(lesionq_write=True)
        with conn.begin():
            if conn.dialect.name == "postgresql":
                conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": LOCK_MIGRATIONS})
            try:
                command.upgrade(alembic_config(conn), revision)
            except CommandError as exc:
                raise ConfigError(
                    f"results database {engine.url.render_as_string(hide_password=True)}: "
                    f"cannot migrate to {revision!r} ({exc}); was it created by a newer lesionq?"
                ) from exc
    LOGGER.info(
        "results database %s at revision %s",
        engine.url.render_as_string(hide_password=True),
        current_revision(engine),
    )


def retryable(exc: sa.exc.DBAPIError) -> bool:
    """True for errors after which a write transaction may simply be run again.

    PostgreSQL serialization failures, deadlocks and lock time-outs; SQLite
    "database is locked" once the busy timeout has run out.
    """
    code = getattr(exc.orig, "sqlstate", None)
    if code in ("40001", "40P01", "55P03"):  # serialization failure, deadlock, lock not available
        return True
    msg = str(exc.orig).lower()
    return "database is locked" in msg or "database is busy" in msg
