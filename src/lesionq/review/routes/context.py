"""The per-app state of the review app, and the dependency that hands it to routes.

:func:`lesionq.review.app.create_app` builds one :class:`ReviewContext` (the
results database, the output folder, the templates, the slice cache and the
settings) and stores it in ``app.state.review``. Routes read it through the
dependency :func:`review_context` (type :data:`Context`), never through a
module-level global, so that two apps created in one process share nothing.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import jinja2
import sqlalchemy as sa
from fastapi import Depends, Request

from ...store import ResultsDB
from .. import auth, state
from ..added_export import refresh_review_tables  # + added_lesions.tsv
from ..dbutil import read_tx
from ..images import VolumeCache, figure_files

__all__ = ["RefusalThrottle", "ReviewContext", "review_context", "Context", "session_of"]


@dataclass
class RefusalThrottle:
    """Anonymous refused page requests: one audit row per client, page and window.

    Without a limit, any client that repeats a refused GET (a crawler, a stale tab
    polling a page after its session ended) would grow the audit log without bound.
    The first refusal of a (client address, method, path, status) is audited, repeats
    within ``window_s`` seconds are not. Only anonymous GET and HEAD requests are
    throttled (:func:`lesionq.review.routes.security.audit_refusal`): refused writes
    and a logged-in reader's refusals are always audited.

    Attributes
    ----------
    window_s : float
        Seconds during which a repeat of the same anonymous refusal is not audited.
    max_keys : int
        Remembered refusals; past it, those older than the window are forgotten.
    """

    window_s: float = 60.0
    max_keys: int = 10_000
    _last: dict[tuple[Any, ...], float] = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def should_audit(self, key: tuple[Any, ...], now: float) -> bool:
        """Whether the refusal ``key`` is audited at time ``now`` (monotonic seconds).

        Parameters
        ----------
        key : tuple
            (client address, method, path, status).
        now : float
            ``time.monotonic()`` of the request, s.

        Returns
        -------
        bool
            True for the first refusal of ``key`` in ``window_s`` seconds.
        """
        with self._lock:
            last = self._last.get(key)
            if last is not None and now - last < self.window_s:
                return False
            if len(self._last) >= self.max_keys:
                self._last = {k: t for k, t in self._last.items() if now - t < self.window_s}
            self._last[key] = now
            return True


@dataclass(frozen=True)
class ReviewContext:
    """What the routes of one review app share (``app.state.review``).

    Attributes
    ----------
    db : ResultsDB
        The results database (closed when the app shuts down).
    out_root : Path
        The resolved output folder of ``lesionq run`` (read, never written).
    env : jinja2.Environment
        The page templates.
    cache : VolumeCache
        Images loaded for the slice viewer.
    readers_required : int
        Readers who must submit each visit (1 or 2).
    session_ttl_s : float
        Session lifetime in seconds from login.
    secure_cookies : bool
        Whether cookies are marked ``Secure``.
    convention : str
        Left-right display convention of the slice viewer.
    refusals : RefusalThrottle
        Limits the audit rows of repeated anonymous refusals.
    """

    db: ResultsDB
    out_root: Path
    env: jinja2.Environment
    cache: VolumeCache
    readers_required: int
    session_ttl_s: float
    secure_cookies: bool
    convention: str
    refusals: RefusalThrottle = field(default_factory=RefusalThrottle)

    @property
    def engine(self) -> sa.Engine:
        """The SQLAlchemy engine of :attr:`db`."""
        return self.db.engine

    def current_lock(self) -> dict[str, Any]:
        """The study's lock state (:func:`lesionq.review.state.lock_state`)."""
        with read_tx(self.engine) as conn:
            return state.lock_state(conn)

    def figures_of(self, st: state.ReviewState) -> list[dict[str, str]]:
        """The visit's QC pictures (``name``, ``title``): PNG, or SVG without a PNG twin."""
        figs = figure_files(self.out_root, st.visit.participant_id, st.visit.session_id)
        return [
            {"name": name, "title": title}
            for name, (_, media, title) in figs.items()
            if media == "image/png" or name.removesuffix(".svg") + ".png" not in figs
        ]

    def load(self, visit_id: int) -> state.ReviewState:
        """The review state of a visit; 404 (:class:`~lesionq.review.state.ReviewRefused`) if none."""
        with read_tx(self.engine) as conn:
            st = state.load_state(conn, visit_id, self.readers_required)
        if st is None:
            raise state.ReviewRefused(404, f"no visit {visit_id}")
        return st

    def refresh_tables(self) -> list[Path]:
        """Rewrite the reviewed tables of the output folder (``added_lesions.tsv`` too)."""
        return refresh_review_tables(self.out_root, self.db)


def review_context(request: Request) -> ReviewContext:
    """FastAPI dependency: the :class:`ReviewContext` of the app serving ``request``.

    Parameters
    ----------
    request : fastapi.Request

    Returns
    -------
    ReviewContext
        ``request.app.state.review``.
    """
    return request.app.state.review


#: Route parameter type that FastAPI fills with :func:`review_context`.
Context = Annotated[ReviewContext, Depends(review_context)]


def session_of(request: Request) -> auth.Session:
    """The live session of ``request`` (set by the app-wide session check).

    Parameters
    ----------
    request : fastapi.Request

    Returns
    -------
    lesionq.review.auth.Session
    """
    return request.state.session  # set by routes.security.protect
