"""Routes of the administrators: reader accounts and the study lock.

=====================================  ==============================================
``GET/POST /admin/readers``            add, disable, enable readers, change a role,
                                       reset a password
``GET/POST /admin/lock``               lock / unlock the study
=====================================  ==============================================
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response
from starlette.concurrency import run_in_threadpool

from .. import auth, state
from .common import page, redirect
from .context import Context, session_of

__all__ = ["router", "require_admin"]

router = APIRouter()


def require_admin(request: Request) -> auth.Reader:
    """The session's reader if an administrator.

    Parameters
    ----------
    request : fastapi.Request

    Returns
    -------
    lesionq.review.auth.Reader

    Raises
    ------
    lesionq.review.state.ReviewRefused
        403 otherwise.
    """
    me = session_of(request).reader
    if not me.is_admin:
        raise state.ReviewRefused(403, "administrators only")
    return me


@router.get("/admin/readers", response_class=HTMLResponse)
def admin_readers(request: Request, ctx: Context) -> Response:
    """The reader accounts page."""
    require_admin(request)
    return page(
        request, "admin_readers.html", readers=auth.list_readers(ctx.engine), roles=auth.ROLES
    )


@router.post("/admin/readers")
async def post_admin_readers(request: Request, ctx: Context) -> Response:
    """``action``: add, disable, enable, role or password (of ``username``)."""
    engine = ctx.engine
    me = require_admin(request)
    form = await request.form()
    action = form.get("action")
    username = str(form.get("username", ""))
    if action == "add":
        await run_in_threadpool(
            auth.add_reader,
            engine,
            username,
            str(form.get("role", "")),
            str(form.get("password", "")),
            actor=me.username,
        )
        return redirect("/admin/readers", msg="reader_added")
    if action in ("disable", "enable"):
        if username == me.username:
            raise state.ReviewRefused(409, "you cannot disable your own account")
        if auth.get_reader(engine, username) is None:
            raise state.ReviewRefused(404, f"no reader {username!r}")
        await run_in_threadpool(
            auth.set_reader_active, engine, username, action == "enable", actor=me.username
        )
        return redirect("/admin/readers", msg=f"reader_{action}d")
    if action in ("role", "password"):
        if auth.get_reader(engine, username) is None:
            raise state.ReviewRefused(404, f"no reader {username!r}")
        if action == "role":
            if username == me.username:
                raise state.ReviewRefused(409, "you cannot change your own role")
            await run_in_threadpool(
                auth.set_role, engine, username, str(form.get("role", "")), actor=me.username
            )
            return redirect("/admin/readers", msg="role_changed")
        await run_in_threadpool(
            auth.set_password,
            engine,
            username,
            str(form.get("password", "")),
            actor=me.username,
        )
        return redirect("/admin/readers", msg="password_reset")
    raise state.ReviewRefused(400, "action must be add, disable, enable, role or password")


@router.get("/admin/lock", response_class=HTMLResponse)
def admin_lock(request: Request, ctx: Context) -> Response:
    """The study lock page."""
    require_admin(request)
    lock = ctx.current_lock()
    return page(request, "admin_lock.html", lock=lock)


@router.post("/admin/lock")
async def post_admin_lock(request: Request, ctx: Context) -> Response:
    """``action``: lock or unlock the study, with an optional ``reason``."""
    me = require_admin(request)
    form = await request.form()
    action = form.get("action")
    if action not in ("lock", "unlock"):
        raise state.ReviewRefused(400, "action must be lock or unlock")
    reason = form.get("reason")
    await run_in_threadpool(
        state.set_lock,
        ctx.engine,
        me,
        action == "lock",
        reason if isinstance(reason, str) else None,
    )
    return redirect("/admin/lock", msg=f"{action}ed")
