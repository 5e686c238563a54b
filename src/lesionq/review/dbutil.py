"""Transactions and audit rows of the review app on the results database's engine."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from ..store.db import audit_row as audit  # one writer of audit rows, in the caller's transaction

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
