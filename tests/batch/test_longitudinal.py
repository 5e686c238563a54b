"""The longitudinal step inside ``run_dataset``: order, outputs, flags, isolation, reruns.

One dataset of seeded phantoms (FLAIR only) holds one subject per situation:

* ``sub-a``: 3 visits whose labels are not in time order (``sessions.tsv`` says
  ses-02, ses-03, ses-01), so the reference is ses-02;
* ``sub-b``: a single visit (baseline only);
* ``sub-c``: 3 visits whose middle one (ses-05) fails its registration;
* ``sub-d``: 2 visits whose comparison raises (the longitudinal step fails).

To keep the test fast and its inputs exact, the cross-sectional workflow is
replaced by one that publishes each phantom's raw FLAIR, truth brain mask and
truth lesion mask under the usual output names; the longitudinal step itself
(workflow, registration, comparison, tracking, publication) is the real one.
The full chain on the bundled sample data is the slow test at the end.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from lesionq.batch.runner import run_dataset
from lesionq.config import load_protocol
from lesionq.errors import RegistrationError
from lesionq.io.derivatives import LONGITUDINAL_OUTPUTS, output_path, subject_output_path
from lesionq.io.tables import (
    LESION_LONGITUDINAL_COLUMNS,
    LONGITUDINAL_VISIT_COLUMNS,
    TRACK_TABLE_COLUMNS,
    read_tsv,
)
from lesionq.steps import LESION_TABLE_COLUMNS
from lesionq.testing import make_subject, write_nifti

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "sample_data" / "bids"
TRUTH = SAMPLE / "derivatives" / "truth"

#: subject -> (seed, session labels of the phantom's visits in time order)
SUBJECTS = {
    "a": (101, ["02", "03", "01"]),
    "b": (102, ["01"]),
    "c": (103, ["01", "05", "09"]),
    "d": (104, ["01", "07"]),
}
FAIL_REGISTRATION = "05"  # sub-c
FAIL_COMPARISON = "07"  # sub-d


def _write_dataset(root: Path) -> dict[tuple[str, str], object]:
    root.mkdir(parents=True)
    (root / "dataset_description.json").write_text(
        json.dumps({"Name": "longitudinal", "BIDSVersion": "1.9.0"})
    )
    visits = {}
    for sub, (seed, labels) in SUBJECTS.items():
        subject = make_subject(seed, label=sub, n_visits=len(labels))
        rows = ["session_id\tacq_time"]
        for v, ses in zip(subject.visits, labels, strict=True):
            dest = root / f"sub-{sub}/ses-{ses}/anat/sub-{sub}_ses-{ses}_FLAIR.nii.gz"
            write_nifti(v.images["FLAIR"], v.affine, dest, np.int16)
            rows.append(f"ses-{ses}\t{v.acq_time}")
            visits[(sub, ses)] = v
        (root / f"sub-{sub}" / f"sub-{sub}_sessions.tsv").write_text("\n".join(rows) + "\n")
    return visits


def _fake_visit_workflow(truth, published):
    """Publish a phantom visit's raw FLAIR and truth masks as its cross-sectional outputs."""
    from lesionq.io.derivatives import provenance, publish_visit
    from lesionq.io.nifti import save_image
    from lesionq.io.tables import write_tsv
    from lesionq.steps import tabulate_lesions
    from lesionq.types import Volume

    def run(visit, out_dir, *, settings, n_procs, work_dir):
        v = truth[(visit.subject, visit.session)]
        stage = Path(work_dir) / f"fake_{visit.subject}_{visit.session}"
        stage.mkdir(parents=True, exist_ok=True)
        flair = Volume(v.images["FLAIR"].astype(np.float32), v.affine, "FLAIR")
        brain = Volume(v.brain_mask.astype(np.uint8), v.affine, "mask")
        mask = Volume(v.lesion_mask.astype(np.uint8), v.affine, "mask")
        tab = tabulate_lesions(
            mask, flair=flair, brain_mask=brain, lesions=settings.section("lesions")
        )
        files = {
            "flair_preproc": save_image(
                flair.array, v.affine, stage / "f.nii.gz", dtype=np.float32
            ),
            "brain_mask": save_image(brain.array, v.affine, stage / "b.nii.gz", dtype=np.uint8),
            "t2_mask": save_image(mask.array, v.affine, stage / "m.nii.gz", dtype=np.uint8),
            "t2_probseg": save_image(mask.array, v.affine, stage / "p.nii.gz", dtype=np.float32),
            "t2_labels": save_image(tab.labels.array, v.affine, stage / "l.nii.gz", dtype=np.int32),
            "lesions": write_tsv(tab.table, stage / "lesions.tsv"),
        }
        paths = publish_visit(
            out_dir,
            visit.subject,
            visit.session,
            files,
            prov=provenance(settings, {"FLAIR": visit.flair}),
        )
        for path in paths.values():
            published[path] = hashlib.sha256(path.read_bytes()).hexdigest()
        return {
            "t2_count": tab.count,
            "t2_volume_mm3": round(tab.volume_mm3, 3),
            "brain_volume_mm3": round(tab.brain_volume_mm3, 1),
            "contrasts_used": "FLAIR",
            "skull_stripped_input": False,
        }

    return run


def _run(root, out, truth, published, participant_labels=None):
    import lesionq.batch.visit as batch_visit
    import lesionq.steps.longitudinal as sl

    real_register, real_compare = sl.register_visit, sl.compare_visits

    def register(visit, reference, **kw):
        if visit.session == FAIL_REGISTRATION:
            raise RegistrationError("rigid registration: final metric -0.01 above -0.05 (forced)")
        return real_register(visit, reference, **kw)

    def compare(earlier, later, tx, **kw):
        if later.session == FAIL_COMPARISON:
            raise RuntimeError("comparison exploded (forced)")
        return real_compare(earlier, later, tx, **kw)

    settings = load_protocol("mesems_testing")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(batch_visit, "run_visit_workflow", _fake_visit_workflow(truth, published))
        mp.setattr(sl, "register_visit", register)
        mp.setattr(sl, "compare_visits", compare)
        return run_dataset(
            root, out, settings=settings, n_procs=1, participant_labels=participant_labels
        )


@pytest.fixture(scope="module")
def batch(tmp_path_factory):
    base = tmp_path_factory.mktemp("longitudinal")
    root = base / "bids"
    truth = _write_dataset(root)
    published: dict[Path, str] = {}
    summary = _run(root, base / "out", truth, published)
    return root, base / "out", truth, summary, published


def _rows(out, sub):
    df = read_tsv(out / "visits.tsv")
    return df[df["participant_id"] == f"sub-{sub}"].set_index("session_id")


def _img(path):
    img = nib.load(str(path))
    return np.asarray(img.dataobj), img.affine


def test_cross_sectional_rows_all_ok_and_longitudinal_columns_present(batch):
    _, out, _, summary, _ = batch
    df = read_tsv(out / "visits.tsv")
    assert len(df) == 9 and (df["status"] == "ok").all()
    assert set(LONGITUDINAL_VISIT_COLUMNS) <= set(df.columns)
    # flagged / failed longitudinal results make the run not all-ok
    assert summary.n_failed == 0
    assert summary.n_longitudinal_failed == 3
    assert not summary.all_ok
    assert "LONGITUDINAL sub-c ses-05: registration_failed" in summary.describe()


def test_visits_are_ordered_by_acq_time_not_label(batch):
    _, out, _, _, _ = batch
    rows = _rows(out, "a")
    assert set(rows["reference_session_id"]) == {"ses-02"}
    assert rows.loc["ses-02", "longitudinal_status"] == "baseline"
    assert pd.isna(rows.loc["ses-02", "previous_session_id"])
    assert rows.loc["ses-03", "previous_session_id"] == "ses-02"
    assert rows.loc["ses-01", "previous_session_id"] == "ses-03"
    assert (rows.loc[["ses-03", "ses-01"], "longitudinal_status"] == "ok").all()
    # the transform of the last visit is named against the reference
    xfm = output_path(out, "a", "01", "xfm_reference", reference="02")
    assert xfm.name == "sub-a_ses-01_from-ses01_to-ses02_mode-image_xfm.txt"
    assert xfm.is_file() and xfm.with_suffix(".json").is_file()
    assert not output_path(out, "a", "02", "xfm_reference", reference="02").exists()


def test_baseline_counts_are_na_and_follow_up_counts_integers(batch):
    _, out, _, _, _ = batch
    rows = _rows(out, "a")
    for col in ("new_t2_count", "enlarging_t2_count", "t2_volume_change_mm3"):
        assert pd.isna(rows.loc["ses-02", col])
    for ses in ("ses-03", "ses-01"):
        assert rows.loc[ses, "new_t2_count"] >= 0
        assert rows.loc[ses, "enlarging_t2_count_vs_baseline"] >= 0
    # vs previous and vs baseline are the same comparison at the first follow-up
    first = rows.loc["ses-03"]
    assert first["new_t2_count"] == first["new_t2_count_vs_baseline"]
    assert first["t2_volume_change_mm3"] == first["t2_volume_change_vs_baseline_mm3"]
    # volume change = this visit's T2 volume minus the previous visit's
    assert first["t2_volume_change_mm3"] == pytest.approx(
        rows.loc["ses-03", "t2_volume_mm3"] - rows.loc["ses-02", "t2_volume_mm3"], abs=1e-3
    )


@pytest.mark.parametrize("ses", ["02", "03", "01"])
def test_change_outputs_on_the_visit_grid(batch, ses):
    root, out, _, _, _ = batch
    _, flair_aff = _img(root / f"sub-a/ses-{ses}/anat/sub-a_ses-{ses}_FLAIR.nii.gz")
    flair_shape = nib.load(str(root / f"sub-a/ses-{ses}/anat/sub-a_ses-{ses}_FLAIR.nii.gz")).shape
    mask, aff = _img(output_path(out, "a", ses, "newenlarging_mask"))
    labels, _ = _img(output_path(out, "a", ses, "newenlarging_labels"))
    assert mask.shape == flair_shape and mask.dtype == np.uint8
    np.testing.assert_allclose(aff, flair_aff, atol=1e-4)
    np.testing.assert_array_equal(mask > 0, labels > 0)
    table = read_tsv(output_path(out, "a", ses, "newenlarging_table"))
    assert sorted(np.unique(labels[labels > 0]).tolist()) == table["change_id"].tolist()
    row = _rows(out, "a").loc[f"ses-{ses}"]
    if ses == "02":  # the reference: empty masks and tables
        assert not mask.any() and table.empty
        assert not _img(output_path(out, "a", ses, "newenlarging_baseline_mask"))[0].any()
        assert not output_path(out, "a", ses, "previous_flair").exists()
    else:
        n = int(row["new_t2_count"]) + int(row["enlarging_t2_count"])
        assert len(table) == n
        assert set(table["status"]) <= {"new", "enlarging"}
        prev, prev_aff = _img(output_path(out, "a", ses, "previous_flair"))
        assert prev.shape == flair_shape
        np.testing.assert_allclose(prev_aff, flair_aff, atol=1e-4)
        base_table = read_tsv(output_path(out, "a", ses, "newenlarging_baseline_table"))
        assert len(base_table) == int(row["new_t2_count_vs_baseline"]) + int(
            row["enlarging_t2_count_vs_baseline"]
        )
        # the registered FLAIR lies on the reference grid
        reg = output_path(out, "a", ses, "flair_in_reference", reference="02")
        assert reg.name == f"sub-a_ses-{ses}_space-ses02_desc-preproc_FLAIR.nii.gz"
        ref_img = nib.load(str(root / "sub-a/ses-02/anat/sub-a_ses-02_FLAIR.nii.gz"))
        arr, reg_aff = _img(reg)
        assert arr.shape == ref_img.shape
        np.testing.assert_allclose(reg_aff, ref_img.affine, atol=1e-4)
    side = json.loads(
        output_path(out, "a", ses, "newenlarging_mask")
        .with_suffix("")
        .with_suffix(".json")
        .read_text()
    )
    assert side["ReferenceSession"] == "ses-02"
    assert side["settings_sha256"] == row["settings_sha256"]


def test_new_lesions_found_where_the_truth_has_them(batch):
    """With exact cross-sectional masks, every planted new lesion is in the change mask."""
    _, out, truth, _, _ = batch
    ses = "03"  # first follow-up of sub-a (visit index 1)
    v = truth[("a", ses)]
    mask, _ = _img(output_path(out, "a", ses, "newenlarging_mask"))
    new_ids = [int(i) for i in np.unique(v.lesion_ids[v.lesion_ids > 0])]
    subject = make_subject(SUBJECTS["a"][0], label="a", n_visits=3)
    planted = [les.lesion_id for les in subject.lesions if les.status[1] == "new"]
    assert planted, "the phantom plants new lesions at its first follow-up"
    for lid in planted:
        assert lid in new_ids
        assert (mask[v.lesion_ids == lid] > 0).any(), f"new lesion {lid} missed"


def test_lesion_tables_gain_tracks_and_statuses(batch):
    _, out, _, _, _ = batch
    for ses, expected in (("02", {"baseline"}), ("03", None), ("01", None)):
        df = read_tsv(output_path(out, "a", ses, "lesions"))
        assert list(df.columns) == [*LESION_TABLE_COLUMNS, *LESION_LONGITUDINAL_COLUMNS]
        assert df["track_id"].notna().all()
        assert df["track_id"].is_unique
        statuses = set(df["status"])
        if expected:
            assert statuses == expected and set(df["status_vs_baseline"]) == expected
        else:
            assert statuses <= {"new", "enlarging", "stable", "shrinking"}
    tracks = read_tsv(subject_output_path(out, "a", "tracks"))
    assert list(tracks.columns) == list(TRACK_TABLE_COLUMNS)
    assert not tracks.duplicated(["track_id", "session_id"]).any()
    base = tracks[tracks["session_id"] == "ses-02"]
    assert (base["status"] == "baseline").all() and (base["visit_index"] == 0).all()
    # every lesion of every visit is in the tracks table under its track id
    for ses in ("02", "03", "01"):
        df = read_tsv(output_path(out, "a", ses, "lesions"))
        rows = tracks[(tracks["session_id"] == f"ses-{ses}") & (tracks["n_lesions"] > 0)]
        assert sorted(rows["track_id"]) == sorted(df["track_id"])
    # a track, once seen, has a row at every later visit (resolved when absent)
    per_track = tracks.groupby("track_id")["visit_index"].apply(list)
    for visits in per_track:
        assert visits == list(range(visits[0], 3))
    resolved = tracks[tracks["status"] == "resolved"]
    assert (resolved["n_lesions"] == 0).all() and (resolved["volume_mm3"] == 0).all()


def test_single_visit_subject_is_baseline_only(batch):
    _, out, _, _, _ = batch
    row = _rows(out, "b").loc["ses-01"]
    assert row["longitudinal_status"] == "baseline"
    assert row["reference_session_id"] == "ses-01"
    assert pd.isna(row["new_t2_count"])
    mask, _ = _img(output_path(out, "b", "01", "newenlarging_mask"))
    assert not mask.any()
    df = read_tsv(output_path(out, "b", "01", "lesions"))
    assert (df["status"] == "baseline").all()
    assert sorted(df["track_id"]) == list(range(1, len(df) + 1))
    assert subject_output_path(out, "b", "tracks").is_file()


def test_failed_registration_is_flagged_and_skipped_as_previous(batch):
    _, out, _, _, _ = batch
    rows = _rows(out, "c")
    bad = rows.loc["ses-05"]
    assert bad["status"] == "ok"  # the cross-sectional result stands
    assert bad["longitudinal_status"].startswith("registration_failed: ")
    assert "forced" in bad["longitudinal_status"]
    assert pd.isna(bad["new_t2_count"]) and pd.isna(bad["previous_session_id"])
    for key in LONGITUDINAL_OUTPUTS:
        assert not output_path(out, "c", "05", key, reference="01").exists(), key
    df = read_tsv(output_path(out, "c", "05", "lesions"))
    assert df["track_id"].isna().all() and df["status"].isna().all()
    # the next visit compares with the last well-registered one
    nxt = rows.loc["ses-09"]
    assert nxt["longitudinal_status"] == "ok"
    assert nxt["previous_session_id"] == "ses-01"
    assert nxt["new_t2_count"] == nxt["new_t2_count_vs_baseline"]
    assert output_path(out, "c", "09", "newenlarging_mask").is_file()
    tracks = read_tsv(subject_output_path(out, "c", "tracks"))
    assert "ses-05" not in set(tracks["session_id"])


def test_failed_longitudinal_step_keeps_cross_sectional_outputs(batch):
    _, out, _, _, published = batch
    rows = _rows(out, "d")
    assert (rows["status"] == "ok").all()
    assert all(s.startswith("failed: ") for s in rows["longitudinal_status"])
    assert "forced" in rows.loc["ses-07", "longitudinal_status"]
    assert rows["t2_count"].notna().all()
    for ses in ("01", "07"):
        anat = output_path(out, "d", ses, "t2_mask").parent
        mine = {p: h for p, h in published.items() if p.parent == anat}
        assert mine, "the fake published this visit"
        for path, digest in mine.items():
            assert hashlib.sha256(path.read_bytes()).hexdigest() == digest, path.name
        assert not output_path(out, "d", ses, "newenlarging_mask").exists()
    assert not subject_output_path(out, "d", "tracks").exists()
    assert not list(out.rglob(".anat.*"))
    # the run ledger records the subject's failed step with the original error class
    from lesionq.store import ResultsDB

    with ResultsDB.open(None, out_dir=out) as db:
        ledger = db.ledger()
    step = ledger[(ledger["step"] == "longitudinal") & (ledger["participant_id"] == "sub-d")]
    assert list(step["outcome"]) == ["failed"]
    assert list(step["error_class"]) == ["RuntimeError"]
    assert "forced" in step["message"].iloc[0]
    ok = ledger[(ledger["step"] == "longitudinal") & (ledger["participant_id"] == "sub-a")]
    assert list(ok["outcome"]) == ["ok"] and ok["error_class"].isna().all()


def test_rerun_gives_identical_outputs(batch, tmp_path):
    root, out, truth, _, _ = batch
    out2 = tmp_path / "out2"
    _run(root, out2, truth, {}, participant_labels=["a"])
    first = sorted(p.relative_to(out) for p in (out / "sub-a").rglob("*") if p.is_file())
    second = sorted(p.relative_to(out2) for p in (out2 / "sub-a").rglob("*") if p.is_file())
    assert first == second
    for rel in first:
        a, b = out / rel, out2 / rel
        if rel.name.endswith(".nii.gz"):
            x, y = nib.load(str(a)), nib.load(str(b))
            np.testing.assert_array_equal(np.asarray(x.dataobj), np.asarray(y.dataobj))
            np.testing.assert_array_equal(x.affine, y.affine)
        elif rel.suffix in (".tsv", ".txt"):
            assert a.read_bytes() == b.read_bytes(), rel
    cols = [c for c in LONGITUDINAL_VISIT_COLUMNS]
    pd.testing.assert_frame_equal(_rows(out, "a")[cols], _rows(out2, "a")[cols], check_dtype=True)


# ------------------------------------------------------------------ bundled sample data


def _planted(truth_sub: Path, sub: str, ses: str, min_volume_mm3: float):
    """Truth new / enlarging lesions of a follow-up whose changed part is >= the minimum."""
    lesions = pd.read_csv(truth_sub / f"{sub}_lesions.tsv", sep="\t")
    rows = lesions[(lesions["session_id"] == f"ses-{ses}")]
    anat = truth_sub / f"ses-{ses}" / "anat"
    ids = np.asarray(nib.load(str(anat / f"{sub}_ses-{ses}_desc-lesionid_dseg.nii.gz")).dataobj)
    img = nib.load(str(anat / f"{sub}_ses-{ses}_label-lesionchange_desc-newenlarging_mask.nii.gz"))
    changed = np.asarray(img.dataobj) > 0
    voxel_mm3 = float(np.prod(img.header.get_zooms()[:3]))
    planted = []
    for _, r in rows[rows["status"].isin(["new", "enlarging"])].iterrows():
        lid = int(r["lesion_id"])
        if np.count_nonzero(changed & (ids == lid)) * voxel_mm3 >= min_volume_mm3:
            planted.append(lid)
    active = np.isin(ids, rows[rows["status"].isin(["new", "enlarging"])]["lesion_id"])
    return planted, ids, active


def _evaluate_sample(out: Path, min_volume_mm3: float) -> list[dict]:
    """Per follow-up of the sample data: registration error and lesion-wise change result."""
    from lesionq.io.sitk_bridge import read_transform, transform_to_ras_matrix

    results = []
    for sub in ("phantom01", "phantom02"):
        truth_sub = TRUTH / f"sub-{sub}"
        ref_brain = nib.load(
            str(truth_sub / f"ses-01/anat/sub-{sub}_ses-01_label-brain_mask.nii.gz")
        )
        ijk = np.argwhere(np.asarray(ref_brain.dataobj) > 0)
        pts = ref_brain.affine @ np.c_[ijk, np.ones(len(ijk))].T  # reference world RAS
        for ses in ("02", "03"):
            # registration: our reference -> visit map against the phantom's motion
            ours = transform_to_ras_matrix(
                read_transform(output_path(out, sub, ses, "xfm_reference", reference="01"))
            )
            xfm = (
                truth_sub
                / f"ses-{ses}/xfm/sub-{sub}_ses-{ses}_from-FLAIR_to-common_mode-image_xfm.txt"
            )
            err = np.linalg.norm(
                ((ours - transform_to_ras_matrix(read_transform(xfm))) @ pts)[:3], axis=0
            )
            # change detection, lesion-wise
            planted, ids, active = _planted(truth_sub, f"sub-{sub}", ses, min_volume_mm3)
            labels = np.asarray(
                nib.load(str(output_path(out, sub, ses, "newenlarging_labels"))).dataobj
            )
            segmented = np.asarray(nib.load(str(output_path(out, sub, ses, "t2_mask"))).dataobj) > 0
            results.append(
                {
                    "visit": f"sub-{sub} ses-{ses}",
                    "error_mean_mm": float(err.mean()),
                    "error_max_mm": float(err.max()),
                    "planted": planted,
                    "missed": [lid for lid in planted if not (labels[ids == lid] > 0).any()],
                    # planted changes the visit's own (cross-sectional) segmentation never
                    # saw: with the protocol's candidate_scope = "adjacent" the change step
                    # only confirms, extends and classifies segmented lesions
                    "unsegmented": [lid for lid in planted if not (segmented[ids == lid]).any()],
                    "invented": [
                        int(c)
                        for c in np.unique(labels[labels > 0])
                        if not active[labels == c].any()
                    ],
                }
            )
    return results


@pytest.mark.slow
def test_sample_data_change_and_registration_against_truth(tmp_path):
    """Bundled phantoms, real pipeline: planted new/enlarging lesions found, none invented,
    registration within 0.5 mm of the known head motion.

    A planted change missed by the visit's cross-sectional segmentation cannot be
    reported with ``candidate_scope = "adjacent"``; such misses are allowed here only at
    the FLAIR-only visit phantom02 ses-03 (where the atlas does not fit the synthetic
    anatomy and the white-matter-shell rule rejects lesions), at most its two planted
    changes, and reported in benchmarks/results/longitudinal.md. Measured: one missed
    on 2026-11-25, both since the no-T1 tissue-model refit of 2026-11-26, which lifted
    real FLAIR-only segmentation (sub-cs07 without T1: F1 0.33 -> 0.54); a trade-off
    taken knowingly. Every planted change that the segmentation did see must be reported.
    """
    settings = load_protocol("mesems_testing")
    out = tmp_path / "out"
    summary = run_dataset(SAMPLE, out, settings=settings, n_procs=2)
    assert summary.all_ok, summary.describe()
    results = _evaluate_sample(out, float(settings.section("lesions")["min_volume_mm3"]))
    report = "\n".join(str(r) for r in results)
    print(report)
    bad = [
        r
        for r in results
        if r["error_max_mm"] >= 0.5 or r["invented"] or set(r["missed"]) - set(r["unsegmented"])
    ]
    assert not bad, report
    n_planted = sum(len(r["planted"]) for r in results)
    assert n_planted >= 10, report
    missed_at = {r["visit"] for r in results if r["missed"]}
    assert missed_at <= {"sub-phantom02 ses-03"}, report
    assert sum(len(r["missed"]) for r in results) <= 2, report
    # T1 black holes: within 20 % of the planted black-hole volume wherever a T1w exists
    visits = pd.read_csv(out / "visits.tsv", sep="\t", na_values=["n/a"])
    for sub in ("phantom01", "phantom02"):
        truth = pd.read_csv(TRUTH / f"sub-{sub}" / f"sub-{sub}_visits.tsv", sep="\t")
        for t in truth.itertuples():
            row = visits[(visits["participant_id"] == f"sub-{sub}")].set_index("session_id")
            got = row.loc[t.session_id, "bh_volume_mm3"]
            if "T1w" in str(row.loc[t.session_id, "contrasts_used"]).split("+"):
                assert abs(got - t.bh_volume_mm3) <= 0.2 * t.bh_volume_mm3, (sub, t, got)
            else:
                assert pd.isna(got), (sub, t.session_id)
