"""Pure array helpers for QC pictures: orientation, slice choice, contours, edges.

No file I/O and no plotting here: arrays in, arrays (or small frozen values) out.

Conventions
-----------
* Input arrays are in a NIfTI voxel grid ``(i, j, k)`` whose ``affine`` maps voxel
  indices to world RAS+ millimetres (nibabel's convention).
* :func:`canonical` reorients an array to the *closest canonical RAS* voxel order
  (axis 0 towards the patient's Right, axis 1 Anterior, axis 2 Superior) by axis
  flips and permutations only (no resampling; an oblique grid keeps its obliquity).
  Every other function here takes canonical arrays.
* ``axis`` names the viewing plane: ``"sagittal"`` slices canonical axis 0,
  ``"coronal"`` axis 1, ``"axial"`` axis 2. A slice *index* counts along that
  canonical axis (0 = the most right / posterior / inferior slice).
* :func:`display_slice` returns a 2-D array ready for ``imshow(origin="upper")``:
  row 0 at the top of the screen (anterior for axial, superior for coronal and
  sagittal). Columns follow the display convention: ``"radiological"`` puts the
  patient's right on the viewer's left, ``"neurological"`` the patient's right on
  the viewer's right. Sagittal panels show anterior on the viewer's left whatever
  the convention.
* 2-D display coordinates are ``(x, y) = (column, row)`` with pixel centres at
  integers, so pixel edges lie at half-integers.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np
from nibabel.orientations import apply_orientation, inv_ornt_aff, io_orientation
from skimage.feature import canny

__all__ = [
    "AXES",
    "CONVENTIONS",
    "SliceChoice",
    "canonical",
    "canonical_index",
    "check_axis",
    "check_convention",
    "contour_segments",
    "display_slice",
    "edge_map",
    "even_slices",
    "intensity_window",
    "label_anchors",
    "lesion_areas",
    "choose_slices",
    "pixel_aspect",
    "side_markers",
    "slice_world_mm",
]

#: Viewing plane -> canonical (RAS) array axis that the plane slices.
AXES: Mapping[str, int] = {"sagittal": 0, "coronal": 1, "axial": 2}

#: Display conventions and the words that name them on every picture.
CONVENTIONS: Mapping[str, str] = {
    "radiological": "radiological convention: patient's right (R) on the viewer's left",
    "neurological": "neurological convention: patient's right (R) on the viewer's right",
}


def check_axis(axis: str) -> int:
    """Canonical array axis of the viewing plane ``axis``; ValueError for other names."""
    try:
        return AXES[axis]
    except KeyError:
        raise ValueError(f"axis: expected one of {sorted(AXES)}, got {axis!r}") from None


def check_convention(convention: str) -> str:
    """Return ``convention`` if known (``radiological``/``neurological``), else ValueError."""
    if convention not in CONVENTIONS:
        raise ValueError(f"convention: expected one of {sorted(CONVENTIONS)}, got {convention!r}")
    return convention


def canonical(array: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Reorient a 3-D array to the closest canonical RAS voxel order.

    Parameters
    ----------
    array : ndarray, shape (X, Y, Z)
        Voxel data in the NIfTI grid of ``affine``.
    affine : ndarray, shape (4, 4)
        Voxel -> world RAS+ mm.

    Returns
    -------
    array_ras : ndarray
        A view (flips / transposes only) whose axes point to R, A, S.
    affine_ras : ndarray, shape (4, 4)
        Voxel -> world RAS+ mm of ``array_ras`` (same world positions).

    Examples
    --------
    >>> a = np.arange(6).reshape(2, 3, 1)
    >>> las = np.diag([-1.0, 1.0, 1.0, 1.0])
    >>> ras, aff = canonical(a, las)
    >>> ras[:, 0, 0].tolist(), float(aff[0, 0])
    ([3, 0], 1.0)
    """
    arr = np.asarray(array)
    aff = np.asarray(affine, dtype=float)
    if arr.ndim != 3:
        raise ValueError(f"array: expected a 3-D array, got shape {arr.shape}")
    if aff.shape != (4, 4):
        raise ValueError(f"affine: expected shape (4, 4), got {aff.shape}")
    ornt = io_orientation(aff)
    out = apply_orientation(arr, ornt)
    return out, aff @ inv_ornt_aff(ornt, arr.shape)


def canonical_index(
    affine: np.ndarray, shape: tuple[int, int, int], ijk: Iterable[int]
) -> tuple[int, int, int]:
    """Canonical (RAS-ordered) index of the native voxel ``ijk`` of a grid.

    Parameters
    ----------
    affine : ndarray, shape (4, 4)
        Voxel -> world RAS+ mm of the native grid.
    shape : tuple of 3 int
        Native array shape.
    ijk : 3 ints
        A native voxel index.

    Returns
    -------
    tuple of 3 int
        The same voxel's index in :func:`canonical`'s array.

    Examples
    --------
    >>> canonical_index(np.diag([-2.0, 2.0, 3.0, 1.0]), (10, 12, 5), (0, 3, 4))
    (9, 3, 4)
    """
    ornt = io_orientation(np.asarray(affine, dtype=float))
    ijk = [int(v) for v in ijk]
    out = [0, 0, 0]
    for src_axis, (dst_axis, flip) in enumerate(ornt):
        v = ijk[src_axis]
        if flip < 0:
            v = int(shape[src_axis]) - 1 - v
        out[int(dst_axis)] = v
    return out[0], out[1], out[2]


def display_slice(
    volume_ras: np.ndarray, axis: str, index: int, convention: str = "radiological"
) -> np.ndarray:
    """One slice of a canonical volume, oriented for display.

    Parameters
    ----------
    volume_ras : ndarray, shape (X, Y, Z)
        Canonical RAS array (see :func:`canonical`).
    axis : {"axial", "coronal", "sagittal"}
    index : int
        Slice index along the plane's canonical axis, ``0 <= index < n``.
    convention : {"radiological", "neurological"}
        Left-right convention of axial and coronal panels.

    Returns
    -------
    ndarray, shape (rows, cols)
        ``imshow(origin="upper")``-ready: axial rows run anterior -> posterior,
        coronal and sagittal rows superior -> inferior; columns run patient's
        right -> left (radiological) or left -> right (neurological); sagittal
        columns anterior -> posterior.

    Examples
    --------
    >>> v = np.zeros((3, 2, 1)); v[2, 0, 0] = 1   # far right (x max), posterior
    >>> display_slice(v, "axial", 0).tolist()     # radiological: right on the left
    [[0.0, 0.0, 0.0], [1.0, 0.0, 0.0]]
    >>> display_slice(v, "axial", 0, "neurological").tolist()
    [[0.0, 0.0, 0.0], [0.0, 0.0, 1.0]]
    """
    ax = check_axis(axis)
    check_convention(convention)
    vol = np.asarray(volume_ras)
    n = vol.shape[ax]
    if not 0 <= int(index) < n:
        raise ValueError(f"index: {axis} slice {index} outside 0..{n - 1}")
    sl = np.take(vol, int(index), axis=ax)  # 2-D: remaining axes in R, A, S order
    img = sl.T[::-1, :]  # rows: second remaining axis, descending (A or S at top)
    if axis == "sagittal":
        return img[:, ::-1]  # columns: anterior on the viewer's left
    if convention == "radiological":
        return img[:, ::-1]  # columns: patient's right (x max) on the viewer's left
    return img


def side_markers(axis: str, convention: str = "radiological") -> tuple[str, str]:
    """Letters for the (viewer's left, viewer's right) edges of a panel.

    Examples
    --------
    >>> side_markers("axial"), side_markers("axial", "neurological"), side_markers("sagittal")
    (('R', 'L'), ('L', 'R'), ('A', 'P'))
    """
    check_axis(axis)
    check_convention(convention)
    if axis == "sagittal":
        return ("A", "P")
    return ("R", "L") if convention == "radiological" else ("L", "R")


def pixel_aspect(affine_ras: np.ndarray, axis: str) -> float:
    """Height / width of one displayed pixel, in mm (``imshow`` ``aspect``).

    Examples
    --------
    >>> pixel_aspect(np.diag([2.0, 2.0, 3.0, 1.0]), "coronal")
    1.5
    """
    ax = check_axis(axis)
    vs = np.sqrt((np.asarray(affine_ras, dtype=float)[:3, :3] ** 2).sum(axis=0))
    rest = [a for a in range(3) if a != ax]
    return float(vs[rest[1]] / vs[rest[0]])


def slice_world_mm(affine_ras: np.ndarray, shape: tuple[int, ...], axis: str, index: int) -> float:
    """World coordinate (mm, RAS+) of a slice's centre along the plane's normal axis."""
    ax = check_axis(axis)
    centre = (np.asarray(shape[:3], dtype=float) - 1) / 2
    centre[ax] = index
    return float((np.asarray(affine_ras, dtype=float) @ np.append(centre, 1.0))[ax])


def lesion_areas(labels_ras: np.ndarray, axis: str) -> tuple[np.ndarray, np.ndarray]:
    """Cross-section areas (voxel counts) of every lesion on every slice.

    Parameters
    ----------
    labels_ras : ndarray of int, shape (X, Y, Z)
        Canonical label image; 0 = background, each other value one lesion.
    axis : {"axial", "coronal", "sagittal"}

    Returns
    -------
    ids : ndarray of int64, shape (n,)
        Lesion ids present, ascending.
    areas : ndarray of int64, shape (n, n_slices)
        ``areas[m, s]`` = voxels of lesion ``ids[m]`` on slice ``s``.
    """
    ax = check_axis(axis)
    lab = np.asarray(labels_ras)
    nz = np.nonzero(lab)
    values = lab[nz].astype(np.int64)
    ids, inverse = np.unique(values, return_inverse=True)
    n_slices = lab.shape[ax]
    areas = np.zeros((ids.size, n_slices), dtype=np.int64)
    if ids.size:
        np.add.at(areas, (inverse, nz[ax]), 1)
    return ids, areas


@dataclass(frozen=True)
class SliceChoice:
    """Slices chosen to show lesions.

    Attributes
    ----------
    axis : str
        Viewing plane.
    indices : tuple of int
        Canonical slice indices, ascending (inferior to superior for axial).
    visible : tuple of tuple of int
        For each chosen slice, the ids of every lesion with at least one voxel on it.
    uncovered : tuple of int
        Lesion ids not shown at a representative cross-section because
        ``max_panels`` was reached (empty when every lesion is covered).
    best : mapping
        Lesion id -> slice index of its largest cross-section.
    """

    axis: str
    indices: tuple[int, ...]
    visible: tuple[tuple[int, ...], ...]
    uncovered: tuple[int, ...] = ()
    best: Mapping[int, int] = field(default_factory=dict)

    @property
    def shown_ids(self) -> tuple[int, ...]:
        """Ids labelled on at least one chosen slice, ascending."""
        return tuple(sorted({i for vis in self.visible for i in vis}))


def choose_slices(
    labels_ras: np.ndarray,
    axis: str = "axial",
    *,
    max_panels: int = 12,
    min_fraction: float = 0.5,
) -> SliceChoice:
    """Choose at most ``max_panels`` slices that show every lesion well.

    Each lesion's representative slice is the one through its largest cross-section
    (ties: the lowest index). A slice *covers* a lesion when the lesion's area there
    is at least ``min_fraction`` of its largest cross-section. Greedy set cover over
    the representative slices: repeatedly take the slice covering the most uncovered
    lesions (ties: the larger uncovered area, then the lower index) until all are
    covered or ``max_panels`` slices are taken.

    Parameters
    ----------
    labels_ras : ndarray of int, shape (X, Y, Z)
        Canonical label image (0 = background).
    axis : {"axial", "coronal", "sagittal"}
    max_panels : int
        Maximum number of slices, >= 1.
    min_fraction : float
        In (0, 1]: share of a lesion's largest cross-section a slice must show to
        count as covering it.

    Returns
    -------
    SliceChoice
        Empty ``indices`` when there is no lesion (see :func:`even_slices`).

    Examples
    --------
    >>> lab = np.zeros((4, 4, 10), int)
    >>> lab[0, 0, 2:4] = 1; lab[2, 2, 3] = 2; lab[3, 3, 8] = 3
    >>> c = choose_slices(lab)
    >>> c.indices, c.visible, c.uncovered
    ((3, 8), ((1, 2), (3,)), ())
    """
    if int(max_panels) < 1:
        raise ValueError(f"max_panels: expected >= 1, got {max_panels}")
    if not 0 < float(min_fraction) <= 1:
        raise ValueError(f"min_fraction: expected in (0, 1], got {min_fraction}")
    ids, areas = lesion_areas(labels_ras, axis)
    if ids.size == 0:
        return SliceChoice(axis, (), (), (), {})
    best_slice = areas.argmax(axis=1)
    best = {int(i): int(s) for i, s in zip(ids, best_slice, strict=True)}
    covers = areas >= (float(min_fraction) * areas.max(axis=1, keepdims=True))
    covers &= areas > 0
    candidates = sorted(set(best_slice.tolist()))
    uncovered = np.ones(ids.size, dtype=bool)
    chosen: list[int] = []
    while uncovered.any() and len(chosen) < int(max_panels):
        scored = [
            (
                int(np.count_nonzero(covers[:, s] & uncovered)),
                int(areas[covers[:, s] & uncovered, s].sum()),
                -s,
            )
            for s in candidates
        ]
        k = max(range(len(candidates)), key=lambda m: scored[m])
        s = candidates.pop(k)
        chosen.append(s)
        uncovered &= ~covers[:, s]
    chosen.sort()
    visible = tuple(tuple(int(i) for i in ids[areas[:, s] > 0]) for s in chosen)
    return SliceChoice(axis, tuple(chosen), visible, tuple(int(i) for i in ids[uncovered]), best)


def even_slices(reference_ras: np.ndarray, axis: str = "axial", n: int = 6) -> tuple[int, ...]:
    """``n`` evenly spaced slices through the non-zero extent of a canonical volume.

    The slices span the middle 80 % of the extent of non-zero voxels along the
    plane's axis (the whole axis when the volume is all zero). Duplicates are
    dropped, so fewer than ``n`` may come back on a thin volume.

    Examples
    --------
    >>> v = np.zeros((2, 2, 20)); v[..., 5:15] = 1
    >>> even_slices(v, n=3)
    (6, 10, 13)
    """
    ax = check_axis(axis)
    if int(n) < 1:
        raise ValueError(f"n: expected >= 1, got {n}")
    vol = np.asarray(reference_ras)
    other = tuple(a for a in range(3) if a != ax)
    present = np.flatnonzero(np.any(vol != 0, axis=other))
    lo, hi = (present[0], present[-1]) if present.size else (0, vol.shape[ax] - 1)
    span = hi - lo
    pos = np.linspace(lo + 0.1 * span, hi - 0.1 * span, int(n)) if n > 1 else [(lo + hi) / 2]
    return tuple(sorted({int(round(p)) for p in pos}))


def intensity_window(
    volume: np.ndarray,
    mask: np.ndarray | None = None,
    percentiles: tuple[float, float] = (0.5, 99.5),
) -> tuple[float, float]:
    """Display window (vmin, vmax) from percentiles of the finite non-zero voxels.

    ``mask`` (same shape, optional) restricts the voxels used. Returns ``(0, 1)``
    for an image without finite non-zero voxels, and ``vmax > vmin`` always.

    Examples
    --------
    >>> intensity_window(np.arange(101.0), percentiles=(0, 100))
    (1.0, 100.0)
    """
    vol = np.asarray(volume, dtype=np.float64)
    sel = np.isfinite(vol) & (vol != 0)
    if mask is not None:
        sel &= np.asarray(mask) != 0
    values = vol[sel]
    if values.size == 0:
        return 0.0, 1.0
    lo, hi = (float(v) for v in np.percentile(values, percentiles))
    if hi <= lo:
        hi = lo + 1.0
    return lo, hi


def _runs(flags: np.ndarray) -> list[tuple[int, int]]:
    """(start, stop) of the runs of True in a 1-D bool array (stop exclusive)."""
    d = np.diff(np.concatenate(([0], flags.astype(np.int8), [0])))
    starts = np.flatnonzero(d == 1)
    stops = np.flatnonzero(d == -1)
    return list(zip(starts.tolist(), stops.tolist(), strict=True))


def contour_segments(mask2d: np.ndarray) -> np.ndarray:
    """Exact outline of a 2-D mask along pixel edges, as line segments.

    Every edge between a mask pixel and a non-mask pixel (or the image border) is
    part of the outline; collinear neighbouring edges are merged into one segment.

    Parameters
    ----------
    mask2d : ndarray of bool, shape (rows, cols)

    Returns
    -------
    ndarray of float64, shape (n, 2, 2)
        Segments ``[[x0, y0], [x1, y1]]`` in display coordinates (x = column,
        y = row, pixel centres at integers, so every vertex is at a half-integer).

    Examples
    --------
    >>> m = np.zeros((4, 4), bool); m[1:3, 1:3] = True
    >>> contour_segments(m).tolist()  # doctest: +NORMALIZE_WHITESPACE
    [[[0.5, 0.5], [2.5, 0.5]], [[0.5, 2.5], [2.5, 2.5]],
     [[0.5, 0.5], [0.5, 2.5]], [[2.5, 0.5], [2.5, 2.5]]]
    """
    m = np.asarray(mask2d, dtype=bool)
    if m.ndim != 2:
        raise ValueError(f"mask2d: expected a 2-D array, got shape {m.shape}")
    p = np.pad(m, 1)
    horiz = p[1:, 1:-1] != p[:-1, 1:-1]  # (rows+1, cols): edge above row r at y = r - 0.5
    vert = p[1:-1, 1:] != p[1:-1, :-1]  # (rows, cols+1): edge left of col c at x = c - 0.5
    segs: list[list[list[float]]] = []
    for r in range(horiz.shape[0]):
        y = r - 0.5
        for a, b in _runs(horiz[r]):
            segs.append([[a - 0.5, y], [b - 0.5, y]])
    for c in range(vert.shape[1]):
        x = c - 0.5
        for a, b in _runs(vert[:, c]):
            segs.append([[x, a - 0.5], [x, b - 0.5]])
    return np.asarray(segs, dtype=np.float64).reshape(-1, 2, 2)


def label_anchors(labels2d: np.ndarray) -> dict[int, tuple[float, float]]:
    """Where to write each lesion id on a displayed slice: its outline's top-right corner.

    Parameters
    ----------
    labels2d : ndarray of int, shape (rows, cols)
        A displayed label slice (:func:`display_slice`).

    Returns
    -------
    dict
        Lesion id -> ``(x, y)`` display coordinates of the top-right corner of the
        lesion's bounding box on this slice (pixel edges, half-integers).

    Examples
    --------
    >>> lab = np.zeros((5, 5), int); lab[1:3, 2:4] = 7
    >>> label_anchors(lab)
    {7: (3.5, 0.5)}
    """
    lab = np.asarray(labels2d)
    out: dict[int, tuple[float, float]] = {}
    for v in np.unique(lab[lab != 0]):
        rows, cols = np.nonzero(lab == v)
        out[int(v)] = (float(cols.max()) + 0.5, float(rows.min()) - 0.5)
    return out


def edge_map(image2d: np.ndarray, *, sigma: float = 1.0, quantile: float = 0.85) -> np.ndarray:
    """Thin intensity edges of a 2-D slice (Canny), for registration checks.

    Parameters
    ----------
    image2d : ndarray, shape (rows, cols)
        Intensities (any float); non-finite values count as 0.
    sigma : float
        Gaussian smoothing in pixels before the gradient.
    quantile : float
        In (0, 1): the high hysteresis threshold as a quantile of the gradient
        magnitude (the low one is ``quantile - 0.1``).

    Returns
    -------
    ndarray of bool, shape (rows, cols)
        True on edge pixels; all False on a constant slice.
    """
    if not 0.1 < float(quantile) < 1:
        raise ValueError(f"quantile: expected in (0.1, 1), got {quantile}")
    img = np.nan_to_num(np.asarray(image2d, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    if img.ndim != 2:
        raise ValueError(f"image2d: expected a 2-D array, got shape {img.shape}")
    if np.ptp(img) == 0:
        return np.zeros(img.shape, dtype=bool)
    img = (img - img.min()) / np.ptp(img)
    return canny(
        img,
        sigma=float(sigma),
        low_threshold=float(quantile) - 0.1,
        high_threshold=float(quantile),
        use_quantiles=True,
    )
