"""Serial consistency of the longitudinal step on sub-P14 (MSLesSeg, 3 visits, expert masks).

The experts drew one lesion mask per visit, not the change between visits, so the
new/enlarging comparison here is a *weak reference*: the components of visit k's
expert mask that overlap no voxel of visit k-1's expert mask (both brought onto
visit k's grid with lesionq's own visit-to-visit registration). Used by
``bench_longitudinal.py``; reads ``../shared/data/mslesseg`` and a ``lesionq run``
output folder.

Citation: Guarnera F, Rondinella A, et al. MSLesSeg: baseline and benchmarking of a
new Multiple Sclerosis Lesion Segmentation dataset. Scientific Data 2025.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

SUBJECT = "P14"


def _truth(data: Path, ses: str) -> tuple[np.ndarray, np.ndarray]:
    import nibabel as nib

    p = (
        data / "derivatives" / "truth" / f"sub-{SUBJECT}" / f"ses-{ses}" / "anat"
        / f"sub-{SUBJECT}_ses-{ses}_label-lesion_desc-expert_mask.nii.gz"
    )  # fmt: skip
    img = nib.load(str(p))
    return np.asarray(img.dataobj) > 0, img.affine


def _onto(mask, affine, ref_shape, ref_affine, transform) -> np.ndarray:
    from lesionq.registration.rigid import resample_to

    return (
        resample_to(
            mask.astype(np.uint8), affine, ref_shape, ref_affine, transform, interpolation="nearest"
        )  # fmt: skip
        > 0
    )


def serial(out: Path, data: Path) -> dict:
    """Per-visit volumes, new/enlarging counts vs the weak reference, and track continuity.

    Parameters
    ----------
    out : Path
        Output folder of ``lesionq run`` over ``data`` with sub-P14 processed.
    data : Path
        The MSLesSeg BIDS root (``../shared/data/mslesseg``).

    Returns
    -------
    dict
        ``rows`` (one per visit: ours and the experts' T2 volume in mL, the change
        from the previous visit, our new + enlarging count and the weak
        reference's count) and ``tracks`` (expert lesions present at all three
        visits, how many of them lesionq follows under one track id, and how many
        it splits over several ids or misses at a visit).
    """
    import nibabel as nib
    import scipy.ndimage as ndi

    from lesionq.io.derivatives import output_path, subject_output_path
    from lesionq.registration.rigid import load_transform
    from lesionq.steps.longitudinal import transform_between

    sessions = ["01", "02", "03"]
    visits = pd.read_csv(out / "visits.tsv", sep="\t", dtype={"session_id": str})
    visits = visits[visits.participant_id == f"sub-{SUBJECT}"].set_index("session_id")
    full = np.ones((3, 3, 3), bool)
    grids, truth, ours_lab, to_ref = {}, {}, {}, {}
    for ses in sessions:
        lab_img = nib.load(str(output_path(out, SUBJECT, ses, "t2_labels")))
        grids[ses] = (lab_img.shape, lab_img.affine)
        ours_lab[ses] = np.asarray(lab_img.dataobj).astype(np.int32)
        truth[ses] = _truth(data, ses)
        if ses != sessions[0]:
            to_ref[ses] = load_transform(
                str(output_path(out, SUBJECT, ses, "xfm_reference", reference=sessions[0]))
            )
    rows = []
    for k, ses in enumerate(sessions):
        shape, aff = grids[ses]
        t_mask, t_aff = truth[ses]
        t_here = _onto(t_mask, t_aff, shape, aff, None)
        vox_ml = float(abs(np.linalg.det(aff[:3, :3]))) / 1000.0
        row = {
            "session": f"ses-{ses}",
            "expert_ml": float(t_here.sum() * vox_ml),
            "ours_ml": float(visits.loc[f"ses-{ses}", "t2_volume_mm3"]) / 1000.0,
        }
        if k:
            prev = sessions[k - 1]
            tx = transform_between(to_ref[ses], to_ref.get(prev))  # visit k points -> k-1 points
            p_mask, p_aff = truth[prev]
            p_here = _onto(p_mask, p_aff, shape, aff, tx)
            lab, n = ndi.label(t_here, full)
            hit = np.unique(lab[p_here & (lab > 0)])
            v = visits.loc[f"ses-{ses}"]
            row.update(
                weak_new_count=int(n - hit.size),
                ours_new=int(v["new_t2_count"]),
                ours_enlarging=int(v["enlarging_t2_count"]),
            )
        rows.append(row)
    for k in range(1, len(rows)):
        rows[k]["expert_change_ml"] = rows[k]["expert_ml"] - rows[k - 1]["expert_ml"]
        rows[k]["ours_change_ml"] = rows[k]["ours_ml"] - rows[k - 1]["ours_ml"]
    # track continuity: expert lesions of the baseline seen at every visit (on the
    # baseline grid through lesionq's registration), and the track ids of our lesions there
    tracks = pd.read_csv(subject_output_path(out, SUBJECT, "tracks"), sep="\t", dtype=str)
    track_of = {}
    for _, r in tracks.iterrows():
        for lid in str(r["lesion_ids"]).split(","):
            if lid.strip().isdigit():
                track_of[(r["session_id"], int(lid))] = int(r["track_id"])
    shape0, aff0 = grids[sessions[0]]
    t0 = _onto(*truth[sessions[0]], shape0, aff0, None)
    lab0, n0 = ndi.label(t0, full)
    on_ref = {sessions[0]: (t0, ours_lab[sessions[0]])}
    for ses in sessions[1:]:
        inv = to_ref[
            ses
        ]  # reference points -> visit points: resample visit images onto the reference
        on_ref[ses] = (
            _onto(*truth[ses], shape0, aff0, inv),
            _onto_labels(ours_lab[ses], grids[ses][1], shape0, aff0, inv),
        )
    persistent = one_id = split = missed = 0
    for i, sl in enumerate(ndi.find_objects(lab0), start=1):
        m = lab0[sl] == i
        if not all(on_ref[s][0][sl][m].any() for s in sessions):
            continue
        persistent += 1
        ids = []
        for s in sessions:
            ls = on_ref[s][1][sl][m]
            ids.append({track_of.get((f"ses-{s}", int(x))) for x in np.unique(ls[ls > 0])})
        if any(not x for x in ids):
            missed += 1
        elif set.intersection(*ids):
            one_id += 1
        else:
            split += 1
    return {
        "rows": rows,
        "tracks": {
            "persistent_expert": persistent,
            "one_track": one_id,
            "changed_id": split,
            "missed_at_a_visit": missed,
        },  # fmt: skip
    }


def _onto_labels(labels, affine, ref_shape, ref_affine, transform) -> np.ndarray:
    from lesionq.registration.rigid import resample_to

    return np.asarray(
        resample_to(
            labels.astype(np.float32),
            affine,
            ref_shape,
            ref_affine,
            transform,
            interpolation="nearest",
        ),  # fmt: skip
    ).astype(np.int32)
