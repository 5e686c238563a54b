"""Routes and page data of the NiiVue viewer and of adding a lesion.

=================================================  ===========================================
``GET /static/niivue/{name}``                      the vendored NiiVue build (names of its
                                                   ``MANIFEST.json`` only)
``GET /static/review.js``                          the viewer's own script
``GET /visits/{id}/volume/{name}.nii.gz``          a visit image by name
                                                   (:data:`~lesionq.review.images.VIEWER_VOLUMES`)
``GET /visits/{id}/volume/added.nii.gz``           label image of the added lesions the reader
                                                   may see (own; all for an adjudicator)
``POST /api/visits/{id}/decision``                 JSON: record a reader's decision in place
``POST /api/adjudicate/{id}``                      JSON: record an adjudication in place
``GET /api/visits/{id}/grow``                      JSON: region grown from a seed (preview)
``GET /visits/{id}/grow.nii.gz``                   the same region as a label image
``POST /api/visits/{id}/added``                    JSON: store the grown region as a lesion
=================================================  ===========================================

Every route is behind the app's session check (and, for POST, its CSRF header
``X-CSRF-Token`` and Origin check); the JSON routes call the same functions of
:mod:`lesionq.review.state` as the forms, so they refuse what the forms refuse
(a locked study, a final visit, a submitted reading, ...). Errors under ``/api/``
are JSON ``{"error": message}`` with the HTTP status.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from ..core.location import LOCATION_CLASSES
from ..core.region_grow import THRESHOLD_MODES
from ..errors import InputError
from ..io.derivatives import output_path
from . import added as added_mod
from . import state
from .decisions import RELABELS, LesionKey, parse_choice
from .images import VolumeCache, inside, viewer_volumes

__all__ = ["STATIC_DIR", "NIIVUE_DIR", "static_files", "viewer_context", "install_viewer_routes"]

#: Static files of the review app (package data).
STATIC_DIR = Path(__file__).resolve().parent / "static"
#: The vendored NiiVue build and its ``MANIFEST.json`` (version, sha256 of each file).
NIIVUE_DIR = STATIC_DIR / "niivue"
_MEDIA = {".js": "text/javascript; charset=utf-8", ".json": "application/json", "": "text/plain"}


@lru_cache(maxsize=1)
def static_files() -> dict[str, tuple[Path, str]]:
    """URL path under ``/static/`` -> (file, sha256) of every servable static file.

    The NiiVue files are those of its ``MANIFEST.json`` (whose checksums
    ``tests/review/test_viewer.py`` verifies); ``review.js`` is the viewer's script.
    """
    manifest = json.loads((NIIVUE_DIR / "MANIFEST.json").read_text(encoding="utf-8"))
    out = {f"niivue/{n}": (NIIVUE_DIR / n, sha) for n, sha in manifest["files"].items()}
    js = STATIC_DIR / "review.js"
    out["review.js"] = (js, hashlib.sha256(js.read_bytes()).hexdigest())
    return out


def _lesion_js(key: LesionKey, centroid: tuple[float, float, float] | None) -> dict[str, Any]:
    return {
        "key": f"{key.label}:{key.lesion_id}",
        "row": f"lesion-{key.label}-{key.lesion_id}",
        "label": key.label,
        "mm": None if centroid is None else [round(c, 2) for c in centroid],
    }


def viewer_context(
    st: state.ReviewState,
    out_root: Path,
    *,
    reader_id: int,
    adjudicator: bool,
    can_decide: bool,
    next_visit: int | None = None,
) -> dict[str, Any]:
    """What the viewer template and script need (``nv`` in the templates).

    ``added`` lists the added lesions this user may see: their own while reading,
    every reader's for an adjudicator (blinded reading otherwise).
    """
    vid = st.visit.visit_id
    vols = viewer_volumes(out_root, st.visit.participant_id, st.visit.session_id)
    visible = st.added if adjudicator else st.added_by(reader_id)
    lesions = [_lesion_js(les.key, les.centroid_mm) for les in st.visit.lesions]
    lesions += [_lesion_js(a.key, a.centroid_mm) for a in visible]
    urls = {n: f"/visits/{vid}/volume/{n}.nii.gz" for n in vols}
    if visible:
        urls["added"] = f"/visits/{vid}/volume/added.nii.gz"
    config = {
        "visit": vid,
        "result": st.visit.result_id,
        "volumes": urls,
        "lesions": lesions,
        "mode": "adjudicate" if adjudicator else "read",
        "canDecide": bool(can_decide),
        "decideUrl": f"/api/adjudicate/{vid}" if adjudicator else f"/api/visits/{vid}/decision",
        "nextVisit": None if next_visit is None else f"/visits/{next_visit}",
        "relabels": {k: list(v) for k, v in RELABELS.items()},
    }
    return {
        "available": "flair" in vols,
        "config": config,
        "added": visible,
        "can_add": bool(can_decide) and not adjudicator and "flair" in vols,
        "locations": LOCATION_CLASSES,
        "modes": THRESHOLD_MODES,
        "has_previous": "previous_flair" in vols,
    }


def _float(params: Any, name: str, default: float | None = None) -> float:
    raw = params.get(name)
    if raw is None and default is not None:
        return default
    try:
        v = float(raw)
    except (TypeError, ValueError):
        raise state.ReviewRefused(400, f"{name} must be a number") from None
    if not math.isfinite(v):
        raise state.ReviewRefused(400, f"{name} must be finite")
    return v


def _grow_params(params: Any) -> dict[str, Any]:
    """Seed (mm), threshold, mode, connectivity and label of a grow request."""
    mode = str(params.get("mode") or "zscore")
    if mode not in THRESHOLD_MODES:
        raise state.ReviewRefused(400, f"mode must be one of {THRESHOLD_MODES}")
    conn = int(_float(params, "connectivity", 6))
    if conn not in (6, 26):
        raise state.ReviewRefused(400, "connectivity must be 6 or 26")
    label = str(params.get("label") or "T2")
    if label not in added_mod.ADDED_SOURCES:
        raise state.ReviewRefused(400, f"label must be one of {sorted(added_mod.ADDED_SOURCES)}")
    return {
        "seed_mm": (_float(params, "x"), _float(params, "y"), _float(params, "z")),
        "threshold": _float(params, "threshold", 3.0 if mode == "zscore" else 0.8),
        "mode": mode,
        "connectivity": conn,
        "label": label,
    }


def _json_body(raw: bytes) -> dict[str, Any]:
    try:
        body = json.loads(raw or b"{}")
    except ValueError:
        raise state.ReviewRefused(400, "the request body must be JSON") from None
    if not isinstance(body, dict):
        raise state.ReviewRefused(400, "the request body must be a JSON object")
    return body


def _parse_key(text: Any) -> LesionKey:
    label, _, lid = str(text or "").partition(":")
    if not (label.isalnum() and len(label) <= 16 and lid.isdigit() and len(lid) <= 9):
        raise state.ReviewRefused(400, f"bad lesion reference {text!r} (expected LABEL:ID)")
    return LesionKey(label, int(lid))


def _result_id(body: dict[str, Any]) -> int:
    v = body.get("result_id")
    if isinstance(v, bool) or not isinstance(v, int | str):
        raise state.ReviewRefused(400, "result_id must be an integer")
    try:
        return int(v)
    except ValueError:
        raise state.ReviewRefused(400, "result_id must be an integer") from None


def install_viewer_routes(
    app: FastAPI,
    *,
    engine: Any,
    out_root: Path,
    load: Callable[[int], state.ReviewState],
    session_of: Callable[[Request], Any],
    readers_required: int,
    refresh: Callable[[], Any],
) -> None:
    """Add the routes of the module docstring to the review app."""
    cache = VolumeCache(max_items=4)

    @app.get("/static/{path:path}")
    def get_static(request: Request, path: str) -> Response:
        hit = static_files().get(path)
        if hit is None:
            raise state.ReviewRefused(404, "no such file")
        f = hit[0]
        return Response(
            f.read_bytes(),
            media_type=_MEDIA.get(f.suffix, "text/plain"),
            headers={"Cache-Control": "private, max-age=3600", "ETag": f'"{hit[1][:32]}"'},
        )

    def visible_added(st: state.ReviewState, me: Any) -> tuple[added_mod.AddedLesion, ...]:
        return (
            st.added
            if me.can_adjudicate and st.submitted_by(me.id) is None
            else (st.added_by(me.id))
        )

    @app.get("/visits/{visit_id}/volume/{name}")
    def get_volume(request: Request, visit_id: int, name: str) -> Response:
        st = load(visit_id)
        me = session_of(request).reader
        stem = name.removesuffix(".nii.gz")
        if not name.endswith(".nii.gz"):
            raise state.ReviewRefused(404, "no such volume")
        if stem == "added":
            return Response(added_volume(st, visible_added(st, me)), media_type="application/gzip")
        vols = viewer_volumes(out_root, st.visit.participant_id, st.visit.session_id)
        path = vols.get(stem)
        if path is None:
            raise state.ReviewRefused(404, f"{st.visit.title}: no {stem!r} volume")
        return Response(path.read_bytes(), media_type="application/gzip")

    def added_volume(st: state.ReviewState, shown: tuple[added_mod.AddedLesion, ...]) -> bytes:
        flair = source_image(st, "T2")
        lab = np.zeros(flair.data.shape, np.uint16)
        for i, a in enumerate(shown, start=1):
            origin, box = added_mod._parse_bbox(a.bbox)
            m = added_mod.decode_mask(a.mask, box)
            sl = tuple(slice(o, o + n) for o, n in zip(origin, box, strict=True))
            lab[sl][m] = i
        img = nib.Nifti1Image(lab, flair.affine)
        img.header.set_intent("label")
        return added_mod.gzip_nifti(img)

    def source_image(st: state.ReviewState, label: str) -> Any:
        key = added_mod.ADDED_SOURCES[label]
        sub = st.visit.participant_id.removeprefix("sub-")
        ses = None if st.visit.session_id is None else st.visit.session_id.removeprefix("ses-")
        p = inside(out_root, output_path(out_root, sub, ses, key))
        if p is None:
            raise state.ReviewRefused(
                404, f"{st.visit.title}: no image to grow a {label} lesion on"
            )
        return cache.load(p)

    def grow(st: state.ReviewState, params: dict[str, Any]) -> added_mod.Grown:
        vol = source_image(st, params["label"])
        try:
            return added_mod.grow_on_visit(
                vol.data,
                vol.affine,
                params["seed_mm"],
                threshold=params["threshold"],
                mode=params["mode"],
                connectivity=params["connectivity"],
            )
        except InputError as exc:
            raise state.ReviewRefused(400, str(exc)) from exc

    @app.get("/api/visits/{visit_id}/grow")
    def get_grow(request: Request, visit_id: int) -> Response:
        st = load(visit_id)
        g = grow(st, _grow_params(request.query_params))
        return JSONResponse(g.summary())

    @app.get("/visits/{visit_id}/grow.nii.gz")
    def get_grow_volume(request: Request, visit_id: int) -> Response:
        st = load(visit_id)
        g = grow(st, _grow_params(request.query_params))
        return Response(added_mod.mask_nifti(g), media_type="application/gzip")

    @app.post("/api/visits/{visit_id}/added")
    async def post_added(request: Request, visit_id: int) -> Response:
        me = session_of(request).reader
        body = _json_body(await request.body())
        params = _grow_params(body)
        rid = _result_id(body)
        location = body.get("location") or None
        comment = body.get("comment")
        st = load(visit_id)

        def check(conn: Any) -> state.ReviewState:
            return state.reader_writable_state(conn, me, visit_id, rid, readers_required)

        def work() -> added_mod.AddedLesion:
            g = grow(st, params)
            where = location if isinstance(location, str) else None
            if where is None:  # as the pipeline classifies the visit's own lesions
                sub = st.visit.participant_id.removeprefix("sub-")
                ses = st.visit.session_id
                ses = None if ses is None else ses.removeprefix("ses-")
                xfm = inside(out_root, output_path(out_root, sub, ses, "xfm_template"))
                where = added_mod.atlas_location(g, xfm)
            return added_mod.add_lesion(
                engine,
                me,
                check,
                g,
                label=params["label"],
                threshold=params["threshold"],
                mode=params["mode"],
                connectivity=params["connectivity"],
                location=where,
                comment=comment if isinstance(comment, str) else None,
            )

        row = await run_in_threadpool(work)
        after = load(visit_id)
        return JSONResponse(
            {
                "added": row.as_dict(),
                "key": f"{row.key.label}:{row.key.lesion_id}",
                "provisional": after.provisional(me.id),
            }
        )

    async def decide_json(request: Request, visit_id: int, adjudicating: bool) -> Response:
        me = session_of(request).reader
        body = _json_body(await request.body())
        key = _parse_key(body.get("lesion"))
        comment = body.get("comment")
        record = state.adjudicate if adjudicating else state.record_decision
        try:
            decision = parse_choice(key.label, str(body.get("choice", "")))
        except InputError as exc:
            raise state.ReviewRefused(400, str(exc)) from exc
        row = await run_in_threadpool(
            record,
            engine,
            me,
            visit_id,
            _result_id(body),
            key,
            decision,
            comment if isinstance(comment, str) else None,
            readers_required=readers_required,
        )
        after = load(visit_id)
        if adjudicating and row is not None:
            await run_in_threadpool(refresh)
        return JSONResponse(
            {
                "saved": row is not None,
                "lesion": f"{key.label}:{key.lesion_id}",
                "choice": decision.choice,
                "provisional": None if adjudicating else after.provisional(me.id),
                "reviewed": after.reviewed,
                "status": after.outcome.stage,
                "pending": [f"{k.label}:{k.lesion_id}" for k in after.outcome.pending],
            }
        )

    @app.post("/api/visits/{visit_id}/decision")
    async def post_decision_json(request: Request, visit_id: int) -> Response:
        return await decide_json(request, visit_id, False)

    @app.post("/api/adjudicate/{visit_id}")
    async def post_adjudicate_json(request: Request, visit_id: int) -> Response:
        return await decide_json(request, visit_id, True)
