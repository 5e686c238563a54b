"""Synthetic multi-visit MS phantoms with known truth.

A phantom subject is a head described analytically in a *head space* (RAS+ mm,
origin near the centre of the brain; it is also the world space of the first
visit) and imaged at every visit on a scanner grid after a known rigid head
motion. Every image and truth mask is computed from the analytic description at
the sample points of that visit's grid, so the truth of every visit is exact (no
resampling of a pre-rendered volume) and so is the motion truth.

Model
-----
Anatomy (canonical mm, times ``head_scale`` and a +-4 % subject factor; the
default 0.9 gives a small adult head, brain about 750 mL):

* cerebrum: a deformed ellipsoid (wider at the back, flatter below, low-order
  random shape terms) with a 3.5 mm cortical grey-matter ribbon, gyri and sulci
  (CSF sheets up to 12 mm deep lined with grey matter, from the zero set of a
  random band-limited field), an interhemispheric fissure with medial cortex
  above the corpus callosum, two banana-shaped lateral ventricles (size factor
  0.9-1.5, atrophy), a third ventricle, thalami, lentiform and caudate nuclei,
  choroid plexus;
* infratentorial: a cerebellum (grey cortex, white core with arbor-vitae-like
  branches) under the occipital lobes with a CSF gap (tentorium), a fourth
  ventricle, and a brainstem that continues down as the spinal cord through the
  bottom of the field of view (the brain mask stops at the foramen magnum);
* outside the brain, layers that follow its surface: CSF, skull (dark cortical
  bone around fat-like marrow), galea, subcutaneous fat (bright on T1), skin;
  the superior sagittal sinus; a neck, a face block with orbital fat and eyes.

Tissue signals (see ``_LUT``) follow the usual orderings: FLAIR CSF < WM < GM <
lesion; T1w CSF < lesion < GM < WM < fat; T2w WM < GM < lesion < CSF; the
contrast-enhanced T1w is the T1w plus enhancement of the venous sinus, choroid
plexus and soft tissue, and of the enhancing lesions.

Lesions are ellipsoids in white matter, equivalent radius 2.5-5.5 mm at onset
(new lesions 2.5-4.5 mm), about 40 % periventricular (tip 0.3-1 mm from a
lateral ventricle, long axis perpendicular to its wall, like Dawson's fingers).
Each lesion has an onset visit (0 = present at baseline) and at most one size
change, a homothety about the tip of its long axis (the ventricle-side tip for
periventricular lesions): enlargement by a radius factor 1.30-1.45 (volume
x2.2-3.0, the old lesion inside the new one) or shrinkage by 0.70-0.80 (volume
x0.34-0.51, the new lesion inside the old one). A lesion enhances on the ce-T1
at one visit at most: most new lesions at their onset visit, some enlarging
lesions when they enlarge, one or two lesions at baseline; nodular (the whole
lesion) or ring (its outer 2 mm shell; lesions >= 4 mm). The spheres that hold
each lesion at every visit are >= 5 mm apart, so each lesion is one
26-connected component of every truth mask.

Imaging: each visit's grid is axis-aligned and LAS-oriented (like many scanner
exports), its centre jittered by up to ``fov_jitter_mm``; the head moves by a
rigid motion (per axis, rotations in [1/3, 1] x ``max_rotation_deg`` and
translations in [1/3, 1] x ``max_translation_mm``, random signs; visit 1 is the
identity). Each voxel averages ``supersample`` points along the slice axis
(partial volume of thick slices), then come an in-plane Gaussian point spread
(sigma 0.5 voxel), a smooth multiplicative bias field (exp of a 2nd-order
polynomial, its own per visit and contrast), Rician noise, background
suppression (air > 2 voxels from the head set to 0, optional) and rounding to
integers (float32 arrays of integral values in the int16 range).

Truth per visit, on that visit's grid (a voxel is inside when >= half of its
sample points are): lesion id map, T2 lesion mask, Gd+ mask (whole extent of
the enhancing lesions), brain mask (cerebrum, cerebellum, brainstem above the
foramen magnum, ventricles and sulci included), tissue labels. Lesion statuses
are relative to the previous visit: ``absent``, ``baseline`` (present at the
first visit), ``new``, ``stable``, ``enlarging``, ``shrinking``.

All randomness comes from ``numpy.random.default_rng`` on seed sequences keyed
by the subject seed, a purpose and the visit, so a subject made with more visits
shares its first visits with the same subject made with fewer.
"""

from __future__ import annotations

import datetime as _dt
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage as ndi

from ..core.units import voxel_volume_mm3
from ..errors import InputError, ProcessingError

__all__ = [
    "CONTRASTS",
    "TISSUE_LABELS",
    "LESION_STATUSES",
    "DEFAULT_WEEKS",
    "RigidMotion",
    "LesionTruth",
    "PhantomVisit",
    "PhantomSubject",
    "BlockPhantom",
    "make_subject",
    "make_block_phantom",
    "default_weeks",
    "render_lesion_labels",
    "DARK_T1_FACTOR",
    "t1_contrast",
    "GREY_MATTER_T1_CONTRAST",
]

log = logging.getLogger(__name__)

#: Contrast keys, spelled as the BIDS suffix part of the file name after ``ses-XX_``.
CONTRASTS: tuple[str, ...] = ("FLAIR", "T1w", "T2w", "ce-gadolinium_T1w")

# tissue label values
BG, CSF, GM, WM, DGM, LESION, BONE, MARROW, FAT, SOFT, VESSEL, CHOROID, EYE = range(13)

#: Tissue label value -> name, for the ``desc-tissue_dseg`` truth images.
TISSUE_LABELS: dict[int, str] = {
    BG: "background",
    CSF: "csf",
    GM: "grey_matter",
    WM: "white_matter",
    DGM: "deep_grey_matter",
    LESION: "lesion",
    BONE: "bone",
    MARROW: "bone_marrow",
    FAT: "fat",
    SOFT: "soft_tissue",
    VESSEL: "venous_sinus",
    CHOROID: "choroid_plexus",
    EYE: "vitreous",
}

#: Lesion status values, relative to the previous visit.
LESION_STATUSES: tuple[str, ...] = ("absent", "baseline", "new", "stable", "enlarging", "shrinking")

#: Nominal visit weeks of the default trial schedule (later visits every 12 weeks).
DEFAULT_WEEKS: tuple[int, ...] = (0, 4, 12)

# Relative signal of each tissue (index = label) per contrast, before scaling.
# FLAIR: CSF dark, WM < GM < lesion; T1w: CSF < GM < WM, lesion hypo, fat bright,
# bone dark; T2w: WM < GM < lesion < CSF; ce-T1w: T1w plus enhancing vessels,
# choroid plexus and a little soft tissue (lesion enhancement is added per lesion).
_LUT = {
    #             BG    CSF   GM    WM    DGM   LES   BONE  MARR  FAT   SOFT  VESS  CHOR  EYE
    "FLAIR": (0.00, 0.12, 0.68, 0.52, 0.62, 0.95, 0.04, 0.55, 0.72, 0.42, 0.10, 0.40, 0.08),
    "T1w": (0.00, 0.14, 0.52, 0.78, 0.60, 0.50, 0.04, 0.85, 1.00, 0.45, 0.30, 0.50, 0.14),
    "T2w": (0.00, 1.00, 0.56, 0.38, 0.46, 0.80, 0.04, 0.55, 0.70, 0.38, 0.06, 0.60, 1.00),
    "ce-gadolinium_T1w": (
        0.00,
        0.14,
        0.53,
        0.78,
        0.60,
        0.50,
        0.04,
        0.85,
        1.00,
        0.52,
        1.05,
        0.95,
        0.14,
    ),
}
# integer scale of each contrast (signal of relative value 1.0); modest values keep the
# gzipped int16 files small (brain tissue ~70-200, noise sigma ~5)
_SCALE = {"FLAIR": 200.0, "T1w": 150.0, "T2w": 180.0, "ce-gadolinium_T1w": 150.0}
_ENHANCEMENT = 0.7  # added relative signal of enhancing lesion tissue on ce-T1 (WM is 0.78)
_RING_THICKNESS_MM = 2.0
_MIN_GAP_MM = 5.0
_MAX_GROWTH = 1.45  # largest radius factor of an enlarging lesion
_GROW_MAX_RADIUS_MM = 4.2  # lesions up to this equivalent radius may enlarge
_GROW_ELIGIBLE = 0.5  # share of those that may (their room is reserved when placed)

#: ``t1_factor`` below which a lesion is *markedly* dark on T1 (T1 <= 0.40, about half way
#: from white matter to CSF): the truth tables' ``n_bh_dark`` / ``bh_dark_volume_mm3``.
DARK_T1_FACTOR = 0.8


def t1_contrast(t1_factor: float) -> float:
    """Planted T1 contrast of a lesion: fraction of the white-matter -> CSF distance.

    ``(WM - lesion) / (WM - CSF)`` of the T1w signal table (0 = white matter, 1 =
    CSF), the scale of ``t1_contrast_mean`` in lesionq's ``lesions.tsv``.

    Examples
    --------
    >>> round(t1_contrast(1.0), 4), round(t1_contrast(0.8), 4)
    (0.4375, 0.5938)
    """
    wm, csf, lesion = _LUT["T1w"][WM], _LUT["T1w"][CSF], _LUT["T1w"][LESION]
    return float((wm - lesion * float(t1_factor)) / (wm - csf))


#: Grey matter on the same scale (0.406): a lesion at or beyond it is "isointense to grey
#: matter or darker" on T1, the clinical black-hole rule; with this signal table every
#: lesion is (``t1_factor`` <= 1 and the lesion tissue, 0.50, is darker than grey matter, 0.52).
GREY_MATTER_T1_CONTRAST = float(
    (_LUT["T1w"][WM] - _LUT["T1w"][GM]) / (_LUT["T1w"][WM] - _LUT["T1w"][CSF])
)


# --------------------------------------------------------------------------- dataclasses


@dataclass(frozen=True)
class RigidMotion:
    """A rigid transform from head space (= baseline world) to a visit's world space.

    ``p_world = R @ p_head + t`` with ``R = Rz @ Ry @ Rx`` (rotations about the
    RAS x, y, z axes through the head-space origin, applied x first), in degrees,
    and ``t`` in mm.
    """

    rotation_deg: tuple[float, float, float] = (0.0, 0.0, 0.0)
    translation_mm: tuple[float, float, float] = (0.0, 0.0, 0.0)

    @property
    def matrix(self) -> np.ndarray:
        """4x4 homogeneous matrix, head space -> visit world (RAS+ mm)."""
        ax, ay, az = (math.radians(a) for a in self.rotation_deg)
        rx = np.array(
            [[1, 0, 0], [0, math.cos(ax), -math.sin(ax)], [0, math.sin(ax), math.cos(ax)]]
        )
        ry = np.array(
            [[math.cos(ay), 0, math.sin(ay)], [0, 1, 0], [-math.sin(ay), 0, math.cos(ay)]]
        )
        rz = np.array(
            [[math.cos(az), -math.sin(az), 0], [math.sin(az), math.cos(az), 0], [0, 0, 1]]
        )
        m = np.eye(4)
        m[:3, :3] = rz @ ry @ rx
        m[:3, 3] = self.translation_mm
        return m

    @property
    def inverse_matrix(self) -> np.ndarray:
        """4x4 homogeneous matrix, visit world -> head space."""
        m = self.matrix
        inv = np.eye(4)
        inv[:3, :3] = m[:3, :3].T
        inv[:3, 3] = -m[:3, :3].T @ m[:3, 3]
        return inv


@dataclass(frozen=True, eq=False)
class LesionTruth:
    """One lesion over all visits, in head space (= baseline world RAS+ mm).

    Attributes
    ----------
    lesion_id : int
        1-based id, the value of this lesion in every visit's id map.
    onset_visit : int
        0-based index of the first visit where the lesion is present.
    centres_mm : ndarray, shape (n_visits, 3)
        Ellipsoid centre per visit in head space (NaN while absent; moves a
        little when the lesion grows or shrinks eccentrically).
    semi_axes_mm : ndarray, shape (n_visits, 3)
        Semi-axis lengths per visit (0 while absent), along the columns of ``rotation``.
    rotation : ndarray, shape (3, 3)
        Columns are the ellipsoid axes in head space.
    status : tuple of str
        Per visit, one of :data:`LESION_STATUSES`.
    enhancement : tuple of str
        Per visit, ``"none"``, ``"nodular"`` or ``"ring"``.
    periventricular : bool
    flair_factor, t1_factor : float
        Lesion signal relative to the lesion tissue value on FLAIR/T2w and T1w.
        Every lesion is at least as dark as grey matter on T1 (a black hole by the
        clinical rule, :data:`GREY_MATTER_T1_CONTRAST`); ``t1_factor <``
        :data:`DARK_T1_FACTOR` marks the markedly dark ones.
    """

    lesion_id: int
    onset_visit: int
    centres_mm: np.ndarray
    semi_axes_mm: np.ndarray
    rotation: np.ndarray
    status: tuple[str, ...]
    enhancement: tuple[str, ...]
    periventricular: bool
    flair_factor: float
    t1_factor: float

    def present(self, visit: int) -> bool:
        """Whether the lesion exists at ``visit`` (0-based)."""
        return self.status[visit] != "absent"

    def radius_mm(self, visit: int) -> float:
        """Equivalent-sphere radius (mm) at ``visit``; 0 when absent."""
        return float(np.prod(self.semi_axes_mm[visit]) ** (1.0 / 3.0))

    def volume_mm3(self, visit: int) -> float:
        """Analytic ellipsoid volume (mm3) at ``visit``; 0 when absent."""
        return float(4.0 / 3.0 * math.pi * np.prod(self.semi_axes_mm[visit]))

    def enhancing(self, visit: int) -> bool:
        """Whether the lesion enhances on the ce-T1 of ``visit``."""
        return self.enhancement[visit] != "none"


@dataclass(frozen=True, eq=False)
class PhantomVisit:
    """One rendered visit of a phantom subject, all arrays on one grid.

    Attributes
    ----------
    index : int
        0-based visit index.
    session : str
        BIDS session label (``"01"``, ``"02"``...).
    week : int
        Nominal trial week.
    acq_time : str
        ``YYYY-MM-DDThh:mm:ss`` acquisition time.
    affine : ndarray, shape (4, 4)
        Voxel (i, j, k) -> this visit's world RAS+ mm (LAS-oriented grid).
    motion : RigidMotion
        Head space -> this visit's world.
    images : mapping of str to ndarray, shape (X, Y, Z), float32
        One image per key of :data:`CONTRASTS`; integral values in [0, 32767].
    lesion_ids : ndarray, shape (X, Y, Z), uint16
        Lesion id per voxel (0 = no lesion).
    enhancing_mask : ndarray, shape (X, Y, Z), bool
        Whole extent of the lesions that enhance at this visit.
    brain_mask : ndarray, shape (X, Y, Z), bool
    tissue : ndarray, shape (X, Y, Z), uint8
        Tissue labels (:data:`TISSUE_LABELS`); lesion voxels are ``5``.
    """

    index: int
    session: str
    week: int
    acq_time: str
    affine: np.ndarray
    motion: RigidMotion
    images: Mapping[str, np.ndarray]
    lesion_ids: np.ndarray
    enhancing_mask: np.ndarray
    brain_mask: np.ndarray
    tissue: np.ndarray

    @property
    def lesion_mask(self) -> np.ndarray:
        """T2 lesion truth mask, bool (X, Y, Z)."""
        return self.lesion_ids > 0

    @property
    def voxel_size_mm(self) -> tuple[float, float, float]:
        """Voxel edge lengths (mm) along array axes 0, 1, 2."""
        n = np.sqrt((self.affine[:3, :3] ** 2).sum(axis=0))
        return (float(n[0]), float(n[1]), float(n[2]))

    @property
    def world_to_baseline(self) -> np.ndarray:
        """4x4 matrix mapping this visit's world points to baseline world points."""
        return self.motion.inverse_matrix


@dataclass(frozen=True, eq=False)
class PhantomSubject:
    """A phantom subject: visits, lesions and the parameters that made it.

    Attributes
    ----------
    label : str
        BIDS subject label (without ``sub-``).
    seed : int
    visits : tuple of PhantomVisit
    lesions : tuple of LesionTruth
    params : dict
        The generator parameters (JSON-serialisable).
    """

    label: str
    seed: int
    visits: tuple[PhantomVisit, ...]
    lesions: tuple[LesionTruth, ...]
    params: dict = field(default_factory=dict)

    @property
    def n_visits(self) -> int:
        """Number of visits."""
        return len(self.visits)

    def lesion_table(self) -> list[dict]:
        """Lesion truth in long format: one row per lesion and visit.

        Returns
        -------
        list of dict
            Keys: ``lesion_id``, ``session_id`` (``ses-XX``), ``visit``, ``week``,
            ``status``, ``enhancing`` (bool), ``enhancement``, ``periventricular``,
            ``centre_x_mm``/``centre_y_mm``/``centre_z_mm`` (the visit's world
            RAS+ mm; NaN when absent), ``head_x_mm``/``head_y_mm``/``head_z_mm``
            (head space = baseline world), ``radius_mm`` (equivalent sphere),
            ``volume_mm3`` (analytic), ``mask_voxels`` and ``mask_volume_mm3``
            (truth mask of that visit), ``t1_factor``, ``t1_contrast``
            (:func:`t1_contrast`) and ``black_hole``: present, not enhancing at
            that visit and at least as dark as grey matter on T1
            (``t1_contrast >=`` :data:`GREY_MATTER_T1_CONTRAST`).
        """
        rows = []
        for v in self.visits:
            counts = np.bincount(v.lesion_ids.ravel(), minlength=len(self.lesions) + 1)
            vv = voxel_volume_mm3(v.voxel_size_mm)
            m = v.motion.matrix
            for les in self.lesions:
                c = les.centres_mm[v.index]
                w = m[:3, :3] @ c + m[:3, 3] if les.present(v.index) else np.full(3, np.nan)
                rows.append(
                    {
                        "lesion_id": les.lesion_id,
                        "session_id": f"ses-{v.session}",
                        "visit": v.index,
                        "week": v.week,
                        "status": les.status[v.index],
                        "enhancing": les.enhancing(v.index),
                        "enhancement": les.enhancement[v.index],
                        "periventricular": les.periventricular,
                        "centre_x_mm": float(w[0]),
                        "centre_y_mm": float(w[1]),
                        "centre_z_mm": float(w[2]),
                        "head_x_mm": float(c[0]),
                        "head_y_mm": float(c[1]),
                        "head_z_mm": float(c[2]),
                        "radius_mm": les.radius_mm(v.index),
                        "volume_mm3": les.volume_mm3(v.index),
                        "mask_voxels": int(counts[les.lesion_id]),
                        "mask_volume_mm3": float(counts[les.lesion_id] * vv),
                        "t1_factor": les.t1_factor,
                        "t1_contrast": t1_contrast(les.t1_factor),
                        "black_hole": bool(
                            les.present(v.index)
                            and not les.enhancing(v.index)
                            and t1_contrast(les.t1_factor) >= GREY_MATTER_T1_CONTRAST
                        ),
                    }
                )
        return rows

    def change_masks(self, visit: int) -> tuple[np.ndarray, np.ndarray]:
        """Truth of lesion change from the previous visit, on ``visit``'s grid.

        Like the Ljubljana longitudinal truth, only the changed voxels are
        marked: the whole of a new lesion, the added part of an enlarging one
        (``newenlarging``), the lost part of a shrinking one (``shrinking``).

        Parameters
        ----------
        visit : int
            0-based index, >= 1.

        Returns
        -------
        newenlarging, shrinking : ndarray, shape (X, Y, Z), bool
        """
        if not 1 <= visit < self.n_visits:
            raise InputError(
                f"change_masks: visit must be in [1, {self.n_visits - 1}], got {visit}"
            )
        v = self.visits[visit]
        shape = v.lesion_ids.shape
        sub = int(self.params["supersample"])
        prev = render_lesion_labels(
            self.lesions, visit - 1, v.affine, v.motion, shape, supersample=sub
        )
        cur = v.lesion_ids
        newenl = np.zeros(shape, bool)
        shrink = np.zeros(shape, bool)
        for les in self.lesions:
            st = les.status[visit]
            if st == "new":
                newenl |= cur == les.lesion_id
            elif st == "enlarging":
                newenl |= (cur == les.lesion_id) & (prev != les.lesion_id)
            elif st == "shrinking":
                shrink |= (prev == les.lesion_id) & (cur != les.lesion_id)
        return newenl, shrink


@dataclass(frozen=True, eq=False)
class BlockPhantom:
    """A tiny box phantom for unit tests (see :func:`make_block_phantom`).

    Attributes
    ----------
    image : ndarray, shape (X, Y, Z), float32
    lesion_ids : ndarray, shape (X, Y, Z), uint16
        1-based id of each sphere, in the order given.
    brain_mask : ndarray, shape (X, Y, Z), bool
    affine : ndarray, shape (4, 4)
        ``diag(voxel_size_mm, 1)``: RAS+ with the origin at voxel (0, 0, 0).
    voxel_size_mm : tuple of 3 float
    """

    image: np.ndarray
    lesion_ids: np.ndarray
    brain_mask: np.ndarray
    affine: np.ndarray
    voxel_size_mm: tuple[float, float, float]


# --------------------------------------------------------------------------- geometry


def _rng(seed: int, *key: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=tuple(key)))


def _ellipsoid_sd(
    x: np.ndarray, y: np.ndarray, z: np.ndarray, centre: Sequence[float], semi: Sequence[float]
) -> np.ndarray:
    """Approximate signed distance (mm, negative inside) to an axis-aligned ellipsoid.

    Distance along the ray from the centre: exact for spheres, close for mild
    eccentricities, which is all the phantom needs.
    """
    dx, dy, dz = x - centre[0], y - centre[1], z - centre[2]
    n = np.sqrt(dx * dx + dy * dy + dz * dz)
    r = np.sqrt((dx / semi[0]) ** 2 + (dy / semi[1]) ** 2 + (dz / semi[2]) ** 2)
    with np.errstate(divide="ignore", invalid="ignore"):
        sd = n - n / r
    return np.where(r < 1e-9, -float(min(semi)), sd)


def _inside(
    x: np.ndarray, y: np.ndarray, z: np.ndarray, centre: Sequence[float], semi: Sequence[float]
) -> np.ndarray:
    """Whether points are strictly inside an axis-aligned ellipsoid."""
    return (
        ((x - centre[0]) / semi[0]) ** 2
        + ((y - centre[1]) / semi[1]) ** 2
        + ((z - centre[2]) / semi[2]) ** 2
    ) < 1.0


def _smin(a: np.ndarray, b: np.ndarray, k: float) -> np.ndarray:
    """Smooth minimum (log-sum-exp, width ``k`` mm), stable for large values."""
    return np.minimum(a, b) - k * np.log1p(np.exp(-np.abs(a - b) / k))


@dataclass(frozen=True)
class _Anatomy:
    """Analytic anatomy in canonical units (head-space mm divided by ``scale``)."""

    scale: float
    ventricle: float  # ventricle size factor (atrophy)
    shape_k: np.ndarray  # (m, 3) low-frequency shape wave vectors (1/mm)
    shape_phase: np.ndarray
    shape_amp: np.ndarray
    gyri_k: np.ndarray  # (n, 3) gyral field wave vectors (1/mm)
    gyri_phase: np.ndarray
    skull_k: np.ndarray
    skull_phase: np.ndarray

    @staticmethod
    def _field(
        x, y, z, k: np.ndarray, phase: np.ndarray, amp: np.ndarray | None = None
    ) -> np.ndarray:
        """Sum of plane waves ``amp_j sin(k_j . p + phase_j)`` (unit variance by default)."""
        out = np.zeros_like(x)
        a = [math.sqrt(2.0 / len(phase))] * len(phase) if amp is None else amp.tolist()
        for (kx, ky, kz), ph, aj in zip(k.tolist(), phase.tolist(), a, strict=True):
            out += aj * np.sin(kx * x + ky * y + kz * z + ph)
        return out

    def cerebrum_sd(self, x, y, z) -> np.ndarray:
        """Cerebrum outer surface, before the tentorial carve-out."""
        zz = z - 6.0
        ax = 64.0 * (1.0 - 0.07 * np.clip(y / 80.0, -1, 1))  # wider at the back
        az = np.where(zz > 0.0, 47.0, 38.0)  # flatter base
        r = np.sqrt((x / ax) ** 2 + (y / 80.0) ** 2 + (zz / az) ** 2)
        pert = 1.0 + self._field(x, y, z, self.shape_k, self.shape_phase, self.shape_amp)
        n = np.sqrt(x * x + y * y + zz * zz)
        with np.errstate(divide="ignore", invalid="ignore"):
            sd = n - pert * n / r
        return np.where(r < 1e-9, -38.0, sd)

    @staticmethod
    def cerebellum_sd(x, y, z) -> np.ndarray:
        return _ellipsoid_sd(x, y, z, (0.0, -50.0, -36.0), (47.0, 27.0, 20.0))

    @staticmethod
    def brainstem_sd(x, y, z) -> np.ndarray:
        """Brainstem continuing down as the spinal cord (uncut)."""
        yc = -16.0 + 0.22 * (z + 10.0)
        rad = np.where(z > -45.0, 12.0, 8.0 + 4.0 * np.clip((z + 70.0) / 25.0, 0, 1))
        sd = np.sqrt(x * x + ((y - yc) * (12.0 / 13.0)) ** 2) - rad
        return np.maximum(sd, z + 4.0)  # top merges with the thalami

    def ventricle_r(self, x, y, z, side: float) -> np.ndarray:
        """Normalised radius (< 1 inside) of one lateral ventricle (banana shape)."""
        vs = self.ventricle
        ax = 4.0 * vs
        dx = x - side * (1.5 + ax)
        dy = y + 2.0
        dz = z - (13.0 - 9.0 * (dy / 28.0) ** 2)
        az = (5.0 + 1.5 * np.abs(dy) / 28.0) * vs  # slimmer body, wider horns
        return np.sqrt((dx / ax) ** 2 + (dy / 28.0) ** 2 + (dz / az) ** 2)

    def labels_at(self, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`labels` at head-space points ``p`` of shape (N, 3), mm."""
        return self.labels(p[:, 0], p[:, 1], p[:, 2])

    def labels(self, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Tissue labels and brain-envelope flags at head-space points.

        Parameters
        ----------
        x, y, z : ndarray, shape (N,)
            Head-space coordinates, mm.

        Returns
        -------
        labels : ndarray, shape (N,), uint8
            Values of :data:`TISSUE_LABELS` (never ``LESION``).
        envelope : ndarray, shape (N,), bool
            Inside the brain (cerebrum, cerebellum, brainstem above the foramen
            magnum, with ventricles and sulci).
        """
        # float32 halves the cost; positions stay exact to ~1e-5 mm
        x = (np.asarray(x) / self.scale).astype(np.float32)
        y = (np.asarray(y) / self.scale).astype(np.float32)
        z = (np.asarray(z) / self.scale).astype(np.float32)
        lab = np.zeros(x.shape[0], np.uint8)

        sd_cb_raw = self.cerebrum_sd(x, y, z)
        sd_cbl = self.cerebellum_sd(x, y, z)
        sd_bs = self.brainstem_sd(x, y, z)
        sd_bs_cut = np.maximum(sd_bs, -66.0 - z)  # foramen magnum
        envelope = _smin(_smin(sd_cb_raw, sd_cbl, 5.0), sd_bs_cut, 3.0)
        sd_layers = _smin(envelope, sd_bs, 3.0)

        # extra-cerebral layers: CSF, skull (bone, marrow, bone), galea, fat, skin
        csf_t = 2.5 + 1.5 * (self.ventricle - 1.0)
        s = sd_layers - csf_t
        skull_t = np.full_like(s, 7.0)
        band = np.flatnonzero((s > -1.0) & (s < 30.0))
        skull_t[band] += 1.5 * self._field(
            x[band], y[band], z[band], self.skull_k, self.skull_phase
        )
        s2 = s - skull_t
        lab[s < 0] = CSF
        lab[(s >= 0) & (s2 < 0)] = BONE
        lab[(s >= 0.3 * skull_t) & (s < 0.7 * skull_t)] = MARROW
        lab[(s2 >= 0) & (s2 < 1.5)] = SOFT
        lab[(s2 >= 1.5) & (s2 < 5.0)] = FAT
        lab[(s2 >= 5.0) & (s2 < 6.5)] = SOFT
        outside = s2 >= 6.5

        # neck and face, where the layers leave air; orbits and eyes
        neck_r = (x / 50.0) ** 2 + ((y + 14.0) / 54.0) ** 2 + ((z + 150.0) / 106.0) ** 2
        neck = (neck_r < 1.0) & outside
        lab[neck] = SOFT
        lab[neck & (neck_r > 0.93**2)] = FAT
        face_r = (x / 56.0) ** 2 + ((y - 50.0) / 42.0) ** 2 + ((z + 52.0) / 38.0) ** 2
        face = (face_r < 1.0) & outside
        lab[face] = SOFT
        lab[face & (face_r > 0.9**2)] = FAT
        for side in (-1.0, 1.0):
            d2 = (x - side * 30.0) ** 2 + (y - 60.0) ** 2 + (z + 42.0) ** 2
            lab[(d2 < 15.0**2) & (s >= 0)] = FAT
            lab[(d2 < 11.5**2) & (s >= 0)] = EYE

        # cerebrum: cortex, sulci, white matter
        sd_cb = np.maximum(sd_cb_raw, 4.0 - sd_cbl)  # tentorial gap above the cerebellum
        cb = sd_cb < 0
        lab[cb] = WM
        lab[cb & (sd_cb > -3.5)] = GM
        near = np.flatnonzero(cb & (sd_cb > -14.0))
        h = np.abs(self._field(x[near], y[near], z[near], self.gyri_k, self.gyri_phase))
        lab[near[h < 0.6]] = GM
        lab[near[(h < 0.15) & (sd_cb[near] > -12.0)]] = CSF
        # interhemispheric fissure above the corpus callosum, medial cortex
        zcc = (
            24.0 - 40.0 * (y / 56.0) ** 4
        )  # top of the corpus callosum, falling away in front/back
        fiss = cb & (np.abs(x) < 4.5) & (z > zcc)
        lab[fiss] = GM
        lab[fiss & (np.abs(x) < 1.3)] = CSF

        # cerebellum (grey shell, white core) and brainstem
        cbl = sd_cbl < 0
        lab[cbl] = GM
        icbl = np.flatnonzero(cbl & (sd_cbl < -2.5))
        theta = np.arctan2(z[icbl] + 36.0, y[icbl] + 50.0)
        folia = (sd_cbl[icbl] < -8.0) | (np.sin(14.0 * theta + 0.3 * x[icbl]) > 0.35)
        lab[icbl[folia]] = WM  # white core with arbor-vitae-like branches into the folia
        bs = sd_bs < 0
        lab[bs] = WM

        # central structures, evaluated in a box only
        vs = self.ventricle
        box = np.flatnonzero(
            (np.abs(x) < 40.0) & (np.abs(y + 10.0) < 42.0) & (z > -45.0) & (z < 35.0)
        )
        bx, by, bz = x[box], y[box], z[box]
        blab = lab[box]
        in_cb = cb[box] & ~bs[box]
        for side in (-1.0, 1.0):
            deep = (
                _inside(bx, by, bz, (side * (1.5 * vs + 9.0), -12.0, 0.0), (8.0, 13.0, 8.0))
                | _inside(bx, by, bz, (side * 24.0, 3.0, 1.0), (6.0, 14.0, 9.0))
                | _inside(bx, by, bz, (side * (1.5 + 8.0 * vs + 2.5), 13.0, 9.0), (4.0, 10.0, 6.0))
            )
            blab[in_cb & deep] = DGM
        blab[_inside(bx, by, bz, (0.0, -33.0, -34.0), (2.5 * vs, 4.0, 7.0))] = CSF  # 4th ventricle
        for side in (-1.0, 1.0):
            vent = self.ventricle_r(bx, by, bz, side) < 1.0
            blab[vent] = CSF
            chor = _inside(
                bx, by, bz, (side * (1.5 + 4.0 * vs), -22.0, 6.0 + 2.0 * vs), (2.0, 5.0, 2.0)
            )
            blab[chor & vent] = CHOROID
        blab[_inside(bx, by, bz, (0.0, -6.0, -2.0), (1.2 * vs, 12.0, 8.0))] = CSF  # 3rd ventricle
        lab[box] = blab
        # superior sagittal sinus in the dura at the vertex
        sss = (np.abs(x) < 3.5) & (sd_layers > -1.0) & (sd_layers < csf_t + 1.0) & (z > 5.0)
        lab[sss] = VESSEL
        return lab, envelope < 0


def _draw_anatomy(seed: int, head_scale: float) -> _Anatomy:
    rng = _rng(seed, 0)

    def waves(m: int, lo: float, hi: float) -> tuple[np.ndarray, np.ndarray]:
        d = rng.normal(size=(m, 3))
        d /= np.linalg.norm(d, axis=1, keepdims=True)
        lam = rng.uniform(lo, hi, size=(m, 1))
        return d * (2 * math.pi / lam), rng.uniform(0, 2 * math.pi, size=m)

    sk, sp = waves(4, 120.0, 220.0)
    gk, gp = waves(10, 20.0, 30.0)
    kk, kp = waves(3, 60.0, 120.0)
    return _Anatomy(
        scale=float(head_scale * rng.uniform(0.96, 1.04)),
        ventricle=float(rng.uniform(0.9, 1.5)),
        shape_k=sk,
        shape_phase=sp,
        shape_amp=rng.uniform(0.01, 0.03, size=4),
        gyri_k=gk,
        gyri_phase=gp,
        skull_k=kk,
        skull_phase=kp,
    )


def _rotation_with_axis(axis: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A rotation matrix whose first column is ``axis`` (unit), the others random."""
    a = axis / np.linalg.norm(axis)
    t = rng.normal(size=3)
    t -= a * (t @ a)
    t /= np.linalg.norm(t)
    return np.stack([a, t, np.cross(a, t)], axis=1)


def _sphere_dirs(n: int = 48) -> np.ndarray:
    """``n`` roughly uniform unit vectors (Fibonacci sphere), shape (n, 3)."""
    i = np.arange(n) + 0.5
    z = 1.0 - 2.0 * i / n
    phi = math.pi * (3.0 - math.sqrt(5.0)) * i
    r = np.sqrt(1.0 - z * z)
    return np.stack([r * np.cos(phi), r * np.sin(phi), z], axis=1)


_DIRS = _sphere_dirs()


# --------------------------------------------------------------------------- lesion schedule


@dataclass
class _LesionPlan:
    lesion_id: int
    onset: int
    semi: np.ndarray  # at onset, mm; semi[0] is the long axis
    rotation: np.ndarray  # columns = lesion axes in head space
    periventricular: bool
    flair_factor: float
    t1_factor: float
    can_grow: bool = False
    change_visit: int = -1
    change_factor: float = 1.0
    enhance_visit: int = -1
    ring: bool = False
    centre: np.ndarray = field(default_factory=lambda: np.zeros(3))

    def geometry(self, visit: int) -> tuple[np.ndarray, np.ndarray] | None:
        """(centre, semi-axes) at ``visit`` in head space, or None when absent.

        A size change is a homothety of ratio ``change_factor`` about the tip of
        the long axis on the ``-axis`` side (for periventricular lesions the tip
        at the ventricle wall), so the smaller ellipsoid lies inside the larger
        one and touches it there.
        """
        if visit < self.onset:
            return None
        if self.change_visit < 0 or visit < self.change_visit:
            return self.centre.copy(), self.semi.copy()
        k = self.change_factor
        tip = -self.semi[0] * self.rotation[:, 0]
        return self.centre + (1.0 - k) * tip, self.semi * k

    def extent(self) -> tuple[np.ndarray, float]:
        """Centre and radius (mm) of a sphere holding the lesion at every visit."""
        c, r = _extent(self.centre, self.rotation[:, 0], float(self.semi[0]), self.can_grow)
        return c, float(r)


def _extent(centre: np.ndarray, axis: np.ndarray, semi_long, can_grow: bool):
    """Sphere holding a lesion whatever its size change (vectorised over rows)."""
    semi_long = np.asarray(semi_long, dtype=float)
    if not can_grow:
        return centre, semi_long
    return centre + (_MAX_GROWTH - 1.0) * semi_long[..., None] * axis, _MAX_GROWTH * semi_long


def _plan_lesions(
    seed: int,
    anat: _Anatomy,
    n_visits: int,
    n_baseline: int | None,
    new_per_visit: float,
) -> list[_LesionPlan]:
    plans: list[_LesionPlan] = []
    for v in range(n_visits):
        rng = _rng(seed, 2, v)
        if v == 0:
            count = int(rng.integers(6, 10)) if n_baseline is None else int(n_baseline)
            if count < 4:
                raise InputError(f"make_subject: n_baseline must be >= 4, got {n_baseline}")
        else:
            count = int(rng.poisson(new_per_visit)) if new_per_visit > 0 else 0
            if v <= 2 and new_per_visit > 0:
                count = max(1, count)  # the first two follow-ups always have a new lesion
        if v > 0:
            # one enlarging and one shrinking lesion among those present before this
            # visit (when there are candidates); each lesion changes size at most once
            cands = [p for p in plans if p.onset < v and p.change_visit < 0]
            grow = [p for p in cands if p.can_grow]
            if grow:
                p = grow[int(rng.integers(len(grow)))]
                p.change_visit, p.change_factor = v, float(rng.uniform(1.30, _MAX_GROWTH))
                if p.enhance_visit < 0 and rng.random() < 0.5:
                    p.enhance_visit, p.ring = v, bool(rng.random() < 0.3)
                cands.remove(p)
            shrink = [
                p for p in cands if not p.can_grow and float(np.prod(p.semi) ** (1 / 3)) >= 3.5
            ]
            if shrink:
                p = shrink[int(rng.integers(len(shrink)))]
                p.change_visit, p.change_factor = v, float(rng.uniform(0.70, 0.80))
        new_here: list[_LesionPlan] = []
        for i in range(count):
            if v == 0 and i < 2:  # room to enlarge at the first two follow-ups
                r_eq, may_grow = float(rng.uniform(2.5, _GROW_MAX_RADIUS_MM)), True
            elif v == 0 and i < 4:  # big enough to shrink at the first two follow-ups
                r_eq, may_grow = float(rng.uniform(3.5, 5.5)), False
            else:
                r_eq = float(rng.uniform(2.5, 5.5) if v == 0 else rng.uniform(2.5, 4.5))
                may_grow = r_eq <= _GROW_MAX_RADIUS_MM and bool(rng.random() < _GROW_ELIGIBLE)
            plan = _LesionPlan(
                lesion_id=len(plans) + 1,
                onset=v,
                semi=np.zeros(3),
                rotation=np.eye(3),
                periventricular=bool(rng.random() < 0.4),
                flair_factor=float(rng.uniform(0.9, 1.15)),
                t1_factor=float(rng.uniform(0.55, 1.0)),
                can_grow=may_grow,
            )
            try:
                _place(plan, r_eq, plans, anat, rng)
            except ProcessingError:
                if v <= 2:
                    raise
                # white matter is full: later visits get no more new lesions
                log.info(
                    "phantom: no room for new lesion %d at visit %d, skipped", plan.lesion_id, v
                )
                break
            plans.append(plan)
            new_here.append(plan)
        if v == 0:
            # one or two baseline lesions enhance at baseline
            for p in new_here[: int(rng.integers(1, 3))]:
                p.enhance_visit, p.ring = 0, bool(rng.random() < 0.4)
        else:
            # new lesions usually enhance when they appear; the first one always does
            for i, p in enumerate(new_here):
                if i == 0 or rng.random() < 0.7:
                    p.enhance_visit, p.ring = v, bool(rng.random() < 0.35)
    for p in plans:
        if p.ring and float(np.prod(p.semi) ** (1 / 3)) < 4.0:
            p.ring = False  # too small for a visible ring
    return plans


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v)


def _place(
    plan: _LesionPlan,
    r_eq: float,
    placed: list[_LesionPlan],
    anat: _Anatomy,
    rng: np.random.Generator,
    max_tries: int = 80,
    batch: int = 48,
) -> None:
    """Choose centre, shape and orientation of a lesion in white matter (in place).

    Lesion sizes are in mm whatever the head scale. The lesion core must be
    white matter; the sphere that holds the lesion at every visit (see
    :meth:`_LesionPlan.extent`) plus a margin must be white matter (for
    periventricular lesions white matter or ventricle CSF, and the ventricle
    must be within 1.5 mm of the lesion tip) and >= ``_MIN_GAP_MM`` away from
    the spheres of the lesions already placed. A periventricular lesion that
    finds no room after a quarter of the tries becomes a deep white matter one.
    """
    s = anat.scale
    others = [p.extent() for p in placed]
    nd = len(_DIRS)
    for attempt in range(max_tries):
        if plan.periventricular and attempt == max_tries // 4:
            # the periventricular band is full: place it in deep white matter instead
            log.debug("phantom: lesion %d placed in deep white matter", plan.lesion_id)
            plan.periventricular = False
        if plan.periventricular:
            side = rng.choice([-1.0, 1.0], size=batch)
            vs = anat.ventricle
            dy = rng.uniform(-24.0, 24.0, size=batch)
            zc = 13.0 - 9.0 * (dy / 28.0) ** 2
            ang = rng.uniform(-0.2 * math.pi, 0.75 * math.pi, size=batch)  # lateral..superior
            base = np.stack([side * (1.5 + 4.0 * vs), dy - 2.0, zc], axis=1)
            axis = np.stack([side * np.cos(ang), np.zeros(batch), np.sin(ang)], axis=1)
            # distance (canonical mm) from the ventricle centre line to its wall along `axis`
            az = (5.0 + 1.5 * np.abs(dy) / 28.0) * vs
            shrink = np.sqrt(np.clip(1.0 - (dy / 28.0) ** 2, 0.0, 1.0))
            wall = shrink / np.sqrt((np.cos(ang) / (4.0 * vs)) ** 2 + (np.sin(ang) / az) ** 2)
            elong = rng.uniform(1.3, 1.6, size=batch)
            semi_long = r_eq * elong ** (2 / 3)
            gap = rng.uniform(0.3, 1.0, size=batch)
            cand = base * s + axis * (wall * s + semi_long + gap)[:, None]
        else:
            cand = rng.uniform([-50.0, -70.0, -25.0], [50.0, 70.0, 48.0], size=(batch, 3)) * s
            axis = rng.normal(size=(batch, 3))
            axis /= np.linalg.norm(axis, axis=1, keepdims=True)
            elong = rng.uniform(1.0, 1.3, size=batch)
            semi_long = r_eq * elong ** (2 / 3)
        semi_short = r_eq * elong ** (-1 / 3)
        ec, er = _extent(cand, axis, semi_long, plan.can_grow)
        margin = 0.5 if plan.periventricular else 2.0
        tips = (
            np.array([1.0, -1.0])[None, :, None]
            * axis[:, None, :]
            * (0.9 * semi_long)[:, None, None]
        )
        pts = [
            cand[:, None, :],
            cand[:, None, :] + tips,
            cand[:, None, :] + _DIRS[None] * (0.8 * semi_short)[:, None, None],
            ec[:, None, :] + _DIRS[None] * (er + margin)[:, None, None],
            ec[:, None, :] + _DIRS[None] * (0.5 * (er + margin + semi_short))[:, None, None],
            (cand - axis * (semi_long + 1.5)[:, None])[:, None, :],
        ]
        lab, _ = anat.labels_at(np.concatenate(pts, axis=1).reshape(-1, 3))
        lab = lab.reshape(batch, -1)
        n_core = 3 + nd
        ok = (lab[:, :n_core] == WM).all(axis=1)
        rim = lab[:, n_core : n_core + 2 * nd]
        if plan.periventricular:
            ok &= np.isin(rim, (WM, CSF)).all(axis=1) & (lab[:, -1] == CSF)
        else:
            ok &= (rim == WM).all(axis=1)
        for i in np.flatnonzero(ok):
            if all(np.linalg.norm(ec[i] - oc) >= orad + er[i] + _MIN_GAP_MM for oc, orad in others):
                e = float(elong[i])
                plan.semi = np.array(
                    [r_eq * e ** (2 / 3), r_eq * e ** (-1 / 3), r_eq * e ** (-1 / 3)]
                )
                plan.rotation = _rotation_with_axis(axis[i], rng)
                plan.centre = cand[i]
                return
    raise ProcessingError(
        f"phantom: could not place lesion {plan.lesion_id} (radius {r_eq:.1f} mm) in white "
        f"matter after {max_tries * batch} tries; use fewer visits or a lower new_per_visit"
    )


def _finalise(plans: list[_LesionPlan], n_visits: int) -> tuple[LesionTruth, ...]:
    out = []
    for p in plans:
        centres = np.full((n_visits, 3), np.nan)
        semis = np.zeros((n_visits, 3))
        status, enh = [], []
        for v in range(n_visits):
            g = p.geometry(v)
            if g is None:
                status.append("absent")
            else:
                centres[v], semis[v] = g
                if v == p.onset:
                    status.append("baseline" if v == 0 else "new")
                elif v == p.change_visit:
                    status.append("enlarging" if p.change_factor > 1 else "shrinking")
                else:
                    status.append("stable")
            enh.append(("ring" if p.ring else "nodular") if v == p.enhance_visit else "none")
        out.append(
            LesionTruth(
                lesion_id=p.lesion_id,
                onset_visit=p.onset,
                centres_mm=centres,
                semi_axes_mm=semis,
                rotation=p.rotation,
                status=tuple(status),
                enhancement=tuple(enh),
                periventricular=p.periventricular,
                flair_factor=p.flair_factor,
                t1_factor=p.t1_factor,
            )
        )
    return tuple(out)


# --------------------------------------------------------------------------- rendering


def _grid_points(
    matrix: np.ndarray,
    index_lo: Sequence[int] | np.ndarray,
    index_hi: Sequence[int] | np.ndarray,
    sub: int,
    dtype: type = np.float64,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Coordinates of the sample points of the voxels in [lo, hi) under ``matrix``.

    Each voxel has ``sub`` points spread evenly along array axis 2 (the slice
    axis). ``matrix`` (4x4) maps voxel indices to the wanted space (world, or
    head space with the inverse motion folded in).

    Returns
    -------
    x, y, z : ndarray, shape (sub, X, Y, Z)
        Sample point ``s`` of voxel (i, j, k) is at ``[s, i, j, k]``.
    """
    i: np.ndarray = np.arange(index_lo[0], index_hi[0], dtype=dtype)[None, :, None, None]
    j: np.ndarray = np.arange(index_lo[1], index_hi[1], dtype=dtype)[None, None, :, None]
    offs: np.ndarray = ((np.arange(sub) + 0.5) / sub - 0.5).astype(dtype)
    k = (
        np.arange(index_lo[2], index_hi[2], dtype=dtype)[None, None, None, :]
        + offs[:, None, None, None]
    )
    a = matrix.tolist()
    return tuple(a[r][0] * i + a[r][1] * j + (a[r][2] * k + a[r][3]) for r in range(3))  # type: ignore[return-value]


def _lesion_fraction(
    les: LesionTruth, visit: int, x: np.ndarray, y: np.ndarray, z: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Inside and ring-shell flags of one lesion at head-space points."""
    c = les.centres_mm[visit]
    semi = les.semi_axes_mm[visit]
    r2 = np.zeros(np.broadcast_shapes(x.shape, y.shape, z.shape))
    for a in range(3):
        u = les.rotation[:, a]
        r2 += (((x - c[0]) * u[0] + (y - c[1]) * u[1] + (z - c[2]) * u[2]) / semi[a]) ** 2
    inside = r2 < 1.0
    shell = inside & (r2 > (1.0 - _RING_THICKNESS_MM / float(min(semi))) ** 2)
    return inside, shell


def _lesion_box(
    les: LesionTruth, visit: int, affine: np.ndarray, motion: RigidMotion, shape: Sequence[int]
) -> tuple[np.ndarray, np.ndarray] | None:
    m = motion.matrix
    cw = m[:3, :3] @ les.centres_mm[visit] + m[:3, 3]
    vox = np.linalg.solve(affine[:3, :3], cw - affine[:3, 3])
    vs = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
    half = float(max(les.semi_axes_mm[visit])) / vs + 1.5
    lo = np.maximum(np.floor(vox - half).astype(int), 0)
    hi = np.minimum(np.ceil(vox + half).astype(int) + 1, np.asarray(shape))
    if np.any(hi <= lo):
        return None
    return lo, hi


def render_lesion_labels(
    lesions: Sequence[LesionTruth],
    visit: int,
    affine: np.ndarray,
    motion: RigidMotion,
    shape: Sequence[int],
    *,
    supersample: int = 3,
) -> np.ndarray:
    """Lesion id map of the lesions as they are at ``visit``, on any grid.

    Parameters
    ----------
    lesions : sequence of LesionTruth
    visit : int
        0-based visit whose lesion sizes are drawn.
    affine : ndarray, shape (4, 4)
        Target grid, voxel -> world RAS+ mm.
    motion : RigidMotion
        Head space -> the target grid's world (the head position on that grid).
    shape : tuple of 3 int
    supersample : int
        Sample points per voxel along array axis 2; a voxel belongs to a lesion
        when at least half of its points are inside.

    Returns
    -------
    ndarray, shape ``shape``, uint16
        Lesion ids, 0 elsewhere.
    """
    out = np.zeros(tuple(shape), np.uint16)
    inv = motion.inverse_matrix
    for les in lesions:
        if not les.present(visit):
            continue
        box = _lesion_box(les, visit, affine, motion, shape)
        if box is None:
            continue
        lo, hi = box
        inside, _ = _lesion_fraction(les, visit, *_grid_points(inv @ affine, lo, hi, supersample))
        sel = inside.mean(axis=0) >= 0.5
        sl = tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))
        out[sl][sel] = les.lesion_id
    return out


def _bias_field(rng: np.random.Generator, shape: Sequence[int], strength: float) -> np.ndarray:
    """Smooth multiplicative field exp(2nd-order polynomial), mean about 1."""
    u = [np.linspace(-1.0, 1.0, n, dtype=np.float32) for n in shape]
    x, y, z = np.meshgrid(*u, indexing="ij", sparse=True)
    c = rng.normal(scale=strength / 2.0, size=9).tolist()
    # 2nd order polynomial, grouped so that only one full-size array is made
    xy = c[0] * x + c[6] * (x * x - 1 / 3) + (c[1] * y + c[7] * (y * y - 1 / 3) + c[3] * x * y)
    log_b = xy + (c[2] * z + c[8] * (z * z - 1 / 3) + c[4] * x * z + c[5] * y * z)
    return np.exp(log_b).astype(np.float32)


def _render_visit(
    *,
    seed: int,
    index: int,
    anat: _Anatomy,
    lesions: tuple[LesionTruth, ...],
    affine: np.ndarray,
    motion: RigidMotion,
    shape: tuple[int, int, int],
    supersample: int,
    snr: float,
    bias_strength: float,
    zero_background: bool,
) -> dict:
    sub = supersample
    vox_to_head = motion.inverse_matrix @ affine
    hx, hy, hz = _grid_points(vox_to_head, (0, 0, 0), shape, sub, dtype=np.float32)
    # cheap rejection of air far outside the head
    q = anat.scale
    head = np.flatnonzero(
        (
            (hx / (100.0 * q)) ** 2
            + ((hy - 5.0 * q) / (120.0 * q)) ** 2
            + ((hz + 10.0 * q) / (110.0 * q)) ** 2
        )
        < 1.0
    )
    lab_flat = np.zeros(hx.size, np.uint8)
    env_flat = np.zeros(hx.size, bool)
    lab_flat[head], env_flat[head] = anat.labels(
        hx.ravel()[head], hy.ravel()[head], hz.ravel()[head]
    )
    lab = lab_flat.reshape(sub, *shape)
    env = env_flat.reshape(sub, *shape)
    del hx, hy, hz

    images = {}
    for c in CONTRASTS:
        lut = np.asarray(_LUT[c], np.float32) / np.float32(sub)
        img = lut[lab[0]]
        for si in range(1, sub):
            img += lut[lab[si]]
        images[c] = img
    brain = env.sum(axis=0) * 2 >= sub
    tissue = lab[sub // 2].copy()

    ids = np.zeros(shape, np.uint16)
    enh = np.zeros(shape, bool)
    for les in lesions:
        if not les.present(index):
            continue
        box = _lesion_box(les, index, affine, motion, shape)
        if box is None:
            continue
        lo, hi = box
        sl = tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))
        inside, shell = _lesion_fraction(les, index, *_grid_points(vox_to_head, lo, hi, sub))
        f = inside.mean(axis=0).astype(np.float32)
        sel = f >= 0.5
        ids[sl][sel] = les.lesion_id
        tissue[sl][sel] = LESION
        val = {
            "FLAIR": _LUT["FLAIR"][LESION] * les.flair_factor,
            "T2w": _LUT["T2w"][LESION] * les.flair_factor,
            "T1w": _LUT["T1w"][LESION] * les.t1_factor,
            "ce-gadolinium_T1w": _LUT["ce-gadolinium_T1w"][LESION] * les.t1_factor,
        }
        for c in CONTRASTS:
            img = images[c][sl]
            images[c][sl] = (1.0 - f) * img + f * np.float32(val[c])
        kind = les.enhancement[index]
        if kind != "none":
            ef = (shell if kind == "ring" else inside).mean(axis=0).astype(np.float32)
            images["ce-gadolinium_T1w"][sl] += ef * np.float32(_ENHANCEMENT)
            enh[sl] |= sel

    keep = None
    if zero_background:
        # scanner-style background suppression: air > 2 voxels from the head is 0
        keep = ndi.binary_dilation(lab.any(axis=0), iterations=2)
    out_images = {}
    for ci, c in enumerate(CONTRASTS):
        rng = _rng(seed, 5, index, ci)
        img = ndi.gaussian_filter(images[c], sigma=(0.5, 0.5, 0.0), mode="constant") * _SCALE[c]
        img *= _bias_field(rng, shape, bias_strength)
        sigma = float(np.float32(_SCALE[c] * 0.5 * (_LUT[c][GM] + _LUT[c][WM]) / snr))
        n1 = rng.standard_normal(size=shape, dtype=np.float32) * sigma
        n2 = rng.standard_normal(size=shape, dtype=np.float32) * sigma
        img = np.sqrt((img + n1) ** 2 + n2**2)
        if keep is not None:
            img[~keep] = 0.0
        out_images[c] = np.clip(np.rint(img), 0, 32767).astype(np.float32)
    return {"images": out_images, "ids": ids, "enh": enh, "brain": brain, "tissue": tissue}


# --------------------------------------------------------------------------- public API


def default_weeks(n_visits: int) -> tuple[int, ...]:
    """Nominal trial weeks: 0, 4, 12, then every 12 weeks.

    Examples
    --------
    >>> default_weeks(5)
    (0, 4, 12, 24, 36)
    """
    if n_visits < 1:
        raise InputError(f"n_visits must be >= 1, got {n_visits}")
    w = list(DEFAULT_WEEKS[:n_visits])
    while len(w) < n_visits:
        w.append(w[-1] + 12)
    return tuple(w)


def make_subject(
    seed: int,
    *,
    label: str = "phantom01",
    n_visits: int = 3,
    shape: tuple[int, int, int] = (96, 112, 48),
    voxel_size_mm: tuple[float, float, float] = (2.0, 2.0, 3.0),
    head_scale: float = 0.9,
    weeks: Sequence[int] | None = None,
    n_baseline: int | None = None,
    new_per_visit: float = 1.5,
    max_rotation_deg: float = 3.0,
    max_translation_mm: float = 3.0,
    fov_jitter_mm: float = 2.0,
    supersample: int = 3,
    snr: float = 22.0,
    bias_strength: float = 0.25,
    zero_background: bool = True,
) -> PhantomSubject:
    """Make a synthetic multi-visit MS subject with known truth.

    Parameters
    ----------
    seed : int
        Seed of every random choice; the same seed gives identical arrays.
    label : str
        BIDS subject label (without ``sub-``).
    n_visits : int
        Number of visits (>= 1). Visits are rendered with the same seeds
        whatever ``n_visits`` is, so the first visits do not depend on it.
    shape : tuple of 3 int
        Grid shape (X, Y, Z) of every visit; Z is the slice axis.
    voxel_size_mm : tuple of 3 float
        Voxel edge lengths in mm (thick slices like a 2-D FLAIR by default).
    head_scale : float
        Head size relative to an adult head (about 150 x 190 mm outside); the
        default fits the default 192 x 224 x 144 mm field of view with margins.
    weeks : sequence of int, optional
        Nominal week of each visit; default :func:`default_weeks`.
    n_baseline : int, optional
        Lesions at baseline (>= 4); default random in [6, 9]. Lesions 1-2 may
        enlarge and 3-4 are big enough to shrink, so each of the first two
        follow-ups has exactly one enlarging, exactly one shrinking and at
        least one new lesion (and at least one new enhancing lesion).
    new_per_visit : float
        Mean number of new lesions per follow-up visit (Poisson; at least 1 at
        the first two follow-ups when > 0). From the fourth visit on, a new
        lesion that finds no room in the white matter (after about 30 lesions)
        is dropped with the rest of that visit's new lesions (logged at INFO).
    max_rotation_deg, max_translation_mm : float
        Bounds of the head motion of each follow-up visit relative to baseline,
        per axis; every axis moves by at least a third of its bound.
    fov_jitter_mm : float
        Bound (per axis) of the shift of each visit's field-of-view centre.
    supersample : int
        Sample points per voxel along the slice axis (partial volume).
    snr : float
        Mean of grey and white matter signal over the noise sigma.
    bias_strength : float
        Scale of the log bias-field coefficients (0 = no bias field).
    zero_background : bool
        Set air more than 2 voxels away from the head to exactly 0, as many
        scanner exports do (the real Ljubljana raw scans are ~60 % zeros);
        False keeps Rician noise everywhere.

    Returns
    -------
    PhantomSubject

    Raises
    ------
    InputError
        A parameter is out of range.
    ProcessingError
        The lesions cannot all be placed (too many for the white matter).

    Examples
    --------
    >>> s = make_subject(1, n_visits=2)
    >>> s.visits[0].images["FLAIR"].shape, s.visits[1].session
    ((96, 112, 48), '02')
    """
    if n_visits < 1:
        raise InputError(f"make_subject: n_visits must be >= 1, got {n_visits}")
    if len(shape) != 3 or min(shape) < 8:
        raise InputError(f"make_subject: shape must be 3 ints >= 8, got {shape!r}")
    voxel_volume_mm3(voxel_size_mm)  # validates
    if supersample < 1:
        raise InputError(f"make_subject: supersample must be >= 1, got {supersample}")
    if snr <= 0:
        raise InputError(f"make_subject: snr must be > 0, got {snr}")
    weeks = tuple(int(w) for w in (default_weeks(n_visits) if weeks is None else weeks))
    if len(weeks) != n_visits or any(b <= a for a, b in zip(weeks, weeks[1:], strict=False)):
        raise InputError(f"make_subject: weeks must be {n_visits} increasing ints, got {weeks!r}")
    shape = tuple(int(s) for s in shape)  # type: ignore[assignment]

    anat = _draw_anatomy(seed, head_scale)
    plans = _plan_lesions(seed, anat, n_visits, n_baseline, new_per_visit)
    lesions = _finalise(plans, n_visits)

    rng_dates = _rng(seed, 4)
    base_date = _dt.datetime(2025, 1, 6, 8, 0) + _dt.timedelta(
        days=int(rng_dates.integers(0, 365)), minutes=15 * int(rng_dates.integers(0, 40))
    )
    vs = np.asarray(voxel_size_mm, float)
    visits = []
    for v in range(n_visits):
        rng = _rng(seed, 3, v)
        if v == 0:
            motion = RigidMotion()
        else:
            sign = rng.choice([-1.0, 1.0], size=6)
            rot = sign[:3] * rng.uniform(max_rotation_deg / 3, max_rotation_deg, size=3)
            tra = sign[3:] * rng.uniform(max_translation_mm / 3, max_translation_mm, size=3)
            r4 = [round(float(a), 4) for a in rot]
            t4 = [round(float(t), 4) for t in tra]
            motion = RigidMotion((r4[0], r4[1], r4[2]), (t4[0], t4[1], t4[2]))
        centre = np.array([0.0, -8.0, 2.0]) * head_scale + rng.uniform(
            -fov_jitter_mm, fov_jitter_mm, 3
        )
        centre = np.round(centre, 3)
        affine = np.diag([-vs[0], vs[1], vs[2], 1.0])
        affine[:3, 3] = centre - affine[:3, :3] @ ((np.asarray(shape) - 1) / 2.0)
        when = base_date + _dt.timedelta(
            days=7 * weeks[v] + (int(rng.integers(-3, 4)) if v else 0),
            minutes=int(rng.integers(0, 120)),
        )
        r = _render_visit(
            seed=seed,
            index=v,
            anat=anat,
            lesions=lesions,
            affine=affine,
            motion=motion,
            shape=shape,  # type: ignore[arg-type]
            supersample=supersample,
            snr=snr,
            bias_strength=bias_strength,
            zero_background=zero_background,
        )
        visits.append(
            PhantomVisit(
                index=v,
                session=f"{v + 1:02d}",
                week=weeks[v],
                acq_time=when.strftime("%Y-%m-%dT%H:%M:%S"),
                affine=affine,
                motion=motion,
                images=r["images"],
                lesion_ids=r["ids"],
                enhancing_mask=r["enh"],
                brain_mask=r["brain"],
                tissue=r["tissue"],
            )
        )
    params = {
        "seed": int(seed),
        "n_visits": n_visits,
        "shape": list(shape),
        "voxel_size_mm": [float(x) for x in voxel_size_mm],
        "head_scale": float(head_scale),
        "weeks": list(weeks),
        "n_baseline": n_baseline,
        "new_per_visit": float(new_per_visit),
        "max_rotation_deg": float(max_rotation_deg),
        "max_translation_mm": float(max_translation_mm),
        "fov_jitter_mm": float(fov_jitter_mm),
        "supersample": int(supersample),
        "snr": float(snr),
        "bias_strength": float(bias_strength),
        "zero_background": bool(zero_background),
    }
    log.debug("phantom %s: %d visits, %d lesions", label, n_visits, len(lesions))
    return PhantomSubject(
        label=label, seed=int(seed), visits=tuple(visits), lesions=lesions, params=params
    )


def make_block_phantom(
    shape: tuple[int, int, int] = (32, 32, 16),
    voxel_size_mm: tuple[float, float, float] = (1.0, 1.0, 2.0),
    *,
    lesions: Sequence[tuple[tuple[float, float, float], float]] = (
        ((10.0, 10.0, 8.0), 3.0),
        ((22.0, 20.0, 8.0), 2.0),
    ),
    background: float = 100.0,
    lesion_intensity: float = 200.0,
    margin_voxels: int = 2,
    noise_sd: float = 0.0,
    seed: int = 0,
) -> BlockPhantom:
    """A tiny box "brain" with bright spherical lesions, for fast unit tests.

    Parameters
    ----------
    shape : tuple of 3 int
    voxel_size_mm : tuple of 3 float
    lesions : sequence of ((i, j, k), radius_mm)
        Sphere centres in voxel indices and radii in mm; a voxel is inside when
        its centre is (distance <= radius, inclusive). Ids follow the order.
    background : float
        Intensity inside the box (outside it is 0).
    lesion_intensity : float
    margin_voxels : int
        Width of the zero border around the box.
    noise_sd : float
        Gaussian noise sigma added everywhere (0 = none).
    seed : int

    Returns
    -------
    BlockPhantom

    Examples
    --------
    >>> b = make_block_phantom()
    >>> b.image.shape, int(b.lesion_ids.max())
    ((32, 32, 16), 2)
    """
    voxel_volume_mm3(voxel_size_mm)
    vs = np.asarray(voxel_size_mm, float)
    idx = np.indices(shape, dtype=float)
    ids = np.zeros(shape, np.uint16)
    for n, (c, radius_mm) in enumerate(lesions, start=1):
        d2 = sum(((idx[a] - c[a]) * vs[a]) ** 2 for a in range(3))
        ids[d2 <= radius_mm**2] = n
    m = int(margin_voxels)
    brain = np.zeros(shape, bool)
    brain[m : shape[0] - m, m : shape[1] - m, m : shape[2] - m] = True
    img = np.where(brain, background, 0.0)
    img[ids > 0] = lesion_intensity
    if noise_sd > 0:
        img = img + np.random.default_rng(seed).normal(scale=noise_sd, size=shape)
    return BlockPhantom(
        image=img.astype(np.float32),
        lesion_ids=ids,
        brain_mask=brain,
        affine=np.diag([*vs, 1.0]),
        voxel_size_mm=(float(vs[0]), float(vs[1]), float(vs[2])),
    )
