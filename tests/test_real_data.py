"""The whole pipeline on the real Ljubljana scans (slow; needs ../shared/data)."""

from __future__ import annotations

import json
import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest

from lesionq.cli.main import main
from lesionq.io.tables import read_tsv

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def real_run(shared_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("real") / "out"
    code = main(["run", str(shared_data), str(out), "participant", "--n-procs", "2"])
    return code, out


def test_every_subject_complete(real_run, shared_data):
    code, out = real_run
    visits = read_tsv(out / "visits.tsv")
    assert code == 0, visits.to_string()
    assert [(r.participant_id, r.session_id) for r in visits.itertuples()] == [
        ("sub-cs07", "ses-01"),
        ("sub-lo01", "ses-01"),
        ("sub-lo01", "ses-02"),
        ("sub-lo12", "ses-01"),
        ("sub-lo12", "ses-02"),
    ]
    cs07 = visits.iloc[0]
    assert bool(cs07["skull_stripped_input"]) is True
    assert not visits.iloc[1:]["skull_stripped_input"].any()
    for r in visits.itertuples():
        sub, ses = r.participant_id, r.session_id
        flair = nib.load(str(shared_data / sub / ses / "anat" / f"{sub}_{ses}_FLAIR.nii.gz"))
        mask = nib.load(str(out / sub / ses / "anat" / f"{sub}_{ses}_label-T2lesion_mask.nii.gz"))
        assert mask.shape == flair.shape
        np.testing.assert_allclose(mask.affine, flair.affine, atol=1e-4)


def _score(shared_data, *args):
    score = shared_data.parents[1] / "eval" / "score.py"
    res = subprocess.run(
        [sys.executable, str(score), *map(str, args)], check=True, capture_output=True, text=True
    )
    return json.loads(res.stdout.strip().splitlines()[-1])


def test_brain_mask_bar_on_raw_scan(real_run, shared_data):
    _, out = real_run
    truth = shared_data / "derivatives/truth/sub-lo01/sub-lo01_space-common_label-brain_mask.nii.gz"
    xfm = (
        shared_data / "derivatives/truth/sub-lo01/ses-01/xfm/"
        "sub-lo01_ses-01_from-FLAIR_to-common_mode-image_xfm.txt"
    )
    pred = out / "sub-lo01/ses-01/anat/sub-lo01_ses-01_desc-brain_mask.nii.gz"
    assert _score(shared_data, "lesions", pred, truth, "--xfm", xfm)["dice"] >= 0.95


def test_cs07_lesions_scored(real_run, shared_data):
    """The issue 3 bars on the real cross-sectional case, through the whole pipeline."""
    _, out = real_run
    truth = (
        shared_data / "derivatives/truth/sub-cs07/ses-01/anat/"
        "sub-cs07_ses-01_label-lesion_desc-consensus_mask.nii.gz"
    )
    pred = out / "sub-cs07/ses-01/anat/sub-cs07_ses-01_label-T2lesion_mask.nii.gz"
    res = _score(shared_data, "lesions", pred, truth)
    assert res["dice"] >= 0.60, res
    assert res["f1"] >= 0.60, res
