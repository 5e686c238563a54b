"""Routes of the server-rendered images of a visit.

=====================================  ==============================================
``GET /visits/{id}/slice``             PNG: ``axis``, ``index`` (clamped), ``overlay``,
                                       ``highlight`` (a lesion id); the slice index and
                                       count in ``X-Slice-Index`` / ``X-Slice-Count``
``GET /figures/{id}/{name}``           the visit's QC pictures (by exact name only)
=====================================  ==============================================

The NiiVue viewer's volumes and static files are served by
:mod:`lesionq.review.viewer`.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from ...qc.slices import AXES
from .. import state
from ..images import OVERLAYS, resolve_figure
from ..images import slice_sources as _slice_sources
from .common import available
from .context import Context

__all__ = ["router"]

router = APIRouter()


@router.get("/visits/{visit_id}/slice")
def get_slice(
    request: Request,
    ctx: Context,
    visit_id: int,
    axis: str = "axial",
    index: int | None = None,
    overlay: str = "t2",
    highlight: int | None = None,
) -> Response:
    """One slice of a visit image with its label overlay, as PNG."""
    st = ctx.load(visit_id)
    if axis not in AXES:
        raise state.ReviewRefused(400, f"axis must be one of {sorted(AXES)}")
    if overlay not in OVERLAYS:
        raise state.ReviewRefused(400, f"overlay must be one of {sorted(OVERLAYS)}")
    bg, lab = _slice_sources(ctx.out_root, st.visit.participant_id, st.visit.session_id, overlay)
    if bg is None or not available(ctx, st, overlay):
        raise state.ReviewRefused(404, f"{st.visit.title}: no {overlay} images for the viewer")
    if OVERLAYS[overlay].lesion_label is None:
        highlight = None  # the label image holds change ids, not lesion ids
    png, k, n = ctx.cache.render(
        bg, lab, axis, index, highlight=highlight, convention=ctx.convention
    )
    return Response(
        png,
        media_type="image/png",
        headers={"X-Slice-Index": str(k), "X-Slice-Count": str(n)},
    )


@router.get("/figures/{visit_id}/{name}")
def get_figure(request: Request, ctx: Context, visit_id: int, name: str) -> Response:
    """A QC picture of the visit, by its exact file name."""
    st = ctx.load(visit_id)
    hit = resolve_figure(ctx.out_root, st.visit.participant_id, st.visit.session_id, name)
    if hit is None:
        raise state.ReviewRefused(404, "no such figure for this visit")
    path, media = hit
    return Response(path.read_bytes(), media_type=media)
