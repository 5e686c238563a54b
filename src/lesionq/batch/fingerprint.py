"""What identifies a visit's computation: the sha256 of its inputs and the settings hash.

A visit is up to date when its current result in the results database was
computed from inputs with the same fingerprint and with the same settings hash,
and its published outputs are still on disk. Anything else is recomputed.
"""

from __future__ import annotations

import hashlib
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from ..io.bids import CONTRASTS, VisitInputs
from ..io.derivatives import output_path
from ..io.nifti import sha256_file

__all__ = ["ScanRecord", "VisitFingerprint", "fingerprint_visit", "outputs_present"]


@dataclass(frozen=True)
class ScanRecord:
    """One input scan of a visit as recorded in the results database.

    Attributes
    ----------
    contrast : str
        Key of :data:`lesionq.io.bids.CONTRASTS` (``"flair"``, ``"t1"``, ...).
    path : str
        Path relative to the BIDS root (POSIX separators).
    sha256 : str
        Hex digest of the file's bytes.
    size_bytes : int
    """

    contrast: str
    path: str
    sha256: str
    size_bytes: int

    def as_dict(self) -> dict[str, object]:
        """Plain mapping for :meth:`lesionq.store.ResultsDB.record_visit`."""
        return {
            "contrast": self.contrast,
            "path": self.path,
            "sha256": self.sha256,
            "size_bytes": self.size_bytes,
        }


@dataclass(frozen=True)
class VisitFingerprint:
    """The inputs of one visit, hashed.

    Attributes
    ----------
    inputs_sha256 : str
        sha256 over the sorted ``contrast:sha256`` lines of the scans and the
        session's ``acq_time`` (which decides the visit's place in the schedule).
    scans : tuple of ScanRecord
    """

    inputs_sha256: str
    scans: tuple[ScanRecord, ...]


def fingerprint_visit(visit: VisitInputs, bids_dir: str | os.PathLike[str]) -> VisitFingerprint:
    """Hash every input scan of a visit.

    Parameters
    ----------
    visit : VisitInputs
    bids_dir : path-like
        The dataset root, to record paths relative to it.

    Returns
    -------
    VisitFingerprint

    Notes
    -----
    Never raises for a bad input file: a file that cannot be read (missing, a
    broken link or a link loop, permission denied) is hashed as
    ``unreadable:<error class>``, and one that is not a regular file (a folder, a
    FIFO: never opened, so nothing hangs) as ``unreadable:not-a-regular-file``,
    so the fingerprint still exists (the visit then fails in the check battery
    with the file named, and is retried once the file changes).
    """
    root = Path(bids_dir)
    scans: list[ScanRecord] = []
    for contrast in CONTRASTS:
        path: Path | None = getattr(visit, contrast)
        if path is None:
            continue
        try:
            st = path.stat()
            if stat.S_ISREG(st.st_mode):
                digest, size = sha256_file(path), st.st_size
            else:
                digest, size = "unreadable:not-a-regular-file", -1
        except OSError as exc:
            digest, size = f"unreadable:{type(exc).__name__}", -1
        scans.append(ScanRecord(contrast, _relative(path, root), digest, size))
    h = hashlib.sha256()
    for scan in sorted(scans, key=lambda s: s.contrast):
        h.update(f"{scan.contrast}:{scan.sha256}\n".encode())
    h.update(f"acq_time:{visit.acq_time or ''}\n".encode())
    return VisitFingerprint(h.hexdigest(), tuple(scans))


def _relative(path: Path, root: Path) -> str:
    """``path`` relative to ``root`` (both resolved), POSIX; the path itself otherwise.

    The file's own links are followed when they can be; a link loop (which
    :meth:`pathlib.Path.resolve` refuses with ``RuntimeError`` on Python 3.11, an
    ``OSError`` later) keeps the link's own name inside its resolved folder.
    """
    try:
        base = root.resolve()
    except (OSError, RuntimeError):
        base = root.absolute()
    for candidate in (path, path.parent):
        try:
            resolved = candidate.resolve()
        except (OSError, RuntimeError):
            continue
        full = resolved if candidate is path else resolved / path.name
        try:
            return full.relative_to(base).as_posix()
        except ValueError:
            break
    return path.as_posix()


def outputs_present(out_dir: str | os.PathLike[str], visit: VisitInputs) -> bool:
    """True when the visit's published lesion table is on disk.

    The lesion table is published together with the masks in one atomic folder
    swap, so its presence stands for the visit's outputs.
    """
    return output_path(out_dir, visit.subject, visit.session, "lesions").is_file()
