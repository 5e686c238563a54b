"""Pictures of a visit for the review app: QC figures and server-rendered slices.

Files are found only from a visit's BIDS labels through
:func:`lesionq.io.derivatives.output_path` and :func:`lesionq.qc.figure_path`;
nothing from a request is ever joined to a path. Every path is resolved
(symbolic links followed) and must stay inside the output folder, else it is
treated as missing.
"""

from __future__ import annotations

import logging
import os
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np

from ..io.derivatives import output_path
from ..io.nifti import load_image
from ..qc import FIGURES, canonical, canonical_index, figure_path, render_slice_png
from ..qc.slices import AXES, intensity_window

__all__ = [
    "OVERLAYS",
    "Overlay",
    "figure_files",
    "resolve_figure",
    "inside",
    "Volume3D",
    "VolumeCache",
    "slice_sources",
    "canonical_slice_of",
    "VIEWER_VOLUMES",
    "viewer_volumes",
]

LOGGER = logging.getLogger(__name__)


class Overlay(NamedTuple):
    """A slice-viewer overlay: output keys (of ``OUTPUTS``) of its images.

    ``lesion_label`` names the lesions (``lesions.tsv`` label) whose ids the
    label image holds, so that one of them can be highlighted; None when the
    label image holds other ids (the change ids of ``desc-newenlarging_lesions.tsv``).
    """

    background: str
    labels: str | None
    lesion_label: str | None


#: Slice-viewer overlays, in menu order. ``bh`` shows the T1 black holes over the
#: pre-contrast T1 (on the FLAIR grid). ``change`` and ``previous`` show the new and
#: enlarging lesions since the previous visit on this visit's FLAIR and on the previous
#: visit's FLAIR resampled onto this grid (flip between them to judge a change).
OVERLAYS: dict[str, Overlay] = {
    "t2": Overlay("flair_preproc", "t2_labels", "T2"),
    "gd": Overlay("t1ce_coreg", "gd_labels", "Gd"),
    "bh": Overlay("t1_coreg", "bh_labels", "T1hypo"),
    "change": Overlay("flair_preproc", "newenlarging_labels", None),
    "previous": Overlay("previous_flair", "newenlarging_labels", None),
    "none": Overlay("flair_preproc", None, None),
}
_FIGURE_MEDIA = {"png": "image/png", "svg": "image/svg+xml"}

#: Volumes the NiiVue viewer may fetch (``GET /visits/{id}/volume/{name}.nii.gz``): the
#: name in the URL -> output key of ``OUTPUTS``. Nothing else is ever served.
VIEWER_VOLUMES: dict[str, str] = {
    "flair": "flair_preproc",
    "t1": "t1_coreg",
    "t1gd": "t1ce_coreg",
    "t2_labels": "t2_labels",
    "gd_labels": "gd_labels",
    "bh_labels": "bh_labels",
    "newenlarging_labels": "newenlarging_labels",
    "previous_flair": "previous_flair",
}


def _labels(participant_id: str, session_id: str | None) -> tuple[str, str | None]:
    sub = participant_id.removeprefix("sub-")
    ses = None if session_id is None else session_id.removeprefix("ses-")
    return sub, ses


def inside(root: Path, path: Path) -> Path | None:
    """``path`` resolved, when it is an existing file inside ``root`` (resolved); else None."""
    try:
        p = path.resolve(strict=True)
    except (OSError, RuntimeError):
        return None
    if not p.is_file() or not p.is_relative_to(root.resolve()):
        return None
    return p


def figure_files(
    out_root: Path, participant_id: str, session_id: str | None
) -> dict[str, tuple[Path, str, str]]:
    """Existing QC pictures of a visit: file name -> (path, media type, title).

    PNG is listed before SVG for the same figure.
    """
    sub, ses = _labels(participant_id, session_id)
    found: dict[str, tuple[Path, str, str]] = {}
    for key, spec in FIGURES.items():
        for ext in sorted(spec.formats, key=lambda e: e != "png"):
            p = inside(out_root, figure_path(out_root, sub, ses, key, ext))
            if p is not None:
                found[p.name] = (p, _FIGURE_MEDIA[ext], spec.title)
    return found


def resolve_figure(
    out_root: Path, participant_id: str, session_id: str | None, name: str
) -> tuple[Path, str] | None:
    """The visit's QC picture called ``name`` (path, media type), or None.

    ``name`` must equal one of the visit's figure file names exactly; anything else
    (other visits' files, ``..``, absolute paths, encoded separators) is None.
    """
    hit = figure_files(out_root, participant_id, session_id).get(name)
    return None if hit is None else (hit[0], hit[1])


def slice_sources(
    out_root: Path, participant_id: str, session_id: str | None, overlay: str
) -> tuple[Path | None, Path | None]:
    """(background image, label image) of an overlay; None for files missing or outside."""
    bg_key, lab_key, _ = OVERLAYS[overlay]
    sub, ses = _labels(participant_id, session_id)
    bg = inside(out_root, output_path(out_root, sub, ses, bg_key))
    lab = None if lab_key is None else inside(out_root, output_path(out_root, sub, ses, lab_key))
    return bg, lab


def viewer_volumes(out_root: Path, participant_id: str, session_id: str | None) -> dict[str, Path]:
    """The visit's viewer volumes that exist (name of :data:`VIEWER_VOLUMES` -> path).

    Only gzipped NIfTI files inside ``out_root`` are listed.
    """
    sub, ses = _labels(participant_id, session_id)
    found: dict[str, Path] = {}
    for name, key in VIEWER_VOLUMES.items():
        p = inside(out_root, output_path(out_root, sub, ses, key))
        if p is not None and p.name.endswith(".nii.gz"):
            found[name] = p
    return found


@dataclass(frozen=True)
class Volume3D:
    """A loaded image: data (native grid), affine, display window, canonical shape."""

    data: np.ndarray
    affine: np.ndarray
    window: tuple[float, float]
    canonical_shape: tuple[int, int, int]


class VolumeCache:
    """A small thread-safe LRU cache of loaded images, keyed by path, size and mtime."""

    def __init__(self, max_items: int = 8) -> None:
        self.max_items = int(max_items)
        self._items: OrderedDict[tuple[str, int, int], Volume3D] = OrderedDict()
        self._lock = threading.Lock()

    def load(self, path: Path, *, labels: bool = False) -> Volume3D:
        """Load ``path`` (3-D; a 4-D image's first volume) through the cache."""
        st = os.stat(path)
        key = (str(path), st.st_size, st.st_mtime_ns)
        with self._lock:
            hit = self._items.get(key)
            if hit is not None:
                self._items.move_to_end(key)
                return hit
        img = load_image(path)
        data = np.asarray(img.dataobj)
        if data.ndim == 4:
            data = data[..., 0]
        data = data.astype(np.int32 if labels else np.float32, copy=False)
        ras, _ = canonical(data, img.affine)
        window = (0.0, 1.0) if labels else intensity_window(ras)
        vol = Volume3D(data, np.asarray(img.affine, float), window, tuple(ras.shape))  # type: ignore[arg-type]
        with self._lock:
            self._items[key] = vol
            while len(self._items) > self.max_items:
                self._items.popitem(last=False)
        return vol

    def render(
        self,
        image: Path,
        labels: Path | None,
        axis: str,
        index: int | None,
        *,
        highlight: int | None = None,
        convention: str = "radiological",
    ) -> tuple[bytes, int, int]:
        """PNG of one slice (index clamped; default: the middle); returns (png, index, n)."""
        vol = self.load(image)
        lab = None if labels is None else self.load(labels, labels=True)
        if lab is not None and lab.data.shape != vol.data.shape:
            LOGGER.warning("review: %s and %s differ in shape; overlay left out", image, labels)
            lab = None
        n = vol.canonical_shape[AXES[axis]]
        k = n // 2 if index is None else min(max(int(index), 0), n - 1)
        png = render_slice_png(
            vol.data,
            vol.affine,
            axis,
            k,
            labels=None if lab is None else lab.data,
            highlight=highlight,
            convention=convention,
            window=vol.window,
        )
        return png, k, n


def canonical_slice_of(
    affine: np.ndarray, shape: tuple[int, ...], point_mm: tuple[float, float, float], axis: str
) -> int:
    """Canonical slice index (along ``axis``) of the voxel nearest a world RAS+ point (mm).

    Examples
    --------
    >>> canonical_slice_of(np.diag([2.0, 2.0, 4.0, 1.0]), (10, 10, 9), (3.0, 5.0, 16.2), "axial")
    4
    """
    ijk = np.linalg.solve(np.asarray(affine, float), np.array([*point_mm, 1.0]))[:3]
    ijk = np.clip(np.rint(ijk), 0, np.asarray(shape[:3]) - 1).astype(int)
    return int(canonical_index(affine, tuple(int(s) for s in shape[:3]), ijk)[AXES[axis]])  # type: ignore[arg-type]
