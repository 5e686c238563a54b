"""Locked reads (amendments, per-lesion views) and the hash-chained audit log.

* ``audit_log`` gets ``client`` (the client address of a web request, else NULL),
  ``prev_hash`` and ``row_hash``: every row carries the sha256 of the previous
  row, and its own (:mod:`lesionq.store.auditchain`).
* ``audit_state`` (one row, ``id = 1``): the head of the chain (``last_id``,
  ``last_hash``, ``n_rows``), locked by every append so that appends are
  serialised and the chain cannot fork, and ``name_key``, the random key of the
  keyed hash under which a failed login's unknown username is logged.
* ``amendments``: an adjudicator's or administrator's change of a final visit's
  decision on one lesion, with its mandatory reason and the review ``version``
  it creates (2, 3, ...; unique per visit result). Append-only.
* ``lesion_views``: the first time a reader opened a lesion of a visit result
  (one row per reader, result and lesion). Append-only.

Rows of ``audit_log`` written before this revision are chained here, in ``id``
order, as they are found: the chain vouches for them from this migration on,
not for what happened to them before.

Revision ID: 0005_locked_reads_audit_chain
Revises: 0004_black_holes
Create Date: 2026-12-07
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005_locked_reads_audit_chain"
down_revision: str | Sequence[str] | None = "0004_black_holes"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

#: New review tables whose rows are never updated nor deleted (enforced by triggers).
APPEND_ONLY_TABLES: tuple[str, ...] = ("amendments", "lesion_views")
_AUDIT_COLUMNS: tuple[tuple[str, sa.types.TypeEngine], ...] = (
    ("client", sa.String(64)),
    ("prev_hash", sa.String(64)),
    ("row_hash", sa.String(64)),
)


def _ts() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def _backfill_chain(conn: sa.Connection) -> None:
    """Chain the existing audit rows and store the head (triggers are off meanwhile)."""
    from lesionq.store.auditchain import GENESIS, chain_fields, row_hash
    from lesionq.store.models import AuditEntry

    table = AuditEntry.__table__
    cols = [table.c[name] for name in ("id", *chain_fields())]
    prev, last_id, n = GENESIS, None, 0
    rows = conn.execute(sa.select(*cols).order_by(table.c.id)).mappings().all()
    for r in rows:
        h = row_hash(r, prev)
        conn.execute(
            sa.update(table).where(table.c.id == r["id"]).values(prev_hash=prev, row_hash=h)
        )
        prev, last_id, n = h, int(r["id"]), n + 1
    conn.execute(
        sa.text(
            "INSERT INTO audit_state (id, last_id, last_hash, n_rows, name_key) "
            "VALUES (1, :last_id, :last_hash, :n, :key)"
        ),
        {"last_id": last_id, "last_hash": prev, "n": n, "key": secrets.token_hex(32)},
    )


def upgrade() -> None:
    """Add the chain columns and tables, back-fill the chain, create the review tables."""
    dialect = op.get_bind().dialect.name
    if dialect not in ("sqlite", "postgresql"):
        raise NotImplementedError(f"lesionq: dialect {dialect!r} is not supported")
    for name, type_ in _AUDIT_COLUMNS:
        op.add_column("audit_log", sa.Column(name, type_, nullable=True))
    op.create_table(
        "audit_state",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("last_id", sa.Integer, nullable=True),
        sa.Column("last_hash", sa.String(64), nullable=False),
        sa.Column("n_rows", sa.Integer, nullable=False),
        sa.Column("name_key", sa.String(64), nullable=False),
        sa.CheckConstraint("id = 1", name="ck_audit_state_one_row"),
    )
    # the append-only triggers refuse the back-fill's UPDATEs: off, then on again
    if dialect == "sqlite":
        op.execute("DROP TRIGGER IF EXISTS audit_log_no_update")
    else:
        op.execute("ALTER TABLE audit_log DISABLE TRIGGER audit_log_no_update_delete")
    _backfill_chain(op.get_bind())
    if dialect == "sqlite":
        op.execute(
            "CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log "
            "BEGIN SELECT RAISE(ABORT, 'audit_log is append-only: UPDATE refused'); END"
        )
    else:
        op.execute("ALTER TABLE audit_log ENABLE TRIGGER audit_log_no_update_delete")

    op.create_table(
        "amendments",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("visit_result_id", sa.Integer, sa.ForeignKey("visit_results.id"), nullable=False),
        sa.Column("label", sa.String(16), nullable=False),
        sa.Column("lesion_id", sa.Integer, nullable=False),
        sa.Column("actor_id", sa.Integer, sa.ForeignKey("readers.id"), nullable=False),
        sa.Column("decision", sa.String(16), nullable=False),
        sa.Column("new_label", sa.String(64), nullable=True),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("created_at", _ts(), nullable=False),
        sa.CheckConstraint(
            "decision IN ('accept', 'reject', 'relabel')", name="ck_amendments_decision"
        ),
        sa.CheckConstraint(
            "(decision = 'relabel') = (new_label IS NOT NULL)", name="ck_amendments_new_label"
        ),
        sa.CheckConstraint("version >= 2", name="ck_amendments_version"),
        sa.UniqueConstraint("visit_result_id", "version", name="uq_amendments_version"),
    )
    op.create_table(
        "lesion_views",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("visit_result_id", sa.Integer, sa.ForeignKey("visit_results.id"), nullable=False),
        sa.Column("reader_id", sa.Integer, sa.ForeignKey("readers.id"), nullable=False),
        sa.Column("label", sa.String(16), nullable=False),
        sa.Column("lesion_id", sa.Integer, nullable=False),
        sa.Column("viewed_at", _ts(), nullable=False),
        sa.UniqueConstraint(
            "visit_result_id", "reader_id", "label", "lesion_id", name="uq_lesion_views_first"
        ),
    )
    if dialect == "sqlite":
        for table in APPEND_ONLY_TABLES:
            for verb in ("UPDATE", "DELETE"):
                op.execute(
                    f"CREATE TRIGGER {table}_no_{verb.lower()} BEFORE {verb} ON {table} "
                    f"BEGIN SELECT RAISE(ABORT, '{table} is append-only: {verb} refused'); END"
                )
    else:
        for table in APPEND_ONLY_TABLES:  # the function comes from 0002_review
            op.execute(
                f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table} "
                "FOR EACH ROW EXECUTE FUNCTION lesionq_review_append_only()"
            )
            op.execute(
                f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table} "
                "FOR EACH STATEMENT EXECUTE FUNCTION lesionq_review_append_only()"
            )


def downgrade() -> None:
    """Drop the amendments, views, chain head and chain columns (the hashes are lost)."""
    dialect = op.get_bind().dialect.name
    for table in APPEND_ONLY_TABLES:
        if dialect == "postgresql":
            op.execute(f"DROP TRIGGER IF EXISTS {table}_append_only ON {table}")
            op.execute(f"DROP TRIGGER IF EXISTS {table}_no_truncate ON {table}")
        else:
            op.execute(f"DROP TRIGGER IF EXISTS {table}_no_update")
            op.execute(f"DROP TRIGGER IF EXISTS {table}_no_delete")
        op.drop_table(table)
    op.drop_table("audit_state")
    for name, _ in reversed(_AUDIT_COLUMNS):
        op.drop_column("audit_log", name)
