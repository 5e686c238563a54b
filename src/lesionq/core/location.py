"""Lesion location classes used by the McDonald criteria (MAGNIMS 2016 / McDonald 2017).

Each lesion gets exactly one class, decided by the first rule that holds, in
this **priority order**:

1. ``"infratentorial"``: at least ``infratentorial_min_fraction`` (default
   0.5) of the lesion's voxels lie in the infratentorial region (brainstem +
   cerebellum) of the location map.
2. ``"periventricular"``: the lesion touches the lateral ventricles or lies
   within ``periventricular_distance_mm`` of them.
3. ``"juxtacortical"``: the lesion touches the cortex or lies within
   ``juxtacortical_distance_mm`` of it (this class also takes cortical lesions,
   which the location map cannot tell apart: McDonald 2017 pools them as
   "cortical or juxtacortical").
4. ``"deep_white_matter"``: everything else (deep grey-matter lesions included;
   the map's deep grey-matter label is not used for classification).

Distances
---------
"Within D mm" means: some lesion voxel centre lies at Euclidean distance
<= D (mm) from some region voxel centre, computed with
:func:`scipy.ndimage.distance_transform_edt` with ``sampling=voxel_size_mm``.
"Touches" means a lesion voxel shares a face, edge or corner with a region
voxel (or overlaps it); it holds whatever the voxel size, so a lesion on the
slice next to a ventricle counts even with 4 mm slices and D = 3 mm.

The location map
----------------
An integer image on the **subject grid** (the run-time atlas resampled with
nearest neighbour by the registration layer) holding the values of
:data:`LOCATION_LABELS`: 1 lateral ventricles, 2 infratentorial, 3 cortex,
4 deep grey matter, 0 anything else.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

from ..errors import ConfigError, GeometryError, InputError
from .units import voxel_volume_mm3

__all__ = [
    "VENTRICLES",
    "INFRATENTORIAL",
    "CORTEX",
    "DEEP_GREY_MATTER",
    "INFRATENTORIAL_MIN_FRACTION",
    "LOCATION_LABELS",
    "LOCATION_CLASSES",
    "LocationMeasures",
    "location_measures",
    "classify_locations",
]

log = logging.getLogger(__name__)

#: Location-map value of the lateral ventricles.
VENTRICLES = 1
#: Location-map value of the infratentorial region (brainstem + cerebellum).
INFRATENTORIAL = 2
#: Location-map value of the (supratentorial) cortex.
CORTEX = 3
#: Location-map value of supratentorial deep grey matter (informative only).
DEEP_GREY_MATTER = 4

#: Default share of a lesion's voxels in the infratentorial region from which the
#: lesion counts as infratentorial (``[location] infratentorial_min_fraction``);
#: the lesion table's class and the segmentation's posterior-fossa rule use it.
INFRATENTORIAL_MIN_FRACTION = 0.5

#: Location-map values and their names (0 = other / outside).
LOCATION_LABELS: dict[int, str] = {
    0: "other",
    VENTRICLES: "lateral_ventricles",
    INFRATENTORIAL: "infratentorial",
    CORTEX: "cortex",
    DEEP_GREY_MATTER: "deep_grey_matter",
}

#: Location classes, in priority order.
LOCATION_CLASSES: tuple[str, ...] = (
    "infratentorial",
    "periventricular",
    "juxtacortical",
    "deep_white_matter",
)

_TOUCH = ndi.generate_binary_structure(3, 3)


@dataclass(frozen=True)
class LocationMeasures:
    """What the classification of one lesion rests on (for QC and audit).

    Attributes
    ----------
    lesion_id : int
    infratentorial_fraction : float
        Fraction of the lesion's voxels in the infratentorial region (0..1).
    ventricle_distance_mm : float
        Smallest lesion-voxel-centre to ventricle-voxel-centre distance (mm);
        0 when they overlap; ``inf`` when no ventricle voxel is within the
        search margin.
    touches_ventricles : bool
    cortex_distance_mm : float
        As ``ventricle_distance_mm``, for the cortex.
    touches_cortex : bool
    """

    lesion_id: int
    infratentorial_fraction: float
    ventricle_distance_mm: float
    touches_ventricles: bool
    cortex_distance_mm: float
    touches_cortex: bool


def _check_inputs(
    labels: np.ndarray, location_map: np.ndarray, voxel_size_mm: Sequence[float]
) -> tuple[np.ndarray, np.ndarray, tuple[float, float, float]]:
    labels = np.asarray(labels)
    location_map = np.asarray(location_map)
    if labels.ndim != 3:
        raise InputError(f"labels: expected a 3-D array, got shape {labels.shape}")
    if not np.issubdtype(labels.dtype, np.integer):
        raise InputError(f"labels: expected an integer label image, got dtype {labels.dtype}")
    if labels.size and labels.min() < 0:
        raise InputError(f"labels: negative label values found (min {int(labels.min())})")
    if location_map.shape != labels.shape:
        raise GeometryError(
            f"location_map: shape {location_map.shape} differs from labels shape {labels.shape}; "
            "resample the atlas location map onto the subject grid (nearest neighbour) first"
        )
    if not np.issubdtype(location_map.dtype, np.integer):
        raise InputError(
            f"location_map: expected an integer label map (nearest-neighbour resampled), "
            f"got dtype {location_map.dtype}"
        )
    try:
        voxel_volume_mm3(voxel_size_mm)
    except (TypeError, ValueError) as exc:
        raise InputError(f"voxel_size_mm: {exc}") from exc
    vs = tuple(float(v) for v in voxel_size_mm)
    return labels, location_map, (vs[0], vs[1], vs[2])


def _region_distance(
    lab: np.ndarray, region: np.ndarray, ids: np.ndarray, vs: tuple[float, float, float]
) -> tuple[np.ndarray, np.ndarray]:
    """Per-lesion (min centre distance in mm, touches) to ``region`` inside a crop."""
    if not region.any():
        return np.full(ids.size, np.inf), np.zeros(ids.size, dtype=bool)
    dist = ndi.distance_transform_edt(~region, sampling=vs)
    dmin = np.asarray(ndi.minimum(dist, labels=lab, index=ids), dtype=float).reshape(-1)
    near = ndi.binary_dilation(region, structure=_TOUCH)
    touch = np.asarray(ndi.maximum(near, labels=lab, index=ids), dtype=bool).reshape(-1)
    return dmin, touch


def location_measures(
    labels: np.ndarray,
    location_map: np.ndarray,
    voxel_size_mm: Sequence[float],
    *,
    max_distance_mm: float,
) -> dict[int, LocationMeasures]:
    """Per-lesion infratentorial fraction and distances to ventricles and cortex.

    Parameters
    ----------
    labels : ndarray of int, shape (X, Y, Z)
        Lesion label image (0 = background).
    location_map : ndarray of int, shape (X, Y, Z)
        Atlas location map on the same grid (values of :data:`LOCATION_LABELS`).
    voxel_size_mm : sequence of 3 float
        Voxel edge lengths in mm along axes 0, 1, 2.
    max_distance_mm : float
        Distances are exact up to this value; a region farther than that from
        a lesion may be reported as ``inf`` (the distance transform runs on a
        crop around the lesions with this margin, for speed).

    Returns
    -------
    dict of int to LocationMeasures
        Keyed by lesion id, ascending.
    """
    labels, location_map, vs = _check_inputs(labels, location_map, voxel_size_mm)
    if not (max_distance_mm >= 0 and math.isfinite(max_distance_mm)):
        raise ConfigError(f"max_distance_mm must be a finite number >= 0, got {max_distance_mm!r}")
    fg = labels > 0
    if not fg.any():
        return {}
    # crop: lesion bounding box + margin (every region voxel within the margin is kept)
    idx = np.nonzero(fg)
    margin = [int(math.ceil(max_distance_mm / v)) + 2 for v in vs]
    sl = tuple(
        slice(max(int(i.min()) - m, 0), min(int(i.max()) + m + 1, n))
        for i, m, n in zip(idx, margin, labels.shape, strict=True)
    )
    lab = labels[sl]
    loc = location_map[sl]
    ids = np.unique(lab[lab > 0])
    counts = np.bincount(lab.ravel().astype(np.int64), minlength=int(ids.max()) + 1)[ids].astype(
        float
    )
    infra = (
        np.asarray(ndi.sum(loc == INFRATENTORIAL, labels=lab, index=ids), dtype=float).reshape(-1)
        / counts
    )
    vdist, vtouch = _region_distance(lab, loc == VENTRICLES, ids, vs)
    cdist, ctouch = _region_distance(lab, loc == CORTEX, ids, vs)
    out: dict[int, LocationMeasures] = {}
    for r, lid in enumerate(ids.tolist()):
        out[int(lid)] = LocationMeasures(
            lesion_id=int(lid),
            infratentorial_fraction=float(infra[r]),
            ventricle_distance_mm=float(vdist[r]),
            touches_ventricles=bool(vtouch[r]),
            cortex_distance_mm=float(cdist[r]),
            touches_cortex=bool(ctouch[r]),
        )
    return out


def classify_locations(
    labels: np.ndarray,
    location_map: np.ndarray,
    voxel_size_mm: Sequence[float],
    *,
    periventricular_distance_mm: float = 3.0,
    juxtacortical_distance_mm: float = 3.0,
    infratentorial_min_fraction: float = INFRATENTORIAL_MIN_FRACTION,
) -> dict[int, str]:
    """Give each lesion one McDonald location class.

    Parameters
    ----------
    labels : ndarray of int, shape (X, Y, Z)
        Lesion label image (0 = background), e.g. from
        :func:`lesionq.core.components.label_lesions`.
    location_map : ndarray of int, shape (X, Y, Z)
        Atlas location map already on the subject grid (values of
        :data:`LOCATION_LABELS`).
    voxel_size_mm : sequence of 3 float
        Voxel edge lengths in mm along axes 0, 1, 2.
    periventricular_distance_mm : float
        A lesion within this distance (inclusive, voxel centre to voxel
        centre) of the lateral ventricles, or touching them, is periventricular.
    juxtacortical_distance_mm : float
        The same for the cortex and the juxtacortical class.
    infratentorial_min_fraction : float in (0, 1]
        A lesion with at least this fraction (inclusive) of its voxels in the
        infratentorial region is infratentorial.

    Returns
    -------
    dict of int to str
        ``lesion_id -> class``, one of :data:`LOCATION_CLASSES`, for every
        positive label present, in ascending id order.

    Raises
    ------
    InputError, GeometryError
        Non-integer images, shapes that differ, bad voxel sizes.
    ConfigError
        A distance < 0 or a fraction outside (0, 1].

    Examples
    --------
    >>> loc = np.zeros((12, 1, 1), dtype=np.uint8)
    >>> loc[0, 0, 0] = VENTRICLES
    >>> loc[11, 0, 0] = CORTEX
    >>> lab = np.zeros((12, 1, 1), dtype=np.int32)
    >>> lab[2, 0, 0], lab[6, 0, 0], lab[10, 0, 0] = 1, 2, 3
    >>> classify_locations(lab, loc, (1.0, 1.0, 1.0))
    {1: 'periventricular', 2: 'deep_white_matter', 3: 'juxtacortical'}
    """
    for name, val in (
        ("periventricular_distance_mm", periventricular_distance_mm),
        ("juxtacortical_distance_mm", juxtacortical_distance_mm),
    ):
        if not (isinstance(val, int | float) and math.isfinite(val) and val >= 0):
            raise ConfigError(f"{name} must be a finite number >= 0 (mm), got {val!r}")
    if not (
        isinstance(infratentorial_min_fraction, int | float)
        and 0 < infratentorial_min_fraction <= 1
    ):
        raise ConfigError(
            f"infratentorial_min_fraction must be in (0, 1], got {infratentorial_min_fraction!r}"
        )
    measures = location_measures(
        labels,
        location_map,
        voxel_size_mm,
        max_distance_mm=max(periventricular_distance_mm, juxtacortical_distance_mm),
    )
    out: dict[int, str] = {}
    for lid, m in measures.items():
        if m.infratentorial_fraction >= infratentorial_min_fraction:
            cls = "infratentorial"
        elif m.touches_ventricles or m.ventricle_distance_mm <= periventricular_distance_mm:
            cls = "periventricular"
        elif m.touches_cortex or m.cortex_distance_mm <= juxtacortical_distance_mm:
            cls = "juxtacortical"
        else:
            cls = "deep_white_matter"
        out[lid] = cls
    if out:
        counts = {c: sum(1 for v in out.values() if v == c) for c in LOCATION_CLASSES}
        log.debug("classify_locations: %s", counts)
    return out
