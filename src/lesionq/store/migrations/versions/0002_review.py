"""Tables of the review web app (``lesionq review``).

Tables:

* ``readers``: accounts (username, role reader|adjudicator|admin, scrypt password
  hash, active flag). Mutable (disable, password change); every change is audited.
* ``reader_sessions``: server-side login sessions (sha256 of the cookie token,
  CSRF token, expiry, revocation).
* ``lesion_decisions``: a reader's decision on one lesion of one visit result
  (accept | reject | relabel + new_label, comment). Append-only: a changed
  decision is a new row whose ``supersedes`` points at the row it replaces
  (unique, so a decision is replaced at most once); UPDATE and DELETE are
  refused by triggers.
* ``visit_reviews``: a reader submitted a visit result (append-only, one per
  reader and result).
* ``adjudications``: an adjudicator's decision on a lesion the readers disagree
  on (append-only, ``supersedes`` as in ``lesion_decisions``).
* ``study_lock``: lock / unlock events (append-only; the newest row is the state).
* ``review_settings``: the number of readers a visit needs (append-only; the newest
  row is the rule in force).

Revision ID: 0002_review
Revises: 0001_initial
Create Date: 2026-11-27
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002_review"
down_revision: str | Sequence[str] | None = "0001_initial"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

#: Tables whose rows are never updated nor deleted (enforced by triggers).
APPEND_ONLY_TABLES: tuple[str, ...] = (
    "lesion_decisions",
    "visit_reviews",
    "adjudications",
    "study_lock",
    "review_settings",
)


def _ts() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def _decision_columns(actor_column: str) -> list[sa.Column]:
    return [
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("visit_result_id", sa.Integer, sa.ForeignKey("visit_results.id"), nullable=False),
        sa.Column("label", sa.String(16), nullable=False),
        sa.Column("lesion_id", sa.Integer, nullable=False),
        sa.Column(actor_column, sa.Integer, sa.ForeignKey("readers.id"), nullable=False),
        sa.Column("decision", sa.String(16), nullable=False),
        sa.Column("new_label", sa.String(64), nullable=True),
        sa.Column("comment", sa.Text, nullable=True),
        sa.Column("by_default", sa.Boolean, nullable=False),
        sa.Column("created_at", _ts(), nullable=False),
    ]


def _decision_checks(table: str) -> list[sa.CheckConstraint]:
    return [
        sa.CheckConstraint(
            "decision IN ('accept', 'reject', 'relabel')", name=f"ck_{table}_decision"
        ),
        sa.CheckConstraint(
            "(decision = 'relabel') = (new_label IS NOT NULL)", name=f"ck_{table}_new_label"
        ),
    ]


def upgrade() -> None:
    """Create the review tables, their indexes and the append-only triggers."""
    op.create_table(
        "readers",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("username", sa.String(64), nullable=False, unique=True),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("password_hash", sa.Text, nullable=False),
        sa.Column("active", sa.Boolean, nullable=False),
        sa.Column("created_at", _ts(), nullable=False),
        sa.Column("updated_at", _ts(), nullable=False),
        sa.CheckConstraint("role IN ('reader', 'adjudicator', 'admin')", name="ck_readers_role"),
    )
    op.create_table(
        "reader_sessions",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("token_sha256", sa.String(64), nullable=False, unique=True),
        sa.Column("reader_id", sa.Integer, sa.ForeignKey("readers.id"), nullable=False),
        sa.Column("csrf_token", sa.String(64), nullable=False),
        sa.Column("created_at", _ts(), nullable=False),
        sa.Column("expires_at", _ts(), nullable=False),
        sa.Column("revoked_at", _ts(), nullable=True),
    )
    op.create_index("ix_reader_sessions_reader", "reader_sessions", ["reader_id"])
    op.create_table(
        "lesion_decisions",
        *_decision_columns("reader_id"),
        sa.Column(
            "supersedes",
            sa.Integer,
            sa.ForeignKey("lesion_decisions.id"),
            nullable=True,
            unique=True,
        ),
        *_decision_checks("lesion_decisions"),
    )
    op.create_index(
        "ix_lesion_decisions_result", "lesion_decisions", ["visit_result_id", "reader_id"]
    )
    op.create_table(
        "adjudications",
        *_decision_columns("adjudicator_id"),
        sa.Column(
            "supersedes", sa.Integer, sa.ForeignKey("adjudications.id"), nullable=True, unique=True
        ),
        *_decision_checks("adjudications"),
    )
    op.create_index("ix_adjudications_result", "adjudications", ["visit_result_id"])
    op.create_table(
        "visit_reviews",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("visit_result_id", sa.Integer, sa.ForeignKey("visit_results.id"), nullable=False),
        sa.Column("reader_id", sa.Integer, sa.ForeignKey("readers.id"), nullable=False),
        sa.Column("submitted_at", _ts(), nullable=False),
        sa.Column("t2_count", sa.Integer, nullable=True),
        sa.Column("t2_volume_mm3", sa.Float, nullable=True),
        sa.Column("gd_count", sa.Integer, nullable=True),
        sa.Column("gd_volume_mm3", sa.Float, nullable=True),
        sa.UniqueConstraint("visit_result_id", "reader_id", name="uq_visit_reviews_reader"),
    )
    op.create_table(
        "study_lock",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("at", _ts(), nullable=False),
        sa.Column("reader_id", sa.Integer, sa.ForeignKey("readers.id"), nullable=True),
        sa.Column("locked", sa.Boolean, nullable=False),
        sa.Column("reason", sa.Text, nullable=True),
    )
    op.create_table(
        "review_settings",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("at", _ts(), nullable=False),
        sa.Column("actor", sa.String(255), nullable=False),
        sa.Column("readers_required", sa.Integer, nullable=False),
        sa.CheckConstraint("readers_required IN (1, 2)", name="ck_review_settings_readers"),
    )
    dialect = op.get_bind().dialect.name
    if dialect == "sqlite":
        for table in APPEND_ONLY_TABLES:
            for verb in ("UPDATE", "DELETE"):
                op.execute(
                    f"CREATE TRIGGER {table}_no_{verb.lower()} BEFORE {verb} ON {table} "
                    f"BEGIN SELECT RAISE(ABORT, '{table} is append-only: {verb} refused'); END"
                )
    elif dialect == "postgresql":
        op.execute(
            """CREATE FUNCTION lesionq_review_append_only() RETURNS trigger
            LANGUAGE plpgsql AS $$
            BEGIN
                RAISE EXCEPTION '% is append-only: % refused', TG_TABLE_NAME, TG_OP
                    USING ERRCODE = 'insufficient_privilege';
            END;
            $$"""
        )
        for table in APPEND_ONLY_TABLES:
            op.execute(
                f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table} "
                "FOR EACH ROW EXECUTE FUNCTION lesionq_review_append_only()"
            )
            op.execute(
                f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table} "
                "FOR EACH STATEMENT EXECUTE FUNCTION lesionq_review_append_only()"
            )
    else:
        raise NotImplementedError(
            f"lesionq review tables: dialect {dialect!r} is not supported (SQLite or PostgreSQL)"
        )


def downgrade() -> None:
    """Drop the review tables (this destroys the reading history)."""
    dialect = op.get_bind().dialect.name
    for table in APPEND_ONLY_TABLES:
        if dialect == "postgresql":
            op.execute(f"DROP TRIGGER IF EXISTS {table}_append_only ON {table}")
            op.execute(f"DROP TRIGGER IF EXISTS {table}_no_truncate ON {table}")
        else:
            op.execute(f"DROP TRIGGER IF EXISTS {table}_no_update")
            op.execute(f"DROP TRIGGER IF EXISTS {table}_no_delete")
    if dialect == "postgresql":
        op.execute("DROP FUNCTION IF EXISTS lesionq_review_append_only()")
    for table in (
        "review_settings",
        "study_lock",
        "visit_reviews",
        "adjudications",
        "lesion_decisions",
        "reader_sessions",
        "readers",
    ):
        op.drop_table(table)
