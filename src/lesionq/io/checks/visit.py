"""Checks across the contrasts of one visit and of a dataset, and the entry points.

Holds the single visit checks (required and duplicate contrasts, runs, file-name
entities, unrecognised files, ``acq_time``, grids and fields of view against
the FLAIR), the battery :data:`VISIT_CHECKS`, and the entry points
:func:`check_visit` (read every contrast, run :data:`~lesionq.io.checks.image.IMAGE_CHECKS`
on each, then the visit checks) and :func:`check_dataset` (the layout of a
BIDS dataset, then every visit in it).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

import numpy as np

from ...errors import InputError
from ..bids import (
    CONTRASTS,
    REQUIRED_CONTRASTS,
    VisitInputs,
    bids_name_problem,
    contrast_of,
    layout_problems,
    parse_acq_time,
    parse_entities,
)
from .image import CheckLimits, _corners, _f, _voxel_sizes, run_image_checks
from .read import Finding, LoadedImage, read_image

__all__ = [
    "VISIT_CHECKS",
    "check_visit",
    "check_dataset",
    "check_required_contrasts",
    "check_duplicates",
    "check_runs",
    "check_entities",
    "check_unrecognised",
    "check_acq_time",
    "check_grids",
]

logger = logging.getLogger(__name__)

VisitCheck = Callable[[VisitInputs, Mapping[str, LoadedImage], CheckLimits], list[Finding]]


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


# --------------------------------------------------------------------------- entry points


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
