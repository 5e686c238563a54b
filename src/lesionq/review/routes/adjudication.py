"""Routes of the adjudicators: adjudicating a visit, amending a final one.

=====================================  ==============================================
``GET/POST /adjudicate/{id}``          adjudicator: readers ("Reader A/B") side by
                                       side, QC pictures, decide
``GET/POST /visits/{id}/amend``        adjudicator (not a reader of the visit) or
                                       admin: change a final decision, with a reason
                                       (a new review version)
=====================================  ==============================================
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response
from starlette.concurrency import run_in_threadpool

from .. import auth, state
from ..decisions import RELABELS, parse_choice
from ..viewer import viewer_context
from .common import decide_from_form, int_field, page, parse_lesion, redirect, slice_viewer
from .context import Context, session_of

__all__ = ["router"]

router = APIRouter()


@router.get("/adjudicate/{visit_id}", response_class=HTMLResponse)
def adjudicate_page(
    request: Request,
    ctx: Context,
    visit_id: int,
    axis: str = "axial",
    index: int | None = None,
    overlay: str = "t2",
    lesion: str = "",
) -> Response:
    """The adjudication page: the readers' decisions side by side (blinded)."""
    n_readers = ctx.readers_required
    me = session_of(request).reader
    if not me.can_adjudicate:
        raise state.ReviewRefused(403, "only adjudicators adjudicate")
    st = ctx.load(visit_id)
    if st.submitted_by(me.id) is not None:
        raise state.ReviewRefused(403, f"you read {st.visit.title}: another adjudicator decides")
    if st.outcome.n_submitted < n_readers:
        raise state.ReviewRefused(409, f"{st.visit.title}: the readers have not all submitted")
    lock = ctx.current_lock()
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
        figures=ctx.figures_of(st),
        view=slice_viewer(ctx, st, axis, index, overlay, lesion),
        nv=viewer_context(
            st,
            ctx.out_root,
            reader_id=me.id,
            adjudicator=True,
            can_decide=not lock["locked"] and st.outcome.status != "final",
        ),
    )


@router.post("/adjudicate/{visit_id}")
async def post_adjudicate(request: Request, ctx: Context, visit_id: int) -> Response:
    """Record an adjudication of one lesion (form); 303 back to the adjudication page."""
    key, row = await decide_from_form(request, ctx, visit_id, state.adjudicate)
    if row is not None:
        await run_in_threadpool(ctx.refresh_tables)
    return redirect(
        f"/adjudicate/{visit_id}",
        msg="adjudicated" if row is not None else "unchanged",
        lesion=f"{key.label}:{key.lesion_id}",
    )


def require_amender(request: Request, st: state.ReviewState) -> auth.Reader:
    """The session's reader if they may amend ``st``: an adjudicator or admin who did not read it.

    Parameters
    ----------
    request : fastapi.Request
    st : lesionq.review.state.ReviewState

    Returns
    -------
    lesionq.review.auth.Reader

    Raises
    ------
    lesionq.review.state.ReviewRefused
        403 otherwise.
    """
    me = session_of(request).reader
    if not (me.can_adjudicate or me.is_admin):
        raise state.ReviewRefused(403, "only adjudicators and administrators amend")
    if st.submitted_by(me.id) is not None:
        raise state.ReviewRefused(403, f"you read {st.visit.title}: another adjudicator amends")
    return me


@router.get("/visits/{visit_id}/amend", response_class=HTMLResponse)
def amend_page(request: Request, ctx: Context, visit_id: int) -> Response:
    """The amendment page of a final visit."""
    st = ctx.load(visit_id)
    require_amender(request, st)
    if st.outcome.status != "final":
        raise state.ReviewRefused(409, f"{st.visit.title} is not final: nothing to amend")
    return page(
        request,
        "amend.html",
        st=st,
        relabels=RELABELS,
        lock=ctx.current_lock(),
        figures=ctx.figures_of(st),
        max_chars=state.MAX_COMMENT_CHARS,
    )


@router.post("/visits/{visit_id}/amend")
async def post_amend(request: Request, ctx: Context, visit_id: int) -> Response:
    """Amend a final visit: ``lesion``, ``choice``, ``reason`` (mandatory), ``result_id``."""
    form = await request.form()
    key = parse_lesion(str(form.get("lesion", "")))
    reason = form.get("reason")
    row = await run_in_threadpool(
        state.amend,
        ctx.engine,
        session_of(request).reader,
        visit_id,
        int_field(form, "result_id"),
        key,
        parse_choice(key.label, str(form.get("choice", ""))),
        reason if isinstance(reason, str) else None,
        readers_required=ctx.readers_required,
    )
    if row is not None:
        await run_in_threadpool(ctx.refresh_tables)
    return redirect(f"/visits/{visit_id}/amend", msg="amended" if row else "unchanged")
