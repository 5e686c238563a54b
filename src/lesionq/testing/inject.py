"""Synthetic MS lesions planted into real images, with exact voxel truth.

Used by the benchmarks (``benchmarks/bench_segmentation.py``) and by tests to
measure a segmentation on lesions of known size, shape, contrast and place in
real brains. Pure numpy/scipy: arrays plus ``voxel_size_mm``, indexed
(i, j, k) like nibabel data; distances and sizes in mm, volumes in mm3.
Deterministic: every random draw comes from :func:`numpy.random.default_rng`
on seed sequences derived from one integer ``seed``.

The model
---------
Geometry. A lesion is an ellipsoid of equivalent radius ``r`` (volume
``4/3 pi r^3``) with semi-axes ``r * (e, 1, 1) / e^(1/3)`` (``e`` the
elongation), oriented at random or with its long axis along a given direction.
``shape="irregular"`` modulates the radius with a smooth random function of
direction (a random polynomial of degree <= 3 of the unit direction, i.e.
spherical harmonics up to degree 3, relative RMS ``irregularity``), rescaled so
that the expected volume is unchanged. In normalised coordinates
``rho = |x / axes| / m(direction)`` the lesion *profile* is the logistic
``w = 1 / (1 + exp((rho - 1) / edge_fraction))``: ``edge_fraction`` is the
edge softness as a fraction of the radius. ``w`` is averaged over sub-voxel
sample points (``supersample`` per ``min(voxel_size_mm)``: more points along
thick slices), which gives partial volume over each voxel. An optional
``tissue_mask`` multiplies the profile (lesions grown from a ventricle wall
stop at the wall).

Truth. A voxel is lesion when the (clipped) profile is >= 0.5; where lesions
overlap it belongs to the lesion with the highest profile. ``labels`` holds the
lesion ids (1-based, in the order of ``specs``); the truth volume of an isolated
lesion is its ellipsoid volume within discretisation error.

Signal. Each image listed in a lesion's ``contrast`` gains ``w * value * unit``,
where ``unit`` is the robust SD (1.4826 MAD) of that image in the reference
tissue (normal-appearing white matter) for :class:`Contrast` ``unit="sd"``,
or its median for ``unit="wm_fraction"``. The defaults: FLAIR +4.5 SD, T2
+3 SD, T1 and post-contrast T1 -12 % of the white-matter level; the
``random_*`` helpers give the T2 the lesion's FLAIR contrast. For scale, on
the 30 consensus lesions of sub-cs07 (1 mm MNI) the peak z-score against
normal white matter has median 3.9 on FLAIR (10th-90th percentile 1.3-7.4)
and 4.2 on T2 (0.4-12), and the mean T1 change is -7 % (-28 % to +1 %). The change is
*additive* on top of the underlying tissue, which keeps its own noise and
texture. Overlapping lesions do not add up: per image, the positive
contributions combine by their maximum and the negative ones by their minimum.

Enhancement (Gd+). ``kind="nodular"`` adds ``enhancement_fraction`` x the
white-matter median of the post-contrast image (``enhanced_image``) times the
profile ``w`` (the whole lesion enhances); ``kind="ring"`` adds it over a shell
of thickness ``ring_thickness_mm`` only (``w`` minus the profile of the
ellipsoid shrunk by that thickness), so the core keeps the non-enhancing
(T1-hypointense) signal of the ``contrast`` entry of that image; the edge
softness blurs the shell, whose peak enhancement is about 60-80 % of the
nominal one for 1.5 mm shells and 1 mm voxels. Typical values
(:func:`random_gd_specs`): radius 1.5-4.5 mm, enhancement 0.25-0.6.
The Gd truth of an enhancing lesion is its whole extent (core included).

What is not modelled: the acquisition point-spread function beyond the
logistic edge and the sub-voxel averaging; Gibbs ringing; mass effect or any
displacement of the surrounding tissue; atrophy; internal heterogeneity,
central veins, T1 black-hole texture; a change of the noise level or its
Rician bias inside the lesion; contrast that depends on the tissue underneath
(a lesion reaching into grey matter is as much brighter than grey matter as it
is than white matter); blurring of enhancement over time.

Heavy loads. :func:`confluent_periventricular_specs` plans many elongated
lesions grown from the ventricle wall (long axis along the wall normal,
clustered along the wall) until their union reaches a target volume (tens of
mL); with ``tissue_mask`` excluding the ventricles they merge into confluent
caps and bands like a heavily affected patient's.

Examples
--------
>>> import numpy as np
>>> img = np.full((40, 40, 40), 100.0, np.float32)
>>> img += np.random.default_rng(0).normal(0, 5, img.shape).astype(np.float32)
>>> wm = np.zeros(img.shape, bool); wm[5:35, 5:35, 5:35] = True
>>> out = plant_lesions({"flair": img}, voxel_size_mm=(1, 1, 1), placement_mask=wm,
...                     reference_mask=wm, specs=[LesionSpec(volume_mm3=500.0)], seed=0)
>>> out.labels.max(), bool(out.lesions[0].volume_mm3 > 400)
(np.int32(1), True)
"""

from __future__ import annotations

import itertools
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import NamedTuple

import numpy as np
from scipy import ndimage as ndi

from ..core.normalise import robust_location_scale
from ..core.units import voxel_volume_mm3
from ..errors import InputError, ProcessingError

__all__ = [
    "KINDS",
    "SHAPES",
    "DEFAULT_CONTRAST",
    "Contrast",
    "LesionSpec",
    "PlantedLesion",
    "Injection",
    "plant_lesions",
    "reference_statistics",
    "random_t2_specs",
    "random_gd_specs",
    "confluent_periventricular_specs",
]

log = logging.getLogger(__name__)

#: Lesion kinds: T2/FLAIR only, or also enhancing on the post-contrast T1.
KINDS = ("t2", "nodular", "ring")
#: Lesion shapes.
SHAPES = ("ellipsoid", "irregular")
_UNITS = ("sd", "wm_fraction")
_FULL = np.ones((3, 3, 3), dtype=bool)


@dataclass(frozen=True)
class Contrast:
    """Signal change at the centre of a lesion, for one image.

    Attributes
    ----------
    value : float
        Multiple of ``unit`` added (negative: hypointense).
    unit : {"sd", "wm_fraction"}
        ``"sd"``: robust SD of the image in the reference tissue (e.g. FLAIR
        +4.5 SD); ``"wm_fraction"``: median of the image in the reference
        tissue (e.g. T1 -0.12 = 12 % darker than white matter).
    """

    value: float
    unit: str = "sd"


#: Default lesion contrast by image key (keys absent from ``images`` are ignored).
DEFAULT_CONTRAST: Mapping[str, Contrast] = MappingProxyType(
    {
        "flair": Contrast(4.5, "sd"),
        "t2": Contrast(3.0, "sd"),
        "t1": Contrast(-0.12, "wm_fraction"),
        "t1ce": Contrast(-0.12, "wm_fraction"),
    }
)


@dataclass(frozen=True)
class LesionSpec:
    """What to plant: size, shape, contrast, kind and (optionally) where.

    Attributes
    ----------
    volume_mm3, radius_mm : float, optional
        Size as a volume or as an equivalent radius (exactly one of the two).
    contrast : mapping of str to Contrast
        Signal change per image key (see :class:`Contrast`); images without an
        entry are unchanged by this lesion, entries for absent images are ignored.
    shape : {"ellipsoid", "irregular"}
    elongation : float, optional
        Long / short semi-axis ratio (>= 1); None draws it from U(1, 1.6).
    long_axis : tuple of 3 float, optional
        Direction of the long axis in array-axis mm coordinates; None: random
        orientation.
    irregularity : float
        Relative RMS of the radial modulation of ``shape="irregular"`` (0-0.5).
    edge_fraction : float
        Logistic edge scale as a fraction of the radius (> 0; 0.1 = fairly sharp).
    centre_vox : tuple of 3 float, optional
        Fixed centre in voxel indices; None draws it from ``placement_mask``.
    kind : {"t2", "nodular", "ring"}
        ``"nodular"`` / ``"ring"`` also enhance on ``enhanced_image``.
    enhancement_fraction : float
        Enhancement as a fraction of the white-matter median of ``enhanced_image``
        (> 0 for enhancing kinds, typically 0.25-0.6).
    enhanced_image : str
        Image key of the post-contrast T1.
    ring_thickness_mm : float
        Thickness of the enhancing shell of a ring lesion; the equivalent radius
        must exceed it by at least 1 mm (a core of >= 1 mm radius).
    """

    volume_mm3: float | None = None
    radius_mm: float | None = None
    contrast: Mapping[str, Contrast] = field(default_factory=lambda: dict(DEFAULT_CONTRAST))
    shape: str = "ellipsoid"
    elongation: float | None = None
    long_axis: tuple[float, float, float] | None = None
    irregularity: float = 0.25
    edge_fraction: float = 0.1
    centre_vox: tuple[float, float, float] | None = None
    kind: str = "t2"
    enhancement_fraction: float = 0.0
    enhanced_image: str = "t1ce"
    ring_thickness_mm: float = 1.5

    @property
    def equivalent_radius_mm(self) -> float:
        """Radius of the sphere of the requested volume, mm."""
        if self.radius_mm is not None:
            return float(self.radius_mm)
        volume = float(self.volume_mm3)  # type: ignore[arg-type]
        return (3.0 * volume / (4.0 * math.pi)) ** (1.0 / 3.0)

    @property
    def requested_volume_mm3(self) -> float:
        """Requested volume, mm3."""
        return 4.0 / 3.0 * math.pi * self.equivalent_radius_mm**3


@dataclass(frozen=True)
class PlantedLesion:
    """One planted lesion and its truth.

    Attributes
    ----------
    lesion_id : int
        Its value in ``labels`` (1-based, order of ``specs``).
    kind, shape : str
    centre_vox : tuple of 3 float
        Centre in voxel indices.
    semi_axes_mm : tuple of 3 float
        Ellipsoid semi-axes (before the irregular modulation), mm.
    requested_volume_mm3 : float
    volume_mm3 : float
        Volume of the voxels labelled with this id (after clipping and overlaps).
    n_voxels : int
    contrast : Mapping[str, float]
        Signal added at full profile, per image, in that image's units.
    enhancement_fraction : float
    slices : tuple of 3 slice
        Bounding box of the profile in the image (everything it changed is inside).
    """

    lesion_id: int
    kind: str
    shape: str
    centre_vox: tuple[float, float, float]
    semi_axes_mm: tuple[float, float, float]
    requested_volume_mm3: float
    volume_mm3: float
    n_voxels: int
    contrast: Mapping[str, float]
    enhancement_fraction: float
    slices: tuple[slice, slice, slice]


class Injection(NamedTuple):
    """Result of :func:`plant_lesions` (unpacks as ``images, labels, lesions``).

    Attributes
    ----------
    images : dict of str to numpy.ndarray
        float32 copies of the inputs with the lesions added.
    labels : numpy.ndarray
        int32 lesion ids (0 = background), same shape.
    lesions : tuple of PlantedLesion
    """

    images: dict[str, np.ndarray]
    labels: np.ndarray
    lesions: tuple[PlantedLesion, ...]

    @property
    def truth(self) -> np.ndarray:
        """bool T2 lesion truth (``labels > 0``)."""
        return self.labels > 0

    @property
    def enhancing(self) -> np.ndarray:
        """bool Gd+ truth: whole extent of the nodular and ring lesions."""
        ids = [les.lesion_id for les in self.lesions if les.kind != "t2"]
        return np.isin(self.labels, ids)

    def rows(self) -> list[dict[str, object]]:
        """The lesion table: one dict per lesion (:class:`PlantedLesion` fields but ``slices``)."""
        return [{k: v for k, v in les.__dict__.items() if k != "slices"} for les in self.lesions]


# --------------------------------------------------------------------------- checks


def _voxel_size(voxel_size_mm: Sequence[float]) -> np.ndarray:
    try:
        vs = np.asarray([float(v) for v in voxel_size_mm], dtype=float)
    except (TypeError, ValueError) as exc:
        raise InputError(f"voxel_size_mm must be 3 numbers, got {voxel_size_mm!r}") from exc
    if vs.shape != (3,) or not np.all(np.isfinite(vs) & (vs > 0)):
        raise InputError(f"voxel_size_mm must be 3 positive finite numbers, got {voxel_size_mm!r}")
    return vs


def _bool_mask(name: str, m: np.ndarray | None, shape: tuple[int, ...]) -> np.ndarray | None:
    if m is None:
        return None
    a = np.asarray(m)
    if a.dtype != bool:
        raise InputError(f"{name} must be a bool array, got dtype {a.dtype}")
    if a.shape != shape:
        raise InputError(f"{name} has shape {a.shape}, expected the image shape {shape}")
    return a


def _check_spec(i: int, s: LesionSpec) -> None:
    where = f"specs[{i}]"
    if (s.volume_mm3 is None) == (s.radius_mm is None):
        raise InputError(f"{where}: give exactly one of volume_mm3 and radius_mm")
    size = s.volume_mm3 if s.volume_mm3 is not None else s.radius_mm
    if not (isinstance(size, int | float) and math.isfinite(size) and size > 0):
        raise InputError(f"{where}: volume_mm3 / radius_mm must be > 0, got {size!r}")
    if s.shape not in SHAPES:
        raise InputError(f"{where}: shape must be one of {SHAPES}, got {s.shape!r}")
    if s.kind not in KINDS:
        raise InputError(f"{where}: kind must be one of {KINDS}, got {s.kind!r}")
    if s.elongation is not None and not (math.isfinite(s.elongation) and s.elongation >= 1):
        raise InputError(f"{where}: elongation must be >= 1, got {s.elongation!r}")
    if not (math.isfinite(s.edge_fraction) and s.edge_fraction > 0):
        raise InputError(f"{where}: edge_fraction must be > 0, got {s.edge_fraction!r}")
    if not 0 <= s.irregularity <= 0.5:
        raise InputError(f"{where}: irregularity must be in [0, 0.5], got {s.irregularity!r}")
    for key, c in s.contrast.items():
        if not isinstance(c, Contrast) or c.unit not in _UNITS or not math.isfinite(c.value):
            raise InputError(
                f"{where}: contrast[{key!r}] must be a Contrast with a finite value and unit "
                f"in {_UNITS}, got {c!r}"
            )
    if s.long_axis is not None:
        ax = np.asarray(s.long_axis, float)
        if ax.shape != (3,) or not np.isfinite(ax).all() or np.linalg.norm(ax) == 0:
            raise InputError(f"{where}: long_axis must be a non-zero 3-vector, got {s.long_axis!r}")
    if s.kind != "t2":
        if not (math.isfinite(s.enhancement_fraction) and s.enhancement_fraction > 0):
            raise InputError(
                f"{where}: kind {s.kind!r} needs enhancement_fraction > 0, "
                f"got {s.enhancement_fraction!r}"
            )
    if s.kind == "ring" and s.equivalent_radius_mm < s.ring_thickness_mm + 1.0:
        raise InputError(
            f"{where}: a ring lesion needs radius >= ring_thickness_mm + 1 mm "
            f"({s.ring_thickness_mm + 1.0:g}), got {s.equivalent_radius_mm:.2f} mm"
        )


def reference_statistics(
    images: Mapping[str, np.ndarray], reference_mask: np.ndarray
) -> dict[str, tuple[float, float]]:
    """Median and robust SD (1.4826 MAD) of each image in the reference tissue.

    Parameters
    ----------
    images : mapping of str to numpy.ndarray
        3-D images of one shape.
    reference_mask : numpy.ndarray
        bool, same shape (normal-appearing white matter).

    Returns
    -------
    dict of str to (float, float)
        ``{key: (median, sd)}`` in image units.
    """
    out = {}
    for key, img in images.items():
        ref = np.asarray(img)[reference_mask]
        if ref.size < 10:
            raise InputError(f"reference_mask holds {ref.size} voxels; need >= 10")
        out[key] = robust_location_scale(ref)
    return out


# --------------------------------------------------------------------------- geometry

_MONOMIALS = [c for d in (1, 2, 3) for c in itertools.combinations_with_replacement(range(3), d)]


def _fibonacci_sphere(n: int = 2000) -> np.ndarray:
    k = np.arange(n) + 0.5
    phi = np.arccos(1 - 2 * k / n)
    theta = math.pi * (1 + 5**0.5) * k
    return np.stack([np.cos(theta) * np.sin(phi), np.sin(theta) * np.sin(phi), np.cos(phi)], 1)


def _poly(u: np.ndarray, coef: np.ndarray) -> np.ndarray:
    out = np.zeros(u.shape[:-1])
    for c, idx in zip(coef, _MONOMIALS, strict=True):
        term = np.ones(u.shape[:-1])
        for j in idx:
            term = term * u[..., j]
        out += c * term
    return out


@dataclass(frozen=True)
class _Geometry:
    centre_mm: np.ndarray  # (3,) in array-axis mm (index * voxel size)
    rotation: np.ndarray  # (3, 3), columns = lesion axes
    axes_mm: np.ndarray  # (3,) semi-axes, volume-corrected
    coef: np.ndarray | None  # irregular modulation (None: ellipsoid)
    offset: float  # modulation mean
    scale: float  # modulation scale
    bound_mm: float  # radius of a sphere holding the w >= 0.5 region
    edge: float
    ring_scale: float  # inner/outer ratio of a ring's core (1 for non-ring)


def _rotation(rng: np.random.Generator, long_axis: np.ndarray | None) -> np.ndarray:
    if long_axis is None:
        q, r = np.linalg.qr(rng.normal(size=(3, 3)))
        return q * np.sign(np.diag(r))
    a = long_axis / np.linalg.norm(long_axis)
    m = np.column_stack([a, rng.normal(size=(3, 2))])
    q, r = np.linalg.qr(m)
    q = q * np.sign(np.diag(r))
    return q


def _geometry(spec: LesionSpec, rng: np.random.Generator) -> _Geometry:
    r = spec.equivalent_radius_mm
    e = spec.elongation if spec.elongation is not None else float(rng.uniform(1.0, 1.6))
    axes = r * np.array([e, 1.0, 1.0]) / e ** (1.0 / 3.0)
    la = None if spec.long_axis is None else np.asarray(spec.long_axis, float)
    rot = _rotation(rng, la)
    coef, offset, scale, mmax = None, 0.0, 1.0, 1.0
    if spec.shape == "irregular" and spec.irregularity > 0:
        coef = rng.normal(size=len(_MONOMIALS))
        g = _poly(_fibonacci_sphere(), coef)
        offset, sd = float(g.mean()), float(g.std())
        scale = spec.irregularity / sd if sd > 0 else 0.0
        m = np.clip(1.0 + (g - offset) * scale, 0.4, None)
        axes = axes / float(np.mean(m**3)) ** (1.0 / 3.0)  # keep the expected volume
        mmax = float(m.max())
    ring_scale = 1.0
    if spec.kind == "ring":
        ring_scale = max(1.0 - spec.ring_thickness_mm / float(axes.min()), 0.2)
    return _Geometry(
        centre_mm=np.zeros(3),
        rotation=rot,
        axes_mm=axes,
        coef=coef,
        offset=offset,
        scale=scale,
        bound_mm=float(axes.max() * mmax),
        edge=spec.edge_fraction,
        ring_scale=ring_scale,
    )


def _subsamples(vs: np.ndarray, supersample: int) -> list[np.ndarray]:
    n = [int(min(16, max(1, round(supersample * v / vs.min())))) for v in vs]
    return [(np.arange(k) + 0.5) / k - 0.5 for k in n]


def _render(
    geo: _Geometry,
    shape: tuple[int, ...],
    vs: np.ndarray,
    supersample: int,
) -> tuple[tuple[slice, ...], np.ndarray, np.ndarray | None]:
    """Profile ``w`` (and the ring core profile) over the lesion's bounding box."""
    c_vox = geo.centre_mm / vs
    reach = geo.bound_mm * (1.0 + 8.0 * geo.edge) + 0.5 * vs.max()
    lo = np.maximum(np.floor(c_vox - reach / vs).astype(int), 0)
    hi = np.minimum(np.ceil(c_vox + reach / vs).astype(int) + 1, shape)
    sl = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True))
    box = tuple(int(b - a) for a, b in zip(lo, hi, strict=True))
    if min(box) <= 0:
        return sl, np.zeros(box), None
    axes = [
        (np.arange(a, b) * v - cm) for a, b, v, cm in zip(lo, hi, vs, geo.centre_mm, strict=True)
    ]
    offs = _subsamples(vs, supersample)
    w = np.zeros(box)
    w_in = np.zeros(box) if geo.ring_scale < 1.0 else None
    n = 0
    for ox in offs[0]:
        for oy in offs[1]:
            for oz in offs[2]:
                x = axes[0][:, None, None] + ox * vs[0]
                y = axes[1][None, :, None] + oy * vs[1]
                z = axes[2][None, None, :] + oz * vs[2]
                pts = np.stack(np.broadcast_arrays(x, y, z), axis=-1)
                q = (pts @ geo.rotation) / geo.axes_mm
                rad = np.sqrt((q**2).sum(-1))
                if geo.coef is not None:
                    u = q / np.maximum(rad, 1e-9)[..., None]
                    m = np.clip(1.0 + (_poly(u, geo.coef) - geo.offset) * geo.scale, 0.4, None)
                    rad = rad / m
                w += 1.0 / (1.0 + np.exp(np.clip((rad - 1.0) / geo.edge, -50, 50)))
                if w_in is not None:
                    x_in = (rad / geo.ring_scale - 1.0) / geo.edge
                    w_in += 1.0 / (1.0 + np.exp(np.clip(x_in, -50, 50)))
                n += 1
    w /= n
    if w_in is not None:
        w_in /= n
    return sl, w, w_in


# --------------------------------------------------------------------------- placement


def _inner_distance_mm(mask: np.ndarray, vs: np.ndarray) -> np.ndarray:
    padded = np.pad(mask, 1, constant_values=False)
    return ndi.distance_transform_edt(padded, sampling=vs)[1:-1, 1:-1, 1:-1]


# --------------------------------------------------------------------------- main


def plant_lesions(
    images: Mapping[str, np.ndarray],
    *,
    voxel_size_mm: Sequence[float],
    specs: Sequence[LesionSpec],
    seed: int,
    placement_mask: np.ndarray | None = None,
    reference_mask: np.ndarray | None = None,
    reference_stats: Mapping[str, tuple[float, float]] | None = None,
    tissue_mask: np.ndarray | None = None,
    min_gap_mm: float | None = 2.0,
    inset_fraction: float = 0.75,
    supersample: int = 3,
) -> Injection:
    """Plant synthetic lesions into copies of co-registered images.

    See the module docstring for the model.

    Parameters
    ----------
    images : mapping of str to numpy.ndarray
        3-D images on one grid (e.g. ``{"flair": ..., "t1": ..., "t2": ..., "t1ce": ...}``);
        not modified.
    voxel_size_mm : sequence of 3 float
        Voxel edge lengths along array axes 0, 1, 2, mm.
    specs : sequence of LesionSpec
        One per lesion; lesion ids follow this order.
    seed : int
        Seed of every random draw (orientation, elongation, shape, centres).
    placement_mask : numpy.ndarray, optional
        bool; centres of specs without ``centre_vox`` are drawn uniformly among
        its voxels lying at least ``inset_fraction`` x the lesion's bounding
        radius inside it (and, with ``min_gap_mm``, apart from the others).
        Required when some spec has no ``centre_vox``.
    reference_mask : numpy.ndarray, optional
        bool reference tissue (normal-appearing white matter) for the contrast
        units; required for images whose statistics ``reference_stats`` lacks.
    reference_stats : mapping of str to (float, float), optional
        ``{key: (median, sd)}``: overrides the statistics of ``reference_mask``.
    tissue_mask : numpy.ndarray, optional
        bool; the lesion profile is zero outside it (the images and truth
        never change there). None: no clipping.
    min_gap_mm : float or None
        Drawn lesions keep at least this gap (mm, between bounding spheres) from
        every other lesion (fixed ones included), so each is its own component;
        None: no constraint.
    inset_fraction : float
        See ``placement_mask`` (>= 0).
    supersample : int
        Sub-voxel samples per ``min(voxel_size_mm)`` along each axis (>= 1).

    Returns
    -------
    Injection
        ``images`` (float32 copies), ``labels`` (int32), ``lesions``.

    Raises
    ------
    lesionq.errors.InputError
        Invalid images, masks, specs or parameters.
    lesionq.errors.ProcessingError
        No room left in ``placement_mask`` for a lesion.
    """
    if not images:
        raise InputError("images is empty")
    arrays = {k: np.asarray(v) for k, v in images.items()}
    shape = next(iter(arrays.values())).shape
    for k, a in arrays.items():
        if a.ndim != 3 or a.shape != shape:
            raise InputError(f"images[{k!r}] has shape {a.shape}, expected 3-D {shape}")
        if not np.issubdtype(a.dtype, np.number):
            raise InputError(f"images[{k!r}] must be numeric, got dtype {a.dtype}")
    vs = _voxel_size(voxel_size_mm)
    placement = _bool_mask("placement_mask", placement_mask, shape)
    reference = _bool_mask("reference_mask", reference_mask, shape)
    tissue = _bool_mask("tissue_mask", tissue_mask, shape)
    if not isinstance(seed, int | np.integer):
        raise InputError(f"seed must be an int, got {seed!r}")
    if not (isinstance(supersample, int | np.integer) and supersample >= 1):
        raise InputError(f"supersample must be an int >= 1, got {supersample!r}")
    if not (math.isfinite(inset_fraction) and inset_fraction >= 0):
        raise InputError(f"inset_fraction must be >= 0, got {inset_fraction!r}")
    if min_gap_mm is not None and not math.isfinite(min_gap_mm):
        raise InputError(f"min_gap_mm must be finite or None, got {min_gap_mm!r}")
    specs = list(specs)
    for i, s in enumerate(specs):
        if not isinstance(s, LesionSpec):
            raise InputError(f"specs[{i}] must be a LesionSpec, got {type(s).__name__}")
        _check_spec(i, s)
        if s.kind != "t2" and s.enhanced_image not in arrays:
            raise InputError(
                f"specs[{i}]: kind {s.kind!r} enhances images[{s.enhanced_image!r}], "
                f"which is not given (keys {sorted(arrays)})"
            )
        if s.centre_vox is None and placement is None:
            raise InputError(f"specs[{i}] has no centre_vox and no placement_mask was given")

    # contrast units
    needed = {k for s in specs for k in s.contrast if k in arrays}
    needed |= {s.enhanced_image for s in specs if s.kind != "t2"}
    stats = dict(reference_stats or {})
    missing = sorted(needed - set(stats))
    if missing:
        if reference is None:
            raise InputError(f"no reference_mask or reference_stats for images {missing}")
        stats.update(reference_statistics({k: arrays[k] for k in missing}, reference))

    # geometry (one child generator per lesion, so a lesion's shape depends on its
    # index and the seed only) and placement (another generator)
    seq = np.random.SeedSequence(int(seed))
    geo_seq, place_seq = seq.spawn(2)
    geos = [
        _geometry(s, np.random.default_rng(c))
        for s, c in zip(specs, geo_seq.spawn(len(specs)), strict=True)
    ]
    rng = np.random.default_rng(place_seq)
    centres: list[np.ndarray | None] = [
        None if s.centre_vox is None else np.asarray(s.centre_vox, float) * vs for s in specs
    ]
    inner = None
    if any(c is None for c in centres):
        inner = _inner_distance_mm(placement, vs)  # type: ignore[arg-type]
    order = sorted((i for i, c in enumerate(centres) if c is None), key=lambda i: -geos[i].bound_mm)
    for i in order:
        cand = np.argwhere(inner >= inset_fraction * geos[i].bound_mm)  # type: ignore[operator]
        if cand.size and min_gap_mm is not None:
            cm = cand * vs
            ok = np.ones(len(cand), bool)
            for j, c in enumerate(centres):
                if c is None or j == i:
                    continue
                need = geos[i].bound_mm + geos[j].bound_mm + min_gap_mm
                ok &= ((cm - c) ** 2).sum(1) >= need**2
            cand = cand[ok]
        if not cand.size:
            raise ProcessingError(
                f"plant_lesions: no room in placement_mask for specs[{i}] (bounding radius "
                f"{geos[i].bound_mm:.1f} mm, inset_fraction {inset_fraction}, min_gap_mm "
                f"{min_gap_mm}); give a larger mask, fewer or smaller lesions"
            )
        centres[i] = cand[rng.integers(len(cand))].astype(float) * vs

    # render and combine
    pos = {k: np.zeros(shape, np.float32) for k in needed}
    neg = {k: np.zeros(shape, np.float32) for k in needed}
    best = np.zeros(shape, np.float32)
    label = np.zeros(shape, np.int32)
    boxes = []
    for i, (s, g) in enumerate(zip(specs, geos, strict=True)):
        g = _Geometry(**{**g.__dict__, "centre_mm": centres[i]})
        geos[i] = g
        sl, w, w_in = _render(g, shape, vs, supersample)
        if tissue is not None:
            w = w * tissue[sl]
            if w_in is not None:
                w_in = w_in * tissue[sl]
        boxes.append(sl)
        upd = w > best[sl]
        best[sl] = np.where(upd, w, best[sl])
        label[sl] = np.where(upd, i + 1, label[sl])
        contrib: dict[str, np.ndarray] = {}
        for key, con in s.contrast.items():
            if key not in arrays:
                continue
            med, sd = stats[key]
            contrib[key] = w * con.value * (sd if con.unit == "sd" else med)
        if s.kind != "t2":
            enh = s.enhancement_fraction * stats[s.enhanced_image][0]
            shell = w if w_in is None else np.clip(w - w_in, 0.0, 1.0)
            contrib[s.enhanced_image] = contrib.get(s.enhanced_image, 0.0) + shell * enh
        for key, d in contrib.items():
            d = np.asarray(d, np.float32)
            pos[key][sl] = np.maximum(pos[key][sl], np.maximum(d, 0))
            neg[key][sl] = np.minimum(neg[key][sl], np.minimum(d, 0))
    labels = np.where(best >= 0.5, label, 0).astype(np.int32)
    out = {}
    for k, a in arrays.items():
        img = a.astype(np.float32, copy=True)
        if k in pos:
            img += pos[k] + neg[k]
        out[k] = img

    vv = voxel_volume_mm3(vs.tolist())
    counts = np.bincount(labels.ravel(), minlength=len(specs) + 1)
    lesions = []
    for i, (s, g) in enumerate(zip(specs, geos, strict=True)):
        added = {
            k: float(c.value * (stats[k][1] if c.unit == "sd" else stats[k][0]))
            for k, c in s.contrast.items()
            if k in arrays
        }
        lesions.append(
            PlantedLesion(
                lesion_id=i + 1,
                kind=s.kind,
                shape=s.shape,
                centre_vox=tuple(float(x) for x in g.centre_mm / vs),  # type: ignore[arg-type]
                semi_axes_mm=tuple(float(x) for x in g.axes_mm),  # type: ignore[arg-type]
                requested_volume_mm3=s.requested_volume_mm3,
                volume_mm3=float(counts[i + 1] * vv),
                n_voxels=int(counts[i + 1]),
                contrast=MappingProxyType(added),
                enhancement_fraction=float(s.enhancement_fraction),
                slices=boxes[i],  # type: ignore[arg-type]
            )
        )
    log.info(
        "plant_lesions: %d lesions, %.1f mm3 of truth", len(lesions), float((labels > 0).sum() * vv)
    )
    return Injection(images=out, labels=labels, lesions=tuple(lesions))


# --------------------------------------------------------------------------- spec helpers


def _t2_contrast(
    flair_sd: float, t2_sd: float | None, t1_fraction: float, t1ce_fraction: float | None
) -> dict[str, Contrast]:
    c = {
        "flair": Contrast(flair_sd, "sd"),
        "t2": Contrast(flair_sd if t2_sd is None else t2_sd, "sd"),
        "t1": Contrast(t1_fraction, "wm_fraction"),
    }
    c["t1ce"] = Contrast(t1_fraction if t1ce_fraction is None else t1ce_fraction, "wm_fraction")
    return c


def random_t2_specs(
    n: int,
    *,
    seed: int,
    volume_mm3: tuple[float, float] = (10.0, 1000.0),
    flair_sd: tuple[float, float] = (3.0, 6.0),
    t2_sd: float | None = None,
    t1_fraction: float = -0.12,
    irregular_fraction: float = 0.5,
    edge_fraction: float = 0.1,
) -> list[LesionSpec]:
    """``n`` T2/FLAIR lesions with log-uniform volumes and uniform FLAIR contrast.

    Parameters
    ----------
    n : int
        Number of lesions (>= 0).
    seed : int
    volume_mm3 : (float, float)
        Volume range (log-uniform), mm3.
    flair_sd : (float, float)
        FLAIR contrast range at the centre, in reference SDs (uniform).
    t2_sd : float, optional
        T2 contrast (reference SDs); None: the lesion's FLAIR contrast.
    t1_fraction : float
        T1 / post-contrast T1 change (fraction of the white-matter median).
    irregular_fraction : float
        Share of ``shape="irregular"`` lesions (each drawn independently).
    edge_fraction : float

    Returns
    -------
    list of LesionSpec
        Without centres (drawn by :func:`plant_lesions`).

    Examples
    --------
    >>> [round(s.volume_mm3) for s in random_t2_specs(3, seed=1, volume_mm3=(10, 100))]
    [32, 89, 14]
    """
    lo, hi = volume_mm3
    if not (n >= 0 and 0 < lo <= hi):
        raise InputError(f"random_t2_specs: need n >= 0 and 0 < low <= high, got {n}, {volume_mm3}")
    rng = np.random.default_rng(seed)
    vols = np.exp(rng.uniform(math.log(lo), math.log(hi), size=n))
    cons = rng.uniform(flair_sd[0], flair_sd[1], size=n)
    irr = rng.uniform(size=n) < irregular_fraction
    return [
        LesionSpec(
            volume_mm3=float(v),
            contrast=_t2_contrast(float(c), t2_sd, t1_fraction, None),
            shape="irregular" if ir else "ellipsoid",
            edge_fraction=edge_fraction,
        )
        for v, c, ir in zip(vols, cons, irr, strict=True)
    ]


def random_gd_specs(
    n: int,
    *,
    seed: int,
    radius_mm: tuple[float, float] = (1.5, 4.5),
    enhancement_fraction: tuple[float, float] = (0.25, 0.6),
    ring_fraction: float = 0.3,
    ring_thickness_mm: float = 1.5,
    flair_sd: tuple[float, float] = (3.0, 6.0),
    t2_sd: float | None = None,
    t1_fraction: float = -0.12,
    enhanced_image: str = "t1ce",
) -> list[LesionSpec]:
    """``n`` enhancing (Gd+) lesions, nodular or ring, also T2/FLAIR hyperintense.

    A lesion drawn as a ring whose radius is below ``ring_thickness_mm + 1``
    is made nodular (too small for a visible core).

    Parameters
    ----------
    n : int
    seed : int
    radius_mm : (float, float)
        Equivalent radius range (uniform), mm.
    enhancement_fraction : (float, float)
        Enhancement range (uniform), fraction of the post-contrast white-matter median.
    ring_fraction : float
        Probability that a lesion is a ring.
    ring_thickness_mm : float
    flair_sd, t2_sd, t1_fraction : see :func:`random_t2_specs`
    enhanced_image : str
        Image key of the post-contrast T1.

    Returns
    -------
    list of LesionSpec

    Examples
    --------
    >>> specs = random_gd_specs(4, seed=0)
    >>> sorted({s.kind for s in specs}) <= ["nodular", "ring"]
    True
    """
    if n < 0 or not 0 < radius_mm[0] <= radius_mm[1]:
        raise InputError(
            f"random_gd_specs: need n >= 0 and 0 < r_low <= r_high, got {n}, {radius_mm}"
        )
    rng = np.random.default_rng(seed)
    radii = rng.uniform(radius_mm[0], radius_mm[1], size=n)
    enh = rng.uniform(enhancement_fraction[0], enhancement_fraction[1], size=n)
    ring = rng.uniform(size=n) < ring_fraction
    cons = rng.uniform(flair_sd[0], flair_sd[1], size=n)
    out = []
    for r, e, ri, c in zip(radii, enh, ring, cons, strict=True):
        kind = "ring" if ri and r >= ring_thickness_mm + 1.0 else "nodular"
        out.append(
            LesionSpec(
                radius_mm=float(r),
                contrast=_t2_contrast(float(c), t2_sd, t1_fraction, None),
                kind=kind,
                enhancement_fraction=float(e),
                enhanced_image=enhanced_image,
                ring_thickness_mm=ring_thickness_mm,
            )
        )
    return out


def confluent_periventricular_specs(
    ventricle_mask: np.ndarray,
    tissue_mask: np.ndarray,
    voxel_size_mm: Sequence[float],
    *,
    target_volume_mm3: float,
    seed: int,
    seed_mask: np.ndarray | None = None,
    radius_mm: tuple[float, float] = (3.0, 6.0),
    elongation: tuple[float, float] = (1.3, 2.2),
    depth_fraction: float = 0.6,
    cluster_mm: float = 12.0,
    cluster_probability: float = 0.8,
    wall_mm: float | None = None,
    flair_sd: tuple[float, float] = (4.0, 7.0),
    t2_sd: float | None = None,
    t1_fraction: float = -0.12,
    max_lesions: int = 500,
) -> list[LesionSpec]:
    """Plan a heavy, confluent periventricular lesion load grown from the ventricle walls.

    Lesions are elongated ellipsoids with the long axis along the outward
    normal of the ventricle wall (Dawson's fingers), their centre
    ``depth_fraction`` x the long semi-axis out from a wall voxel, so the
    ventricle-side tip reaches the wall (``tissue_mask`` clips what would enter
    the ventricle when planted). Wall seeds are clustered: with probability
    ``cluster_probability`` the next seed lies within ``cluster_mm`` of an
    earlier one, which makes lesions merge into caps and bands. Lesions are
    added until the union of their (unsupersampled, clipped) ellipsoids reaches
    ``target_volume_mm3``; the planted truth volume differs by partial volume
    only (a few %).

    Parameters
    ----------
    ventricle_mask : numpy.ndarray
        bool lateral ventricles on the image grid.
    tissue_mask : numpy.ndarray
        bool, where lesion may be (brain minus ventricles; pass the same to
        :func:`plant_lesions`).
    voxel_size_mm : sequence of 3 float
    target_volume_mm3 : float
        Union volume to reach, mm3 (e.g. 30000 for 30 mL).
    seed : int
    seed_mask : numpy.ndarray, optional
        bool; wall seeds only inside it (e.g. white-matter prior > 0.5).
    radius_mm, elongation : (float, float)
        Equivalent radius and long/short ratio ranges (uniform).
    depth_fraction : float
        Centre offset from the wall along the normal, in long semi-axes.
    cluster_mm, cluster_probability : float
        Clustering of the wall seeds.
    wall_mm : float, optional
        Wall voxels are tissue voxels within this distance of the ventricles;
        default ``1.01 x max(voxel_size_mm)``.
    flair_sd, t2_sd, t1_fraction : see :func:`random_t2_specs`
    max_lesions : int
        Upper bound on the number of lesions.

    Returns
    -------
    list of LesionSpec
        Ellipsoids with ``centre_vox`` and ``long_axis`` set.

    Raises
    ------
    lesionq.errors.InputError
        Bad masks or parameters, or no wall voxel.
    lesionq.errors.ProcessingError
        ``max_lesions`` reached before the target volume.
    """
    vent = np.asarray(ventricle_mask)
    shape = vent.shape
    if vent.dtype != bool or vent.ndim != 3:
        raise InputError(f"ventricle_mask must be a 3-D bool array, got {vent.dtype} {shape}")
    tissue = _bool_mask("tissue_mask", tissue_mask, shape)
    smask = _bool_mask("seed_mask", seed_mask, shape)
    vs = _voxel_size(voxel_size_mm)
    if not (math.isfinite(target_volume_mm3) and target_volume_mm3 > 0):
        raise InputError(f"target_volume_mm3 must be > 0, got {target_volume_mm3!r}")
    if not vent.any():
        raise InputError("ventricle_mask is empty")
    wall_mm = 1.01 * float(vs.max()) if wall_mm is None else float(wall_mm)
    dist = ndi.distance_transform_edt(~vent, sampling=vs)
    wall = tissue & (dist > 0) & (dist <= wall_mm)  # type: ignore[operator]
    if smask is not None:
        wall &= smask
    pts = np.argwhere(wall)
    if not len(pts):
        raise InputError("no wall voxel: tissue_mask (and seed_mask) never touch the ventricles")
    # outward normal: gradient of a smoothed distance to the ventricles
    sm = ndi.gaussian_filter(np.minimum(dist, 10.0).astype(np.float32), 1.5 / vs)
    grad = np.stack(np.gradient(sm, *vs), axis=-1)
    rng = np.random.default_rng(seed)
    union = np.zeros(shape, bool)
    vv = voxel_volume_mm3(vs.tolist())
    pts_mm = pts * vs
    seeds: list[np.ndarray] = []
    specs: list[LesionSpec] = []
    while union.sum() * vv < target_volume_mm3:
        if len(specs) >= max_lesions:
            raise ProcessingError(
                f"confluent_periventricular_specs: {max_lesions} lesions reached "
                f"{union.sum() * vv:.0f} of {target_volume_mm3:.0f} mm3; raise max_lesions "
                "or radius_mm, or lower the target"
            )
        if seeds and rng.uniform() < cluster_probability:
            anchor = seeds[int(rng.integers(len(seeds)))]
            near = np.flatnonzero(((pts_mm - anchor) ** 2).sum(1) <= cluster_mm**2)
            p = pts[near[int(rng.integers(len(near)))]]
        else:
            p = pts[int(rng.integers(len(pts)))]
        seeds.append(p * vs)
        normal = grad[tuple(p)].astype(float)
        if np.linalg.norm(normal) < 1e-6:
            continue
        normal /= np.linalg.norm(normal)
        r = float(rng.uniform(*radius_mm))
        e = float(rng.uniform(*elongation))
        a_long = r * e / e ** (1.0 / 3.0)
        centre_mm = p * vs + normal * depth_fraction * a_long
        spec = LesionSpec(
            radius_mm=r,
            contrast=_t2_contrast(float(rng.uniform(*flair_sd)), t2_sd, t1_fraction, None),
            elongation=e,
            long_axis=(float(normal[0]), float(normal[1]), float(normal[2])),
            centre_vox=tuple(float(x) for x in centre_mm / vs),  # type: ignore[arg-type]
        )
        # rasterise (voxel centres) to track the union
        axes = r * np.array([e, 1.0, 1.0]) / e ** (1.0 / 3.0)
        half = np.ceil(axes.max() / vs).astype(int) + 1
        c = np.round(centre_mm / vs).astype(int)
        lo = np.maximum(c - half, 0)
        hi = np.minimum(c + half + 1, shape)
        if np.any(hi <= lo):
            continue
        sl = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True))
        g = np.meshgrid(
            *[np.arange(a, b) * v for a, b, v in zip(lo, hi, vs, strict=True)], indexing="ij"
        )
        d = np.stack(g, -1) - centre_mm
        q = d @ _rotation(np.random.default_rng(0), normal) / axes
        inside = ((q**2).sum(-1) <= 1.0) & tissue[sl]  # type: ignore[index]
        union[sl] |= inside
        specs.append(spec)
    log.info(
        "confluent_periventricular_specs: %d lesions, union ~%.0f mm3", len(specs), union.sum() * vv
    )
    return specs
