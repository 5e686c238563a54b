"""Helpers that several routes of the review app share.

Rendering a page (:func:`page`, :func:`error_page`), redirecting after a POST
(:func:`redirect`), parsing form fields (:func:`parse_lesion`, :func:`int_field`),
the data of the server-side slice viewer (:func:`slice_viewer`) and recording a
lesion decision from a form (:func:`decide_from_form`). The per-app state comes
from the :class:`~lesionq.review.routes.context.ReviewContext` of the request's app.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import jinja2
from fastapi import Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from ...qc.slices import AXES
from .. import auth, state
from ..decisions import LesionKey, parse_choice
from ..images import OVERLAYS, canonical_slice_of
from ..images import slice_sources as _slice_sources
from .context import ReviewContext, review_context, session_of

__all__ = [
    "SESSION_COOKIE",
    "LOGIN_CSRF_COOKIE",
    "TEMPLATES",
    "make_env",
    "page",
    "error_page",
    "redirect",
    "parse_lesion",
    "lesion_or_none",
    "int_field",
    "available",
    "slice_viewer",
    "decide_from_form",
]

#: Session cookie name.
SESSION_COOKIE = "lesionq_session"
#: Cookie of the login form's CSRF token.
LOGIN_CSRF_COOKIE = "lesionq_login_csrf"

#: Folder of the page templates (package data).
TEMPLATES = Path(__file__).resolve().parent.parent / "templates"
_LESION_RE = re.compile(r"^([A-Za-z0-9]{1,16}):([0-9]{1,9})$")
_MESSAGES = {
    "saved": "Decision saved.",
    "unchanged": "Decision unchanged.",
    "submitted": "Review submitted.",
    "adjudicated": "Adjudication saved.",
    "locked": "The study is locked.",
    "unlocked": "The study is unlocked.",
    "reader_added": "Reader added.",
    "amended": "Amendment recorded: a new review version.",
    "role_changed": "Role changed.",
    "password_reset": "Password reset (the reader's sessions ended).",
    "reader_disabled": "Reader disabled.",
    "reader_enabled": "Reader enabled.",
}


def make_env() -> jinja2.Environment:
    """The Jinja environment of the page templates (autoescaped, strict undefined).

    Returns
    -------
    jinja2.Environment
    """
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES)),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["num"] = _num
    return env


def _num(v: Any, digits: int = 1) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def page(request: Request, template: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    """Render ``template`` with ``context`` and the request's nonce, session and message.

    Parameters
    ----------
    request : fastapi.Request
    template : str
        Template file name.
    status_code : int
    **context
        Template variables.

    Returns
    -------
    fastapi.responses.HTMLResponse
    """
    sess: auth.Session | None = getattr(request.state, "session", None)
    body = (
        review_context(request)
        .env.get_template(template)
        .render(
            nonce=request.state.nonce,
            session=sess,
            me=None if sess is None else sess.reader,
            csrf=None if sess is None else sess.csrf_token,
            message=_MESSAGES.get(request.query_params.get("msg", "")),
            **context,
        )
    )
    return HTMLResponse(body, status_code=status_code)


def error_page(request: Request, status_code: int, message: str) -> Response:
    """The error page, or JSON ``{"error": message}`` under ``/api/``.

    Parameters
    ----------
    request : fastapi.Request
    status_code : int
    message : str

    Returns
    -------
    fastapi.responses.Response
    """
    if request.url.path.startswith("/api/"):  # the viewer's JSON routes
        return JSONResponse({"error": message}, status_code=status_code)
    return page(request, "error.html", status_code=status_code, code=status_code, text=message)


def redirect(path: str, **query: str) -> RedirectResponse:
    """303 to ``path`` with the non-empty ``query`` parameters.

    Parameters
    ----------
    path : str
    **query : str

    Returns
    -------
    fastapi.responses.RedirectResponse
    """
    q = urlencode({k: v for k, v in query.items() if v})
    return RedirectResponse(path + (f"?{q}" if q else ""), status_code=303)


def parse_lesion(text: str) -> LesionKey:
    """``LABEL:ID`` as a :class:`~lesionq.review.decisions.LesionKey`; 400 if malformed.

    Parameters
    ----------
    text : str

    Returns
    -------
    LesionKey

    Raises
    ------
    lesionq.review.state.ReviewRefused
        400: not ``LABEL:ID``.
    """
    m = _LESION_RE.match(str(text or ""))
    if m is None:
        raise state.ReviewRefused(400, f"bad lesion reference {text!r} (expected LABEL:ID)")
    return LesionKey(m.group(1), int(m.group(2)))


def lesion_or_none(text: str) -> LesionKey | None:
    """:func:`parse_lesion`, or None when ``text`` is malformed.

    Parameters
    ----------
    text : str

    Returns
    -------
    LesionKey or None
    """
    try:
        return parse_lesion(text)
    except state.ReviewRefused:
        return None


def int_field(form: Any, name: str) -> int:
    """Form field ``name`` as an integer; 400 if it is not one.

    Parameters
    ----------
    form : starlette.datastructures.FormData
    name : str

    Returns
    -------
    int

    Raises
    ------
    lesionq.review.state.ReviewRefused
        400: missing or not an integer.
    """
    raw = form.get(name)
    try:
        return int(str(raw))
    except (TypeError, ValueError):
        raise state.ReviewRefused(400, f"form field {name!r} must be an integer") from None


def available(ctx: ReviewContext, st: state.ReviewState, overlay: str) -> bool:
    """Whether the visit has the images of ``overlay`` (its label image too, if any).

    Parameters
    ----------
    ctx : ReviewContext
    st : lesionq.review.state.ReviewState
    overlay : str
        A key of :data:`lesionq.review.images.OVERLAYS`.

    Returns
    -------
    bool
    """
    bg, lab = _slice_sources(ctx.out_root, st.visit.participant_id, st.visit.session_id, overlay)
    return bg is not None and (OVERLAYS[overlay].labels is None or lab is not None)


def slice_viewer(
    ctx: ReviewContext,
    st: state.ReviewState,
    axis: str,
    index: int | None,
    overlay: str,
    highlight: str,
) -> dict[str, Any]:
    """What the server-side slice viewer of a page shows (``view`` in the templates).

    Parameters
    ----------
    ctx : ReviewContext
    st : lesionq.review.state.ReviewState
    axis : str
        A key of :data:`lesionq.qc.slices.AXES`.
    index : int or None
        Slice index (clamped); None: the slice of the highlighted (else the largest)
        lesion, else the middle one.
    overlay : str
        A key of :data:`lesionq.review.images.OVERLAYS`.
    highlight : str
        ``LABEL:ID`` of the lesion to highlight, or ``""``.

    Returns
    -------
    dict

    Raises
    ------
    lesionq.review.state.ReviewRefused
        400: unknown ``axis`` or ``overlay``.
    """
    if axis not in AXES:
        raise state.ReviewRefused(400, f"axis must be one of {sorted(AXES)}, got {axis!r}")
    if overlay not in OVERLAYS:
        raise state.ReviewRefused(400, f"overlay must be one of {sorted(OVERLAYS)}")
    bg, lab = _slice_sources(ctx.out_root, st.visit.participant_id, st.visit.session_id, overlay)
    info: dict[str, Any] = {
        "available": bg is not None,
        "axis": axis,
        "overlay": overlay,
        "overlays": [o for o in OVERLAYS if available(ctx, st, o)],
        "axes": list(AXES),
        "highlight": highlight,
        "has_labels": lab is not None,
    }
    if bg is None:
        return info
    vol = ctx.cache.load(bg)
    n = vol.canonical_shape[AXES[axis]]
    hl_key = None
    if highlight:
        try:
            hl_key = parse_lesion(highlight)
        except state.ReviewRefused:
            hl_key = None
    if index is None:
        target = next((les for les in st.visit.lesions if les.key == hl_key), None)
        if target is None and st.visit.lesions:
            target = max(st.visit.lesions, key=lambda les: les.volume_mm3 or 0.0)
        if target is not None and target.centroid_mm is not None:
            index = canonical_slice_of(vol.affine, vol.data.shape, target.centroid_mm, axis)
        else:
            index = n // 2
    info.update(index=min(max(int(index), 0), n - 1), n=n)
    info["hl_id"] = (
        hl_key.lesion_id
        if hl_key is not None and hl_key.label == OVERLAYS[overlay].lesion_label
        else None
    )
    return info


async def decide_from_form(
    request: Request,
    ctx: ReviewContext,
    visit_id: int,
    record: Callable[..., state.DecisionRow | None],
) -> tuple[LesionKey, state.DecisionRow | None]:
    """Parse a lesion decision form and record it with ``record`` (decision or adjudication).

    Parameters
    ----------
    request : fastapi.Request
        A form with ``lesion``, ``choice``, ``result_id`` and optionally ``comment``.
    ctx : ReviewContext
    visit_id : int
    record : callable
        :func:`lesionq.review.state.record_decision` or
        :func:`lesionq.review.state.adjudicate`.

    Returns
    -------
    key : LesionKey
    row : lesionq.review.state.DecisionRow or None
        None when the decision did not change.
    """
    form = await request.form()
    key = parse_lesion(str(form.get("lesion", "")))
    comment = form.get("comment")
    row = await run_in_threadpool(
        record,
        ctx.engine,
        session_of(request).reader,
        visit_id,
        int_field(form, "result_id"),
        key,
        parse_choice(key.label, str(form.get("choice", ""))),
        comment if isinstance(comment, str) else None,
        readers_required=ctx.readers_required,
    )
    return key, row
