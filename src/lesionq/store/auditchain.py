"""The audit log's hash chain: append under a lock, verify, and keyed names.

Chain
-----
Every ``audit_log`` row carries ``prev_hash``, the ``row_hash`` of the row before
it in ``id`` order (:data:`GENESIS` for the first row), and its own ``row_hash``::

    row_hash = sha256(prev_hash + "\\n" + canonical(row))

where ``canonical(row)`` is the compact JSON text (sorted keys, ASCII) of the
fields of :func:`chain_fields`: ``at`` as ISO 8601 UTC with microseconds,
``before`` / ``after`` as the stored JSON values, the others as stored text or
null. The row ``id`` is not hashed (the links give the order). The format is
part of the stored data: changing it breaks the verification of every
existing log.

:func:`append_row` is the only writer: it locks the chain head (``audit_state``,
``SELECT ... FOR UPDATE`` on PostgreSQL; SQLite serialises its write
transactions already), computes the hashes, inserts the row and moves the head,
so two concurrent appends queue and the chain cannot fork. :func:`verify_chain`
recomputes everything and names the first bad row: a changed row fails its own
``row_hash``; an inserted or a removed row breaks the ``prev_hash`` link of the
row after it; rows removed at the end disagree with the head.

Limits: the chain detects changes made behind lesionq's back (e.g. DROP TRIGGER
then UPDATE), not a writer who recomputes every later hash and the head too; to
catch that, keep the head hash that ``lesionq audit verify`` prints somewhere
else (e.g. in the trial master file) and compare later.

Rows written before migration ``0005`` were chained by that migration as found.

Unknown login names
-------------------
A failed login whose username names no account is logged under
:func:`unknown_name`, an HMAC-SHA256 of the text with the database's random
``name_key``: a password typed into the username field never reaches the log
(nor its exports, which do not carry the key), while repeated attempts with the
same text still share one name (the login throttle counts them).
"""

from __future__ import annotations

import contextvars
import hashlib
import hmac
import json
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from ..errors import ConfigError
from .models import AuditEntry, AuditState

__all__ = [
    "GENESIS",
    "chain_fields",
    "canonical",
    "row_hash",
    "append_row",
    "audit_client",
    "current_client",
    "unknown_name",
    "ChainReport",
    "verify_chain",
]

#: ``prev_hash`` of the first row.
GENESIS = "0" * 64
_FIELDS: tuple[str, ...] = (
    "at",
    "actor",
    "action",
    "entity",
    "entity_id",
    "before",
    "after",
    "detail",
    "client",
)
_CLIENT: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "lesionq_audit_client", default=None
)


def chain_fields() -> tuple[str, ...]:
    """The ``audit_log`` columns a row's hash covers (all but ``id`` and the hashes)."""
    return _FIELDS


def _at_text(v: Any) -> str | None:
    if v is None:
        return None
    if not isinstance(v, datetime):
        raise TypeError(f"audit chain: 'at' must be a datetime, got {v!r}")
    if v.tzinfo is None:
        v = v.replace(tzinfo=UTC)
    return v.astimezone(UTC).isoformat(timespec="microseconds")


def canonical(row: Mapping[str, Any]) -> bytes:
    """The bytes a row's hash covers (see the module docstring).

    Examples
    --------
    >>> canonical({"at": datetime(2026, 1, 1, tzinfo=UTC), "actor": "a", "action": "x",
    ...            "entity": "e", "entity_id": None, "before": None, "after": {"n": 1},
    ...            "detail": None, "client": None})[:60]
    b'{"action":"x","actor":"a","after":{"n":1},"at":"2026-01-01T0'
    """
    doc = {k: row.get(k) for k in _FIELDS}
    doc["at"] = _at_text(doc["at"])
    text = json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return text.encode("ascii")


def row_hash(row: Mapping[str, Any], prev_hash: str) -> str:
    """Hex sha256 of ``prev_hash`` and the row's canonical text."""
    return hashlib.sha256(prev_hash.encode("ascii") + b"\n" + canonical(row)).hexdigest()


@contextmanager
def audit_client(address: str | None) -> Iterator[None]:
    """Within the block, audit rows record ``address`` as their client (web requests)."""
    token = _CLIENT.set(None if address is None else str(address)[:64])
    try:
        yield
    finally:
        _CLIENT.reset(token)


def current_client() -> str | None:
    """The client address set by :func:`audit_client` (None outside a web request)."""
    return _CLIENT.get()


def _head(conn: sa.Connection, *, lock: bool) -> Any:
    q = sa.select(AuditState).where(AuditState.id == 1)
    if lock:
        q = q.with_for_update()
    r = conn.execute(q).mappings().first()
    if r is None:
        raise ConfigError("results database: no audit chain head (audit_state): migration missing?")
    return r


def append_row(conn: sa.Connection, values: Mapping[str, Any]) -> int:
    """Append one audit row (the fields of :func:`chain_fields`) to the chain; its id.

    Runs in the caller's transaction and holds the chain head's lock until it ends.
    """
    head = _head(conn, lock=True)
    row = {k: values.get(k) for k in _FIELDS}
    prev = str(head["last_hash"])
    h = row_hash(row, prev)
    res = conn.execute(sa.insert(AuditEntry).values(**row, prev_hash=prev, row_hash=h))
    pk = res.inserted_primary_key
    if pk is None:  # pragma: no cover - audit_log has an integer primary key
        raise RuntimeError("audit_log: INSERT returned no primary key")
    new_id = int(pk[0])
    conn.execute(
        sa.update(AuditState)
        .where(AuditState.id == 1)
        .values(last_id=new_id, last_hash=h, n_rows=AuditState.n_rows + 1)
    )
    return new_id


def unknown_name(conn: sa.Connection, text: str) -> str:
    """The audit log's name for a login username that names no account (keyed hash).

    Examples
    --------
    The result looks like ``(unknown account 3f2a...)``: 24 hex digits of
    HMAC-SHA256(``name_key``, text).
    """
    key = bytes.fromhex(str(_head(conn, lock=False)["name_key"]))
    digest = hmac.new(key, str(text).encode("utf-8"), hashlib.sha256).hexdigest()[:24]
    return f"(unknown account {digest})"


@dataclass(frozen=True)
class ChainReport:
    """Outcome of :func:`verify_chain`.

    Attributes
    ----------
    ok : bool
    n_rows : int
        Rows checked.
    head : str
        ``row_hash`` of the last row (:data:`GENESIS` for an empty log).
    bad_id : int or None
        The first bad row (None when ``ok``, or when only the head disagrees).
    problem : str or None
        What is wrong, in words.
    """

    ok: bool
    n_rows: int
    head: str
    bad_id: int | None = None
    problem: str | None = None


def verify_chain(conn: sa.Connection) -> ChainReport:
    """Recompute the chain of the whole audit log and compare it with the stored hashes."""
    t = AuditEntry.__table__
    cols = [t.c.id, *(t.c[k] for k in _FIELDS), t.c.prev_hash, t.c.row_hash]
    prev, prev_id, n = GENESIS, None, 0
    for r in conn.execute(sa.select(*cols).order_by(t.c.id)).mappings():
        rid = int(r["id"])
        after = "the start of the log" if prev_id is None else f"row {prev_id}"
        if r["prev_hash"] is None or r["row_hash"] is None:
            return ChainReport(
                False, n, prev, rid, f"row {rid} has no hash: inserted outside lesionq"
            )
        if r["prev_hash"] != prev:
            return ChainReport(
                False,
                n,
                prev,
                rid,
                f"row {rid} does not follow {after}: a row between them was removed, "
                f"or row {rid} was inserted or moved",
            )
        if row_hash(r, prev) != r["row_hash"]:
            return ChainReport(False, n, prev, rid, f"row {rid} was changed after it was written")
        prev, prev_id, n = str(r["row_hash"]), rid, n + 1
    head = _head(conn, lock=False)
    if head["last_hash"] != prev or int(head["n_rows"]) != n or head["last_id"] != prev_id:
        return ChainReport(
            False,
            n,
            prev,
            None,
            f"the log ends at row {prev_id} ({n} rows) but its head names row "
            f"{head['last_id']} ({head['n_rows']} rows): rows at the end were removed",
        )
    return ChainReport(True, n, prev)
