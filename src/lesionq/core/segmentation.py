"""T2/FLAIR hyperintense lesion segmentation (cross-sectional, one visit).

Method
------
An unsupervised, rule-based outlier detector built on a tissue model of the
visit itself; every threshold is in units of the image's own normal-appearing
tissue noise, so nothing depends on the scanner's intensity scale.

1. **Tissue model** (:func:`lesionq.core.tissue.estimate_tissues`): a
   CSF/GM/WM Gaussian mixture on the T1 (or, without T1, on the FLAIR, fitted
   a second time with the FLAIR clamped at its brightest class mean so that
   hyperintense lesions are not taken for fluid), with atlas priors as
   voxel-wise mixing proportions when they are given.
2. **Reference statistics**: median and robust SD (1.4826 MAD) of the FLAIR
   in white matter (posterior > 0.5) and in grey matter. Optionally the
   white-matter level is made local (normalised Gaussian convolution over
   white matter, ``background_sigma_mm``) to absorb residual bias field.
3. **Evidence maps**. ``z_wm``: FLAIR in SDs above normal white matter.
   ``z_context``: FLAIR in SDs above the tissue mixture expected in a
   ``context_sigma_mm`` neighbourhood (the GM/WM posteriors, smoothed), so a
   voxel among grey matter must be bright *for grey matter*; this is what
   keeps the cortex ribbon and the deep grey nuclei (brighter than white
   matter on FLAIR) from becoming lesions.
4. **Candidates**: 26-connected components (any size) of
   ``z_context >= candidate_z`` among eligible voxels: more than
   ``edge_margin_mm`` inside the brain mask (skull-stripping residue and
   partial volume live at its edge) and not CSF (CSF posterior
   ``>= csf_max_probability`` *and* FLAIR darker than white matter).
5. **Lesion-level rules**. A candidate is accepted when (a) its peak
   ``z_context >= seed_z``; (b) with a T2, its mean T2 context z-score is
   ``>= t2_min_z`` (a T2 lesion is hyperintense on T2 as well; FLAIR-only
   brightness such as the normal corticospinal tract signal or flow
   artefacts is not); (c) at least ``wm_shell_min`` of the non-CSF voxels
   within ``wm_shell_mm`` around it are white matter (lesions sit in or
   against white matter; cortical and deep-grey hyperintensities are wrapped
   in GM; CSF is left out so that periventricular and confluent lesions,
   half wrapped in ventricle, are judged by the tissue they do touch; without a
   T1, a shell voxel counts as white matter only where the atlas WM prior is
   at least ``wm_prior_min`` as well, since a FLAIR-only mixture can take the
   cortex for white matter; with ``shell_lesion``, FLAIR-bright shell voxels,
   ``z_wm >= grow_z``, count as white matter where that prior allows it: the
   tissue model calls crowded lesion tissue grey matter); (d) a candidate lying mostly (``csf_near_fraction``) within
   ``csf_near_mm`` of CSF needs a stronger peak, ``csf_near_seed_z``: the
   ependymal lining, periventricular caps, septum pellucidum and choroid
   plexus are bright on FLAIR in healthy brains. Requiring CSF to be dark on
   FLAIR keeps T1 black holes (CSF-dark on T1) from counting as CSF. With
   atlas priors, a candidate must also lie in the registered atlas brain (mean
   WM + GM + CSF prior ``>= atlas_brain_min``): skull-stripping residue such
   as the pituitary is FLAIR-bright.
6. **Delineation and probability**: accepted candidates are grown by at
   most ``grow_mm`` into voxels whose FLAIR is ``grow_z`` SDs above
   white matter. ``probability`` is a logistic function of
   ``max(z_wm, z_context)`` centred on ``grow_z`` (slope
   ``1/probability_scale_z``) inside the grown domain, 0 elsewhere;
   ``mask = probability >= threshold``. On thick-slice (2D) acquisitions
   (largest voxel edge ``>= partial_volume_slice_mm``) the lesions then gain
   one voxel along the slice axis, whose probability is the same ramp centred on
   ``partial_volume_z`` instead of ``grow_z``: a slab holding a lesion's edge
   averages lesion and white matter. Last, components smaller than
   ``min_volume_mm3`` are removed, and, with a location map among the priors,
   components lying mostly in the posterior fossa that are smaller than
   ``infratentorial_min_mm3`` (:func:`drop_small_infratentorial`).

Conventions: arrays are indexed (i, j, k) like nibabel's data; voxel sizes
in mm along those axes; connectivity 26 (3x3x3) everywhere; volumes go
through :mod:`lesionq.core.units`.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from scipy import ndimage as ndi

from ..errors import GeometryError, InputError, ProcessingError
from .chunked import gaussian_filter_slabs
from .geometry import check_image as _check_image
from .geometry import check_voxel_size as _check_voxel_size
from .geometry import ellipsoid_footprint as _ellipsoid
from .geometry import inner_distance_mm as _inner_distance_mm
from .location import INFRATENTORIAL, INFRATENTORIAL_MIN_FRACTION
from .normalise import robust_location_scale
from .tissue import TISSUES, estimate_tissues
from .units import min_voxels_for_mm3, voxel_volume_mm3

__all__ = [
    "EvidenceMaps",
    "LesionCandidate",
    "SegmentationResult",
    "drop_small_infratentorial",
    "evidence_maps",
    "segment_lesions",
]

log = logging.getLogger(__name__)

_FULL = np.ones((3, 3, 3), dtype=bool)


@dataclass(frozen=True)
class LesionCandidate:
    """One candidate hyperintensity and the lesion-level decision on it.

    Attributes
    ----------
    label : int
        1-based candidate number (order of :func:`scipy.ndimage.label`).
    n_voxels : int
        Voxels in the candidate core (before growing).
    volume_mm3 : float
        Core volume in mm3.
    centroid_vox : tuple of float
        Centre of mass in voxel indices (i, j, k).
    peak_z : float
        Highest ``z_context`` in the core.
    t2_z : float
        Mean T2 context z-score over the core (NaN without T2).
    wm_shell_fraction : float
        Fraction of white-matter voxels within ``wm_shell_mm`` around the core
        (NaN when the contrast or atlas-brain rule already failed).
    csf_adjacent_fraction : float
        Fraction of core voxels within ``csf_near_mm`` of CSF (NaN when the
        contrast or atlas-brain rule already failed).
    accepted : bool
        Whether it became (part of) a lesion.
    reason : str
        ``"accepted"`` or the first rule it failed: ``"contrast"``, ``"outside"``,
        ``"t2"``, ``"location"``, ``"csf"``; ``"infratentorial"`` when it was
        accepted but its lesion is a small one in the posterior fossa
        (``infratentorial_min_mm3``).
    """

    label: int
    n_voxels: int
    volume_mm3: float
    centroid_vox: tuple[float, float, float]
    peak_z: float
    t2_z: float
    wm_shell_fraction: float
    csf_adjacent_fraction: float
    accepted: bool
    reason: str


@dataclass(frozen=True)
class SegmentationResult:
    """Output of :func:`segment_lesions`.

    Attributes
    ----------
    probability : numpy.ndarray
        float32 in [0, 1], the FLAIR grid.
    mask : numpy.ndarray
        bool, ``probability >= threshold`` minus components < ``min_volume_mm3``.
    z_wm : numpy.ndarray
        float32 FLAIR z-score relative to normal white matter (0 outside the brain).
    candidates : tuple of LesionCandidate
        Every candidate and its decision (for QC and review).
    nawm_median, nawm_sd, gm_median, gm_sd : float
        FLAIR reference statistics, input units.
    inputs_used : tuple of str
        Which optional inputs took part: subset of ``("t1", "t2", "priors")``.
    parameters : Mapping[str, Any]
        The method parameters used (the ``[segmentation]`` protocol keys).
    seconds : float
        Wall time of the call.
    """

    probability: np.ndarray
    mask: np.ndarray
    z_wm: np.ndarray
    candidates: tuple[LesionCandidate, ...]
    nawm_median: float
    nawm_sd: float
    gm_median: float
    gm_sd: float
    inputs_used: tuple[str, ...]
    parameters: Mapping[str, Any] = field(repr=False)
    seconds: float = 0.0

    @property
    def n_lesions(self) -> int:
        """Number of 26-connected components in :attr:`mask`."""
        return int(ndi.label(self.mask, _FULL)[1])


# --------------------------------------------------------------------------- checks


def _check_params(p: Mapping[str, Any]) -> None:
    positive = ("context_sigma_mm", "wm_shell_mm", "probability_scale_z", "csf_near_mm")
    non_negative = (
        "grow_mm",
        "edge_margin_mm",
        "background_sigma_mm",
        "prior_floor",
        "partial_volume_slice_mm",
        "infratentorial_min_mm3",
    )
    for k in positive:
        if not (isinstance(p[k], int | float) and math.isfinite(p[k]) and p[k] > 0):
            raise InputError(f"segmentation parameter {k} must be a number > 0, got {p[k]!r}")
    for k in non_negative:
        if not (isinstance(p[k], int | float) and math.isfinite(p[k]) and p[k] >= 0):
            raise InputError(f"segmentation parameter {k} must be a number >= 0, got {p[k]!r}")
    frac = p["infratentorial_min_fraction"]
    if not (isinstance(frac, int | float) and 0.0 < frac <= 1.0):
        raise InputError(
            f"segmentation parameter infratentorial_min_fraction must be in (0, 1], got {frac!r}"
        )
    if not 0.0 < p["threshold"] < 1.0:
        raise InputError(
            f"segmentation parameter threshold must be in (0, 1), got {p['threshold']!r}"
        )
    for k in (
        "csf_max_probability",
        "wm_shell_min",
        "csf_near_fraction",
        "wm_prior_min",
        "atlas_brain_min",
    ):
        if not 0.0 <= p[k] <= 1.0:
            raise InputError(f"segmentation parameter {k} must be in [0, 1], got {p[k]!r}")
    for k in ("candidate_z", "seed_z", "grow_z", "t2_min_z", "csf_near_seed_z", "partial_volume_z"):
        if not (isinstance(p[k], int | float) and math.isfinite(p[k])):
            raise InputError(f"segmentation parameter {k} must be a finite number, got {p[k]!r}")
    if p["seed_z"] < p["candidate_z"]:
        raise InputError(
            f"segmentation parameters: seed_z ({p['seed_z']}) must be >= candidate_z "
            f"({p['candidate_z']})"
        )
    if p["min_volume_mm3"] < 0 or not math.isfinite(p["min_volume_mm3"]):
        raise InputError(
            f"min_volume_mm3 must be a finite number >= 0, got {p['min_volume_mm3']!r}"
        )
    if not isinstance(p["shell_lesion"], bool):
        raise InputError(
            f"segmentation parameter shell_lesion must be a bool, got {p['shell_lesion']!r}"
        )
    if not (isinstance(p["tissue_iterations"], int) and p["tissue_iterations"] >= 1):
        raise InputError(f"tissue_iterations must be an int >= 1, got {p['tissue_iterations']!r}")


# --------------------------------------------------------------------------- helpers


def _sigma_vox(sigma_mm: float, vs: Sequence[float]) -> tuple[float, ...]:
    return tuple(sigma_mm / v for v in vs)


def _smooth(a: np.ndarray, sigma_mm: float, vs: Sequence[float], n_threads: int = 1) -> np.ndarray:
    """Gaussian smoothing (sigma in mm, zero outside the grid) on ``n_threads`` threads.

    With more than one thread the volume goes through the dask.array twin
    :func:`lesionq.core.chunked.gaussian_filter_slabs` (bit-identical to scipy's;
    slabs without halo, since the local-background kernel is 40 voxels wide).
    """
    a32 = a.astype(np.float32, copy=False)
    sig = _sigma_vox(sigma_mm, vs)
    if n_threads <= 1:
        return ndi.gaussian_filter(a32, sig, mode="constant")
    return gaussian_filter_slabs(a32, sig, num_workers=n_threads, mode="constant")


def _local_offset(
    img: np.ndarray,
    ref: np.ndarray,
    median: float,
    sd: float,
    sigma_mm: float,
    vs: Sequence[float],
    n_threads: int = 1,
) -> np.ndarray:
    """Local reference-tissue level minus the global median (normalised convolution)."""
    ok = ref & (np.abs(img - median) < 3.0 * sd)
    den = _smooth(ok.astype(np.float32), sigma_mm, vs, n_threads)
    num = _smooth(np.where(ok, img, 0.0).astype(np.float32), sigma_mm, vs, n_threads)
    local = num / np.maximum(den, 1e-6)
    return np.where(den > 0.05, local - median, 0.0).astype(np.float32)


def _context_z(
    img: np.ndarray,
    w_wm: np.ndarray,
    w_gm: np.ndarray,
    stats: tuple[float, float, float, float],
) -> np.ndarray:
    mw, sw, mg, sg = stats
    mean = w_wm * mw + w_gm * mg
    second = w_wm * (sw**2 + mw**2) + w_gm * (sg**2 + mg**2)
    var = np.maximum(second - mean**2, 1e-12)
    return ((img - mean) / np.sqrt(var)).astype(np.float32)


def _shell_fraction(
    labels: np.ndarray,
    n: int,
    target: np.ndarray,
    shell_mm: float,
    vs: Sequence[float],
    exclude: np.ndarray | None = None,
) -> np.ndarray:
    """Fraction of ``target`` voxels within ``shell_mm`` around each labelled component.

    Voxels of ``exclude`` are left out of the shell (neither counted nor in the
    denominator); a component whose shell is all excluded gets 0.
    """
    pad = [int(math.ceil(shell_mm / v)) for v in vs]
    out = np.zeros(n, dtype=np.float64)
    for i, sl in enumerate(ndi.find_objects(labels)):
        if sl is None:
            continue
        bb = tuple(
            slice(max(s.start - p, 0), min(s.stop + p, dim))
            for s, p, dim in zip(sl, pad, labels.shape, strict=True)
        )
        comp = labels[bb] == i + 1
        d = ndi.distance_transform_edt(~comp, sampling=vs)
        shell = (d <= shell_mm + 1e-6) & ~comp
        if exclude is not None:
            shell &= ~exclude[bb]
        out[i] = float(target[bb][shell].mean()) if shell.any() else 0.0
    return out


@dataclass(frozen=True)
class EvidenceMaps:
    """Voxel-wise evidence of :func:`evidence_maps` (all float32, FLAIR grid, 0 outside the brain).

    Attributes
    ----------
    z_wm : numpy.ndarray
        FLAIR z-score relative to normal white matter (median, 1.4826 MAD).
    z_context : numpy.ndarray
        FLAIR z-score relative to the WM/GM mixture of the voxel's neighbourhood.
    t2_context : numpy.ndarray or None
        The same for the T2 (None without T2).
    wm, csf : numpy.ndarray
        Tissue-model posteriors.
    stats : tuple of 4 float
        FLAIR ``(wm_median, wm_sd, gm_median, gm_sd)`` in input units.
    """

    z_wm: np.ndarray
    z_context: np.ndarray
    t2_context: np.ndarray | None
    wm: np.ndarray
    csf: np.ndarray
    stats: tuple[float, float, float, float]


def evidence_maps(
    flair: np.ndarray,
    brain_mask: np.ndarray,
    voxel_size_mm: Sequence[float],
    *,
    t1: np.ndarray | None = None,
    t2: np.ndarray | None = None,
    priors: Mapping[str, np.ndarray] | None = None,
    context_sigma_mm: float = 2.0,
    background_sigma_mm: float = 0.0,
    prior_floor: float = 0.2,
    tissue_iterations: int = 25,
    n_threads: int = 1,
) -> EvidenceMaps:
    """Tissue model and voxel-wise FLAIR (and T2) evidence maps (steps 1-3 of the method).

    Parameters are those of :func:`segment_lesions`, which validates them; this
    function assumes valid, same-grid float inputs and a bool brain mask.
    ``n_threads > 1`` runs the Gaussian smoothing (context and local background)
    chunked through dask.array on that many threads; the result is identical.

    Returns
    -------
    EvidenceMaps

    Raises
    ------
    lesionq.errors.ProcessingError
        Less than 1 % of the brain (or 100 voxels) is white or grey matter, or
        a reference tissue has zero spread.
    """
    vs = tuple(voxel_size_mm)
    if t1 is not None:
        tissues = estimate_tissues(
            [t1],
            brain_mask,
            primary="t1",
            priors=priors,
            prior_floor=prior_floor,
            n_iterations=tissue_iterations,
        )
    else:
        # FLAIR alone: lesions are the image's brightest outliers, and a Gaussian mixture
        # hands far outliers to its broadest class, which on FLAIR is CSF (heterogeneous
        # through flow and partial volume): lesion voxels came out fluid, their context
        # and shells wrong. So the model is fitted again on the FLAIR clamped at its
        # brightest class mean: a hyperintense voxel counts as that tissue, never as
        # fluid (measured on sub-cs07 without T1: lesion F1 0.33 -> 0.54, see
        # benchmarks/results/segmentation.md). z-scores still use the unclamped FLAIR.
        first = estimate_tissues(
            [flair],
            brain_mask,
            primary="flair",
            priors=priors,
            prior_floor=prior_floor,
            n_iterations=tissue_iterations,
        )
        tissues = estimate_tissues(
            [np.minimum(flair, np.float32(np.max(first.means[:, 0])))],
            brain_mask,
            primary="flair",
            priors=priors,
            prior_floor=prior_floor,
            n_iterations=tissue_iterations,
        )
    wm, gm, csf = tissues.wm, tissues.gm, tissues.csf
    hard_wm = brain_mask & (wm > 0.5)
    hard_gm = brain_mask & (gm > 0.5)
    n_min = max(100, int(0.01 * brain_mask.sum()))
    if hard_wm.sum() < n_min or hard_gm.sum() < n_min:
        raise ProcessingError(
            f"tissue model found too little white ({int(hard_wm.sum())} voxels) or grey "
            f"({int(hard_gm.sum())}) matter (need >= {n_min}); check the brain mask and inputs"
        )

    def stats_for(img: np.ndarray) -> tuple[tuple[float, float, float, float], np.ndarray]:
        mw, sw = robust_location_scale(img[hard_wm])
        mg, sg = robust_location_scale(img[hard_gm])
        if not (sw > 0 and sg > 0):
            raise ProcessingError(
                f"reference tissue has zero spread (WM sd {sw}, GM sd {sg}); is the image constant?"
            )
        corrected = img
        if background_sigma_mm > 0:
            # local WM level (residual bias field) removed, then the statistics redone
            corrected = img - _local_offset(
                img, hard_wm, mw, sw, background_sigma_mm, vs, n_threads
            )
            mw, sw = robust_location_scale(corrected[hard_wm])
            mg, sg = robust_location_scale(corrected[hard_gm])
        return (mw, sw, mg, sg), corrected

    stats, fl = stats_for(flair)
    z_wm = np.where(brain_mask, (fl - stats[0]) / stats[1], 0.0).astype(np.float32)
    # tissue context: WM/GM posteriors smoothed over a context_sigma_mm neighbourhood
    w_wm = _smooth(np.where(brain_mask, wm, 0.0), context_sigma_mm, vs, n_threads)
    w_gm = _smooth(np.where(brain_mask, gm, 0.0), context_sigma_mm, vs, n_threads)
    tot = w_wm + w_gm
    w_wm = np.where(tot > 1e-3, w_wm / np.maximum(tot, 1e-6), 1.0)
    w_gm = np.where(tot > 1e-3, w_gm / np.maximum(tot, 1e-6), 0.0)
    z_ctx = np.where(brain_mask, _context_z(fl, w_wm, w_gm, stats), 0.0).astype(np.float32)
    t2_ctx = None
    if t2 is not None:
        stats2, t2c = stats_for(t2)
        t2_ctx = np.where(brain_mask, _context_z(t2c, w_wm, w_gm, stats2), 0.0).astype(np.float32)
    return EvidenceMaps(z_wm=z_wm, z_context=z_ctx, t2_context=t2_ctx, wm=wm, csf=csf, stats=stats)


def drop_small_infratentorial(
    mask: np.ndarray,
    location: np.ndarray,
    voxel_size_mm: Sequence[float],
    min_volume_mm3: float,
    min_fraction: float = INFRATENTORIAL_MIN_FRACTION,
) -> np.ndarray:
    """Remove small lesions of the posterior fossa from a lesion mask.

    A 26-connected component of ``mask`` with at least ``min_fraction`` of its
    voxels in the infratentorial region of ``location`` (brainstem + cerebellum,
    :data:`lesionq.core.location.INFRATENTORIAL`), i.e. a lesion that the lesion
    table classes as infratentorial, is removed when its volume is below
    ``min_volume_mm3``. On FLAIR the posterior fossa has small normal
    hyperintensities (corticospinal tracts, flow and pulsation artefacts near the
    fourth ventricle and basilar artery), and FLAIR is the weaker contrast there
    (MAGNIMS consensus, Filippi et al., Lancet Neurol 2016): on the 7 dev scans all
    7 infratentorial detections under 20 mm3 were false (4-15 mm3, 3 subjects,
    3 sources), and the 3 true ones were 46-462 mm3.

    Parameters
    ----------
    mask : numpy.ndarray
        3-D bool lesion mask.
    location : numpy.ndarray
        Location map on the same grid (integer labels).
    voxel_size_mm : sequence of 3 float
        Voxel edge lengths in mm along the array axes.
    min_volume_mm3 : float
        Smallest infratentorial lesion kept, mm3 (inclusive); 0 keeps all.
    min_fraction : float in (0, 1]
        Share of a component's voxels in the infratentorial region (inclusive)
        from which it counts as infratentorial: the protocol's
        ``[location] infratentorial_min_fraction``, so that this rule and the
        lesion table's location class agree.

    Returns
    -------
    numpy.ndarray
        The mask without those components (a new bool array).
    """
    if not (isinstance(min_fraction, int | float) and 0 < min_fraction <= 1):
        raise InputError(f"min_fraction must be in (0, 1], got {min_fraction!r}")
    out = np.asarray(mask, dtype=bool).copy()
    if min_volume_mm3 <= 0 or not out.any():
        return out
    infra = np.asarray(location) == INFRATENTORIAL
    lab, n = ndi.label(out, _FULL)
    sizes = np.bincount(lab.ravel(), minlength=n + 1)
    in_infra = np.bincount(lab.ravel(), weights=infra.ravel().astype(np.float64), minlength=n + 1)
    small = sizes * voxel_volume_mm3(voxel_size_mm) < min_volume_mm3 - 1e-9
    drop = small & (in_infra >= min_fraction * sizes - 1e-9)
    drop[0] = False
    out[drop[lab]] = False
    return out


# --------------------------------------------------------------------------- main


def segment_lesions(
    flair: np.ndarray,
    brain_mask: np.ndarray,
    voxel_size_mm: Sequence[float],
    *,
    t1: np.ndarray | None = None,
    t2: np.ndarray | None = None,
    priors: Mapping[str, np.ndarray] | None = None,
    threshold: float = 0.5,
    min_volume_mm3: float = 3.0,
    candidate_z: float = 3.0,
    seed_z: float = 4.0,
    grow_z: float = 2.5,
    grow_mm: float = 1.0,
    context_sigma_mm: float = 2.0,
    edge_margin_mm: float = 2.0,
    csf_max_probability: float = 0.5,
    wm_shell_mm: float = 3.0,
    wm_shell_min: float = 0.4,
    t2_min_z: float = 1.5,
    background_sigma_mm: float = 0.0,
    probability_scale_z: float = 0.5,
    prior_floor: float = 0.2,
    tissue_iterations: int = 25,
    csf_near_mm: float = 2.0,
    csf_near_fraction: float = 0.5,
    csf_near_seed_z: float = 7.0,
    wm_prior_min: float = 0.0,
    shell_lesion: bool = False,
    partial_volume_slice_mm: float = 0.0,
    partial_volume_z: float = 1.0,
    atlas_brain_min: float = 0.0,
    infratentorial_min_mm3: float = 0.0,
    infratentorial_min_fraction: float = INFRATENTORIAL_MIN_FRACTION,
    n_threads: int = 1,
) -> SegmentationResult:
    """Segment T2/FLAIR hyperintense (MS) lesions of one visit.

    See the module docstring for the method. All intensity thresholds are
    z-scores relative to the visit's own normal tissue.

    Parameters
    ----------
    flair : numpy.ndarray
        3-D FLAIR, bias-corrected, any intensity unit.
    brain_mask : numpy.ndarray
        3-D bool, same shape, True inside the brain.
    voxel_size_mm : sequence of 3 float
        Voxel edge lengths in mm along array axes 0, 1, 2.
    t1, t2 : numpy.ndarray, optional
        T1- and T2-weighted images resampled onto the FLAIR grid (bias-corrected).
        The T1 drives the tissue model (else the FLAIR does); the T2 adds the
        T2-hyperintensity rule.
    priors : mapping, optional
        Atlas tissue probabilities on the FLAIR grid, keys ``"csf"``, ``"gm"``,
        ``"wm"``, values in [0, 1]; used as tissue mixing proportions
        (misalignment of a few mm is tolerated, see ``prior_floor``).
    threshold : float
        Probability threshold of the mask, in (0, 1).
    min_volume_mm3 : float
        Components smaller than this are removed (inclusive rule of
        :func:`lesionq.core.units.min_voxels_for_mm3`), after growing.
    candidate_z : float
        ``z_context`` defining candidate cores.
    seed_z : float
        Minimum peak ``z_context`` of an accepted candidate (>= ``candidate_z``).
    grow_z : float
        ``z_wm`` (and probability 0.5 point) of the delineation around accepted cores.
    grow_mm : float
        Maximum growth distance from an accepted core, mm.
    context_sigma_mm : float
        Gaussian sigma (mm) of the tissue neighbourhood for ``z_context``.
    edge_margin_mm : float
        Voxels closer than this to the outside of the brain mask are not eligible.
    csf_max_probability : float
        Voxels with a CSF posterior at or above this are not eligible.
    wm_shell_mm : float
        Thickness (mm) of the shell around a candidate used by the location rule.
    wm_shell_min : float
        Minimum white-matter fraction of that shell.
    t2_min_z : float
        Minimum mean T2 context z-score of a candidate (ignored without ``t2``).
    background_sigma_mm : float
        Gaussian sigma (mm) of the local white-matter reference; 0 = global.
    probability_scale_z : float
        Logistic scale (z units) of the probability around ``grow_z``.
    prior_floor : float
        Added to each prior before renormalising (trust in the atlas).
    tissue_iterations : int
        EM iterations of the tissue model.
    csf_near_mm : float
        Distance (mm) from CSF within which a core voxel counts as CSF-adjacent.
    csf_near_fraction : float
        A candidate with at least this fraction of CSF-adjacent core voxels ...
    csf_near_seed_z : float
        ... needs a peak ``z_context`` of at least this (ependymal lining,
        frontal/occipital caps, septum and choroid plexus are bright on FLAIR).
    wm_prior_min : float
        Without a T1 only: a shell voxel counts as white matter for the location
        rule only where the atlas WM prior is at least this (0 = the tissue
        model alone). With the FLAIR as its only contrast the mixture cannot
        tell cortex from white matter on some acquisitions (raw 2D FLAIR:
        cortical false lesions with WM posterior 0.99 and atlas GM prior 0.6-0.7).
        With ``shell_lesion`` it also bounds where lesion tissue counts as white
        matter, with or without a T1.
    shell_lesion : bool
        Location rule: count FLAIR-hyperintense shell voxels (``z_wm >= grow_z``)
        as white matter, where the atlas WM prior is at least ``wm_prior_min``
        (when priors are given). Lesion tissue lies in white matter, but where
        lesions crowd (heavy loads) the tissue model calls it grey matter: T1-dark
        on a T1, bright like grey matter on a FLAIR; then the lesions between them
        fail the rule (measured on MSLesSeg sub-P39, 73 mL: 8 true lesions of
        50-300 mm3 rejected by location, lesion F1 0.46 -> 0.57 with this).
    partial_volume_slice_mm : float
        Thick-slice (2D) acquisitions: when the largest voxel edge is at least this
        (mm; 0 = never), the delineated lesions gain one voxel along that (slice)
        axis, among eligible voxels, wherever ``max(z_wm, z_context) >= partial_volume_z``.
        A voxel of a 4 mm slab that holds the edge of a lesion averages lesion and
        white matter, so its contrast is a fraction of the lesion's: ``grow_z`` misses
        it. In-plane, where voxels are small, there is no such rim (on raw 0.7 x 0.7 x
        4 mm Ljubljana scans a rim in every direction doubled the lesion volume).
    partial_volume_z : float
        Evidence (z) of that rim, the centre of its probability ramp.
    atlas_brain_min : float
        With priors: a candidate whose mean atlas brain probability (WM + GM +
        CSF prior) is below this lies outside the registered atlas brain and is
        rejected as ``"outside"`` (0 = off): skull-stripping residue such as the
        pituitary and cavernous sinus, bright on FLAIR (measured on MSLesSeg
        sub-P14 ses-03: a 1.4 mL false lesion at mean 0.01; every truth lesion of
        the 7 dev scans lies at >= 0.99).
    infratentorial_min_mm3 : float
        With a location map in ``priors`` (key ``"location"``,
        :data:`lesionq.core.location.LOCATION_LABELS`): lesions lying mostly in the
        infratentorial region (brainstem + cerebellum) are kept only from this
        volume (mm3) up; 0 = off. See :func:`drop_small_infratentorial`.
    infratentorial_min_fraction : float in (0, 1]
        The share of voxels that makes a lesion infratentorial for that rule; the
        visit step passes the protocol's ``[location] infratentorial_min_fraction``
        (one value for this rule and the lesion table's location class).
    n_threads : int
        Threads for the per-voxel smoothing (dask.array chunks when > 1); the
        result does not depend on it.

    Returns
    -------
    SegmentationResult

    Raises
    ------
    lesionq.errors.InputError
        Wrong shapes/dtypes, NaN/inf in the brain, empty mask, invalid parameters.
    lesionq.errors.GeometryError
        An optional image or prior is not on the FLAIR grid.
    lesionq.errors.ProcessingError
        The tissue model failed (e.g. no white matter found).
    """
    t0 = time.perf_counter()
    params = dict(
        threshold=threshold, min_volume_mm3=min_volume_mm3, candidate_z=candidate_z,
        seed_z=seed_z, grow_z=grow_z, grow_mm=grow_mm, context_sigma_mm=context_sigma_mm,
        edge_margin_mm=edge_margin_mm, csf_max_probability=csf_max_probability,
        wm_shell_mm=wm_shell_mm, wm_shell_min=wm_shell_min, t2_min_z=t2_min_z,
        background_sigma_mm=background_sigma_mm, probability_scale_z=probability_scale_z,
        prior_floor=prior_floor, tissue_iterations=tissue_iterations,
        csf_near_mm=csf_near_mm, csf_near_fraction=csf_near_fraction,
        csf_near_seed_z=csf_near_seed_z, wm_prior_min=wm_prior_min, shell_lesion=shell_lesion,
        partial_volume_slice_mm=partial_volume_slice_mm, partial_volume_z=partial_volume_z,
        atlas_brain_min=atlas_brain_min, infratentorial_min_mm3=infratentorial_min_mm3,
        infratentorial_min_fraction=infratentorial_min_fraction,
    )  # fmt: skip
    _check_params(params)
    if not (isinstance(n_threads, int) and n_threads >= 1):
        raise InputError(f"n_threads must be an int >= 1, got {n_threads!r}")
    vs = _check_voxel_size(voxel_size_mm)
    fl = np.asarray(flair)
    if fl.ndim != 3:
        raise InputError(f"flair must be a 3-D array, got shape {fl.shape}")
    mask_in = np.asarray(brain_mask)
    if mask_in.dtype != bool:
        raise InputError(f"brain_mask must be a bool array, got dtype {mask_in.dtype}")
    if mask_in.shape != fl.shape:
        raise GeometryError(
            f"brain_mask has shape {mask_in.shape}, expected the FLAIR shape {fl.shape}"
        )
    if not mask_in.any():
        raise InputError("brain_mask is empty")
    fl = _check_image("flair", fl, fl.shape, mask_in)
    t1a = _check_image("t1", t1, fl.shape, mask_in) if t1 is not None else None
    t2a = _check_image("t2", t2, fl.shape, mask_in) if t2 is not None else None
    if priors is not None:
        missing = [k for k in TISSUES if k not in priors]
        if missing:
            raise InputError(f"priors lacks {missing} (need keys {TISSUES})")
        for k in (*TISSUES, "location") if "location" in priors else TISSUES:
            if np.shape(priors[k]) != fl.shape:
                raise GeometryError(
                    f"priors[{k!r}] has shape {np.shape(priors[k])}, expected {fl.shape}"
                )

    ev = evidence_maps(
        fl, mask_in, vs, t1=t1a, t2=t2a, priors=priors, context_sigma_mm=context_sigma_mm,
        background_sigma_mm=background_sigma_mm, prior_floor=prior_floor,
        tissue_iterations=tissue_iterations, n_threads=n_threads,
    )  # fmt: skip
    min_vox = min_voxels_for_mm3(min_volume_mm3, vs)
    vv = voxel_volume_mm3(vs)

    # CSF: CSF-like on the tissue model AND darker than white matter on FLAIR (a
    # T1 black hole is CSF-dark on T1 but bright on FLAIR: it stays eligible)
    csf_mask = mask_in & (ev.csf >= csf_max_probability) & (ev.z_wm < 0)
    eligible = mask_in & ~csf_mask
    if edge_margin_mm > 0:
        eligible &= _inner_distance_mm(mask_in, vs) > edge_margin_mm

    # candidate cores (any size: small cores may still grow past min_volume_mm3)
    cand_lab, n_cand = ndi.label(eligible & (ev.z_context >= candidate_z), _FULL)
    accepted_ids = np.zeros(n_cand + 1, dtype=bool)
    candidates: list[LesionCandidate] = []
    if n_cand:
        idx = np.arange(1, n_cand + 1)
        sizes = np.bincount(cand_lab.ravel(), minlength=n_cand + 1)[1:]
        # per-candidate peak (np.maximum.at over labelled voxels; ndi.maximum sorts the volume)
        inside = cand_lab > 0
        peak = np.full(n_cand, -np.inf)
        np.maximum.at(peak, cand_lab[inside] - 1, ev.z_context[inside].astype(float))
        in_atlas = np.ones(n_cand)
        if priors is not None and atlas_brain_min > 0:
            brain_prior = sum(np.asarray(priors[k], dtype=np.float32) for k in TISSUES)
            in_atlas = np.asarray(ndi.mean(brain_prior, cand_lab, idx), dtype=float)
        t2m = (
            np.asarray(ndi.mean(ev.t2_context, cand_lab, idx), dtype=float)
            if ev.t2_context is not None
            else np.full(n_cand, np.nan)
        )
        # the costly features only for candidates that pass the contrast rule
        strong = (peak >= seed_z) & (in_atlas >= atlas_brain_min)
        shell = np.full(n_cand, np.nan)
        near_csf = np.full(n_cand, np.nan)
        if strong.any():
            sub = np.where(strong[cand_lab - 1] & (cand_lab > 0), cand_lab, 0)
            # CSF is left out of the shell: a periventricular lesion is half wrapped in
            # ventricle, and a confluent one would otherwise fail the rule (measured:
            # an 8 mL injected confluent lesion in sub-cs07 rejected at 0.40)
            wm_target = mask_in & (ev.wm > 0.5)
            if priors is not None and t1 is None and wm_prior_min > 0:
                wm_target &= np.asarray(priors["wm"]) >= wm_prior_min
            if shell_lesion:
                # lesion tissue lies in white matter, but the tissue model calls it grey
                # matter (T1-dark) where lesions crowd: FLAIR-bright shell voxels count as
                # white matter where the atlas allows white matter at all
                lesion_tissue = mask_in & (ev.z_wm >= grow_z)
                if priors is not None and wm_prior_min > 0:
                    lesion_tissue &= np.asarray(priors["wm"]) >= wm_prior_min
                wm_target |= lesion_tissue
            shell_all = _shell_fraction(sub, n_cand, wm_target, wm_shell_mm, vs, exclude=csf_mask)
            shell[strong] = shell_all[strong]
            csf_dist = _inner_distance_mm(~csf_mask, vs)
            near = ndi.mean((csf_dist <= csf_near_mm).astype(np.float32), cand_lab, idx)
            near_csf[strong] = np.asarray(near, dtype=float)[strong]
        coms = ndi.center_of_mass(np.ones(cand_lab.shape, dtype=np.uint8), cand_lab, idx)
        for i in range(n_cand):
            if not peak[i] >= seed_z:
                reason = "contrast"
            elif not in_atlas[i] >= atlas_brain_min:
                reason = "outside"
            elif ev.t2_context is not None and not t2m[i] >= t2_min_z:
                reason = "t2"
            elif shell[i] < wm_shell_min:
                reason = "location"
            elif near_csf[i] >= csf_near_fraction and peak[i] < csf_near_seed_z:
                reason = "csf"
            else:
                reason = "accepted"
            accepted_ids[i + 1] = reason == "accepted"
            candidates.append(
                LesionCandidate(
                    label=i + 1,
                    n_voxels=int(sizes[i]),
                    volume_mm3=float(sizes[i] * vv),
                    centroid_vox=(float(coms[i][0]), float(coms[i][1]), float(coms[i][2])),
                    peak_z=float(peak[i]),
                    t2_z=float(t2m[i]),
                    wm_shell_fraction=float(shell[i]),
                    csf_adjacent_fraction=float(near_csf[i]),
                    accepted=reason == "accepted",
                    reason=reason,
                )
            )
    cores = accepted_ids[cand_lab]

    # delineation domain (cores grown by grow_mm) and probability
    domain = cores
    if grow_mm > 0 and cores.any():
        domain = (ndi.binary_dilation(cores, _ellipsoid(grow_mm, vs)) & eligible) | cores
    prob = np.zeros(fl.shape, dtype=np.float32)
    if domain.any():
        evidence = np.maximum(ev.z_wm[domain], ev.z_context[domain])
        x = np.clip((evidence - grow_z) / probability_scale_z, -50.0, 50.0)
        prob[domain] = (1.0 / (1.0 + np.exp(-x))).astype(np.float32)

    mask = prob >= threshold
    dropped = np.zeros(fl.shape, dtype=bool)
    if partial_volume_slice_mm > 0 and max(vs) >= partial_volume_slice_mm and mask.any():
        line = np.zeros((3, 3, 3), dtype=bool)
        line[tuple(slice(None) if a == int(np.argmax(vs)) else 1 for a in range(3))] = True
        rim = ndi.binary_dilation(mask, line) & eligible & ~mask
        evidence = np.maximum(ev.z_wm[rim], ev.z_context[rim])
        x = np.clip((evidence - partial_volume_z) / probability_scale_z, -50.0, 50.0)
        prob[rim] = np.maximum(prob[rim], (1.0 / (1.0 + np.exp(-x))).astype(np.float32))
        mask = prob >= threshold
    if mask.any():
        lab, n = ndi.label(mask, _FULL)
        keep = np.bincount(lab.ravel(), minlength=n + 1) >= min_vox
        keep[0] = False
        mask = keep[lab]
    if priors is not None and "location" in priors and infratentorial_min_mm3 > 0:
        kept = drop_small_infratentorial(
            mask, priors["location"], vs, infratentorial_min_mm3, infratentorial_min_fraction
        )
        dropped = mask & ~kept
        mask = kept
        prob = np.where(dropped, np.float32(0.0), prob).astype(np.float32)
    if dropped.any():
        hit = np.unique(cand_lab[dropped & (cand_lab > 0)])
        candidates = [
            replace(c, accepted=False, reason="infratentorial") if c.label in hit else c
            for c in candidates
        ]
    used = tuple(
        name for name, val in (("t1", t1a), ("t2", t2a), ("priors", priors)) if val is not None
    )
    seconds = time.perf_counter() - t0
    log.info(
        "segment_lesions: %d candidates, %d accepted, %.1f mm3 lesion volume, %.1f s (inputs %s)",
        n_cand, int(accepted_ids.sum()), float(mask.sum() * vv), seconds, used or ("flair",),
    )  # fmt: skip
    return SegmentationResult(
        probability=prob,
        mask=mask,
        z_wm=ev.z_wm,
        candidates=tuple(candidates),
        nawm_median=float(ev.stats[0]),
        nawm_sd=float(ev.stats[1]),
        gm_median=float(ev.stats[2]),
        gm_sd=float(ev.stats[3]),
        inputs_used=used,
        parameters=params,
        seconds=seconds,
    )
