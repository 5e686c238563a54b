"""Alembic environment of the results database.

Alembic executes this file while upgrading. :func:`lesionq.store.db.upgrade`
passes an open connection (already inside a transaction that holds the
migration lock) in ``config.attributes["connection"]``; a plain ``alembic``
command line may instead give ``-x url=...`` or ``sqlalchemy.url``.

Importing this module outside Alembic (e.g. ``pytest --doctest-modules``) does
nothing.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import context

from lesionq.store.engine import create_store_engine
from lesionq.store.models import Base


def _run(connection: sa.Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations(config: Any) -> None:
    """Run the pending migrations on the connection or URL that ``config`` names."""
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    url = context.get_x_argument(as_dictionary=True).get("url") or config.get_main_option(
        "sqlalchemy.url"
    )
    if not url:
        raise RuntimeError("lesionq migrations: give -x url=<database URL> or sqlalchemy.url")
    engine = create_store_engine(url)
    try:
        with engine.connect() as conn:
            _run(conn)
            conn.commit()
    finally:
        engine.dispose()


_config: Any
try:
    _config = context.config
except AttributeError:  # imported outside Alembic
    _config = None

if _config is not None:
    run_migrations(_config)
