"""Lesions a reader added, as stored: the record, its mask, the two-reader rule, the counts.

The review app (:mod:`lesionq.review.added`) grows a region from a reader's seed
and stores it in ``added_lesions``; this module holds what reading the review needs
(:mod:`lesionq.store.reviewed`): the stored record (:class:`AddedLesion`, named
``A<id>``, :class:`~lesionq.store.review_rules.LesionKey` ``("A", id)``), its mask
codec, :func:`load_added`, the rules below and the counts. :mod:`lesionq.review.added`
re-exports these names.

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

import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
import sqlalchemy as sa

from .review_rules import ACCEPT, Decision, LesionKey, count_lesions
from .review_tables import added_lesions as added_t
from .review_tables import readers as readers_t

__all__ = [
    "ADDED_LABEL",
    "AddedLesion",
    "AddedOutcome",
    "encode_mask",
    "decode_mask",
    "parse_bbox",
    "load_added",
    "resolve_added",
    "count_with_added",
]

#: ``LesionKey.label`` of added lesions (``A<id>``).
ADDED_LABEL = "A"


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
        origin, box = parse_bbox(self.bbox)
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
    """The boolean box of :func:`encode_mask`.

    Parameters
    ----------
    blob : bytes
        The compressed bits.
    shape : sequence of int
        The box size ``ni, nj, nk`` (:func:`parse_bbox`).

    Returns
    -------
    numpy.ndarray
        Boolean, of ``shape``.
    """
    n = int(np.prod(shape))
    bits = np.unpackbits(np.frombuffer(zlib.decompress(blob), np.uint8), count=n)
    return bits.astype(bool).reshape(tuple(int(s) for s in shape))


def parse_bbox(text: str) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    """Origin and size of the bounding-box text of :func:`encode_mask`.

    Parameters
    ----------
    text : str
        ``i0,j0,k0,ni,nj,nk``.

    Returns
    -------
    origin, size : tuple of int
        ``(i0, j0, k0)`` and ``(ni, nj, nk)``.

    Examples
    --------
    >>> parse_bbox("1,2,4,2,1,1")
    ((1, 2, 4), (2, 1, 1))
    """
    v = [int(x) for x in text.split(",")]
    return (v[0], v[1], v[2]), (v[3], v[4], v[5])


def load_added(conn: sa.Connection, result_ids: Iterable[int]) -> dict[int, list[AddedLesion]]:
    """The added lesions of some visit results.

    Parameters
    ----------
    conn : sqlalchemy.Connection
    result_ids : iterable of int
        ``visit_results.id`` values.

    Returns
    -------
    dict
        Visit result id -> its added lesions (every reader's), by id; results
        without added lesions are absent.
    """
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
    """:func:`~lesionq.store.review_rules.count_lesions` over the lesions and ``added``.

    Parameters
    ----------
    volumes_mm3 : mapping of LesionKey to float
        Every lesion of the visit result and its volume in mm3.
    decisions : mapping of LesionKey to Decision
        Decisions on the lesions and on the added lesions (keys ``("A", id)``).
    added : sequence of AddedLesion
    default : Decision or None
        Decision of a lesion or added lesion missing from ``decisions`` (None:
        not counted).

    Returns
    -------
    dict
        ``t2_count``, ``t2_volume_mm3``, ``gd_count``, ``gd_volume_mm3``; an added
        lesion counts under its ``label`` when its decision is accept.
    """
    vols = dict(volumes_mm3)
    dec = dict(decisions)
    for a in added:
        k = LesionKey(a.label, -a.id)  # internal: never collides with a lesions.tsv id
        vols[k] = a.volume_mm3
        if a.key in decisions:
            dec[k] = decisions[a.key]
    return count_lesions(vols, dec, default=default)
