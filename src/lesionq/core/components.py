"""Connected lesion components and per-lesion tables.

Conventions
-----------
* A *mask* is a 3-D array, shape ``(X, Y, Z)``, of dtype bool (or an integer /
  float array holding only 0 and 1).
* A *label image* is a 3-D integer array: 0 is background, ``1..n`` are lesions.
* Connectivity is 6 (faces), 18 (faces + edges) or 26 (faces + edges + corners).

Canonical numbering
-------------------
Every labelling returned here (and by the dask twins in
:mod:`lesionq.core.chunked`) numbers components in one deterministic order:

1. by **descending voxel count** (the largest lesion is 1);
2. ties broken by the **first voxel in C order** (the smallest flat index
   ``numpy.ravel_multi_index((i, j, k), shape)``, i.e. the voxel met first when
   scanning axis 0 slowest and axis 2 fastest).

The order therefore depends only on the mask and the connectivity, never on
the connected-component algorithm or the chunking.

Size rule
---------
:func:`label_lesions` keeps a component when its volume is **>=**
``min_volume_mm3`` (inclusive); the voxel threshold comes from
:func:`lesionq.core.units.min_voxels_for_mm3`, the one place where mm3 become
voxels.

Tables
------
:func:`lesion_table` returns a :class:`LesionTable`, a frozen dataclass of
read-only numpy columns (no pandas in ``core``). ``table.columns()`` gives a
flat ``dict`` of 1-D columns, ready for ``pandas.DataFrame(table.columns())``
in the io layer; ``table.rows()`` gives one ``dict`` per lesion.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import ndimage as ndi

from ..errors import ConfigError, InputError
from .units import min_voxels_for_mm3, voxel_size_from_affine, voxels_to_mm3

__all__ = [
    "CONNECTIVITIES",
    "LesionTable",
    "check_mask",
    "check_connectivity",
    "structure_for",
    "canonical_order",
    "relabel_canonical",
    "label_components",
    "label_lesions",
    "lesion_table",
]

log = logging.getLogger(__name__)

#: Connectivities accepted for 3-D labelling.
CONNECTIVITIES: tuple[int, ...] = (6, 18, 26)


def check_mask(mask: Any, *, name: str = "mask") -> np.ndarray:
    """Validate a 3-D binary mask and return it as a bool array.

    Parameters
    ----------
    mask : array_like, shape (X, Y, Z)
        bool, or integer / float holding only 0 and 1.
    name : str
        Name used in error messages.

    Returns
    -------
    ndarray of bool, shape (X, Y, Z)

    Raises
    ------
    InputError
        Not 3-D, or values other than 0 and 1 (no silent binarisation).

    Examples
    --------
    >>> check_mask(np.array([[[0, 1]]], dtype=np.uint8)).dtype
    dtype('bool')
    """
    arr = np.asarray(mask)
    if arr.ndim != 3:
        raise InputError(f"{name}: expected a 3-D array, got shape {arr.shape}")
    if arr.dtype == bool:
        return arr
    if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise InputError(f"{name}: expected a bool or numeric array, got dtype {arr.dtype}")
    bad = (arr != 0) & (arr != 1)
    if bad.any():
        vals = np.unique(arr[bad])[:5]
        raise InputError(
            f"{name}: a binary mask must hold only 0 and 1, found other values "
            f"(e.g. {vals.tolist()}); threshold it explicitly first"
        )
    return arr.astype(bool)


def check_connectivity(connectivity: int) -> int:
    """Return ``connectivity`` if it is 6, 18 or 26; else raise ConfigError."""
    if connectivity not in CONNECTIVITIES:
        raise ConfigError(
            f"connectivity must be one of {CONNECTIVITIES} (3-D neighbourhoods), got {connectivity!r}"
        )
    return int(connectivity)


def canonical_order(sizes: np.ndarray, first_index: np.ndarray) -> np.ndarray:
    """Order of components by descending size, then ascending first C-order index.

    Parameters
    ----------
    sizes : ndarray of int, shape (k,)
        Voxel count of each component.
    first_index : ndarray of int, shape (k,)
        Flat C-order index of each component's first voxel.

    Returns
    -------
    ndarray of int, shape (k,)
        Permutation: ``order[0]`` is the component that becomes label 1.

    Examples
    --------
    >>> canonical_order(np.array([2, 5, 2]), np.array([9, 4, 3])).tolist()
    [1, 2, 0]
    """
    sizes = np.asarray(sizes, dtype=np.int64)
    first_index = np.asarray(first_index, dtype=np.int64)
    return np.lexsort((first_index, -sizes))


def relabel_canonical(labels: np.ndarray, *, min_voxels: int = 1) -> tuple[np.ndarray, int]:
    """Renumber a label image canonically, dropping components below ``min_voxels``.

    Each distinct positive value of ``labels`` is taken as one component (no
    connectivity analysis here). Components with fewer than ``min_voxels``
    voxels are set to 0 (the rule is inclusive: ``n_voxels >= min_voxels`` is
    kept). The rest are numbered ``1..n`` in canonical order (module docstring).

    Parameters
    ----------
    labels : ndarray of int, shape (X, Y, Z)
        0 = background; any positive values (need not be contiguous).
    min_voxels : int
        Smallest voxel count kept (>= 1).

    Returns
    -------
    labels : ndarray of int32, shape (X, Y, Z)
    n : int
        Number of components kept.

    Examples
    --------
    >>> lab = np.zeros((1, 1, 6), dtype=int)
    >>> lab[0, 0, :] = [7, 7, 0, 3, 3, 3]
    >>> out, n = relabel_canonical(lab)
    >>> out[0, 0].tolist(), n
    ([2, 2, 0, 1, 1, 1], 2)
    """
    labels = np.asarray(labels)
    if labels.ndim != 3:
        raise InputError(f"labels: expected a 3-D array, got shape {labels.shape}")
    if not np.issubdtype(labels.dtype, np.integer):
        raise InputError(f"labels: expected an integer array, got dtype {labels.dtype}")
    if min_voxels < 1:
        raise ConfigError(f"min_voxels must be >= 1, got {min_voxels!r}")
    flat = labels.ravel()
    nz = np.flatnonzero(flat)
    out = np.zeros(labels.shape, dtype=np.int32)
    if nz.size == 0:
        return out, 0
    vals = flat[nz]
    if vals.min() < 0:
        raise InputError(f"labels: negative label values found (min {int(vals.min())})")
    uniq, first_pos, counts = np.unique(vals, return_index=True, return_counts=True)
    first_index = nz[first_pos]
    keep = counts >= min_voxels
    order = canonical_order(counts[keep], first_index[keep])
    kept_vals = uniq[keep][order]
    n = int(kept_vals.size)
    if n > np.iinfo(np.int32).max:  # pragma: no cover - needs > 2e9 components
        raise InputError(f"labels: {n} components do not fit int32")
    new_ids = np.zeros(uniq.size, dtype=np.int32)
    # position of each kept value in uniq
    new_ids[np.searchsorted(uniq, kept_vals)] = np.arange(1, n + 1, dtype=np.int32)
    out.ravel()[nz] = new_ids[np.searchsorted(uniq, vals)]
    dropped = int((~keep).sum())
    if dropped:
        log.debug("relabel_canonical: dropped %d components below %d voxels", dropped, min_voxels)
    return out, n


#: scipy.ndimage structuring-element rank for each connectivity.
_RANK = {6: 1, 18: 2, 26: 3}


def structure_for(connectivity: int) -> np.ndarray:
    """3x3x3 bool structuring element of a 6-, 18- or 26-connectivity."""
    return ndi.generate_binary_structure(3, _RANK[check_connectivity(connectivity)])


def _cc(mask: np.ndarray, connectivity: int) -> np.ndarray:
    """Raw connected components (arbitrary numbering) of a bool mask.

    scipy.ndimage.label is used rather than cc3d: cc3d 4.1.1 with
    ``binary_image=True`` and 26-connectivity raises "maximum length exception"
    on thin shapes such as a 1x1x7 line with gaps.
    """
    labels, _ = ndi.label(mask, structure=structure_for(connectivity))
    return labels


def label_components(mask: Any, *, connectivity: int = 26) -> tuple[np.ndarray, int]:
    """Label every connected component of a binary mask, canonically numbered.

    Parameters
    ----------
    mask : array_like, shape (X, Y, Z)
        Binary mask (see :func:`check_mask`).
    connectivity : {6, 18, 26}
        Neighbourhood that joins voxels into one component.

    Returns
    -------
    labels : ndarray of int32, shape (X, Y, Z)
        0 = background, ``1..n`` components in canonical order (largest first,
        ties by first voxel in C order).
    n : int

    Examples
    --------
    >>> m = np.zeros((1, 1, 7), dtype=bool)
    >>> m[0, 0, [0, 2, 3, 5, 6]] = True
    >>> lab, n = label_components(m)
    >>> lab[0, 0].tolist(), n
    ([3, 0, 1, 1, 0, 2, 2], 3)
    """
    m = check_mask(mask)
    conn = check_connectivity(connectivity)
    return relabel_canonical(_cc(m, conn))


def label_lesions(
    mask: Any,
    voxel_size_mm: Sequence[float],
    *,
    min_volume_mm3: float,
    connectivity: int = 26,
) -> tuple[np.ndarray, int]:
    """Label lesions: connected components of volume >= ``min_volume_mm3``.

    Parameters
    ----------
    mask : array_like, shape (X, Y, Z)
        Binary lesion mask (see :func:`check_mask`).
    voxel_size_mm : sequence of 3 float
        Voxel edge lengths in mm along axes 0, 1, 2.
    min_volume_mm3 : float
        Smallest lesion volume kept, in mm3, **inclusive**: a component of
        ``n`` voxels is kept when ``n >= min_voxels_for_mm3(min_volume_mm3,
        voxel_size_mm)``. ``0`` keeps every component.
    connectivity : {6, 18, 26}
        Neighbourhood that joins voxels into one lesion.

    Returns
    -------
    labels : ndarray of int32, shape (X, Y, Z)
        0 = background, ``1..n`` lesions in canonical order (largest first,
        ties by first voxel in C order); removed components are 0.
    n : int
        Number of lesions kept.

    Examples
    --------
    >>> m = np.zeros((1, 1, 8), dtype=bool)
    >>> m[0, 0, [0, 1, 2, 4, 5, 7]] = True
    >>> lab, n = label_lesions(m, (1.0, 1.0, 1.0), min_volume_mm3=2.0)
    >>> lab[0, 0].tolist(), n
    ([1, 1, 1, 0, 2, 2, 0, 0], 2)
    """
    m = check_mask(mask)
    conn = check_connectivity(connectivity)
    try:
        min_vox = min_voxels_for_mm3(float(min_volume_mm3), voxel_size_mm)
    except (TypeError, ValueError) as exc:
        raise ConfigError(
            f"label_lesions: min_volume_mm3={min_volume_mm3!r} / voxel_size_mm={voxel_size_mm!r}: {exc}"
        ) from exc
    labels, n = relabel_canonical(_cc(m, conn), min_voxels=min_vox)
    log.debug(
        "label_lesions: %d lesions >= %s mm3 (%d voxels), connectivity %d",
        n,
        min_volume_mm3,
        min_vox,
        conn,
    )
    return labels, n


def _readonly(a: np.ndarray) -> np.ndarray:
    a = np.ascontiguousarray(a)
    a.flags.writeable = False
    return a


@dataclass(frozen=True, eq=False)
class LesionTable:
    """Per-lesion measurements, one row per lesion, columns as read-only arrays.

    Attributes
    ----------
    lesion_id : ndarray of int32, shape (n,)
        Label value in the label image.
    n_voxels : ndarray of int64, shape (n,)
    volume_mm3 : ndarray of float64, shape (n,)
        ``n_voxels * voxel volume`` (mm3).
    centroid_vox : ndarray of float64, shape (n, 3)
        Mean voxel index (i, j, k) of the lesion.
    centroid_ras_mm : ndarray of float64, shape (n, 3)
        ``centroid_vox`` mapped through the affine: world RAS+ (x, y, z) in mm.
    bbox_min_vox, bbox_max_vox : ndarray of int64, shape (n, 3)
        Bounding box in voxel indices, both ends **inclusive**.
    voxel_size_mm : tuple of 3 float
    location : tuple of str, or None
        Location class of each lesion (see :mod:`lesionq.core.location`).
    mean_intensity, max_intensity : ndarray of float64, shape (n,), or None
        Statistics of the ``intensity`` image inside each lesion.
    """

    lesion_id: np.ndarray
    n_voxels: np.ndarray
    volume_mm3: np.ndarray
    centroid_vox: np.ndarray
    centroid_ras_mm: np.ndarray
    bbox_min_vox: np.ndarray
    bbox_max_vox: np.ndarray
    voxel_size_mm: tuple[float, float, float]
    location: tuple[str, ...] | None = None
    mean_intensity: np.ndarray | None = field(default=None)
    max_intensity: np.ndarray | None = field(default=None)

    def __len__(self) -> int:
        return int(self.lesion_id.size)

    @property
    def total_volume_mm3(self) -> float:
        """Sum of lesion volumes in mm3."""
        return float(self.volume_mm3.sum())

    def columns(self) -> dict[str, np.ndarray]:
        """Flat 1-D columns, in a fixed order, for a DataFrame / TSV.

        Keys: ``lesion_id, n_voxels, volume_mm3, centroid_x_mm, centroid_y_mm,
        centroid_z_mm, centroid_i, centroid_j, centroid_k, bbox_i_min, bbox_j_min,
        bbox_k_min, bbox_i_max, bbox_j_max, bbox_k_max`` and, when present,
        ``location, mean_intensity, max_intensity``. Bounding boxes are inclusive.
        """
        cols: dict[str, np.ndarray] = {
            "lesion_id": self.lesion_id,
            "n_voxels": self.n_voxels,
            "volume_mm3": self.volume_mm3,
        }
        for a, name in enumerate("xyz"):
            cols[f"centroid_{name}_mm"] = self.centroid_ras_mm[:, a]
        for a, name in enumerate("ijk"):
            cols[f"centroid_{name}"] = self.centroid_vox[:, a]
        for a, name in enumerate("ijk"):
            cols[f"bbox_{name}_min"] = self.bbox_min_vox[:, a]
        for a, name in enumerate("ijk"):
            cols[f"bbox_{name}_max"] = self.bbox_max_vox[:, a]
        if self.location is not None:
            cols["location"] = np.array(self.location, dtype=object)
        if self.mean_intensity is not None:
            cols["mean_intensity"] = self.mean_intensity
        if self.max_intensity is not None:
            cols["max_intensity"] = self.max_intensity
        return cols

    def rows(self) -> list[dict[str, Any]]:
        """One plain ``dict`` per lesion (Python scalars), keys as :meth:`columns`."""
        cols = self.columns()
        return [
            {k: v[r].item() if hasattr(v[r], "item") else v[r] for k, v in cols.items()}
            for r in range(len(self))
        ]


def lesion_table(
    labels: np.ndarray,
    affine: np.ndarray,
    *,
    location: Mapping[int, str] | None = None,
    intensity: np.ndarray | None = None,
) -> LesionTable:
    """Measure every lesion of a label image.

    Parameters
    ----------
    labels : ndarray of int, shape (X, Y, Z)
        0 = background, positive values = lesions (e.g. from :func:`label_lesions`).
        Rows come in ascending ``lesion_id`` order.
    affine : ndarray, shape (4, 4)
        Voxel (i, j, k) to world RAS+ mm; voxel sizes are its column norms.
    location : mapping of int to str, optional
        Location class per lesion id (from
        :func:`lesionq.core.location.classify_locations`); must cover every id.
    intensity : ndarray of float, shape (X, Y, Z), optional
        Image on the same grid (e.g. FLAIR) for mean / max per lesion.

    Returns
    -------
    LesionTable

    Raises
    ------
    InputError
        Bad shapes, non-integer or negative labels, a lesion missing from ``location``.

    Examples
    --------
    >>> lab = np.zeros((4, 4, 4), dtype=np.int32)
    >>> lab[1:3, 1, 1] = 1
    >>> t = lesion_table(lab, np.diag([2.0, 1.0, 1.0, 1.0]))
    >>> t.n_voxels.tolist(), t.volume_mm3.tolist(), t.centroid_ras_mm.tolist()
    ([2], [4.0], [[3.0, 1.0, 1.0]])
    """
    labels = np.asarray(labels)
    if labels.ndim != 3:
        raise InputError(f"labels: expected a 3-D array, got shape {labels.shape}")
    if not np.issubdtype(labels.dtype, np.integer):
        raise InputError(f"labels: expected an integer label image, got dtype {labels.dtype}")
    aff = np.asarray(affine, dtype=float)
    if aff.shape != (4, 4) or not np.all(np.isfinite(aff)):
        raise InputError(f"affine: expected a finite 4x4 matrix, got shape {aff.shape}")
    vs = voxel_size_from_affine(aff)
    if intensity is not None:
        intensity = np.asarray(intensity)
        if intensity.shape != labels.shape:
            raise InputError(
                f"intensity: shape {intensity.shape} differs from labels shape {labels.shape}"
            )

    nz = np.flatnonzero(labels.ravel())
    vals = labels.ravel()[nz].astype(np.int64)
    if vals.size and vals.min() < 0:
        raise InputError(f"labels: negative label values found (min {int(vals.min())})")
    ids, inv, counts = np.unique(vals, return_inverse=True, return_counts=True)
    n = ids.size
    coords = np.stack(np.unravel_index(nz, labels.shape), axis=1)  # (m, 3) C order
    sums = np.zeros((n, 3))
    bmin = np.full((n, 3), np.iinfo(np.int64).max, dtype=np.int64)
    bmax = np.full((n, 3), -1, dtype=np.int64)
    for a in range(3):
        sums[:, a] = np.bincount(inv, weights=coords[:, a], minlength=n)
        np.minimum.at(bmin[:, a], inv, coords[:, a])
        np.maximum.at(bmax[:, a], inv, coords[:, a])
    cen = sums / np.maximum(counts, 1)[:, None]
    ras = (aff[:3, :3] @ cen.T).T + aff[:3, 3] if n else np.zeros((0, 3))

    loc: tuple[str, ...] | None = None
    if location is not None:
        missing = [int(i) for i in ids if int(i) not in location]
        if missing:
            raise InputError(
                f"location: no class given for lesion ids {missing[:10]} "
                f"({len(missing)} of {n}); classify every lesion of this label image"
            )
        loc = tuple(str(location[int(i)]) for i in ids)

    mean_i = max_i = None
    if intensity is not None:
        iv = intensity.ravel()[nz].astype(np.float64)
        mean_i = np.bincount(inv, weights=iv, minlength=n) / np.maximum(counts, 1)
        max_i = np.full(n, -np.inf)
        np.maximum.at(max_i, inv, iv)
        mean_i, max_i = _readonly(mean_i), _readonly(max_i)

    return LesionTable(
        lesion_id=_readonly(ids.astype(np.int32)),
        n_voxels=_readonly(counts.astype(np.int64)),
        volume_mm3=_readonly(np.asarray(voxels_to_mm3(counts.astype(np.float64), vs))),
        centroid_vox=_readonly(cen),
        centroid_ras_mm=_readonly(np.asarray(ras, dtype=np.float64).reshape(n, 3)),
        bbox_min_vox=_readonly(bmin if n else np.zeros((0, 3), dtype=np.int64)),
        bbox_max_vox=_readonly(bmax if n else np.zeros((0, 3), dtype=np.int64)),
        voxel_size_mm=vs,
        location=loc,
        mean_intensity=mean_i,
        max_intensity=max_i,
    )
