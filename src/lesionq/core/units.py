"""Unit conversions: the one place where voxels become mm3 and back.

Conventions
-----------
* ``voxel_size_mm`` is a length-3 sequence of positive floats, the voxel edge
  lengths in millimetres along array axes 0, 1, 2 (``nibabel`` ``header.get_zooms()[:3]``).
* Volumes are in cubic millimetres (mm3); 1 mL = 1000 mm3.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

__all__ = ["voxel_volume_mm3", "voxels_to_mm3", "min_voxels_for_mm3", "voxel_size_from_affine"]


def voxel_volume_mm3(voxel_size_mm: Sequence[float]) -> float:
    """Volume of one voxel in mm3.

    Parameters
    ----------
    voxel_size_mm : sequence of 3 float
        Voxel edge lengths in mm along array axes 0, 1, 2.

    Returns
    -------
    float
        Product of the three edge lengths, in mm3.

    Examples
    --------
    >>> voxel_volume_mm3((0.5, 0.5, 4.0))
    1.0
    """
    sizes = [float(s) for s in voxel_size_mm]
    if len(sizes) != 3 or any(not math.isfinite(s) or s <= 0 for s in sizes):
        raise ValueError(f"voxel_size_mm must be 3 positive finite numbers, got {voxel_size_mm!r}")
    return sizes[0] * sizes[1] * sizes[2]


def voxels_to_mm3(n_voxels: int | np.ndarray, voxel_size_mm: Sequence[float]) -> float | np.ndarray:
    """Convert a voxel count (or an array of counts) to mm3.

    Examples
    --------
    >>> voxels_to_mm3(8, (1.0, 1.0, 2.0))
    16.0
    """
    return n_voxels * voxel_volume_mm3(voxel_size_mm)


def min_voxels_for_mm3(min_volume_mm3: float, voxel_size_mm: Sequence[float]) -> int:
    """Smallest whole number of voxels whose volume is >= ``min_volume_mm3`` (inclusive rule).

    A component is kept when ``n_voxels * voxel_volume >= min_volume_mm3``; this
    returns the smallest such ``n_voxels`` (at least 1). A tolerance of 1e-9 mm3
    absorbs floating point error, so 3 voxels of 1 mm3 satisfy a 3.0 mm3 rule.

    Examples
    --------
    >>> min_voxels_for_mm3(3.0, (1.0, 1.0, 1.0))
    3
    >>> min_voxels_for_mm3(3.0, (0.72, 0.72, 4.0))
    2
    """
    if min_volume_mm3 < 0 or not math.isfinite(min_volume_mm3):
        raise ValueError(f"min_volume_mm3 must be a finite number >= 0, got {min_volume_mm3!r}")
    vv = voxel_volume_mm3(voxel_size_mm)
    return max(1, math.ceil(min_volume_mm3 / vv - 1e-9))


def voxel_size_from_affine(affine: np.ndarray) -> tuple[float, float, float]:
    """Voxel edge lengths in mm from a 4x4 voxel-to-world affine (column norms).

    Examples
    --------
    >>> voxel_size_from_affine(np.diag([2.0, -1.0, 3.0, 1.0]))
    (2.0, 1.0, 3.0)
    """
    a = np.asarray(affine, dtype=float)
    if a.shape != (4, 4):
        raise ValueError(f"affine must be 4x4, got shape {a.shape}")
    norms = np.sqrt((a[:3, :3] ** 2).sum(axis=0))
    return (float(norms[0]), float(norms[1]), float(norms[2]))
