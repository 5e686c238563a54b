"""Small checks and voxel-grid helpers shared by the core methods (pure numpy/scipy).

Voxel sizes are in mm along array axes 0, 1, 2; distances in mm.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import scipy.ndimage as ndi

from ..errors import GeometryError, InputError

__all__ = ["check_voxel_size", "check_image", "ellipsoid_footprint", "inner_distance_mm"]


def check_voxel_size(
    voxel_size_mm: Sequence[float], name: str = "voxel_size_mm"
) -> tuple[float, float, float]:
    """Three positive finite voxel edges in mm, or :class:`~lesionq.errors.InputError`.

    Examples
    --------
    >>> check_voxel_size([1, 1, 3])
    (1.0, 1.0, 3.0)
    """
    try:
        vs = tuple(float(v) for v in voxel_size_mm)
    except (TypeError, ValueError) as exc:
        raise InputError(f"{name} must be 3 numbers, got {voxel_size_mm!r}") from exc
    if len(vs) != 3 or not all(math.isfinite(v) and v > 0 for v in vs):
        raise InputError(f"{name} must be 3 positive finite numbers, got {voxel_size_mm!r}")
    return vs  # type: ignore[return-value]


def check_image(name: str, img: Any, shape: tuple[int, ...], mask: np.ndarray) -> np.ndarray:
    """A real, finite (inside ``mask``) image of the FLAIR grid ``shape``, as float32.

    Raises
    ------
    lesionq.errors.GeometryError
        Another shape.
    lesionq.errors.InputError
        Not real numeric, or NaN / inf inside the mask.
    """
    a = np.asarray(img)
    if a.shape != shape:
        raise GeometryError(f"{name} has shape {a.shape}, expected the FLAIR grid shape {shape}")
    if not np.issubdtype(a.dtype, np.number) or np.iscomplexobj(a):
        raise InputError(f"{name} must be a real numeric array, got dtype {a.dtype}")
    if not np.all(np.isfinite(a[mask])):
        raise InputError(f"{name} has NaN or infinite values inside the brain mask")
    return a.astype(np.float32, copy=False)


def ellipsoid_footprint(radius_mm: float, vs: Sequence[float]) -> np.ndarray:
    """bool structuring element: voxels within ``radius_mm`` of the centre (anisotropic grid).

    Examples
    --------
    >>> ellipsoid_footprint(1.0, (1.0, 1.0, 2.0)).shape
    (3, 3, 1)
    """
    r = [int(math.floor(radius_mm / v + 1e-9)) for v in vs]
    grids = np.ogrid[tuple(slice(-ri, ri + 1) for ri in r)]
    d2 = sum((g * v) ** 2 for g, v in zip(grids, vs, strict=True))
    return np.asarray(d2 <= radius_mm**2 + 1e-9)


def inner_distance_mm(mask: np.ndarray, vs: Sequence[float]) -> np.ndarray:
    """Distance (mm) from each voxel of ``mask`` to the nearest voxel outside it.

    The array border counts as outside (a mask touching the edge of the field of
    view is not taken as extending beyond it).
    """
    padded = np.pad(mask, 1, constant_values=False)
    d = ndi.distance_transform_edt(padded, sampling=vs)
    return d[1:-1, 1:-1, 1:-1].astype(np.float32)
