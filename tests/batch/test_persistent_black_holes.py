"""Persistent T1 black holes (``bh_volume_persistent_mm3``), set by the subject's longitudinal step.

Synthetic published outputs on small grids: the earlier visit's black-hole mask is
brought onto the later grid through the registration files, and only visits at least
``[black_holes] persistent_min_days`` apart count.
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from lesionq.batch.longitudinal import _persistent_black_holes
from lesionq.core.black_holes import persistent_black_holes
from lesionq.errors import ConfigError, InputError
from lesionq.interfaces.longitudinal import STATUS_OK
from lesionq.io.bids import VisitInputs
from lesionq.io.derivatives import output_path
from lesionq.registration.rigid import save_transform
from lesionq.steps.black_holes import check_black_holes_section, persistent_min_days

SHAPE = (20, 20, 10)
AFFINE = np.diag([1.0, 1.0, 2.0, 1.0])


def _publish(out: Path, ses: str, labels: np.ndarray) -> None:
    for key, arr in (
        ("bh_labels", labels.astype(np.int32)),
        ("bh_mask", (labels > 0).astype(np.uint8)),
    ):
        p = output_path(out, "a", ses, key)
        p.parent.mkdir(parents=True, exist_ok=True)
        nib.save(nib.Nifti1Image(arr, AFFINE), str(p))


def _visit(out: Path, ses: str, when: str | None) -> VisitInputs:
    return VisitInputs(subject="a", session=ses, anat_dir=out / "raw", acq_time=when)


def _translation(out: Path, ses: str, mm: tuple[float, float, float]) -> str:
    """Reference -> visit transform (LPS): the visit's anatomy sits ``mm`` further along."""
    tx = sitk.TranslationTransform(3, mm)
    return str(save_transform(tx, out / f"xfm_{ses}.txt"))


def test_overlap_is_lesionwise_and_volume_is_this_visits():
    lab = np.zeros(SHAPE, np.int32)
    lab[2:4, 2:4, 1:3] = 1  # 8 voxels x 2 mm3
    lab[10:13, 10:13, 5] = 2  # 9 voxels
    before = np.zeros(SHAPE, bool)
    before[11, 11, 5] = True  # one voxel of lesion 2 was dark before
    assert persistent_black_holes(lab, before, (1.0, 1.0, 2.0)) == ((2,), 18.0)
    assert persistent_black_holes(lab, np.zeros(SHAPE, bool), (1.0, 1.0, 2.0)) == ((), 0.0)
    with pytest.raises(InputError, match="differ"):
        persistent_black_holes(lab, before[:-1], (1.0, 1.0, 2.0))


def test_persistent_needs_an_old_enough_registered_visit(tmp_path):
    out = tmp_path / "out"
    early = np.zeros(SHAPE, np.int32)
    early[5:8, 5:8, 4:6] = 1
    # the later visit's anatomy is shifted by +3 voxels along axis 0 (3 mm, RAS x);
    # its black hole sits where the earlier one moved to, plus a second, new one
    late = np.zeros(SHAPE, np.int32)
    late[8:11, 5:8, 4:6] = 1
    late[14:16, 14:16, 2:4] = 2
    _publish(out, "01", early)
    _publish(out, "02", late)
    _publish(out, "03", late)
    visits = [
        _visit(out, "01", "2020-01-01T00:00:00"),
        _visit(out, "02", "2020-03-01T00:00:00"),  # 60 days: too early
        _visit(out, "03", "2020-08-01T00:00:00"),  # 213 days
    ]
    # RAS +3 mm along x is LPS -3 mm: reference points map to visit points shifted by -3
    outs = {
        "registration_status_02": STATUS_OK,
        "registration_status_03": STATUS_OK,
        "xfm_02": _translation(tmp_path, "02", (-3.0, 0.0, 0.0)),
        "xfm_03": _translation(tmp_path, "03", (-3.0, 0.0, 0.0)),
    }
    got = _persistent_black_holes(out, visits, outs, 182)
    assert got["01"] is None  # nothing earlier
    assert got["02"] is None  # nothing old enough
    assert got["03"] == pytest.approx(18 * 2.0)  # lesion 1 only (3x3x2 voxels of 2 mm3)
    # without the registration the earlier mask misses the moved black hole
    outs_id = {**outs, "xfm_03": _translation(tmp_path, "03id", (0.0, 0.0, 0.0))}
    assert _persistent_black_holes(out, visits, outs_id, 182)["03"] == 0.0
    # a failed registration or a visit without a date is n/a, never 0
    failed = {**outs, "registration_status_03": "registration_failed: test"}
    assert _persistent_black_holes(out, visits, failed, 182)["03"] is None
    undated = [*visits[:2], _visit(out, "03", None)]
    assert _persistent_black_holes(out, undated, outs, 182)["03"] is None
    # a shorter minimum makes ses-02 count too
    assert _persistent_black_holes(out, visits, outs, 30)["02"] == pytest.approx(36.0)


def test_persistent_min_days_is_a_checked_black_holes_key():
    assert persistent_min_days({}) == 182
    assert persistent_min_days({"persistent_min_days": 30}) == 30
    assert "persistent_min_days" not in check_black_holes_section({"persistent_min_days": 30})
    for bad in (0, 1.5, True, "182"):
        with pytest.raises(ConfigError, match="persistent_min_days"):
            check_black_holes_section({"persistent_min_days": bad})
