"""Transactions and audit rows of the review app on the results database's engine."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from ..store.models import AuditEntry

__all__ = ["write_tx", "read_tx", "audit", "now", "inserted_id"]


def now() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(UTC)


def inserted_id(result: sa.CursorResult[Any]) -> int:
    """Primary key of the row a single-row INSERT created."""
    pk = result.inserted_primary_key
    if pk is None:  # pragma: no cover - every review table has an integer primary key
        raise RuntimeError("INSERT returned no primary key")
    return int(pk[0])


@contextmanager
def write_tx(engine: sa.Engine) -> Iterator[sa.Connection]:
    """One write transaction (SQLite: ``BEGIN IMMEDIATE``, as the store's writes)."""
    with engine.connect() as conn:
        conn.execution_options(lesionq_write=True)
        with conn.begin():
            yield conn


@contextmanager
def read_tx(engine: sa.Engine) -> Iterator[sa.Connection]:
    """One read transaction (a consistent snapshot on SQLite WAL)."""
    with engine.connect() as conn:
        with conn.begin():
            yield conn


def audit(
    conn: sa.Connection,
    *,
    actor: str,
    action: str,
    entity: str,
    entity_id: Any,
    before: Any = None,
    after: Any = None,
    detail: str | None = None,
) -> None:
    """Append one audit-log row inside the caller's transaction.

    The same row :meth:`lesionq.store.ResultsDB.audit` writes, but in the
    transaction of the change it records (the change and its audit row commit or
    fail together). ``before`` / ``after`` must be JSON-serialisable.
    """
    conn.execute(
        sa.insert(AuditEntry).values(
            at=now(),
            actor=str(actor),
            action=str(action),
            entity=str(entity),
            entity_id=None if entity_id is None else str(entity_id),
            before=before,
            after=after,
            detail=detail,
        )
    )
