"""Tables of the results database (SQLAlchemy 2.x declarative, portable SQLite/PostgreSQL).

The schema itself is created by the Alembic migration ``0001_initial``
(:mod:`lesionq.store.migrations`); these classes describe it for queries and
must stay in step with the migrations (a test compares them).

Conventions: timestamps are UTC (:class:`UTCDateTime`: timezone-aware on
PostgreSQL, ISO text read back as aware UTC on SQLite); free-form payloads are
``sa.JSON``; visit keys are BIDS labels with their prefix (``sub-01``,
``ses-01``). A visit without session has ``session_id`` NULL and
``session_key`` ``""`` so that the unique constraint also holds for it.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

__all__ = [
    "Base",
    "UTCDateTime",
    "Subject",
    "Visit",
    "Run",
    "VisitResult",
    "Scan",
    "Lesion",
    "Endpoint",
    "LedgerEntry",
    "AuditEntry",
    "AuditState",
    "RESULT_COUNT_COLUMNS",
    "RUN_STATUSES",
    "RESULT_STATUSES",
    "LEDGER_STEPS",
    "LEDGER_OUTCOMES",
    "SCAN_CONTRASTS",
]

#: ``runs.status`` values.
RUN_STATUSES: tuple[str, ...] = ("running", "finished", "interrupted", "failed")
#: ``visit_results.status`` values.
RESULT_STATUSES: tuple[str, ...] = ("ok", "failed")
#: ``ledger.step`` values.
LEDGER_STEPS: tuple[str, ...] = ("visit", "longitudinal", "endpoints")
#: ``ledger.outcome`` values.
LEDGER_OUTCOMES: tuple[str, ...] = ("ok", "failed", "skipped_up_to_date", "skipped_locked")
#: ``scans.contrast`` values (the runner's input roles).
SCAN_CONTRASTS: tuple[str, ...] = ("flair", "t1", "t2", "t1ce")


class UTCDateTime(sa.types.TypeDecorator[datetime]):
    """A timestamp stored in UTC and always returned timezone-aware (UTC).

    Naive datetimes are refused (their zone is unknown): pass aware ones, e.g.
    ``datetime.now(UTC)``.
    """

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        if not isinstance(value, datetime):
            raise TypeError(f"UTCDateTime: expected a datetime, got {value!r}")
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"UTCDateTime: naive datetime {value.isoformat()} (zone unknown)")
        value = value.astimezone(UTC)
        if dialect.name == "sqlite":
            return value.replace(tzinfo=None)
        return value

    def process_result_value(self, value: Any, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


def _now() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    """Declarative base of the results database."""


class Subject(Base):
    """One participant (``sub-<label>``)."""

    __tablename__ = "subjects"
    id: Mapped[int] = mapped_column(primary_key=True)
    participant_id: Mapped[str] = mapped_column(sa.String(128), unique=True)
    site: Mapped[str | None] = mapped_column(sa.String(128))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=_now)


class Visit(Base):
    """One session of a subject (``session_id`` NULL for single-session datasets)."""

    __tablename__ = "visits"
    __table_args__ = (sa.UniqueConstraint("subject_id", "session_key", name="uq_visits_subject"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    subject_id: Mapped[int] = mapped_column(sa.ForeignKey("subjects.id", ondelete="RESTRICT"))
    session_id: Mapped[str | None] = mapped_column(sa.String(128))
    #: ``session_id`` or ``""``: the uniqueness key (NULLs never collide in SQL).
    session_key: Mapped[str] = mapped_column(sa.String(128))
    acq_time: Mapped[str | None] = mapped_column(sa.Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=_now)


class Run(Base):
    """One ``lesionq run`` invocation."""

    __tablename__ = "runs"
    __table_args__ = (
        sa.CheckConstraint(
            "status IN ('running', 'finished', 'interrupted', 'failed')", name="ck_runs_status"
        ),
    )
    id: Mapped[int] = mapped_column(primary_key=True)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime, default=_now)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    status: Mapped[str] = mapped_column(sa.String(16))
    lesionq_version: Mapped[str | None] = mapped_column(sa.String(64))
    protocol: Mapped[str | None] = mapped_column(sa.String(128))
    settings_sha256: Mapped[str | None] = mapped_column(sa.String(64))
    settings: Mapped[Any] = mapped_column(sa.JSON(none_as_null=True), nullable=True)
    command: Mapped[str | None] = mapped_column(sa.Text)
    host: Mapped[str | None] = mapped_column(sa.String(255))
    pid: Mapped[int | None] = mapped_column(sa.Integer)
    resumed_from: Mapped[int | None] = mapped_column(sa.ForeignKey("runs.id"))
    n_ok: Mapped[int | None] = mapped_column(sa.Integer)
    n_failed: Mapped[int | None] = mapped_column(sa.Integer)
    n_skipped: Mapped[int | None] = mapped_column(sa.Integer)


#: Count/measure columns of ``visit_results`` (a ``visits.tsv`` column each) and their types.
RESULT_COUNT_COLUMNS: dict[str, type[sa.types.TypeEngine[Any]]] = {
    "t2_count": sa.Integer,
    "t2_volume_mm3": sa.Float,
    "brain_volume_mm3": sa.Float,
    "contrasts_used": sa.Text,
    "skull_stripped_input": sa.Boolean,
    "new_t2_count": sa.Integer,
    "enlarging_t2_count": sa.Integer,
    "t2_volume_change_mm3": sa.Float,
    "new_t2_count_vs_baseline": sa.Integer,
    "enlarging_t2_count_vs_baseline": sa.Integer,
    "t2_volume_change_vs_baseline_mm3": sa.Float,
    "previous_session_id": sa.Text,
    "reference_session_id": sa.Text,
    "longitudinal_status": sa.Text,
    "gd_count": sa.Integer,
    "gd_count_confident": sa.Integer,
    "gd_volume_mm3": sa.Float,
    "gd_inputs": sa.Text,
    "cua_count": sa.Integer,
    "bh_count": sa.Integer,
    "bh_volume_mm3": sa.Float,
    "bh_volume_persistent_mm3": sa.Float,
}


class VisitResult(Base):
    """One processing result of a visit: the per-visit counts (one ``visits.tsv`` row).

    Exactly one result per visit is current (``is_current``); older ones are kept,
    with ``superseded_by`` pointing at their successor (audit history).
    """

    __tablename__ = "visit_results"
    __table_args__ = (
        sa.CheckConstraint("status IN ('ok', 'failed')", name="ck_visit_results_status"),
        sa.Index(
            "uq_visit_results_current",
            "visit_id",
            unique=True,
            sqlite_where=sa.text("is_current"),
            postgresql_where=sa.text("is_current"),
        ),
        sa.Index("ix_visit_results_visit", "visit_id"),
    )
    id: Mapped[int] = mapped_column(primary_key=True)
    visit_id: Mapped[int] = mapped_column(sa.ForeignKey("visits.id"))
    run_id: Mapped[int] = mapped_column(sa.ForeignKey("runs.id"))
    inputs_sha256: Mapped[str | None] = mapped_column(sa.String(64))
    settings_sha256: Mapped[str | None] = mapped_column(sa.String(64))
    protocol: Mapped[str | None] = mapped_column(sa.String(128))
    lesionq_version: Mapped[str | None] = mapped_column(sa.String(64))
    status: Mapped[str] = mapped_column(sa.String(16))
    error_class: Mapped[str | None] = mapped_column(sa.String(255))
    reason: Mapped[str | None] = mapped_column(sa.Text)
    is_current: Mapped[bool] = mapped_column(sa.Boolean)
    superseded_by: Mapped[int | None] = mapped_column(sa.ForeignKey("visit_results.id"))
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    duration_s: Mapped[float | None] = mapped_column(sa.Float)
    t2_count: Mapped[int | None] = mapped_column(sa.Integer)
    t2_volume_mm3: Mapped[float | None] = mapped_column(sa.Float)
    brain_volume_mm3: Mapped[float | None] = mapped_column(sa.Float)
    contrasts_used: Mapped[str | None] = mapped_column(sa.Text)
    skull_stripped_input: Mapped[bool | None] = mapped_column(sa.Boolean)
    new_t2_count: Mapped[int | None] = mapped_column(sa.Integer)
    enlarging_t2_count: Mapped[int | None] = mapped_column(sa.Integer)
    t2_volume_change_mm3: Mapped[float | None] = mapped_column(sa.Float)
    new_t2_count_vs_baseline: Mapped[int | None] = mapped_column(sa.Integer)
    enlarging_t2_count_vs_baseline: Mapped[int | None] = mapped_column(sa.Integer)
    t2_volume_change_vs_baseline_mm3: Mapped[float | None] = mapped_column(sa.Float)
    previous_session_id: Mapped[str | None] = mapped_column(sa.Text)
    reference_session_id: Mapped[str | None] = mapped_column(sa.Text)
    longitudinal_status: Mapped[str | None] = mapped_column(sa.Text)
    gd_count: Mapped[int | None] = mapped_column(sa.Integer)
    gd_count_confident: Mapped[int | None] = mapped_column(sa.Integer)
    gd_volume_mm3: Mapped[float | None] = mapped_column(sa.Float)
    gd_inputs: Mapped[str | None] = mapped_column(sa.Text)
    cua_count: Mapped[int | None] = mapped_column(sa.Integer)
    bh_count: Mapped[int | None] = mapped_column(sa.Integer)
    bh_volume_mm3: Mapped[float | None] = mapped_column(sa.Float)
    bh_volume_persistent_mm3: Mapped[float | None] = mapped_column(sa.Float)


class Scan(Base):
    """An input image of a result, identified by its sha256."""

    __tablename__ = "scans"
    __table_args__ = (
        sa.CheckConstraint("contrast IN ('flair', 't1', 't2', 't1ce')", name="ck_scans_contrast"),
        sa.Index("ix_scans_result", "visit_result_id"),
    )
    id: Mapped[int] = mapped_column(primary_key=True)
    visit_result_id: Mapped[int] = mapped_column(
        sa.ForeignKey("visit_results.id", ondelete="CASCADE")
    )
    contrast: Mapped[str] = mapped_column(sa.String(16))
    path: Mapped[str] = mapped_column(sa.Text)
    sha256: Mapped[str | None] = mapped_column(sa.String(64))
    size_bytes: Mapped[int | None] = mapped_column(sa.BigInteger)


class Lesion(Base):
    """One row of a visit's ``lesions.tsv`` (T2 or Gd+ lesion)."""

    __tablename__ = "lesions"
    __table_args__ = (sa.Index("ix_lesions_result", "visit_result_id"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    visit_result_id: Mapped[int] = mapped_column(
        sa.ForeignKey("visit_results.id", ondelete="CASCADE")
    )
    lesion_id: Mapped[int] = mapped_column(sa.Integer)
    #: As in ``lesions.tsv``: ``"T2"``, ``"Gd"`` or ``"T1hypo"`` (black hole).
    label: Mapped[str | None] = mapped_column(sa.String(16))
    volume_mm3: Mapped[float | None] = mapped_column(sa.Float)
    n_voxels: Mapped[int | None] = mapped_column(sa.Integer)
    centroid_x_mm: Mapped[float | None] = mapped_column(sa.Float)
    centroid_y_mm: Mapped[float | None] = mapped_column(sa.Float)
    centroid_z_mm: Mapped[float | None] = mapped_column(sa.Float)
    location: Mapped[str | None] = mapped_column(sa.String(64))
    track_id: Mapped[int | None] = mapped_column(sa.Integer)
    status: Mapped[str | None] = mapped_column(sa.String(64))
    status_vs_baseline: Mapped[str | None] = mapped_column(sa.String(64))
    #: Every other ``lesions.tsv`` column, in table order.
    extra: Mapped[Any] = mapped_column(sa.JSON(none_as_null=True), nullable=True)


class Endpoint(Base):
    """One ``endpoints.tsv`` row (subject x period) of a run; the latest run's rows are current."""

    __tablename__ = "endpoints"
    __table_args__ = (sa.Index("ix_endpoints_current", "is_current"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[int] = mapped_column(sa.ForeignKey("runs.id"))
    is_current: Mapped[bool] = mapped_column(sa.Boolean)
    participant_id: Mapped[str | None] = mapped_column(sa.String(128))
    period: Mapped[str | None] = mapped_column(sa.String(128))
    #: The whole row, columns in table order.
    data: Mapped[Any] = mapped_column(sa.JSON(none_as_null=True))


class LedgerEntry(Base):
    """Run ledger: the outcome of each step of each visit in a run."""

    __tablename__ = "ledger"
    __table_args__ = (
        sa.CheckConstraint("step IN ('visit', 'longitudinal', 'endpoints')", name="ck_ledger_step"),
        sa.CheckConstraint(
            "outcome IN ('ok', 'failed', 'skipped_up_to_date', 'skipped_locked')",
            name="ck_ledger_outcome",
        ),
        sa.Index("ix_ledger_run", "run_id"),
    )
    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[int] = mapped_column(sa.ForeignKey("runs.id"))
    participant_id: Mapped[str | None] = mapped_column(sa.String(128))
    session_id: Mapped[str | None] = mapped_column(sa.String(128))
    step: Mapped[str] = mapped_column(sa.String(16))
    outcome: Mapped[str] = mapped_column(sa.String(32))
    error_class: Mapped[str | None] = mapped_column(sa.String(255))
    message: Mapped[str | None] = mapped_column(sa.Text)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    duration_s: Mapped[float | None] = mapped_column(sa.Float)


class AuditEntry(Base):
    """Append-only audit log (database triggers refuse UPDATE and DELETE).

    Every row carries the sha256 of the previous row (``prev_hash``) and its own
    (``row_hash``): see :mod:`lesionq.store.auditchain`. ``client`` is the client
    address of the web request that wrote it (NULL for the command line and runs).
    """

    __tablename__ = "audit_log"
    __table_args__ = (sa.Index("ix_audit_log_action_actor_at", "action", "actor", "at"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=_now)
    actor: Mapped[str] = mapped_column(sa.String(255))
    action: Mapped[str] = mapped_column(sa.String(64))
    entity: Mapped[str] = mapped_column(sa.String(64))
    entity_id: Mapped[str | None] = mapped_column(sa.String(255))
    before: Mapped[Any] = mapped_column(sa.JSON(none_as_null=True), nullable=True)
    after: Mapped[Any] = mapped_column(sa.JSON(none_as_null=True), nullable=True)
    detail: Mapped[str | None] = mapped_column(sa.Text)
    client: Mapped[str | None] = mapped_column(sa.String(64))
    prev_hash: Mapped[str | None] = mapped_column(sa.String(64))
    row_hash: Mapped[str | None] = mapped_column(sa.String(64))


class AuditState(Base):
    """Head of the audit hash chain (one row, ``id = 1``; see :mod:`lesionq.store.auditchain`).

    Every append locks it, so appends are serialised and the chain cannot fork.
    ``name_key`` keys the hash under which an unknown login username is logged.
    """

    __tablename__ = "audit_state"
    __table_args__ = (sa.CheckConstraint("id = 1", name="ck_audit_state_one_row"),)
    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    last_id: Mapped[int | None] = mapped_column(sa.Integer)
    last_hash: Mapped[str] = mapped_column(sa.String(64))
    n_rows: Mapped[int] = mapped_column(sa.Integer)
    name_key: Mapped[str] = mapped_column(sa.String(64))
