"""Longitudinal output names, atomic update of a published visit, and the new table columns."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from lesionq.config import load_protocol
from lesionq.errors import MissingInputError
from lesionq.io.derivatives import (
    LONGITUDINAL_OUTPUTS,
    OUTPUTS,
    output_path,
    provenance,
    publish_visit,
    publish_visit_update,
    sidecar_path,
    subject_output_path,
)
from lesionq.io.nifti import save_image
from lesionq.io.tables import (
    LONGITUDINAL_VISIT_COLUMNS,
    VISIT_COLUMNS,
    read_tsv,
    update_visits_table,
)


def test_longitudinal_names_follow_the_issue_contract(tmp_path):
    anat = tmp_path / "sub-lo01/ses-02/anat"
    assert (
        output_path(tmp_path, "lo01", "02", "newenlarging_mask")
        == anat / "sub-lo01_ses-02_label-T2lesion_desc-newenlarging_mask.nii.gz"
    )
    names = {
        key: output_path(tmp_path, "lo01", "02", key, reference="01").name
        for key in LONGITUDINAL_OUTPUTS
    }
    assert names == {
        "newenlarging_mask": "sub-lo01_ses-02_label-T2lesion_desc-newenlarging_mask.nii.gz",
        "newenlarging_labels": "sub-lo01_ses-02_label-T2lesion_desc-newenlarging_dseg.nii.gz",
        "newenlarging_table": "sub-lo01_ses-02_desc-newenlarging_lesions.tsv",
        "newenlarging_baseline_mask": (
            "sub-lo01_ses-02_label-T2lesion_desc-newenlargingbaseline_mask.nii.gz"
        ),
        "newenlarging_baseline_labels": (
            "sub-lo01_ses-02_label-T2lesion_desc-newenlargingbaseline_dseg.nii.gz"
        ),
        "newenlarging_baseline_table": "sub-lo01_ses-02_desc-newenlargingbaseline_lesions.tsv",
        "xfm_reference": "sub-lo01_ses-02_from-ses02_to-ses01_mode-image_xfm.txt",
        "flair_in_reference": "sub-lo01_ses-02_space-ses01_desc-preproc_FLAIR.nii.gz",
        "previous_flair": "sub-lo01_ses-02_desc-previous_FLAIR.nii.gz",
    }
    assert subject_output_path(tmp_path, "lo01", "tracks") == (
        tmp_path / "sub-lo01" / "sub-lo01_desc-tracks_lesions.tsv"
    )
    with pytest.raises(ValueError, match="reference"):
        output_path(tmp_path, "lo01", "02", "xfm_reference")
    with pytest.raises(ValueError, match="session"):
        OUTPUTS["xfm_reference"].filename("lo01", None, reference="01")


@pytest.fixture
def published(tmp_path):
    settings = load_protocol("mesems_testing")
    src = save_image(np.ones((4, 4, 4), np.uint8), np.eye(4), tmp_path / "in.nii.gz")
    tsv = tmp_path / "l.tsv"
    tsv.write_text("lesion_id\n1\n")
    prov = provenance(settings, {"FLAIR": src})
    out = tmp_path / "out"
    first = publish_visit(out, "a", "02", {"t2_mask": src, "lesions": tsv}, prov=prov)
    return out, first, prov, settings, tmp_path


def test_update_keeps_published_files_and_replaces_same_named(published):
    out, first, prov, settings, tmp = published
    mask_bytes = first["t2_mask"].read_bytes()
    mask_side = sidecar_path(first["t2_mask"]).read_text()
    new_tsv = tmp / "l2.tsv"
    new_tsv.write_text("lesion_id\ttrack_id\n1\t4\n")
    change = save_image(np.zeros((4, 4, 4), np.uint8), np.eye(4), tmp / "c.nii.gz")
    xfm = tmp / "x.txt"
    xfm.write_text("#Insight Transform File V1.0\n")
    done = publish_visit_update(
        out,
        "a",
        "02",
        {"lesions": new_tsv, "newenlarging_mask": change, "xfm_reference": xfm},
        prov=prov,
        extra={"newenlarging_mask": {"NewLesionCount": 0}},
        reference="01",
    )
    assert first["t2_mask"].read_bytes() == mask_bytes
    assert sidecar_path(first["t2_mask"]).read_text() == mask_side
    assert first["lesions"].read_text() == new_tsv.read_text()
    assert done["xfm_reference"].name == "sub-a_ses-02_from-ses02_to-ses01_mode-image_xfm.txt"
    side = json.loads(sidecar_path(done["newenlarging_mask"]).read_text())
    assert side["NewLesionCount"] == 0 and side["settings_sha256"] == settings.hash()
    assert not list(first["t2_mask"].parent.parent.glob(".anat.*"))


def test_update_drops_stale_longitudinal_outputs_of_any_reference(published):
    out, first, prov, _, tmp = published
    xfm = tmp / "x.txt"
    xfm.write_text("#Insight Transform File V1.0\n")
    change = save_image(np.zeros((4, 4, 4), np.uint8), np.eye(4), tmp / "c.nii.gz")
    old = publish_visit_update(
        out,
        "a",
        "02",
        {"xfm_reference": xfm, "newenlarging_mask": change},
        prov=prov,
        reference="01",
    )
    # a later run with another reference, and no change mask for this visit
    new = publish_visit_update(
        out, "a", "02", {"xfm_reference": xfm}, prov=prov, reference="00", drop=LONGITUDINAL_OUTPUTS
    )
    assert new["xfm_reference"].is_file()
    assert not old["xfm_reference"].exists()
    assert not sidecar_path(old["xfm_reference"]).exists()
    assert not old["newenlarging_mask"].exists()
    assert first["t2_mask"].is_file() and first["lesions"].is_file()


def test_update_failure_leaves_the_visit_untouched(published):
    out, first, prov, _, tmp = published
    before = sorted(p.name for p in first["t2_mask"].parent.iterdir())
    with pytest.raises(FileNotFoundError):
        publish_visit_update(
            out, "a", "02", {"lesions": tmp / "missing.tsv"}, prov=prov, drop=LONGITUDINAL_OUTPUTS
        )
    assert sorted(p.name for p in first["t2_mask"].parent.iterdir()) == before
    assert first["lesions"].read_text() == "lesion_id\n1\n"
    assert not list(first["t2_mask"].parent.parent.glob(".anat.*"))


def test_update_needs_a_published_visit(tmp_path):
    with pytest.raises(MissingInputError, match="publish_visit first"):
        publish_visit_update(tmp_path, "a", "09", {}, prov={})


def test_visits_table_longitudinal_columns_are_nullable(tmp_path):
    dest = tmp_path / "visits.tsv"
    base = {"participant_id": "sub-a", "status": "ok", "t2_count": 4}
    update_visits_table(
        dest,
        [
            {**base, "session_id": "ses-01", "longitudinal_status": "baseline"},
            {
                **base,
                "session_id": "ses-02",
                "new_t2_count": 2,
                "enlarging_t2_count": 0,
                "t2_volume_change_mm3": -12.5,
                "previous_session_id": "ses-01",
                "reference_session_id": "ses-01",
                "longitudinal_status": "ok",
            },
            {"participant_id": "sub-b", "session_id": "ses-01", "status": "failed"},
        ],
    )
    back = read_tsv(dest)
    assert list(back.columns) == list(VISIT_COLUMNS)
    assert set(LONGITUDINAL_VISIT_COLUMNS) <= set(VISIT_COLUMNS)
    text = dest.read_text().splitlines()
    header = text[0].split("\t")
    row2 = dict(zip(header, text[2].split("\t"), strict=True))
    assert row2["new_t2_count"] == "2"  # an integer, not "2.0"
    assert row2["t2_volume_change_mm3"] == "-12.5"
    row1 = dict(zip(header, text[1].split("\t"), strict=True))
    assert row1["new_t2_count"] == "n/a" and row1["longitudinal_status"] == "baseline"
    # merging again keeps the integer dtype
    df = update_visits_table(dest, [{**base, "session_id": "ses-03", "new_t2_count": 1}])
    assert str(df["new_t2_count"].dtype) == "Int64"
    assert pd.isna(df.loc[df["participant_id"] == "sub-b", "longitudinal_status"]).all()
    assert Path(dest).read_text().count("\n") == 5


def test_tables_read_and_written_back_keep_their_bytes(tmp_path):
    """The longitudinal step rewrites lesions.tsv: its original columns must not change."""
    from lesionq.io.tables import write_tsv

    rng = np.random.default_rng(0)
    df = pd.DataFrame(
        {
            "lesion_id": np.arange(1, 501),
            "volume_mm3": np.round(rng.uniform(0, 5000, 500), 3),
            "centroid_x_mm": np.round(rng.uniform(-90, 90, 500), 2),
            "probability_mean": np.round(rng.uniform(0, 1, 500), 4),
            "location": [None if i % 3 else "periventricular" for i in range(500)],
        }
    )
    first = write_tsv(df, tmp_path / "a.tsv")
    second = write_tsv(read_tsv(first), tmp_path / "b.tsv")
    assert first.read_bytes() == second.read_bytes()
