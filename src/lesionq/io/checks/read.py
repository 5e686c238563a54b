"""Findings and reading: the result model of the battery and reading one file safely.

Holds :class:`Finding` and :data:`Level` (what every check returns), with the
helpers that act on a list of findings (:func:`has_errors`,
:func:`raise_on_errors`, :func:`format_findings`); :class:`LoadedImage` (an image
read for checking); and the file-level checks of :func:`read_image` /
:func:`file_problem`: existence, permissions, symbolic-link loops, files that are
not regular files, NIfTI header readability, gzip integrity and truncation
(codes ``file-missing``, ``symlink-loop``, ``permission-denied``,
``not-regular-file``, ``file-unreadable``, ``not-nifti``, ``truncated``,
``corrupt-gzip``, ``corrupt-data``).

See :mod:`lesionq.io.checks` for the levels and the full list of codes.
"""

from __future__ import annotations

import errno
import gzip
import os
import stat
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import nibabel as nib
import numpy as np

from ...errors import CorruptFileError, GeometryError, InputError, MissingInputError
from ..nifti import load_image

__all__ = [
    "Finding",
    "Level",
    "LoadedImage",
    "read_image",
    "file_problem",
    "has_errors",
    "raise_on_errors",
    "format_findings",
]

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
        Stable short identifier (e.g. ``"nan-values"``); see :mod:`lesionq.io.checks`.
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


# --------------------------------------------------------------------------- findings


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
