"""Rigid/affine registration, resampling and transform files."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from lesionq.errors import InputError, RegistrationError
from lesionq.io.sitk_bridge import ras_matrix_to_transform, transform_to_ras_matrix
from lesionq.registration import (
    estimate_affine,
    estimate_rigid,
    level_shrink_factors,
    load_transform,
    register_template,
    resample_to,
    save_transform,
)


def _rot(ax: float, ay: float, az: float) -> np.ndarray:
    ax, ay, az = np.radians([ax, ay, az])
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


def _motion(rot_deg, trans_mm, scale: float = 1.0) -> np.ndarray:
    m = np.eye(4)
    m[:3, :3] = _rot(*rot_deg) * scale
    m[:3, 3] = trans_mm
    return m


def _head(points_ras: np.ndarray) -> np.ndarray:
    """Analytic asymmetric 'head' (RAS mm in, intensity out): smooth, so exactly resampleable."""
    x, y, z = points_ras[..., 0], points_ras[..., 1], points_ras[..., 2]

    def blob(cx, cy, cz, rx, ry, rz, amp):
        r2 = ((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2 + ((z - cz) / rz) ** 2
        return amp / (1.0 + np.exp((np.sqrt(r2) - 1.0) * 20.0))

    img = blob(0, 0, 0, 55, 65, 45, 60.0)  # head
    img -= blob(0, 0, 0, 48, 58, 38, 40.0)  # dark skull ring
    img += blob(0, 0, 0, 44, 54, 34, 50.0)  # brain
    # asymmetric inner structure (fixed positions: ventricle-, nucleus- and lesion-like)
    for cx, cy, cz, rx, ry, rz, amp in (
        (-12, 10, 5, 6, 18, 8, -40), (10, 14, 3, 5, 14, 6, -35), (20, -25, 15, 10, 8, 9, 30),
        (-25, 30, -10, 8, 12, 6, 25), (28, 20, -15, 7, 9, 12, -30), (-20, -30, 12, 12, 7, 8, -25),
        (5, -40, -5, 9, 6, 10, 35), (-30, -5, 20, 6, 11, 7, 30), (0, 40, 18, 14, 6, 6, -20),
    ):  # fmt: skip
        img += blob(cx, cy, cz, rx, ry, rz, float(amp))
    # gyri-like texture inside the brain: features everywhere, as in real brains
    texture = np.sin(0.15 * x + 0.08 * y) * np.cos(0.12 * y - 0.1 * z) * np.sin(0.11 * z + 0.06 * x)
    img += 15.0 * texture * blob(0, 0, 0, 44, 54, 34, 1.0)
    return img.astype(np.float32)


def _grid(shape, affine) -> np.ndarray:
    ijk = np.stack(np.indices(shape, dtype=float), axis=-1)
    return ijk @ affine[:3, :3].T + affine[:3, 3]


def _aff(zooms, origin, rot=(0.0, 0.0, 0.0), flip=(1, 1, 1)) -> np.ndarray:
    a = np.eye(4)
    a[:3, :3] = _rot(*rot) @ np.diag(np.asarray(zooms) * np.asarray(flip))
    a[:3, 3] = origin
    return a


FIXED_SHAPE = (64, 72, 40)
FIXED_AFF = _aff((2.0, 2.0, 2.5), (-64.0, -72.0, -50.0))
MOVING_SHAPE = (60, 70, 34)
MOVING_AFF = _aff((2.2, 2.2, 3.0), (62.0, 70.0, -48.0), rot=(3.0, -2.0, 4.0), flip=(-1, -1, 1))


def _pair(truth_ras: np.ndarray):
    """Fixed image and a moving image such that moving(truth(p)) == fixed(p)."""
    fixed = _head(_grid(FIXED_SHAPE, FIXED_AFF))
    inv = np.linalg.inv(truth_ras)
    pts = _grid(MOVING_SHAPE, MOVING_AFF)
    moving = _head(pts @ inv[:3, :3].T + inv[:3, 3])
    return fixed, moving


def _error_mm(tx: sitk.Transform, truth_ras: np.ndarray) -> float:
    pts = _grid(FIXED_SHAPE, FIXED_AFF)[::4, ::4, ::4].reshape(-1, 3)
    pts = pts[np.linalg.norm(pts / [44, 54, 34], axis=1) < 1]  # inside the brain
    m = transform_to_ras_matrix(tx)
    d = (pts @ m[:3, :3].T + m[:3, 3]) - (pts @ truth_ras[:3, :3].T + truth_ras[:3, 3])
    return float(np.linalg.norm(d, axis=1).max())


TRUTH = _motion((4.0, -3.0, 5.0), (3.0, -4.0, 2.5))


def test_level_shrink_factors() -> None:
    assert level_shrink_factors((0.72, 0.72, 4.0), 4) == (4, 4, 1)
    assert level_shrink_factors((0.72, 0.72, 4.0), 1) == (1, 1, 1)
    assert level_shrink_factors((1.0, 1.0, 2.0), 4) == (4, 4, 2)


def test_rigid_recovers_known_motion() -> None:
    fixed, moving = _pair(TRUTH)
    tx = estimate_rigid(fixed, FIXED_AFF, moving, MOVING_AFF, initializer="identity")
    assert isinstance(tx, sitk.VersorRigid3DTransform)
    err = _error_mm(tx, TRUTH)
    assert err < 0.5, f"max error {err:.3f} mm over the brain"
    # and it really moved: the identity is several mm off
    assert _error_mm(sitk.Euler3DTransform(), TRUTH) > 5.0


def test_rigid_deterministic_and_seed_matters() -> None:
    fixed, moving = _pair(TRUTH)
    kw = dict(n_iterations=(30, 10, 3), seed=7)
    p1 = np.array(estimate_rigid(fixed, FIXED_AFF, moving, MOVING_AFF, **kw).GetParameters())
    p2 = np.array(estimate_rigid(fixed, FIXED_AFF, moving, MOVING_AFF, **kw).GetParameters())
    np.testing.assert_allclose(p1, p2, rtol=0, atol=1e-9)
    kw["seed"] = 8
    p3 = np.array(estimate_rigid(fixed, FIXED_AFF, moving, MOVING_AFF, **kw).GetParameters())
    assert not np.allclose(p1, p3, rtol=0, atol=1e-9)


def test_rigid_with_mask_and_moments_initializer() -> None:
    fixed, moving = _pair(TRUTH)
    pts = _grid(FIXED_SHAPE, FIXED_AFF)
    mask = np.linalg.norm(pts / [50, 60, 40], axis=-1) < 1
    tx = estimate_rigid(
        fixed, FIXED_AFF, moving, MOVING_AFF, fixed_mask=mask, initializer="moments"
    )
    assert _error_mm(tx, TRUTH) < 0.5


def test_brain_initialiser_recovers_a_repositioned_head() -> None:
    """80 mm table move and 25 deg of head rotation: the 'brain' starts find it, identity does not.

    The moving grid moves with the head (as a scanner's field of view follows a
    repositioned patient), so only the scanner coordinates are far apart.
    """
    truth = _motion((25.0, -10.0, 15.0), (80.0, -30.0, 20.0))
    moving_aff = truth @ MOVING_AFF
    fixed = _head(_grid(FIXED_SHAPE, FIXED_AFF))
    inv = np.linalg.inv(truth)
    pts_m = _grid(MOVING_SHAPE, moving_aff)
    moving = _head(pts_m @ inv[:3, :3].T + inv[:3, 3])

    def brain(pts: np.ndarray) -> np.ndarray:
        return np.linalg.norm(pts / [44, 54, 34], axis=-1) < 1

    fixed_brain = brain(_grid(FIXED_SHAPE, FIXED_AFF))
    moving_brain = brain(pts_m @ inv[:3, :3].T + inv[:3, 3])
    kw = dict(fixed_brain=fixed_brain, moving_brain=moving_brain, min_brain_dice=0.8)
    tx = estimate_rigid(
        fixed, FIXED_AFF, moving, moving_aff, initializer="brain", max_translation_mm=None,
        max_rotation_deg=None, **kw,
    )  # fmt: skip
    assert _error_mm(tx, truth) < 1.0
    # from the scanner coordinates alone the same registration does not get there
    try:
        bad = estimate_rigid(
            fixed, FIXED_AFF, moving, moving_aff, initializer="identity", max_translation_mm=None,
            max_rotation_deg=None, **kw,
        )  # fmt: skip
    except RegistrationError:
        pass  # judged by the brain overlap: flagged, as it must be
    else:
        assert _error_mm(bad, truth) > 5.0


def test_brain_initialiser_needs_both_brain_masks() -> None:
    fixed, moving = _pair(TRUTH)
    with pytest.raises(InputError, match="fixed_brain and moving_brain"):
        estimate_rigid(fixed, FIXED_AFF, moving, MOVING_AFF, initializer="brain")


def test_rigid_sanity_checks_raise() -> None:
    fixed, moving = _pair(TRUTH)
    with pytest.raises(RegistrationError, match="max_translation_mm"):
        estimate_rigid(fixed, FIXED_AFF, moving, MOVING_AFF, max_translation_mm=1.0)
    with pytest.raises(RegistrationError, match="max_rotation_deg"):
        estimate_rigid(fixed, FIXED_AFF, moving, MOVING_AFF, max_rotation_deg=1.0)
    noise = np.random.default_rng(0).normal(size=MOVING_SHAPE).astype(np.float32)
    with pytest.raises(RegistrationError, match="max_final_metric"):
        estimate_rigid(fixed, FIXED_AFF, noise, MOVING_AFF, n_iterations=(10, 5, 2))


def test_rigid_input_errors() -> None:
    fixed, moving = _pair(TRUTH)
    with pytest.raises(InputError, match="constant"):
        estimate_rigid(np.zeros(FIXED_SHAPE), FIXED_AFF, moving, MOVING_AFF)
    with pytest.raises(InputError, match="fixed_mask"):
        estimate_rigid(fixed, FIXED_AFF, moving, MOVING_AFF, fixed_mask=np.ones((3, 3, 3)))
    with pytest.raises(InputError, match="initializer"):
        estimate_rigid(fixed, FIXED_AFF, moving, MOVING_AFF, initializer="magic")
    with pytest.raises(InputError, match="same"):
        estimate_rigid(fixed, FIXED_AFF, moving, MOVING_AFF, shrink_factors=(4, 2))
    bad = fixed.copy()
    bad[0, 0, 0] = np.nan
    with pytest.raises(InputError, match="NaN"):
        estimate_rigid(bad, FIXED_AFF, moving, MOVING_AFF)


def test_affine_recovers_scaling() -> None:
    truth = _motion((2.0, -1.0, 3.0), (2.0, 1.0, -1.5), scale=1.08)
    fixed, moving = _pair(truth)
    tx = estimate_affine(fixed, FIXED_AFF, moving, MOVING_AFF)
    assert isinstance(tx, sitk.AffineTransform)
    assert _error_mm(tx, truth) < 1.0
    s = np.linalg.svd(transform_to_ras_matrix(tx)[:3, :3], compute_uv=False)
    np.testing.assert_allclose(s, 1.08, atol=0.02)
    with pytest.raises(RegistrationError, match="scale_range"):
        estimate_affine(fixed, FIXED_AFF, moving, MOVING_AFF, scale_range=(0.95, 1.05))


def test_register_template_with_mask() -> None:
    """Template (moving) onto a subject (fixed) whose head is 10 % smaller."""
    truth = _motion((3.0, 2.0, -4.0), (-5.0, 6.0, 4.0), scale=1.1)
    subject, template = _pair(truth)
    pts = _grid(FIXED_SHAPE, FIXED_AFF)
    brain = np.linalg.norm(pts / [44, 54, 34], axis=-1) < 1
    tmpl_pts = _grid(MOVING_SHAPE, MOVING_AFF)
    inv = np.linalg.inv(truth)
    q = tmpl_pts @ inv[:3, :3].T + inv[:3, 3]
    tmpl_brain = np.linalg.norm(q / [44, 54, 34], axis=-1) < 1
    template = np.where(tmpl_brain, template, 0.0).astype(np.float32)
    tx = register_template(template, MOVING_AFF, subject, FIXED_AFF, brain)
    assert _error_mm(tx, truth) < 1.5
    with pytest.raises(RegistrationError, match="min_mask_dice"):
        register_template(template, MOVING_AFF, subject, FIXED_AFF, brain, min_mask_dice=0.999)


def test_resample_identity_and_dtypes() -> None:
    rng = np.random.default_rng(0)
    vol = rng.normal(size=(8, 9, 10)).astype(np.float64)
    aff = _aff((1.0, 1.5, 2.0), (1.0, 2.0, 3.0), rot=(10, 0, 5))
    out = resample_to(vol, aff, vol.shape, aff)
    assert out.dtype == np.float32 and out.shape == vol.shape
    np.testing.assert_allclose(out, vol.astype(np.float32), atol=1e-5)
    lab = rng.integers(0, 5, size=(8, 9, 10)).astype(np.uint16)
    out = resample_to(lab, aff, lab.shape, aff, interpolation="nearest")
    assert out.dtype == np.uint16
    np.testing.assert_array_equal(out, lab)
    mask = lab > 2
    out = resample_to(mask, aff, mask.shape, aff, interpolation="nearest")
    assert out.dtype == bool
    np.testing.assert_array_equal(out, mask)
    with pytest.raises(InputError, match="interpolation"):
        resample_to(vol, aff, vol.shape, aff, interpolation="cubic")


def test_resample_through_transform_moves_content() -> None:
    """A point at fixed RAS p is filled from moving RAS T(p)."""
    aff = np.eye(4)
    vol = np.zeros((20, 20, 20), np.float32)
    vol[12, 10, 10] = 1.0
    shift = np.eye(4)
    shift[:3, 3] = (2.0, 0.0, 0.0)  # fixed p -> moving p + 2 mm along x (R)
    out = resample_to(
        vol, aff, vol.shape, aff, ras_matrix_to_transform(shift), interpolation="nearest"
    )
    assert np.argwhere(out == 1.0).tolist() == [[10, 10, 10]]
    out = resample_to(vol, aff, (5, 5, 5), aff, default=-1.0)
    assert out.shape == (5, 5, 5) and out.min() == 0.0
    far = aff.copy()
    far[:3, 3] = 100.0
    assert (resample_to(vol, aff, (3, 3, 3), far, default=-1.0) == -1.0).all()


def test_transform_file_round_trip(tmp_path) -> None:
    fixed, moving = _pair(TRUTH)
    tx = estimate_rigid(fixed, FIXED_AFF, moving, MOVING_AFF, n_iterations=(20, 5, 2))
    path = save_transform(tx, tmp_path / "sub-01_from-T1w_to-FLAIR_mode-image_xfm.txt")
    back = load_transform(path)
    np.testing.assert_allclose(
        transform_to_ras_matrix(back), transform_to_ras_matrix(tx), atol=1e-9
    )
    a = resample_to(moving, MOVING_AFF, FIXED_SHAPE, FIXED_AFF, tx)
    b = resample_to(moving, MOVING_AFF, FIXED_SHAPE, FIXED_AFF, back)
    np.testing.assert_allclose(a, b, atol=1e-4)
    with pytest.raises(InputError, match=r"\.txt"):
        save_transform(tx, tmp_path / "x.h5")


@pytest.mark.slow
def test_rigid_real_flair_sessions_match_dataset_transforms(shared_data) -> None:
    """FLAIR ses-02 -> ses-01 of sub-lo01 agrees with the dataset's own transforms."""
    from lesionq.io.nifti import load_array
    from lesionq.preprocess import otsu_brain_mask

    anat = shared_data / "sub-lo01"
    f1, a1 = load_array(anat / "ses-01" / "anat" / "sub-lo01_ses-01_FLAIR.nii.gz")
    f2, a2 = load_array(anat / "ses-02" / "anat" / "sub-lo01_ses-02_FLAIR.nii.gz")
    tx = estimate_rigid(f1, a1, f2, a2)
    xfm = shared_data / "derivatives" / "truth" / "sub-lo01"
    x1 = load_transform(
        xfm / "ses-01" / "xfm" / "sub-lo01_ses-01_from-FLAIR_to-common_mode-image_xfm.txt"
    )
    x2 = load_transform(
        xfm / "ses-02" / "xfm" / "sub-lo01_ses-02_from-FLAIR_to-common_mode-image_xfm.txt"
    )
    truth = sitk.CompositeTransform([x2, x1.GetInverse()])
    brain = otsu_brain_mask(f1, a1)
    ijk = np.argwhere(brain)[::500]
    lps = (ijk @ a1[:3, :3].T + a1[:3, 3]) * [-1, -1, 1]
    d = [
        np.linalg.norm(np.subtract(tx.TransformPoint(tuple(p)), truth.TransformPoint(tuple(p))))
        for p in lps
    ]
    assert np.mean(d) < 0.5 and np.max(d) < 1.0


def test_estimate_translation_recovers_a_known_shift() -> None:
    """Two images on one grid, the second the first moved by (1.5, -2, 1) mm: recovered.

    ``moving(x + t)`` matches ``fixed(x)``; with anisotropic voxels the shift is in
    mm along the array axes. Bad inputs are named.
    """
    from lesionq.registration import apply_translation, estimate_translation

    vs = (1.0, 1.0, 2.0)
    aff = np.diag([*vs, 1.0])
    aff[:3, 3] = (-48.0, -56.0, -44.0)
    shape = (96, 112, 44)
    pts = _grid(shape, aff)
    t = np.array([1.5, -2.0, 1.0])
    fixed = _head(pts)
    moving = _head(pts - t)  # moving(x + t) = head(x) = fixed(x)
    brain = np.linalg.norm(pts / [44, 54, 34], axis=-1) < 1
    got = estimate_translation(fixed, moving, vs, brain)
    assert np.allclose(got, t, atol=0.2), got
    back = apply_translation(moving, got, vs)  # moving(x + t) ~ fixed(x)
    inner = np.linalg.norm(pts / [38, 48, 28], axis=-1) < 1
    err = np.abs(back - fixed)[inner].mean()
    assert err < 0.25 * np.abs(moving - fixed)[inner].mean(), err
    assert np.allclose(estimate_translation(fixed, fixed, vs, brain), 0.0, atol=0.1)
    with pytest.raises(InputError, match="one shape"):
        estimate_translation(fixed, moving[:-1], vs, brain)
    with pytest.raises(InputError, match="mask is empty"):
        estimate_translation(fixed, moving, vs, np.zeros(shape, bool))
