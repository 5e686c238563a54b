"""In-memory Gd+ (gadolinium-enhancing) lesion step of one visit.

Like :mod:`lesionq.steps`, :func:`segment_gd_volumes` takes
:class:`~lesionq.types.Volume` objects already on the visit's FLAIR grid (the
post-contrast and pre-contrast T1 co-registered and bias-corrected by
:func:`lesionq.steps.coregister_to_flair`, the atlas maps of
:func:`lesionq.steps.atlas_priors`) and the protocol's ``[gd]`` section, runs
:func:`lesionq.core.enhancement.segment_enhancing`, and returns frozen
results: the Gd+ mask (``label-Gdlesion_mask``), the lesion ids, the Gd+ rows of
the lesion table and the enhancement-ratio map. Nothing is read or written here.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from ..core.enhancement import GD_INPUTS, GdSegmentation, segment_enhancing
from ..registration.rigid import apply_translation, estimate_translation
from ..types import Volume
from .registry import SECTIONS
from .visit import LESION_ROW_COLUMNS, on_grid

__all__ = [
    "GdResult",
    "GD_TABLE_COLUMNS",
    "GD_DETAIL_COLUMNS",
    "GD_SET_BY_STEP",
    "GD_STEP_KEYS",
    "ALIGN_MIN_VOXEL_FRACTION",
    "align_post_to_pre",
    "GD_INPUTS",
    "segment_gd_volumes",
]

LOGGER = logging.getLogger(__name__)

#: Columns of the Gd+ rows of the lesion table (one row per Gd+ lesion).
GD_TABLE_COLUMNS: tuple[str, ...] = (
    *LESION_ROW_COLUMNS,
    "enhancement_peak",
    "enhancement_mean",
    "ring",
    "confidence",
    "inputs",
)

#: Columns of :attr:`GdResult.details` (shape and evidence metrics per Gd+ lesion).
GD_DETAIL_COLUMNS: tuple[str, ...] = (
    "lesion_id",
    "peak_blob_z",
    "flair_z",
    "elongation",
    "radius_mm",
    "length_mm",
    "core_fraction",
)

#: Parameters of :func:`~lesionq.core.enhancement.segment_enhancing` that this step
#: sets itself (images, geometry, atlas maps, ``[lesions] min_volume_mm3``,
#: ``[location]`` rules): never keys of the ``[gd]`` protocol section (from the
#: protocol registry, :data:`lesionq.steps.registry.SECTIONS`).
GD_SET_BY_STEP: tuple[str, ...] = SECTIONS["gd"].set_by_step


#: Keys of the ``[gd]`` protocol section that this step handles itself (not parameters
#: of :func:`~lesionq.core.enhancement.segment_enhancing`), with their defaults:
#: ``confident_min`` (0..1, inclusive) is the confidence a Gd+ lesion needs to count in
#: :attr:`GdResult.count_confident` (``gd_count_confident``); ``align_post_max_mm``
#: (mm, 0 = off) bounds the residual post- to pre-contrast T1 translation that the
#: step corrects (:func:`align_post_to_pre`).
GD_STEP_KEYS: dict[str, float] = {"confident_min": 0.5, "align_post_max_mm": 3.0}

#: A residual post/pre translation shorter than this share of the finest voxel edge
#: is left alone: resampling would only blur the post-contrast T1, and the
#: local-maximum reference (``reference_max_mm``) already absorbs sub-voxel shifts.
ALIGN_MIN_VOXEL_FRACTION = 0.5


@dataclass(frozen=True)
class GdResult:
    """Gd+ lesions of one visit, on the FLAIR grid.

    Attributes
    ----------
    mask : Volume
        uint8 Gd+ lesion mask (filled lesions: ring cores included), kind ``"mask"``.
    labels : Volume
        int32 Gd+ lesion ids ``1..n`` (0 = background), kind ``"labels"``; the ids
        of :attr:`table`.
    table : pandas.DataFrame
        One row per Gd+ lesion, columns :data:`GD_TABLE_COLUMNS`: ``label`` is
        ``"Gd"``; ``centroid_*_mm`` world RAS+ mm; ``location`` a McDonald class or
        ``"n/a"`` without an atlas location map; ``enhancement_peak`` /
        ``enhancement_mean`` enhancement ratios (0 = normal-appearing white
        matter, 0.3 = 30 % above it); ``ring`` bool; ``confidence`` in [0, 1]
        (:func:`lesionq.core.enhancement.gd_confidence`); ``inputs`` as below.
    inputs : str
        ``"post+pre"``, ``"post+flair"`` or ``"post"`` (:data:`GD_INPUTS`).
    enhancement : Volume
        float32 enhancement-ratio map, kind ``"enhancement"``.
    details : pandas.DataFrame
        Shape and evidence metrics per lesion (:data:`GD_DETAIL_COLUMNS`).
    candidates : pandas.DataFrame
        Every enhancing candidate and the rule that decided it (QC / review):
        the fields of :class:`lesionq.core.enhancement.GdCandidate`.
    count : int
        Number of Gd+ lesions (``gd_count``).
    count_confident : int
        Gd+ lesions with ``confidence >= confident_min`` (``gd_count_confident``;
        ``confident_min`` of the ``[gd]`` section, :data:`GD_STEP_KEYS`).
    volume_mm3 : float
        Total Gd+ volume, mm3 (``gd_volume_mm3``).
    ratio_sd, blob_sd : float
        Noise of the enhancement-ratio map and of its smoothed (blob) version over
        normal-appearing white matter (ratio units; QC).
    seconds : float
        Wall time of the segmentation.
    post_shift_mm : tuple of 3 float
        The translation (mm along the FLAIR grid's array axes) by which the
        post-contrast T1 was moved onto the pre-contrast T1 before segmenting
        (:func:`align_post_to_pre`); zeros when none was applied.
    """

    mask: Volume
    labels: Volume
    table: pd.DataFrame
    inputs: str
    enhancement: Volume
    details: pd.DataFrame = field(repr=False)
    candidates: pd.DataFrame = field(repr=False)
    count: int = 0
    count_confident: int = 0
    volume_mm3: float = 0.0
    ratio_sd: float = float("nan")
    blob_sd: float = float("nan")
    seconds: float = 0.0
    post_shift_mm: tuple[float, float, float] = (0.0, 0.0, 0.0)


def _check_gd_section(gd: Mapping[str, Any]) -> dict[str, Any]:
    """Keyword arguments of ``segment_enhancing`` from the ``[gd]`` section (registry-checked)."""
    return SECTIONS["gd"].kwargs(gd)


def _tables(res: GdSegmentation, affine: np.ndarray) -> tuple[pd.DataFrame, pd.DataFrame]:
    n = len(res.lesions)
    cen = np.array([les.centroid_vox for les in res.lesions], dtype=float).reshape(n, 3)
    ras = (affine[:3, :3] @ cen.T).T + affine[:3, 3] if n else np.zeros((0, 3))
    table = pd.DataFrame(
        {
            "lesion_id": np.array([les.lesion_id for les in res.lesions], dtype=np.int64),
            "label": pd.Series(["Gd"] * n, dtype=object),
            "volume_mm3": [les.volume_mm3 for les in res.lesions],
            "n_voxels": np.array([les.n_voxels for les in res.lesions], dtype=np.int64),
            "centroid_x_mm": ras[:, 0],
            "centroid_y_mm": ras[:, 1],
            "centroid_z_mm": ras[:, 2],
            "location": pd.Series([les.location for les in res.lesions], dtype=object),
            "enhancement_peak": [les.peak_ratio for les in res.lesions],
            "enhancement_mean": [les.mean_ratio for les in res.lesions],
            "ring": np.array([les.ring for les in res.lesions], dtype=bool),
            "confidence": [les.confidence for les in res.lesions],
            "inputs": pd.Series([res.inputs] * n, dtype=object),
        }
    )
    table = table[list(GD_TABLE_COLUMNS)].round(
        {
            "volume_mm3": 3,
            "centroid_x_mm": 2,
            "centroid_y_mm": 2,
            "centroid_z_mm": 2,
            "enhancement_peak": 4,
            "enhancement_mean": 4,
        }
    )
    details = pd.DataFrame(
        [{k: asdict(les)[k] for k in GD_DETAIL_COLUMNS} for les in res.lesions],
        columns=list(GD_DETAIL_COLUMNS),
    ).round(4)
    return table, details


def align_post_to_pre(
    post: np.ndarray,
    pre: np.ndarray,
    brain_mask: np.ndarray,
    voxel_size_mm: tuple[float, float, float],
    *,
    max_shift_mm: float,
    n_threads: int = 1,
) -> tuple[np.ndarray, tuple[float, float, float]]:
    """Move the post-contrast T1 onto the pre-contrast T1 by their residual translation.

    Both arrive on the FLAIR grid, each registered to the FLAIR on its own; a
    1-2 mm residual between them makes tissue edges look enhancing and moves real
    enhancement off its FLAIR hyperintensity (measured on sub-cs07 with injected
    lesions: sensitivity 0.96 -> 0.46 at 2 mm). The two T1 scans share one
    contrast family, so their translation is well defined
    (:func:`lesionq.registration.rigid.estimate_translation`, over the brain).
    Shorter than half the finest voxel edge it is not applied: there the estimate
    is noise (0.4 voxel on the sample phantoms, which are aligned by
    construction), and moving an aligned scan by it makes tissue edges enhance.

    Parameters
    ----------
    post, pre : numpy.ndarray
        Post- and pre-contrast T1, 3-D, on one grid.
    brain_mask : numpy.ndarray
        Brain mask on that grid (bool).
    voxel_size_mm : tuple of 3 float
        Voxel edges in mm along the array axes.
    max_shift_mm : float
        Longest translation corrected (mm); a longer estimate is not trusted and
        not applied (logged as a warning); 0 = no alignment.
    n_threads : int
        Threads of the registration.

    Returns
    -------
    (numpy.ndarray, tuple of 3 float)
        The post-contrast T1 (moved by
        :func:`lesionq.registration.rigid.apply_translation`, or ``post`` itself)
        and the applied translation in mm along the array axes (zeros when none:
        off, shorter than :data:`ALIGN_MIN_VOXEL_FRACTION` of the finest voxel
        edge, or longer than ``max_shift_mm``).
    """
    none = (0.0, 0.0, 0.0)
    if max_shift_mm <= 0:
        return post, none
    t = estimate_translation(pre, post, voxel_size_mm, brain_mask, n_threads=n_threads)
    length = float(np.linalg.norm(t))
    if length < ALIGN_MIN_VOXEL_FRACTION * min(voxel_size_mm):
        return post, none
    if length > max_shift_mm:
        LOGGER.warning(
            "Gd+: post- to pre-contrast T1 residual of %.1f mm exceeds align_post_max_mm "
            "%.1f mm; not corrected (check the co-registration)", length, max_shift_mm,
        )  # fmt: skip
        return post, none
    moved = apply_translation(post, t, voxel_size_mm)
    LOGGER.info("Gd+: post-contrast T1 moved by %s mm onto the pre-contrast T1", np.round(t, 2))
    return moved, (float(t[0]), float(t[1]), float(t[2]))


def segment_gd_volumes(
    t1ce: Volume,
    flair: Volume,
    brain_mask: Volume,
    *,
    t1: Volume | None,
    priors: Mapping[str, Volume] | None,
    gd: Mapping[str, Any],
    min_volume_mm3: float,
    location_rules: Mapping[str, Any] | None = None,
    n_threads: int = 1,
) -> GdResult:
    """Gd+ lesion mask, ids, table and enhancement map of one visit (FLAIR grid).

    With a pre-contrast T1 the post-contrast T1 is first moved onto it by their
    residual translation (:func:`align_post_to_pre`, ``[gd] align_post_max_mm``).

    Parameters
    ----------
    t1ce : Volume
        Post-contrast T1 (``ce-gadolinium_T1w``) resampled onto the FLAIR grid and
        bias-corrected (:func:`lesionq.steps.coregister_to_flair`).
    flair : Volume
        The visit's preprocessed FLAIR (defines the grid; FLAIR support of the rules).
    brain_mask : Volume
        Brain mask on the FLAIR grid (non-zero = brain).
    t1 : Volume or None
        Pre-contrast T1 on the FLAIR grid, or None when the visit has none
        (``inputs`` is then ``"post+flair"``).
    priors : mapping of str to Volume, or None
        Atlas maps of :func:`lesionq.steps.atlas_priors` on the FLAIR grid: ``"wm"``,
        ``"gm"``, ``"csf"`` (probabilities) and optionally ``"location"`` (integer
        location map: ventricle / pituitary rules and location classes). None: no
        atlas (locations ``"n/a"``).
    gd : mapping
        The protocol's ``[gd]`` section: keyword parameters of
        :func:`lesionq.core.enhancement.segment_enhancing` (minus
        :data:`GD_SET_BY_STEP`).
    min_volume_mm3 : float
        The protocol's ``[lesions] min_volume_mm3`` (inclusive), one rule for all
        lesion masks and tables.
    location_rules : mapping, optional
        The protocol's ``[location]`` section (keywords of
        :func:`lesionq.core.location.classify_locations`).
    n_threads : int
        Thread budget (the core is single-threaded numpy / scipy; accepted for a
        uniform step interface).

    Returns
    -------
    GdResult

    Raises
    ------
    lesionq.errors.ConfigError
        A ``[gd]`` key that is not a parameter, or one the step sets itself.
    lesionq.errors.GeometryError
        An input not on the FLAIR grid.
    lesionq.errors.InputError, lesionq.errors.ProcessingError
        From :func:`~lesionq.core.enhancement.segment_enhancing`.
    """
    kwargs = _check_gd_section(gd)
    confident_min = float(gd.get("confident_min", GD_STEP_KEYS["confident_min"]))
    align_max = float(gd.get("align_post_max_mm", GD_STEP_KEYS["align_post_max_mm"]))
    post = on_grid("t1ce (post-contrast T1)", t1ce, flair).astype(np.float32, copy=False)
    mask = on_grid("brain_mask", brain_mask, flair) > 0
    pre = None
    if t1 is not None:
        pre = on_grid("t1 (pre-contrast T1)", t1, flair).astype(np.float32, copy=False)
    shift = (0.0, 0.0, 0.0)
    if pre is not None:
        post, shift = align_post_to_pre(
            post, pre, mask, flair.voxel_size_mm, max_shift_mm=align_max, n_threads=n_threads
        )
    prior_arrays = None
    location = None
    if priors is not None:
        prior_arrays = {
            k: on_grid(f"priors[{k!r}]", v, flair).astype(np.float32, copy=False)
            for k, v in priors.items()
            if k in ("wm", "gm", "csf")
        }
        if "location" in priors:
            location = on_grid("priors['location']", priors["location"], flair).astype(
                np.int32, copy=False
            )
    res = segment_enhancing(
        post,
        mask,
        flair.voxel_size_mm,
        pre=pre,
        flair=np.asarray(flair.array, dtype=np.float32),
        priors=prior_arrays,
        location_map=location,
        affine=flair.affine,
        location_rules=location_rules,
        min_volume_mm3=float(min_volume_mm3),
        **kwargs,
    )
    table, details = _tables(res, flair.affine)
    cands = pd.DataFrame([asdict(c) for c in res.candidates])
    LOGGER.info(
        "Gd+: %d lesions, %.1f mm3 (inputs %s, %d candidates, %.1f s)",
        res.n_lesions, res.volume_mm3, res.inputs, len(res.candidates), res.seconds,
    )  # fmt: skip
    return GdResult(
        mask=Volume(res.mask.astype(np.uint8), flair.affine, "mask"),
        labels=Volume(res.labels.astype(np.int32), flair.affine, "labels"),
        table=table,
        inputs=res.inputs,
        enhancement=Volume(res.enhancement.astype(np.float32), flair.affine, "enhancement"),
        details=details,
        candidates=cands,
        count=res.n_lesions,
        count_confident=int((table["confidence"].to_numpy(float) >= confident_min).sum()),
        volume_mm3=res.volume_mm3,
        ratio_sd=res.ratio_sd,
        blob_sd=res.blob_sd,
        seconds=res.seconds,
        post_shift_mm=shift,
    )
