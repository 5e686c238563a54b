"""The routes of the review web app, as FastAPI ``APIRouter`` s, one module per area.

====================  ===============================================================
module                routes
====================  ===============================================================
:mod:`.login`         ``GET/POST /login``, ``POST /logout``
:mod:`.worklist`      ``GET /`` (the worklist)
:mod:`.visits`        ``GET /visits/{id}``, ``POST /visits/{id}/decision``,
                      ``/submit``, ``/viewed`` (reading a visit)
:mod:`.images`        ``GET /visits/{id}/slice``, ``GET /figures/{id}/{name}``
:mod:`.adjudication`  ``GET/POST /adjudicate/{id}``, ``GET/POST /visits/{id}/amend``
:mod:`.admin`         ``GET/POST /admin/readers``, ``GET/POST /admin/lock``
====================  ===============================================================

:data:`ROUTERS` lists the routers in the order :func:`lesionq.review.app.create_app`
includes them; the NiiVue viewer's routes (:mod:`lesionq.review.viewer`, with its
``/static/`` catch-all) come after them. The app-wide guards (session check, CSRF,
Origin, security headers, exception handlers) are in :mod:`.security`, the helpers
the routes share in :mod:`.common`.

The per-app state is a :class:`~.context.ReviewContext` in ``app.state.review``;
routes receive it through the dependency :func:`~.context.review_context` (the
parameter type :data:`~.context.Context`), so two apps in one process share nothing.
"""

from __future__ import annotations

from fastapi import APIRouter

from . import adjudication, admin, images, login, visits, worklist
from .context import Context, ReviewContext, review_context

__all__ = ["ROUTERS", "ReviewContext", "review_context", "Context"]

#: The routers of the review app, in the order they are included.
ROUTERS: tuple[APIRouter, ...] = (
    login.router,
    worklist.router,
    visits.router,
    images.router,
    adjudication.router,
    admin.router,
)
