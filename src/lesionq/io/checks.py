"""Input check battery: small checks that return findings, run once at the boundary.

In the style of nibabel's ``batteryrunners``: every check is a small function
that looks at one thing and returns a list of :class:`Finding`; the battery is a
plain tuple of those functions (:data:`IMAGE_CHECKS`, :data:`VISIT_CHECKS`) so a
test can run a single check. Nothing is repaired here.

Levels
------
``error``
    The visit cannot be processed; the pipeline fails that visit with the
    finding's message (see :func:`raise_on_errors`).
``warning``
    Printed; processing goes on, but results may be affected.
``info``
    Facts worth a line in a QC report (orientation, a second grid...).

Finding codes (stable; tests and reports rely on them)
------------------------------------------------------
Layout (from :func:`lesionq.io.bids.layout_problems`): ``bids-dir-missing``,
``no-dataset-description``, ``dataset-description-invalid``,
``dataset-description-incomplete``, ``no-subjects``, ``participant-missing``,
``participant-label-invalid``, ``mixed-session-layout``, ``sessions-tsv-invalid``.

Files: ``file-missing``, ``symlink-loop``, ``permission-denied``,
``not-regular-file``, ``file-unreadable``, ``not-nifti``, ``truncated``,
``corrupt-gzip``, ``corrupt-data``.

Images: ``not-3d``, ``header-fixed``, ``dtype-unsupported``, ``shape-tiny``, ``no-orientation``,
``affine-nonfinite``, ``affine-singular``, ``affine-shear``,
``voxel-size-invalid``, ``voxel-size-implausible``, ``thick-slices``,
``anisotropic-voxels``, ``qform-sform-mismatch``, ``orientation``, ``oblique``,
``nan-values``, ``inf-values``, ``empty-image``, ``constant-image``,
``few-intensity-levels``.

Visits: ``missing-flair``, ``duplicate-contrast``, ``several-runs``,
``entity-mismatch``, ``unrecognised-image``, ``unrecognised-file``,
``acq-time-invalid``, ``different-grid``, ``fov-partial``, ``fov-mismatch``.
"""

from __future__ import annotations

import errno
import gzip
import logging
import os
import stat
import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import nibabel as nib
import numpy as np
from nibabel.batteryrunners import BatteryRunner

from ..errors import CorruptFileError, GeometryError, InputError, MissingInputError
from .bids import (
    CONTRASTS,
    REQUIRED_CONTRASTS,
    VisitInputs,
    bids_name_problem,
    contrast_of,
    layout_problems,
    parse_acq_time,
    parse_entities,
)
from .nifti import load_image

__all__ = [
    "Finding",
    "Level",
    "CheckLimits",
    "LoadedImage",
    "read_image",
    "file_problem",
    "run_image_checks",
    "IMAGE_CHECKS",
    "VISIT_CHECKS",
    "check_visit",
    "check_dataset",
    "has_errors",
    "raise_on_errors",
    "format_findings",
    # single checks
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
    "check_required_contrasts",
    "check_duplicates",
    "check_runs",
    "check_entities",
    "check_unrecognised",
    "check_acq_time",
    "check_grids",
]

logger = logging.getLogger(__name__)

Level = Literal["error", "warning", "info"]
_LEVEL_RANK = {"error": 0, "warning": 1, "info": 2}


@dataclass(frozen=True)
class Finding:
    """One result of an input check.

    Attributes
    ----------
    level : {"error", "warning", "info"}
        ``error``: the visit cannot be processed; ``warning``: processing goes
        on; ``info``: a fact for the QC report.
    code : str
        Stable short identifier (e.g. ``"nan-values"``); see the module docstring.
    path : Path or None
        The file (or folder) concerned.
    message : str
        Names the file, the rule and the value received.
    fix : str
        What to do about it (empty for info findings that need nothing).
    """

    level: Level
    code: str
    path: Path | None
    message: str
    fix: str = ""

    def __str__(self) -> str:
        return f"{self.level.upper()} [{self.code}] {self.message}"


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


@dataclass(frozen=True, eq=False)
class LoadedImage:
    """An image read for checking.

    Attributes
    ----------
    path : Path
    header : nibabel.Nifti1Header
        The header as stored (qform/sform codes untouched).
    affine : ndarray, shape (4, 4)
        Voxel (i, j, k) -> world RAS+ mm, as nibabel resolves it (sform if its
        code > 0, else qform if its code > 0, else the pixdim-only fallback).
    data : ndarray
        Voxel data as stored (scaling applied); a trailing singleton 4th axis
        is dropped.
    contrast : str or None
        Key of :data:`lesionq.io.bids.CONTRASTS`, when known.
    raw_header : nibabel.Nifti1Header or None
        The header bytes as stored, *without* the repairs nibabel applies on
        load (e.g. a zero pixdim becomes 1); None when built from an array.
    """

    path: Path
    header: nib.Nifti1Header
    affine: np.ndarray
    data: np.ndarray
    contrast: str | None = None
    raw_header: nib.Nifti1Header | None = None

    @property
    def stored_header(self) -> nib.Nifti1Header:
        """The header as in the file, before nibabel's repairs on load (or ``header``)."""
        return self.header if self.raw_header is None else self.raw_header

    @classmethod
    def from_array(
        cls,
        data: np.ndarray,
        affine: np.ndarray,
        path: str | os.PathLike[str] = "array.nii.gz",
        *,
        qform_code: int = 1,
        sform_code: int = 1,
        contrast: str | None = None,
    ) -> LoadedImage:
        """Build one in memory (for tests and for checking arrays before saving)."""
        affine = np.asarray(affine, dtype=float)
        img = nib.Nifti1Image(np.asarray(data), None)
        img.set_sform(affine, code=sform_code)
        if qform_code > 0:
            img.set_qform(affine, code=qform_code)
        else:
            img.set_qform(None)
        return cls(Path(path), img.header, np.asarray(img.affine), np.asarray(data), contrast)


ImageCheck = Callable[[LoadedImage, CheckLimits], list[Finding]]
VisitCheck = Callable[[VisitInputs, Mapping[str, LoadedImage], CheckLimits], list[Finding]]


# --------------------------------------------------------------------------- reading


def _expected_nii_bytes(img: nib.Nifti1Image) -> int:
    """Bytes an uncompressed ``.nii`` needs: data offset + voxels x item size."""
    shape = img.header.get_data_shape()
    offset = int(getattr(img.dataobj, "offset", 0))
    return offset + int(np.prod(shape)) * img.header.get_data_dtype().itemsize


def _verify_gzip(path: Path, chunk_bytes: int = 1 << 22) -> None:
    """Decompress the whole stream, so gzip's CRC32 and length trailer are verified.

    nibabel reads only the bytes it needs and may stop before the trailer, so
    bytes flipped inside stored (incompressible) deflate blocks go unnoticed
    without this pass.
    """
    with gzip.open(path, "rb") as fh:
        while fh.read(chunk_bytes):
            pass


def _raw_header(path: Path, cls: type[nib.Nifti1Header]) -> nib.Nifti1Header:
    """The header as stored, without nibabel's load-time fixes."""
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rb") as fh:
        return cls.from_fileobj(fh, check=False)


_FILE_KINDS = (
    (stat.S_ISDIR, "a folder"),
    (stat.S_ISFIFO, "a named pipe (FIFO)"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
)


def _symlink_target(p: Path) -> str | None:
    try:
        return os.readlink(p)
    except OSError:
        return None


def file_problem(path: str | os.PathLike[str]) -> Finding | None:
    """Whether ``path`` leads to a regular file this process can read, as a finding.

    Nothing is read beyond opening the file (a FIFO is never opened, so a check
    cannot hang on it).

    Parameters
    ----------
    path : path-like
        An input image as the dataset lists it (a link is followed).

    Returns
    -------
    Finding or None
        None when the file can be read; otherwise one error: ``file-missing``
        (no such file, or a symbolic link to nothing: git-annex content not
        fetched, or a dangling link), ``symlink-loop`` (links that lead back to
        themselves), ``permission-denied``, ``not-regular-file`` (a folder, FIFO,
        socket or device named like the image) or ``file-unreadable`` (any other
        system error, named).
    """
    p = Path(path)
    try:
        st = os.stat(p)
        if stat.S_ISREG(st.st_mode):
            with open(p, "rb"):
                pass
            return None
    except OSError as exc:
        return _os_error_finding(p, exc)
    kind = next((what for test, what in _FILE_KINDS if test(st.st_mode)), "not a regular file")
    return Finding(
        "error",
        "not-regular-file",
        p,
        f"{p}: is {kind}, not a regular file (rule: each image is a .nii or .nii.gz file)",
        "replace it with the scan's NIfTI file, or move it out of the dataset",
    )


def _os_error_finding(p: Path, exc: OSError) -> Finding:
    """The finding for a failed ``stat`` / ``open`` of an input file."""
    target = _symlink_target(p)
    link = f" (a symbolic link to {target})" if target is not None else ""
    if exc.errno == errno.ELOOP:
        return Finding(
            "error",
            "symlink-loop",
            p,
            f"{p}: symlink loop{link}: the chain of symbolic links leads back to itself, "
            "so there is no file to read (rule: a link must end at the image file)",
            "point the link at the real scan (`ls -l` shows the chain), or replace it with "
            "the file",
        )
    if exc.errno in (errno.EACCES, errno.EPERM):
        return Finding(
            "error",
            "permission-denied",
            p,
            f"{p}: permission denied{link}: lesionq may not read this file "
            f"(rule: every input is readable by the user running lesionq; got {exc.strerror})",
            "give that user read access to the file and search access to its folders "
            "(e.g. `chmod a+r FILE`), or run lesionq as a user who has it",
        )
    if exc.errno in (errno.ENOENT, errno.ENOTDIR):
        if target is None:
            return Finding(
                "error",
                "file-missing",
                p,
                f"{p}: file not found",
                "restore the file or remove it from the dataset",
            )
        if "annex/objects" in target:
            return Finding(
                "error",
                "file-missing",
                p,
                f"{p}: file not found (a broken symbolic link into git-annex: annexed content "
                "not fetched?)",
                "fetch the content (`datalad get` / `git annex get`)",
            )
        return Finding(
            "error",
            "file-missing",
            p,
            f"{p}: file not found (a broken symbolic link to {target}, which does not exist)",
            "point the link at the scan's file, or replace the link with the file",
        )
    return Finding(
        "error",
        "file-unreadable",
        p,
        f"{p}: cannot be read{link} ({type(exc).__name__}: {exc.strerror or exc})",
        "check the file and its storage (disk, network mount), then copy it again",
    )


def read_image(
    path: str | os.PathLike[str], contrast: str | None = None
) -> tuple[LoadedImage | None, list[Finding]]:
    """Read an image fully, turning every read failure into a finding.

    Order: the path leads to a regular file lesionq may read (:func:`file_problem`:
    ``file-missing``, also for a broken symlink; ``symlink-loop``;
    ``permission-denied``; ``not-regular-file`` for a folder, FIFO or device;
    ``file-unreadable`` for any other system error); the header reads as NIfTI
    (``not-nifti``); a ``.gz`` stream decompresses to its end with a valid CRC
    (``truncated`` when it ends early, ``corrupt-gzip`` otherwise); an
    uncompressed file is as long as its header says (``truncated``); the voxel
    data load (``corrupt-data``).

    Returns
    -------
    image : LoadedImage or None
        None when the file cannot be read (then ``findings`` holds one error).
    findings : list of Finding
    """
    p = Path(path)
    problem = file_problem(p)
    if problem is not None:
        return None, [problem]
    try:
        head = load_image(p, read_data=False)
    except (CorruptFileError, MissingInputError) as exc:
        return None, [
            Finding(
                "error",
                "not-nifti",
                p,
                f"{p}: not a readable NIfTI-1/2 file (rule: .nii or .nii.gz with a valid "
                f"header; got: {exc})",
                "re-export the scan as NIfTI (e.g. dcm2niix) and replace the file",
            )
        ]
    if p.name.endswith(".gz"):
        try:
            _verify_gzip(p)
        except EOFError as exc:
            return None, [
                Finding(
                    "error",
                    "truncated",
                    p,
                    f"{p}: gzip stream ends early, the file is truncated ({exc}; "
                    f"size {p.stat().st_size} bytes)",
                    "re-upload or re-export this scan (an interrupted copy?)",
                )
            ]
        except (OSError, zlib.error) as exc:
            return None, [
                Finding(
                    "error",
                    "corrupt-gzip",
                    p,
                    f"{p}: gzip stream is corrupt (rule: the stream must decompress with a "
                    f"valid CRC; got {type(exc).__name__}: {exc})",
                    "re-upload or re-export this scan; compare its checksum with the source",
                )
            ]
    else:
        need = _expected_nii_bytes(head)
        size = p.stat().st_size
        if size < need:
            return None, [
                Finding(
                    "error",
                    "truncated",
                    p,
                    f"{p}: file is truncated (rule: header offset + shape x dtype needs "
                    f"{need} bytes; got {size} bytes)",
                    "re-upload or re-export this scan (an interrupted copy?)",
                )
            ]
    try:
        img = load_image(p, read_data=True)
    except CorruptFileError as exc:
        return None, [
            Finding(
                "error",
                "corrupt-data",
                p,
                f"{p}: voxel data cannot be read ({exc})",
                "re-upload or re-export this scan",
            )
        ]
    data = np.asanyarray(img.dataobj)
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    raw = _raw_header(p, type(head.header))
    affine = np.asarray(head.affine, dtype=float)
    return LoadedImage(p, head.header, affine, data, contrast, raw_header=raw), []


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


# --------------------------------------------------------------------------- visit checks


def check_required_contrasts(
    visit: VisitInputs, images: Mapping[str, LoadedImage], limits: CheckLimits
) -> list[Finding]:
    """``missing-flair`` (error): a required contrast has no file."""
    out = []
    for key in REQUIRED_CONTRASTS:
        if visit.path(key) is not None:
            continue
        expected = visit.expected_path(key)
        dup = [p.name for p in visit.duplicates if contrast_of(p) == key]
        extra = [p.name for p in visit.extra if p.name.endswith((".nii", ".nii.gz"))]
        if dup:
            why = f"several files claim it: {dup}"
        elif not visit.anat_dir.is_dir():
            why = f"folder {visit.anat_dir} does not exist"
        else:
            why = "no such file" + (f"; unrecognised images there: {extra}" if extra else "")
        out.append(
            Finding(
                "error",
                f"missing-{key}",
                expected,
                f"{expected}: required {CONTRASTS[key]} image of {visit.visit_id} not found "
                f"({why})",
                f"provide the {CONTRASTS[key]} as {expected.name} (.nii or .nii.gz)",
            )
        )
    return out


def check_duplicates(
    visit: VisitInputs, images: Mapping[str, LoadedImage], limits: CheckLimits
) -> list[Finding]:
    """``duplicate-contrast`` (error): several files claim a contrast and are not its runs.

    Runs of one acquisition (names that differ only in ``run-<index>``) are not
    duplicates: the highest run is used (:func:`check_runs`). Anything else (the
    same name as ``.nii`` and ``.nii.gz``, two ``acq-`` or ``rec-`` labels, a name
    with and one without ``run-``) is not guessed.
    """
    out = []
    by_contrast: dict[str, list[Path]] = {}
    for p in visit.duplicates:
        by_contrast.setdefault(contrast_of(p) or p.name, []).append(p)
    for key, paths in by_contrast.items():
        what = CONTRASTS.get(key, key)
        out.append(
            Finding(
                "error",
                "duplicate-contrast",
                paths[0],
                f"{visit.anat_dir}: {len(paths)} files claim the {what} of {visit.visit_id} "
                f"and are not runs of one acquisition (rule: one file per contrast, or "
                f"files that differ only in run-<index>; got {[p.name for p in paths]})",
                "keep one and move the others out of the dataset; if they are repeats of one "
                "acquisition, give them the same name apart from run-1, run-2, ... "
                "(lesionq uses the highest run)",
            )
        )
    return out


def check_runs(
    visit: VisitInputs, images: Mapping[str, LoadedImage], limits: CheckLimits
) -> list[Finding]:
    """``several-runs`` (warning): a contrast has several runs; the highest is used.

    The usual reason for a second run is a repeat after a failed acquisition
    (motion, a wrong field of view), so the highest ``run-<index>`` is the scan to
    measure; the warning names the file used and the files left out.
    """
    out = []
    for key, used in visit.images().items():
        others = [p for p in visit.other_runs if contrast_of(p) == key]
        if not others:
            continue
        out.append(
            Finding(
                "warning",
                "several-runs",
                used,
                f"{visit.anat_dir}: {len(others) + 1} runs of the {CONTRASTS[key]} of "
                f"{visit.visit_id}: using {used.name}, ignoring "
                f"{', '.join(p.name for p in others)} (rule: of several runs of one contrast "
                "the highest run-<index> is used, the repeat after a failed acquisition)",
                "if another run is the scan to measure, move the runs not to use out of "
                "the dataset",
            )
        )
    return out


def check_entities(
    visit: VisitInputs, images: Mapping[str, LoadedImage], limits: CheckLimits
) -> list[Finding]:
    """``entity-mismatch`` (error): sub-/ses- in a file name differ from its folders."""
    out = []
    for key, p in visit.images().items():
        ent = parse_entities(p) or {}
        name_ses = ent.get("ses")
        if ent.get("sub") == visit.subject and name_ses == visit.session:
            continue
        expected = visit.expected_path(key).name
        got = f"sub-{ent.get('sub')}" + (f"_ses-{name_ses}" if name_ses else "")
        out.append(
            Finding(
                "error",
                "entity-mismatch",
                p,
                f"{p}: file name says {got} but the file lies in the folder of "
                f"{visit.visit_id} (rule: name entities match the folders; expected {expected})",
                "check whether this scan belongs to another subject/session; move or rename it",
            )
        )
    return out


def check_unrecognised(
    visit: VisitInputs, images: Mapping[str, LoadedImage], limits: CheckLimits
) -> list[Finding]:
    """``unrecognised-image`` (warning) / ``unrecognised-file`` (info): ignored files."""
    out = []
    names = "FLAIR, T1w, T2w"
    for p in visit.extra:
        if p.name.endswith((".nii", ".nii.gz")):
            why = bids_name_problem(p)
            out.append(
                Finding(
                    "warning",
                    "unrecognised-image",
                    p,
                    f"{p}: image not used ("
                    + (f"not a BIDS name: {why}; " if why else "")
                    + f"rule: lesionq reads {visit.visit_id}[_acq-<label>][_ce-<label>]"
                    f"[_rec-<label>][_run-<index>]_<X>.nii[.gz] with X one of {names}, "
                    "ce- only on a T1w)",
                    "rename it if it is the scan to use; otherwise ignore this warning",
                )
            )
        else:
            out.append(
                Finding("info", "unrecognised-file", p, f"{p}: not an image lesionq uses; ignored")
            )
    return out


def check_acq_time(
    visit: VisitInputs, images: Mapping[str, LoadedImage], limits: CheckLimits
) -> list[Finding]:
    """``acq-time-invalid`` (warning): ``acq_time`` in sessions.tsv is not ISO 8601."""
    if visit.acq_time is None:
        return []
    try:
        parse_acq_time(visit.acq_time, source=visit.sessions_tsv)
    except InputError as exc:
        return [
            Finding(
                "warning",
                "acq-time-invalid",
                visit.sessions_tsv,
                f"{exc} (row ses-{visit.session})",
                "write acq_time as YYYY-MM-DDThh:mm:ss",
            )
        ]
    return []


def _foreground_points(img: LoadedImage, max_points: int = 1 << 20) -> np.ndarray:
    """World (RAS mm) coordinates of a strided sample of the head/brain voxels, (4, N).

    Foreground: finite voxels above 10 % of the 99th percentile of the non-zero
    voxels (excludes air and noise; includes scalp in unstripped images).
    """
    d = img.data
    step = max(1, int(np.ceil((d.size / max_points) ** (1 / 3))))
    sub = np.asarray(d[::step, ::step, ::step], dtype=np.float32)
    finite = np.isfinite(sub)
    nz = sub[finite & (sub != 0)]
    if nz.size == 0:
        return np.zeros((4, 0))
    thr = 0.1 * float(np.percentile(nz, 99))
    ijk = np.argwhere(finite & (sub > thr)).T * step
    return img.affine @ np.vstack([ijk, np.ones((1, ijk.shape[1]))])


def _coverage(points: np.ndarray, other: LoadedImage) -> float:
    """Fraction of world points that fall inside ``other``'s field of view."""
    if points.shape[1] == 0:
        return 1.0
    ijk = np.linalg.inv(other.affine) @ points
    shape = np.asarray(other.data.shape[:3])[:, None]
    inside = np.all((ijk[:3] >= -0.5) & (ijk[:3] <= shape - 0.5), axis=0)
    return float(np.count_nonzero(inside) / points.shape[1])


def check_grids(
    visit: VisitInputs, images: Mapping[str, LoadedImage], limits: CheckLimits
) -> list[Finding]:
    """Grid and field of view of every contrast against the FLAIR.

    Same shape and grid corners within ``grid_tolerance_mm``: nothing. Otherwise
    the fraction of the FLAIR's foreground voxels (world space) inside the
    other image's field of view decides: below ``min_fov_coverage``:
    ``fov-mismatch`` (error); below ``warn_fov_coverage``: ``fov-partial``
    (warning); else ``different-grid`` (info: it will be co-registered).
    Images with read, dimension or affine errors are not passed here.
    """
    flair = images.get("flair")
    if flair is None:
        return []
    out = []
    points: np.ndarray | None = None
    for key, img in images.items():
        if key == "flair":
            continue
        if img.data.shape[:3] == flair.data.shape[:3]:
            c = _corners(flair.data.shape)
            dist = float(np.max(np.linalg.norm((img.affine @ c - flair.affine @ c)[:3], axis=0)))
            if dist <= limits.grid_tolerance_mm:
                continue
        if points is None:
            points = _foreground_points(flair)
        cov = _coverage(points, img)
        grid = (
            f"grid {tuple(img.data.shape[:3])} at "
            f"{'x'.join(f'{v:.3g}' for v in _voxel_sizes(img.affine))} mm vs the FLAIR's "
            f"{tuple(flair.data.shape[:3])} at "
            f"{'x'.join(f'{v:.3g}' for v in _voxel_sizes(flair.affine))} mm"
        )
        what = f"its field of view covers {cov:.0%} of the FLAIR's head/brain"
        if cov < limits.min_fov_coverage:
            out.append(
                _f(
                    "error",
                    "fov-mismatch",
                    img,
                    f"{what} (rule: >= {limits.min_fov_coverage:.0%}; {grid}); the images "
                    "do not show the same anatomy",
                    "check that this file belongs to this visit and that both headers hold "
                    "the scanner orientation",
                )
            )
        elif cov < limits.warn_fov_coverage:
            out.append(
                _f(
                    "warning",
                    "fov-partial",
                    img,
                    f"{what} (< {limits.warn_fov_coverage:.0%}; {grid}); uncovered parts "
                    "get no information from this contrast",
                    "acquire with full brain coverage",
                )
            )
        else:
            out.append(
                _f(
                    "info",
                    "different-grid",
                    img,
                    f"{grid}, {what}; it will be co-registered to the FLAIR",
                )
            )
    return out


#: Per-visit checks, in order.
VISIT_CHECKS: tuple[VisitCheck, ...] = (
    check_required_contrasts,
    check_duplicates,
    check_runs,
    check_entities,
    check_unrecognised,
    check_acq_time,
    check_grids,
)

#: Codes after which an image is not used by :func:`check_grids`.
_GEOMETRY_BLOCKERS = frozenset(
    {
        "not-3d",
        "shape-tiny",
        "no-orientation",
        "affine-nonfinite",
        "affine-singular",
        "affine-shear",
        "voxel-size-invalid",
        "voxel-size-implausible",
        "empty-image",
        "constant-image",
        "nan-values",
        "inf-values",
    }
)


# --------------------------------------------------------------------------- runners


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


def check_visit(visit: VisitInputs, *, limits: CheckLimits | None = None) -> list[Finding]:
    """Run the whole battery on one visit.

    Every present contrast is read in full once (see :func:`read_image`), checked
    with :data:`IMAGE_CHECKS`, then the visit with :data:`VISIT_CHECKS`.

    Parameters
    ----------
    visit : VisitInputs
    limits : CheckLimits, optional
        Thresholds (defaults when None).

    Returns
    -------
    list of Finding
        In a deterministic order: per contrast (``CONTRASTS`` order) the image
        findings, then the visit findings. ``has_errors`` on it decides whether
        the visit can be processed.
    """
    limits = CheckLimits() if limits is None else limits
    out: list[Finding] = []
    usable: dict[str, LoadedImage] = {}
    for key, path in visit.images().items():
        img, found = read_image(path, contrast=key)
        if img is not None:
            found = run_image_checks(img, limits)
            if not any(f.code in _GEOMETRY_BLOCKERS for f in found):
                usable[key] = img
        out.extend(found)
        del img
    for vcheck in VISIT_CHECKS:
        out.extend(vcheck(visit, usable, limits))
    logger.debug("%s: %d findings", visit.visit_id, len(out))
    return out


def check_dataset(
    bids_dir: str | os.PathLike[str],
    participant_labels: Iterable[str] | None = None,
    *,
    limits: CheckLimits | None = None,
) -> list[Finding]:
    """Check the layout of a BIDS dataset and every visit in it.

    Parameters
    ----------
    bids_dir : path-like
        Dataset root.
    participant_labels : iterable of str, optional
        Subjects to check (with or without ``sub-``); all when None.
    limits : CheckLimits, optional

    Returns
    -------
    list of Finding
        Layout findings first (missing ``dataset_description.json`` is an
        error), then each visit's (subject, session order).
    """
    visits, problems = layout_problems(bids_dir, participant_labels)
    out = [Finding(p.level, p.code, p.path, p.message, p.fix) for p in problems]
    for visit in visits:
        out.extend(check_visit(visit, limits=limits))
    return out


def has_errors(findings: Iterable[Finding]) -> bool:
    """True when any finding has level ``"error"``."""
    return any(f.level == "error" for f in findings)


_ERROR_CLASS: dict[str, type[InputError] | type[CorruptFileError] | type[MissingInputError]] = {
    "file-missing": MissingInputError,
    "symlink-loop": MissingInputError,
    "missing-flair": MissingInputError,
    "not-nifti": CorruptFileError,
    "truncated": CorruptFileError,
    "corrupt-gzip": CorruptFileError,
    "corrupt-data": CorruptFileError,
    "fov-mismatch": GeometryError,
}


def raise_on_errors(findings: Iterable[Finding]) -> None:
    """Raise for the first error finding, with every error's message joined.

    The class follows the first error: :class:`~lesionq.errors.MissingInputError`
    (missing file or FLAIR), :class:`~lesionq.errors.CorruptFileError`
    (unreadable file), :class:`~lesionq.errors.GeometryError` (``fov-mismatch``),
    else :class:`~lesionq.errors.InputError`. Does nothing without errors.
    """
    errors = [f for f in findings if f.level == "error"]
    if not errors:
        return
    cls = _ERROR_CLASS.get(errors[0].code, InputError)
    raise cls("; ".join(f"[{f.code}] {f.message}" for f in errors))


def format_findings(
    findings: Iterable[Finding],
    *,
    min_level: Level = "info",
    root: str | os.PathLike[str] | None = None,
) -> str:
    """Human-readable report, one finding per line (plus its fix), and a summary line.

    Parameters
    ----------
    findings : iterable of Finding
    min_level : {"info", "warning", "error"}
        Least severe level shown (the summary counts all).
    root : path-like, optional
        Folder whose prefix is stripped from paths in messages (e.g. the BIDS root).

    Examples
    --------
    >>> print(format_findings([Finding("error", "nan-values", None, "a.nii: 3 NaN", "re-export")]))
    ERROR    nan-values  a.nii: 3 NaN
             fix: re-export
    1 error, 0 warnings, 0 infos
    """
    items = list(findings)
    limit = _LEVEL_RANK[min_level]
    prefix = None if root is None else f"{Path(root)}{os.sep}"
    lines = []
    for f in items:
        if _LEVEL_RANK[f.level] > limit:
            continue
        msg = f.message if prefix is None else f.message.replace(prefix, "")
        lines.append(f"{f.level.upper():<8} {f.code}  {msg}")
        if f.fix:
            lines.append(f"{'':<8} fix: {f.fix}")
    n = {lvl: sum(f.level == lvl for f in items) for lvl in _LEVEL_RANK}

    def plural(k: int, word: str) -> str:
        return f"{k} {word}" + ("" if k == 1 else "s")

    lines.append(
        ", ".join(
            [
                plural(n["error"], "error"),
                plural(n["warning"], "warning"),
                plural(n["info"], "info"),
            ]
        )
    )
    return "\n".join(lines)
