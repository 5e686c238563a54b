"""Reading and writing NIfTI images, with errors that name the file.

Writing is atomic: data go to a temporary file in the destination folder, which
is renamed over the destination only once complete, so an interrupted run never
leaves a half-written file that looks finished.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import tempfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import nibabel as nib
import numpy as np

from ..errors import CorruptFileError, InputError, MissingInputError

__all__ = [
    "load_image",
    "load_array",
    "save_image",
    "atomic_path",
    "atomic_write_text",
    "is_partial_file",
    "PARTIAL_MARKER",
    "sha256_file",
]


def sha256_file(path: str | os.PathLike[str], chunk_bytes: int = 1 << 20) -> str:
    """sha256 hex digest of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk_bytes):
            h.update(block)
    return h.hexdigest()


def load_image(path: str | os.PathLike[str], *, read_data: bool = True) -> nib.Nifti1Image:
    """Load a NIfTI-1/2 image, turning every low-level failure into a clear error.

    Parameters
    ----------
    path : path-like
        ``.nii`` or ``.nii.gz`` file.
    read_data : bool
        When True (default) the voxel data are read in full, so a truncated or
        corrupt gzip stream is detected here and not later inside a workflow.
        The returned image then holds its data in memory.

    Returns
    -------
    nibabel.Nifti1Image
        With float or integer data exactly as stored (scaling applied by nibabel).

    Raises
    ------
    MissingInputError
        The file does not exist.
    CorruptFileError
        Not a NIfTI file, bad header, truncated data, corrupt gzip.
    """
    p = Path(path)
    if not p.is_file():
        raise MissingInputError(f"{p}: file not found")
    try:
        img = nib.load(str(p))
    except (
        nib.filebasedimages.ImageFileError,
        OSError,
        EOFError,
        ValueError,
        zlib.error,
        gzip.BadGzipFile,
    ) as exc:
        raise CorruptFileError(f"{p}: cannot read as NIfTI ({type(exc).__name__}: {exc})") from exc
    if not isinstance(img, nib.Nifti1Image | nib.Nifti2Image):
        raise CorruptFileError(f"{p}: is a {type(img).__name__}, expected a NIfTI image")
    if read_data:
        try:
            data = np.asanyarray(img.dataobj)
        except (OSError, EOFError, ValueError, zlib.error, gzip.BadGzipFile) as exc:
            raise CorruptFileError(
                f"{p}: voxel data cannot be read, the file is truncated or corrupt "
                f"({type(exc).__name__}: {exc}); re-export or re-upload this scan"
            ) from exc
        img = (
            nib.Nifti1Image(data, img.affine, img.header)
            if isinstance(img, nib.Nifti1Image)
            else nib.Nifti2Image(data, img.affine, img.header)
        )
    return img


def load_array(
    path: str | os.PathLike[str], dtype: type = np.float32
) -> tuple[np.ndarray, np.ndarray]:
    """Load a 3-D image as ``(array, affine)``.

    Parameters
    ----------
    path : path-like
    dtype : numpy dtype
        Output dtype (float32 by default).

    Returns
    -------
    array : ndarray, shape (X, Y, Z)
    affine : ndarray, shape (4, 4)
        Voxel (i, j, k) to world RAS+ mm.

    Raises
    ------
    InputError
        The image is not 3-D (a trailing singleton 4th axis is squeezed).
    """
    img = load_image(path)
    data = np.asanyarray(img.dataobj)
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise InputError(f"{path}: expected a 3-D image, got shape {data.shape}")
    return np.asarray(data, dtype=dtype), np.asarray(img.affine, dtype=float)


#: Marker in the names of temporary files written by :func:`atomic_path` (``.<name>.<random>.part<ext>``).
PARTIAL_MARKER = ".part"


def is_partial_file(path: str | os.PathLike[str]) -> bool:
    """True for a temporary file left by :func:`atomic_path` (e.g. by a killed run).

    Examples
    --------
    >>> is_partial_file("sub-01/.visits.k2j3.part.tsv")
    True
    >>> is_partial_file("sub-01/visits.tsv")
    False
    """
    name = Path(path).name
    return name.startswith(".") and PARTIAL_MARKER + "." in name + "."


@contextmanager
def atomic_path(dest: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``dest``; rename it onto ``dest`` on success.

    The temporary name keeps the destination's extensions (``.nii.gz``), so
    libraries that choose a format by extension behave. On error the temporary
    file is removed and ``dest`` is left untouched.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    suffix = "".join(dest.suffixes) or ".tmp"
    fd, tmp = tempfile.mkstemp(
        prefix=f".{dest.name.split('.')[0]}.", suffix=PARTIAL_MARKER + suffix, dir=dest.parent
    )
    os.close(fd)
    tmp_path = Path(tmp)
    # mkstemp creates 0600 files: give the final file the usual umask-based mode
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp_path, 0o666 & ~umask)
    try:
        yield tmp_path
        with open(tmp_path, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp_path, dest)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def atomic_write_text(dest: str | os.PathLike[str], text: str) -> Path:
    """Write text to ``dest`` atomically (UTF-8)."""
    with atomic_path(dest) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(dest)


def save_image(
    array: np.ndarray,
    affine: np.ndarray,
    dest: str | os.PathLike[str],
    *,
    dtype: type | None = None,
    header: nib.Nifti1Header | None = None,
) -> Path:
    """Save a 3-D array as NIfTI atomically, with sform and qform set to ``affine``.

    Parameters
    ----------
    array : ndarray, shape (X, Y, Z)
    affine : ndarray, shape (4, 4)
        Voxel to world RAS+ mm.
    dest : path-like
        ``.nii.gz`` destination.
    dtype : numpy dtype, optional
        On-disk dtype (e.g. ``np.uint8`` for masks); defaults to the array's.
    header : Nifti1Header, optional
        Header to copy units / descriptions from (geometry is always ``affine``).
    """
    arr = np.asarray(array if dtype is None else np.asarray(array).astype(dtype, copy=False))
    hdr = header.copy() if header is not None else None
    img = nib.Nifti1Image(arr, affine, hdr)
    img.set_data_dtype(arr.dtype)
    img.set_sform(affine, code=1)
    img.set_qform(affine, code=1)
    img.header.set_xyzt_units("mm", "sec")
    if hdr is not None:
        # do not carry intensity scaling from a source header onto masks/maps
        img.header["scl_slope"] = np.nan
        img.header["scl_inter"] = np.nan
    with atomic_path(dest) as tmp:
        nib.save(img, str(tmp))
    return Path(dest)
