"""In-memory T2/FLAIR steps of one visit, shared by the nipype interfaces and the API.

Each step takes :class:`~lesionq.types.Volume` objects (arrays + RAS affines) and
plain parameter mappings (protocol sections), composes the pure core with the
SimpleITK layers (preprocess, registration), and returns frozen results. The
visit's images are neither read nor written here (:mod:`lesionq.interfaces` adds
that, and :mod:`lesionq.api` calls these directly on in-memory images); the one
file access is :func:`atlas_priors` loading the bundled atlas through
:func:`lesionq.io.atlas.load_atlas`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import SimpleITK as sitk
from scipy import ndimage as ndi

from ..config import Settings
from ..core.components import label_lesions, lesion_table
from ..core.location import INFRATENTORIAL_MIN_FRACTION, classify_locations
from ..core.segmentation import segment_lesions
from ..core.units import voxels_to_mm3
from ..errors import ConfigError, GeometryError
from ..io.atlas import load_atlas
from ..preprocess.bias import correct_bias
from ..preprocess.brain import brain_mask as find_brain
from ..registration.rigid import estimate_rigid, register_template, resample_to
from ..types import Volume

__all__ = [
    "PreparedFLAIR",
    "Coregistered",
    "AtlasMaps",
    "Segmented",
    "Tabulated",
    "prepare_flair",
    "coregister_to_flair",
    "atlas_priors",
    "location_settings",
    "segment_t2_volumes",
    "tabulate_lesions",
    "LESION_TABLE_COLUMNS",
    "LESION_ROW_COLUMNS",
    "VisitParameters",
    "visit_parameters",
    "on_grid",
]

LOGGER = logging.getLogger(__name__)

#: Columns every row of ``lesions.tsv`` has, whatever its ``label`` (T2, Gd, T1hypo).
LESION_ROW_COLUMNS: tuple[str, ...] = (
    "lesion_id",
    "label",
    "volume_mm3",
    "n_voxels",
    "centroid_x_mm",
    "centroid_y_mm",
    "centroid_z_mm",
    "location",
)

#: Columns of ``lesions.tsv`` (see README "Outputs").
LESION_TABLE_COLUMNS: tuple[str, ...] = (
    *LESION_ROW_COLUMNS,
    "flair_mean",
    "flair_max",
    "probability_mean",
    "bbox_i_min",
    "bbox_j_min",
    "bbox_k_min",
    "bbox_i_max",
    "bbox_j_max",
    "bbox_k_max",
)


@dataclass(frozen=True)
class PreparedFLAIR:
    """Bias-corrected FLAIR, brain mask, and whether the input was already skull-stripped."""

    flair: Volume
    brain_mask: Volume
    skull_stripped: bool


@dataclass(frozen=True)
class Coregistered:
    """A contrast resampled onto the FLAIR grid and the transform used."""

    image: Volume
    transform: sitk.Transform


@dataclass(frozen=True)
class AtlasMaps:
    """Atlas priors on the FLAIR grid (keys ``wm``, ``gm``, ``csf``, ``location``)."""

    maps: Mapping[str, Volume]
    transform: sitk.Transform


@dataclass(frozen=True)
class Segmented:
    """Lesion probability (float32, 0..1) and binary mask on the FLAIR grid."""

    probability: Volume
    mask: Volume


@dataclass(frozen=True)
class Tabulated:
    """Lesion labels, the lesion table, and the visit's totals."""

    labels: Volume
    table: pd.DataFrame
    count: int
    volume_mm3: float
    brain_volume_mm3: float


def prepare_flair(
    flair: Volume, *, bias: Mapping[str, Any], brain: Mapping[str, Any], n_threads: int = 1
) -> PreparedFLAIR:
    """Bias-correct the FLAIR and find the brain (or take the support of a stripped input).

    Parameters
    ----------
    flair : Volume
        Raw FLAIR on its acquisition grid.
    bias : mapping
        Keyword parameters of :func:`lesionq.preprocess.bias.correct_bias`
        (skipped for inputs recognised as skull-stripped, which arrive corrected).
    brain : mapping
        Keyword parameters of :func:`lesionq.preprocess.brain.brain_mask`.
    n_threads : int
        Thread budget.

    Returns
    -------
    PreparedFLAIR
        Everything on the input FLAIR grid.
    """

    arr = np.asarray(flair.array, dtype=np.float32)
    found = find_brain(arr, flair.affine, n_threads=n_threads, **brain)
    mask = np.asarray(found.mask, dtype=bool)
    if found.skull_stripped_input:
        corrected = arr  # template-space inputs arrive bias-corrected
    else:
        corrected, _ = correct_bias(arr, flair.affine, mask=mask, n_threads=n_threads, **bias)
    LOGGER.info("brain: %s, %.0f mL", found.method, found.volume_ml)
    return PreparedFLAIR(
        flair=Volume(np.asarray(corrected, dtype=np.float32), flair.affine, "FLAIR"),
        brain_mask=Volume(mask.astype(np.uint8), flair.affine, "mask"),
        skull_stripped=bool(found.skull_stripped_input),
    )


def coregister_to_flair(
    moving: Volume,
    flair: Volume,
    brain_mask: Volume,
    *,
    skull_stripped: bool = False,
    bias: Mapping[str, Any],
    registration: Mapping[str, Any],
    n_threads: int = 1,
) -> Coregistered:
    """Rigidly register a contrast (T1w, T2w, ce-T1w) to the FLAIR and resample it there.

    The contrast is bias-corrected on its own grid first; the transform is
    estimated with the FLAIR brain mask as fixed mask and applied with linear
    interpolation. ``registration`` holds the keyword parameters of
    :func:`lesionq.registration.rigid.estimate_rigid` plus ``trust_same_grid``
    (bool): when true and the contrast shares the FLAIR's voxel grid, it is taken
    as already co-registered (identity transform), as for template-space data;
    and ``fixed_mask`` (``"none"``: whole field of view, the default, or
    ``"brain"``: the FLAIR brain mask). Measured on the phantoms, a brain-only
    metric mask lets T2w -> FLAIR slip by up to 16 mm (the two contrasts order
    brain tissues alike), while the whole head stays within 0.1 mm.

    Returns
    -------
    Coregistered
        ``image`` on the FLAIR grid; ``transform`` maps FLAIR (LPS) points to
        contrast points (ITK convention).
    """

    params = dict(registration)
    trust_same_grid = bool(params.pop("trust_same_grid", False))
    fixed_mask_mode = str(params.pop("fixed_mask", "none"))
    if fixed_mask_mode not in ("none", "brain"):
        raise ConfigError(
            f"[registration] fixed_mask must be 'none' or 'brain', got {fixed_mask_mode!r}"
        )
    arr = np.asarray(moving.array, dtype=np.float32)
    if skull_stripped:
        corrected = arr
    else:
        corrected, _ = correct_bias(arr, moving.affine, mask=None, n_threads=n_threads, **bias)
    fixed_mask = np.asarray(brain_mask.array) > 0
    if trust_same_grid and moving.same_grid(flair):
        # same voxel grid as the FLAIR: already co-registered (e.g. template-space
        # inputs); an identity transform is recorded instead of a re-estimate
        LOGGER.info("%s shares the FLAIR grid: taken as co-registered", moving.kind)
        tx: sitk.Transform = sitk.Euler3DTransform()
    else:
        tx = estimate_rigid(
            flair.array,
            flair.affine,
            corrected,
            moving.affine,
            fixed_mask=fixed_mask if fixed_mask_mode == "brain" else None,
            n_threads=n_threads,
            **params,
        )
    out = resample_to(
        corrected,
        moving.affine,
        flair.shape,
        flair.affine,
        tx,
        interpolation="linear",
        n_threads=n_threads,
    )
    if skull_stripped:
        out = np.where(fixed_mask, out, 0)
    return Coregistered(Volume(out.astype(np.float32), flair.affine, moving.kind), tx)


def atlas_priors(
    flair: Volume,
    brain_mask: Volume,
    *,
    t1: Volume | None = None,
    atlas_dir: str | None = None,
    template: Mapping[str, Any],
    n_threads: int = 1,
) -> AtlasMaps:
    """Register the atlas template to the visit and resample its maps onto the FLAIR grid.

    The T1 template is registered (affine, mutual information) to the visit's
    T1w when present (same contrast), otherwise to the FLAIR; priors are
    resampled with linear interpolation, the location map with nearest neighbour.

    Returns
    -------
    AtlasMaps
    """

    atlas = load_atlas(atlas_dir)
    ref = t1 if t1 is not None else flair
    mask = np.asarray(brain_mask.array) > 0
    tx = register_template(
        atlas.t1w_scaled(),
        atlas.affine,
        ref.array,
        ref.affine,
        mask,
        template_mask=atlas.brain_mask,
        n_threads=n_threads,
        **template,
    )
    maps: dict[str, Volume] = {}
    for key in ("wm", "gm", "csf"):
        arr = resample_to(
            atlas.probability(key),
            atlas.affine,
            flair.shape,
            flair.affine,
            tx,
            interpolation="linear",
            n_threads=n_threads,
        )
        maps[key] = Volume(np.clip(arr, 0, 1).astype(np.float32), flair.affine, key)
    loc = resample_to(
        atlas.location,
        atlas.affine,
        flair.shape,
        flair.affine,
        tx,
        interpolation="nearest",
        n_threads=n_threads,
    )
    maps["location"] = Volume(loc.astype(np.uint8), flair.affine, "location")
    return AtlasMaps(maps=maps, transform=tx)


def location_settings(location_rules: Mapping[str, Any] | None) -> dict[str, float]:
    """Keywords of :func:`~lesionq.core.segmentation.segment_lesions` that come from ``[location]``.

    Parameters
    ----------
    location_rules : mapping or None
        The protocol's ``[location]`` section (None: its defaults).

    Returns
    -------
    dict
        ``{"infratentorial_min_fraction": f}``: the share of a lesion's voxels in
        the brainstem + cerebellum (0..1, inclusive) that makes it infratentorial,
        for the segmentation's posterior-fossa rule as for the lesion table's class.
    """
    rules = dict(location_rules or {})
    return {
        "infratentorial_min_fraction": float(
            rules.get("infratentorial_min_fraction", INFRATENTORIAL_MIN_FRACTION)
        )
    }


def segment_t2_volumes(
    flair: Volume,
    brain_mask: Volume,
    *,
    t1: Volume | None = None,
    t2: Volume | None = None,
    priors: Mapping[str, Volume] | None = None,
    segmentation: Mapping[str, Any],
    min_volume_mm3: float,
    location_rules: Mapping[str, Any] | None = None,
    n_threads: int = 1,
) -> Segmented:
    """T2/FLAIR lesion probability and mask (see :mod:`lesionq.core.segmentation`).

    ``min_volume_mm3`` is the protocol's ``[lesions] min_volume_mm3`` (one rule for
    the mask and the lesion table); ``segmentation`` the ``[segmentation]`` section;
    ``location_rules`` the ``[location]`` section, whose
    ``infratentorial_min_fraction`` the posterior-fossa rule shares with the lesion
    table's location class (:func:`location_settings`).
    """

    prior_arrays = None
    if priors is not None:
        prior_arrays = {k: np.asarray(v.array) for k, v in priors.items()}
    res = segment_lesions(
        np.asarray(flair.array, dtype=np.float32),
        np.asarray(brain_mask.array) > 0,
        flair.voxel_size_mm,
        t1=None if t1 is None else np.asarray(t1.array, dtype=np.float32),
        t2=None if t2 is None else np.asarray(t2.array, dtype=np.float32),
        priors=prior_arrays,
        min_volume_mm3=float(min_volume_mm3),
        n_threads=int(n_threads),
        **location_settings(location_rules),
        **dict(segmentation),
    )
    return Segmented(
        probability=Volume(np.asarray(res.probability, dtype=np.float32), flair.affine, "probseg"),
        mask=Volume(np.asarray(res.mask).astype(np.uint8), flair.affine, "mask"),
    )


def tabulate_lesions(
    mask: Volume,
    *,
    flair: Volume,
    brain_mask: Volume,
    probability: Volume | None = None,
    location: Volume | None = None,
    lesions: Mapping[str, Any],
    location_rules: Mapping[str, Any] | None = None,
    n_threads: int = 1,
) -> Tabulated:
    """Label lesions (26-connected, minimum volume in mm3) and measure each one.

    Parameters
    ----------
    mask : Volume
        Binary lesion mask on the FLAIR grid.
    flair : Volume
        Intensity image for per-lesion FLAIR statistics.
    brain_mask : Volume
        For the brain volume reported per visit.
    probability : Volume, optional
        Lesion probability, for the mean probability per lesion.
    location : Volume, optional
        Atlas location map on the FLAIR grid; without it ``location`` is ``n/a``.
    lesions : mapping
        Keyword parameters of :func:`lesionq.core.components.label_lesions`
        (``min_volume_mm3``, ``connectivity``).
    location_rules : mapping, optional
        Keyword parameters of :func:`lesionq.core.location.classify_locations`.

    Returns
    -------
    Tabulated
        Rows in ``lesion_id`` order; columns :data:`LESION_TABLE_COLUMNS`.
    """
    vs = mask.voxel_size_mm
    labels, n = label_lesions(np.asarray(mask.array) > 0, vs, **dict(lesions))
    loc_classes = None
    if location is not None and n:
        loc_classes = classify_locations(
            labels, np.asarray(location.array), vs, **dict(location_rules or {})
        )
    table = lesion_table(
        labels,
        mask.affine,
        location=loc_classes,
        intensity=np.asarray(flair.array, dtype=np.float32),
    )
    cols = table.columns()
    df = pd.DataFrame({k: cols[k] for k in cols if k not in ("mean_intensity", "max_intensity")})
    df["label"] = "T2"
    if "location" not in df:
        df["location"] = pd.Series([pd.NA] * len(df), dtype=object)
    df["flair_mean"] = cols.get("mean_intensity", np.full(len(df), np.nan))
    df["flair_max"] = cols.get("max_intensity", np.full(len(df), np.nan))
    if probability is not None and n:
        ids = np.asarray(table.lesion_id)
        df["probability_mean"] = ndi.mean(np.asarray(probability.array), labels, ids)
    else:
        df["probability_mean"] = np.nan
    df = df[list(LESION_TABLE_COLUMNS)].round(
        {
            "volume_mm3": 3,
            "centroid_x_mm": 2,
            "centroid_y_mm": 2,
            "centroid_z_mm": 2,
            "flair_mean": 3,
            "flair_max": 3,
            "probability_mean": 4,
        }
    )
    brain_vol = float(voxels_to_mm3(int(np.count_nonzero(brain_mask.array)), vs))
    return Tabulated(
        labels=Volume(labels.astype(np.int32), mask.affine, "labels"),
        table=df,
        count=int(n),
        volume_mm3=float(table.total_volume_mm3),
        brain_volume_mm3=brain_vol,
    )


@dataclass(frozen=True)
class VisitParameters:
    """The protocol sections of the visit steps, read once from the settings.

    :func:`lesionq.segment_t2` (in memory) and ``lesionq run`` (the nipype visit
    workflow, :func:`lesionq.workflows.visit.init_visit_wf`) both take their step
    parameters from :func:`visit_parameters`, so the two cannot read the protocol
    differently.

    Attributes
    ----------
    bias, brain, registration, segmentation, lesions, location : mapping
        The protocol sections of the same names.
    template : mapping
        ``[template]`` without ``enabled`` (the keywords of
        :func:`~lesionq.registration.rigid.register_template`).
    use_atlas : bool
        ``[template] enabled`` and the caller's ``use_atlas``: register the atlas and
        use its priors and location map.
    gd, black_holes : mapping or None
        ``[gd]`` / ``[black_holes]``; None when the protocol has no such section (the
        step does not run).
    """

    bias: Mapping[str, Any]
    brain: Mapping[str, Any]
    registration: Mapping[str, Any]
    template: Mapping[str, Any]
    segmentation: Mapping[str, Any]
    lesions: Mapping[str, Any]
    location: Mapping[str, Any]
    use_atlas: bool
    gd: Mapping[str, Any] | None = None
    black_holes: Mapping[str, Any] | None = None

    @property
    def min_volume_mm3(self) -> float:
        """``[lesions] min_volume_mm3``: the smallest lesion kept, mm3."""
        return float(self.lesions["min_volume_mm3"])

    def workflow_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of :func:`lesionq.workflows.visit.init_visit_wf` (the sections)."""
        return {
            "bias": self.bias,
            "brain": self.brain,
            "registration": self.registration,
            "template": self.template,
            "segmentation": self.segmentation,
            "lesions": self.lesions,
            "location": self.location,
            "gd": self.gd,
            "black_holes": self.black_holes,
            "use_atlas": self.use_atlas,
        }


def visit_parameters(settings: Settings, *, use_atlas: bool = True) -> VisitParameters:
    """The visit steps' parameters from a loaded protocol.

    Parameters
    ----------
    settings : lesionq.config.Settings
        The protocol (already validated, :func:`lesionq.steps.validate_settings`).
    use_atlas : bool
        The caller's choice; the atlas runs only when ``[template] enabled`` too.

    Returns
    -------
    VisitParameters
    """
    template = dict(settings.section("template"))
    enabled = bool(template.pop("enabled", True))
    sections = settings.sections
    return VisitParameters(
        bias=settings.section("bias"),
        brain=settings.section("brain"),
        registration=settings.section("registration"),
        template=template,
        segmentation=settings.section("segmentation"),
        lesions=settings.section("lesions"),
        location=settings.section("location"),
        use_atlas=bool(use_atlas and enabled),
        gd=settings.section("gd") if "gd" in sections else None,
        black_holes=settings.section("black_holes") if "black_holes" in sections else None,
    )


def on_grid(name: str, vol: Volume, ref: Volume, grid: str = "the FLAIR grid") -> np.ndarray:
    """The array of ``vol``, checked to lie on the grid of ``ref``.

    Parameters
    ----------
    name : str
        What ``vol`` is, for the message (``"t1ce (post-contrast T1)"``).
    vol, ref : Volume
        The image and the image whose grid it must share (shape and affine within
        1e-4 mm, :meth:`lesionq.types.Volume.same_grid`).
    grid : str
        The reference grid's name in the message.

    Returns
    -------
    numpy.ndarray
        ``vol.array``.

    Raises
    ------
    lesionq.errors.GeometryError
        Not on that grid; the message says to resample it first.
    """
    if not vol.same_grid(ref):
        raise GeometryError(
            f"{name} ({vol.kind or 'image'}) is not on {grid}: shape {vol.shape} vs "
            f"{ref.shape}, or affines differ by > 1e-4 mm; resample it onto the FLAIR first "
            "(lesionq.steps.coregister_to_flair)"
        )
    return np.asarray(vol.array)
