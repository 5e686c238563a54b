"""The review web app: FastAPI, server-rendered pages, no external assets.

Pages (all but ``/login`` need a logged-in reader; an anonymous GET is sent to
``/login``, any other anonymous request gets 401):

=====================================  ==============================================
``GET/POST /login``, ``POST /logout``  session cookie (HttpOnly, SameSite=Strict)
``GET /``                              worklist, filters ``?site=`` and ``?status=``,
                                       ``?sort=`` (a :data:`WORKLIST_SORTS` column,
                                       ``-`` for descending)
``GET /visits/{id}``                   pictures, counts, lesion table, slice viewer
                                       (``?lesion=`` records the lesion's first view)
``POST /visits/{id}/decision``         accept / reject / relabel one lesion
``GET /visits/{id}/slice``             PNG: ``axis``, ``index`` (clamped), ``overlay``
``POST /visits/{id}/viewed``           record a lesion's first view (form or JSON
                                       ``lesion``; answers JSON)
``POST /visits/{id}/submit``           submit the reader's review of the visit; without
                                       ``confirm=1`` it answers the confirmation page
                                       listing the lesions never opened
``GET/POST /adjudicate/{id}``          adjudicator: readers ("Reader A/B") side by
                                       side, QC pictures, decide
``GET/POST /visits/{id}/amend``        adjudicator (not a reader of the visit) or
                                       admin: change a final decision, with a reason
                                       (a new review version)
``GET/POST /admin/readers``            admin: add, disable, enable readers, change a
                                       role, reset a password
``GET/POST /admin/lock``               admin: lock / unlock the study
``GET /figures/{id}/{name}``           the visit's QC pictures (by exact name only)
``/static/...``, ``/api/...``,         the NiiVue viewer, decisions saved in place
``/visits/{id}/volume/...``, ...       (JSON) and adding a lesion: see
                                       :mod:`lesionq.review.viewer`
=====================================  ==============================================

Every POST carries the session's CSRF token (form field ``csrf_token`` or header
``X-CSRF-Token``); the login form a per-browser token (double-submit cookie). A
request whose ``Origin`` is not this server is refused. Responses carry a strict
Content-Security-Policy (inline script and style only with a per-response nonce),
``X-Frame-Options: DENY``, ``nosniff``, ``Referrer-Policy: same-origin`` and ``Cache-Control:
no-store``. The OpenAPI/docs routes are disabled. No route writes to the audit log
other than by appending, and none deletes anything. Refused requests (401, 403
including CSRF and Origin refusals, 409) are audited as ``request.refused``, and
every audit row records the client address.

Final means final: once a visit's review is final, every decision, submission
and adjudication on it is refused with 409 (:class:`~lesionq.review.state.VisitFinal`);
it changes only through an amendment.

Blinded reading: pages show BIDS labels, site, the stored (already shifted)
acquisition time, counts and the fixed lesion columns; never participant
attributes (e.g. a treatment arm) nor file paths.
"""

from __future__ import annotations

import logging
import math
import os
import re
import secrets
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

import jinja2
from fastapi import Depends, FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from ..errors import ConfigError, InputError, LesionQError
from ..qc.slices import AXES
from ..store import ResultsDB
from ..store.auditchain import audit_client
from . import auth, state
from .added_export import refresh_review_tables as refresh_tables  # + added_lesions.tsv
from .auth import DEFAULT_SESSION_TTL_S
from .dbutil import audit, read_tx, write_tx
from .decisions import RELABELS, STAGES, LesionKey, parse_choice
from .images import OVERLAYS, VolumeCache, canonical_slice_of, figure_files, resolve_figure
from .images import slice_sources as _slice_sources
from .viewer import install_viewer_routes, viewer_context

__all__ = ["create_app", "SESSION_COOKIE", "LOGIN_CSRF_COOKIE", "DEFAULT_SESSION_TTL_S"]

LOGGER = logging.getLogger(__name__)

#: Session cookie name.
SESSION_COOKIE = "lesionq_session"
#: Cookie of the login form's CSRF token.
LOGIN_CSRF_COOKIE = "lesionq_login_csrf"

_TEMPLATES = Path(__file__).resolve().parent / "templates"
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


#: Worklist columns that ``?sort=`` accepts (``-name``: descending), with their sort value.
WORKLIST_SORTS: dict[str, Callable[[state.ReviewState], Any]] = {
    "participant": lambda st: (st.visit.participant_id, st.visit.session_id or ""),
    "session": lambda st: (st.visit.session_id or "", st.visit.participant_id),
    "site": lambda st: st.visit.site,
    "acquired": lambda st: st.visit.acq_time,
    "t2": lambda st: st.visit.automatic.get("t2_count"),
    "gd": lambda st: st.visit.automatic.get("gd_count"),
    "t2_reviewed": lambda st: st.reviewed["t2_count_reviewed"],
    "gd_reviewed": lambda st: st.reviewed["gd_count_reviewed"],
    "status": lambda st: STAGES.index(st.outcome.stage),
    "readers": lambda st: st.outcome.n_submitted,
}


def _sorted_states(states: list[state.ReviewState], sort: str) -> list[state.ReviewState]:
    """``states`` sorted by a :data:`WORKLIST_SORTS` column (missing values last, stable)."""
    name = sort.removeprefix("-")
    if name not in WORKLIST_SORTS:
        raise state.ReviewRefused(
            400, f"sort must be one of {sorted(WORKLIST_SORTS)} (optionally with '-'), got {sort!r}"
        )
    value = WORKLIST_SORTS[name]
    present = [st for st in states if value(st) is not None]
    missing = [st for st in states if value(st) is None]
    return sorted(present, key=value, reverse=sort.startswith("-")) + missing


class _NotAuthenticated(Exception):
    pass


def _env() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(_TEMPLATES)),
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


def _parse_lesion(text: str) -> LesionKey:
    m = _LESION_RE.match(str(text or ""))
    if m is None:
        raise state.ReviewRefused(400, f"bad lesion reference {text!r} (expected LABEL:ID)")
    return LesionKey(m.group(1), int(m.group(2)))


def _lesion_or_none(text: str) -> LesionKey | None:
    try:
        return _parse_lesion(text)
    except state.ReviewRefused:
        return None


def _int_field(form: Any, name: str) -> int:
    raw = form.get(name)
    try:
        return int(str(raw))
    except (TypeError, ValueError):
        raise state.ReviewRefused(400, f"form field {name!r} must be an integer") from None


def create_app(
    db_url: str,
    out_dir: str | os.PathLike[str],
    *,
    session_ttl_s: float = DEFAULT_SESSION_TTL_S,
    readers_required: int = 2,
    secure_cookies: bool = False,
    convention: str = "radiological",
) -> FastAPI:
    """Build the review web app on a results database and a ``lesionq run`` output folder.

    Parameters
    ----------
    db_url : str
        Results database URL (``sqlite:///OUT/lesionq.sqlite`` or ``postgresql://...``);
        opened (and migrated) now.
    out_dir : path-like
        The output folder of ``lesionq run`` (pictures and images are read from it,
        never written).
    session_ttl_s : float
        Session lifetime in seconds from login (absolute, not sliding).
    readers_required : {1, 2}
        Readers who must submit each visit (stored in the database, audited when
        changed).
    secure_cookies : bool
        Mark cookies ``Secure`` (set it when served over HTTPS, e.g. behind a proxy).
    convention : {"radiological", "neurological"}
        Left-right display convention of the slice viewer.

    Returns
    -------
    fastapi.FastAPI

    Raises
    ------
    ConfigError
        ``out_dir`` is not a folder, or a bad ``readers_required`` / ``session_ttl_s``.
    """
    out_root = Path(out_dir).resolve()
    if not out_root.is_dir():
        raise ConfigError(f"lesionq review: --out {out_dir}: not a folder")
    if not session_ttl_s > 0:
        raise ConfigError(f"lesionq review: session_ttl_s must be > 0, got {session_ttl_s!r}")
    db = ResultsDB.open(db_url)
    try:
        state.ensure_readers_required(
            db.engine, readers_required, actor="lesionq review (app start)"
        )
    except state.ReviewRefused as exc:
        db.close()
        raise ConfigError(f"lesionq review: {exc}") from exc
    engine = db.engine
    env = _env()
    cache = VolumeCache()
    n_readers = int(readers_required)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        db.close()

    async def _protect(request: Request) -> auth.Session | None:
        """App-wide dependency: a live session (and, for writes, its CSRF token).

        Every route has it (deny by default); only ``/login`` lets anonymous
        requests through.
        """
        if request.url.path == "/login":
            return None
        token = request.cookies.get(SESSION_COOKIE)
        sess = await run_in_threadpool(auth.session_for_token, engine, token)
        if sess is None:
            raise _NotAuthenticated()
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

    app = FastAPI(
        title="lesionq review",
        dependencies=[Depends(_protect)],
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
        lifespan=lifespan,
    )
    app.state.db = db
    app.state.out_root = out_root
    app.state.readers_required = n_readers

    # ------------------------------------------------------------------ helpers

    def page(
        request: Request, template: str, status_code: int = 200, **context: Any
    ) -> HTMLResponse:
        sess: auth.Session | None = getattr(request.state, "session", None)
        body = env.get_template(template).render(
            nonce=request.state.nonce,
            session=sess,
            me=None if sess is None else sess.reader,
            csrf=None if sess is None else sess.csrf_token,
            message=_MESSAGES.get(request.query_params.get("msg", "")),
            **context,
        )
        return HTMLResponse(body, status_code=status_code)

    def error_page(request: Request, status_code: int, message: str) -> Response:
        if request.url.path.startswith("/api/"):  # the viewer's JSON routes
            return JSONResponse({"error": message}, status_code=status_code)
        return page(request, "error.html", status_code=status_code, code=status_code, text=message)

    def redirect(path: str, **query: str) -> RedirectResponse:
        q = urlencode({k: v for k, v in query.items() if v})
        return RedirectResponse(path + (f"?{q}" if q else ""), status_code=303)

    def session_of(request: Request) -> auth.Session:
        return request.state.session  # set by _protect

    def current_lock() -> dict[str, Any]:
        with read_tx(engine) as conn:
            return state.lock_state(conn)

    def figures_of(st: state.ReviewState) -> list[dict[str, str]]:
        """The visit's QC pictures (``name``, ``title``): PNG, or SVG without a PNG twin."""
        figs = figure_files(out_root, st.visit.participant_id, st.visit.session_id)
        return [
            {"name": name, "title": title}
            for name, (_, media, title) in figs.items()
            if media == "image/png" or name.removesuffix(".svg") + ".png" not in figs
        ]

    def load(visit_id: int) -> state.ReviewState:
        with read_tx(engine) as conn:
            st = state.load_state(conn, visit_id, n_readers)
        if st is None:
            raise state.ReviewRefused(404, f"no visit {visit_id}")
        return st

    # ------------------------------------------------------------------ middleware

    @app.middleware("http")
    async def security_headers(request: Request, call_next: Callable[..., Any]) -> Response:
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

    #: Refusals written to the audit log (``request.refused``).
    audited_refusals = (401, 403, 409)

    def _audit_refusal(
        actor: str, client: str | None, status: int, method: str, path: str, reason: str
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
        """Append ``request.refused`` (who, client address, status, method, path, why)."""
        sess: auth.Session | None = getattr(request.state, "session", None)
        actor = sess.reader.username if sess is not None else "(anonymous)"
        try:
            await run_in_threadpool(
                _audit_refusal,
                actor,
                request.client.host if request.client else None,
                status,
                request.method,
                request.url.path,
                reason,
            )
        except Exception:  # the refusal stands even when its audit row cannot be written
            LOGGER.exception("review: could not audit a refused request")

    @app.exception_handler(_NotAuthenticated)
    async def not_authenticated(request: Request, _: Exception) -> Response:
        await audit_refusal(request, 401, "no live session")
        if request.method in ("GET", "HEAD"):
            resp: Response = RedirectResponse("/login", status_code=303)
        else:
            resp = Response("login required", status_code=401, media_type="text/plain")
        resp.delete_cookie(SESSION_COOKIE, path="/")
        return resp

    @app.exception_handler(state.ReviewRefused)
    async def refused(request: Request, exc: Exception) -> Response:
        status = exc.status_code if isinstance(exc, state.ReviewRefused) else 500
        if status in audited_refusals:
            await audit_refusal(request, status, str(exc))
        return error_page(request, status, str(exc))

    @app.exception_handler(LesionQError)
    async def bad_input(request: Request, exc: Exception) -> Response:
        status = 400 if isinstance(exc, InputError) else 500
        return error_page(request, status, str(exc))

    # ------------------------------------------------------------------ login

    def login_page(request: Request, status_code: int = 200, error: str | None = None) -> Response:
        token = auth.new_token()
        resp = page(request, "login.html", status_code=status_code, login_csrf=token, error=error)
        resp.set_cookie(
            LOGIN_CSRF_COOKIE,
            token,
            httponly=True,
            samesite="strict",
            secure=secure_cookies,
            path="/login",
            max_age=3600,
        )
        return resp

    @app.get("/login", response_class=HTMLResponse)
    def get_login(request: Request) -> Response:
        if auth.session_for_token(engine, request.cookies.get(SESSION_COOKIE)) is not None:
            return redirect("/")
        return login_page(request)

    @app.post("/login")
    async def post_login(request: Request) -> Response:
        form = await request.form()
        sent = form.get("csrf_token")
        if not auth.tokens_equal(
            sent if isinstance(sent, str) else None, request.cookies.get(LOGIN_CSRF_COOKIE)
        ):
            await audit_refusal(request, 403, "login form without a valid CSRF token")
            return login_page(request, 403, "The login form expired: please try again.")
        username, password = form.get("username"), form.get("password")
        if not isinstance(username, str) or not isinstance(password, str):
            return login_page(request, 400, "Give a username and a password.")
        try:
            result = await run_in_threadpool(
                auth.login, engine, username, password, ttl_s=session_ttl_s
            )
        except auth.LoginThrottled as exc:
            resp = login_page(request, 429, f"{str(exc).capitalize()}.")
            resp.headers["Retry-After"] = str(math.ceil(exc.retry_after_s))
            return resp
        if result is None:
            return login_page(request, 401, "Wrong username or password.")
        token, _ = result
        resp = redirect("/")
        resp.set_cookie(
            SESSION_COOKIE,
            token,
            httponly=True,
            samesite="strict",
            secure=secure_cookies,
            path="/",
            max_age=max(1, math.ceil(session_ttl_s)),
        )
        resp.delete_cookie(LOGIN_CSRF_COOKIE, path="/login")
        return resp

    @app.post("/logout")
    def post_logout(request: Request) -> Response:
        auth.logout(engine, session_of(request))
        resp = redirect("/login")
        resp.delete_cookie(SESSION_COOKIE, path="/")
        return resp

    # ------------------------------------------------------------------ worklist

    @app.get("/", response_class=HTMLResponse)
    def worklist(request: Request, site: str = "", status: str = "", sort: str = "") -> Response:
        me = session_of(request).reader
        if status and status not in STAGES:
            raise state.ReviewRefused(400, f"status must be one of {STAGES}, got {status!r}")
        with read_tx(engine) as conn:
            states = state.load_states(conn, n_readers)
            lock = state.lock_state(conn)
        sites = sorted({s.visit.site for s in states if s.visit.site})
        rows = []
        for st in _sorted_states(states, sort) if sort else states:
            if site and st.visit.site != site:
                continue
            if status and st.outcome.stage != status:
                continue
            mine = (
                "submitted"
                if st.submitted_by(me.id)
                else ("started" if me.id in st.decisions else "")
            )
            rows.append(
                {
                    "st": st,
                    "mine": mine,
                    "reviewed": st.reviewed,
                    "can_adjudicate": me.can_adjudicate
                    and st.outcome.stage == "awaiting_adjudication"
                    and st.submitted_by(me.id) is None,
                    "can_amend": (me.can_adjudicate or me.is_admin)
                    and st.outcome.status == "final"
                    and st.submitted_by(me.id) is None,
                }
            )
        return page(
            request,
            "worklist.html",
            rows=rows,
            sites=sites,
            stages=STAGES,
            site=site,
            status=status,
            sort=sort,
            lock=lock,
            readers_required=n_readers,
        )

    # ------------------------------------------------------------------ visit

    def available(st: state.ReviewState, overlay: str) -> bool:
        """Whether the visit has the images of ``overlay`` (its label image too, if any)."""
        bg, lab = _slice_sources(out_root, st.visit.participant_id, st.visit.session_id, overlay)
        return bg is not None and (OVERLAYS[overlay].labels is None or lab is not None)

    def viewer(
        st: state.ReviewState, axis: str, index: int | None, overlay: str, highlight: str
    ) -> dict[str, Any]:
        if axis not in AXES:
            raise state.ReviewRefused(400, f"axis must be one of {sorted(AXES)}, got {axis!r}")
        if overlay not in OVERLAYS:
            raise state.ReviewRefused(400, f"overlay must be one of {sorted(OVERLAYS)}")
        bg, lab = _slice_sources(out_root, st.visit.participant_id, st.visit.session_id, overlay)
        info: dict[str, Any] = {
            "available": bg is not None,
            "axis": axis,
            "overlay": overlay,
            "overlays": [o for o in OVERLAYS if available(st, o)],
            "axes": list(AXES),
            "highlight": highlight,
            "has_labels": lab is not None,
        }
        if bg is None:
            return info
        vol = cache.load(bg)
        n = vol.canonical_shape[AXES[axis]]
        hl_key = None
        if highlight:
            try:
                hl_key = _parse_lesion(highlight)
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

    @app.get("/visits/{visit_id}", response_class=HTMLResponse)
    def visit_page(
        request: Request,
        visit_id: int,
        axis: str = "axial",
        index: int | None = None,
        overlay: str = "t2",
        lesion: str = "",
    ) -> Response:
        me = session_of(request).reader
        st = load(visit_id)
        if lesion and me.can_read:  # opening a lesion ("show") records its first view
            shown = _lesion_or_none(lesion)
            if shown is not None and shown in st.visit.volumes:
                state.record_view(engine, me, visit_id, shown, readers_required=n_readers)
        lock = current_lock()
        own = st.decisions.get(me.id, {})
        submission = st.submitted_by(me.id)
        full = len(st.submissions) >= n_readers and submission is None
        can_decide = (
            me.can_read
            and st.visit.result_status == "ok"
            and submission is None
            and not full
            and not lock["locked"]
        )
        next_visit = None
        if me.can_read:
            with read_tx(engine) as conn:
                queue = [
                    s.visit.visit_id
                    for s in state.load_states(conn, n_readers)
                    if s.submitted_by(me.id) is None
                    and len(s.submissions) < n_readers
                    and s.visit.visit_id != visit_id
                ]
            after = [v for v in queue if v > visit_id] or queue
            next_visit = after[0] if after else None
        figures = figures_of(st)
        return page(
            request,
            "visit.html",
            st=st,
            own=own,
            submission=submission,
            full=full,
            can_decide=can_decide,
            provisional=st.provisional(me.id),
            relabels=RELABELS,
            figures=figures,
            lock=lock,
            view=viewer(st, axis, index, overlay, lesion),
            readers_required=n_readers,
            nv=viewer_context(
                st,
                out_root,
                reader_id=me.id,
                adjudicator=False,
                can_decide=can_decide,
                next_visit=next_visit,
            ),
        )

    async def decide_from_form(
        request: Request, visit_id: int, record: Callable[..., state.DecisionRow | None]
    ) -> tuple[LesionKey, state.DecisionRow | None]:
        """Parse a lesion decision form and record it with ``record`` (decision or adjudication)."""
        form = await request.form()
        key = _parse_lesion(str(form.get("lesion", "")))
        comment = form.get("comment")
        row = await run_in_threadpool(
            record,
            engine,
            session_of(request).reader,
            visit_id,
            _int_field(form, "result_id"),
            key,
            parse_choice(key.label, str(form.get("choice", ""))),
            comment if isinstance(comment, str) else None,
            readers_required=n_readers,
        )
        return key, row

    @app.post("/visits/{visit_id}/decision")
    async def post_decision(request: Request, visit_id: int) -> Response:
        key, row = await decide_from_form(request, visit_id, state.record_decision)
        return redirect(
            f"/visits/{visit_id}",
            msg="saved" if row is not None else "unchanged",
            lesion=f"{key.label}:{key.lesion_id}",
        )

    def submit_check(reader: auth.Reader, visit_id: int, result_id: int) -> state.ReviewState:
        with read_tx(engine) as conn:
            return state.reader_writable_state(conn, reader, visit_id, result_id, n_readers)

    @app.post("/visits/{visit_id}/submit")
    async def post_submit(request: Request, visit_id: int) -> Response:
        """Submit; without ``confirm=1`` answer the confirmation page (unviewed lesions)."""
        form = await request.form()
        me = session_of(request).reader
        result_id = _int_field(form, "result_id")
        if form.get("confirm") != "1":
            st = await run_in_threadpool(submit_check, me, visit_id, result_id)
            unviewed = set(st.unviewed(me.id))
            return page(
                request,
                "submit_confirm.html",
                st=st,
                unviewed=[les for les in st.visit.lesions if les.key in unviewed],
                own=st.own(me.id),
                provisional=st.provisional(me.id),
                submission=None,
            )
        await run_in_threadpool(
            state.submit_visit, engine, me, visit_id, result_id, readers_required=n_readers
        )
        await run_in_threadpool(refresh_tables, out_root, db)
        return redirect(f"/visits/{visit_id}", msg="submitted")

    @app.post("/visits/{visit_id}/viewed")
    async def post_viewed(request: Request, visit_id: int) -> Response:
        """Record the first view of a lesion (form field or JSON ``lesion``: ``LABEL:ID``)."""
        if request.headers.get("content-type", "").startswith("application/json"):
            try:
                body = await request.json()
            except ValueError:
                raise state.ReviewRefused(400, "the body is not JSON") from None
            text = body.get("lesion") if isinstance(body, dict) else None
        else:
            text = (await request.form()).get("lesion")
        key = _parse_lesion(str(text or ""))
        first = await run_in_threadpool(
            state.record_view,
            engine,
            session_of(request).reader,
            visit_id,
            key,
            readers_required=n_readers,
        )
        return JSONResponse({"lesion": f"{key.label}:{key.lesion_id}", "first_view": first})

    def require_amender(request: Request, st: state.ReviewState) -> auth.Reader:
        me = session_of(request).reader
        if not (me.can_adjudicate or me.is_admin):
            raise state.ReviewRefused(403, "only adjudicators and administrators amend")
        if st.submitted_by(me.id) is not None:
            raise state.ReviewRefused(403, f"you read {st.visit.title}: another adjudicator amends")
        return me

    @app.get("/visits/{visit_id}/amend", response_class=HTMLResponse)
    def amend_page(request: Request, visit_id: int) -> Response:
        st = load(visit_id)
        require_amender(request, st)
        if st.outcome.status != "final":
            raise state.ReviewRefused(409, f"{st.visit.title} is not final: nothing to amend")
        return page(
            request,
            "amend.html",
            st=st,
            relabels=RELABELS,
            lock=current_lock(),
            figures=figures_of(st),
            max_chars=state.MAX_COMMENT_CHARS,
        )

    @app.post("/visits/{visit_id}/amend")
    async def post_amend(request: Request, visit_id: int) -> Response:
        """Amend a final visit: ``lesion``, ``choice``, ``reason`` (mandatory), ``result_id``."""
        form = await request.form()
        key = _parse_lesion(str(form.get("lesion", "")))
        reason = form.get("reason")
        row = await run_in_threadpool(
            state.amend,
            engine,
            session_of(request).reader,
            visit_id,
            _int_field(form, "result_id"),
            key,
            parse_choice(key.label, str(form.get("choice", ""))),
            reason if isinstance(reason, str) else None,
            readers_required=n_readers,
        )
        if row is not None:
            await run_in_threadpool(refresh_tables, out_root, db)
        return redirect(f"/visits/{visit_id}/amend", msg="amended" if row else "unchanged")

    @app.get("/visits/{visit_id}/slice")
    def get_slice(
        request: Request,
        visit_id: int,
        axis: str = "axial",
        index: int | None = None,
        overlay: str = "t2",
        highlight: int | None = None,
    ) -> Response:
        st = load(visit_id)
        if axis not in AXES:
            raise state.ReviewRefused(400, f"axis must be one of {sorted(AXES)}")
        if overlay not in OVERLAYS:
            raise state.ReviewRefused(400, f"overlay must be one of {sorted(OVERLAYS)}")
        bg, lab = _slice_sources(out_root, st.visit.participant_id, st.visit.session_id, overlay)
        if bg is None or not available(st, overlay):
            raise state.ReviewRefused(404, f"{st.visit.title}: no {overlay} images for the viewer")
        if OVERLAYS[overlay].lesion_label is None:
            highlight = None  # the label image holds change ids, not lesion ids
        png, k, n = cache.render(bg, lab, axis, index, highlight=highlight, convention=convention)
        return Response(
            png,
            media_type="image/png",
            headers={"X-Slice-Index": str(k), "X-Slice-Count": str(n)},
        )

    @app.get("/figures/{visit_id}/{name}")
    def get_figure(request: Request, visit_id: int, name: str) -> Response:
        st = load(visit_id)
        hit = resolve_figure(out_root, st.visit.participant_id, st.visit.session_id, name)
        if hit is None:
            raise state.ReviewRefused(404, "no such figure for this visit")
        path, media = hit
        return Response(path.read_bytes(), media_type=media)

    # ------------------------------------------------------------------ adjudication

    @app.get("/adjudicate/{visit_id}", response_class=HTMLResponse)
    def adjudicate_page(
        request: Request,
        visit_id: int,
        axis: str = "axial",
        index: int | None = None,
        overlay: str = "t2",
        lesion: str = "",
    ) -> Response:
        me = session_of(request).reader
        if not me.can_adjudicate:
            raise state.ReviewRefused(403, "only adjudicators adjudicate")
        st = load(visit_id)
        if st.submitted_by(me.id) is not None:
            raise state.ReviewRefused(
                403, f"you read {st.visit.title}: another adjudicator decides"
            )
        if st.outcome.n_submitted < n_readers:
            raise state.ReviewRefused(409, f"{st.visit.title}: the readers have not all submitted")
        lock = current_lock()
        return page(
            request,
            "adjudicate.html",
            st=st,
            # blinded: the adjudicator sees "Reader A", "Reader B" (submission order), no names
            readers=[
                {"reader_id": sub.reader_id, "label": f"Reader {chr(ord('A') + i)}"}
                for i, sub in enumerate(list(st.submissions)[:n_readers])
            ],
            relabels=RELABELS,
            lock=lock,
            figures=figures_of(st),
            view=viewer(st, axis, index, overlay, lesion),
            nv=viewer_context(
                st,
                out_root,
                reader_id=me.id,
                adjudicator=True,
                can_decide=not lock["locked"] and st.outcome.status != "final",
            ),
        )

    @app.post("/adjudicate/{visit_id}")
    async def post_adjudicate(request: Request, visit_id: int) -> Response:
        key, row = await decide_from_form(request, visit_id, state.adjudicate)
        if row is not None:
            await run_in_threadpool(refresh_tables, out_root, db)
        return redirect(
            f"/adjudicate/{visit_id}",
            msg="adjudicated" if row is not None else "unchanged",
            lesion=f"{key.label}:{key.lesion_id}",
        )

    # ------------------------------------------------------------------ admin

    def require_admin(request: Request) -> auth.Reader:
        me = session_of(request).reader
        if not me.is_admin:
            raise state.ReviewRefused(403, "administrators only")
        return me

    @app.get("/admin/readers", response_class=HTMLResponse)
    def admin_readers(request: Request) -> Response:
        require_admin(request)
        return page(
            request, "admin_readers.html", readers=auth.list_readers(engine), roles=auth.ROLES
        )

    @app.post("/admin/readers")
    async def post_admin_readers(request: Request) -> Response:
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

    @app.get("/admin/lock", response_class=HTMLResponse)
    def admin_lock(request: Request) -> Response:
        require_admin(request)
        lock = current_lock()
        return page(request, "admin_lock.html", lock=lock)

    @app.post("/admin/lock")
    async def post_admin_lock(request: Request) -> Response:
        me = require_admin(request)
        form = await request.form()
        action = form.get("action")
        if action not in ("lock", "unlock"):
            raise state.ReviewRefused(400, "action must be lock or unlock")
        reason = form.get("reason")
        await run_in_threadpool(
            state.set_lock,
            engine,
            me,
            action == "lock",
            reason if isinstance(reason, str) else None,
        )
        return redirect("/admin/lock", msg=f"{action}ed")

    install_viewer_routes(
        app,
        engine=engine,
        out_root=out_root,
        load=load,
        session_of=session_of,
        readers_required=n_readers,
        refresh=lambda: refresh_tables(out_root, db),
    )
    return app
