"""Combined unique active (CUA) lesions of one visit: Gd+ and new/enlarging T2, counted once.

Pure numpy/scipy. Both inputs lie on one grid (the visit's FLAIR grid, where the
Gd+ mask and the new/enlarging T2 labels are published).

Rule
----
The trial convention (MAGNIMS 2021 recommendations; the CUA endpoint of e.g.
the ocrelizumab and ofatumumab trials) is::

    CUA = Gd+ lesions + new/enlarging T2 lesions that are not Gd+,
          without double counting a lesion that is both.

"Is both" is decided here by **overlap** (shared voxels), never by proximity:

1. A Gd+ lesion and a new/enlarging T2 lesion are *linked* when they share at
   least ``min_overlap_voxels`` voxels (inclusive), or the whole of the smaller
   of the two (a lesion lying entirely inside the other is always the same
   lesion, however small). Lesions that only touch
   (face-, edge- or corner-adjacent, no shared voxel) are not linked: they are
   two physical lesions.
2. A *CUA unit* is a connected component of the bipartite graph whose nodes
   are the Gd+ lesions and the new/enlarging T2 lesions and whose edges are the
   links. So a Gd+ lesion inside a new T2 lesion is one unit (``"both"``); a
   new T2 lesion holding two enhancing foci is **one** unit, and so is one
   enhancing lesion spanning two T2 lesions (chains of any length collapse to
   one unit); an isolated Gd+ lesion is a ``"gd_only"`` unit (enhancement
   inside a pre-existing, stable T2 lesion still counts: enhancement is
   activity by itself); an isolated new/enlarging T2 lesion is ``"t2_only"``.
3. ``cua_count`` is the number of units.

The literal additive formula ("every Gd+ lesion, plus every new/enlarging T2
lesion that overlaps no Gd+ lesion") differs from the unit count only for a
T2 lesion holding several enhancing foci (the formula counts each focus); it
is given as :attr:`CUAResult.cua_count_additive` so that the two readings
can be compared and reported.

Every Gd+ lesion passed in is counted. With MRI visits at least 4 weeks apart
almost every enhancing lesion is new (enhancement lasts 2-6 weeks); a protocol
that wants "new Gd+ lesions" only passes the Gd+ lesions not enhancing at the
previous visit.

Lesions are given as label images (0 = background, each positive value one
lesion, as published) or as binary masks, which are labelled into lesions
with ``connectivity`` (:func:`lesionq.core.components.label_components`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import ConfigError, GeometryError, InputError
from .components import canonical_order, check_connectivity, label_components

__all__ = ["CUA_KINDS", "CUAResult", "combined_unique_active"]

log = logging.getLogger(__name__)

#: Kind of a CUA unit: Gd+ lesion(s) only, new/enlarging T2 lesion(s) only, or both.
CUA_KINDS: tuple[str, ...] = ("gd_only", "t2_only", "both")


@dataclass(frozen=True, eq=False)
class CUAResult:
    """Combined unique active lesions of one visit.

    Attributes
    ----------
    labels : ndarray of int32, shape (X, Y, Z)
        CUA unit image: 0 = background, ``1..n`` = unit id, over the union of
        the unit's Gd+ and new/enlarging T2 voxels. Units are numbered in the
        canonical order of :mod:`lesionq.core.components` (most voxels first,
        ties by first voxel in C order). A voxel shared by a Gd+ and a T2 lesion
        of *different* units (possible only with ``min_overlap_voxels > 1``)
        takes the Gd+ lesion's unit; so, in the corner case of a T2 lesion
        covered by several Gd+ lesions none of which it is linked to, its unit
        has no voxel in this image (``n_voxels`` 0) but is still counted.
    gd_ids, t2_ids : tuple of tuple of int
        Per unit (index ``u - 1`` for unit ``u``): the Gd+ / new-enlarging T2
        label values it contains, sorted (values of the input label images, or
        of their labelling when a mask was given).
    kind : tuple of str
        Per unit: ``"gd_only"``, ``"t2_only"`` or ``"both"``.
    n_voxels : ndarray of int64, shape (n,)
        Voxels of each unit in :attr:`labels`.
    gd_labels, t2_labels : ndarray of int32, shape (X, Y, Z)
        The lesion label images the units refer to (inputs as given, or their
        labelling when masks were given).
    """

    labels: np.ndarray
    gd_ids: tuple[tuple[int, ...], ...]
    t2_ids: tuple[tuple[int, ...], ...]
    kind: tuple[str, ...]
    n_voxels: np.ndarray
    gd_labels: np.ndarray
    t2_labels: np.ndarray

    @property
    def cua_count(self) -> int:
        """Number of CUA units (each physical active lesion once)."""
        return len(self.kind)

    @property
    def n_gd(self) -> int:
        """Number of Gd+ lesions."""
        return sum(len(g) for g in self.gd_ids)

    @property
    def n_new_enlarging(self) -> int:
        """Number of new/enlarging T2 lesions."""
        return sum(len(t) for t in self.t2_ids)

    @property
    def n_t2_without_gd(self) -> int:
        """New/enlarging T2 lesions linked to no Gd+ lesion."""
        return sum(len(t) for t, k in zip(self.t2_ids, self.kind, strict=True) if k == "t2_only")

    @property
    def cua_count_additive(self) -> int:
        """``n_gd + n_t2_without_gd``: the literal additive reading of the rule."""
        return self.n_gd + self.n_t2_without_gd

    def count_by_kind(self) -> dict[str, int]:
        """Units per kind, ``{"gd_only": a, "t2_only": b, "both": c}``."""
        return {k: self.kind.count(k) for k in CUA_KINDS}

    def rows(self) -> list[dict[str, Any]]:
        """One dict per unit: ``cua_id, kind, gd_ids, t2_ids, n_voxels``.

        ``gd_ids`` / ``t2_ids`` are comma-separated label values (``""`` when
        none), ready for a TSV.
        """
        return [
            {
                "cua_id": u + 1,
                "kind": self.kind[u],
                "gd_ids": ",".join(str(i) for i in self.gd_ids[u]),
                "t2_ids": ",".join(str(i) for i in self.t2_ids[u]),
                "n_voxels": int(self.n_voxels[u]),
            }
            for u in range(self.cua_count)
        ]


def _as_labels(arr: Any, name: str, connectivity: int) -> np.ndarray:
    """Label image (int64) from a label image or a binary mask."""
    a = np.asarray(arr)
    if a.ndim != 3:
        raise InputError(f"{name}: expected a 3-D array, got shape {a.shape}")
    if a.dtype == bool:
        lab, _ = label_components(a, connectivity=connectivity)
        return lab.astype(np.int64)
    if not np.issubdtype(a.dtype, np.integer):
        raise InputError(
            f"{name}: expected an integer label image or a bool mask, got dtype {a.dtype}"
        )
    if a.size and a.min() < 0:
        raise InputError(f"{name}: negative label values found (min {int(a.min())})")
    return a.astype(np.int64, copy=False)


def _find(parent: dict[Any, Any], x: Any) -> Any:
    root = x
    while parent[root] != root:
        root = parent[root]
    while parent[x] != root:  # path compression
        parent[x], x = root, parent[x]
    return root


def combined_unique_active(
    gd_labels: Any,
    new_enlarging_labels: Any,
    *,
    connectivity: int = 26,
    min_overlap_voxels: int = 1,
) -> CUAResult:
    """Combined unique active lesions: Gd+ and new/enlarging T2, each physical lesion once.

    See the module docstring for the rule.

    Parameters
    ----------
    gd_labels : array_like, shape (X, Y, Z)
        Gd-enhancing lesions: an integer label image (0 = background, each
        positive value one lesion) or a bool mask (labelled with
        ``connectivity``).
    new_enlarging_labels : array_like, shape (X, Y, Z)
        New and enlarging T2 lesions of the same visit on the same grid
        (label image or bool mask, as above).
    connectivity : {6, 18, 26}
        Neighbourhood used to label a bool mask into lesions. It does **not**
        link lesions: only shared voxels do.
    min_overlap_voxels : int
        A Gd+ and a T2 lesion are the same physical lesion when they share at
        least this many voxels (inclusive, >= 1), or all voxels of the smaller.

    Returns
    -------
    CUAResult
        ``cua_count``, the unit label image and, per unit, its Gd+ and T2 ids
        and kind.

    Raises
    ------
    GeometryError
        The two images differ in shape.
    InputError
        Not 3-D, not integer/bool, or negative labels.
    ConfigError
        ``min_overlap_voxels < 1`` or an unknown connectivity.

    Examples
    --------
    >>> gd = np.zeros((1, 1, 12), int); t2 = np.zeros_like(gd)
    >>> gd[0, 0, 1:3] = 1; gd[0, 0, 5:6] = 2   # two enhancing foci...
    >>> t2[0, 0, 1:7] = 1                      # ...in one new T2 lesion
    >>> t2[0, 0, 9:11] = 2                     # and a non-enhancing new lesion
    >>> r = combined_unique_active(gd, t2)
    >>> r.cua_count, r.kind, r.gd_ids, r.cua_count_additive
    (2, ('both', 't2_only'), ((1, 2), ()), 3)
    """
    conn = check_connectivity(connectivity)
    if isinstance(min_overlap_voxels, bool) or not isinstance(min_overlap_voxels, int | np.integer):
        raise ConfigError(f"min_overlap_voxels must be an integer >= 1, got {min_overlap_voxels!r}")
    if min_overlap_voxels < 1:
        raise ConfigError(f"min_overlap_voxels must be >= 1, got {min_overlap_voxels}")
    gshape, tshape = np.shape(gd_labels), np.shape(new_enlarging_labels)
    if gshape != tshape:
        raise GeometryError(
            f"combined_unique_active: gd_labels shape {gshape} differs from "
            f"new_enlarging_labels shape {tshape} (both must be on the visit's FLAIR grid)"
        )
    gd = _as_labels(gd_labels, "gd_labels", conn)
    t2 = _as_labels(new_enlarging_labels, "new_enlarging_labels", conn)
    shape = gd.shape

    g_ids = [int(v) for v in np.unique(gd) if v > 0]
    t_ids = [int(v) for v in np.unique(t2) if v > 0]
    nodes: list[tuple[str, int]] = [("gd", g) for g in g_ids] + [("t2", t) for t in t_ids]
    parent: dict[tuple[str, int], tuple[str, int]] = {n: n for n in nodes}

    both = (gd > 0) & (t2 > 0)
    if both.any():
        pairs, counts = np.unique(
            np.stack([gd[both], t2[both]], axis=1), axis=0, return_counts=True
        )
        g_size = np.bincount(gd.ravel())
        t_size = np.bincount(t2.ravel())
        for (g, t), c in zip(pairs.tolist(), counts.tolist(), strict=True):
            if c >= min(int(min_overlap_voxels), int(g_size[g]), int(t_size[t])):
                ra, rb = _find(parent, ("gd", g)), _find(parent, ("t2", t))
                if ra != rb:
                    parent[max(ra, rb)] = min(ra, rb)

    groups: dict[tuple[str, int], list[tuple[str, int]]] = {}
    for n in nodes:
        groups.setdefault(_find(parent, n), []).append(n)
    members = list(groups.values())

    # provisional unit image: T2 lesions first, Gd+ over them (the Gd+ lesion's
    # unit wins a voxel shared by lesions of two units)
    n_units = len(members)
    gd_lut = np.zeros(int(gd.max(initial=0)) + 1, np.int64)
    t2_lut = np.zeros(int(t2.max(initial=0)) + 1, np.int64)
    for u, mem in enumerate(members, start=1):
        for kind, lid in mem:
            (gd_lut if kind == "gd" else t2_lut)[lid] = u
    prov = t2_lut[t2]
    prov = np.where(gd > 0, gd_lut[gd], prov)

    labels = np.zeros(shape, np.int32)
    gd_sets: list[tuple[int, ...]] = []
    t2_sets: list[tuple[int, ...]] = []
    kinds: list[str] = []
    n_vox = np.zeros(0, np.int64)
    if n_units:
        flat = prov.ravel()
        nz = np.flatnonzero(flat)
        sizes = np.bincount(flat[nz], minlength=n_units + 1)[1:]
        first = np.full(n_units, np.iinfo(np.int64).max, np.int64)
        np.minimum.at(first, flat[nz] - 1, nz)
        order = canonical_order(sizes, first)  # order[k] = provisional unit (0-based)
        new_id = np.zeros(n_units + 1, np.int32)
        new_id[order + 1] = np.arange(1, n_units + 1, dtype=np.int32)
        labels = new_id[prov].astype(np.int32)
        n_vox = sizes[order].astype(np.int64)
        for k in order.tolist():
            mem = members[k]
            g = tuple(sorted(lid for kind, lid in mem if kind == "gd"))
            t = tuple(sorted(lid for kind, lid in mem if kind == "t2"))
            gd_sets.append(g)
            t2_sets.append(t)
            kinds.append("both" if g and t else ("gd_only" if g else "t2_only"))
    res = CUAResult(
        labels=labels,
        gd_ids=tuple(gd_sets),
        t2_ids=tuple(t2_sets),
        kind=tuple(kinds),
        n_voxels=n_vox,
        gd_labels=gd.astype(np.int32),
        t2_labels=t2.astype(np.int32),
    )
    log.debug(
        "combined_unique_active: %d Gd+ and %d new/enlarging T2 lesions -> %d CUA units %s",
        len(g_ids),
        len(t_ids),
        res.cua_count,
        res.count_by_kind(),
    )
    return res
