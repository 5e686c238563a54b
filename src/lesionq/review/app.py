"""The review web app: FastAPI, server-rendered pages, no external assets.

Pages (all but ``/login`` need a logged-in reader; an anonymous GET is sent to
``/login``, any other anonymous request gets 401):

=====================================  ==============================================
``GET/POST /login``, ``POST /logout``  session cookie (HttpOnly, SameSite=Strict)
``GET /``                              worklist, filters ``?site=`` and ``?status=``,
                                       ``?sort=`` (a column of
                                       :data:`~lesionq.review.routes.worklist.WORKLIST_SORTS`,
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

Structure: the routes are FastAPI ``APIRouter`` s in :mod:`lesionq.review.routes`
(one module per area), the guards above (session check, CSRF, Origin, headers,
audited refusals) in :mod:`lesionq.review.routes.security`. :func:`create_app`
builds the app's state, a :class:`~lesionq.review.routes.context.ReviewContext`
stored in ``app.state.review`` (never a module global, so two apps in one process
share nothing), registers the guards and includes the routers.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import Depends, FastAPI

from ..errors import ConfigError, LesionQError
from ..store import ResultsDB
from . import state
from .auth import DEFAULT_SESSION_TTL_S
from .images import VolumeCache
from .routes import ROUTERS, ReviewContext
from .routes.common import LOGIN_CSRF_COOKIE, SESSION_COOKIE, make_env
from .routes.context import session_of
from .routes.security import (
    NotAuthenticated,
    bad_input,
    not_authenticated,
    protect,
    refused,
    security_headers,
)
from .viewer import install_viewer_routes

__all__ = ["create_app", "SESSION_COOKIE", "LOGIN_CSRF_COOKIE", "DEFAULT_SESSION_TTL_S"]


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Close the app's results database when the app shuts down."""
    yield
    app.state.review.db.close()


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
        Its state: ``app.state.review`` (the
        :class:`~lesionq.review.routes.context.ReviewContext` the routes read), and
        ``app.state.db``, ``app.state.out_root``, ``app.state.readers_required``.

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
    ctx = ReviewContext(
        db=db,
        out_root=out_root,
        env=make_env(),
        cache=VolumeCache(),
        readers_required=int(readers_required),
        session_ttl_s=session_ttl_s,
        secure_cookies=secure_cookies,
        convention=convention,
    )

    app = FastAPI(
        title="lesionq review",
        dependencies=[Depends(protect)],
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
        lifespan=_lifespan,
    )
    app.state.review = ctx
    app.state.db = db
    app.state.out_root = out_root
    app.state.readers_required = ctx.readers_required

    app.middleware("http")(security_headers)
    app.add_exception_handler(NotAuthenticated, not_authenticated)
    app.add_exception_handler(state.ReviewRefused, refused)
    app.add_exception_handler(LesionQError, bad_input)

    for router in ROUTERS:
        app.include_router(router)
    # last: the viewer's routes, with the /static/ catch-all
    install_viewer_routes(
        app,
        engine=ctx.engine,
        out_root=out_root,
        load=ctx.load,
        session_of=session_of,
        readers_required=ctx.readers_required,
        refresh=ctx.refresh_tables,
    )
    return app
