"""Write phantom subjects as a BIDS dataset with their truth under ``derivatives/truth``.

Layout (``XX`` = session label, ``S`` = subject label)::

    dataset_description.json  README  participants.tsv  participants.json
    sub-S/sub-S_sessions.tsv                     session_id, acq_time, week
    sub-S/ses-XX/anat/sub-S_ses-XX_{FLAIR,T1w,T2w,ce-gadolinium_T1w}.nii.gz   int16
    derivatives/truth/dataset_description.json
    derivatives/truth/desc-tissue_dseg.tsv      tissue label lookup
    derivatives/truth/sub-S/sub-S_lesions.tsv   one row per lesion and session (+ .json)
    derivatives/truth/sub-S/sub-S_visits.tsv    per-session counts and volumes (+ .json)
    derivatives/truth/sub-S/sub-S_truth.json    seed, parameters, motion, grids, lesion shapes
    derivatives/truth/sub-S/ses-XX/anat/sub-S_ses-XX_label-lesion_mask.nii.gz
                                         ..._desc-lesionid_dseg.nii.gz  (uint16 lesion ids)
                                         ..._label-enhancing_mask.nii.gz
                                         ..._label-brain_mask.nii.gz
                                         ..._desc-tissue_dseg.nii.gz
                                         ..._label-lesionchange_desc-newenlarging_mask.nii.gz
                                         ..._label-lesionchange_desc-shrinking_mask.nii.gz
    derivatives/truth/sub-S/ses-XX/xfm/sub-S_ses-XX_from-FLAIR_to-common_mode-image_xfm.txt

Every truth image lies on the grid of its session's images. The change masks
(follow-up sessions only) compare with the previous session. The ``xfm`` files
follow the Ljubljana convention (an ITK transform, LPS, that maps points of the
common space, here the first session's world space, to points of the session's
world space), so ``SimpleITK.Resample(session_image, reference_on_ses01_grid,
transform)`` brings a session onto the first session's grid.

Files are byte-for-byte reproducible: NIfTI files are gzip level 9 with mtime 0
and no file name, text files use fixed float formatting.
"""

from __future__ import annotations

import gzip
import json
import logging
import math
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path

import nibabel as nib
import numpy as np

from ..errors import InputError
from ..io.nifti import atomic_path, atomic_write_text
from .phantoms import CONTRASTS, DARK_T1_FACTOR, TISSUE_LABELS, PhantomSubject

__all__ = ["write_bids", "write_bids_skeleton", "write_nifti", "itk_transform_text"]

log = logging.getLogger(__name__)

ContrastSpec = (
    Sequence[str] | Mapping[str, Sequence[str]] | Callable[[str, str], Sequence[str]] | None
)

_LESION_COLUMNS = {
    "lesion_id": "Lesion id, the value of the lesion in the desc-lesionid_dseg images",
    "session_id": "Session",
    "status": "Relative to the previous session: absent, baseline (present at the first "
    "session), new, stable, enlarging (volume x2.2-3.0), shrinking (volume x0.34-0.51)",
    "enhancing": "Enhances on the ce-gadolinium T1w of this session (true/false)",
    "enhancement": "none, nodular (whole lesion) or ring (outer 2 mm shell)",
    "periventricular": "Touches (within 1 mm) a lateral ventricle (true/false)",
    "centre_x_mm": "Ellipsoid centre, world RAS+ mm of this session (n/a when absent)",
    "centre_y_mm": "see centre_x_mm",
    "centre_z_mm": "see centre_x_mm",
    "head_x_mm": "Ellipsoid centre in the first session's world RAS+ mm (motion undone)",
    "head_y_mm": "see head_x_mm",
    "head_z_mm": "see head_x_mm",
    "radius_mm": "Equivalent-sphere radius of the ellipsoid, mm",
    "volume_mm3": "Analytic ellipsoid volume, mm3",
    "mask_voxels": "Voxels of this lesion in the session's truth mask",
    "mask_volume_mm3": "mask_voxels times the voxel volume, mm3",
    "t1_factor": "Lesion T1w signal relative to the lesion tissue value (0.55-1.0)",
    "t1_contrast": "Planted T1w contrast: (WM - lesion) / (WM - CSF) of the phantom's T1w signal "
    "table (0 = white matter, 1 = CSF; grey matter is at 0.406)",
    "black_hole": "T1 black hole at this session (true/false): present, not enhancing, and at "
    "least as dark as grey matter on the T1w (t1_contrast >= 0.406; with this signal table every "
    "lesion is)",
}

_VISIT_COLUMNS = {
    "session_id": "Session",
    "week": "Nominal trial week",
    "n_lesions": "T2 lesions present (each one 26-connected component of the truth mask)",
    "lesion_volume_mm3": "Volume of the truth lesion mask, mm3",
    "n_new": "Lesions absent at the previous session",
    "n_enlarging": "Lesions enlarged since the previous session",
    "n_shrinking": "Lesions shrunk since the previous session",
    "n_new_or_enlarging": "n_new + n_enlarging (the usual trial endpoint)",
    "n_enhancing": "Gd-enhancing lesions",
    "enhancing_volume_mm3": "Volume of the truth Gd+ mask, mm3",
    "n_bh": "T1 black holes: lesions with black_hole true (sub-S_lesions.tsv): not enhancing, at "
    "least as dark as grey matter on the T1w (the clinical rule, e.g. van Walderveen et al., "
    "Neurology 1998); here every non-enhancing lesion",
    "bh_volume_mm3": "Volume of their truth lesion masks, mm3 (what lesionq's bh_volume_mm3 "
    "estimates)",
    "n_bh_dark": "Markedly dark black holes: black_hole and t1_factor < 0.8 (T1 at most 0.40, about "
    "half way from white matter to CSF)",
    "bh_dark_volume_mm3": "Volume of their truth lesion masks, mm3",
}


# --------------------------------------------------------------------------- low level


def write_nifti(
    array: np.ndarray, affine: np.ndarray, dest: str | os.PathLike[str], dtype: type
) -> Path:
    """Write a 3-D array as a reproducible ``.nii.gz`` (atomic; gzip level 9, mtime 0).

    Parameters
    ----------
    array : ndarray, shape (X, Y, Z)
        Values must be representable in ``dtype`` (integral for integer dtypes).
    affine : ndarray, shape (4, 4)
        Voxel -> world RAS+ mm; written as sform and qform, both code 1 (scanner).
    dest : path-like
    dtype : numpy dtype
        On-disk dtype (``np.int16`` images, ``np.uint8`` masks, ``np.uint16`` ids).

    Raises
    ------
    InputError
        Values do not fit ``dtype`` exactly.
    """
    arr = np.asarray(array)
    out: np.ndarray = arr.astype(dtype)
    if not np.array_equal(out, arr):
        raise InputError(f"{dest}: values do not fit {np.dtype(dtype).name} exactly")
    img = nib.Nifti1Image(out, affine)
    img.set_data_dtype(out.dtype)
    img.set_sform(affine, code=1)
    img.set_qform(affine, code=1)
    img.header.set_xyzt_units("mm", "sec")
    data = gzip.compress(img.to_bytes(), compresslevel=9, mtime=0)
    with atomic_path(dest) as tmp:
        tmp.write_bytes(data)
    return Path(dest)


def itk_transform_text(ras_matrix: np.ndarray) -> str:
    """ITK transform file text for a RAS+ 4x4 matrix (fixed point -> moving point).

    ITK works in LPS, so the matrix is conjugated by ``diag(-1, -1, 1)``.

    Examples
    --------
    >>> print(itk_transform_text(np.eye(4)).splitlines()[3])
    Parameters: 1 0 0 0 1 0 0 0 1 0 0 0
    """
    f = np.diag([-1.0, -1.0, 1.0, 1.0])
    m = f @ np.asarray(ras_matrix, float) @ f
    nums = [*m[:3, :3].ravel(), *m[:3, 3]]
    return (
        "#Insight Transform File V1.0\n#Transform 0\n"
        "Transform: AffineTransform_double_3_3\n"
        f"Parameters: {' '.join(_g(v) for v in nums)}\n"
        "FixedParameters: 0 0 0\n"
    )


def _g(v: float) -> str:
    """Reproducible short float text (12 significant digits, no -0)."""
    v = float(v)
    if v == 0.0:
        return "0"
    return f"{v:.12g}"


def _f(v: float | int | bool | str, digits: int = 4) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | np.integer):
        return str(int(v))
    if isinstance(v, str):
        return v
    if not math.isfinite(float(v)):
        return "n/a"
    s = f"{float(v):.{digits}f}"
    return "0." + "0" * digits if s == "-0." + "0" * digits else s


def _tsv(rows: Sequence[Mapping[str, object]], columns: Sequence[str]) -> str:
    lines = ["\t".join(columns)]
    lines += ["\t".join(_f(r[c]) for c in columns) for r in rows]  # type: ignore[arg-type]
    return "\n".join(lines) + "\n"


def _json(obj: object) -> str:
    return json.dumps(_round(obj), indent=2) + "\n"


def _round(obj: object) -> object:
    if isinstance(obj, float | np.floating):
        v = float(obj)
        return None if not math.isfinite(v) else round(v, 6) + 0.0
    if isinstance(obj, np.ndarray):
        return _round(obj.tolist())
    if isinstance(obj, Mapping):
        return {str(k): _round(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_round(v) for v in obj]
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    return obj


# --------------------------------------------------------------------------- truth


def _visit_rows(subject: PhantomSubject, lesion_rows: Sequence[Mapping[str, object]]) -> list[dict]:
    rows = []
    for v in subject.visits:
        mine = [r for r in lesion_rows if r["visit"] == v.index]
        count = {
            st: sum(r["status"] == st for r in mine) for st in ("new", "enlarging", "shrinking")
        }
        vv = float(np.prod(v.voxel_size_mm))
        bh = [r for r in mine if r["black_hole"]]
        dark = [r for r in bh if float(r["t1_factor"]) < DARK_T1_FACTOR]
        rows.append(
            {
                "session_id": f"ses-{v.session}",
                "week": v.week,
                "n_lesions": sum(r["status"] != "absent" for r in mine),
                "lesion_volume_mm3": float(np.count_nonzero(v.lesion_ids) * vv),
                "n_new": count["new"],
                "n_enlarging": count["enlarging"],
                "n_shrinking": count["shrinking"],
                "n_new_or_enlarging": count["new"] + count["enlarging"],
                "n_enhancing": sum(bool(r["enhancing"]) for r in mine),
                "enhancing_volume_mm3": float(np.count_nonzero(v.enhancing_mask) * vv),
                "n_bh": len(bh),
                "bh_volume_mm3": float(sum(int(r["mask_voxels"]) for r in bh) * vv),
                "n_bh_dark": len(dark),
                "bh_dark_volume_mm3": float(sum(int(r["mask_voxels"]) for r in dark) * vv),
            }
        )
    return rows


def _truth_json(subject: PhantomSubject) -> dict:
    return {
        "subject": f"sub-{subject.label}",
        "seed": subject.seed,
        "generator": "lesionq.testing.phantoms.make_subject",
        "parameters": subject.params,
        "conventions": {
            "head_space": "world RAS+ mm of the first session (its motion is the identity)",
            "motion": "p_world = R @ p_head + t, R = Rz @ Ry @ Rx (degrees, about the RAS axes "
            "through the origin), t in mm",
            "world_to_baseline": "4x4 RAS+ matrix mapping this session's world points to the "
            "first session's world points (the inverse of head_to_world)",
            "lesion_axes": "columns of rotation are the ellipsoid axes in head space; semi_axes_mm "
            "per session are along them (0 while absent)",
        },
        "sessions": [
            {
                "session_id": f"ses-{v.session}",
                "week": v.week,
                "acq_time": v.acq_time,
                "shape": list(v.lesion_ids.shape),
                "affine": v.affine,
                "rotation_deg": list(v.motion.rotation_deg),
                "translation_mm": list(v.motion.translation_mm),
                "head_to_world": v.motion.matrix,
                "world_to_baseline": v.world_to_baseline,
            }
            for v in subject.visits
        ],
        "lesions": [
            {
                "lesion_id": les.lesion_id,
                "onset_session": f"ses-{subject.visits[les.onset_visit].session}",
                "periventricular": les.periventricular,
                "rotation": les.rotation,
                "centres_mm": [None if np.isnan(c).any() else c for c in les.centres_mm],
                "semi_axes_mm": les.semi_axes_mm,
                "status": list(les.status),
                "enhancement": list(les.enhancement),
                "flair_factor": les.flair_factor,
                "t1_factor": les.t1_factor,
            }
            for les in subject.lesions
        ],
    }


def _write_truth(subject: PhantomSubject, truth_root: Path) -> list[Path]:
    written = []
    s = subject.label
    sdir = truth_root / f"sub-{s}"
    lesion_rows = subject.lesion_table()
    cols = list(_LESION_COLUMNS)
    written.append(atomic_write_text(sdir / f"sub-{s}_lesions.tsv", _tsv(lesion_rows, cols)))
    written.append(atomic_write_text(sdir / f"sub-{s}_lesions.json", _json(_LESION_COLUMNS)))
    visit_rows = _visit_rows(subject, lesion_rows)
    written.append(
        atomic_write_text(sdir / f"sub-{s}_visits.tsv", _tsv(visit_rows, list(_VISIT_COLUMNS)))
    )
    written.append(atomic_write_text(sdir / f"sub-{s}_visits.json", _json(_VISIT_COLUMNS)))
    written.append(atomic_write_text(sdir / f"sub-{s}_truth.json", _json(_truth_json(subject))))
    for v in subject.visits:
        stem = f"sub-{s}_ses-{v.session}"
        adir = sdir / f"ses-{v.session}" / "anat"
        aff = v.affine
        written += [
            write_nifti(v.lesion_mask, aff, adir / f"{stem}_label-lesion_mask.nii.gz", np.uint8),
            write_nifti(v.lesion_ids, aff, adir / f"{stem}_desc-lesionid_dseg.nii.gz", np.uint16),
            write_nifti(
                v.enhancing_mask, aff, adir / f"{stem}_label-enhancing_mask.nii.gz", np.uint8
            ),
            write_nifti(v.brain_mask, aff, adir / f"{stem}_label-brain_mask.nii.gz", np.uint8),
            write_nifti(v.tissue, aff, adir / f"{stem}_desc-tissue_dseg.nii.gz", np.uint8),
        ]
        if v.index > 0:
            newenl, shrink = subject.change_masks(v.index)
            written += [
                write_nifti(
                    newenl,
                    aff,
                    adir / f"{stem}_label-lesionchange_desc-newenlarging_mask.nii.gz",
                    np.uint8,
                ),
                write_nifti(
                    shrink,
                    aff,
                    adir / f"{stem}_label-lesionchange_desc-shrinking_mask.nii.gz",
                    np.uint8,
                ),
            ]
        xfm = sdir / f"ses-{v.session}" / "xfm" / f"{stem}_from-FLAIR_to-common_mode-image_xfm.txt"
        written.append(atomic_write_text(xfm, itk_transform_text(v.motion.matrix)))
    return written


# --------------------------------------------------------------------------- public


def _contrasts_for(spec: ContrastSpec, subject: str, session: str) -> tuple[str, ...]:
    if spec is None:
        chosen: Sequence[str] = CONTRASTS
    elif callable(spec):
        chosen = spec(subject, session)
    elif isinstance(spec, Mapping):
        chosen = spec.get(session, ())
    else:
        chosen = spec
    bad = [c for c in chosen if c not in CONTRASTS]
    if bad:
        raise InputError(
            f"contrasts: unknown {bad!r} for sub-{subject} ses-{session}; known: {CONTRASTS}"
        )
    return tuple(c for c in CONTRASTS if c in chosen)


def write_bids(
    subjects: Iterable[PhantomSubject],
    out_dir: str | os.PathLike[str],
    *,
    contrasts: ContrastSpec = None,
    truth: bool = True,
    name: str = "lesionq synthetic MS phantoms",
) -> list[Path]:
    """Write phantom subjects as a BIDS dataset, with their truth as a derivative.

    Parameters
    ----------
    subjects : iterable of PhantomSubject
        Subject labels must be unique.
    out_dir : path-like
        Dataset root; created if needed. Existing files with the same names are
        replaced; other files are left alone.
    contrasts : sequence of str, mapping, callable or None
        Which images to write per session: None = all of :data:`CONTRASTS`; a
        sequence = those at every session; a mapping ``{session_label:
        contrasts}`` (labels like ``"01"``; missing sessions get none); a
        callable ``(subject_label, session_label) -> contrasts``.
    truth : bool
        Also write ``derivatives/truth`` (always complete, whatever ``contrasts``).
    name : str
        ``Name`` in ``dataset_description.json``.

    Returns
    -------
    list of Path
        Every file written, sorted.

    Raises
    ------
    InputError
        Duplicate subject labels or an unknown contrast name.
    """
    subjects = list(subjects)
    labels = [s.label for s in subjects]
    if len(set(labels)) != len(labels):
        raise InputError(f"write_bids: duplicate subject labels in {labels!r}")
    root = Path(out_dir)
    root.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    generated_by = [
        {
            "Name": "lesionq.testing.phantoms",
            "Description": "Seeded synthetic multi-visit MS phantoms with known truth",
        }
    ]
    desc = {
        "Name": name,
        "BIDSVersion": "1.9.0",
        "DatasetType": "raw",
        "License": "CC0",
        "Authors": ["lesionq developers"],
        "GeneratedBy": generated_by,
    }
    written.append(atomic_write_text(root / "dataset_description.json", _json(desc)))
    written.append(
        atomic_write_text(
            root / "README",
            f"{name}\n\nSynthetic data made by lesionq.testing.phantoms (no real subject).\n"
            "Truth: derivatives/truth/.\n",
        )
    )
    prow = [
        {"participant_id": f"sub-{s.label}", "seed": s.seed, "n_sessions": s.n_visits}
        for s in subjects
    ]
    written.append(
        atomic_write_text(
            root / "participants.tsv", _tsv(prow, ["participant_id", "seed", "n_sessions"])
        )
    )
    pjson = {
        "seed": {"Description": "Seed of lesionq.testing.phantoms.make_subject"},
        "n_sessions": {"Description": "Number of sessions (visits)"},
    }
    written.append(atomic_write_text(root / "participants.json", _json(pjson)))
    for s in subjects:
        sdir = root / f"sub-{s.label}"
        rows = [
            {"session_id": f"ses-{v.session}", "acq_time": v.acq_time, "week": v.week}
            for v in s.visits
        ]
        written.append(
            atomic_write_text(
                sdir / f"sub-{s.label}_sessions.tsv", _tsv(rows, ["session_id", "acq_time", "week"])
            )
        )
        for v in s.visits:
            for c in _contrasts_for(contrasts, s.label, v.session):
                dest = (
                    sdir / f"ses-{v.session}" / "anat" / f"sub-{s.label}_ses-{v.session}_{c}.nii.gz"
                )
                written.append(write_nifti(v.images[c], v.affine, dest, np.int16))
    if truth:
        troot = root / "derivatives" / "truth"
        tdesc = {
            "Name": f"{name}: known truth",
            "BIDSVersion": "1.9.0",
            "DatasetType": "derivative",
            "GeneratedBy": generated_by,
        }
        written.append(atomic_write_text(troot / "dataset_description.json", _json(tdesc)))
        lut = [{"index": k, "name": v} for k, v in TISSUE_LABELS.items()]
        written.append(
            atomic_write_text(troot / "desc-tissue_dseg.tsv", _tsv(lut, ["index", "name"]))
        )
        for s in subjects:
            written += _write_truth(s, troot)
    log.info("wrote %d files for %d phantom subjects under %s", len(written), len(subjects), root)
    return sorted(written)


def write_bids_skeleton(
    subjects: Iterable[PhantomSubject],
    out_dir: str | os.PathLike[str],
    *,
    available: ContrastSpec = None,
    truth: bool = True,
) -> list[Path]:
    """Write a BIDS dataset where some sessions miss contrasts, as real uploads do.

    Parameters
    ----------
    subjects : iterable of PhantomSubject
    out_dir : path-like
    available : sequence, mapping, callable or None
        As ``contrasts`` of :func:`write_bids`. Default: every contrast at the
        first session, FLAIR only at later sessions.
    truth : bool

    Returns
    -------
    list of Path
        Every file written, sorted.
    """
    spec: ContrastSpec = available
    if spec is None:

        def spec(subject: str, session: str) -> Sequence[str]:
            return CONTRASTS if session == "01" else ("FLAIR",)

    return write_bids(subjects, out_dir, contrasts=spec, truth=truth)
