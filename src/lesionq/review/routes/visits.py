"""Routes of reading a visit: the visit page, decisions, first views, submitting.

=====================================  ==============================================
``GET /visits/{id}``                   pictures, counts, lesion table, slice viewer
                                       (``?lesion=`` records the lesion's first view)
``POST /visits/{id}/decision``         accept / reject / relabel one lesion
``POST /visits/{id}/submit``           submit the reader's review of the visit; without
                                       ``confirm=1`` it answers the confirmation page
                                       listing the lesions never opened
``POST /visits/{id}/viewed``           record a lesion's first view (form or JSON
                                       ``lesion``; answers JSON)
=====================================  ==============================================
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from .. import auth, state
from ..dbutil import read_tx
from ..decisions import RELABELS
from ..viewer import viewer_context
from .common import (
    decide_from_form,
    int_field,
    lesion_or_none,
    page,
    parse_lesion,
    redirect,
    slice_viewer,
)
from .context import Context, ReviewContext, session_of

__all__ = ["router"]

router = APIRouter()


@router.get("/visits/{visit_id}", response_class=HTMLResponse)
def visit_page(
    request: Request,
    ctx: Context,
    visit_id: int,
    axis: str = "axial",
    index: int | None = None,
    overlay: str = "t2",
    lesion: str = "",
) -> Response:
    """The visit page of a reader (or of anyone else, read-only)."""
    n_readers = ctx.readers_required
    me = session_of(request).reader
    st = ctx.load(visit_id)
    if lesion and me.can_read:  # opening a lesion ("show") records its first view
        shown = lesion_or_none(lesion)
        if shown is not None and shown in st.visit.volumes:
            state.record_view(ctx.engine, me, visit_id, shown, readers_required=n_readers)
    lock = ctx.current_lock()
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
        with read_tx(ctx.engine) as conn:
            queue = [
                s.visit.visit_id
                for s in state.load_states(conn, n_readers)
                if s.submitted_by(me.id) is None
                and len(s.submissions) < n_readers
                and s.visit.visit_id != visit_id
            ]
        after = [v for v in queue if v > visit_id] or queue
        next_visit = after[0] if after else None
    figures = ctx.figures_of(st)
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
        view=slice_viewer(ctx, st, axis, index, overlay, lesion),
        readers_required=n_readers,
        nv=viewer_context(
            st,
            ctx.out_root,
            reader_id=me.id,
            adjudicator=False,
            can_decide=can_decide,
            next_visit=next_visit,
        ),
    )


@router.post("/visits/{visit_id}/decision")
async def post_decision(request: Request, ctx: Context, visit_id: int) -> Response:
    """Record a reader's decision on one lesion (form); 303 back to the visit."""
    key, row = await decide_from_form(request, ctx, visit_id, state.record_decision)
    return redirect(
        f"/visits/{visit_id}",
        msg="saved" if row is not None else "unchanged",
        lesion=f"{key.label}:{key.lesion_id}",
    )


def _submit_check(
    ctx: ReviewContext, reader: auth.Reader, visit_id: int, result_id: int
) -> state.ReviewState:
    with read_tx(ctx.engine) as conn:
        return state.reader_writable_state(conn, reader, visit_id, result_id, ctx.readers_required)


@router.post("/visits/{visit_id}/submit")
async def post_submit(request: Request, ctx: Context, visit_id: int) -> Response:
    """Submit; without ``confirm=1`` answer the confirmation page (unviewed lesions)."""
    form = await request.form()
    me = session_of(request).reader
    result_id = int_field(form, "result_id")
    if form.get("confirm") != "1":
        st = await run_in_threadpool(_submit_check, ctx, me, visit_id, result_id)
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
        state.submit_visit,
        ctx.engine,
        me,
        visit_id,
        result_id,
        readers_required=ctx.readers_required,
    )
    await run_in_threadpool(ctx.refresh_tables)
    return redirect(f"/visits/{visit_id}", msg="submitted")


@router.post("/visits/{visit_id}/viewed")
async def post_viewed(request: Request, ctx: Context, visit_id: int) -> Response:
    """Record the first view of a lesion (form field or JSON ``lesion``: ``LABEL:ID``)."""
    if request.headers.get("content-type", "").startswith("application/json"):
        try:
            body = await request.json()
        except ValueError:
            raise state.ReviewRefused(400, "the body is not JSON") from None
        text = body.get("lesion") if isinstance(body, dict) else None
    else:
        text = (await request.form()).get("lesion")
    key = parse_lesion(str(text or ""))
    first = await run_in_threadpool(
        state.record_view,
        ctx.engine,
        session_of(request).reader,
        visit_id,
        key,
        readers_required=ctx.readers_required,
    )
    return JSONResponse({"lesion": f"{key.label}:{key.lesion_id}", "first_view": first})
