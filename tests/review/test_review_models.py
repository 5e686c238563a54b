"""The review tables: migration 0002_review matches the models, and goes down and up."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from lesionq.review.models import REVIEW_TABLES, metadata
from lesionq.store import ResultsDB, alembic_config, current_revision
from lesionq.store.engine import head_revision


def test_models_match_migration(db_url: str) -> None:
    db = ResultsDB.open(db_url)
    try:
        assert current_revision(db.engine) == head_revision()
        assert set(REVIEW_TABLES) <= set(sa.inspect(db.engine).get_table_names())

        def include(obj, name, type_, reflected, compare_to):  # noqa: ANN001, ANN202
            table = obj if type_ == "table" else getattr(obj, "table", None)
            return table is None or table.name in REVIEW_TABLES

        with db.engine.connect() as conn:
            mc = MigrationContext.configure(
                conn, opts={"compare_type": True, "include_object": include}
            )
            diffs = compare_metadata(mc, metadata)
        assert diffs == []
    finally:
        db.close()


def test_downgrade_to_0001_and_up_again(db_url: str) -> None:
    db = ResultsDB.open(db_url)
    try:
        with db.engine.connect() as conn:
            with conn.begin():
                command.downgrade(alembic_config(conn), "0001_initial")
        names = set(sa.inspect(db.engine).get_table_names())
        assert not set(REVIEW_TABLES) & names and "audit_log" in names
        with db.engine.connect() as conn:
            with conn.begin():
                command.upgrade(alembic_config(conn), "head")
        assert set(REVIEW_TABLES) <= set(sa.inspect(db.engine).get_table_names())
    finally:
        db.close()
