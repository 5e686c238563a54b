"""Gadolinium-enhancing (Gd+) lesion segmentation (one visit, FLAIR grid).

Method
------
An unsupervised, rule-based detector of focal enhancement built, like the
T2/FLAIR method (:mod:`lesionq.core.segmentation`), on the visit's own
normal-appearing white matter (NAWM): every intensity threshold is either an
enhancement ratio (0 = NAWM level, 0.25 = 25 % of the NAWM signal) or a
z-score in units of the ratio map's own NAWM noise.

1. **Tissue model** (:func:`lesionq.core.tissue.estimate_tissues`) on the
   pre-contrast T1; without it on the FLAIR; without both on the
   post-contrast T1; atlas priors as mixing proportions when given. NAWM =
   white-matter posterior > 0.5. *CSF* = CSF posterior
   ``>= csf_max_probability`` and darker than NAWM on that image and (with a
   FLAIR) on the FLAIR: enhancing voxels fall into the broad CSF class of a
   post-contrast T1, T1-dark lesions are FLAIR-bright.
2. **Enhancement ratio** ``E`` (float32, 0 outside the brain):

   * ``inputs="post+pre"``: the pre-contrast T1 is mapped onto the
     post-contrast intensities by the *conditional median* of the
     post-contrast T1 given the pre-contrast T1 over the brain
     (:func:`conditional_median_map`: ``matching_bins`` equal-width bins of
     the pre-contrast intensity; sparse bins dropped, so a cluster of lesion
     voxels at an intensity where no normal tissue lies cannot be its own
     reference; non-decreasing; linear interpolation). Both scans image the
     same voxels, so this robust, non-parametric fit absorbs the scanners'
     scale and the different grey/white/CSF contrast of the two sequences,
     while the few enhancing voxels (< 2 % of the brain) do not move a
     median. Regional differences between the two scans (coil profiles, the
     posterior fossa, which pre- and post-contrast sequences render
     differently) are a smooth gain ``g`` of ``post / f(pre)`` over
     non-enhancing tissue (:func:`regional_gain`, ``gain_sigma_mm``; ratios
     beyond +-25 % left out of the fit), after which ``f`` is fitted again on
     ``post / g``. The reference of a voxel is then the maximum of
     ``g f(pre)`` within ``reference_max_mm``: a voxel enhances only when it
     is brighter than every nearby pre-contrast voxel, so a bright edge moved
     by 1-2 mm of residual misregistration does not.
     ``E = (post - reference) / NAWM median of post``; the NAWM ratio of
     the medians (post / pre) is reported.
   * ``inputs="post+flair"`` / ``"post"``: ``E = post / NAWM median of
     post - 1`` (enhancement relative to the post-contrast NAWM).

3. **Noise and blob evidence**: ``sd_E`` = robust SD (1.4826 MAD) of ``E``
   over NAWM; ``B`` = ``E`` smoothed with a Gaussian of ``blob_sigma_mm``
   and ``sd_B`` its NAWM robust SD. The smoothing is a matched filter for
   blobs of >= 1.5 mm radius: a 1-2 voxel wide vessel loses 2-4 times more
   of its peak than a lesion does.
4. **Candidates by hysteresis**: among *eligible* voxels (more than
   ``edge_margin_mm`` inside the brain mask, not CSF), seeds are
   ``B / sd_B >= seed_z`` (``seed_z_without_pre`` without a pre-contrast
   T1, whose ``E`` is noisier but then needs FLAIR support, below) with
   ``E >= min_enhancement``; a candidate is a 26-connected component of
   eligible voxels with ``E / sd_E >= grow_z`` that holds a seed. A
   component holding several separate seed regions is split between them by
   a watershed of ``-B`` (a lesion touching an enhancing vein stays its own
   candidate).
5. **Candidate rules**, in this order; the first one a candidate fails is
   its ``reason`` (:data:`GD_REASONS`; each parameter is a key of the
   protocol's ``[gd]`` section). Features are computed only as far as the
   rules need them (NaN in :class:`GdCandidate` otherwise).

   * ``"edge"`` (dura, venous sinuses, marrow, scalp, skull-stripping
     residue): its deepest voxel is less than ``edge_min_depth_mm`` from the
     outside of the brain mask.
   * ``"pituitary"`` (pituitary stalk / infundibulum, optic chiasm,
     cavernous sinus at the skull base): centroid within
     ``pituitary_midline_mm`` of the brain's mid-sagittal plane, below the
     brain's centre of mass, its deepest voxel less than
     ``pituitary_depth_mm`` inside the brain, and (with a location map) not
     infratentorial. The left-right and inferior-superior axes come from
     ``affine``.
   * ``"choroid_plexus"``: at least ``ventricle_max_fraction`` of the filled
     candidate lies in the atlas ventricles (location label 1, dilated by
     ``ventricle_margin_mm``) or in CSF (atlas CSF prior >= 0.5; without
     priors, tissue CSF), or more than ``csf_shell_max`` of the
     ``shell_mm`` shell around it is (tissue) CSF: the choroid plexus floats
     in ventricular CSF; a periventricular lesion has white matter on one
     side.
   * ``"cortex"`` (pial and cortical vessels, cortical enhancement): mean
     grey-matter probability (atlas prior when given, else tissue
     posterior) ``>= cortex_gm_min`` and deepest voxel less than
     ``cortex_depth_mm`` inside the brain.
   * ``"location"``: less than ``wm_shell_min`` of the ``shell_mm`` shell
     is white matter (tissue posterior > 0.5): Gd+ MS lesions sit in or
     against white matter; sulcal veins and deep grey-matter veins
     (thalamostriate, internal cerebral) are wrapped in grey matter or CSF.
   * ``"vessel"``: tubular or intravascular. ``elongation`` = sqrt(l1 / l2)
     of the inertia tensor of the filled candidate (l1 >= l2 >= l3, voxel
     centres in mm) ``>= vessel_elongation``; or *thin and long*: largest
     inscribed radius (Euclidean distance transform, mm)
     ``<= vessel_max_radius_mm`` and length (4 sqrt(l1))
     ``>= vessel_min_length_mm``; or *thin and very bright*: peak ``E >=
     vessel_min_ratio`` and the part of the candidate at >= half that peak
     has an inscribed radius ``<= vessel_bright_max_radius_mm`` (a vein seen
     end-on is a small round dot brighter than parenchymal enhancement).
   * ``"size"``: fewer enhancing voxels than ``min_enhancing_mm3`` (below
     the size where a dot can be told from a vessel in cross-section).
   * ``"contrast"``: peak ``B / sd_B`` below ``strong_z`` *and* no FLAIR
     support: the mean smoothed FLAIR z-score (FLAIR NAWM SDs) over the
     candidate's core (``B`` >= half its peak), minus the median over the
     white matter of its shell, below ``flair_min_z``. Enhancement alone must
     be strong; moderate enhancement counts when the candidate is
     FLAIR-hyperintense against its own surroundings, like every Gd+ MS
     lesion (vessels are dark or iso-intense on FLAIR). FLAIR support is
     used when ``flair`` is given and ``flair_support`` is true.

6. **Delineation, rings**: the accepted candidates' voxels, holes filled
   (3-D, then slice by slice along each axis, so that a ring open at a pole
   is closed too: the non-enhancing core of a ring lesion belongs to the
   lesion); lesions are the 26-connected components of their union (pieces
   split between two seeds join again), numbered canonically
   (:func:`lesionq.core.components.relabel_canonical`), those smaller than
   ``min_volume_mm3`` dropped (inclusive rule of
   :func:`lesionq.core.units.min_voxels_for_mm3`). ``core_fraction`` = share
   of the lesion's interior (eroded by one voxel) whose ``B`` is below half
   the lesion's rim level (90th percentile of ``B``); ``ring`` =
   ``core_fraction >= ring_min_core_fraction``. With 1 mm voxels, rings of
   radius <= 3 mm (a core of <= 1.5 mm radius) blur into nodules and are
   reported as nodular.

The per-lesion table (:class:`GdLesion`) holds volume, peak and mean
enhancement ratio (over the lesion's enhancing voxels), centroid, shape
metrics, ring flag and (with a location map) the McDonald location class of
:func:`lesionq.core.location.classify_locations`.

Conventions: arrays indexed (i, j, k) like nibabel data; voxel sizes in mm
along those axes; 26-connectivity; volumes through :mod:`lesionq.core.units`.
Deterministic (no random draws); CPU only, single-threaded numpy / scipy /
scikit-image; about 8 s for a 182 x 218 x 182 1 mm visit on this machine.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import ndimage as ndi
from skimage.segmentation import watershed

from ..errors import GeometryError, InputError, ProcessingError
from .components import relabel_canonical
from .geometry import check_image as _check_image
from .geometry import check_voxel_size as _check_voxel_size
from .geometry import ellipsoid_footprint as _ellipsoid
from .geometry import inner_distance_mm as _inner_distance_mm
from .location import INFRATENTORIAL, VENTRICLES, classify_locations
from .normalise import robust_location_scale
from .tissue import TISSUES, estimate_tissues
from .units import min_voxels_for_mm3, voxel_volume_mm3

__all__ = [
    "GD_INPUTS",
    "GD_REASONS",
    "GdCandidate",
    "GdLesion",
    "gd_confidence",
    "GdSegmentation",
    "EnhancementMap",
    "conditional_median_map",
    "enhancement_map",
    "regional_gain",
    "segment_enhancing",
]

log = logging.getLogger(__name__)

#: Values of :attr:`GdSegmentation.inputs`.
GD_INPUTS: tuple[str, ...] = ("post+pre", "post+flair", "post")
#: Candidate decisions, in the order the rules are applied.
GD_REASONS: tuple[str, ...] = (
    "edge",
    "pituitary",
    "choroid_plexus",
    "cortex",
    "location",
    "vessel",
    "size",
    "contrast",
    "accepted",
)

_FULL = np.ones((3, 3, 3), dtype=bool)
#: GdCandidate features computed only when a rule needs them (NaN otherwise).
_LAZY = (
    "peak_ratio", "mean_ratio", "peak_blob_z", "depth_mm", "ventricle_fraction",
    "csf_near_fraction", "csf_shell_fraction", "wm_shell_fraction", "gm_mean",
    "elongation", "radius_mm", "length_mm", "flair_z", "blobness",
)  # fmt: skip


# --------------------------------------------------------------------------- results


@dataclass(frozen=True)
class GdCandidate:
    """One enhancing candidate and the decision on it (for QC and review).

    Attributes
    ----------
    label : int
        1-based candidate number (order of :func:`scipy.ndimage.label`).
    n_voxels : int
        Voxels of the candidate (before hole filling).
    centroid_vox : tuple of 3 float
        Centre of mass (i, j, k) of the filled candidate.
    peak_ratio, mean_ratio : float
        Highest / mean enhancement ratio ``E`` over the candidate.
    peak_blob_z : float
        Highest ``B / sd_B`` over the filled candidate.
    depth_mm : float
        Largest distance of a candidate voxel to the outside of the brain mask.
    ventricle_fraction : float
        Share of the filled candidate in the (dilated) ventricles or CSF.
    csf_near_fraction : float
        Share of the candidate within ``shell_mm`` of (tissue) CSF (QC only).
    csf_shell_fraction, wm_shell_fraction : float
        Share of the ``shell_mm`` shell that is CSF / white matter.
    gm_mean : float
        Mean grey-matter probability over the candidate.
    elongation : float
        sqrt(l1 / l2) of the inertia tensor of the filled candidate.
    radius_mm : float
        Largest inscribed radius of the filled candidate (mm).
    length_mm : float
        ``4 sqrt(l1)`` (mm), the long-axis extent of an equivalent ellipsoid.
    flair_z : float
        FLAIR support: mean smoothed FLAIR z-score over the candidate's core
        minus the median over its white-matter shell (NaN without FLAIR).
    blobness : float
        Hessian blobness of ``B`` at its peak (0 line or plate .. 1 sphere; QC only).
    reason : str
        One of :data:`GD_REASONS`.
    """

    label: int
    n_voxels: int
    centroid_vox: tuple[float, float, float]
    peak_ratio: float
    mean_ratio: float
    peak_blob_z: float
    depth_mm: float
    ventricle_fraction: float
    csf_near_fraction: float
    csf_shell_fraction: float
    wm_shell_fraction: float
    gm_mean: float
    elongation: float
    radius_mm: float
    length_mm: float
    flair_z: float
    blobness: float
    reason: str

    @property
    def accepted(self) -> bool:
        """Whether the candidate became a Gd+ lesion."""
        return self.reason == "accepted"


@dataclass(frozen=True)
class GdLesion:
    """One Gd+ lesion of :attr:`GdSegmentation.labels`.

    Attributes
    ----------
    lesion_id : int
        Its value in ``labels`` (canonical order: largest first).
    n_voxels : int
    volume_mm3 : float
        Filled lesion (ring core included), mm3.
    centroid_vox : tuple of 3 float
        Mean voxel index (i, j, k).
    peak_ratio, mean_ratio : float
        Highest and mean enhancement ratio over the lesion's *enhancing*
        voxels (0 = NAWM level).
    peak_blob_z : float
        Highest smoothed-enhancement z-score.
    flair_z : float
        Mean smoothed FLAIR z-score (FLAIR NAWM SDs) over the lesion's enhancing
        voxels (NaN without FLAIR).
    elongation, radius_mm, length_mm : float
        Shape metrics (see :class:`GdCandidate`).
    core_fraction : float
        Share of the lesion that is a non-enhancing interior core (see the
        module docstring, step 6).
    ring : bool
        Ring enhancement (see the module docstring, step 6).
    location : str
        McDonald class of :func:`~lesionq.core.location.classify_locations`,
        or ``"n/a"`` without a location map.
    confidence : float
        In [0, 1], :func:`gd_confidence` of the lesion's evidence and shape:
        how far it clears the rules that a false Gd+ lesion most often only
        just clears (readers look at the lowest first).
    """

    lesion_id: int
    n_voxels: int
    volume_mm3: float
    centroid_vox: tuple[float, float, float]
    peak_ratio: float
    mean_ratio: float
    peak_blob_z: float
    flair_z: float
    elongation: float
    radius_mm: float
    length_mm: float
    core_fraction: float
    ring: bool
    location: str
    confidence: float = float("nan")


def gd_confidence(
    peak_blob_z: float,
    flair_z: float,
    elongation: float,
    *,
    seed_z: float,
    strong_z: float,
    flair_min_z: float,
    vessel_elongation: float,
) -> float:
    """Confidence in [0, 1] that a detected Gd+ lesion is one, from its margins over the rules.

    Three margins, each clipped to [0, 1]:

    * enhancement: ``(peak_blob_z - seed_z) / (strong_z - seed_z)``: 0 at the
      seed threshold, 1 at the strength accepted without FLAIR support;
    * FLAIR support: ``flair_z / (2 flair_min_z)``: 1 at twice the FLAIR
      support the contrast rule asks for (NaN, no FLAIR: 0);
    * roundness: ``(vessel_elongation - elongation) / (vessel_elongation - 1)``:
      1 for a round lesion, 0 at the elongation of the vessel rule.

    ``confidence = max(enhancement, FLAIR support) * (0.5 + 0.5 roundness)``:
    a lesion needs strong enhancement *or* FLAIR support (as the contrast rule
    does), and a tubular shape (a vessel seen lengthwise) halves it. The
    weights are a documented convention, not fitted: no real scan with
    verified Gd+ lesions is available to fit them on.

    Parameters
    ----------
    peak_blob_z : float
        Highest smoothed-enhancement z-score of the lesion (NAWM noise units).
    flair_z : float
        Mean smoothed FLAIR z-score over its enhancing voxels (NaN without FLAIR).
    elongation : float
        ``sqrt(l1 / l2)`` of its inertia tensor (>= 1).
    seed_z, strong_z, flair_min_z, vessel_elongation : float
        The ``[gd]`` thresholds the lesion was judged by (``seed_z`` is
        ``seed_z_without_pre`` for a visit without a pre-contrast T1).

    Returns
    -------
    float

    Examples
    --------
    >>> kw = dict(seed_z=4.5, strong_z=9.0, flair_min_z=1.5, vessel_elongation=3.0)
    >>> round(gd_confidence(9.0, 3.0, 1.0, **kw), 3)
    1.0
    >>> round(gd_confidence(4.5, float("nan"), 3.0, **kw), 3)
    0.0
    >>> round(gd_confidence(6.75, 0.0, 2.0, **kw), 3)
    0.375
    """

    def clip01(v: float) -> float:
        return float(min(max(v, 0.0), 1.0)) if math.isfinite(v) else 0.0

    enh = clip01((peak_blob_z - seed_z) / max(strong_z - seed_z, 1e-6))
    fl = clip01(flair_z / max(2.0 * flair_min_z, 1e-6))
    rnd = clip01((vessel_elongation - elongation) / max(vessel_elongation - 1.0, 1e-6))
    return round(max(enh, fl) * (0.5 + 0.5 * rnd), 4)


@dataclass(frozen=True)
class EnhancementMap:
    """Output of :func:`enhancement_map` (arrays on the FLAIR grid).

    Attributes
    ----------
    ratio : numpy.ndarray
        float32 enhancement ratio ``E`` (0 = NAWM level; 0 outside the brain).
    blob : numpy.ndarray
        float32 ``E`` smoothed with ``blob_sigma_mm``.
    ratio_sd, blob_sd : float
        Robust NAWM SDs of ``ratio`` and ``blob``.
    nawm : numpy.ndarray
        bool normal-appearing white matter used as reference.
    wm, gm, csf : numpy.ndarray
        float32 tissue posteriors.
    csf_mask : numpy.ndarray
        bool CSF: posterior >= ``csf_max_probability`` and darker than NAWM on
        the tissue reference image.
    tissue_reference : str
        Image the tissue model ran on: ``"pre"``, ``"flair"`` or ``"post"``.
    post_nawm_median : float
        NAWM median of the post-contrast T1 (input units).
    post_pre_nawm_ratio : float
        NAWM median of post / NAWM median of pre (NaN without pre).
    inputs : str
        ``"post+pre"`` or ``"post"`` (what ``ratio`` rests on).
    """

    ratio: np.ndarray
    blob: np.ndarray
    ratio_sd: float
    blob_sd: float
    nawm: np.ndarray
    wm: np.ndarray
    gm: np.ndarray
    csf: np.ndarray
    csf_mask: np.ndarray
    tissue_reference: str
    post_nawm_median: float
    post_pre_nawm_ratio: float
    inputs: str


@dataclass(frozen=True)
class GdSegmentation:
    """Output of :func:`segment_enhancing`.

    Attributes
    ----------
    mask : numpy.ndarray
        bool Gd+ lesion mask (filled lesions), FLAIR grid.
    labels : numpy.ndarray
        int32 lesion ids ``1..n`` (canonical order, 0 = background).
    lesions : tuple of GdLesion
        One per id, ascending.
    candidates : tuple of GdCandidate
        Every candidate and its decision.
    enhancement : numpy.ndarray
        float32 enhancement ratio map ``E``.
    inputs : str
        One of :data:`GD_INPUTS`: ``"post+pre"`` (pre-contrast T1 used),
        ``"post+flair"`` (no pre-contrast T1; FLAIR support used),
        ``"post"`` (post-contrast T1 alone).
    inputs_used : tuple of str
        Every input that took part: subset of ``("post", "pre", "flair", "priors", "location")``.
    ratio_sd, blob_sd : float
        Noise of the enhancement maps in NAWM (ratio units).
    post_pre_nawm_ratio : float
        NAWM median of post / pre (NaN without pre).
    parameters : Mapping[str, Any]
        The method parameters used (``[gd]`` protocol keys).
    seconds : float
        Wall time of the call.
    """

    mask: np.ndarray
    labels: np.ndarray
    lesions: tuple[GdLesion, ...]
    candidates: tuple[GdCandidate, ...]
    enhancement: np.ndarray
    inputs: str
    inputs_used: tuple[str, ...]
    ratio_sd: float
    blob_sd: float
    post_pre_nawm_ratio: float
    parameters: Mapping[str, Any] = field(repr=False)
    seconds: float = 0.0

    @property
    def n_lesions(self) -> int:
        """Number of Gd+ lesions."""
        return len(self.lesions)

    @property
    def volume_mm3(self) -> float:
        """Total Gd+ lesion volume, mm3."""
        return float(sum(les.volume_mm3 for les in self.lesions))


# --------------------------------------------------------------------------- checks

_POSITIVE = (
    "blob_sigma_mm",
    "shell_mm",
    "vessel_elongation",
)
_NON_NEGATIVE = (
    "edge_margin_mm",
    "edge_min_depth_mm",
    "pituitary_midline_mm",
    "pituitary_depth_mm",
    "ventricle_margin_mm",
    "cortex_depth_mm",
    "vessel_max_radius_mm",
    "vessel_min_length_mm",
    "vessel_min_ratio",
    "vessel_bright_max_radius_mm",
    "min_enhancing_mm3",
    "prior_floor",
    "min_enhancement",
    "gain_sigma_mm",
    "reference_max_mm",
)
_FRACTIONS = (
    "csf_max_probability",
    "ventricle_max_fraction",
    "csf_shell_max",
    "cortex_gm_min",
    "wm_shell_min",
    "ring_min_core_fraction",
)
_FINITE = ("seed_z", "seed_z_without_pre", "strong_z", "grow_z", "flair_min_z")


def _check_params(p: Mapping[str, Any]) -> None:
    def number(k: str) -> float:
        v = p[k]
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
            raise InputError(f"gd parameter {k} must be a finite number, got {v!r}")
        return float(v)

    for k in _POSITIVE:
        if number(k) <= 0:
            raise InputError(f"gd parameter {k} must be > 0, got {p[k]!r}")
    for k in _NON_NEGATIVE:
        if number(k) < 0:
            raise InputError(f"gd parameter {k} must be >= 0, got {p[k]!r}")
    for k in _FRACTIONS:
        if not 0.0 <= number(k) <= 1.0:
            raise InputError(f"gd parameter {k} must be in [0, 1], got {p[k]!r}")
    for k in _FINITE:
        number(k)
    for k in ("seed_z", "seed_z_without_pre"):
        if p["strong_z"] < p[k]:
            raise InputError(f"gd parameters: strong_z ({p['strong_z']}) must be >= {k} ({p[k]})")
    if number("min_volume_mm3") < 0:
        raise InputError(f"min_volume_mm3 must be >= 0, got {p['min_volume_mm3']!r}")
    for k in ("tissue_iterations", "matching_bins"):
        v = p[k]
        if (
            isinstance(v, bool)
            or not isinstance(v, int)
            or v < (1 if k == "tissue_iterations" else 8)
        ):
            lo = 1 if k == "tissue_iterations" else 8
            raise InputError(f"gd parameter {k} must be an int >= {lo}, got {v!r}")
    if not isinstance(p["flair_support"], bool):
        raise InputError(
            f"gd parameter flair_support must be true or false, got {p['flair_support']!r}"
        )


# --------------------------------------------------------------------------- helpers


def conditional_median_map(
    pre: np.ndarray,
    post: np.ndarray,
    mask: np.ndarray,
    *,
    n_bins: int = 128,
    min_bin_fraction: float = 0.002,
) -> np.ndarray:
    """Map ``pre`` onto ``post`` intensities by the conditional median of ``post`` given ``pre``.

    ``pre`` is binned in ``n_bins`` equal-width bins between its 0.5th and
    99.5th percentiles over ``mask``; bins holding fewer than
    ``min_bin_fraction`` of the mask voxels are dropped (a cluster of lesion
    voxels at an intensity where no normal tissue lies must not become its
    own reference); the medians of ``post`` in the kept bins, made
    non-decreasing, are interpolated linearly (constant beyond the outer bins).

    Parameters
    ----------
    pre, post : numpy.ndarray
        Images of one shape (any units).
    mask : numpy.ndarray
        bool, where the fit is made (the brain).
    n_bins : int
        Number of bins (>= 8).
    min_bin_fraction : float
        Smallest share of the mask voxels a bin needs to count.

    Returns
    -------
    numpy.ndarray
        float32 ``f(pre)`` everywhere.

    Raises
    ------
    lesionq.errors.ProcessingError
        Fewer than 2 bins are populated enough (e.g. ``pre`` is constant).

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> pre = rng.uniform(100, 400, (20, 20, 20)).astype(np.float32)
    >>> post = 0.5 * pre + 30
    >>> f = conditional_median_map(pre, post, np.ones(pre.shape, bool), n_bins=32)
    >>> bool(np.abs(f - post).max() < 3.0)
    True
    """
    x = pre[mask].astype(np.float64)
    y = post[mask].astype(np.float64)
    lo, hi = np.percentile(x, [0.5, 99.5]) if x.size else (0.0, 0.0)
    if not hi > lo:
        raise ProcessingError(
            "intensity matching: the pre-contrast T1 is constant in the brain "
            f"(0.5-99.5 percentiles {lo}..{hi})"
        )
    idx = np.clip(((x - lo) / (hi - lo) * n_bins).astype(np.int64), 0, n_bins - 1)
    order = np.lexsort((y, idx))
    idx_s, y_s, x_s = idx[order], y[order], x[order]
    starts = np.searchsorted(idx_s, np.arange(n_bins), side="left")
    stops = np.searchsorted(idx_s, np.arange(n_bins), side="right")
    min_count = max(10, int(min_bin_fraction * x.size))
    cx, cy = [], []
    for a, b in zip(starts.tolist(), stops.tolist(), strict=True):
        if b - a < min_count:
            continue
        cx.append(float(np.median(x_s[a:b])))
        cy.append(float(y_s[(a + b - 1) // 2] + y_s[(a + b) // 2]) / 2.0)  # sorted: median
    if len(cx) < 2:
        raise ProcessingError(
            "intensity matching: fewer than 2 intensity bins of the pre-contrast T1 hold "
            f">= {min_count} brain voxels; is it constant or nearly empty?"
        )
    cxa = np.asarray(cx)
    cya = np.maximum.accumulate(np.asarray(cy))
    return np.interp(pre, cxa, cya).astype(np.float32)


def _fill_holes(comp: np.ndarray) -> np.ndarray:
    """3-D hole filling, then 2-D filling slice by slice along each axis (padded box)."""
    filled = ndi.binary_fill_holes(comp)
    for axis in range(3):
        st = np.zeros((3, 3, 3), dtype=bool)
        idx: list[Any] = [slice(None)] * 3
        idx[axis] = 1
        st[tuple(idx)] = ndi.generate_binary_structure(2, 1)
        filled = ndi.binary_fill_holes(filled, structure=st)
    return filled


def _shape(filled: np.ndarray, vs: Sequence[float]) -> tuple[float, float, float]:
    """(elongation, largest inscribed radius mm, length mm) of a bool component."""
    pts = np.argwhere(filled).astype(np.float64) * np.asarray(vs)
    if len(pts) >= 2:
        cov = np.cov(pts.T, bias=True)
        ev = np.sort(np.linalg.eigvalsh(cov))[::-1]
    else:
        ev = np.zeros(3)
    ev = ev + np.asarray(sorted(v * v / 12.0 for v in vs))[::-1]  # a voxel's own extent
    elong = float(math.sqrt(ev[0] / ev[1])) if ev[1] > 0 else 1.0
    radius = float(ndi.distance_transform_edt(np.pad(filled, 1), sampling=vs).max())
    return elong, radius, float(4.0 * math.sqrt(ev[0]))


def _depth_mm(mask: np.ndarray, vs: Sequence[float]) -> np.ndarray:
    """Distance (mm) of each voxel of ``mask`` to the nearest voxel outside it (0 outside).

    Same values as :func:`lesionq.core.segmentation._inner_distance_mm`, computed on
    the bounding box of ``mask`` only (the field of view around a brain is mostly empty).
    """
    out = np.zeros(mask.shape, dtype=np.float32)
    idx = np.nonzero(mask)
    sl = tuple(slice(int(i.min()), int(i.max()) + 1) for i in idx)
    out[sl] = _inner_distance_mm(mask[sl], vs)
    return out


def _split_candidates(grow: np.ndarray, seeds: np.ndarray, blob: np.ndarray) -> np.ndarray:
    """Candidates: hysteresis components of ``grow`` holding seeds, split between seeds.

    Each 26-connected component of ``grow`` that holds at least one seed is a
    candidate; one that holds several separate seed regions (26-connected
    components of ``seeds``) is divided among them by a watershed of
    ``-blob`` (so a lesion touching an enhancing vessel stays its own
    candidate). Returns int32 candidate ids ``1..n`` (0 elsewhere).
    """
    comp_lab, _ = ndi.label(grow, _FULL)
    seed_lab, n_seed = ndi.label(seeds, _FULL)
    out = np.zeros(grow.shape, dtype=np.int32)
    if n_seed == 0:
        return out
    # seed regions per hysteresis component
    pairs = np.unique(np.stack([comp_lab[seeds], seed_lab[seeds]]), axis=1)
    objs = ndi.find_objects(comp_lab)
    nxt = 0
    for c in np.unique(pairs[0]).tolist():
        sl = objs[c - 1]
        comp = comp_lab[sl] == c
        ids = pairs[1][pairs[0] == c]
        if ids.size == 1:
            nxt += 1
            out[sl][comp] = nxt
            continue
        markers = np.where(comp & np.isin(seed_lab[sl], ids), seed_lab[sl], 0)
        ws = watershed(-blob[sl], markers=markers, mask=comp, connectivity=3)
        for sid in ids.tolist():
            nxt += 1
            out[sl][ws == sid] = nxt
    return out


def _blobness(blob: np.ndarray, region: np.ndarray, vs: Sequence[float]) -> float:
    """Hessian blobness of ``blob`` at its maximum inside ``region`` (0 line/plate .. 1 sphere).

    With the Hessian eigenvalues ``l1 <= l2 <= l3`` at that voxel (finite
    differences, mm units), ``max(-l3, 0) / -l1`` (0 when ``l1 >= 0``).
    """
    g = np.gradient(blob.astype(np.float64), *vs)
    p = np.unravel_index(int(np.argmax(np.where(region, blob, -np.inf))), blob.shape)
    h = np.empty((3, 3))
    for a in range(3):
        ga = np.gradient(g[a], *vs)
        for b in range(3):
            h[a, b] = ga[b][p]
    ev = np.linalg.eigvalsh(0.5 * (h + h.T))
    if ev[0] >= 0:
        return 0.0
    return float(max(-ev[2], 0.0) / -ev[0])


def _half_max_radius(
    ratio: np.ndarray, comp: np.ndarray, peak: float, vs: Sequence[float]
) -> float:
    """Largest inscribed radius (mm) of the part of ``comp`` at >= half its peak ratio."""
    core = comp & (ratio >= 0.5 * peak)
    return float(ndi.distance_transform_edt(np.pad(core, 1), sampling=vs).max())


def _orientation_axes(affine: np.ndarray | None) -> tuple[int, int, float]:
    """(left-right axis, inferior-superior axis, sign of superior along it)."""
    if affine is None:
        return 0, 2, 1.0
    m = np.asarray(affine, float)[:3, :3]
    lr = int(np.argmax(np.abs(m[0])))
    si = int(np.argmax(np.abs(m[2])))
    if lr == si:
        raise GeometryError(f"affine: cannot tell the left-right from the superior axis: {m}")
    return lr, si, float(np.sign(m[2, si]) or 1.0)


# --------------------------------------------------------------------------- maps


def enhancement_map(
    post: np.ndarray,
    brain_mask: np.ndarray,
    voxel_size_mm: Sequence[float],
    *,
    pre: np.ndarray | None = None,
    flair: np.ndarray | None = None,
    priors: Mapping[str, np.ndarray] | None = None,
    blob_sigma_mm: float = 0.7,
    csf_max_probability: float = 0.5,
    matching_bins: int = 128,
    prior_floor: float = 0.2,
    tissue_iterations: int = 25,
    gain_sigma_mm: float = 25.0,
    reference_max_mm: float = 1.0,
) -> EnhancementMap:
    """Tissue model, intensity matching and enhancement-ratio maps (steps 1-3).

    Parameters are those of :func:`segment_enhancing` (validated there); this
    function assumes same-grid float32 inputs and a bool brain mask.

    Returns
    -------
    EnhancementMap

    Raises
    ------
    lesionq.errors.ProcessingError
        Too little white matter, or a reference with zero spread.
    """
    vs = tuple(float(v) for v in voxel_size_mm)
    if pre is not None:
        ref, primary, ref_name = pre, "t1", "pre"
    elif flair is not None:
        ref, primary, ref_name = flair, "flair", "flair"
    else:
        ref, primary, ref_name = post, "t1", "post"
    tis = estimate_tissues(
        [ref],
        brain_mask,
        primary=primary,
        priors=priors,
        prior_floor=prior_floor,
        n_iterations=tissue_iterations,
    )
    nawm = brain_mask & (tis.wm > 0.5)
    n_min = max(100, int(0.01 * brain_mask.sum()))
    if nawm.sum() < n_min:
        raise ProcessingError(
            f"Gd: the tissue model found {int(nawm.sum())} white-matter voxels (need >= "
            f"{n_min}); check the brain mask and the T1 inputs"
        )
    ref_median = robust_location_scale(ref[nawm])[0]
    # CSF: CSF-like on the tissue model AND darker than NAWM on the reference
    # image (an enhancing voxel can look like the broad CSF class of a
    # post-contrast T1, never darker than white matter) AND, with a FLAIR,
    # darker than NAWM on the FLAIR (a T1-dark lesion is FLAIR-bright)
    csf = brain_mask & (tis.csf >= csf_max_probability) & (ref < ref_median)
    if flair is not None and ref is not flair:
        csf &= flair < robust_location_scale(flair[nawm])[0]
    m_post, s_post = robust_location_scale(post[nawm])
    if not (m_post > 0 and s_post > 0):
        raise ProcessingError(
            f"Gd: post-contrast NAWM median {m_post} / spread {s_post} must be > 0 "
            "(is the image constant or signed?)"
        )
    ratio_pp = float("nan")
    if pre is not None:
        m_pre = robust_location_scale(pre[nawm])[0]
        if not m_pre > 0:
            raise ProcessingError(f"Gd: pre-contrast NAWM median must be > 0, got {m_pre}")
        ratio_pp = m_post / m_pre
        matched = conditional_median_map(pre, post, brain_mask, n_bins=matching_bins)
        if gain_sigma_mm > 0:
            # regional contrast differences (posterior fossa, coil profiles): a smooth
            # gain fitted on non-enhancing tissue, then the global map refitted on the
            # gain-corrected post-contrast image
            tissue = brain_mask & ~csf
            gain = regional_gain(post, matched, tissue, gain_sigma_mm, vs)
            matched = gain * conditional_median_map(
                pre, post / gain, brain_mask, n_bins=matching_bins
            )
        if reference_max_mm > 0:
            matched = ndi.maximum_filter(matched, footprint=_ellipsoid(reference_max_mm, vs))
        e = (post - matched) / m_post
    else:
        e = post / m_post - 1.0
    ratio = np.where(brain_mask, e, 0.0).astype(np.float32)
    sd = robust_location_scale(ratio[nawm])[1]
    blob = ndi.gaussian_filter(ratio, tuple(blob_sigma_mm / v for v in vs), mode="constant")
    blob = np.where(brain_mask, blob, 0.0).astype(np.float32)
    sd_b = robust_location_scale(blob[nawm])[1]
    if not (sd > 0 and sd_b > 0):
        raise ProcessingError(f"Gd: enhancement map has zero spread in NAWM ({sd}, {sd_b})")
    return EnhancementMap(
        ratio=ratio,
        blob=blob,
        ratio_sd=float(sd),
        blob_sd=float(sd_b),
        nawm=nawm,
        wm=tis.wm,
        gm=tis.gm,
        csf=tis.csf,
        csf_mask=csf,
        tissue_reference=ref_name,
        post_nawm_median=float(m_post),
        post_pre_nawm_ratio=ratio_pp,
        inputs="post+pre" if pre is not None else "post",
    )


# --------------------------------------------------------------------------- main


def regional_gain(
    post: np.ndarray,
    matched: np.ndarray,
    tissue: np.ndarray,
    sigma_mm: float,
    voxel_size_mm: Sequence[float],
    *,
    clip: float = 0.25,
) -> np.ndarray:
    """Smooth multiplicative gain of ``post`` over ``matched``, fitted on non-enhancing tissue.

    ``gain = G * (post / matched) / G * 1`` over the voxels of ``tissue`` whose
    ratio lies within ``clip`` of 1 (normalised Gaussian convolution, sigma
    ``sigma_mm``): enhancing voxels (ratio well above 1) and misregistered
    edges do not pull it. Where less than 5 % of the kernel's weight is
    tissue the gain is 1.

    Parameters
    ----------
    post, matched : numpy.ndarray
        Post-contrast T1 and the pre-contrast T1 mapped onto its intensities
        (:func:`conditional_median_map`), same shape.
    tissue : numpy.ndarray
        bool, the non-CSF brain.
    sigma_mm : float
        Gaussian sigma in mm (> 0).
    voxel_size_mm : sequence of 3 float
        Voxel edge lengths (mm) along array axes 0, 1, 2.
    clip : float
        Ratios outside ``[1 - clip, 1 + clip]`` are left out of the fit.

    Returns
    -------
    numpy.ndarray
        float32 gain (1 = no regional difference), same shape.

    Examples
    --------
    >>> post = np.full((20, 20, 20), 200.0, np.float32)
    >>> post[10:] *= 1.1
    >>> g = regional_gain(post, np.full(post.shape, 200.0, np.float32),
    ...                   np.ones(post.shape, bool), 2.0, (1.0, 1.0, 1.0))
    >>> bool(abs(float(g[2, 10, 10]) - 1.0) < 0.01 and abs(float(g[17, 10, 10]) - 1.1) < 0.01)
    True
    """
    vs = tuple(float(v) for v in voxel_size_mm)
    ratio = np.where(matched > 0, post / np.maximum(matched, 1e-6), 0.0)
    ok = tissue & (matched > 0) & (np.abs(ratio - 1.0) <= clip)
    # the gain is smooth: fitted on blocks of about sigma / 3 (block means), then
    # interpolated back (a 25 mm Gaussian at full resolution took ~3 s per visit)
    block = tuple(max(1, int(sigma_mm / (3.0 * v))) for v in vs)
    shape = ok.shape
    padded = tuple(-(-n // b) * b for n, b in zip(shape, block, strict=True))
    pad = [(0, p - n) for p, n in zip(padded, shape, strict=True)]

    def block_mean(a: np.ndarray) -> np.ndarray:
        a = np.pad(a.astype(np.float32), pad)
        c = a.reshape(padded[0] // block[0], block[0], padded[1] // block[1], block[1],
                      padded[2] // block[2], block[2])  # fmt: skip
        return c.mean(axis=(1, 3, 5))

    sig = tuple(sigma_mm / (v * b) for v, b in zip(vs, block, strict=True))
    den = ndi.gaussian_filter(block_mean(ok), sig, mode="constant")
    num = ndi.gaussian_filter(block_mean(np.where(ok, ratio, 0.0)), sig, mode="constant")
    coarse = np.where(den > 0.05, num / np.maximum(den, 1e-6), 1.0).astype(np.float32)
    # block centres -> voxel centres (linear; constant beyond the outer block centres)
    coords = [
        np.clip((np.arange(n) + 0.5) / b - 0.5, 0, c - 1)
        for n, b, c in zip(shape, block, coarse.shape, strict=True)
    ]
    grid = np.meshgrid(*coords, indexing="ij", sparse=True)
    gain = ndi.map_coordinates(coarse, np.broadcast_arrays(*grid), order=1, mode="nearest")
    return gain.astype(np.float32)


def segment_enhancing(
    post: np.ndarray,
    brain_mask: np.ndarray,
    voxel_size_mm: Sequence[float],
    *,
    pre: np.ndarray | None = None,
    flair: np.ndarray | None = None,
    priors: Mapping[str, np.ndarray] | None = None,
    location_map: np.ndarray | None = None,
    affine: np.ndarray | None = None,
    location_rules: Mapping[str, Any] | None = None,
    min_volume_mm3: float = 3.0,
    blob_sigma_mm: float = 0.7,
    seed_z: float = 4.5,
    seed_z_without_pre: float = 3.5,
    strong_z: float = 9.0,
    grow_z: float = 3.0,
    min_enhancement: float = 0.1,
    flair_support: bool = True,
    flair_min_z: float = 1.5,
    edge_margin_mm: float = 1.0,
    edge_min_depth_mm: float = 4.0,
    csf_max_probability: float = 0.5,
    pituitary_midline_mm: float = 8.0,
    pituitary_depth_mm: float = 12.0,
    ventricle_margin_mm: float = 1.0,
    ventricle_max_fraction: float = 0.3,
    csf_shell_max: float = 0.35,
    shell_mm: float = 2.0,
    cortex_gm_min: float = 0.5,
    cortex_depth_mm: float = 8.0,
    wm_shell_min: float = 0.5,
    vessel_elongation: float = 3.0,
    vessel_max_radius_mm: float = 1.0,
    vessel_min_length_mm: float = 6.0,
    vessel_min_ratio: float = 0.75,
    vessel_bright_max_radius_mm: float = 1.5,
    min_enhancing_mm3: float = 10.0,
    ring_min_core_fraction: float = 0.02,
    matching_bins: int = 128,
    gain_sigma_mm: float = 25.0,
    reference_max_mm: float = 1.0,
    prior_floor: float = 0.2,
    tissue_iterations: int = 25,
) -> GdSegmentation:
    """Segment gadolinium-enhancing lesions of one visit.

    See the module docstring for the method and the rules.

    Parameters
    ----------
    post : numpy.ndarray
        3-D post-contrast T1 (``ce-gadolinium_T1w``) on the FLAIR grid,
        bias-corrected, any intensity unit (> 0 in white matter).
    brain_mask : numpy.ndarray
        3-D bool, same shape; True inside the brain.
    voxel_size_mm : sequence of 3 float
        Voxel edge lengths (mm) along array axes 0, 1, 2.
    pre : numpy.ndarray, optional
        Pre-contrast T1 of the same visit, rigidly co-registered onto the same
        grid and bias-corrected. Without it the enhancement is relative to
        the post-contrast NAWM only.
    flair : numpy.ndarray, optional
        FLAIR (the grid itself): FLAIR support of the ``"contrast"`` rule, the
        CSF test, and the tissue model without ``pre``.
    priors : mapping, optional
        Atlas probabilities on the grid, keys ``"csf"``, ``"gm"``, ``"wm"``
        (values in [0, 1]); tissue mixing proportions and the CSF / cortex rules.
    location_map : numpy.ndarray, optional
        Integer atlas location map on the grid (values of
        :data:`lesionq.core.location.LOCATION_LABELS`: 1 ventricles,
        2 infratentorial, 3 cortex, 4 deep grey matter); ventricle rule,
        pituitary rule and the lesion location classes.
    affine : numpy.ndarray, optional
        4x4 voxel-to-RAS affine: which array axes run left-right and
        inferior-superior (pituitary rule). None: axis 0 left-right, axis 2
        inferior-superior (superior at high indices).
    location_rules : mapping, optional
        Keyword parameters of :func:`~lesionq.core.location.classify_locations`.
    min_volume_mm3 : float
        Lesions smaller than this (after hole filling) are dropped (inclusive rule).
    blob_sigma_mm : float
        Gaussian sigma (mm) of the blob evidence ``B``.
    seed_z : float
        Seeds: ``B / sd_B >= seed_z`` (with ``pre``).
    seed_z_without_pre : float
        The seed level without ``pre``.
    strong_z : float
        Peak ``B / sd_B`` accepted without FLAIR support (>= both seed levels).
    grow_z : float
        Candidate extent: ``E / sd_E >= grow_z``.
    min_enhancement : float
        Seeds also need an enhancement ratio ``E >= min_enhancement``.
    flair_support : bool
        Whether FLAIR hyperintensity may support moderate enhancement.
    flair_min_z : float
        FLAIR support (core minus white-matter shell, FLAIR NAWM SDs) that
        counts for the ``"contrast"`` rule.
    edge_margin_mm : float
        Voxels within this distance of the outside of the brain mask are not eligible.
    edge_min_depth_mm : float
        Rule ``"edge"``: a candidate must reach this deep into the brain.
    csf_max_probability : float
        CSF posterior from which a voxel (also darker than NAWM on the tissue
        reference and the FLAIR) is CSF and not eligible.
    pituitary_midline_mm, pituitary_depth_mm : float
        Rule ``"pituitary"`` (inferior midline at the brain base).
    ventricle_margin_mm, ventricle_max_fraction : float
        Rule ``"choroid_plexus"``: dilation of the atlas ventricles and the
        largest tolerated share of a candidate inside ventricles or CSF.
    csf_shell_max : float
        Rule ``"choroid_plexus"``: largest tolerated CSF share of the shell.
    shell_mm : float
        Thickness (mm) of the shell around a candidate.
    cortex_gm_min, cortex_depth_mm : float
        Rule ``"cortex"``.
    wm_shell_min : float
        Rule ``"location"``: smallest white-matter share of the shell.
    vessel_elongation, vessel_max_radius_mm, vessel_min_length_mm : float
        Rule ``"vessel"`` (tubular; thin and long).
    vessel_min_ratio, vessel_bright_max_radius_mm : float
        Rule ``"vessel"`` (thin and intravascular-bright).
    min_enhancing_mm3 : float
        Rule ``"size"``: smallest enhancing volume of a candidate (inclusive).
    ring_min_core_fraction : float
        Smallest non-enhancing interior core share of a ring lesion.
    matching_bins : int
        Bins of the post-given-pre conditional median (>= 8).
    gain_sigma_mm : float
        With a pre-contrast T1: Gaussian sigma (mm) of the smooth regional gain
        between the matched pre-contrast and the post-contrast T1, fitted on
        non-enhancing tissue (:func:`regional_gain`); 0 = one global mapping.
    reference_max_mm : float
        With a pre-contrast T1: the matched pre-contrast reference of a voxel is
        its maximum within this radius (mm), so a voxel must be brighter than
        every nearby pre-contrast voxel (residual misregistration moves bright
        edges by 1-2 mm); 0 = the voxel itself.
    prior_floor : float
        Added to each atlas prior before renormalising (tissue model).
    tissue_iterations : int
        EM iterations of the tissue model.

    Returns
    -------
    GdSegmentation

    Raises
    ------
    lesionq.errors.InputError
        Wrong dimensionality, dtype, NaN/inf in the brain, empty mask, bad parameters.
    lesionq.errors.GeometryError
        An image, prior or map not on the grid of ``post``.
    lesionq.errors.ProcessingError
        The tissue model or the intensity matching failed.

    See ``tests/core/test_enhancement.py`` for a phantom with every rule at work.
    """
    t0 = time.perf_counter()
    params: dict[str, Any] = dict(
        min_volume_mm3=min_volume_mm3, blob_sigma_mm=blob_sigma_mm, seed_z=seed_z,
        seed_z_without_pre=seed_z_without_pre,
        strong_z=strong_z, grow_z=grow_z, min_enhancement=min_enhancement,
        flair_support=flair_support, flair_min_z=flair_min_z, edge_margin_mm=edge_margin_mm,
        edge_min_depth_mm=edge_min_depth_mm, csf_max_probability=csf_max_probability,
        pituitary_midline_mm=pituitary_midline_mm, pituitary_depth_mm=pituitary_depth_mm,
        ventricle_margin_mm=ventricle_margin_mm, ventricle_max_fraction=ventricle_max_fraction,
        csf_shell_max=csf_shell_max, shell_mm=shell_mm, cortex_gm_min=cortex_gm_min,
        cortex_depth_mm=cortex_depth_mm, wm_shell_min=wm_shell_min,
        vessel_elongation=vessel_elongation, vessel_max_radius_mm=vessel_max_radius_mm,
        vessel_min_length_mm=vessel_min_length_mm, vessel_min_ratio=vessel_min_ratio,
        vessel_bright_max_radius_mm=vessel_bright_max_radius_mm,
        min_enhancing_mm3=min_enhancing_mm3, ring_min_core_fraction=ring_min_core_fraction,
        matching_bins=matching_bins, prior_floor=prior_floor, tissue_iterations=tissue_iterations,
        gain_sigma_mm=gain_sigma_mm, reference_max_mm=reference_max_mm,
    )  # fmt: skip
    _check_params(params)
    vs = _check_voxel_size(voxel_size_mm)
    po = np.asarray(post)
    if po.ndim != 3:
        raise InputError(f"post (post-contrast T1) must be a 3-D array, got shape {po.shape}")
    mask = np.asarray(brain_mask)
    if mask.dtype != bool:
        raise InputError(f"brain_mask must be a bool array, got dtype {mask.dtype}")
    if mask.shape != po.shape:
        raise GeometryError(
            f"brain_mask has shape {mask.shape}, expected the post-contrast shape {po.shape}"
        )
    if not mask.any():
        raise InputError("brain_mask is empty")
    po = _check_image("post (post-contrast T1)", po, po.shape, mask)
    pr = _check_image("pre (pre-contrast T1)", pre, po.shape, mask) if pre is not None else None
    fl = _check_image("flair", flair, po.shape, mask) if flair is not None else None
    pri = None
    if priors is not None:
        missing = [k for k in TISSUES if k not in priors]
        if missing:
            raise InputError(f"priors lacks {missing} (need keys {TISSUES})")
        pri = {}
        for k in TISSUES:
            a = np.asarray(priors[k])
            if a.shape != po.shape:
                raise GeometryError(f"priors[{k!r}] has shape {a.shape}, expected {po.shape}")
            pri[k] = a.astype(np.float32, copy=False)
    loc = None
    if location_map is not None:
        loc = np.asarray(location_map)
        if loc.shape != po.shape:
            raise GeometryError(f"location_map has shape {loc.shape}, expected {po.shape}")
        if not np.issubdtype(loc.dtype, np.integer):
            raise InputError(f"location_map must be an integer label map, got dtype {loc.dtype}")
    if affine is not None and np.shape(affine) != (4, 4):
        raise InputError(f"affine must be 4x4, got shape {np.shape(affine)}")
    lr_axis, si_axis, si_sign = _orientation_axes(affine)

    em = enhancement_map(
        po, mask, vs, pre=pr, flair=fl, priors=pri, blob_sigma_mm=blob_sigma_mm,
        csf_max_probability=csf_max_probability, matching_bins=matching_bins, prior_floor=prior_floor,
        tissue_iterations=tissue_iterations, gain_sigma_mm=gain_sigma_mm,
        reference_max_mm=reference_max_mm,
    )  # fmt: skip
    use_flair = fl is not None and flair_support
    if pr is not None:
        inputs = "post+pre"
    elif fl is not None:
        inputs = "post+flair"
    else:
        inputs = "post"
    flair_z_map = None
    if use_flair:
        fl_s = ndi.gaussian_filter(fl, tuple(blob_sigma_mm / v for v in vs), mode="constant")
        fl_med, fl_sd = robust_location_scale(fl_s[em.nawm])
        if not fl_sd > 0:
            raise ProcessingError(f"Gd: FLAIR NAWM spread must be > 0, got {fl_sd}")
        flair_z_map = ((fl_s - fl_med) / fl_sd).astype(np.float32)

    depth = _depth_mm(mask, vs)
    csf_tissue = em.csf_mask
    eligible = mask & ~csf_tissue & (depth > edge_margin_mm)
    z_e = em.ratio / em.ratio_sd
    z_b = em.blob / em.blob_sd
    seed_level = seed_z if pr is not None else seed_z_without_pre
    seeds = eligible & (z_b >= seed_level) & (em.ratio >= min_enhancement)
    grow = eligible & ((z_e >= grow_z) | seeds)
    cand_lab = _split_candidates(grow, seeds, em.blob)
    seeded = np.arange(1, int(cand_lab.max()) + 1)

    # region maps for the rules
    if loc is not None:
        vent = loc == VENTRICLES
        if ventricle_margin_mm > 0 and vent.any():
            vent = ndi.binary_dilation(vent, _ellipsoid(ventricle_margin_mm, vs))
    else:
        vent = np.zeros(po.shape, dtype=bool)
    csf_like = vent | ((pri["csf"] >= 0.5) if pri is not None else csf_tissue)
    gm_prob = pri["gm"] if pri is not None else em.gm
    wm_hard = mask & (em.wm > 0.5)
    brain_idx = np.nonzero(mask)
    mid_lr = float(np.median(brain_idx[lr_axis])) * vs[lr_axis]
    centre_si = float(np.mean(brain_idx[si_axis])) * vs[si_axis]
    vv = voxel_volume_mm3(vs)
    shell_el = _ellipsoid(shell_mm, vs)
    pad = [int(math.ceil(shell_mm / v)) + 2 for v in vs]
    objs = ndi.find_objects(cand_lab)

    candidates: list[GdCandidate] = []
    accepted_mask = np.zeros(po.shape, dtype=bool)
    enhancing_all = np.zeros(po.shape, dtype=bool)
    nan = float("nan")
    for cid in seeded.tolist():
        sl0 = objs[cid - 1]
        box = tuple(
            slice(max(s.start - p, 0), min(s.stop + p, dim))
            for s, p, dim in zip(sl0, pad, po.shape, strict=True)
        )
        comp = cand_lab[box] == cid
        n_vox = int(comp.sum())
        r_box = em.ratio[box]
        f: dict[str, float] = dict.fromkeys(_LAZY, nan)
        f["peak_ratio"] = float(r_box[comp].max())
        f["mean_ratio"] = float(r_box[comp].mean())
        f["depth_mm"] = dmax = float(depth[box][comp].max())
        pts = np.argwhere(comp)
        cen = pts.mean(axis=0) + [s.start for s in box]
        cen_mm = cen * np.asarray(vs)
        filled = comp
        # rules in order; features computed only as far as they are needed
        if dmax < edge_min_depth_mm:
            reason = "edge"
        elif (
            abs(cen_mm[lr_axis] - mid_lr) <= pituitary_midline_mm
            and (cen_mm[si_axis] - centre_si) * si_sign < 0
            and dmax < pituitary_depth_mm
            and not (loc is not None and float((loc[box][comp] == INFRATENTORIAL).mean()) >= 0.5)
        ):
            reason = "pituitary"
        else:
            filled = _fill_holes(comp)
            shell = ndi.binary_dilation(filled, shell_el) & ~filled & mask[box]
            n_shell = int(shell.sum())
            f["ventricle_fraction"] = float(csf_like[box][filled].mean())
            f["csf_shell_fraction"] = float(csf_tissue[box][shell].mean()) if n_shell else 0.0
            near = ndi.binary_dilation(csf_tissue[box], shell_el)
            f["csf_near_fraction"] = float(near[comp].mean())
            f["wm_shell_fraction"] = float(wm_hard[box][shell].mean()) if n_shell else 0.0
            f["gm_mean"] = float(gm_prob[box][filled].mean())
            if (
                f["ventricle_fraction"] >= ventricle_max_fraction
                or f["csf_shell_fraction"] > csf_shell_max
            ):
                reason = "choroid_plexus"
            elif f["gm_mean"] >= cortex_gm_min and dmax < cortex_depth_mm:
                reason = "cortex"
            elif f["wm_shell_fraction"] < wm_shell_min:
                reason = "location"
            else:
                elong, radius, length = _shape(filled, vs)
                f.update(elongation=elong, radius_mm=radius, length_mm=length)
                b_box = em.blob[box]
                f["peak_blob_z"] = float(b_box[filled].max()) / em.blob_sd
                f["blobness"] = _blobness(b_box, filled, vs)
                if flair_z_map is not None:
                    core = filled & (b_box >= 0.5 * float(b_box[filled].max()))
                    fz_box = flair_z_map[box]
                    ref = shell & wm_hard[box]
                    f_ref = float(np.median(fz_box[ref])) if ref.any() else 0.0
                    f["flair_z"] = float(fz_box[core].mean()) - f_ref
                if (
                    elong >= vessel_elongation
                    or (radius <= vessel_max_radius_mm + 1e-6 and length >= vessel_min_length_mm)
                    or (
                        f["peak_ratio"] >= vessel_min_ratio
                        and _half_max_radius(r_box, comp, f["peak_ratio"], vs)
                        <= vessel_bright_max_radius_mm + 1e-6
                    )
                ):
                    reason = "vessel"
                elif n_vox * vv < min_enhancing_mm3 - 1e-9:
                    reason = "size"
                elif f["peak_blob_z"] < strong_z and not (
                    use_flair and f["flair_z"] >= flair_min_z
                ):
                    reason = "contrast"
                else:
                    reason = "accepted"
        candidates.append(
            GdCandidate(
                label=int(cid),
                n_voxels=n_vox,
                centroid_vox=(float(cen[0]), float(cen[1]), float(cen[2])),
                reason=reason,
                **f,
            )
        )
        if reason == "accepted":
            accepted_mask[box] |= filled
            enhancing_all[box] |= comp

    # lesions: 26-connected components of the accepted (filled) candidates, so that
    # pieces of one lesion split between two seeds are one lesion again; canonical
    # numbering; minimum volume (inclusive)
    min_vox = min_voxels_for_mm3(float(min_volume_mm3), vs)
    labels, n = relabel_canonical(ndi.label(accepted_mask, _FULL)[0], min_voxels=min_vox)
    mask_out = labels > 0
    lesions: list[GdLesion] = []
    loc_classes: dict[int, str] = {}
    if n and loc is not None:
        loc_classes = classify_locations(
            labels, loc.astype(np.int32, copy=False), vs, **dict(location_rules or {})
        )
    for lid, sl in enumerate(ndi.find_objects(labels), start=1):
        if sl is None:
            continue
        les = labels[sl] == lid
        enh = les & enhancing_all[sl]
        if not enh.any():
            enh = les
        r_sl = em.ratio[sl]
        rim_mean = float(r_sl[enh].mean())
        # ring: a non-enhancing core inside the lesion (not on its boundary) where the
        # smoothed enhancement is below half the rim level (90th percentile)
        b_sl = em.blob[sl]
        rim_level = float(np.percentile(b_sl[les], 90))
        interior = ndi.binary_erosion(les)
        core = interior & (b_sl < 0.5 * rim_level)
        core_frac = float(core.sum() / les.sum())
        ring = bool(core_frac >= ring_min_core_fraction and rim_level > 0)
        elong, radius, length = _shape(les, vs)
        cen = np.argwhere(les).mean(axis=0) + [s.start for s in sl]
        fz = float("nan")
        if flair_z_map is not None:
            fz = float(flair_z_map[sl][enh].mean())
        lesions.append(
            GdLesion(
                lesion_id=lid,
                n_voxels=int(les.sum()),
                volume_mm3=float(les.sum() * vv),
                centroid_vox=(float(cen[0]), float(cen[1]), float(cen[2])),
                peak_ratio=float(r_sl[enh].max()),
                mean_ratio=rim_mean,
                peak_blob_z=float(z_b[sl][les].max()),
                flair_z=fz,
                elongation=elong,
                radius_mm=radius,
                length_mm=length,
                core_fraction=core_frac,
                ring=ring,
                location=loc_classes.get(lid, "n/a"),
                confidence=gd_confidence(
                    float(z_b[sl][les].max()),
                    fz,
                    elong,
                    seed_z=seed_z if pr is not None else seed_z_without_pre,
                    strong_z=strong_z,
                    flair_min_z=flair_min_z,
                    vessel_elongation=vessel_elongation,
                ),
            )
        )
    used = ["post"]
    if pr is not None:
        used.append("pre")
    if fl is not None:
        used.append("flair")
    if pri is not None:
        used.append("priors")
    if loc is not None:
        used.append("location")
    seconds = time.perf_counter() - t0
    counts = {r: sum(c.reason == r for c in candidates) for r in GD_REASONS}
    log.info(
        "segment_enhancing: %d candidates %s, %d Gd+ lesions, %.1f mm3, inputs %s, %.1f s",
        len(candidates), counts, n, float(mask_out.sum() * vv), inputs, seconds,
    )  # fmt: skip
    return GdSegmentation(
        mask=mask_out,
        labels=labels,
        lesions=tuple(lesions),
        candidates=tuple(candidates),
        enhancement=em.ratio,
        inputs=inputs,
        inputs_used=tuple(used),
        ratio_sd=em.ratio_sd,
        blob_sd=em.blob_sd,
        post_pre_nawm_ratio=em.post_pre_nawm_ratio,
        parameters=params,
        seconds=seconds,
    )
