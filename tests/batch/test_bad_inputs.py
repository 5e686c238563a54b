"""Each class of bad input fails its own visit, with a clear reason, while the others finish.

One dataset holds one good visit (a sample-data phantom) and one subject per
bad-input class; a single run processes them all.
"""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from lesionq.batch.runner import run_dataset
from lesionq.config import load_protocol
from lesionq.io.tables import read_tsv

REPO = Path(__file__).resolve().parents[2]
GOOD = REPO / "sample_data" / "bids" / "sub-phantom01" / "ses-01" / "anat"


def _good_flair() -> nib.Nifti1Image:
    return nib.load(str(GOOD / "sub-phantom01_ses-01_FLAIR.nii.gz"))


def _save(img: nib.Nifti1Image, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(img, str(path))


def _variant(data: np.ndarray, ref: nib.Nifti1Image) -> nib.Nifti1Image:
    return nib.Nifti1Image(data, ref.affine, ref.header)


def _truncated(p: Path) -> None:
    _save(_good_flair(), p)
    raw = p.read_bytes()
    p.write_bytes(raw[: len(raw) // 2])


def _corrupt_gzip(p: Path) -> None:
    _save(_good_flair(), p)
    raw = bytearray(p.read_bytes())
    mid = len(raw) // 2
    raw[mid : mid + 64] = bytes(64)
    p.write_bytes(bytes(raw))


def _not_nifti(p: Path) -> None:
    p.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(p, "wb") as fh:
        fh.write(b"this is a text report, not an image\n" * 20)


def _four_d(p: Path) -> None:
    ref = _good_flair()
    d = np.asanyarray(ref.dataobj)
    _save(nib.Nifti1Image(np.stack([d, d], axis=-1), ref.affine), p)


def _two_d(p: Path) -> None:
    ref = _good_flair()
    d = np.asanyarray(ref.dataobj)[:, :, 20]
    _save(nib.Nifti1Image(d, ref.affine), p)


def _with_value(value: float):
    def make(p: Path) -> None:
        ref = _good_flair()
        d = np.asanyarray(ref.dataobj).astype(np.float32)
        d[40:44, 40:44, 20] = value
        _save(nib.Nifti1Image(d, ref.affine), p)

    return make


def _constant(value: float):
    def make(p: Path) -> None:
        ref = _good_flair()
        _save(nib.Nifti1Image(np.full(ref.shape, value, np.float32), ref.affine), p)

    return make


def _no_orientation(p: Path) -> None:
    ref = _good_flair()
    img = nib.Nifti1Image(np.asanyarray(ref.dataobj), ref.affine)
    img.set_qform(None, code=0)
    img.set_sform(None, code=0)
    _save(img, p)


#: class -> (how to write the FLAIR, finding code expected in the reason)
BAD_FLAIR = {
    "truncated": (_truncated, ("truncated", "corrupt")),
    "corruptgzip": (_corrupt_gzip, ("corrupt", "truncated")),
    "notnifti": (_not_nifti, ("not-nifti", "NIfTI")),
    "fourd": (_four_d, ("3-D", "4-D", "not-3d")),
    "twod": (_two_d, ("3-D", "2-D", "not-3d")),
    "nan": (_with_value(np.nan), ("NaN",)),
    "inf": (_with_value(np.inf), ("inf",)),
    "empty": (_constant(0.0), ("empty", "zero")),
    "constant": (_constant(123.0), ("constant",)),
    "noorient": (_no_orientation, ("orientation", "qform")),
}


@pytest.fixture(scope="module")
def batch(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad") / "bids"
    root.mkdir()
    (root / "dataset_description.json").write_text(
        json.dumps({"Name": "bad inputs", "BIDSVersion": "1.9.0"})
    )
    good = root / "sub-good" / "ses-01" / "anat"
    good.mkdir(parents=True)
    for f in GOOD.glob("*_FLAIR.nii.gz"):
        shutil.copy(f, good / f.name.replace("phantom01", "good"))
    for f in GOOD.glob("*_T1w.nii.gz"):
        if "ce-" not in f.name:
            shutil.copy(f, good / f.name.replace("phantom01", "good"))
    for cls, (make, _) in BAD_FLAIR.items():
        make(root / f"sub-{cls}" / "ses-01" / "anat" / f"sub-{cls}_ses-01_FLAIR.nii.gz")
    # missing FLAIR: only a T1w
    miss = root / "sub-noflair" / "ses-01" / "anat"
    miss.mkdir(parents=True)
    shutil.copy(GOOD / "sub-phantom01_ses-01_T1w.nii.gz", miss / "sub-noflair_ses-01_T1w.nii.gz")
    # T1w whose field of view does not overlap the FLAIR
    fov = root / "sub-fov" / "ses-01" / "anat"
    fov.mkdir(parents=True)
    shutil.copy(GOOD / "sub-phantom01_ses-01_FLAIR.nii.gz", fov / "sub-fov_ses-01_FLAIR.nii.gz")
    t1 = nib.load(str(GOOD / "sub-phantom01_ses-01_T1w.nii.gz"))
    aff = t1.affine.copy()
    aff[:3, 3] += 500.0
    _save(nib.Nifti1Image(np.asanyarray(t1.dataobj), aff), fov / "sub-fov_ses-01_T1w.nii.gz")
    # a file of another subject dropped into this folder
    ent = root / "sub-entity" / "ses-01" / "anat"
    ent.mkdir(parents=True)
    shutil.copy(GOOD / "sub-phantom01_ses-01_FLAIR.nii.gz", ent / "sub-other_ses-01_FLAIR.nii.gz")

    out = root.parent / "out"
    summary = run_dataset(root, out, settings=load_protocol("mesems_testing"), n_procs=1)
    return root, out, summary


def _row(summary, subject):
    rows = [r for r in summary.rows if r["participant_id"] == f"sub-{subject}"]
    assert len(rows) == 1, f"expected one row for sub-{subject}"
    return rows[0]


def test_good_visit_completes_beside_bad_ones(batch):
    root, out, summary = batch
    row = _row(summary, "good")
    assert row["status"] == "ok", row
    mask = out / "sub-good/ses-01/anat/sub-good_ses-01_label-T2lesion_mask.nii.gz"
    assert mask.is_file()
    flair = nib.load(str(root / "sub-good/ses-01/anat/sub-good_ses-01_FLAIR.nii.gz"))
    m = nib.load(str(mask))
    assert m.shape == flair.shape
    np.testing.assert_allclose(m.affine, flair.affine, atol=1e-4)
    assert not summary.all_ok


@pytest.mark.parametrize("cls", sorted(BAD_FLAIR))
def test_bad_flair_fails_its_visit_naming_file_and_problem(batch, cls):
    _, out, summary = batch
    row = _row(summary, cls)
    assert row["status"] == "failed"
    reason = row["reason"]
    assert f"sub-{cls}_ses-01_FLAIR.nii.gz" in reason
    words = BAD_FLAIR[cls][1]
    assert any(w.lower() in reason.lower() for w in words), reason
    # nothing that looks finished is left for a failed visit
    assert not (out / f"sub-{cls}").exists() or not list((out / f"sub-{cls}").rglob("*.nii.gz"))


@pytest.mark.parametrize(
    ("cls", "words"),
    [
        ("noflair", ("FLAIR",)),
        ("fov", ("field of view", "fov", "overlap")),
        ("entity", ("sub-other",)),
    ],
)
def test_visit_level_problems(batch, cls, words):
    _, _, summary = batch
    row = _row(summary, cls)
    assert row["status"] == "failed"
    assert any(w.lower() in row["reason"].lower() for w in words), row["reason"]


def test_visits_table_has_every_visit_and_reasons(batch):
    _, out, summary = batch
    df = read_tsv(out / "visits.tsv")
    assert len(df) == len(summary.rows) == len(BAD_FLAIR) + 4
    failed = df[df["status"] == "failed"]
    assert failed["reason"].notna().all()
    assert (df.loc[df["status"] == "ok", "t2_count"] >= 0).all()
    assert not list(out.rglob("*.part*")), "temporary files left behind"


def test_node_errors_are_reported_by_their_cause():
    from nipype.pipeline.engine.nodes import NodeExecutionError

    from lesionq.batch.visit import failure_reason

    exc = NodeExecutionError(
        "Exception raised while executing Node prep_flair.\n\nTraceback:\n\tTraceback (most "
        'recent call last):\n\t  File "x.py", line 1, in f\n\tlesionq.errors.ProcessingError: '
        "/d/FLAIR.nii.gz: brain extraction found 12 mL (rule: >= 200 mL)\n"
    )
    assert failure_reason(exc) == (
        "ProcessingError: /d/FLAIR.nii.gz: brain extraction found 12 mL "
        "(rule: >= 200 mL) (node prep_flair)"
    )
