"""N4 bias-field correction on a synthetic two-tissue volume with a known field."""

from __future__ import annotations

import numpy as np
import pytest

from lesionq.errors import InputError, ProcessingError
from lesionq.preprocess.bias import correct_bias, n4_shrink_factors

SHAPE = (64, 64, 24)
AFFINE = np.diag([2.0, 2.0, 4.0, 1.0])


def _phantom(seed: int = 0):
    rng = np.random.default_rng(seed)
    g = np.indices(SHAPE, dtype=float)
    c = (np.asarray(SHAPE) - 1) / 2
    r = np.sqrt(sum(((g[a] - c[a]) / (0.42 * SHAPE[a])) ** 2 for a in range(3)))
    head = r < 1
    wm = r < 0.6
    tissue = np.where(wm, 100.0, np.where(head, 70.0, 0.0))
    x = (g[0] - c[0]) / SHAPE[0]
    z = (g[2] - c[2]) / SHAPE[2]
    field = np.exp(0.35 * x - 0.25 * z + 0.2 * x * z)
    img = tissue * field + rng.normal(0, 1.0, SHAPE) * head
    return img.astype(np.float32), field.astype(np.float32), head, wm


def _cv(values: np.ndarray) -> float:
    return float(values.std() / values.mean())


def test_shrink_factors() -> None:
    assert n4_shrink_factors((0.72, 0.72, 4.0), 4.0) == (6, 6, 1)
    assert n4_shrink_factors((1.0, 1.0, 1.0), 4.0) == (4, 4, 4)
    assert n4_shrink_factors((2.0, 2.0, 4.0), 3.0) == (2, 2, 1)
    with pytest.raises(InputError):
        n4_shrink_factors((1.0, 1.0, 1.0), 0.0)


def test_correction_flattens_tissue_and_recovers_field() -> None:
    img, field, head, wm = _phantom()
    corrected, est = correct_bias(img, AFFINE, mask=head, shrink_mm=4.0)
    assert corrected.dtype == np.float32 and est.dtype == np.float32
    assert corrected.shape == img.shape
    assert np.all(est > 0)
    before = _cv(img[wm])
    after = _cv(corrected[wm])
    assert after < 0.4 * before, (before, after)
    # the estimated field follows the true one up to a constant factor
    ratio = est[head] / field[head]
    assert ratio.std() / ratio.mean() < 0.05
    np.testing.assert_allclose(corrected * est, img, rtol=1e-4, atol=1e-3)


def test_default_otsu_mask_runs() -> None:
    img, _, _, wm = _phantom(1)
    corrected, _ = correct_bias(img, AFFINE, n_iterations=(20, 20))
    assert _cv(corrected[wm]) < _cv(img[wm])


def test_errors() -> None:
    img, _, head, _ = _phantom()
    with pytest.raises(InputError, match="mask shape"):
        correct_bias(img, AFFINE, mask=head[:-1])
    with pytest.raises(ProcessingError, match="positive voxels"):
        correct_bias(img, AFFINE, mask=np.zeros(SHAPE, bool))
    with pytest.raises(InputError, match="n_control_points"):
        correct_bias(img, AFFINE, mask=head, n_control_points=3)
    bad = img.copy()
    bad[0, 0, 0] = np.nan
    with pytest.raises(InputError, match="NaN"):
        correct_bias(bad, AFFINE)
