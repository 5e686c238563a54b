"""The one bridge between nibabel (RAS+) and SimpleITK (LPS) geometry.

Conventions
-----------
nibabel / lesionq
    ``array[i, j, k]`` with a 4x4 ``affine`` mapping voxel ``(i, j, k, 1)`` to world
    RAS+ millimetres (x grows to the subject's Right, y Anterior, z Superior).
SimpleITK / ITK
    ``image`` with ``origin``, ``spacing`` and ``direction`` mapping index ``(i, j, k)``
    to physical LPS+ millimetres: ``p = origin + direction @ diag(spacing) @ (i, j, k)``.
    ``sitk.GetArrayFromImage`` returns the voxels in ``(k, j, i)`` order.

The two world frames differ by a flip of the first two axes,
``LPS = diag(-1, -1, 1) @ RAS``; nothing else changes (same voxels, same
millimetres). ITK transforms act on LPS physical points and map points of the
*fixed* (reference) space to points of the *moving* space: that is the transform
``sitk.Resample(moving, reference, transform)`` needs to bring ``moving`` onto the
reference grid, and the one stored in ITK transform files
(``*_from-<moving>_to-<fixed>_mode-image_xfm.txt``).

Every nibabel <-> SimpleITK conversion in lesionq goes through this module.
Any non-singular affine is represented exactly, including oblique and sheared
ones (ITK accepts a non-orthogonal direction matrix); nothing is re-oriented,
re-sampled or "repaired" on the way.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ..errors import CorruptFileError, GeometryError, InputError, MissingInputError
from .nifti import atomic_path

__all__ = [
    "RAS_TO_LPS",
    "affine_to_sitk_geometry",
    "sitk_geometry_to_affine",
    "nib_to_sitk",
    "sitk_to_nib",
    "reference_image",
    "transform_to_ras_matrix",
    "ras_matrix_to_transform",
    "read_transform",
    "write_transform",
]

log = logging.getLogger(__name__)

#: Flip between RAS+ and LPS+ world coordinates (its own inverse).
RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])

# numpy dtypes SimpleITK stores natively; others are converted as listed
_DTYPE_MAP = {
    np.dtype(bool): np.uint8,
    np.dtype(np.float16): np.float32,
}


def _check_affine(affine: np.ndarray, what: str = "affine") -> np.ndarray:
    a = np.asarray(affine, dtype=float)
    if a.shape != (4, 4):
        raise GeometryError(f"{what} must be a 4x4 matrix, got shape {a.shape}")
    if not np.all(np.isfinite(a)):
        raise GeometryError(f"{what} contains NaN or inf: {a.tolist()}")
    if not np.allclose(a[3], [0.0, 0.0, 0.0, 1.0]):
        raise GeometryError(f"{what}: last row must be [0, 0, 0, 1], got {a[3].tolist()}")
    norms = np.linalg.norm(a[:3, :3], axis=0)
    if np.any(norms <= 0) or abs(np.linalg.det(a[:3, :3])) < 1e-12 * np.prod(norms):
        raise GeometryError(f"{what} is singular (a voxel axis has no extent): {a.tolist()}")
    return a


def affine_to_sitk_geometry(
    affine: np.ndarray,
) -> tuple[tuple[float, ...], tuple[float, ...], tuple[float, ...]]:
    """Split a RAS+ voxel-to-world affine into ITK ``(origin, spacing, direction)``.

    Parameters
    ----------
    affine : ndarray, shape (4, 4)
        Voxel ``(i, j, k)`` to world RAS+ mm.

    Returns
    -------
    origin : tuple of 3 float
        LPS+ mm position of voxel (0, 0, 0).
    spacing : tuple of 3 float
        Voxel edge lengths in mm along i, j, k (column norms of the affine).
    direction : tuple of 9 float
        Row-major 3x3 matrix of unit column vectors (LPS+).

    Raises
    ------
    GeometryError
        Affine not 4x4, not finite, or singular.

    Examples
    --------
    >>> aff = np.array([[2.0, 0, 0, 10], [0, 2, 0, 20], [0, 0, 3, 30], [0, 0, 0, 1]])
    >>> origin, spacing, direction = affine_to_sitk_geometry(aff)
    >>> origin, spacing
    ((-10.0, -20.0, 30.0), (2.0, 2.0, 3.0))
    """
    a = RAS_TO_LPS @ _check_affine(affine)
    m = a[:3, :3]
    spacing = np.linalg.norm(m, axis=0)
    direction = m / spacing
    return (
        tuple(float(v) for v in a[:3, 3]),
        tuple(float(v) for v in spacing),
        tuple(float(v) for v in direction.ravel()),
    )


def sitk_geometry_to_affine(origin, spacing, direction) -> np.ndarray:
    """Build the RAS+ voxel-to-world affine from ITK ``origin, spacing, direction``.

    Parameters
    ----------
    origin : sequence of 3 float
        LPS+ mm.
    spacing : sequence of 3 float
        mm.
    direction : sequence of 9 float
        Row-major 3x3.

    Returns
    -------
    ndarray, shape (4, 4), float64
    """
    lps = np.eye(4)
    lps[:3, :3] = np.asarray(direction, float).reshape(3, 3) @ np.diag(np.asarray(spacing, float))
    lps[:3, 3] = np.asarray(origin, float)
    return RAS_TO_LPS @ lps


def nib_to_sitk(array: np.ndarray, affine: np.ndarray) -> sitk.Image:
    """Convert a 3-D array in nibabel ``(i, j, k)`` order + RAS affine to a SimpleITK image.

    Parameters
    ----------
    array : ndarray, shape (X, Y, Z)
        Voxel values; bool becomes uint8 and float16 becomes float32 (SimpleITK has
        neither); every other dtype is kept.
    affine : ndarray, shape (4, 4)
        Voxel to world RAS+ mm.

    Returns
    -------
    SimpleITK.Image
        Size ``(X, Y, Z)``, LPS geometry equivalent to ``affine``.

    Raises
    ------
    InputError
        ``array`` is not 3-D.
    GeometryError
        ``affine`` is not a valid 4x4 voxel-to-world matrix.
    """
    arr = np.asarray(array)
    if arr.ndim != 3:
        raise InputError(f"nib_to_sitk: expected a 3-D array, got shape {arr.shape}")
    if arr.dtype in _DTYPE_MAP:
        arr = arr.astype(_DTYPE_MAP[arr.dtype])
    origin, spacing, direction = affine_to_sitk_geometry(affine)
    # GetImageFromArray reads a C-ordered (k, j, i) array: the transpose of (i, j, k)
    img = sitk.GetImageFromArray(np.ascontiguousarray(arr.transpose(2, 1, 0)), isVector=False)
    img.SetOrigin(origin)
    img.SetSpacing(spacing)
    img.SetDirection(direction)
    return img


def sitk_to_nib(image: sitk.Image) -> tuple[np.ndarray, np.ndarray]:
    """Convert a 3-D scalar SimpleITK image to ``(array, affine)`` in nibabel conventions.

    Parameters
    ----------
    image : SimpleITK.Image
        3-D, one component per pixel.

    Returns
    -------
    array : ndarray, shape (X, Y, Z)
        ``array[i, j, k] == image[i, j, k]``; same dtype as the image (a copy).
    affine : ndarray, shape (4, 4)
        Voxel to world RAS+ mm.

    Raises
    ------
    InputError
        Not a 3-D scalar image.
    """
    if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(
            f"sitk_to_nib: expected a 3-D scalar image, got dimension {image.GetDimension()} "
            f"with {image.GetNumberOfComponentsPerPixel()} components"
        )
    array = sitk.GetArrayFromImage(image).transpose(2, 1, 0)
    affine = sitk_geometry_to_affine(image.GetOrigin(), image.GetSpacing(), image.GetDirection())
    return array, affine


def reference_image(shape: Sequence[int], affine: np.ndarray) -> sitk.Image:
    """A small-footprint SimpleITK image carrying only a grid (uint8 zeros).

    Used as the ``referenceImage`` of resampling and as a geometry holder.

    Parameters
    ----------
    shape : tuple of 3 int
        Grid size along i, j, k.
    affine : ndarray, shape (4, 4)
        Voxel to world RAS+ mm.
    """
    if len(shape) != 3 or any(int(n) < 1 for n in shape):
        raise GeometryError(f"reference_image: shape must be 3 positive ints, got {shape!r}")
    img = sitk.Image([int(n) for n in shape], sitk.sitkUInt8)
    origin, spacing, direction = affine_to_sitk_geometry(affine)
    img.SetOrigin(origin)
    img.SetSpacing(spacing)
    img.SetDirection(direction)
    return img


def transform_to_ras_matrix(transform: sitk.Transform) -> np.ndarray:
    """4x4 matrix of a linear ITK transform, acting on RAS+ points.

    Parameters
    ----------
    transform : SimpleITK.Transform
        Any linear transform (Euler, versor, similarity, affine, translation, or a
        composite of them). It maps fixed-space LPS points to moving-space LPS points.

    Returns
    -------
    ndarray, shape (4, 4)
        ``M`` with ``moving_ras = M @ fixed_ras`` (homogeneous coordinates).

    Raises
    ------
    InputError
        The transform is not linear (e.g. a displacement field or B-spline).
    """
    if not transform.IsLinear():
        raise InputError(
            f"transform_to_ras_matrix: a {transform.GetName()} is not linear; "
            "only linear transforms have a 4x4 matrix"
        )
    # probe the transform: exact for affine maps
    pts = np.array([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    out = np.array([transform.TransformPoint(tuple(p)) for p in pts])
    lps = np.eye(4)
    lps[:3, 3] = out[0]
    lps[:3, :3] = (out[1:] - out[0]).T
    return RAS_TO_LPS @ lps @ RAS_TO_LPS


def ras_matrix_to_transform(matrix: np.ndarray) -> sitk.AffineTransform:
    """ITK affine transform from a 4x4 matrix acting on RAS+ points.

    Parameters
    ----------
    matrix : ndarray, shape (4, 4)
        ``moving_ras = matrix @ fixed_ras``.

    Returns
    -------
    SimpleITK.AffineTransform
        Mapping fixed LPS points to moving LPS points (center 0).
    """
    m = RAS_TO_LPS @ _check_affine(matrix, "transform matrix") @ RAS_TO_LPS
    tx = sitk.AffineTransform(3)
    tx.SetMatrix(tuple(float(v) for v in m[:3, :3].ravel()))
    tx.SetTranslation(tuple(float(v) for v in m[:3, 3]))
    return tx


def read_transform(path: str | os.PathLike[str]) -> sitk.Transform:
    """Read an ITK transform file (text ``.txt``/``.tfm``, or ``.h5``/``.mat``).

    Raises
    ------
    MissingInputError
        The file does not exist.
    CorruptFileError
        ITK cannot parse it.
    """
    p = Path(path)
    if not p.is_file():
        raise MissingInputError(f"{p}: transform file not found")
    try:
        tx = sitk.ReadTransform(str(p))
    except RuntimeError as exc:
        raise CorruptFileError(f"{p}: cannot read as an ITK transform ({exc})") from exc
    if tx.GetDimension() != 3:
        raise CorruptFileError(f"{p}: expected a 3-D transform, got {tx.GetDimension()}-D")
    return tx


def write_transform(transform: sitk.Transform, path: str | os.PathLike[str]) -> Path:
    """Write an ITK transform file atomically (format chosen by extension; use ``.txt``).

    The transform keeps the ITK convention (fixed LPS points -> moving LPS points),
    so ``sitk.Resample(moving, fixed, read_transform(path))`` works in any ITK tool.
    """
    p = Path(path)
    with atomic_path(p) as tmp:
        try:
            sitk.WriteTransform(transform, str(tmp))
        except RuntimeError as exc:
            raise OSError(f"{p}: cannot write ITK transform ({exc})") from exc
    return p
