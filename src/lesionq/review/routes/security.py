"""The review app's guards: session check, CSRF, Origin, security headers, refusals.

* :func:`protect`: the app-wide dependency (deny by default): a live session, and
  for every request but GET / HEAD its CSRF token; only ``/login`` lets anonymous
  requests through;
* :func:`security_headers`: the HTTP middleware that refuses cross-origin writes
  and sets the Content-Security-Policy (per-response nonce) and the other headers;
* :func:`not_authenticated`, :func:`refused`, :func:`bad_input`: the exception
  handlers (401 / redirect to ``/login``, the error page or JSON under ``/api/``);
* :func:`audit_refusal`: the ``request.refused`` audit row of a refused request.

:func:`lesionq.review.app.create_app` registers them; they read the app's state
from ``request.app.state.review``.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from fastapi import Request
from fastapi.responses import RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from ...errors import InputError
from ...store.auditchain import audit_client
from .. import auth, state
from ..dbutil import audit, write_tx
from .common import SESSION_COOKIE, error_page
from .context import Context, review_context

__all__ = [
    "NotAuthenticated",
    "AUDITED_REFUSALS",
    "protect",
    "security_headers",
    "audit_refusal",
    "not_authenticated",
    "refused",
    "bad_input",
]

LOGGER = logging.getLogger(__name__)

#: Refusals written to the audit log (``request.refused``).
AUDITED_REFUSALS = (401, 403, 409)


class NotAuthenticated(Exception):
    """A request without a live session (answered by :func:`not_authenticated`)."""


async def protect(request: Request, ctx: Context) -> auth.Session | None:
    """App-wide dependency: a live session (and, for writes, its CSRF token).

    Every route has it (deny by default); only ``/login`` lets anonymous
    requests through.

    Parameters
    ----------
    request : fastapi.Request
    ctx : ReviewContext

    Returns
    -------
    lesionq.review.auth.Session or None
        None on ``/login``; the session is also stored in ``request.state.session``.

    Raises
    ------
    NotAuthenticated
        No live session.
    lesionq.review.state.ReviewRefused
        403: a write without the session's CSRF token.
    """
    if request.url.path == "/login":
        return None
    token = request.cookies.get(SESSION_COOKIE)
    sess = await run_in_threadpool(auth.session_for_token, ctx.engine, token)
    if sess is None:
        raise NotAuthenticated()
    request.state.session = sess
    if request.method not in ("GET", "HEAD"):
        sent = request.headers.get("x-csrf-token")
        if sent is None:
            form = await request.form()
            value = form.get("csrf_token")
            sent = value if isinstance(value, str) else None
        if not auth.tokens_equal(sent, sess.csrf_token):
            raise state.ReviewRefused(403, "missing or wrong CSRF token: reload the page")
    return sess


async def security_headers(request: Request, call_next: Callable[..., Any]) -> Response:
    """HTTP middleware: refuse cross-origin writes, set the security headers.

    Parameters
    ----------
    request : fastapi.Request
    call_next : callable
        The rest of the app.

    Returns
    -------
    fastapi.responses.Response
    """
    nonce = secrets.token_urlsafe(16)
    request.state.nonce = nonce
    origin = request.headers.get("origin")
    with audit_client(request.client.host if request.client else None):
        if origin is not None and request.method not in ("GET", "HEAD"):
            host = request.headers.get("host", "")
            if origin == "null" or urlsplit(origin).netloc != host:
                await audit_refusal(request, 403, f"cross-origin request (Origin {origin})")
                response: Response = Response("cross-origin request refused", status_code=403)
            else:
                response = await call_next(request)
        else:
            response = await call_next(request)
    h = response.headers
    h["Content-Security-Policy"] = (
        f"default-src 'none'; img-src 'self' data:; style-src 'nonce-{nonce}'; "
        f"script-src 'nonce-{nonce}'; connect-src 'self'; form-action 'self'; "
        "frame-ancestors 'none'; "
        "base-uri 'none'"
    )
    h["X-Frame-Options"] = "DENY"
    h["X-Content-Type-Options"] = "nosniff"
    h["Referrer-Policy"] = "same-origin"  # no-referrer makes Chromium send Origin: null
    if "cache-control" not in h:  # the vendored static files may be cached
        h["Cache-Control"] = "no-store"
    return response


def _audit_refusal(
    engine: Any, actor: str, client: str | None, status: int, method: str, path: str, reason: str
) -> None:
    with audit_client(client), write_tx(engine) as conn:
        audit(
            conn,
            actor=actor,
            action="request.refused",
            entity="http",
            entity_id=None,
            after={"status": status, "method": method, "path": path[:255]},
            detail=reason[:2000],
        )


async def audit_refusal(request: Request, status: int, reason: str) -> None:
    """Append ``request.refused`` (who, client address, status, method, path, why).

    The refusal stands even when its audit row cannot be written (logged). A repeat
    of the same anonymous GET or HEAD within a minute is not audited again
    (:class:`~lesionq.review.routes.context.RefusalThrottle`); every refused write
    (POST: forged CSRF, foreign origin, no session) is.

    Parameters
    ----------
    request : fastapi.Request
    status : int
        The HTTP status of the refusal.
    reason : str
    """
    sess: auth.Session | None = getattr(request.state, "session", None)
    actor = sess.reader.username if sess is not None else "(anonymous)"
    ctx = review_context(request)
    client = request.client.host if request.client else None
    if (
        sess is None
        and request.method in ("GET", "HEAD")
        and not ctx.refusals.should_audit(
            (client, request.method, request.url.path, status), time.monotonic()
        )
    ):
        return  # a repeated anonymous page request within the window (RefusalThrottle)
    try:
        await run_in_threadpool(
            _audit_refusal,
            ctx.engine,
            actor,
            client,
            status,
            request.method,
            request.url.path,
            reason,
        )
    except Exception:  # the refusal stands even when its audit row cannot be written
        LOGGER.exception("review: could not audit a refused request")


async def not_authenticated(request: Request, _: Exception) -> Response:
    """Exception handler of :class:`NotAuthenticated`: GET to ``/login``, else 401.

    Parameters
    ----------
    request : fastapi.Request
    _ : Exception

    Returns
    -------
    fastapi.responses.Response
    """
    await audit_refusal(request, 401, "no live session")
    if request.method in ("GET", "HEAD"):
        resp: Response = RedirectResponse("/login", status_code=303)
    else:
        resp = Response("login required", status_code=401, media_type="text/plain")
    resp.delete_cookie(SESSION_COOKIE, path="/")
    return resp


async def refused(request: Request, exc: Exception) -> Response:
    """Exception handler of :class:`~lesionq.review.state.ReviewRefused` (audited if 401/403/409).

    Parameters
    ----------
    request : fastapi.Request
    exc : Exception

    Returns
    -------
    fastapi.responses.Response
    """
    status = exc.status_code if isinstance(exc, state.ReviewRefused) else 500
    if status in AUDITED_REFUSALS:
        await audit_refusal(request, status, str(exc))
    return error_page(request, status, str(exc))


async def bad_input(request: Request, exc: Exception) -> Response:
    """Exception handler of :class:`~lesionq.errors.LesionQError`: 400 for bad input, else 500.

    Parameters
    ----------
    request : fastapi.Request
    exc : Exception

    Returns
    -------
    fastapi.responses.Response
    """
    status = 400 if isinstance(exc, InputError) else 500
    return error_page(request, status, str(exc))
