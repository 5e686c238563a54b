"""Checks on one image: the per-image battery and its thresholds.

Holds :class:`CheckLimits` (the thresholds of the whole battery), the single
image checks (dimensions, header repairs, data type, grid size, orientation
codes, affine, voxel sizes, qform/sform agreement, orientation, NaN/inf and
intensity content), the battery :data:`IMAGE_CHECKS` and its runner
:func:`run_image_checks`. Each check takes a
:class:`~lesionq.io.checks.read.LoadedImage` and returns a list of
:class:`~lesionq.io.checks.read.Finding`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import nibabel as nib
import numpy as np
from nibabel.batteryrunners import BatteryRunner

from .read import Finding, Level, LoadedImage

__all__ = [
    "CheckLimits",
    "IMAGE_CHECKS",
    "run_image_checks",
    "check_dimensions",
    "check_header_fixes",
    "check_dtype",
    "check_shape",
    "check_orientation_codes",
    "check_affine",
    "check_voxel_size",
    "check_qform_sform",
    "check_orientation",
    "check_finite",
    "check_intensities",
]


@dataclass(frozen=True)
class CheckLimits:
    """Thresholds of the battery (a protocol's ``[checks]`` section may set them).

    Build from a protocol with
    ``CheckLimits(**settings.kwargs_for("checks", CheckLimits))``.

    Attributes
    ----------
    min_voxels_per_axis : int
        Fewer voxels than this along any axis is an error (``shape-tiny``).
    min_voxel_size_mm, max_voxel_size_mm : float
        Voxel edges outside [min, max] mm are an error (``voxel-size-implausible``).
    thick_slice_mm : float
        A voxel edge above this (exclusive) gives a ``thick-slices`` warning.
    max_anisotropy : float
        Largest / smallest voxel edge above this (exclusive) gives an
        ``anisotropic-voxels`` info.
    qform_sform_tolerance_mm : float
        qform and sform that move a corner of the grid further apart than this
        give a ``qform-sform-mismatch`` warning.
    shear_tolerance : float
        Largest |cosine| between two voxel axes of the affine above which the
        affine is sheared (``affine-shear`` error); 1e-3 is 0.06 degrees.
    oblique_deg : float
        Obliquity (nibabel ``obliquity``, largest over axes) above which an
        ``oblique`` info is given, in degrees.
    grid_tolerance_mm : float
        Two images whose shapes match and whose grid corners agree within this
        share a grid.
    min_fov_coverage : float
        Fraction (0-1) of the FLAIR's foreground that another contrast's field
        of view must cover; below is an error (``fov-mismatch``).
    warn_fov_coverage : float
        Below this fraction (and above ``min_fov_coverage``): ``fov-partial`` warning.
    """

    min_voxels_per_axis: int = 8
    min_voxel_size_mm: float = 0.1
    max_voxel_size_mm: float = 10.0
    thick_slice_mm: float = 3.5
    max_anisotropy: float = 3.0
    qform_sform_tolerance_mm: float = 1.0
    shear_tolerance: float = 1e-3
    oblique_deg: float = 2.0
    grid_tolerance_mm: float = 0.01
    min_fov_coverage: float = 0.5
    warn_fov_coverage: float = 0.8


ImageCheck = Callable[[LoadedImage, CheckLimits], list[Finding]]


# --------------------------------------------------------------------------- image checks


def _f(level: Level, code: str, img: LoadedImage, message: str, fix: str = "") -> Finding:
    return Finding(level, code, img.path, f"{img.path}: {message}", fix)


def _affine_ok(img: LoadedImage) -> bool:
    a = img.affine[:3, :3]
    return bool(np.all(np.isfinite(img.affine)) and np.all(np.linalg.norm(a, axis=0) > 0))


def _voxel_sizes(affine: np.ndarray) -> np.ndarray:
    return np.linalg.norm(affine[:3, :3], axis=0)


def _corners(shape: Sequence[int]) -> np.ndarray:
    """The 8 corner voxel centres of a 3-D grid, homogeneous, shape (4, 8)."""
    n = [max(int(s) - 1, 0) for s in shape[:3]]
    pts = np.array(np.meshgrid([0, n[0]], [0, n[1]], [0, n[2]], indexing="ij")).reshape(3, -1)
    return np.vstack([pts, np.ones((1, pts.shape[1]))])


def check_header_fixes(img: LoadedImage, limits: CheckLimits) -> list[Finding]:
    """``header-fixed`` (warning): nibabel repairs the stored header on load.

    Runs nibabel's own header battery (``batteryrunners``) on the header as
    stored and reports each problem it would silently fix (invalid codes,
    qfac, offset...). A zero pixdim used by the qform is left to
    :func:`check_voxel_size`, which makes it an error.
    """
    raw = img.raw_header
    if raw is None:
        return []
    qform_pixdim = int(raw["sform_code"]) <= 0 and int(raw["qform_code"]) > 0
    out = []
    for report in BatteryRunner(raw._get_checks()).check_only(raw):
        if report.problem_level < 30 or (qform_pixdim and "pixdim[1,2,3]" in report.problem_msg):
            continue
        out.append(
            _f(
                "warning",
                "header-fixed",
                img,
                f"header breaks a NIfTI rule that nibabel repairs on load: "
                f"{report.problem_msg}" + (f" ({report.fix_msg})" if report.fix_msg else ""),
                "re-convert from DICOM or rewrite the header with a NIfTI-compliant tool",
            )
        )
    return out


def check_dimensions(img: LoadedImage, limits: CheckLimits) -> list[Finding]:
    """``not-3d`` (error): the data must be 3-D (a trailing singleton 4th axis is allowed)."""
    if img.data.ndim == 3:
        return []
    return [
        _f(
            "error",
            "not-3d",
            img,
            f"expected a 3-D image (rule: 3 axes, or 4 with a last axis of length 1); "
            f"got shape {tuple(img.data.shape)}",
            "export a single 3-D volume (for 4-D series pick the volume to use; "
            "2-D images cannot be processed)",
        )
    ]


def check_dtype(img: LoadedImage, limits: CheckLimits) -> list[Finding]:
    """``dtype-unsupported`` (error): voxels must be real numbers (int, uint, float, bool)."""
    if img.data.dtype.kind in "biuf":
        return []
    return [
        _f(
            "error",
            "dtype-unsupported",
            img,
            f"voxel type {img.data.dtype} is not a real scalar (rule: integer or float "
            "magnitude images)",
            "export a magnitude image with a scalar data type",
        )
    ]


def check_shape(img: LoadedImage, limits: CheckLimits) -> list[Finding]:
    """``shape-tiny`` (error): fewer than ``min_voxels_per_axis`` voxels along an axis."""
    shape = img.data.shape[:3]
    if min(shape) >= limits.min_voxels_per_axis:
        return []
    return [
        _f(
            "error",
            "shape-tiny",
            img,
            f"grid {tuple(shape)} is too small for a brain volume (rule: at least "
            f"{limits.min_voxels_per_axis} voxels along every axis)",
            "export the full 3-D acquisition, not a localiser or a single slice",
        )
    ]


def check_orientation_codes(img: LoadedImage, limits: CheckLimits) -> list[Finding]:
    """``no-orientation`` (error): qform_code and sform_code are both 0."""
    q, s = int(img.header["qform_code"]), int(img.header["sform_code"])
    if q > 0 or s > 0:
        return []
    return [
        _f(
            "error",
            "no-orientation",
            img,
            "header has qform_code 0 and sform_code 0, so the voxel-to-world orientation "
            "is unknown (rule: at least one code > 0)",
            "re-convert from DICOM (dcm2niix writes both); do not guess the orientation",
        )
    ]


def check_affine(img: LoadedImage, limits: CheckLimits) -> list[Finding]:
    """The voxel-to-world affine nibabel resolves must be usable.

    ``affine-nonfinite`` (error): NaN/inf entries; ``affine-singular`` (error):
    voxel axes are linearly dependent (zero determinant); ``affine-shear``
    (error): voxel axes not orthogonal within ``shear_tolerance`` (ITK, hence
    registration, only represents orthonormal directions).
    """
    a = img.affine
    if not np.all(np.isfinite(a)):
        return [
            _f(
                "error",
                "affine-nonfinite",
                img,
                f"voxel-to-world affine has NaN/inf entries: {a.tolist()}",
                "re-convert from DICOM",
            )
        ]
    m = a[:3, :3]
    norms = _voxel_sizes(a)
    if np.any(norms <= 0):
        return []  # reported by check_voxel_size
    det = float(np.linalg.det(m))
    if abs(det) <= 1e-6 * float(np.prod(norms)):
        return [
            _f(
                "error",
                "affine-singular",
                img,
                f"voxel-to-world affine is singular (rule: determinant != 0; got {det:.3g}; "
                f"3x3 part {np.round(m, 4).tolist()})",
                "re-convert from DICOM; the sform of this file is broken",
            )
        ]
    r = m / norms
    gram = r.T @ r
    worst = float(np.max(np.abs(gram - np.eye(3))))
    if worst > limits.shear_tolerance:
        which = "sform" if int(img.header["sform_code"]) > 0 else "qform"
        return [
            _f(
                "error",
                "affine-shear",
                img,
                f"{which} has sheared (non-orthogonal) voxel axes (rule: |cos| between axes "
                f"<= {limits.shear_tolerance}; got {worst:.4f})",
                "reslice to an orthogonal grid or re-convert from DICOM "
                "(gantry-tilted acquisitions need correction)",
            )
        ]
    return []


def check_voxel_size(img: LoadedImage, limits: CheckLimits) -> list[Finding]:
    """Voxel edge lengths (column norms of the affine, mm).

    ``voxel-size-invalid`` (error): zero; ``voxel-size-implausible`` (error):
    outside [``min_voxel_size_mm``, ``max_voxel_size_mm``] (wrong units?);
    ``thick-slices`` (warning): an edge > ``thick_slice_mm``;
    ``anisotropic-voxels`` (info): largest / smallest > ``max_anisotropy``.
    """
    if not np.all(np.isfinite(img.affine)):
        return []
    h = img.stored_header
    pix = np.asarray(h["pixdim"][1:4], dtype=float)
    if int(h["sform_code"]) <= 0 and int(h["qform_code"]) > 0 and not np.all(pix > 0):
        return [
            _f(
                "error",
                "voxel-size-invalid",
                img,
                f"header pixdim[1:4] = {pix.tolist()} has a zero or negative edge and no "
                "sform is set (rule: every edge > 0; nibabel would silently use 1 mm)",
                "re-convert from DICOM; pixdim is broken",
            )
        ]
    vs = _voxel_sizes(img.affine)
    shown = "x".join(f"{v:.3g}" for v in vs)
    if np.any(vs <= 0):
        return [
            _f(
                "error",
                "voxel-size-invalid",
                img,
                f"voxel size {shown} mm has a zero edge (rule: every edge > 0)",
                "re-convert from DICOM; pixdim/sform are broken",
            )
        ]
    units = img.header.get_xyzt_units()[0]
    if np.any(vs < limits.min_voxel_size_mm) or np.any(vs > limits.max_voxel_size_mm):
        return [
            _f(
                "error",
                "voxel-size-implausible",
                img,
                f"voxel size {shown} mm is implausible for brain MRI (rule: every edge in "
                f"[{limits.min_voxel_size_mm}, {limits.max_voxel_size_mm}] mm; header "
                f"spatial unit {units!r})",
                "check the header units and pixdim (metres or microns written as mm?)",
            )
        ]
    out = []
    if float(vs.max()) > limits.thick_slice_mm:
        out.append(
            _f(
                "warning",
                "thick-slices",
                img,
                f"voxel size {shown} mm has an edge above {limits.thick_slice_mm} mm "
                "(small lesions may be missed or merged across slices)",
                "prefer acquisitions with slices <= 3 mm (MAGNIMS-CMSC-NAIMS 2021)",
            )
        )
    ratio = float(vs.max() / vs.min())
    if ratio > limits.max_anisotropy:
        out.append(
            _f(
                "info",
                "anisotropic-voxels",
                img,
                f"voxel size {shown} mm is anisotropic (ratio {ratio:.1f}:1 > "
                f"{limits.max_anisotropy:g}:1)",
            )
        )
    return out


def check_qform_sform(img: LoadedImage, limits: CheckLimits) -> list[Finding]:
    """``qform-sform-mismatch`` (warning): both set (codes > 0) and disagreeing.

    The disagreement is the largest distance between where the two map a
    corner of the grid; nibabel, and hence lesionq, uses the sform.
    """
    h = img.header
    if int(h["qform_code"]) <= 0 or int(h["sform_code"]) <= 0:
        return []
    q, s = h.get_qform(), h.get_sform()
    if not (np.all(np.isfinite(q)) and np.all(np.isfinite(s))):
        return []
    c = _corners(img.data.shape)
    dist = float(np.max(np.linalg.norm((q @ c - s @ c)[:3], axis=0)))
    if dist <= limits.qform_sform_tolerance_mm:
        return []
    return [
        _f(
            "warning",
            "qform-sform-mismatch",
            img,
            f"qform and sform disagree by up to {dist:.2f} mm at the grid corners (rule: "
            f"<= {limits.qform_sform_tolerance_mm} mm); lesionq (nibabel) uses the sform, "
            "tools that prefer the qform will place this image elsewhere",
            "check which is right in a viewer and rewrite both (e.g. nibabel "
            "set_qform(img.get_sform()))",
        )
    ]


def check_orientation(img: LoadedImage, limits: CheckLimits) -> list[Finding]:
    """``orientation`` (info): axis codes; ``oblique`` (info): obliquity > ``oblique_deg``."""
    if not _affine_ok(img):
        return []
    codes = "".join(str(c) for c in nib.aff2axcodes(img.affine))
    out = [
        _f(
            "info",
            "orientation",
            img,
            f"voxel axes point to {codes} (nibabel axis codes of the "
            f"{'sform' if int(img.header['sform_code']) > 0 else 'qform'})",
        )
    ]
    angle = float(np.degrees(np.max(nib.affines.obliquity(img.affine))))
    if angle > limits.oblique_deg:
        out.append(
            _f(
                "info",
                "oblique",
                img,
                f"grid is oblique by {angle:.1f} degrees (> {limits.oblique_deg:g})",
            )
        )
    return out


def check_finite(img: LoadedImage, limits: CheckLimits) -> list[Finding]:
    """``nan-values`` / ``inf-values`` (errors): every voxel must be finite."""
    if img.data.dtype.kind not in "fc":
        return []
    out = []
    n_nan = int(np.count_nonzero(np.isnan(img.data)))
    if n_nan:
        out.append(
            _f(
                "error",
                "nan-values",
                img,
                f"{n_nan} of {img.data.size} voxels are NaN (rule: all voxels finite)",
                "re-export the scan from the scanner/DICOM; do not pass processed images "
                "with NaN outside a mask",
            )
        )
    n_inf = int(np.count_nonzero(np.isinf(img.data)))
    if n_inf:
        out.append(
            _f(
                "error",
                "inf-values",
                img,
                f"{n_inf} of {img.data.size} voxels are +/-inf (rule: all voxels finite)",
                "re-export the scan from the scanner/DICOM (overflowed scaling?)",
            )
        )
    return out


def check_intensities(img: LoadedImage, limits: CheckLimits) -> list[Finding]:
    """Intensity content (finite voxels only).

    ``empty-image`` (error): every voxel 0; ``constant-image`` (error): one
    non-zero value everywhere; ``few-intensity-levels`` (warning): at most two
    distinct values (a mask given as a scan?).
    """
    d = img.data
    if d.dtype.kind not in "biuf" or d.size == 0:
        return []
    finite = d[np.isfinite(d)] if d.dtype.kind == "f" else d.ravel()
    if finite.size == 0:
        return []  # all NaN/inf: reported by check_finite
    lo, hi = finite.min(), finite.max()
    if lo == hi == 0:
        return [
            _f(
                "error",
                "empty-image",
                img,
                "every voxel is 0 (rule: an image with signal)",
                "re-export the scan; the file holds no image",
            )
        ]
    if lo == hi:
        return [
            _f(
                "error",
                "constant-image",
                img,
                f"every voxel has the value {lo} (rule: an image with contrast)",
                "re-export the scan; the file holds no image",
            )
        ]
    levels = np.unique(finite[:: max(1, finite.size // 200_000)])
    if levels.size <= 2 and np.unique(finite).size <= 2:
        return [
            _f(
                "warning",
                "few-intensity-levels",
                img,
                f"only the values {np.unique(finite).tolist()} occur (a mask or label map "
                "given as a scan?)",
                "check that the right file is named as this contrast",
            )
        ]
    return []


#: Per-image checks, in order. ``check_dimensions`` acts as a gate: when it
#: reports an error, the remaining checks are skipped for that image.
IMAGE_CHECKS: tuple[ImageCheck, ...] = (
    check_dimensions,
    check_header_fixes,
    check_dtype,
    check_shape,
    check_orientation_codes,
    check_affine,
    check_voxel_size,
    check_qform_sform,
    check_orientation,
    check_finite,
    check_intensities,
)


# --------------------------------------------------------------------------- runner


def run_image_checks(
    img: LoadedImage,
    limits: CheckLimits | None = None,
    checks: Sequence[ImageCheck] = IMAGE_CHECKS,
) -> list[Finding]:
    """Run the per-image battery on one loaded image (gate: ``not-3d`` stops it)."""
    limits = CheckLimits() if limits is None else limits
    out: list[Finding] = []
    for check in checks:
        found = check(img, limits)
        out.extend(found)
        if check is check_dimensions and any(f.level == "error" for f in found):
            break
    return out
