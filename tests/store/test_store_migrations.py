"""Migrations: from empty to head on SQLite and PostgreSQL, idempotent, models in step."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from lesionq.errors import ConfigError
from lesionq.store import ResultsDB, alembic_config, create_store_engine, current_revision
from lesionq.store.models import Base

TABLES = {
    "subjects",
    "visits",
    "runs",
    "visit_results",
    "scans",
    "lesions",
    "endpoints",
    "ledger",
    "audit_log",
}


def test_chain_is_linear_and_starts_at_0001() -> None:
    scripts = ScriptDirectory.from_config(alembic_config("sqlite:///unused.sqlite"))
    assert len(scripts.get_heads()) == 1
    assert scripts.get_bases() == ["0001_initial"]
    revs = list(scripts.walk_revisions())
    assert revs[-1].revision == "0001_initial"
    assert all(r.down_revision is None or isinstance(r.down_revision, str) for r in revs)


def test_upgrade_from_empty_creates_every_table(db_url: str) -> None:
    engine = create_store_engine(db_url)
    try:
        assert current_revision(engine) is None
        assert not TABLES & set(sa.inspect(engine).get_table_names())
    finally:
        engine.dispose()
    db = ResultsDB.open(db_url)
    try:
        names = set(sa.inspect(db.engine).get_table_names())
        assert TABLES <= names
        head = ScriptDirectory.from_config(alembic_config(db_url)).get_current_head()
        assert current_revision(db.engine) == head
        idx = {i["name"]: i for i in sa.inspect(db.engine).get_indexes("visit_results")}
        assert idx["uq_visit_results_current"]["unique"]
    finally:
        db.close()
    # a second open is a no-op
    db2 = ResultsDB.open(db_url)
    try:
        assert current_revision(db2.engine) == head
    finally:
        db2.close()


def test_models_match_migrations(db_url: str) -> None:
    db = ResultsDB.open(db_url)
    try:
        ours = set(Base.metadata.tables)

        def include(obj, name, type_, reflected, compare_to):  # noqa: ANN001, ANN202
            table = obj if type_ == "table" else getattr(obj, "table", None)
            return table is None or table.name in ours

        with db.engine.connect() as conn:
            mc = MigrationContext.configure(
                conn, opts={"compare_type": True, "include_object": include}
            )
            diffs = compare_metadata(mc, Base.metadata)
        assert diffs == []
    finally:
        db.close()


def test_downgrade_to_base_and_up_again(db_url: str) -> None:
    db = ResultsDB.open(db_url)
    try:
        with db.engine.connect() as conn:
            with conn.begin():
                command.downgrade(alembic_config(conn), "base")
        assert not TABLES & set(sa.inspect(db.engine).get_table_names())
        with db.engine.connect() as conn:
            with conn.begin():
                command.upgrade(alembic_config(conn), "head")
        assert TABLES <= set(sa.inspect(db.engine).get_table_names())
    finally:
        db.close()


def test_open_needs_url_or_folder(tmp_path) -> None:  # noqa: ANN001
    with pytest.raises(ConfigError, match="URL or an output folder"):
        ResultsDB.open()
    with pytest.raises(ConfigError, match="does not exist"):
        ResultsDB.open(f"sqlite:///{tmp_path / 'missing' / 'x.sqlite'}")
    with pytest.raises(ConfigError, match="only SQLite"):
        ResultsDB.open("mysql://u:p@localhost/db")


def test_open_default_sqlite_in_out_dir(tmp_path) -> None:  # noqa: ANN001
    out = tmp_path / "out"
    with ResultsDB.open(out_dir=out) as db:
        assert db.url_display.endswith("out/lesionq.sqlite")
        with db.engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
            assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30000
    assert (out / "lesionq.sqlite").is_file()


def test_password_is_masked() -> None:
    from lesionq.store.engine import normalise_url

    u = normalise_url("postgresql://reader:s3cret@db.example:5432/trial")
    shown = ResultsDB(sa.create_engine(u)).url_display
    assert "s3cret" not in shown and "***" in shown


def test_database_from_a_newer_version_is_refused(db_url: str) -> None:
    with ResultsDB.open(db_url) as db:
        with db.engine.begin() as conn:
            conn.execute(sa.text("UPDATE alembic_version SET version_num = '9999_future'"))
    with pytest.raises(ConfigError, match="newer lesionq"):
        ResultsDB.open(db_url)
