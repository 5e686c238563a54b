"""Semi-automatic 3-D region growing on FLAIR: a lesion the automatic segmentation missed.

A reader clicks a *seed* voxel inside a hyperintense lesion; the region is the set
of voxels connected to the seed (6- or 26-connectivity) whose intensity is at least
a lower threshold, grown outwards from the seed layer by layer (geodesic
dilation) until it stops or would exceed a volume cap.

Conventions
-----------
* Arrays are indexed ``image[i, j, k]`` on the image's own voxel grid (array axes
  0, 1, 2, the order of the NIfTI data array; not a canonical RAS order). The
  seed is such a voxel index, 0-based.
* ``voxel_size_mm`` is the voxel edge lengths in mm along array axes 0, 1, 2.
* Volumes are in mm3 (:func:`lesionq.core.units.voxel_volume_mm3`).

Threshold modes
---------------
``"zscore"`` (default)
    lower = median + ``threshold`` x sigma of the brain-ish voxels (intensity > 0)
    in a cube of half-width ``local_radius_mm`` around the seed, sigma being the
    robust standard deviation 1.4826 x MAD. A lesion is hyperintense against the
    white matter around it, which dominates such a cube.
``"fraction"``
    lower = ``threshold`` x the seed's intensity (e.g. 0.8: voxels at least 80 %
    as bright as the seed).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

from ..errors import InputError
from .units import voxel_volume_mm3

__all__ = ["THRESHOLD_MODES", "RegionGrowth", "grow_region"]

#: Threshold modes of :func:`grow_region`.
THRESHOLD_MODES: tuple[str, ...] = ("zscore", "fraction")


@dataclass(frozen=True)
class RegionGrowth:
    """The grown region and how it was obtained.

    Attributes
    ----------
    mask : ndarray of bool, shape of the image
        The region (empty when the seed itself is below the threshold).
    n_voxels : int
    volume_mm3 : float
    lower : float
        The intensity threshold used (image units).
    seed_value : float
        Intensity of the seed voxel.
    capped : bool
        True when growth stopped at the volume cap (the region leaked: lower the
        threshold's reach, i.e. raise ``threshold``).
    bbox : tuple of 3 (int, int) pairs
        Half-open index range ``(start, stop)`` of the region along each array axis;
        ``((0, 0),) * 3`` when empty.
    """

    mask: np.ndarray
    n_voxels: int
    volume_mm3: float
    lower: float
    seed_value: float
    capped: bool
    bbox: tuple[tuple[int, int], tuple[int, int], tuple[int, int]]


def _lower_threshold(
    image: np.ndarray,
    seed: tuple[int, int, int],
    threshold: float,
    mode: str,
    vs: tuple[float, float, float],
    local_radius_mm: float,
) -> float:
    seed_value = float(image[seed])
    if mode == "fraction":
        return threshold * seed_value
    r = [max(1, math.ceil(local_radius_mm / v)) for v in vs]
    box = tuple(
        slice(max(0, s - ri), min(n, s + ri + 1))
        for s, ri, n in zip(seed, r, image.shape, strict=True)
    )
    local = image[box]
    local = local[np.isfinite(local) & (local > 0)]
    if local.size < 10:
        raise InputError("grow_region: fewer than 10 voxels > 0 around the seed for the z-score")
    med = float(np.median(local))
    sigma = 1.4826 * float(np.median(np.abs(local - med)))
    if sigma <= 0:
        sigma = float(np.std(local)) or 1.0
    return med + threshold * sigma


def grow_region(
    image: np.ndarray,
    seed: Sequence[int],
    voxel_size_mm: Sequence[float],
    *,
    threshold: float = 3.0,
    mode: str = "zscore",
    connectivity: int = 6,
    max_volume_mm3: float = 5000.0,
    max_radius_mm: float = 40.0,
    local_radius_mm: float = 15.0,
) -> RegionGrowth:
    """Grow a region from ``seed`` over voxels at least as bright as a threshold.

    Parameters
    ----------
    image : ndarray, shape (X, Y, Z)
        FLAIR intensities (any units; NaN never joins the region).
    seed : sequence of 3 int
        Voxel index ``(i, j, k)`` of the seed on ``image``'s grid (0-based).
    voxel_size_mm : sequence of 3 float
        Voxel edge lengths in mm along array axes 0, 1, 2.
    threshold : float
        A z-score (mode ``"zscore"``, e.g. 2..4) or a fraction of the seed's
        intensity (mode ``"fraction"``, in (0, 1]); see the module docstring.
    mode : {"zscore", "fraction"}
    connectivity : {6, 26}
        Face (6) or face, edge and corner (26) neighbours.
    max_volume_mm3 : float
        Growth stops before the region exceeds this volume (``capped`` is then True).
    max_radius_mm : float
        The region stays within this distance (per axis, mm) of the seed.
    local_radius_mm : float
        Half-width (mm) of the cube whose statistics give the z-score threshold.

    Returns
    -------
    RegionGrowth

    Raises
    ------
    InputError
        Not a 3-D image, a seed outside it, a bad mode, connectivity, threshold,
        voxel size or cap.

    Examples
    --------
    >>> img = np.full((9, 9, 9), 100.0)
    >>> img[3:6, 3:6, 3:6] = 200.0
    >>> g = grow_region(img, (4, 4, 4), (1.0, 1.0, 2.0), threshold=0.8, mode="fraction")
    >>> g.n_voxels, g.volume_mm3, g.bbox
    (27, 54.0, ((3, 6), (3, 6), (3, 6)))
    """
    image = np.asarray(image)
    if image.ndim != 3:
        raise InputError(f"grow_region: expected a 3-D image, got shape {image.shape}")
    try:
        vvol = voxel_volume_mm3(voxel_size_mm)
    except (TypeError, ValueError) as exc:
        raise InputError(f"grow_region: {exc}") from exc
    vs = tuple(float(v) for v in voxel_size_mm)
    if len(seed) != 3 or not all(isinstance(s, int | np.integer) for s in seed):
        raise InputError(f"grow_region: seed must be 3 integer voxel indices, got {seed!r}")
    sd = (int(seed[0]), int(seed[1]), int(seed[2]))
    if any(s < 0 or s >= n for s, n in zip(sd, image.shape, strict=True)):
        raise InputError(f"grow_region: seed {sd} outside the image of shape {image.shape}")
    if mode not in THRESHOLD_MODES:
        raise InputError(f"grow_region: mode must be one of {THRESHOLD_MODES}, got {mode!r}")
    if connectivity not in (6, 26):
        raise InputError(f"grow_region: connectivity must be 6 or 26, got {connectivity!r}")
    if not math.isfinite(threshold) or (mode == "fraction" and not 0 < threshold <= 1):
        raise InputError(f"grow_region: bad threshold {threshold!r} for mode {mode!r}")
    for name, v in (
        ("max_volume_mm3", max_volume_mm3),
        ("max_radius_mm", max_radius_mm),
        ("local_radius_mm", local_radius_mm),
    ):
        if not (math.isfinite(v) and v > 0):
            raise InputError(f"grow_region: {name} must be > 0, got {v!r}")
    seed_value = float(image[sd])
    lower = _lower_threshold(image, sd, float(threshold), mode, vs, float(local_radius_mm))  # type: ignore[arg-type]
    empty_bbox = ((0, 0), (0, 0), (0, 0))
    full = np.zeros(image.shape, dtype=bool)
    if not (math.isfinite(seed_value) and seed_value >= lower):
        return RegionGrowth(full, 0, 0.0, lower, seed_value, False, empty_bbox)
    # crop: the seed +- max_radius_mm
    r = [max(1, math.ceil(max_radius_mm / v)) for v in vs]
    box = tuple(
        slice(max(0, s - ri), min(n, s + ri + 1))
        for s, ri, n in zip(sd, r, image.shape, strict=True)
    )
    crop = image[box]
    with np.errstate(invalid="ignore"):
        allowed = np.isfinite(crop) & (crop >= lower)
    local_seed = tuple(s - b.start for s, b in zip(sd, box, strict=True))
    structure = ndi.generate_binary_structure(3, 1 if connectivity == 6 else 3)
    max_voxels = max(1, int(math.floor(max_volume_mm3 / vvol + 1e-9)))
    # the whole connected component, when it fits under the cap
    comp, _ = ndi.label(allowed, structure=structure)
    region = comp == comp[local_seed]
    capped = False
    if int(region.sum()) > max_voxels:
        # geodesic growth from the seed, one layer at a time, while under the cap
        capped = True
        region = np.zeros_like(allowed)
        region[local_seed] = True
        while True:
            nxt = ndi.binary_dilation(region, structure=structure) & allowed
            if int(nxt.sum()) > max_voxels or np.array_equal(nxt, region):
                break
            region = nxt
    full[box] = region
    n = int(full.sum())
    idx = np.nonzero(full)
    bbox = tuple((int(i.min()), int(i.max()) + 1) for i in idx)
    return RegionGrowth(
        full,
        n,
        round(n * vvol, 3),
        float(lower),
        seed_value,
        capped,
        bbox,  # type: ignore[arg-type]
    )
