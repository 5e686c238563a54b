"""Lesions a reader adds: grown from a seed, previewed, stored (audited).

A reader clicks a seed in the viewer; :func:`lesionq.core.region_grow.grow_region`
grows a region on the visit's FLAIR (T2 lesions) or post-contrast T1 (Gd+ lesions)
and the reader sees it (:func:`preview`) before saving it (:func:`add_lesion`). An
added lesion is named ``A<id>`` (:class:`~lesionq.review.decisions.LesionKey`
``("A", id)``, ``id`` the row's primary key), has a volume (mm3), a centroid (mm),
a location class (the reader's, or else the one the pipeline gives the visit's own
lesions: :func:`atlas_location`, from the packaged atlas through the visit's published
atlas transform) and its mask.
Removing or editing an added lesion is not supported (the table is append-only).

The stored record (:class:`AddedLesion`), its mask codec, :func:`load_added`, the
two-reader rule (:func:`resolve_added`) and the counts (:func:`count_with_added`)
live in :mod:`lesionq.store.review_added` (its docstring states the rules), so
that the review read model (:mod:`lesionq.store.reviewed`) counts added lesions as
the app does; they are re-exported here.
"""

from __future__ import annotations

import gzip
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import SimpleITK as sitk
import sqlalchemy as sa

from ..core.location import LOCATION_CLASSES, classify_locations
from ..core.region_grow import THRESHOLD_MODES, RegionGrowth, grow_region
from ..errors import InputError
from ..io.atlas import load_atlas
from ..io.sitk_bridge import nib_to_sitk, read_transform, reference_image, sitk_to_nib
from ..store.review_added import (
    ADDED_LABEL,
    AddedLesion,
    AddedOutcome,
    count_with_added,
    decode_mask,
    encode_mask,
    load_added,
    parse_bbox,
    resolve_added,
)
from ..store.review_tables import added_lesions as added_t
from .auth import Reader
from .dbutil import audit, inserted_id, now, write_tx

__all__ = [
    "ADDED_LABEL",
    "ADDED_SOURCES",
    "AddedLesion",
    "AddedOutcome",
    "encode_mask",
    "decode_mask",
    "parse_bbox",
    "load_added",
    "resolve_added",
    "count_with_added",
    "grow_on_visit",
    "add_lesion",
    "atlas_location",
]

#: Image (output key of ``OUTPUTS``) a region of each counted label is grown on.
ADDED_SOURCES: Mapping[str, str] = {"T2": "flair_preproc", "Gd": "t1ce_coreg"}
#: Former private name of :func:`~lesionq.store.review_added.parse_bbox` (the viewer uses it).
_parse_bbox = parse_bbox


# ----------------------------------------------------------------------------- growing


@dataclass(frozen=True)
class Grown:
    """A grown region on a visit's image, with its geometry."""

    growth: RegionGrowth
    seed: tuple[int, int, int]
    affine: np.ndarray
    shape: tuple[int, int, int]
    centroid_mm: tuple[float, float, float]

    def summary(self) -> dict[str, Any]:
        """JSON-safe: voxel count, volume, bounding box, threshold, seed, centroid."""
        g = self.growth
        return {
            "n_voxels": g.n_voxels,
            "volume_mm3": g.volume_mm3,
            "bbox": [list(b) for b in g.bbox],
            "lower": round(g.lower, 3),
            "seed_value": round(g.seed_value, 3),
            "capped": g.capped,
            "seed": list(self.seed),
            "centroid_mm": [round(c, 2) for c in self.centroid_mm],
        }


def grow_on_visit(
    image: np.ndarray,
    affine: np.ndarray,
    seed_mm: Sequence[float],
    *,
    threshold: float,
    mode: str,
    connectivity: int,
) -> Grown:
    """Grow a region from the voxel nearest ``seed_mm`` (world RAS+ mm) on ``image``."""
    if mode not in THRESHOLD_MODES:
        raise InputError(f"mode must be one of {THRESHOLD_MODES}, got {mode!r}")
    if len(seed_mm) != 3 or not all(math.isfinite(float(v)) for v in seed_mm):
        raise InputError("seed_mm must be 3 finite numbers (mm)")
    ijk = np.linalg.solve(np.asarray(affine, float), np.array([*map(float, seed_mm), 1.0]))[:3]
    seed = tuple(int(v) for v in np.rint(ijk))
    if any(s < 0 or s >= n for s, n in zip(seed, image.shape, strict=True)):
        raise InputError(f"the seed {list(seed_mm)} mm lies outside the image")
    vs = nib.affines.voxel_sizes(affine)
    g = grow_region(image, seed, vs, threshold=threshold, mode=mode, connectivity=int(connectivity))
    if g.n_voxels:
        c = np.argwhere(g.mask).mean(axis=0)
        xyz = nib.affines.apply_affine(np.asarray(affine, float), c)
        centroid = (float(xyz[0]), float(xyz[1]), float(xyz[2]))
    else:
        centroid = (math.nan, math.nan, math.nan)
    return Grown(g, seed, np.asarray(affine, float), image.shape, centroid)  # type: ignore[arg-type]


def atlas_location(
    grown: Grown,
    transform_path: str | Path | None,
    *,
    atlas_dir: str | Path | None = None,
    rules: Mapping[str, Any] | None = None,
) -> str | None:
    """Location class of a grown region from the run-time atlas, as the pipeline gives one.

    The atlas location map is resampled (nearest neighbour) onto the region's grid
    through the visit's published atlas transform (``xfm_template``: FLAIR points ->
    template points, LPS mm) and the region is classified by
    :func:`lesionq.core.location.classify_locations`, the rule of the visit's own
    lesions.

    Parameters
    ----------
    grown : Grown
        The region, on the visit's FLAIR grid (the T1ce is co-registered there too).
    transform_path : path or None
        The visit's ``xfm_template`` file; None or a missing file gives None.
    atlas_dir : path, optional
        Atlas folder (default: the packaged atlas).
    rules : mapping, optional
        Keyword parameters of ``classify_locations`` (the protocol's rules).

    Returns
    -------
    str or None
        One of :data:`lesionq.core.location.LOCATION_CLASSES`; None when the
        region is empty or the visit has no atlas transform.
    """
    if transform_path is None or not Path(transform_path).is_file():
        return None
    if grown.growth.n_voxels == 0:
        return None
    atlas = load_atlas(atlas_dir)
    resampled = sitk.Resample(
        nib_to_sitk(np.asarray(atlas.location), atlas.affine),
        reference_image(grown.shape, grown.affine),
        read_transform(transform_path),
        sitk.sitkNearestNeighbor,
        0,
    )
    loc, _ = sitk_to_nib(resampled)
    vs = nib.affines.voxel_sizes(grown.affine)
    classes = classify_locations(
        grown.growth.mask.astype(np.int32), np.asarray(loc), vs, **dict(rules or {})
    )
    return classes.get(1)


def mask_nifti(grown: Grown) -> bytes:
    """The grown mask as a gzipped NIfTI label image (uint8, 1 = region) on the image grid."""
    img = nib.Nifti1Image(grown.growth.mask.astype(np.uint8), grown.affine)
    img.header.set_intent("label")
    return gzip_nifti(img)


def gzip_nifti(img: nib.Nifti1Image) -> bytes:
    """``.nii.gz`` bytes of an image (fast compression)."""
    return gzip.compress(img.to_bytes(), compresslevel=1)


def add_lesion(
    engine: sa.Engine,
    reader: Reader,
    check: Any,
    grown: Grown,
    *,
    label: str,
    threshold: float,
    mode: str,
    connectivity: int,
    location: str | None,
    comment: str | None,
) -> AddedLesion:
    """Store a grown lesion for ``reader`` (audited) after ``check(conn)`` allows it.

    ``check`` (called in the write transaction) returns the visit's writable
    :class:`~lesionq.review.state.ReviewState` or raises ``ReviewRefused``
    (e.g. :func:`lesionq.review.state.reader_writable_state`).

    Raises
    ------
    InputError
        An unknown label or location class, or an empty region.
    """
    if label not in ADDED_SOURCES:
        raise InputError(f"label must be one of {sorted(ADDED_SOURCES)}, got {label!r}")
    if location is not None and location not in LOCATION_CLASSES:
        raise InputError(f"location must be one of {LOCATION_CLASSES}, got {location!r}")
    if grown.growth.n_voxels == 0:
        raise InputError("the region is empty: lower the threshold or move the seed")
    bbox, blob = encode_mask(grown.growth.mask)
    comment = (comment or "").strip()[:2000] or None
    t = now()
    with write_tx(engine) as conn:
        state = check(conn)
        values = {
            "visit_result_id": state.visit.result_id,
            "reader_id": reader.id,
            "label": label,
            "seed_i": grown.seed[0],
            "seed_j": grown.seed[1],
            "seed_k": grown.seed[2],
            "threshold": float(threshold),
            "mode": mode,
            "connectivity": int(connectivity),
            "n_voxels": grown.growth.n_voxels,
            "volume_mm3": grown.growth.volume_mm3,
            "centroid_x_mm": grown.centroid_mm[0],
            "centroid_y_mm": grown.centroid_mm[1],
            "centroid_z_mm": grown.centroid_mm[2],
            "location": location,
            "bbox": bbox,
            "mask": blob,
            "comment": comment,
            "created_at": t,
        }
        new_id = inserted_id(conn.execute(sa.insert(added_t).values(**values)))
        row = AddedLesion(
            id=new_id,
            visit_result_id=state.visit.result_id,
            reader_id=reader.id,
            username=reader.username,
            label=label,
            seed=grown.seed,
            threshold=float(threshold),
            mode=mode,
            connectivity=int(connectivity),
            n_voxels=grown.growth.n_voxels,
            volume_mm3=grown.growth.volume_mm3,
            centroid_mm=grown.centroid_mm,
            location=location,
            bbox=bbox,
            mask=blob,
            comment=comment,
            created_at=t,
        )
        audit(
            conn,
            actor=reader.username,
            action="added_lesion.recorded",
            entity="added_lesions",
            entity_id=new_id,
            before=None,
            after=row.as_dict(),
            detail=f"{state.visit.title} result {state.visit.result_id}: added {row.name}",
        )
    return row


def source_key(label: str) -> str:
    """Output key of the image a lesion of ``label`` is grown on."""
    return ADDED_SOURCES[label]
