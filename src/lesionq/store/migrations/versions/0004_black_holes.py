"""Columns of the T1 black-hole step and the confident Gd+ count on ``visit_results``.

``bh_count``, ``bh_volume_mm3`` and ``bh_volume_persistent_mm3`` (T1 black holes,
``lesionq.core.black_holes``; n/a without a pre-contrast T1w) and
``gd_count_confident`` (Gd+ lesions with ``confidence >= [gd] confident_min``; n/a
without a post-contrast T1w). All nullable: results computed before this
revision keep NULL (n/a), never 0.

Revision ID: 0004_black_holes
Revises: 0003_audit_index
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004_black_holes"
down_revision: str | Sequence[str] | None = "0003_audit_index"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

#: (column, type) added to ``visit_results``, in order.
_COLUMNS: tuple[tuple[str, type[sa.types.TypeEngine]], ...] = (
    ("gd_count_confident", sa.Integer),
    ("bh_count", sa.Integer),
    ("bh_volume_mm3", sa.Float),
    ("bh_volume_persistent_mm3", sa.Float),
)


def upgrade() -> None:
    # plain ALTER TABLE on both dialects (SQLite >= 3.35 drops columns too): a batch
    # "move and copy" of visit_results could lose its partial unique index's WHERE
    for name, type_ in _COLUMNS:
        op.add_column("visit_results", sa.Column(name, type_, nullable=True))


def downgrade() -> None:
    for name, _ in reversed(_COLUMNS):
        op.drop_column("visit_results", name)
