"""Routes of logging in and out.

==========================  ===========================================================
``GET /login``              the login form (with a per-browser CSRF cookie); a live
                            session is sent to the worklist
``POST /login``             check the form's CSRF token and the password (throttled),
                            set the session cookie (HttpOnly, SameSite=Strict)
``POST /logout``            end the session, clear its cookie
==========================  ===========================================================
"""

from __future__ import annotations

import math

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response
from starlette.concurrency import run_in_threadpool

from .. import auth
from .common import LOGIN_CSRF_COOKIE, SESSION_COOKIE, page, redirect
from .context import Context, ReviewContext, session_of
from .security import audit_refusal

__all__ = ["router", "login_page"]

router = APIRouter()


def login_page(
    request: Request, ctx: ReviewContext, status_code: int = 200, error: str | None = None
) -> Response:
    """The login form, with a fresh login CSRF token in its form and cookie.

    Parameters
    ----------
    request : fastapi.Request
    ctx : ReviewContext
    status_code : int
    error : str or None
        Message shown above the form.

    Returns
    -------
    fastapi.responses.Response
    """
    token = auth.new_token()
    resp = page(request, "login.html", status_code=status_code, login_csrf=token, error=error)
    resp.set_cookie(
        LOGIN_CSRF_COOKIE,
        token,
        httponly=True,
        samesite="strict",
        secure=ctx.secure_cookies,
        path="/login",
        max_age=3600,
    )
    return resp


@router.get("/login", response_class=HTMLResponse)
def get_login(request: Request, ctx: Context) -> Response:
    """The login form (``/`` if the session is already live)."""
    if auth.session_for_token(ctx.engine, request.cookies.get(SESSION_COOKIE)) is not None:
        return redirect("/")
    return login_page(request, ctx)


@router.post("/login")
async def post_login(request: Request, ctx: Context) -> Response:
    """Log in: ``csrf_token``, ``username``, ``password``; 303 to ``/`` with the cookie."""
    form = await request.form()
    sent = form.get("csrf_token")
    if not auth.tokens_equal(
        sent if isinstance(sent, str) else None, request.cookies.get(LOGIN_CSRF_COOKIE)
    ):
        await audit_refusal(request, 403, "login form without a valid CSRF token")
        return login_page(request, ctx, 403, "The login form expired: please try again.")
    username, password = form.get("username"), form.get("password")
    if not isinstance(username, str) or not isinstance(password, str):
        return login_page(request, ctx, 400, "Give a username and a password.")
    try:
        result = await run_in_threadpool(
            auth.login, ctx.engine, username, password, ttl_s=ctx.session_ttl_s
        )
    except auth.LoginThrottled as exc:
        resp = login_page(request, ctx, 429, f"{str(exc).capitalize()}.")
        resp.headers["Retry-After"] = str(math.ceil(exc.retry_after_s))
        return resp
    if result is None:
        return login_page(request, ctx, 401, "Wrong username or password.")
    token, _ = result
    resp = redirect("/")
    resp.set_cookie(
        SESSION_COOKIE,
        token,
        httponly=True,
        samesite="strict",
        secure=ctx.secure_cookies,
        path="/",
        max_age=max(1, math.ceil(ctx.session_ttl_s)),
    )
    resp.delete_cookie(LOGIN_CSRF_COOKIE, path="/login")
    return resp


@router.post("/logout")
def post_logout(request: Request, ctx: Context) -> Response:
    """End the session; 303 to ``/login``."""
    auth.logout(ctx.engine, session_of(request))
    resp = redirect("/login")
    resp.delete_cookie(SESSION_COOKIE, path="/")
    return resp
