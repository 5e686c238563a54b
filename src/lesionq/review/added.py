"""Lesions a reader adds: grown from a seed, stored, counted, and the two-reader rule.

A reader clicks a seed in the viewer; :func:`lesionq.core.region_grow.grow_region`
grows a region on the visit's FLAIR (T2 lesions) or post-contrast T1 (Gd+ lesions)
and the reader sees it (:func:`preview`) before saving it (:func:`add_lesion`). An
added lesion is named ``A<id>`` (:class:`~lesionq.review.decisions.LesionKey`
``("A", id)``, ``id`` the row's primary key), has a volume (mm3), a centroid (mm),
the location class the reader gives it (:data:`lesionq.core.location.LOCATION_CLASSES`;
the output folder keeps no location map to classify it automatically) and its mask.
Removing or editing an added lesion is not supported (the table is append-only).

Rules (:func:`resolve_added`)
-----------------------------
* Before submitting, a reader sees only their own added lesions, and their
  provisional counts include them (as accepted lesions of their label).
* Once the required readers have submitted (only added lesions of those readers
  count): with one reader required, every added lesion is final and counted.
  With two, added lesions of the same label that overlap (share at least one
  voxel) across the two readers are an agreement: the group counts once, as its
  lowest-id lesion (the others are ``merged`` into it). An added lesion that
  overlaps none of the other reader's is a disagreement: an adjudicator accepts
  (counted) or rejects it (not counted) like any other disagreement, and the
  visit is not final until they have.
* Reviewed counts add the accepted added lesions (count 1 each, their
  ``volume_mm3``) to their label's count and volume.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import nibabel as nib
import numpy as np
import sqlalchemy as sa

from ..core.location import LOCATION_CLASSES
from ..core.region_grow import THRESHOLD_MODES, RegionGrowth, grow_region
from ..errors import InputError
from .auth import Reader
from .dbutil import audit, inserted_id, now, write_tx
from .decisions import ACCEPT, Decision, LesionKey, count_lesions
from .models import added_lesions as added_t
from .models import readers as readers_t

__all__ = [
    "ADDED_LABEL",
    "ADDED_SOURCES",
    "AddedLesion",
    "AddedOutcome",
    "encode_mask",
    "decode_mask",
    "load_added",
    "resolve_added",
    "count_with_added",
    "grow_on_visit",
    "add_lesion",
]

#: ``LesionKey.label`` of added lesions (``A<id>``).
ADDED_LABEL = "A"
#: Image (output key of ``OUTPUTS``) a region of each counted label is grown on.
ADDED_SOURCES: Mapping[str, str] = {"T2": "flair_preproc", "Gd": "t1ce_coreg"}


@dataclass(frozen=True)
class AddedLesion:
    """A lesion a reader added to a visit result."""

    id: int
    visit_result_id: int
    reader_id: int
    username: str
    label: str
    seed: tuple[int, int, int]
    threshold: float
    mode: str
    connectivity: int
    n_voxels: int
    volume_mm3: float
    centroid_mm: tuple[float, float, float]
    location: str | None
    bbox: str
    mask: bytes
    comment: str | None
    created_at: datetime

    @property
    def key(self) -> LesionKey:
        """``LesionKey("A", id)``."""
        return LesionKey(ADDED_LABEL, self.id)

    @property
    def name(self) -> str:
        """``A<id>``."""
        return f"{ADDED_LABEL}{self.id}"

    def voxels(self, shape: Sequence[int] | None = None) -> frozenset[int]:
        """The lesion's voxels as flat indices on a grid of ``shape`` (default: a large grid)."""
        origin, box = _parse_bbox(self.bbox)
        m = decode_mask(self.mask, box)
        grid = tuple(shape) if shape is not None else (1 << 20, 1 << 20, 1 << 20)
        idx = np.argwhere(m) + np.asarray(origin)
        return frozenset(np.ravel_multi_index(tuple(idx.T), grid).tolist())

    def as_dict(self) -> dict[str, Any]:
        """JSON-safe summary (audit log, JSON routes); no mask."""
        return {
            "id": self.id,
            "name": self.name,
            "label": self.label,
            "seed": list(self.seed),
            "threshold": self.threshold,
            "mode": self.mode,
            "connectivity": self.connectivity,
            "n_voxels": self.n_voxels,
            "volume_mm3": self.volume_mm3,
            "centroid_mm": list(self.centroid_mm),
            "location": self.location,
            "comment": self.comment,
        }


def encode_mask(mask: np.ndarray) -> tuple[str, bytes]:
    """(bbox text ``i0,j0,k0,ni,nj,nk``, zlib of the packed bits of the box, C order).

    Examples
    --------
    >>> m = np.zeros((5, 5, 5), bool); m[1:3, 2, 4] = True
    >>> bbox, blob = encode_mask(m)
    >>> bbox, decode_mask(blob, (2, 1, 1)).ravel().tolist()
    ('1,2,4,2,1,1', [True, True])
    """
    idx = np.nonzero(mask)
    if not idx[0].size:
        raise ValueError("encode_mask: empty mask")
    lo = [int(i.min()) for i in idx]
    hi = [int(i.max()) + 1 for i in idx]
    box = mask[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]]
    bbox = ",".join(str(v) for v in (*lo, *(h - low for h, low in zip(hi, lo, strict=True))))
    return bbox, zlib.compress(np.packbits(box.ravel()).tobytes(), 9)


def decode_mask(blob: bytes, shape: Sequence[int]) -> np.ndarray:
    """The boolean box of :func:`encode_mask` (``shape`` = its ``ni, nj, nk``)."""
    n = int(np.prod(shape))
    bits = np.unpackbits(np.frombuffer(zlib.decompress(blob), np.uint8), count=n)
    return bits.astype(bool).reshape(tuple(int(s) for s in shape))


def _parse_bbox(text: str) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    v = [int(x) for x in text.split(",")]
    return (v[0], v[1], v[2]), (v[3], v[4], v[5])


def load_added(conn: sa.Connection, result_ids: Iterable[int]) -> dict[int, list[AddedLesion]]:
    """Added lesions per visit result id, by id."""
    ids = [int(i) for i in result_ids]
    out: dict[int, list[AddedLesion]] = {}
    if not ids:
        return out
    q = (
        sa.select(added_t, readers_t.c.username)
        .join(readers_t, readers_t.c.id == added_t.c.reader_id)
        .where(added_t.c.visit_result_id.in_(ids) if len(ids) <= 500 else sa.true())
        .order_by(added_t.c.id)
    )
    for r in conn.execute(q).mappings():
        out.setdefault(int(r["visit_result_id"]), []).append(
            AddedLesion(
                id=int(r["id"]),
                visit_result_id=int(r["visit_result_id"]),
                reader_id=int(r["reader_id"]),
                username=r["username"],
                label=r["label"],
                seed=(int(r["seed_i"]), int(r["seed_j"]), int(r["seed_k"])),
                threshold=float(r["threshold"]),
                mode=r["mode"],
                connectivity=int(r["connectivity"]),
                n_voxels=int(r["n_voxels"]),
                volume_mm3=float(r["volume_mm3"]),
                centroid_mm=(
                    float(r["centroid_x_mm"]),
                    float(r["centroid_y_mm"]),
                    float(r["centroid_z_mm"]),
                ),
                location=r["location"],
                bbox=r["bbox"],
                mask=bytes(r["mask"]),
                comment=r["comment"],
                created_at=r["created_at"],
            )
        )
    return out


@dataclass(frozen=True)
class AddedOutcome:
    """The added lesions' share of a visit's outcome (:func:`resolve_added`).

    ``final`` maps the key of each counted-or-rejected added lesion to its final
    decision; ``merged`` maps an agreed duplicate to the lesion it counts as.
    """

    final: Mapping[LesionKey, Decision]
    disagreements: tuple[LesionKey, ...]
    pending: tuple[LesionKey, ...]
    merged: Mapping[LesionKey, LesionKey]


def resolve_added(
    added: Sequence[AddedLesion],
    submitted_reader_ids: Sequence[int],
    adjudicated: Mapping[LesionKey, Decision],
    *,
    readers_required: int,
) -> AddedOutcome:
    """Apply the rules of the module docstring to a visit result's added lesions.

    Parameters
    ----------
    added : sequence of AddedLesion
        Every added lesion of the visit result.
    submitted_reader_ids : sequence of int
        The readers who submitted, in submission order (the first
        ``readers_required`` count).
    adjudicated : mapping
        The adjudicators' current decisions (keys ``("A", id)`` are used).
    readers_required : {1, 2}

    Returns
    -------
    AddedOutcome
        Empty until the required readers have submitted.
    """
    used = list(submitted_reader_ids)[:readers_required]
    if len(used) < readers_required:
        return AddedOutcome({}, (), (), {})
    mine = [a for a in added if a.reader_id in used]
    final: dict[LesionKey, Decision] = {}
    merged: dict[LesionKey, LesionKey] = {}
    disagreements: list[LesionKey] = []
    pending: list[LesionKey] = []
    if readers_required == 1:
        return AddedOutcome({a.key: ACCEPT for a in mine}, (), (), {})
    # union-find over the overlaps between lesions of the same label of different readers
    parent = {a.id: a.id for a in mine}

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    vox = {a.id: a.voxels() for a in mine}
    for i, a in enumerate(mine):
        for b in mine[i + 1 :]:
            if a.reader_id != b.reader_id and a.label == b.label and vox[a.id] & vox[b.id]:
                parent[find(a.id)] = find(b.id)
    groups: dict[int, list[AddedLesion]] = {}
    for a in mine:
        groups.setdefault(find(a.id), []).append(a)
    for members in groups.values():
        members.sort(key=lambda a: a.id)
        if len({a.reader_id for a in members}) > 1:
            final[members[0].key] = ACCEPT
            for a in members[1:]:
                merged[a.key] = members[0].key
            continue
        for a in members:
            disagreements.append(a.key)
            if a.key in adjudicated:
                final[a.key] = adjudicated[a.key]
            else:
                pending.append(a.key)
    return AddedOutcome(final, tuple(disagreements), tuple(pending), merged)


def count_with_added(
    volumes_mm3: Mapping[LesionKey, float | None],
    decisions: Mapping[LesionKey, Decision],
    added: Sequence[AddedLesion],
    *,
    default: Decision | None = ACCEPT,
) -> dict[str, int | float]:
    """:func:`~lesionq.review.decisions.count_lesions` over the lesions and ``added``.

    An added lesion counts under its ``label`` when its decision (in ``decisions``
    under its key ``("A", id)``, else ``default``) is accept.
    """
    vols = dict(volumes_mm3)
    dec = dict(decisions)
    for a in added:
        k = LesionKey(a.label, -a.id)  # internal: never collides with a lesions.tsv id
        vols[k] = a.volume_mm3
        if a.key in decisions:
            dec[k] = decisions[a.key]
    return count_lesions(vols, dec, default=default)


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


def mask_nifti(grown: Grown) -> bytes:
    """The grown mask as a gzipped NIfTI label image (uint8, 1 = region) on the image grid."""
    img = nib.Nifti1Image(grown.growth.mask.astype(np.uint8), grown.affine)
    img.header.set_intent("label")
    return gzip_nifti(img)


def gzip_nifti(img: nib.Nifti1Image) -> bytes:
    """``.nii.gz`` bytes of an image (fast compression)."""
    import gzip

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
