"""Initial schema of the results database.

Tables: subjects, visits, runs, visit_results (per-visit counts), scans,
lesions, endpoints, ledger (run ledger), audit_log (append-only: triggers
abort UPDATE and DELETE, and TRUNCATE on PostgreSQL).

Revision ID: 0001_initial
Revises:
Create Date: 2026-11-26
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001_initial"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _ts() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def _json() -> sa.JSON:
    return sa.JSON(none_as_null=True)


_APPEND_ONLY_MESSAGE = "audit_log is append-only"

_SQLITE_TRIGGERS = (
    f"""CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
    BEGIN SELECT RAISE(ABORT, '{_APPEND_ONLY_MESSAGE}: UPDATE refused'); END""",
    f"""CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
    BEGIN SELECT RAISE(ABORT, '{_APPEND_ONLY_MESSAGE}: DELETE refused'); END""",
)

_PG_TRIGGERS = (
    f"""CREATE FUNCTION lesionq_audit_log_append_only() RETURNS trigger
    LANGUAGE plpgsql AS $$
    BEGIN
        RAISE EXCEPTION '{_APPEND_ONLY_MESSAGE}: % refused', TG_OP
            USING ERRCODE = 'insufficient_privilege';
    END;
    $$""",
    """CREATE TRIGGER audit_log_no_update_delete BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION lesionq_audit_log_append_only()""",
    """CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION lesionq_audit_log_append_only()""",
)


def upgrade() -> None:
    """Create every table, index and the audit triggers."""
    op.create_table(
        "subjects",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("participant_id", sa.String(128), nullable=False, unique=True),
        sa.Column("site", sa.String(128), nullable=True),
        sa.Column("created_at", _ts(), nullable=False),
    )
    op.create_table(
        "visits",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column(
            "subject_id",
            sa.Integer,
            sa.ForeignKey("subjects.id", ondelete="RESTRICT"),
            nullable=False,
        ),
        sa.Column("session_id", sa.String(128), nullable=True),
        sa.Column("session_key", sa.String(128), nullable=False),
        sa.Column("acq_time", sa.Text, nullable=True),
        sa.Column("created_at", _ts(), nullable=False),
        sa.UniqueConstraint("subject_id", "session_key", name="uq_visits_subject"),
    )
    op.create_table(
        "runs",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("started_at", _ts(), nullable=False),
        sa.Column("finished_at", _ts(), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("lesionq_version", sa.String(64), nullable=True),
        sa.Column("protocol", sa.String(128), nullable=True),
        sa.Column("settings_sha256", sa.String(64), nullable=True),
        sa.Column("settings", _json(), nullable=True),
        sa.Column("command", sa.Text, nullable=True),
        sa.Column("host", sa.String(255), nullable=True),
        sa.Column("pid", sa.Integer, nullable=True),
        sa.Column("resumed_from", sa.Integer, sa.ForeignKey("runs.id"), nullable=True),
        sa.Column("n_ok", sa.Integer, nullable=True),
        sa.Column("n_failed", sa.Integer, nullable=True),
        sa.Column("n_skipped", sa.Integer, nullable=True),
        sa.CheckConstraint(
            "status IN ('running', 'finished', 'interrupted', 'failed')", name="ck_runs_status"
        ),
    )
    op.create_table(
        "visit_results",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("visit_id", sa.Integer, sa.ForeignKey("visits.id"), nullable=False),
        sa.Column("run_id", sa.Integer, sa.ForeignKey("runs.id"), nullable=False),
        sa.Column("inputs_sha256", sa.String(64), nullable=True),
        sa.Column("settings_sha256", sa.String(64), nullable=True),
        sa.Column("protocol", sa.String(128), nullable=True),
        sa.Column("lesionq_version", sa.String(64), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("error_class", sa.String(255), nullable=True),
        sa.Column("reason", sa.Text, nullable=True),
        sa.Column("is_current", sa.Boolean, nullable=False),
        sa.Column("superseded_by", sa.Integer, sa.ForeignKey("visit_results.id"), nullable=True),
        sa.Column("started_at", _ts(), nullable=True),
        sa.Column("finished_at", _ts(), nullable=True),
        sa.Column("duration_s", sa.Float, nullable=True),
        sa.Column("t2_count", sa.Integer, nullable=True),
        sa.Column("t2_volume_mm3", sa.Float, nullable=True),
        sa.Column("brain_volume_mm3", sa.Float, nullable=True),
        sa.Column("contrasts_used", sa.Text, nullable=True),
        sa.Column("skull_stripped_input", sa.Boolean, nullable=True),
        sa.Column("new_t2_count", sa.Integer, nullable=True),
        sa.Column("enlarging_t2_count", sa.Integer, nullable=True),
        sa.Column("t2_volume_change_mm3", sa.Float, nullable=True),
        sa.Column("new_t2_count_vs_baseline", sa.Integer, nullable=True),
        sa.Column("enlarging_t2_count_vs_baseline", sa.Integer, nullable=True),
        sa.Column("t2_volume_change_vs_baseline_mm3", sa.Float, nullable=True),
        sa.Column("previous_session_id", sa.Text, nullable=True),
        sa.Column("reference_session_id", sa.Text, nullable=True),
        sa.Column("longitudinal_status", sa.Text, nullable=True),
        sa.Column("gd_count", sa.Integer, nullable=True),
        sa.Column("gd_volume_mm3", sa.Float, nullable=True),
        sa.Column("gd_inputs", sa.Text, nullable=True),
        sa.Column("cua_count", sa.Integer, nullable=True),
        sa.CheckConstraint("status IN ('ok', 'failed')", name="ck_visit_results_status"),
    )
    op.create_index("ix_visit_results_visit", "visit_results", ["visit_id"])
    # at most one current result per visit (partial unique index: SQLite >= 3.8, PostgreSQL)
    op.create_index(
        "uq_visit_results_current",
        "visit_results",
        ["visit_id"],
        unique=True,
        sqlite_where=sa.text("is_current"),
        postgresql_where=sa.text("is_current"),
    )
    op.create_table(
        "scans",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column(
            "visit_result_id",
            sa.Integer,
            sa.ForeignKey("visit_results.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("contrast", sa.String(16), nullable=False),
        sa.Column("path", sa.Text, nullable=False),
        sa.Column("sha256", sa.String(64), nullable=True),
        sa.Column("size_bytes", sa.BigInteger, nullable=True),
        sa.CheckConstraint("contrast IN ('flair', 't1', 't2', 't1ce')", name="ck_scans_contrast"),
    )
    op.create_index("ix_scans_result", "scans", ["visit_result_id"])
    op.create_table(
        "lesions",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column(
            "visit_result_id",
            sa.Integer,
            sa.ForeignKey("visit_results.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("lesion_id", sa.Integer, nullable=False),
        sa.Column("label", sa.String(16), nullable=True),
        sa.Column("volume_mm3", sa.Float, nullable=True),
        sa.Column("n_voxels", sa.Integer, nullable=True),
        sa.Column("centroid_x_mm", sa.Float, nullable=True),
        sa.Column("centroid_y_mm", sa.Float, nullable=True),
        sa.Column("centroid_z_mm", sa.Float, nullable=True),
        sa.Column("location", sa.String(64), nullable=True),
        sa.Column("track_id", sa.Integer, nullable=True),
        sa.Column("status", sa.String(64), nullable=True),
        sa.Column("status_vs_baseline", sa.String(64), nullable=True),
        sa.Column("extra", _json(), nullable=True),
    )
    op.create_index("ix_lesions_result", "lesions", ["visit_result_id"])
    op.create_table(
        "endpoints",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("run_id", sa.Integer, sa.ForeignKey("runs.id"), nullable=False),
        sa.Column("is_current", sa.Boolean, nullable=False),
        sa.Column("participant_id", sa.String(128), nullable=True),
        sa.Column("period", sa.String(128), nullable=True),
        sa.Column("data", _json(), nullable=False),
    )
    op.create_index("ix_endpoints_current", "endpoints", ["is_current"])
    op.create_table(
        "ledger",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("run_id", sa.Integer, sa.ForeignKey("runs.id"), nullable=False),
        sa.Column("participant_id", sa.String(128), nullable=True),
        sa.Column("session_id", sa.String(128), nullable=True),
        sa.Column("step", sa.String(16), nullable=False),
        sa.Column("outcome", sa.String(32), nullable=False),
        sa.Column("error_class", sa.String(255), nullable=True),
        sa.Column("message", sa.Text, nullable=True),
        sa.Column("started_at", _ts(), nullable=True),
        sa.Column("finished_at", _ts(), nullable=True),
        sa.Column("duration_s", sa.Float, nullable=True),
        sa.CheckConstraint("step IN ('visit', 'longitudinal', 'endpoints')", name="ck_ledger_step"),
        sa.CheckConstraint(
            "outcome IN ('ok', 'failed', 'skipped_up_to_date', 'skipped_locked')",
            name="ck_ledger_outcome",
        ),
    )
    op.create_index("ix_ledger_run", "ledger", ["run_id"])
    op.create_table(
        "audit_log",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("at", _ts(), nullable=False),
        sa.Column("actor", sa.String(255), nullable=False),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("entity", sa.String(64), nullable=False),
        sa.Column("entity_id", sa.String(255), nullable=True),
        sa.Column("before", _json(), nullable=True),
        sa.Column("after", _json(), nullable=True),
        sa.Column("detail", sa.Text, nullable=True),
    )
    dialect = op.get_bind().dialect.name
    if dialect == "sqlite":
        for sql in _SQLITE_TRIGGERS:
            op.execute(sql)
    elif dialect == "postgresql":
        for sql in _PG_TRIGGERS:
            op.execute(sql)
    else:
        raise NotImplementedError(
            f"lesionq results database: dialect {dialect!r} is not supported "
            "(SQLite or PostgreSQL); the audit log could not be made append-only"
        )


def downgrade() -> None:
    """Drop everything (the audit log included: this destroys the history)."""
    dialect = op.get_bind().dialect.name
    if dialect == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS audit_log_no_truncate ON audit_log")
        op.execute("DROP TRIGGER IF EXISTS audit_log_no_update_delete ON audit_log")
        op.execute("DROP FUNCTION IF EXISTS lesionq_audit_log_append_only()")
    for table in (
        "audit_log",
        "ledger",
        "endpoints",
        "lesions",
        "scans",
        "visit_results",
        "runs",
        "visits",
        "subjects",
    ):
        op.drop_table(table)
