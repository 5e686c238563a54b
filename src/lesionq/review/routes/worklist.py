"""The worklist: ``GET /``, every visit with its review status.

Filters ``?site=`` and ``?status=`` (a review stage), and ``?sort=`` (a
:data:`WORKLIST_SORTS` column, ``-`` for descending).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from .. import state
from ..dbutil import read_tx
from ..decisions import STAGES
from .common import page
from .context import Context, session_of

__all__ = ["router", "WORKLIST_SORTS"]

router = APIRouter()

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


@router.get("/", response_class=HTMLResponse)
def worklist(
    request: Request, ctx: Context, site: str = "", status: str = "", sort: str = ""
) -> Response:
    """The worklist page."""
    me = session_of(request).reader
    n_readers = ctx.readers_required
    if status and status not in STAGES:
        raise state.ReviewRefused(400, f"status must be one of {STAGES}, got {status!r}")
    with read_tx(ctx.engine) as conn:
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
            "submitted" if st.submitted_by(me.id) else ("started" if me.id in st.decisions else "")
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
