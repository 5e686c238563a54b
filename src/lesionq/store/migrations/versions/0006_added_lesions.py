"""Lesions a reader added (``added_lesions``): grown from a seed on the FLAIR.

One row per lesion a reader added to a visit result in the review app
(:mod:`lesionq.review.added`): the counted label (T2 or Gd), the seed voxel, the
region-growing settings, the voxel count, volume, centroid, location class and the
mask (the bounding box ``i0,j0,k0,ni,nj,nk`` and the zlib-compressed
``numpy.packbits`` of the box's voxels, C order). Append-only (UPDATE and DELETE
are refused by triggers, as for the decisions).

Revision ID: 0006_added_lesions
Revises: 0005_locked_reads_audit_chain
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006_added_lesions"
down_revision: str | Sequence[str] | None = "0005_locked_reads_audit_chain"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TABLE = "added_lesions"


def upgrade() -> None:
    """Create ``added_lesions``, its index and the append-only triggers."""
    op.create_table(
        _TABLE,
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
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("label IN ('T2', 'Gd')", name="ck_added_lesions_label"),
        sa.CheckConstraint("n_voxels > 0", name="ck_added_lesions_voxels"),
    )
    op.create_index("ix_added_lesions_result", _TABLE, ["visit_result_id", "reader_id"])
    dialect = op.get_bind().dialect.name
    if dialect == "sqlite":
        for verb in ("UPDATE", "DELETE"):
            op.execute(
                f"CREATE TRIGGER {_TABLE}_no_{verb.lower()} BEFORE {verb} ON {_TABLE} "
                f"BEGIN SELECT RAISE(ABORT, '{_TABLE} is append-only: {verb} refused'); END"
            )
    elif dialect == "postgresql":  # the function of 0002_review
        op.execute(
            f"CREATE TRIGGER {_TABLE}_append_only BEFORE UPDATE OR DELETE ON {_TABLE} "
            "FOR EACH ROW EXECUTE FUNCTION lesionq_review_append_only()"
        )
        op.execute(
            f"CREATE TRIGGER {_TABLE}_no_truncate BEFORE TRUNCATE ON {_TABLE} "
            "FOR EACH STATEMENT EXECUTE FUNCTION lesionq_review_append_only()"
        )


def downgrade() -> None:
    """Drop ``added_lesions`` (this destroys the added lesions)."""
    if op.get_bind().dialect.name == "postgresql":
        op.execute(f"DROP TRIGGER IF EXISTS {_TABLE}_append_only ON {_TABLE}")
        op.execute(f"DROP TRIGGER IF EXISTS {_TABLE}_no_truncate ON {_TABLE}")
    else:
        op.execute(f"DROP TRIGGER IF EXISTS {_TABLE}_no_update")
        op.execute(f"DROP TRIGGER IF EXISTS {_TABLE}_no_delete")
    op.drop_index("ix_added_lesions_result", table_name=_TABLE)
    op.drop_table(_TABLE)
