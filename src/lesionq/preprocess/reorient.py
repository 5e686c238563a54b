"""Internal reorientation to the closest RAS+ axis order, and back.

lesionq keeps every output on the grid of the input FLAIR: masks, maps and
lesion labels are written with the FLAIR's own shape and affine, so a reader can
overlay them on the scan the site sent without resampling. Reorientation is
therefore only an *internal* step, for tools that expect a particular axis order
(deepbet flips/permutes its input to RAS+ before its network runs). It is a pure
permutation and flip of the array axes (no interpolation, no change of voxel
values or world positions), undone exactly by :func:`from_closest_ras`.
"""

from __future__ import annotations

import numpy as np
from nibabel import orientations as nio

from ..errors import GeometryError, InputError

__all__ = ["to_closest_ras", "from_closest_ras", "axcodes"]


def axcodes(affine: np.ndarray) -> tuple[str, str, str]:
    """Orientation codes of the array axes, e.g. ``('L', 'P', 'S')``.

    Examples
    --------
    >>> axcodes(np.diag([-1.0, 1.0, 1.0, 1.0]))
    ('L', 'A', 'S')
    """
    a = np.asarray(affine, float)
    if a.shape != (4, 4):
        raise GeometryError(f"affine must be 4x4, got shape {a.shape}")
    return tuple(str(c) for c in nio.aff2axcodes(a))  # type: ignore[return-value]


def to_closest_ras(
    array: np.ndarray, affine: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Flip/permute a 3-D array so its axes run closest to R, A, S.

    Parameters
    ----------
    array : ndarray, shape (X, Y, Z)
    affine : ndarray, shape (4, 4)
        Voxel to world RAS+ mm.

    Returns
    -------
    array_ras : ndarray
        A view of ``array`` with permuted/flipped axes.
    affine_ras : ndarray, shape (4, 4)
        Affine of ``array_ras`` (same world positions for the same voxels).
    ornt : ndarray, shape (3, 2)
        nibabel orientation of the input, to pass to :func:`from_closest_ras`.

    Examples
    --------
    >>> arr = np.arange(24).reshape(2, 3, 4)
    >>> lps = np.diag([-1.0, -1.0, 1.0, 1.0])
    >>> ras, aff, ornt = to_closest_ras(arr, lps)
    >>> bool((from_closest_ras(ras, ornt) == arr).all())
    True
    """
    arr = np.asarray(array)
    if arr.ndim != 3:
        raise InputError(f"to_closest_ras: expected a 3-D array, got shape {arr.shape}")
    aff = np.asarray(affine, float)
    if aff.shape != (4, 4) or not np.all(np.isfinite(aff)):
        raise GeometryError(f"to_closest_ras: affine must be a finite 4x4 matrix, got {aff!r}")
    ornt = nio.io_orientation(aff)
    out = nio.apply_orientation(arr, ornt)
    new_aff = aff @ nio.inv_ornt_aff(ornt, arr.shape)
    return out, new_aff, ornt


def from_closest_ras(array_ras: np.ndarray, ornt: np.ndarray) -> np.ndarray:
    """Undo :func:`to_closest_ras`: return ``array_ras`` in the original axis order.

    Parameters
    ----------
    array_ras : ndarray, shape of the reoriented array
    ornt : ndarray, shape (3, 2)
        As returned by :func:`to_closest_ras`.

    Returns
    -------
    ndarray
        A view in the input's axis order and shape.
    """
    back = nio.ornt_transform([[0, 1], [1, 1], [2, 1]], np.asarray(ornt))
    return nio.apply_orientation(np.asarray(array_ras), back)
