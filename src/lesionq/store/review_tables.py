"""Tables of the radiologists' review (SQLAlchemy Core, their own :class:`~sqlalchemy.MetaData`).

The review web app (:mod:`lesionq.review`) writes these tables; the review read
model (:mod:`lesionq.store.reviewed`) reads them for the reviewed counts of
``visits.tsv``, the endpoints and ``lesionq status``. The schema is created by the
migration ``0002_review`` of the results database (:mod:`lesionq.store.migrations`)
and later ones; these definitions describe it for queries and must stay in step
with it (``tests/review/test_review_models.py`` compares them). They live apart
from :data:`lesionq.store.models.Base` so that the store's own metadata stays the
automatic results; ``visit_results`` appears here only as a stub (its ``id``), for
the foreign keys. :mod:`lesionq.review.models` re-exports them.
"""

from __future__ import annotations

import sqlalchemy as sa

from .models import UTCDateTime

__all__ = [
    "metadata",
    "readers",
    "reader_sessions",
    "lesion_decisions",
    "adjudications",
    "visit_reviews",
    "study_lock",
    "review_settings",
    "added_lesions",
    "amendments",
    "lesion_views",
    "REVIEW_TABLES",
    "APPEND_ONLY_TABLES",
]

metadata = sa.MetaData()

#: Stub of the store's ``visit_results`` (only what the foreign keys need).
_visit_results_stub = sa.Table(
    "visit_results", metadata, sa.Column("id", sa.Integer, primary_key=True)
)

readers = sa.Table(
    "readers",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("username", sa.String(64), nullable=False, unique=True),
    sa.Column("role", sa.String(16), nullable=False),
    sa.Column("password_hash", sa.Text, nullable=False),
    sa.Column("active", sa.Boolean, nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
    sa.CheckConstraint("role IN ('reader', 'adjudicator', 'admin')", name="ck_readers_role"),
)

reader_sessions = sa.Table(
    "reader_sessions",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("token_sha256", sa.String(64), nullable=False, unique=True),
    sa.Column("reader_id", sa.Integer, sa.ForeignKey("readers.id"), nullable=False),
    sa.Column("csrf_token", sa.String(64), nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("expires_at", UTCDateTime, nullable=False),
    sa.Column("revoked_at", UTCDateTime, nullable=True),
    sa.Index("ix_reader_sessions_reader", "reader_id"),
)


def _decision_table(name: str, actor_column: str, index: sa.Index) -> sa.Table:
    return sa.Table(
        name,
        metadata,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("visit_result_id", sa.Integer, sa.ForeignKey("visit_results.id"), nullable=False),
        sa.Column("label", sa.String(16), nullable=False),
        sa.Column("lesion_id", sa.Integer, nullable=False),
        sa.Column(actor_column, sa.Integer, sa.ForeignKey("readers.id"), nullable=False),
        sa.Column("decision", sa.String(16), nullable=False),
        sa.Column("new_label", sa.String(64), nullable=True),
        sa.Column("comment", sa.Text, nullable=True),
        sa.Column("by_default", sa.Boolean, nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column(
            "supersedes", sa.Integer, sa.ForeignKey(f"{name}.id"), nullable=True, unique=True
        ),
        sa.CheckConstraint(
            "decision IN ('accept', 'reject', 'relabel')", name=f"ck_{name}_decision"
        ),
        sa.CheckConstraint(
            "(decision = 'relabel') = (new_label IS NOT NULL)", name=f"ck_{name}_new_label"
        ),
        index,
    )


#: A reader's decisions; a changed decision is a new row that ``supersedes`` the old one.
lesion_decisions = _decision_table(
    "lesion_decisions",
    "reader_id",
    sa.Index("ix_lesion_decisions_result", "visit_result_id", "reader_id"),
)

#: An adjudicator's decisions on the lesions the readers disagree on.
adjudications = _decision_table(
    "adjudications", "adjudicator_id", sa.Index("ix_adjudications_result", "visit_result_id")
)

visit_reviews = sa.Table(
    "visit_reviews",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("visit_result_id", sa.Integer, sa.ForeignKey("visit_results.id"), nullable=False),
    sa.Column("reader_id", sa.Integer, sa.ForeignKey("readers.id"), nullable=False),
    sa.Column("submitted_at", UTCDateTime, nullable=False),
    sa.Column("t2_count", sa.Integer, nullable=True),
    sa.Column("t2_volume_mm3", sa.Float, nullable=True),
    sa.Column("gd_count", sa.Integer, nullable=True),
    sa.Column("gd_volume_mm3", sa.Float, nullable=True),
    sa.UniqueConstraint("visit_result_id", "reader_id", name="uq_visit_reviews_reader"),
)

study_lock = sa.Table(
    "study_lock",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("at", UTCDateTime, nullable=False),
    sa.Column("reader_id", sa.Integer, sa.ForeignKey("readers.id"), nullable=True),
    sa.Column("locked", sa.Boolean, nullable=False),
    sa.Column("reason", sa.Text, nullable=True),
)

review_settings = sa.Table(
    "review_settings",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("at", UTCDateTime, nullable=False),
    sa.Column("actor", sa.String(255), nullable=False),
    sa.Column("readers_required", sa.Integer, nullable=False),
    sa.CheckConstraint("readers_required IN (1, 2)", name="ck_review_settings_readers"),
)

#: Lesions a reader added (migration ``0006_added_lesions``; :mod:`lesionq.store.review_added`).
added_lesions = sa.Table(
    "added_lesions",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("visit_result_id", sa.Integer, sa.ForeignKey("visit_results.id"), nullable=False),
    sa.Column("reader_id", sa.Integer, sa.ForeignKey("readers.id"), nullable=False),
    sa.Column("label", sa.String(16), nullable=False),
    sa.Column("seed_i", sa.Integer, nullable=False),
    sa.Column("seed_j", sa.Integer, nullable=False),
    sa.Column("seed_k", sa.Integer, nullable=False),
    sa.Column("threshold", sa.Float, nullable=False),
    sa.Column("mode", sa.String(16), nullable=False),
    sa.Column("connectivity", sa.Integer, nullable=False),
    sa.Column("n_voxels", sa.Integer, nullable=False),
    sa.Column("volume_mm3", sa.Float, nullable=False),
    sa.Column("centroid_x_mm", sa.Float, nullable=False),
    sa.Column("centroid_y_mm", sa.Float, nullable=False),
    sa.Column("centroid_z_mm", sa.Float, nullable=False),
    sa.Column("location", sa.String(32), nullable=True),
    sa.Column("bbox", sa.String(128), nullable=False),
    sa.Column("mask", sa.LargeBinary, nullable=False),
    sa.Column("comment", sa.Text, nullable=True),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.CheckConstraint("label IN ('T2', 'Gd')", name="ck_added_lesions_label"),
    sa.CheckConstraint("n_voxels > 0", name="ck_added_lesions_voxels"),
    sa.Index("ix_added_lesions_result", "visit_result_id", "reader_id"),
)

#: A change of a final visit's decision on one lesion (migration ``0005``): the new
#: final decision, its mandatory reason and the review ``version`` it creates (2, 3, ...).
amendments = sa.Table(
    "amendments",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("visit_result_id", sa.Integer, sa.ForeignKey("visit_results.id"), nullable=False),
    sa.Column("label", sa.String(16), nullable=False),
    sa.Column("lesion_id", sa.Integer, nullable=False),
    sa.Column("actor_id", sa.Integer, sa.ForeignKey("readers.id"), nullable=False),
    sa.Column("decision", sa.String(16), nullable=False),
    sa.Column("new_label", sa.String(64), nullable=True),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.CheckConstraint(
        "decision IN ('accept', 'reject', 'relabel')", name="ck_amendments_decision"
    ),
    sa.CheckConstraint(
        "(decision = 'relabel') = (new_label IS NOT NULL)", name="ck_amendments_new_label"
    ),
    sa.CheckConstraint("version >= 2", name="ck_amendments_version"),
    sa.UniqueConstraint("visit_result_id", "version", name="uq_amendments_version"),
)

#: The first time a reader opened a lesion of a visit result (migration ``0005``).
lesion_views = sa.Table(
    "lesion_views",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("visit_result_id", sa.Integer, sa.ForeignKey("visit_results.id"), nullable=False),
    sa.Column("reader_id", sa.Integer, sa.ForeignKey("readers.id"), nullable=False),
    sa.Column("label", sa.String(16), nullable=False),
    sa.Column("lesion_id", sa.Integer, nullable=False),
    sa.Column("viewed_at", UTCDateTime, nullable=False),
    sa.UniqueConstraint(
        "visit_result_id", "reader_id", "label", "lesion_id", name="uq_lesion_views_first"
    ),
)

#: The review tables created by migrations ``0002_review`` and later.
REVIEW_TABLES: tuple[str, ...] = (
    "readers",
    "reader_sessions",
    "lesion_decisions",
    "adjudications",
    "visit_reviews",
    "study_lock",
    "review_settings",
    "added_lesions",
    "amendments",
    "lesion_views",
)
#: Review tables whose rows the database refuses to UPDATE or DELETE.
APPEND_ONLY_TABLES: tuple[str, ...] = (
    "lesion_decisions",
    "visit_reviews",
    "adjudications",
    "study_lock",
    "review_settings",
    "added_lesions",
    "amendments",
    "lesion_views",
)
