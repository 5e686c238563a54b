"""T1 black holes: the T1-hypointense part of the T2 lesions of one visit (FLAIR grid).

Definition
----------
A black hole (BH) is a T2-hyperintense lesion, or part of one, that is
hypointense on the pre-contrast T1-weighted image relative to normal-appearing
white matter (NAWM). The classic reading rule, set on 1.5 T T1 spin-echo
scans, calls a T2 lesion a black hole when it is *isointense to grey matter or
darker* (van Walderveen MAA et al., "Histopathologic correlate of hypointense
lesions on T1-weighted spin-echo MRI in multiple sclerosis", Neurology
1998;50:1282-1288; Truyen L et al., Neurology 1996;47:1469-1476); reviewed by
Sahraian MA, Radue EW, Haller S, Kappos L, "Black holes in multiple sclerosis:
definition, evolution, and clinical correlations", Acta Neurol Scand
2010;122:1-8. Hypointense lesions that enhance are *acute* black holes
(oedema, most revert within months) and are not counted; *persistent* black
holes are hypointense at two scans months apart.

Method
------
1. **Tissue model** of the T1 itself (:func:`lesionq.core.tissue.estimate_tissues`,
   primary ``"t1"``, atlas priors as mixing proportions when given), fitted and
   evaluated on a regular lattice of at most 300 000 brain voxels (every
   ``step``-th voxel along each axis, the smallest ``step`` that fits; every
   voxel on small grids). Global levels by robust medians
   (:func:`lesionq.core.normalise.robust_location_scale`): ``NAWM`` over white
   matter (posterior ``>= tissue_min_probability``; voxels within
   ``reference_gap_mm`` of a T2 lesion and enhancing voxels left out), ``CSF``
   over CSF (posterior ``>= tissue_min_probability``, darker than the NAWM
   median, not lesion) and, for the record, ``GM`` over grey matter.
2. **Local reference per T2 lesion**: the median T1 of the NAWM voxels in a
   shell ``reference_gap_mm < d <= reference_shell_mm`` around the lesion (the
   "surrounding white matter" a reader compares with); with fewer than
   ``min_reference_voxels`` there, the global NAWM median. A residual
   multiplicative bias scales NAWM and CSF alike, so the lesion's CSF level is
   the global CSF median times ``local NAWM / global NAWM``.
3. **T1 contrast** of every T2-lesion voxel: ``c = (nawm - t1) / (nawm - csf)``
   with the lesion's local levels: 0 at the NAWM level, 1 at the CSF level
   (fraction of the NAWM -> CSF distance; negative when brighter than NAWM).
4. **Seeds**: T2-lesion voxels with ``c >= hypo_fraction`` (inclusive), i.e.
   ``t1 <= nawm - hypo_fraction * (nawm - csf)``, that are not enhancing:
   voxels of the visit's Gd+ mask (and within ``enhancing_margin_mm`` of it)
   are never black holes, an enhancing lesion's hypointensity being oedema.
   A connected component of seeds must itself reach ``min_volume_mm3``: a
   black hole is dark over at least the minimum lesion volume (a few noisy
   voxels of a brighter lesion are not one).
5. **Edge at half maximum**: each connected component of seeds
   (``connectivity``) has the core contrast ``core`` = the mean ``c`` of its
   seeds; the non-enhancing T2-lesion voxels within ``rim_voxels`` steps of it
   with ``c >= edge_level * core`` join it. A voxel partly filled with a lesion
   of contrast ``c_L`` reads about that fraction of ``c_L``: with
   ``edge_level = 0.5`` a black hole keeps the voxels at least half inside it,
   the rule the T2 masks follow, instead of losing its partial-volume rim
   (which halves small black holes on 1 mm grids and more on thick slices);
   the rim is one voxel deep, so a graded, grey-matter-bright penumbra is
   not taken in.
6. **Black holes** are the components (``connectivity``) of those voxels of
   volume ``>= min_volume_mm3`` (inclusive,
   :func:`lesionq.core.units.min_voxels_for_mm3`), numbered canonically
   (largest first). Each lies inside one T2 lesion (its ``t2_lesion_id``: the
   T2 labels are components of the same connectivity, of which the black-hole
   voxels are a subset).

The default ``hypo_fraction = 0.35`` puts the seed rule at the grey-matter
level, the classic "isointense to grey matter or darker": the T1 tissue models
of the five development T1s (sub-cs07, MSLesSeg sub-P14 x 3 and sub-P39, 3D
gradient-echo, 1 mm) place grey matter at c = 0.31-0.44, median 0.37
(``benchmarks/results/black_holes.md``); 0.35 sits at that level, on the
bright side of its median, so that a lesion as dark as grey matter is not
missed on scans whose grey matter is close to white matter. On a scan whose
grey matter lies darker (c = 0.44 on MSLesSeg sub-P14 ses-03) lesions a
little brighter than its grey matter count too. The threshold is fixed per
protocol, not re-measured per scan, so that every visit of a trial is read
with one rule.

Conventions: arrays indexed (i, j, k) like nibabel data; voxel sizes in mm
along those axes; volumes through :mod:`lesionq.core.units`. Deterministic (no
random draws); single-threaded numpy / scipy; about 1-2 s for a 1 mm visit.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

from ..errors import GeometryError, InputError, ProcessingError
from .components import check_connectivity, label_lesions, structure_for
from .geometry import check_image as _check_image
from .geometry import check_voxel_size as _check_voxel_size
from .geometry import ellipsoid_footprint as _ellipsoid
from .normalise import robust_location_scale
from .tissue import estimate_tissues
from .units import voxels_to_mm3

__all__ = [
    "BlackHole",
    "BlackHoleSegmentation",
    "segment_black_holes",
    "persistent_black_holes",
    "BH_DEFAULTS",
]

log = logging.getLogger(__name__)

#: Most brain voxels the tissue model and the reference levels use: a regular lattice
#: (every ``step``-th voxel along each axis, the smallest ``step`` that fits).
_MAX_MODEL_VOXELS = 300_000

#: Defaults of the ``[black_holes]`` protocol keys (the keyword parameters of
#: :func:`segment_black_holes` that a protocol sets).
BH_DEFAULTS: Mapping[str, float | int] = {
    "hypo_fraction": 0.35,
    "edge_level": 0.5,
    "rim_voxels": 1,
    "reference_gap_mm": 1.0,
    "reference_shell_mm": 5.0,
    "min_reference_voxels": 20,
    "tissue_min_probability": 0.9,
    "enhancing_margin_mm": 0.0,
    "prior_floor": 0.2,
    "tissue_iterations": 25,
}


@dataclass(frozen=True)
class BlackHole:
    """One black hole (a component of T1-hypointense T2-lesion voxels).

    Attributes
    ----------
    lesion_id : int
        Its value in :attr:`BlackHoleSegmentation.labels` (1 = largest).
    t2_lesion_id : int
        The T2 lesion (value of ``t2_labels``) it lies in.
    n_voxels : int
    volume_mm3 : float
    centroid_vox : tuple of 3 float
        Mean voxel index (i, j, k).
    contrast_mean, contrast_max : float
        Mean and largest T1 contrast ``c`` over its voxels (fraction of the
        NAWM -> CSF distance: 0 = NAWM, 1 = CSF).
    reference_nawm : float
        The NAWM level its T2 lesion was compared with (T1 units).
    reference_local : bool
        True when that level is the lesion's own shell median, False when the
        shell held too few NAWM voxels and the global median was used.
    """

    lesion_id: int
    t2_lesion_id: int
    n_voxels: int
    volume_mm3: float
    centroid_vox: tuple[float, float, float]
    contrast_mean: float
    contrast_max: float
    reference_nawm: float
    reference_local: bool


@dataclass(frozen=True)
class BlackHoleSegmentation:
    """Black holes of one visit, on the FLAIR grid.

    Attributes
    ----------
    mask : numpy.ndarray
        bool, the black-hole voxels (components kept).
    labels : numpy.ndarray
        int32 black-hole ids ``1..n`` (0 = background), canonical order.
    contrast : numpy.ndarray
        float32 T1 contrast ``c`` inside the T2 lesions (0 elsewhere).
    lesions : tuple of BlackHole
        In ``lesion_id`` order.
    nawm, csf, gm : float
        Global robust medians of the T1 over NAWM, CSF and grey matter.
    gm_fraction : float
        Where grey matter sits on the contrast scale: ``(nawm - gm) / (nawm - csf)``
        (the classic "isointense to grey matter" level of this scan).
    excluded_enhancing_mm3 : float
        Volume of T2-lesion voxels at or beyond the threshold left out because
        they enhance (or lie within ``enhancing_margin_mm`` of enhancement).
    seconds : float
        Wall time.
    """

    mask: np.ndarray
    labels: np.ndarray
    contrast: np.ndarray
    lesions: tuple[BlackHole, ...]
    nawm: float
    csf: float
    gm: float
    gm_fraction: float
    excluded_enhancing_mm3: float
    seconds: float

    @property
    def n_lesions(self) -> int:
        """Number of black holes (``bh_count``)."""
        return len(self.lesions)

    @property
    def volume_mm3(self) -> float:
        """Total black-hole volume in mm3 (``bh_volume_mm3``)."""
        return float(sum(b.volume_mm3 for b in self.lesions))


def _number(name: str, value: object, *, lo: float, hi: float = math.inf) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InputError(f"black_holes parameter {name} must be a finite number, got {value!r}")
    v = float(value)
    if not lo <= v <= hi:
        raise InputError(f"black_holes parameter {name} must be in [{lo}, {hi}], got {value!r}")
    return v


def _check_params(
    *,
    hypo_fraction: float,
    edge_level: float,
    rim_voxels: int,
    reference_gap_mm: float,
    reference_shell_mm: float,
    min_reference_voxels: int,
    tissue_min_probability: float,
    enhancing_margin_mm: float,
    prior_floor: float,
    tissue_iterations: int,
    min_volume_mm3: float,
) -> None:
    _number("hypo_fraction", hypo_fraction, lo=0.0, hi=1.0)
    _number("edge_level", edge_level, lo=0.0, hi=1.0)
    _number("reference_gap_mm", reference_gap_mm, lo=0.0)
    if _number("reference_shell_mm", reference_shell_mm, lo=0.0) <= reference_gap_mm:
        raise InputError(
            f"black_holes parameter reference_shell_mm ({reference_shell_mm}) must be > "
            f"reference_gap_mm ({reference_gap_mm})"
        )
    _number("tissue_min_probability", tissue_min_probability, lo=0.5, hi=1.0)
    _number("enhancing_margin_mm", enhancing_margin_mm, lo=0.0)
    _number("prior_floor", prior_floor, lo=0.0)
    _number("min_volume_mm3", min_volume_mm3, lo=0.0)
    for k, v, lo in (
        ("min_reference_voxels", min_reference_voxels, 1),
        ("rim_voxels", rim_voxels, 0),
        ("tissue_iterations", tissue_iterations, 1),
    ):
        if isinstance(v, bool) or not isinstance(v, int) or v < lo:
            raise InputError(f"black_holes parameter {k} must be an int >= {lo}, got {v!r}")


def _shell_medians(
    t1: np.ndarray,
    t2_labels: np.ndarray,
    nawm: np.ndarray,
    vs: tuple[float, float, float],
    gap_mm: float,
    shell_mm: float,
    min_voxels: int,
) -> dict[int, tuple[float, bool]]:
    """Per T2 lesion id: (median T1 of the NAWM in its shell, True) or (nan, False)."""
    pad = [int(math.ceil(shell_mm / v)) + 1 for v in vs]
    out: dict[int, tuple[float, bool]] = {}
    for idx, sl in enumerate(ndi.find_objects(t2_labels), start=1):
        if sl is None:
            continue
        box = tuple(
            slice(max(s.start - p, 0), min(s.stop + p, n))
            for s, p, n in zip(sl, pad, t2_labels.shape, strict=True)
        )
        lesion = t2_labels[box] == idx
        dist = ndi.distance_transform_edt(~lesion, sampling=vs)
        shell = (dist > gap_mm) & (dist <= shell_mm) & nawm[box]
        if int(shell.sum()) >= min_voxels:
            out[idx] = (float(np.median(t1[box][shell].astype(np.float64))), True)
        else:
            out[idx] = (float("nan"), False)
    return out


def _extent(
    contrast: np.ndarray,
    allowed: np.ndarray,
    seeds: np.ndarray,
    edge_level: float,
    rim_voxels: int,
    conn: int,
) -> np.ndarray:
    """Seeds plus their partial-volume rim (see :func:`segment_black_holes`, step 5).

    Each connected component of ``seeds`` has the core contrast ``core`` = mean
    ``c`` of its voxels; the ``allowed`` voxels within ``rim_voxels`` steps
    (``conn`` neighbourhood) of it with ``c >= edge_level * core`` join it.
    """
    structure = structure_for(conn)
    out = seeds.copy()
    if rim_voxels == 0 or not seeds.any():
        return out
    comp, _ = ndi.label(seeds, structure=structure)
    shape = seeds.shape
    for k, sl in enumerate(ndi.find_objects(comp), start=1):
        if sl is None:
            continue
        box = tuple(
            slice(max(s.start - rim_voxels, 0), min(s.stop + rim_voxels, n))
            for s, n in zip(sl, shape, strict=True)
        )
        mine = comp[box] == k
        c = contrast[box]
        core = float(c[mine].astype(np.float64).mean())
        rim = ndi.binary_dilation(mine, structure=structure, iterations=rim_voxels)
        out[box] |= rim & allowed[box] & (c >= np.float32(edge_level * core))
    return out


def segment_black_holes(
    t1: np.ndarray,
    t2_labels: np.ndarray,
    brain_mask: np.ndarray,
    voxel_size_mm: Sequence[float],
    *,
    enhancing: np.ndarray | None = None,
    priors: Mapping[str, np.ndarray] | None = None,
    min_volume_mm3: float,
    connectivity: int = 26,
    hypo_fraction: float = 0.35,
    edge_level: float = 0.5,
    rim_voxels: int = 1,
    reference_gap_mm: float = 1.0,
    reference_shell_mm: float = 5.0,
    min_reference_voxels: int = 20,
    tissue_min_probability: float = 0.9,
    enhancing_margin_mm: float = 0.0,
    prior_floor: float = 0.2,
    tissue_iterations: int = 25,
) -> BlackHoleSegmentation:
    """T1 black holes inside the T2 lesions of one visit (method in the module docstring).

    Parameters
    ----------
    t1 : numpy.ndarray, shape (X, Y, Z)
        Pre-contrast T1-weighted image on the FLAIR grid, bias-corrected
        (any positive intensity scale).
    t2_labels : numpy.ndarray of int, shape (X, Y, Z)
        The visit's T2 lesion labels (0 = background, ``1..n`` lesion ids), as
        written to ``label-T2lesion_dseg``.
    brain_mask : numpy.ndarray of bool, shape (X, Y, Z)
    voxel_size_mm : sequence of 3 float
        Voxel edge lengths in mm along axes 0, 1, 2.
    enhancing : numpy.ndarray of bool, optional
        The visit's Gd+ lesion mask; its voxels are never black holes.
    priors : mapping, optional
        Atlas probabilities ``"csf"``, ``"gm"``, ``"wm"`` in [0, 1] on the grid
        (tissue-model mixing proportions).
    min_volume_mm3 : float
        Smallest black hole kept, mm3, inclusive (the protocol's ``[lesions]
        min_volume_mm3``).
    connectivity : {6, 18, 26}
        Neighbourhood joining voxels into one black hole (``[lesions]``).
    hypo_fraction : float
        Seed threshold on the T1 contrast ``c`` (fraction of the NAWM -> CSF
        distance, in [0, 1]), inclusive: a T2-lesion voxel with ``c >=
        hypo_fraction`` is hypointense. 0.35 = about the grey-matter level.
    edge_level : float
        In [0, 1]: a voxel next to a seed component joins it when ``c >=
        edge_level x`` the mean ``c`` of the component's seeds (0.5: half
        maximum).
    rim_voxels : int
        How many voxel steps (``connectivity`` neighbourhood) beyond its seeds a
        black hole's edge is searched (>= 0; 0: the seeds only).
    reference_gap_mm, reference_shell_mm : float
        The local NAWM reference of a T2 lesion is taken at distances
        ``reference_gap_mm < d <= reference_shell_mm`` (mm) from it; NAWM also
        excludes every voxel within ``reference_gap_mm`` of a T2 lesion.
    min_reference_voxels : int
        Fewest NAWM voxels in a shell for a local reference (else the global
        NAWM median).
    tissue_min_probability : float
        Posterior probability (in [0.5, 1]) a voxel needs to count as NAWM,
        CSF or grey matter for the reference levels.
    enhancing_margin_mm : float
        Voxels within this distance (mm) of an enhancing voxel are excluded
        too (0: only the enhancing voxels).
    prior_floor : float
        Added to the atlas priors before mixing (tissue model).
    tissue_iterations : int
        EM iterations of the tissue model.

    Returns
    -------
    BlackHoleSegmentation

    Raises
    ------
    lesionq.errors.InputError
        Bad shapes, values or parameters.
    lesionq.errors.GeometryError
        An image not on the grid of ``t2_labels``.
    lesionq.errors.ProcessingError
        Too little NAWM or CSF to set the reference levels, or NAWM not
        brighter than CSF (not a T1-weighted image?).

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> shape = (40, 40, 40)
    >>> brain = np.zeros(shape, bool); brain[2:-2, 2:-2, 2:-2] = True
    >>> t1 = np.where(brain, 100.0, 0.0) + rng.normal(0, 1, shape)
    >>> t1[2:8] += -80.0                    # CSF (about 20)
    >>> t1[8:14] += -40.0                   # grey matter (about 60)
    >>> t1[20:30, 15:25, 15:25] = 40.0      # a dark lesion: c = 0.75
    >>> t2 = np.zeros(shape, np.int32); t2[19:31, 14:26, 14:26] = 1
    >>> res = segment_black_holes(t1, t2, brain, (1.0, 1.0, 1.0), min_volume_mm3=3.0)
    >>> res.n_lesions, res.volume_mm3, res.lesions[0].t2_lesion_id, round(res.gm_fraction, 1)
    (1, 1000.0, 1, 0.5)
    """
    t0 = time.perf_counter()
    _check_params(
        hypo_fraction=hypo_fraction,
        edge_level=edge_level,
        rim_voxels=rim_voxels,
        reference_gap_mm=reference_gap_mm,
        reference_shell_mm=reference_shell_mm,
        min_reference_voxels=min_reference_voxels,
        tissue_min_probability=tissue_min_probability,
        enhancing_margin_mm=enhancing_margin_mm,
        prior_floor=prior_floor,
        tissue_iterations=tissue_iterations,
        min_volume_mm3=min_volume_mm3,
    )
    conn = check_connectivity(connectivity)
    vs = _check_voxel_size(voxel_size_mm)
    labels_in = np.asarray(t2_labels)
    if labels_in.ndim != 3 or not np.issubdtype(labels_in.dtype, np.integer):
        raise InputError(
            f"t2_labels must be a 3-D integer label image, got {labels_in.dtype} {labels_in.shape}"
        )
    if labels_in.size and labels_in.min() < 0:
        raise InputError("t2_labels has negative values")
    shape = labels_in.shape
    mask = np.asarray(brain_mask)
    if mask.shape != shape or mask.dtype != bool:
        raise InputError(
            f"brain_mask must be a bool array of shape {shape}, got {mask.dtype} {mask.shape}"
        )
    t1a = _check_image("t1", t1, shape, mask)
    enh = np.zeros(shape, bool)
    if enhancing is not None:
        enh = np.asarray(enhancing)
        if enh.shape != shape:
            raise GeometryError(
                f"enhancing has shape {enh.shape}, expected the FLAIR grid shape {shape}"
            )
        enh = enh > 0
    prior_arrays = None
    if priors is not None:
        prior_arrays = {k: _check_image(f"priors[{k!r}]", priors[k], shape, mask) for k in priors}
    t2 = labels_in.astype(np.int32, copy=False)
    lesion = t2 > 0

    # reference levels from a regular lattice of at most _MAX_MODEL_VOXELS brain voxels
    step = 1
    while int(mask[::step, ::step, ::step].sum()) > _MAX_MODEL_VOXELS:
        step += 1
    lattice = np.zeros(shape, bool)
    lattice[::step, ::step, ::step] = True
    model_mask = mask & lattice
    tis = estimate_tissues(
        [t1a],
        model_mask,
        primary="t1",
        priors=prior_arrays,
        prior_floor=float(prior_floor),
        n_iterations=int(tissue_iterations),
    )
    near_lesion = lesion
    if reference_gap_mm > 0 and lesion.any():
        near_lesion = ndi.binary_dilation(lesion, structure=_ellipsoid(reference_gap_mm, vs))
    p = float(tissue_min_probability)
    nawm = model_mask & (tis.wm >= p) & ~near_lesion & ~enh
    n_min = max(100, int(0.005 * model_mask.sum()))
    if int(nawm.sum()) < n_min:
        raise ProcessingError(
            f"black holes: the T1 tissue model found {int(nawm.sum())} normal-appearing "
            f"white-matter voxels (need >= {n_min}); check the T1 and the brain mask"
        )
    nawm_level = robust_location_scale(t1a[nawm])[0]
    csf_vox = model_mask & (tis.csf >= p) & (t1a < nawm_level) & ~lesion
    if int(csf_vox.sum()) < 20:
        raise ProcessingError(
            f"black holes: the T1 tissue model found {int(csf_vox.sum())} CSF voxels darker than "
            "white matter (need >= 20); is the image T1-weighted?"
        )
    csf_level = robust_location_scale(t1a[csf_vox])[0]
    gm_vox = model_mask & (tis.gm >= p) & ~near_lesion
    gm_level = robust_location_scale(t1a[gm_vox])[0] if gm_vox.any() else float("nan")
    span = nawm_level - csf_level
    if not span > 0:
        raise ProcessingError(
            f"black holes: NAWM median {nawm_level:.4g} is not brighter than CSF median "
            f"{csf_level:.4g}; is the image T1-weighted?"
        )
    csf_ratio = csf_level / nawm_level if nawm_level != 0 else 0.0

    # local reference per T2 lesion -> per-voxel contrast inside the lesions
    refs = _shell_medians(
        t1a, t2, nawm, vs, float(reference_gap_mm), float(reference_shell_mm),
        int(min_reference_voxels),
    )  # fmt: skip
    n_ids = int(t2.max()) if t2.size else 0
    ref_nawm = np.full(n_ids + 1, nawm_level, dtype=np.float64)
    ref_local = np.zeros(n_ids + 1, dtype=bool)
    for idx, (level, local) in refs.items():
        if local and level > 0:
            ref_nawm[idx], ref_local[idx] = level, True
    ref_span = ref_nawm * (1.0 - csf_ratio) if nawm_level > 0 else np.full_like(ref_nawm, span)
    contrast = np.zeros(shape, np.float32)
    ids = t2[lesion]
    contrast[lesion] = ((ref_nawm[ids] - t1a[lesion]) / ref_span[ids]).astype(np.float32)

    excluded = enh
    if enhancing_margin_mm > 0 and enh.any():
        excluded = ndi.binary_dilation(enh, structure=_ellipsoid(enhancing_margin_mm, vs))
    seeds = lesion & (contrast >= np.float32(hypo_fraction))
    excluded_vox = int((seeds & excluded).sum())
    seeds &= ~excluded
    if seeds.any():  # a black hole's dark core must itself reach the minimum volume
        seeds = (
            label_lesions(seeds, vs, min_volume_mm3=float(min_volume_mm3), connectivity=conn)[0] > 0
        )
    hypo = _extent(contrast, lesion & ~excluded, seeds, float(edge_level), int(rim_voxels), conn)
    labels, n = label_lesions(hypo, vs, min_volume_mm3=float(min_volume_mm3), connectivity=conn)
    bh: list[BlackHole] = []
    if n:
        flat = np.flatnonzero(labels.ravel())
        inv = labels.ravel()[flat].astype(np.int64) - 1
        counts = np.bincount(inv, minlength=n)
        cvals = contrast.ravel()[flat].astype(np.float64)
        cmean = np.bincount(inv, weights=cvals, minlength=n) / counts
        cmax = np.full(n, -np.inf)
        np.maximum.at(cmax, inv, cvals)
        t2_of = np.zeros(n, np.int64)
        np.maximum.at(t2_of, inv, t2.ravel()[flat].astype(np.int64))
        coords = np.unravel_index(flat, shape)
        cen = np.stack(
            [np.bincount(inv, weights=c.astype(np.float64), minlength=n) / counts for c in coords],
            axis=1,
        )
        for k in range(n):
            tid = int(t2_of[k])
            bh.append(
                BlackHole(
                    lesion_id=k + 1,
                    t2_lesion_id=tid,
                    n_voxels=int(counts[k]),
                    volume_mm3=float(voxels_to_mm3(int(counts[k]), vs)),
                    centroid_vox=(float(cen[k, 0]), float(cen[k, 1]), float(cen[k, 2])),
                    contrast_mean=float(cmean[k]),
                    contrast_max=float(cmax[k]),
                    reference_nawm=float(ref_nawm[tid]),
                    reference_local=bool(ref_local[tid]),
                )
            )
    secs = time.perf_counter() - t0
    gm_fraction = (nawm_level - gm_level) / span if math.isfinite(gm_level) else float("nan")
    log.debug(
        "black holes: %d, %.1f mm3; NAWM %.4g CSF %.4g GM %.4g (GM at c=%.3f); %.2f s",
        n, sum(b.volume_mm3 for b in bh), nawm_level, csf_level, gm_level, gm_fraction, secs,
    )  # fmt: skip
    return BlackHoleSegmentation(
        mask=labels > 0,
        labels=labels.astype(np.int32),
        contrast=contrast,
        lesions=tuple(bh),
        nawm=float(nawm_level),
        csf=float(csf_level),
        gm=float(gm_level),
        gm_fraction=float(gm_fraction),
        excluded_enhancing_mm3=float(voxels_to_mm3(excluded_vox, vs)),
        seconds=secs,
    )


def persistent_black_holes(
    labels: np.ndarray, earlier: np.ndarray, voxel_size_mm: Sequence[float]
) -> tuple[tuple[int, ...], float]:
    """Black holes of this visit that were already black holes at an earlier visit.

    A black hole is *persistent* when it is hypointense at this visit and at a
    visit at least months earlier (the earlier visits are chosen by the caller,
    ``[black_holes] persistent_min_days``; Sahraian et al., Acta Neurol Scand
    2010). Lesion-wise: a black hole of this visit counts, with its whole
    volume at this visit, when any of its voxels lies in the earlier visit's
    black-hole mask brought onto this grid.

    Parameters
    ----------
    labels : ndarray of int, shape (X, Y, Z)
        This visit's black-hole labels (0 = background), e.g. the
        ``labels`` of :func:`segment_black_holes`.
    earlier : ndarray of bool, shape (X, Y, Z)
        Union of the earlier visits' black-hole masks on this visit's grid
        (nearest-neighbour resampling through the visit-to-visit registration).
    voxel_size_mm : sequence of 3 float
        Voxel edge lengths of this grid in mm along array axes 0, 1, 2.

    Returns
    -------
    (tuple of int, float)
        The persistent black holes' label values (increasing) and their total
        volume at this visit in mm3 (0.0 when none).

    Raises
    ------
    lesionq.errors.InputError
        The two arrays differ in shape.

    Examples
    --------
    >>> lab = np.zeros((4, 4, 4), np.int32); lab[0, 0, :2] = 1; lab[3, 3, :3] = 2
    >>> before = np.zeros((4, 4, 4), bool); before[3, 3, 2] = True
    >>> persistent_black_holes(lab, before, (1.0, 1.0, 2.0))
    ((2,), 6.0)
    """
    lab = np.asarray(labels)
    prior = np.asarray(earlier, dtype=bool)
    if lab.shape != prior.shape:
        raise InputError(
            f"persistent_black_holes: labels {lab.shape} and earlier mask {prior.shape} differ"
        )
    vs = _check_voxel_size(voxel_size_mm)
    ids = np.unique(lab[prior & (lab > 0)])
    if ids.size == 0:
        return (), 0.0
    n_vox = int(np.isin(lab, ids).sum())
    return tuple(int(i) for i in ids), float(voxels_to_mm3(n_vox, vs))
