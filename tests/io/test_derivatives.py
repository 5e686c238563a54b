"""Output naming, sidecars, atomic publication of a visit, and visits.tsv merging."""

from __future__ import annotations

import json
import os
import stat

import numpy as np
import pytest

from lesionq.config import load_protocol
from lesionq.errors import OutputError
from lesionq.io.derivatives import (
    OUTPUTS,
    ensure_writable_dir,
    output_path,
    provenance,
    publish_visit,
    publish_visit_update,
    sidecar_path,
    write_dataset_description,
)
from lesionq.io.nifti import atomic_path, load_array, save_image, sha256_file
from lesionq.io.tables import read_tsv, update_visits_table


def test_names_follow_the_issue_contract(tmp_path):
    p = output_path(tmp_path, "cs07", "01", "t2_mask")
    assert p == tmp_path / "sub-cs07/ses-01/anat/sub-cs07_ses-01_label-T2lesion_mask.nii.gz"
    assert output_path(tmp_path, "cs07", "01", "lesions").name == "sub-cs07_ses-01_lesions.tsv"
    assert output_path(tmp_path, "cs07", "01", "brain_mask").name.endswith(
        "_desc-brain_mask.nii.gz"
    )
    assert (
        output_path(tmp_path, "x", None, "t2_probseg").name == "sub-x_label-T2lesion_probseg.nii.gz"
    )
    assert sidecar_path(p).name == "sub-cs07_ses-01_label-T2lesion_mask.json"


def test_publish_writes_all_files_with_sidecars_and_replaces_old(tmp_path):
    settings = load_protocol("mesems_testing")
    src = tmp_path / "in.nii.gz"
    save_image(np.ones((4, 4, 4), np.uint8), np.eye(4), src)
    tsv = tmp_path / "l.tsv"
    tsv.write_text("lesion_id\n")
    prov = provenance(settings, {"FLAIR": src})
    out = tmp_path / "out"
    published = publish_visit(out, "a", "01", {"t2_mask": src, "lesions": tsv}, prov=prov)
    for path in published.values():
        assert path.is_file()
        side = json.loads(sidecar_path(path).read_text())
        assert side["settings_sha256"] == settings.hash()
        # the atlas the visit ran with (its manifest's sha256 is in the settings hash)
        assert side["atlas"]["manifest_sha256"] == settings.atlas_sha256
        assert side["atlas"]["manifest_sha256"] == sha256_file(side["atlas"]["manifest"])
        assert side["inputs"]["FLAIR"]["sha256"] == sha256_file(src)
        assert side["lesionq_version"]
    # a second publication replaces the whole set (stale outputs disappear)
    published2 = publish_visit(out, "a", "01", {"t2_mask": src}, prov=prov)
    assert published2["t2_mask"].is_file()
    assert not published["lesions"].exists()
    assert not list(published2["t2_mask"].parent.parent.glob(".anat.*"))


def test_publish_failure_leaves_previous_results(tmp_path):
    settings = load_protocol("mesems_testing")
    src = tmp_path / "in.nii.gz"
    save_image(np.ones((4, 4, 4), np.uint8), np.eye(4), src)
    prov = provenance(settings, {"FLAIR": src})
    out = tmp_path / "out"
    first = publish_visit(out, "a", "01", {"t2_mask": src}, prov=prov)
    before = first["t2_mask"].read_bytes()
    with pytest.raises(FileNotFoundError):
        publish_visit(
            out, "a", "01", {"t2_mask": src, "lesions": tmp_path / "missing.tsv"}, prov=prov
        )
    assert first["t2_mask"].read_bytes() == before
    assert not list(first["t2_mask"].parent.parent.glob(".anat.*"))


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o755), (0o027, 0o750)])
def test_published_folders_follow_the_umask(tmp_path, umask, mode):
    settings = load_protocol("mesems_testing")
    src = tmp_path / "in.nii.gz"
    save_image(np.ones((4, 4, 4), np.uint8), np.eye(4), src)
    prov = provenance(settings, {"FLAIR": src})
    out = tmp_path / "out"
    previous = os.umask(umask)
    try:
        first = publish_visit(out, "a", "01", {"t2_mask": src}, prov=prov)["t2_mask"]
        anat = first.parent
        assert stat.S_IMODE(anat.stat().st_mode) == mode
        assert stat.S_IMODE(anat.parent.stat().st_mode) == mode  # ses-01, made by mkdir
        assert stat.S_IMODE(first.stat().st_mode) == 0o666 & ~umask
        publish_visit_update(out, "a", "01", {"brain_mask": src}, prov=prov)
        assert stat.S_IMODE(anat.stat().st_mode) == mode
    finally:
        os.umask(previous)


def test_an_output_folder_under_a_file_cannot_be_written(tmp_path):
    blocker = tmp_path / "results"
    blocker.write_text("a file where the output folder's parent should be\n")
    for out in (blocker / "out", blocker):
        with pytest.raises(OutputError) as info:
            ensure_writable_dir(out, what="output folder")
        text = str(info.value)
        assert text.startswith(f"{out}: the output folder cannot be written")
        assert f"{blocker} is a file, not a folder" in text and "(fix: " in text
    assert ensure_writable_dir(tmp_path / "new" / "out") == tmp_path / "new" / "out"
    assert list((tmp_path / "new" / "out").iterdir()) == []  # the probe is gone


def test_a_folder_without_write_access_fails_the_write_probe(tmp_path, no_access):
    out = tmp_path / "out"
    out.mkdir()
    with no_access(out), pytest.raises(OutputError) as info:
        ensure_writable_dir(out)
    text = str(info.value)
    assert text.startswith(f"{out}: the output folder cannot be written")
    assert "Permission denied" in text and "(fix: " in text


def test_atomic_path_removes_temp_on_error(tmp_path):
    dest = tmp_path / "x.nii.gz"
    with pytest.raises(RuntimeError), atomic_path(dest) as tmp:
        tmp.write_bytes(b"partial")
        raise RuntimeError("killed")
    assert not dest.exists()
    assert list(tmp_path.iterdir()) == []


def test_save_image_roundtrip_sets_geometry(tmp_path):
    aff = np.array([[-0.7, 0, 0, 90], [0, 0.7, 0, -100], [0, 0, 4, -50], [0, 0, 0, 1.0]])
    arr = np.arange(60, dtype=np.float32).reshape(3, 4, 5)
    p = save_image(arr, aff, tmp_path / "a.nii.gz")
    back, aff2 = load_array(p)
    np.testing.assert_array_equal(back, arr)
    np.testing.assert_allclose(aff2, aff, atol=1e-5)


def test_dataset_description(tmp_path):
    p = write_dataset_description(tmp_path, source_dir=str(tmp_path))
    body = json.loads(p.read_text())
    assert body["DatasetType"] == "derivative"
    assert body["GeneratedBy"][0]["Name"] == "lesionq"


def test_visits_table_merge_replaces_same_visit(tmp_path):
    dest = tmp_path / "visits.tsv"
    update_visits_table(
        dest,
        [
            {"participant_id": "sub-b", "session_id": "ses-01", "status": "ok", "t2_count": 3},
            {"participant_id": "sub-a", "session_id": "ses-01", "status": "failed", "reason": "x"},
        ],
    )
    df = update_visits_table(
        dest,
        [
            {"participant_id": "sub-a", "session_id": "ses-01", "status": "ok", "t2_count": 5},
        ],
    )
    back = read_tsv(dest)
    assert list(back["participant_id"]) == ["sub-a", "sub-b"]
    assert list(back["status"]) == ["ok", "ok"]
    assert list(back["t2_count"]) == [5, 3]
    assert list(df.columns[:5]) == ["participant_id", "session_id", "acq_time", "status", "reason"]
    assert OUTPUTS["t2_mask"].suffix == "mask"
