"""N4 bias-field correction (SimpleITK), on arrays + RAS affines.

The field is estimated on a subsampled copy of the image and evaluated at full
resolution (``GetLogBiasFieldAsImage``), the usual way to make N4 fast. The
subsampling is chosen per axis from a target voxel size in mm
(:func:`n4_shrink_factors`): a 0.72 x 0.72 x 4 mm FLAIR is shrunk 6 x 6 x 1,
not 4 x 4 x 4 (which leaves 9 slices of 16 mm and a field that differs from a
fine estimate by up to 14 % in the brain on sub-lo01, against 4 % for 6 x 6 x 1).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import SimpleITK as sitk

from ..core.units import voxel_size_from_affine
from ..errors import InputError, ProcessingError
from ..io.sitk_bridge import nib_to_sitk, sitk_to_nib

__all__ = ["n4_shrink_factors", "correct_bias"]

log = logging.getLogger(__name__)


def n4_shrink_factors(voxel_size_mm: Sequence[float], shrink_mm: float) -> tuple[int, int, int]:
    """Per-axis subsampling factors that bring each voxel edge close to ``shrink_mm``.

    ``factor = max(1, round(shrink_mm / voxel_size))`` for each axis, so thick
    slices are shrunk less (or not at all) than fine in-plane axes.

    Examples
    --------
    >>> n4_shrink_factors((0.72, 0.72, 4.0), 4.0)
    (6, 6, 1)
    >>> n4_shrink_factors((1.0, 1.0, 1.0), 4.0)
    (4, 4, 4)
    """
    if not shrink_mm > 0:
        raise InputError(f"shrink_mm must be > 0, got {shrink_mm}")
    f = [max(1, int(round(float(shrink_mm) / float(s)))) for s in voxel_size_mm]
    return (f[0], f[1], f[2])


def correct_bias(
    array: np.ndarray,
    affine: np.ndarray,
    *,
    mask: np.ndarray | None = None,
    shrink_mm: float = 4.0,
    n_iterations: Sequence[int] = (50, 50, 50, 50),
    n_control_points: int = 4,
    convergence_threshold: float = 0.001,
    n_threads: int = 1,
) -> tuple[np.ndarray, np.ndarray]:
    """N4 bias-field correction.

    Parameters
    ----------
    array : ndarray, shape (X, Y, Z)
        Intensities (any numeric dtype). Only voxels > 0 inside the mask inform
        the field (N4 works on log intensities).
    affine : ndarray, shape (4, 4)
        Voxel to world RAS+ mm.
    mask : ndarray of bool, shape (X, Y, Z), optional
        Voxels used to estimate the field (e.g. a brain or head mask). Default:
        SimpleITK's Otsu threshold of the image (the head, roughly).
    shrink_mm : float
        Target voxel edge (mm) of the subsampled image the field is fitted on;
        see :func:`n4_shrink_factors`.
    n_iterations : sequence of int
        Maximum iterations per fitting level (the number of levels is its length;
        the B-spline mesh doubles at each level).
    n_control_points : int
        B-spline control points per axis at the first level (>= 4 for order 3).
    convergence_threshold : float
        N4's convergence threshold (coefficient of variation of the change).
    n_threads : int
        ITK threads.

    Returns
    -------
    corrected : ndarray of float32, shape (X, Y, Z)
        ``array / bias_field``.
    bias_field : ndarray of float32, shape (X, Y, Z)
        Multiplicative field (positive, ~1 on average over the mask).

    Raises
    ------
    InputError
        Bad array, mask or parameter.
    ProcessingError
        The mask has too few positive voxels, or N4 fails.
    """
    x = np.asarray(array)
    if x.ndim != 3:
        raise InputError(f"correct_bias: expected a 3-D array, got shape {x.shape}")
    x = x.astype(np.float32, copy=False)
    if not np.all(np.isfinite(x)):
        raise InputError("correct_bias: array contains NaN or inf")
    if n_control_points < 4:
        raise InputError(f"n_control_points must be >= 4 (spline order 3), got {n_control_points}")
    if not n_iterations or any(int(n) < 1 for n in n_iterations):
        raise InputError(f"n_iterations must be positive integers, got {tuple(n_iterations)}")
    img = nib_to_sitk(x, affine)
    if mask is None:
        otsu = sitk.OtsuThresholdImageFilter()
        otsu.SetInsideValue(0)
        otsu.SetOutsideValue(1)
        otsu.SetNumberOfHistogramBins(200)
        otsu.SetNumberOfThreads(n_threads)
        m = sitk_to_nib(otsu.Execute(img))[0] > 0
    else:
        m = np.asarray(mask) > 0
        if m.shape != x.shape:
            raise InputError(f"correct_bias: mask shape {m.shape} does not match array {x.shape}")
    m &= x > 0
    if np.count_nonzero(m) < 1000:
        raise ProcessingError(
            f"correct_bias: only {np.count_nonzero(m)} positive voxels in the mask (need >= 1000)"
        )
    factors = n4_shrink_factors(voxel_size_from_affine(affine), shrink_mm)
    mask_img = nib_to_sitk(m.astype(np.uint8), affine)
    small = sitk.Shrink(img, factors)
    small_mask = sitk.Shrink(mask_img, factors)
    if sitk.GetArrayViewFromImage(small_mask).sum() < 100:
        raise ProcessingError(
            f"correct_bias: the mask keeps fewer than 100 voxels after shrinking by {factors}; "
            f"lower shrink_mm (got {shrink_mm})"
        )
    n4 = sitk.N4BiasFieldCorrectionImageFilter()
    n4.SetMaximumNumberOfIterations([int(n) for n in n_iterations])
    n4.SetNumberOfControlPoints([int(n_control_points)] * 3)
    n4.SetConvergenceThreshold(float(convergence_threshold))
    n4.SetNumberOfThreads(int(n_threads))
    try:
        n4.Execute(small, small_mask)
        log_field = n4.GetLogBiasFieldAsImage(img)
    except RuntimeError as exc:
        raise ProcessingError(f"correct_bias: N4 failed ({str(exc).strip()})") from exc
    field = np.exp(sitk_to_nib(log_field)[0]).astype(np.float32)
    log.debug(
        "N4: shrink %s, %d levels, final convergence %.2e",
        factors, len(n_iterations), n4.GetCurrentConvergenceMeasurement(),
    )  # fmt: skip
    return (x / field).astype(np.float32), field
