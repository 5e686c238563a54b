"""Conversion of a DICOM series to a de-identified NIfTI with ``dcm2niix``.

:func:`convert_series` runs ``dcm2niix`` (the PyPI binary next to the Python
executable, else on ``PATH``: :func:`find_dcm2niix`; no fallback converter) on
one series in a private temporary folder, with its anonymisation on (``-ba y``,
``-c ""``), then rebuilds the NIfTI header from voxels + affine
(:func:`lesionq.io.deid.anonymous_nifti`) and keeps only whitelisted sidecar
fields (:func:`lesionq.io.deid.filter_sidecar`). Files are written atomically
and only when their bytes change (:func:`write_bytes_if_changed`, which returns a
:class:`WrittenFile`), so a re-ingest is a no-op; the gzip stream has mtime 0 and
no name, so identical voxels give identical bytes. :func:`dcm2niix_version` is
the converter's version string recorded in provenance.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import nibabel as nib
import numpy as np

from ...errors import ProcessingError
from ..deid import anonymous_nifti, filter_sidecar, redact
from ..nifti import atomic_path, sha256_file
from .read import DicomSeries

__all__ = [
    "WrittenFile",
    "ConversionResult",
    "write_bytes_if_changed",
    "find_dcm2niix",
    "dcm2niix_version",
    "convert_series",
]

# --------------------------------------------------------------------------- conversion


@dataclass(frozen=True)
class WrittenFile:
    """A file written (or found already up to date) by ingest.

    ``action`` is ``created``, ``replaced`` (content changed) or ``unchanged``.
    """

    path: Path
    action: Literal["created", "replaced", "unchanged"]
    sha256: str


@dataclass(frozen=True)
class ConversionResult:
    """What :func:`convert_series` wrote."""

    image: WrittenFile
    sidecar: WrittenFile
    converter: str
    dropped_fields: tuple[str, ...]
    cleared_header_fields: tuple[str, ...]
    shape: tuple[int, ...]
    affine: np.ndarray


def write_bytes_if_changed(dest: str | os.PathLike[str], data: bytes) -> WrittenFile:
    """Write ``data`` atomically unless ``dest`` already holds exactly these bytes.

    Returns
    -------
    WrittenFile
        ``unchanged`` (same sha256, nothing written), ``replaced`` or ``created``.
    """
    dest = Path(dest)
    digest = hashlib.sha256(data).hexdigest()
    if dest.is_file():
        if sha256_file(dest) == digest:
            return WrittenFile(dest, "unchanged", digest)
        action: Literal["created", "replaced", "unchanged"] = "replaced"
    else:
        action = "created"
    with atomic_path(dest) as tmp:
        tmp.write_bytes(data)
    return WrittenFile(dest, action, digest)


@functools.lru_cache(maxsize=4)
def _find(exe_dir: str, path_env: str) -> str | None:
    local = Path(exe_dir) / "dcm2niix"
    if local.is_file() and os.access(local, os.X_OK):
        return str(local)
    return shutil.which("dcm2niix", path=path_env)


def find_dcm2niix() -> Path:
    """Path of the ``dcm2niix`` binary: next to ``sys.executable``, else on ``PATH``.

    Raises
    ------
    ProcessingError
        Not found (install it with ``pip install dcm2niix``).
    """
    found = _find(str(Path(sys.executable).parent), os.environ.get("PATH", ""))
    if found is None:
        raise ProcessingError(
            f"dcm2niix not found next to {sys.executable} nor on PATH "
            "(rule: DICOM ingest converts with dcm2niix); install it with 'pip install dcm2niix'"
        )
    return Path(found)


@functools.lru_cache(maxsize=4)
def dcm2niix_version(binary: str | None = None) -> str:
    """``dcm2niix vX.Y.Z`` of the binary (its ``--version`` exits 3: that is normal)."""
    exe = binary or str(find_dcm2niix())
    try:
        run = subprocess.run(
            [exe, "--version"], capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ProcessingError(f"{exe}: cannot run ({type(exc).__name__}: {exc})") from exc
    m = re.search(r"v\d+\.\d+\.\d+\w*", run.stdout + run.stderr)
    return f"dcm2niix {m.group(0) if m else 'unknown-version'}"


def _nifti_gz_bytes(img: nib.Nifti1Image) -> bytes:
    # mtime 0 and no file name in the gzip header: identical voxels -> identical bytes
    return gzip.compress(img.to_bytes(), compresslevel=6, mtime=0)


def convert_series(
    series: DicomSeries,
    dest: str | os.PathLike[str],
    *,
    identifiers: Iterable[str] = (),
    sidecar_extra: Mapping[str, Any] | None = None,
    timeout_s: float = 300.0,
    binary: str | os.PathLike[str] | None = None,
) -> ConversionResult:
    """Convert one series to a de-identified ``.nii.gz`` + ``.json`` sidecar.

    Parameters
    ----------
    series : DicomSeries
    dest : path-like
        Destination ``.nii.gz``; the sidecar goes beside it (``.json``).
    identifiers : iterable of str
        Values to redact from free-text sidecar fields (the subject's headers).
    sidecar_extra : mapping, optional
        Fields added to the sidecar (e.g. provenance); must be JSON-serialisable.
    timeout_s : float
        Limit on the converter's run time, s.
    binary : path-like, optional
        The ``dcm2niix`` to run (:func:`find_dcm2niix` when None).

    Returns
    -------
    ConversionResult

    Raises
    ------
    ProcessingError
        dcm2niix is missing, fails, times out, or gives other than one volume.
    """
    dest = Path(dest)
    if not dest.name.endswith(".nii.gz"):
        raise ProcessingError(f"{dest}: destination must end in .nii.gz")
    exe = str(binary) if binary is not None else str(find_dcm2niix())
    version = dcm2niix_version(exe)
    label = f"series {series.series_number}"
    ids = list(identifiers) + list(series.identifiers)
    with tempfile.TemporaryDirectory(prefix="lesionq-dcm2niix-") as tmp:
        src = Path(tmp) / "in"
        out = Path(tmp) / "out"
        src.mkdir()
        out.mkdir()
        for i, f in enumerate(series.files):
            os.symlink(Path(f).resolve(), src / f"{i:05d}.dcm")
        cmd = [exe, "-b", "y", "-ba", "y", "-c", "", "-z", "n", "-x", "n", "-l", "o"]
        cmd += ["-i", "n", "-w", "1", "-f", "series", "-o", str(out), str(src)]
        try:
            run = subprocess.run(
                cmd, capture_output=True, text=True, timeout=timeout_s, check=False
            )
        except subprocess.TimeoutExpired as exc:
            raise ProcessingError(
                f"{label}: dcm2niix ran longer than {timeout_s:g} s (rule: timeout_s)"
            ) from exc
        except OSError as exc:
            raise ProcessingError(f"{label}: cannot run {exe} ({exc})") from exc
        images = sorted(out.glob("*.nii"))
        if run.returncode != 0 or len(images) != 1:
            tail = redact((run.stderr or run.stdout)[-400:].replace(str(tmp), "<tmp>"), ids)
            raise ProcessingError(
                f"{label}: dcm2niix gave {len(images)} volumes with exit status "
                f"{run.returncode} (rule: one series converts to one 3-D volume): {tail.strip()}"
            )
        sidecar_path = images[0].with_suffix(".json")
        meta = (
            json.loads(sidecar_path.read_text(encoding="utf-8")) if sidecar_path.is_file() else {}
        )
        raw = nib.load(str(images[0]))
        if not isinstance(raw, nib.Nifti1Image):
            raise ProcessingError(f"{label}: dcm2niix wrote a {type(raw).__name__}, not NIfTI-1")
        if len(raw.shape) > 3 and int(np.prod(raw.shape[3:])) != 1:
            raise ProcessingError(
                f"{label}: dcm2niix gave a {raw.shape} image (rule: one 3-D volume per series)"
            )
        cleared = [
            n
            for n in ("descrip", "aux_file", "intent_name", "db_name")
            if bytes(raw.header[n].item()).strip(b"\x00 \t")
        ]
        img = anonymous_nifti(raw)
        payload = _nifti_gz_bytes(img)
    kept, dropped = filter_sidecar(meta, ids)
    if sidecar_extra:
        kept.update(sidecar_extra)
    text = json.dumps(kept, indent=2, sort_keys=True, ensure_ascii=True) + "\n"
    image = write_bytes_if_changed(dest, payload)
    sidecar = write_bytes_if_changed(
        dest.with_name(dest.name[: -len(".nii.gz")] + ".json"), text.encode("utf-8")
    )
    return ConversionResult(
        image=image,
        sidecar=sidecar,
        converter=version,
        dropped_fields=tuple(dropped),
        cleared_header_fields=tuple(cleared),
        shape=tuple(int(s) for s in img.shape),
        affine=np.asarray(img.affine),
    )
