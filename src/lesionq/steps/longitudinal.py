"""In-memory longitudinal steps: register a subject's visits, compare a visit with an earlier one.

Like :mod:`lesionq.steps`, these take :class:`~lesionq.types.Volume` objects and
protocol sections and return frozen results; the nipype interfaces
(:mod:`lesionq.interfaces.longitudinal`) and the API (:func:`lesionq.compare_visits`)
call them. Nothing is read or written here.

Spaces
------
The subject's *reference* is its baseline visit (the first visit in time order):
trial endpoints are counted against baseline and the previous visit, the baseline
grid is native (never interpolated), and each follow-up needs one registration.
``register_visit`` estimates, with the reference FLAIR as *fixed* image, the rigid
transform mapping reference points (LPS mm) to the visit's points (ITK convention,
stored as ``..._from-ses<visit>_to-ses<ref>_mode-image_xfm.txt``). Two visits are
compared on the *later* visit's grid (where its new-lesion mask is reported):
:func:`transform_between` composes the two reference transforms into the map from
later-visit points to earlier-visit points.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import SimpleITK as sitk
from scipy import ndimage as ndi

from ..core.change import detect_change, track_lesions
from ..core.components import label_lesions
from ..core.units import voxels_to_mm3
from ..errors import ConfigError
from ..io.atlas import load_atlas
from ..registration.rigid import estimate_affine, estimate_rigid, resample_to
from ..types import Volume

__all__ = [
    "VisitImages",
    "Registered",
    "Compared",
    "CHANGE_TABLE_COLUMNS",
    "register_visit",
    "transform_between",
    "compare_visits",
    "track_visits",
    "atlas_wm_prior",
]

LOGGER = logging.getLogger(__name__)

#: Columns of the per-visit change table (one row per new or enlarging lesion).
CHANGE_TABLE_COLUMNS: tuple[str, ...] = (
    "change_id",
    "status",
    "volume_mm3",
    "previous_volume_mm3",
    "grown_volume_mm3",
    "evidence_mean",
    "centroid_x_mm",
    "centroid_y_mm",
    "centroid_z_mm",
    "lesion_ids",
)


@dataclass(frozen=True)
class VisitImages:
    """What a visit contributes to longitudinal analysis (all on its FLAIR grid).

    Attributes
    ----------
    flair : Volume
        Preprocessed (bias-corrected) FLAIR.
    brain_mask : Volume
        Brain mask (uint8).
    lesion_mask : Volume
        Cross-sectional T2 lesion mask (uint8).
    probability : Volume or None
        Cross-sectional lesion probability (float32, 0..1).
    session : str or None
        Session label without ``ses-`` (for messages).
    wm_prior : Volume or None
        White-matter prior (0..1) on the visit's grid (:func:`atlas_wm_prior`);
        used when the visit is the *later* one of a comparison.
    """

    flair: Volume
    brain_mask: Volume
    lesion_mask: Volume
    probability: Volume | None = None
    session: str | None = None
    wm_prior: Volume | None = None


@dataclass(frozen=True)
class Registered:
    """A visit registered to the subject's reference visit.

    Attributes
    ----------
    transform : SimpleITK.Transform
        Maps reference-grid LPS points to the visit's LPS points (fixed = reference).
    flair_in_reference : Volume
        The visit's FLAIR resampled onto the reference grid (linear), for QC.
    """

    transform: sitk.Transform
    flair_in_reference: Volume


@dataclass(frozen=True)
class Compared:
    """Change between an earlier and a later visit, on the later visit's grid.

    Attributes
    ----------
    new_enlarging : Volume
        uint8 mask of the new and enlarging lesions (1 = lesion).
    change_labels : Volume
        int32 labels of those lesions; value = ``change_id`` of ``table``.
    lesion_status : Volume
        uint8 code per voxel of the later visit's cross-sectional lesions
        (0 background, see :data:`lesionq.core.change.STATUS_CODES`).
    table : pandas.DataFrame
        One row per new or enlarging lesion; columns :data:`CHANGE_TABLE_COLUMNS`.
    lesion_statuses : dict
        ``lesion_id`` of the later visit's cross-sectional lesions (labelled by
        :func:`lesionq.core.components.label_lesions` with the protocol's
        ``[lesions]``: the ids of its ``lesions.tsv``) -> status string.
    counts : dict
        ``new_t2_count``, ``enlarging_t2_count``, ``t2_volume_mm3``,
        ``previous_t2_volume_mm3``, ``t2_volume_change_mm3`` (later minus earlier,
        both measured on the later grid).
    earlier_on_later : Volume
        The earlier FLAIR resampled onto the later grid and intensity-matched (QC).
    evidence : Volume
        float32 change evidence (difference z-score) on the later grid (QC).
    """

    new_enlarging: Volume
    change_labels: Volume
    lesion_status: Volume
    table: pd.DataFrame
    lesion_statuses: dict[int, str]
    counts: dict[str, Any]
    earlier_on_later: Volume
    evidence: Volume


def register_visit(
    visit: VisitImages,
    reference: VisitImages,
    *,
    registration: Mapping[str, Any],
    n_threads: int = 1,
) -> Registered:
    """Rigidly (or affinely) register a visit's FLAIR to the reference visit's FLAIR.

    Parameters
    ----------
    visit, reference : VisitImages
        Preprocessed FLAIRs and brain masks.
    registration : mapping
        The protocol's ``[longitudinal_registration]`` section: ``mode``
        (``"rigid"`` or ``"affine"``), ``fixed_mask`` (``"none"``: the whole field
        of view, default; ``"brain"``: the reference brain mask; on the phantoms
        the brain-only metric left errors up to 2 mm, the whole field of view
        <= 0.3 mm) plus keyword parameters of
        :func:`lesionq.registration.rigid.estimate_rigid` /
        :func:`~lesionq.registration.rigid.estimate_affine`.
    n_threads : int
        ITK thread budget.

    Returns
    -------
    Registered

    Raises
    ------
    lesionq.errors.RegistrationError
        The registration failed its quality checks; the visit must be flagged,
        not compared.
    """

    params = dict(registration)
    mode = str(params.pop("mode", "rigid"))
    if mode not in ("rigid", "affine"):
        raise ConfigError(
            f"[longitudinal_registration] mode must be 'rigid' or 'affine', got {mode!r}"
        )
    fixed_mask_mode = str(params.pop("fixed_mask", "none"))
    if fixed_mask_mode not in ("none", "brain"):
        raise ConfigError(
            f"[longitudinal_registration] fixed_mask must be 'none' or 'brain', got {fixed_mask_mode!r}"
        )
    estimate = estimate_rigid if mode == "rigid" else estimate_affine
    ref, mov = reference.flair, visit.flair
    ref_brain = np.asarray(reference.brain_mask.array) > 0
    # the brain masks seed the "brain" initialiser and judge the final overlap
    params.update(fixed_brain=ref_brain, moving_brain=np.asarray(visit.brain_mask.array) > 0)
    tx = estimate(
        np.asarray(ref.array, dtype=np.float32),
        ref.affine,
        np.asarray(mov.array, dtype=np.float32),
        mov.affine,
        fixed_mask=ref_brain if fixed_mask_mode == "brain" else None,
        n_threads=n_threads,
        **params,
    )
    on_ref = resample_to(
        mov.array,
        mov.affine,
        ref.shape,
        ref.affine,
        tx,
        interpolation="linear",
        n_threads=n_threads,
    )
    LOGGER.info("registered ses-%s to ses-%s (%s)", visit.session, reference.session, mode)
    return Registered(tx, Volume(on_ref.astype(np.float32), ref.affine, "FLAIR"))


def transform_between(
    later: sitk.Transform | None, earlier: sitk.Transform | None
) -> sitk.AffineTransform:
    """Map later-visit points to earlier-visit points through the reference.

    Parameters
    ----------
    later, earlier : SimpleITK.Transform
        Reference -> visit transforms of the two visits (identity for the
        reference itself: None or an identity transform). Only linear (rigid,
        affine) transforms are supported.

    Returns
    -------
    SimpleITK.AffineTransform
        ``earlier o inverse(later)``.
    """
    la, lb = _affine_parts(later)
    ea, eb = _affine_parts(earlier)
    inv = np.linalg.inv(la)
    out = sitk.AffineTransform(3)
    out.SetMatrix((ea @ inv).ravel().tolist())
    out.SetTranslation((eb - ea @ inv @ lb).tolist())
    return out


def _affine_parts(tx: sitk.Transform | None) -> tuple[np.ndarray, np.ndarray]:
    """``(A, b)`` with ``tx(x) = A x + b`` (LPS mm), probed from the transform itself."""
    if tx is None:
        return np.eye(3), np.zeros(3)
    b = np.asarray(tx.TransformPoint((0.0, 0.0, 0.0)), float)
    cols = [np.asarray(tx.TransformPoint(tuple(e)), float) - b for e in np.eye(3)]
    return np.stack(cols, axis=1), b


def compare_visits(
    earlier: VisitImages,
    later: VisitImages,
    later_to_earlier: sitk.Transform | None,
    *,
    change: Mapping[str, Any],
    lesions: Mapping[str, Any],
    n_threads: int = 1,
) -> Compared:
    """Find the new and enlarging lesions of ``later`` since ``earlier``.

    Parameters
    ----------
    earlier, later : VisitImages
        The two visits, each on its own grid.
    later_to_earlier : SimpleITK.Transform or None
        Maps later-grid LPS points to earlier-grid points (:func:`transform_between`);
        None = the world coordinates already agree.
    change : mapping
        The protocol's ``[change]`` section (keyword parameters of
        :func:`lesionq.core.change.detect_change`).
    lesions : mapping
        The protocol's ``[lesions]`` section (minimum volume, connectivity).
    n_threads : int
        Thread budget.

    Returns
    -------
    Compared
    """

    L, E = later.flair, earlier.flair
    vs = L.voxel_size_mm

    def onto(vol: Volume, interp: str) -> np.ndarray:
        return resample_to(
            np.asarray(vol.array, dtype=np.float32),
            vol.affine,
            L.shape,
            L.affine,
            later_to_earlier,
            interpolation=interp,
            n_threads=n_threads,
        )

    e_flair = onto(E, "linear")
    e_brain = onto(earlier.brain_mask, "nearest") > 0
    e_les = onto(earlier.lesion_mask, "nearest") > 0
    lesion_rule = dict(lesions)
    res, e_matched = detect_change(
        np.asarray(L.array, dtype=np.float32),
        e_flair,
        np.asarray(later.brain_mask.array) > 0,
        e_brain,
        np.asarray(later.lesion_mask.array) > 0,
        e_les,
        vs,
        earlier_voxel_size_mm=_voxel_size_along(E.affine, L.affine, later_to_earlier),
        wm_prior=None if later.wm_prior is None else np.asarray(later.wm_prior.array, np.float32),
        min_volume_mm3=float(lesion_rule.get("min_volume_mm3", 0.0)),
        connectivity=int(lesion_rule.get("connectivity", 26)),
        **dict(change),
    )
    keep = res.ids_with("new", "enlarging")
    change_labels = np.zeros(L.shape, np.int32)
    lut = np.zeros(res.n + 1, np.int32)
    lut[keep] = np.arange(1, keep.size + 1)
    change_labels = lut[res.labels]
    # the later visit's own lesions (ids of its lesions.tsv) get the status of the
    # compared lesion they overlap most
    xs_labels, n_xs = label_lesions(np.asarray(later.lesion_mask.array) > 0, vs, **lesion_rule)
    statuses: dict[int, str] = {}
    for lid in range(1, n_xs + 1):
        under = res.labels[xs_labels == lid]
        under = under[under > 0]
        if under.size == 0:  # cannot happen (the compared lesions contain them); be explicit
            statuses[lid] = "stable"
            continue
        ids, n_vox = np.unique(under, return_counts=True)
        statuses[lid] = res.status[int(ids[np.argmax(n_vox)]) - 1]
    table = _change_table(res, keep, change_labels, xs_labels, L.affine)
    later_vol = float(voxels_to_mm3(int(n_xs and np.count_nonzero(xs_labels)), vs))
    e_lab, _ = label_lesions(
        np.asarray(earlier.lesion_mask.array) > 0, E.voxel_size_mm, **lesion_rule
    )
    earlier_vol = float(voxels_to_mm3(int(np.count_nonzero(e_lab)), E.voxel_size_mm))
    counts = {
        "new_t2_count": int(sum(res.status[i - 1] == "new" for i in keep)),
        "enlarging_t2_count": int(sum(res.status[i - 1] == "enlarging" for i in keep)),
        "t2_volume_mm3": round(later_vol, 3),
        "previous_t2_volume_mm3": round(earlier_vol, 3),
        "t2_volume_change_mm3": round(later_vol - earlier_vol, 3),
    }
    return Compared(
        new_enlarging=Volume((change_labels > 0).astype(np.uint8), L.affine, "mask"),
        change_labels=Volume(change_labels.astype(np.int32), L.affine, "labels"),
        lesion_status=Volume(res.status_image(), L.affine, "status"),
        table=table,
        lesion_statuses=statuses,
        counts=counts,
        earlier_on_later=Volume(e_matched.astype(np.float32), L.affine, "FLAIR"),
        evidence=Volume(
            np.asarray(res.evidence if res.evidence is not None else np.zeros(L.shape), np.float32),
            L.affine,
            "evidence",
        ),
    )


def _voxel_size_along(
    earlier_affine: np.ndarray, later_affine: np.ndarray, later_to_earlier: sitk.Transform | None
) -> tuple[float, float, float]:
    """The earlier acquisition's voxel edges seen along each later-grid axis (mm).

    For each later axis (a unit vector mapped into the earlier space by the linear
    part of ``later_to_earlier``), the projection-weighted sum of the earlier voxel
    edges: exact for aligned grids, a fair approximation for small rotations.
    """
    ras_to_lps = np.diag([-1.0, -1.0, 1.0])
    a_lat = ras_to_lps @ np.asarray(later_affine, float)[:3, :3]
    a_ear = ras_to_lps @ np.asarray(earlier_affine, float)[:3, :3]
    lin, _ = _affine_parts(later_to_earlier)
    e_size = np.linalg.norm(a_ear, axis=0)
    e_dirs = a_ear / e_size
    out = []
    for k in range(3):
        u = lin @ (a_lat[:, k] / np.linalg.norm(a_lat[:, k]))
        u = u / np.linalg.norm(u)
        w = np.abs(e_dirs.T @ u)
        out.append(float(np.sum(w * e_size) / np.sum(w)))
    return tuple(out)  # type: ignore[return-value]


def _change_table(
    res: Any, keep: np.ndarray, change_labels: np.ndarray, xs_labels: np.ndarray, affine: np.ndarray
) -> pd.DataFrame:
    """One row per new or enlarging lesion (:data:`CHANGE_TABLE_COLUMNS`)."""

    rows = []
    if keep.size:
        ids = np.arange(1, keep.size + 1)
        com = ndi.center_of_mass(np.ones(change_labels.shape), change_labels, ids)
        for cid, (old, c) in enumerate(zip(keep, com, strict=True), start=1):
            xyz = np.asarray(affine, float) @ np.array([*c, 1.0])
            rows.append(
                {
                    "change_id": cid,
                    "status": res.status[old - 1],
                    "volume_mm3": round(float(res.volume_mm3[old - 1]), 3),
                    "previous_volume_mm3": round(float(res.previous_volume_mm3[old - 1]), 3),
                    "grown_volume_mm3": round(float(res.grown_volume_mm3[old - 1]), 3),
                    "evidence_mean": round(float(res.evidence_mean[old - 1]), 3),
                    "centroid_x_mm": round(float(xyz[0]), 2),
                    "centroid_y_mm": round(float(xyz[1]), 2),
                    "centroid_z_mm": round(float(xyz[2]), 2),
                    "lesion_ids": ",".join(
                        str(int(v)) for v in np.unique(xs_labels[change_labels == cid]) if v > 0
                    ),
                }
            )
    return pd.DataFrame(rows, columns=list(CHANGE_TABLE_COLUMNS))


def track_visits(
    labels: list[Volume],
    transforms: list[sitk.Transform | None],
    reference: Volume,
    *,
    n_threads: int = 1,
) -> list[dict[int, int]]:
    """Stable lesion ids across a subject's visits.

    Parameters
    ----------
    labels : list of Volume
        Each visit's cross-sectional lesion labels (``dseg``: value = ``lesion_id``),
        in time order.
    transforms : list of SimpleITK.Transform or None
        Reference -> visit transform of each visit (None for the reference itself).
    reference : Volume
        Any image on the reference grid (its shape and affine are used).

    Returns
    -------
    list of dict
        Per visit: ``lesion_id -> track_id``. Track ids start at 1 at the first
        visit; see :func:`lesionq.core.change.track_lesions` for merges and splits.
    """

    if len(labels) != len(transforms):
        raise ValueError("track_visits: one transform per visit is needed")
    maps = [
        resample_to(
            np.asarray(lab.array, dtype=np.float32),
            lab.affine,
            reference.shape,
            reference.affine,
            tx,
            interpolation="nearest",
            n_threads=n_threads,
        ).astype(np.int32)
        for lab, tx in zip(labels, transforms, strict=True)
    ]
    tracks = track_lesions(maps)
    out: list[dict[int, int]] = []
    for lab, per_visit in zip(labels, tracks, strict=True):
        ids = [int(v) for v in np.unique(np.asarray(lab.array)) if v > 0]
        d = {lid: per_visit[lid].track_id for lid in ids if lid in per_visit}
        out.append(d)
    # a lesion too small to survive resampling onto the reference grid gets its own track
    nxt = 1 + max([t for d in out for t in d.values()], default=0)
    for lab, d in zip(labels, out, strict=True):
        for lid in [int(v) for v in np.unique(np.asarray(lab.array)) if v > 0]:
            if lid not in d:
                d[lid] = nxt
                nxt += 1
    return [dict(sorted(d.items())) for d in out]


def atlas_wm_prior(
    flair: Volume,
    template_transform: sitk.Transform,
    *,
    atlas_dir: str | None = None,
    n_threads: int = 1,
) -> Volume:
    """The bundled atlas's white-matter prior on a visit's FLAIR grid.

    Parameters
    ----------
    flair : Volume
        Any image on the visit's FLAIR grid.
    template_transform : SimpleITK.Transform
        The visit's template transform (the published
        ``..._from-MNI152NLin2009aSym_to-FLAIR_mode-image_xfm.txt``: FLAIR points
        to template points).
    atlas_dir : str, optional
        Atlas folder (default: the bundled one).

    Returns
    -------
    Volume
        float32 in 0..1.
    """

    atlas = load_atlas(atlas_dir)
    arr = resample_to(
        atlas.probability("wm"),
        atlas.affine,
        flair.shape,
        flair.affine,
        template_transform,
        interpolation="linear",
        n_threads=n_threads,
    )
    return Volume(np.clip(arr, 0, 1).astype(np.float32), flair.affine, "wm")
