"""Index on the audit log for look-ups by action, actor and time.

The review app's login throttle counts an account's recent
``reader.login_failed`` rows on every login; without an index that is a scan
of the whole (append-only, ever-growing) audit log.

Revision ID: 0003_audit_index
Revises: 0002_review
Create Date: 2026-11-26
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0003_audit_index"
down_revision: str | Sequence[str] | None = "0002_review"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_audit_log_action_actor_at", "audit_log", ["action", "actor", "at"])


def downgrade() -> None:
    op.drop_index("ix_audit_log_action_actor_at", table_name="audit_log")
