"""Reader accounts, password hashing and server-side sessions of the review app.

* Passwords: :func:`hashlib.scrypt` (n=2**14, r=8, p=1, 16-byte random salt, 32-byte
  key), stored as ``scrypt$n$r$p$<salt hex>$<key hex>``; compared in constant time
  (:func:`hmac.compare_digest`). An unknown username costs the same hashing as a
  wrong password.
* Sessions: a random 256-bit token in an ``HttpOnly``, ``SameSite=Strict`` cookie;
  the database keeps only its sha256 (``reader_sessions``), an absolute expiry
  (``session_ttl_s`` after login), a revocation time (logout, account disabled) and
  the session's CSRF token, which every POST must carry.
* Roles: ``reader`` (reads visits), ``adjudicator`` (reads, and adjudicates visits it
  did not read), ``admin`` (manages readers, locks the study; reads nothing).

Every account change, login, failed login and logout is written to the audit log.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import math
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any

import sqlalchemy as sa

from ..errors import InputError, LesionQError
from ..store.auditchain import unknown_name
from ..store.models import AuditEntry
from .dbutil import audit, inserted_id, now, read_tx, write_tx
from .models import reader_sessions, readers

__all__ = [
    "ROLES",
    "DEFAULT_SESSION_TTL_S",
    "MIN_PASSWORD_LENGTH",
    "USERNAME_PATTERN",
    "Reader",
    "Session",
    "hash_password",
    "verify_password",
    "new_token",
    "token_sha256",
    "tokens_equal",
    "add_reader",
    "set_reader_active",
    "set_password",
    "set_role",
    "list_readers",
    "get_reader",
    "login",
    "LoginThrottled",
    "MAX_FAILED_LOGINS",
    "FAILED_LOGIN_WINDOW_S",
    "session_for_token",
    "logout",
]

LOGGER = logging.getLogger(__name__)

#: Reader roles.
ROLES: tuple[str, ...] = ("reader", "adjudicator", "admin")
#: Default session lifetime (seconds, absolute from login).
DEFAULT_SESSION_TTL_S = 8 * 3600.0
#: Shortest accepted password (characters).
MIN_PASSWORD_LENGTH = 10
#: Usernames: 2-64 characters, letters, digits, ``_ . -``, starting with a letter or digit.
USERNAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{1,63}$")

#: Failed logins of one username within FAILED_LOGIN_WINDOW_S before further
#: attempts are refused (whatever the password) until the oldest falls out of it.
MAX_FAILED_LOGINS = 5
#: Window of the failed-login count (seconds).
FAILED_LOGIN_WINDOW_S = 15 * 60.0

_SCRYPT_N = 2**14
_SCRYPT_R = 8
_SCRYPT_P = 1
_SCRYPT_DKLEN = 32


@dataclass(frozen=True)
class Reader:
    """A reader account (no password hash)."""

    id: int
    username: str
    role: str
    active: bool

    @property
    def can_read(self) -> bool:
        """Readers and adjudicators read visits."""
        return self.role in ("reader", "adjudicator")

    @property
    def can_adjudicate(self) -> bool:
        """Only adjudicators adjudicate."""
        return self.role == "adjudicator"

    @property
    def is_admin(self) -> bool:
        """Administrators manage readers and the study lock."""
        return self.role == "admin"


@dataclass(frozen=True)
class Session:
    """A live login session."""

    id: int
    reader: Reader
    csrf_token: str
    expires_at: datetime


# ----------------------------------------------------------------------------- secrets


def hash_password(password: str, *, n: int = _SCRYPT_N) -> str:
    """scrypt hash of ``password`` with a fresh random salt (``scrypt$n$r$p$salt$key``).

    Examples
    --------
    >>> h = hash_password("correct horse", n=2**10)
    >>> h.startswith("scrypt$1024$8$1$"), verify_password("correct horse", h)
    (True, True)
    >>> verify_password("wrong horse", h)
    False
    """
    salt = secrets.token_bytes(16)
    key = hashlib.scrypt(
        password.encode("utf-8"), salt=salt, n=n, r=_SCRYPT_R, p=_SCRYPT_P, dklen=_SCRYPT_DKLEN
    )
    return f"scrypt${n}${_SCRYPT_R}${_SCRYPT_P}${salt.hex()}${key.hex()}"


def verify_password(password: str, encoded: str) -> bool:
    """True when ``password`` matches the stored ``encoded`` hash (constant-time compare)."""
    try:
        scheme, n, r, p, salt_hex, key_hex = encoded.split("$")
        if scheme != "scrypt":
            return False
        salt, key = bytes.fromhex(salt_hex), bytes.fromhex(key_hex)
        got = hashlib.scrypt(
            password.encode("utf-8"), salt=salt, n=int(n), r=int(r), p=int(p), dklen=len(key)
        )
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got, key)


@lru_cache(maxsize=1)
def _dummy_hash() -> str:
    return hash_password(secrets.token_hex(16))


def new_token() -> str:
    """A random URL-safe token (256 bits)."""
    return secrets.token_urlsafe(32)


def token_sha256(token: str) -> str:
    """Hex sha256 of a session token (what the database stores)."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def tokens_equal(a: str | None, b: str | None) -> bool:
    """Constant-time comparison of two tokens; False when either is missing or empty."""
    if not a or not b:
        return False
    return hmac.compare_digest(a.encode("utf-8"), b.encode("utf-8"))


# ----------------------------------------------------------------------------- accounts


def _reader(row: Any) -> Reader:
    return Reader(
        id=int(row["id"]), username=row["username"], role=row["role"], active=bool(row["active"])
    )


def _check_password(password: str) -> None:
    if not isinstance(password, str) or len(password) < MIN_PASSWORD_LENGTH:
        raise InputError(
            f"reader password: at least {MIN_PASSWORD_LENGTH} characters required "
            f"(got {len(password) if isinstance(password, str) else 0})"
        )


def get_reader(engine: sa.Engine, username: str) -> Reader | None:
    """The account ``username`` (None when there is none)."""
    with read_tx(engine) as conn:
        row = conn.execute(sa.select(readers).where(readers.c.username == username)).mappings()
        r = row.first()
    return None if r is None else _reader(r)


def add_reader(engine: sa.Engine, username: str, role: str, password: str, *, actor: str) -> Reader:
    """Create an active account.

    Raises
    ------
    InputError
        Bad username (see :data:`USERNAME_PATTERN`), unknown role, short password,
        or the username is taken.
    """
    if not isinstance(username, str) or not USERNAME_PATTERN.match(username):
        raise InputError(
            f"reader username {username!r}: 2-64 letters, digits, '_', '.', '-' "
            "(starting with a letter or digit)"
        )
    if role not in ROLES:
        raise InputError(f"reader role must be one of {ROLES}, got {role!r}")
    _check_password(password)
    hashed = hash_password(password)
    with write_tx(engine) as conn:
        taken = conn.execute(sa.select(readers.c.id).where(readers.c.username == username)).first()
        if taken is not None:
            raise InputError(f"reader {username!r} exists already")
        t = now()
        rid = inserted_id(
            conn.execute(
                sa.insert(readers).values(
                    username=username,
                    role=role,
                    password_hash=hashed,
                    active=True,
                    created_at=t,
                    updated_at=t,
                )
            )
        )
        audit(
            conn,
            actor=actor,
            action="reader.added",
            entity="readers",
            entity_id=rid,
            after={"username": username, "role": role, "active": True},
        )
    return Reader(id=int(rid), username=username, role=role, active=True)


def set_reader_active(engine: sa.Engine, username: str, active: bool, *, actor: str) -> Reader:
    """Enable or disable an account; disabling also ends its sessions."""
    with write_tx(engine) as conn:
        r = (
            conn.execute(sa.select(readers).where(readers.c.username == username))
            .mappings()
            .first()
        )
        if r is None:
            raise InputError(f"no reader {username!r}")
        t = now()
        conn.execute(
            sa.update(readers).where(readers.c.id == r["id"]).values(active=active, updated_at=t)
        )
        n_revoked = 0
        if not active:
            n_revoked = conn.execute(
                sa.update(reader_sessions)
                .where(
                    reader_sessions.c.reader_id == r["id"], reader_sessions.c.revoked_at.is_(None)
                )
                .values(revoked_at=t)
            ).rowcount
        audit(
            conn,
            actor=actor,
            action="reader.enabled" if active else "reader.disabled",
            entity="readers",
            entity_id=r["id"],
            before={"username": username, "active": bool(r["active"])},
            after={"username": username, "active": bool(active)},
            detail=f"{n_revoked} sessions ended" if not active else None,
        )
    return Reader(id=int(r["id"]), username=username, role=r["role"], active=bool(active))


def set_password(engine: sa.Engine, username: str, password: str, *, actor: str) -> None:
    """Replace an account's password and end its sessions (the hash is never audited)."""
    _check_password(password)
    hashed = hash_password(password)
    with write_tx(engine) as conn:
        r = conn.execute(sa.select(readers.c.id).where(readers.c.username == username)).first()
        if r is None:
            raise InputError(f"no reader {username!r}")
        t = now()
        conn.execute(
            sa.update(readers)
            .where(readers.c.id == r[0])
            .values(password_hash=hashed, updated_at=t)
        )
        conn.execute(
            sa.update(reader_sessions)
            .where(reader_sessions.c.reader_id == r[0], reader_sessions.c.revoked_at.is_(None))
            .values(revoked_at=t)
        )
        audit(
            conn,
            actor=actor,
            action="reader.password_changed",
            entity="readers",
            entity_id=r[0],
            after={"username": username},
        )


def set_role(engine: sa.Engine, username: str, role: str, *, actor: str) -> Reader:
    """Change an account's role (audited as ``reader.role_changed``; effective at once).

    Raises
    ------
    InputError
        Unknown role or account.
    """
    if role not in ROLES:
        raise InputError(f"reader role must be one of {ROLES}, got {role!r}")
    with write_tx(engine) as conn:
        r = (
            conn.execute(sa.select(readers).where(readers.c.username == username))
            .mappings()
            .first()
        )
        if r is None:
            raise InputError(f"no reader {username!r}")
        if r["role"] != role:
            conn.execute(
                sa.update(readers)
                .where(readers.c.id == r["id"])
                .values(role=role, updated_at=now())
            )
            audit(
                conn,
                actor=actor,
                action="reader.role_changed",
                entity="readers",
                entity_id=r["id"],
                before={"username": username, "role": r["role"]},
                after={"username": username, "role": role},
            )
    return Reader(id=int(r["id"]), username=username, role=role, active=bool(r["active"]))


def list_readers(engine: sa.Engine) -> list[dict[str, Any]]:
    """Every account (``id``, ``username``, ``role``, ``active``, ``created_at``), by username."""
    cols = [
        readers.c.id,
        readers.c.username,
        readers.c.role,
        readers.c.active,
        readers.c.created_at,
    ]
    with read_tx(engine) as conn:
        rows = conn.execute(sa.select(*cols).order_by(readers.c.username)).mappings().all()
    return [dict(r) for r in rows]


# ----------------------------------------------------------------------------- sessions


class LoginThrottled(LesionQError):
    """Too many failed logins for a username: refused for ``retry_after_s`` seconds."""

    def __init__(self, username: str, retry_after_s: float) -> None:
        self.retry_after_s = max(1.0, float(retry_after_s))
        super().__init__(
            f"too many failed logins for {username!r}: try again in "
            f"{math.ceil(self.retry_after_s / 60)} min"
        )


def _throttle_wait_s(
    conn: sa.Connection, username: str, max_failures: int, window_s: float
) -> float:
    """Seconds until ``username`` may try again (0: now), from the audited failures."""
    since = now() - timedelta(seconds=window_s)
    times = (
        conn.execute(
            sa.select(AuditEntry.at)
            .where(
                AuditEntry.action == "reader.login_failed",
                AuditEntry.actor == username,
                AuditEntry.at > since,
            )
            .order_by(AuditEntry.at.desc())
            .limit(max_failures)
        )
        .scalars()
        .all()
    )
    if len(times) < max_failures:
        return 0.0
    oldest = min(t if t.tzinfo else t.replace(tzinfo=UTC) for t in times)
    return max(0.0, (oldest - since).total_seconds())


def login(
    engine: sa.Engine,
    username: str,
    password: str,
    *,
    ttl_s: float,
    max_failures: int = MAX_FAILED_LOGINS,
    window_s: float = FAILED_LOGIN_WINDOW_S,
) -> tuple[str, Session] | None:
    """Check the credentials and open a session.

    Parameters
    ----------
    engine : sqlalchemy.Engine
    username, password : str
    ttl_s : float
        Session lifetime (seconds, absolute from login).
    max_failures, window_s : int, float
        Throttle: after ``max_failures`` failed logins of ``username`` within the
        last ``window_s`` seconds (counted from the audit log, so it holds across
        processes), further attempts are refused until the oldest of them is
        older than the window, whatever the password. Refusals are audited as
        ``reader.login_throttled`` and do not extend the lock.

    Returns
    -------
    (token, Session) or None
        The cookie token (shown once; only its hash is stored) and the session;
        None for an unknown or disabled account or a wrong password (audited as
        ``reader.login_failed`` without telling which). A username that names no
        account is audited as its keyed hash
        (:func:`lesionq.store.auditchain.unknown_name`), never as typed.

    Raises
    ------
    LoginThrottled
        Too many recent failures for this username.
    """
    username = str(username)[:64]
    with read_tx(engine) as conn:
        r = (
            conn.execute(sa.select(readers).where(readers.c.username == username))
            .mappings()
            .first()
        )
        # the audit log's name for this attempt: a text that names no account (perhaps a
        # password typed into the wrong field) is logged as its keyed hash only
        actor = username if r is not None else unknown_name(conn, username)
        wait_s = _throttle_wait_s(conn, actor, max_failures, window_s)
    if wait_s > 0:
        with write_tx(engine) as conn:
            audit(
                conn,
                actor=actor,
                action="reader.login_throttled",
                entity="readers",
                entity_id=None,
                detail=f"{max_failures} failed logins within {window_s:.0f} s",
            )
        raise LoginThrottled(username, wait_s)
    ok = verify_password(password, r["password_hash"] if r is not None else _dummy_hash())
    if r is None or not ok or not r["active"]:
        with write_tx(engine) as conn:
            audit(
                conn,
                actor=actor,
                action="reader.login_failed",
                entity="readers",
                entity_id=None if r is None else r["id"],
                detail="unknown account"
                if r is None
                else ("account disabled" if not r["active"] else "wrong password"),
            )
        return None
    token, csrf = new_token(), new_token()
    t = now()
    expires = t + timedelta(seconds=float(ttl_s))
    with write_tx(engine) as conn:
        sid = inserted_id(
            conn.execute(
                sa.insert(reader_sessions).values(
                    token_sha256=token_sha256(token),
                    reader_id=r["id"],
                    csrf_token=csrf,
                    created_at=t,
                    expires_at=expires,
                )
            )
        )
        audit(
            conn,
            actor=username,
            action="reader.login",
            entity="reader_sessions",
            entity_id=sid,
            after={"expires_at": expires.isoformat()},
        )
    return token, Session(id=int(sid), reader=_reader(r), csrf_token=csrf, expires_at=expires)


def session_for_token(engine: sa.Engine, token: str | None) -> Session | None:
    """The live session of a cookie token (None: missing, unknown, expired, revoked, disabled)."""
    if not token or len(token) > 128:
        return None
    q = (
        sa.select(
            reader_sessions.c.id.label("sid"),
            reader_sessions.c.csrf_token,
            reader_sessions.c.expires_at,
            reader_sessions.c.revoked_at,
            readers,
        )
        .join(readers, readers.c.id == reader_sessions.c.reader_id)
        .where(reader_sessions.c.token_sha256 == token_sha256(token))
    )
    with read_tx(engine) as conn:
        r = conn.execute(q).mappings().first()
    if r is None or r["revoked_at"] is not None or not r["active"]:
        return None
    if r["expires_at"] <= now():
        return None
    return Session(
        id=int(r["sid"]), reader=_reader(r), csrf_token=r["csrf_token"], expires_at=r["expires_at"]
    )


def logout(engine: sa.Engine, session: Session) -> None:
    """End a session (audited as ``reader.logout``)."""
    with write_tx(engine) as conn:
        conn.execute(
            sa.update(reader_sessions)
            .where(reader_sessions.c.id == session.id, reader_sessions.c.revoked_at.is_(None))
            .values(revoked_at=now())
        )
        audit(
            conn,
            actor=session.reader.username,
            action="reader.logout",
            entity="reader_sessions",
            entity_id=session.id,
        )
