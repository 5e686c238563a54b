"""Brain extraction: Otsu on phantoms, skull-stripped detection, deepbet on real scans."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from lesionq.errors import InputError, ProcessingError
from lesionq.preprocess import brain as brain_mod
from lesionq.preprocess.brain import (
    brain_mask,
    is_skull_stripped,
    nonzero_brain_mask,
    otsu_brain_mask,
    skull_stripped_stats,
)
from lesionq.testing.phantoms import make_subject


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return float(2 * np.count_nonzero(a & b) / (np.count_nonzero(a) + np.count_nonzero(b)))


@pytest.fixture(scope="module")
def visit():
    """First visit of a seeded phantom head (skull, scalp, zeroed air; 2 x 2 x 3 mm)."""
    return make_subject(1, n_visits=1).visits[0]


@pytest.mark.parametrize(("contrast", "min_dice"), [("FLAIR", 0.95), ("T1w", 0.95)])
def test_otsu_on_phantom(visit, contrast: str, min_dice: float) -> None:
    mask = otsu_brain_mask(visit.images[contrast], visit.affine)
    assert mask.dtype == bool and mask.shape == visit.brain_mask.shape
    assert dice(mask, visit.brain_mask) >= min_dice


def test_brain_mask_otsu_reports_method(visit) -> None:
    res = brain_mask(visit.images["FLAIR"], visit.affine, method="otsu")
    assert res.method == "otsu" and not res.skull_stripped_input
    vox_ml = np.prod(visit.voxel_size_mm) / 1000
    assert res.volume_ml == pytest.approx(res.mask.sum() * vox_ml)


def test_raw_phantom_is_not_skull_stripped(visit) -> None:
    stats = skull_stripped_stats(visit.images["FLAIR"], visit.affine)
    assert stats["background_value"] == 0.0
    assert stats["background_fraction"] > 0.3  # zeroed air passes rule 1 ...
    assert stats["support_ml"] > 2000  # ... the head fails rule 2
    assert not is_skull_stripped(visit.images["FLAIR"], visit.affine)


def test_noisy_background_is_not_skull_stripped() -> None:
    v = make_subject(2, n_visits=1, zero_background=False).visits[0]
    stats = skull_stripped_stats(v.images["T1w"], v.affine, with_support=False)
    assert stats["background_fraction"] < 0.3
    assert not is_skull_stripped(v.images["T1w"], v.affine)


def test_stripped_phantom_detected_and_support_returned(visit, monkeypatch) -> None:
    stripped = np.where(visit.brain_mask, visit.images["FLAIR"], 0.0).astype(np.float32)
    assert is_skull_stripped(stripped, visit.affine)

    def no_network(*args, **kwargs):
        raise AssertionError("deepbet must not run on skull-stripped input")

    monkeypatch.setattr(brain_mod, "deepbet_brain_mask", no_network)
    res = brain_mask(stripped, visit.affine, method="deepbet")
    assert res.method == "nonzero" and res.skull_stripped_input
    assert dice(res.mask, visit.brain_mask) > 0.99
    # detection can be switched off: then the method runs
    with pytest.raises(AssertionError, match="must not run"):
        brain_mask(stripped, visit.affine, method="deepbet", detect_skull_stripped=False)


def test_nonzero_mask_cleans_islands_and_holes() -> None:
    aff = np.diag([1.0, 1.0, 1.0, 1.0])
    img = np.zeros((40, 40, 40), np.float32)
    g = np.indices(img.shape)
    ball = ((g - 20) ** 2).sum(0) < 15**2
    img[ball] = 5.0
    img[20, 20, 20] = 0.0  # enclosed hole
    img[2, 2, 2] = 3.0  # island
    mask = nonzero_brain_mask(img, aff)
    np.testing.assert_array_equal(mask, ball)
    # a non-zero constant background is found from the faces
    np.testing.assert_array_equal(nonzero_brain_mask(img - 7.0, aff), ball)


def test_brain_mask_errors(visit) -> None:
    with pytest.raises(InputError, match="method"):
        brain_mask(visit.images["FLAIR"], visit.affine, method="bet")
    with pytest.raises(ProcessingError, match="max_volume_ml"):
        brain_mask(visit.images["FLAIR"], visit.affine, method="otsu", max_volume_ml=100.0)
    with pytest.raises(InputError, match="3-D"):
        brain_mask(np.zeros((4, 4)), visit.affine, method="otsu")
    with pytest.raises(ProcessingError, match="opening_mm"):
        otsu_brain_mask(visit.images["FLAIR"], visit.affine, opening_mm=200.0)


# --------------------------------------------------------------------------- real data (slow)


def _lo01(shared_data, ses: str, mod: str = "FLAIR"):
    from lesionq.io.nifti import load_array

    return load_array(shared_data / "sub-lo01" / ses / "anat" / f"sub-lo01_{ses}_{mod}.nii.gz")


def _dice_vs_truth(shared_data, mask: np.ndarray, affine: np.ndarray, ses: str) -> float:
    """Dice against the dataset's brain mask, as ../shared/eval/score.py computes it."""
    from lesionq.io.sitk_bridge import nib_to_sitk

    truth_dir = shared_data / "derivatives" / "truth" / "sub-lo01"
    truth = sitk.ReadImage(str(truth_dir / "sub-lo01_space-common_label-brain_mask.nii.gz"))
    xfm = sitk.ReadTransform(
        str(truth_dir / ses / "xfm" / f"sub-lo01_{ses}_from-FLAIR_to-common_mode-image_xfm.txt")
    )
    pred = sitk.Resample(
        nib_to_sitk(mask.astype(np.uint8), affine), truth, xfm, sitk.sitkNearestNeighbor, 0
    )
    return dice(sitk.GetArrayFromImage(pred) > 0, sitk.GetArrayFromImage(truth) > 0)


@pytest.mark.slow
@pytest.mark.realdata
@pytest.mark.parametrize("ses", ["ses-01", "ses-02"])
def test_deepbet_on_raw_flair_meets_bar(shared_data, ses: str) -> None:
    x, a = _lo01(shared_data, ses)
    assert not is_skull_stripped(x, a)
    res = brain_mask(x, a)
    assert res.method == "deepbet"
    assert _dice_vs_truth(shared_data, res.mask, a, ses) >= 0.95


@pytest.mark.slow
@pytest.mark.realdata
def test_deepbet_deterministic_and_orientation_invariant(shared_data) -> None:
    x, a = _lo01(shared_data, "ses-01")
    m1 = brain_mod.deepbet_brain_mask(x, a)
    m2 = brain_mod.deepbet_brain_mask(x, a)
    np.testing.assert_array_equal(m1, m2)
    # the same scan stored with flipped and permuted axes gives the same mask
    flip = np.eye(4)
    flip[0, 0], flip[0, 3] = -1.0, x.shape[0] - 1
    perm = np.array([[0, 1.0, 0, 0], [1.0, 0, 0, 0], [0, 0, 1.0, 0], [0, 0, 0, 1.0]])
    x2 = np.ascontiguousarray(x[::-1].transpose(1, 0, 2))
    a2 = a @ flip @ perm
    m3 = brain_mod.deepbet_brain_mask(x2, a2)
    np.testing.assert_array_equal(m3.transpose(1, 0, 2)[::-1], m1)


@pytest.mark.slow
@pytest.mark.realdata
def test_otsu_on_raw_flair(shared_data) -> None:
    x, a = _lo01(shared_data, "ses-01")
    assert _dice_vs_truth(shared_data, otsu_brain_mask(x, a), a, "ses-01") >= 0.95


@pytest.mark.slow
@pytest.mark.realdata
def test_skull_stripped_detection_on_real_scans(shared_data) -> None:
    from lesionq.io.nifti import load_array

    for ses in ("ses-01", "ses-02"):
        for mod in ("FLAIR", "T1w", "T2w"):
            x, a = _lo01(shared_data, ses, mod)
            assert not is_skull_stripped(x, a), (ses, mod)
    x, a = load_array(shared_data / "sub-cs07" / "ses-01" / "anat" / "sub-cs07_ses-01_FLAIR.nii.gz")
    assert is_skull_stripped(x, a)
    res = brain_mask(x, a)
    assert res.method == "nonzero"
    assert 1000 < res.volume_ml < 1300
