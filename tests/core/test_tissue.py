"""Tests of lesionq.core.tissue (CSF / GM / WM Gaussian mixture)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from lesionq.core.tissue import TISSUES, TissueModel, estimate_tissues
from lesionq.errors import InputError


def _layers(seed: int = 0):
    """Slabs of CSF / GM / WM along axis 0 (10 / 30 / 60 %), T1-like and FLAIR-like."""
    rng = np.random.default_rng(seed)
    shape = (50, 30, 30)
    label = np.full(shape, 2)
    label[:5] = 0
    label[5:20] = 1
    t1 = np.choose(label, [80.0, 270.0, 360.0]) + rng.normal(0, 10, shape)
    flair = np.choose(label, [30.0, 120.0, 100.0]) + rng.normal(0, 4, shape)
    mask = np.ones(shape, bool)
    return label, t1.astype(np.float32), flair.astype(np.float32), mask


def _accuracy(tm: TissueModel, label: np.ndarray) -> float:
    post = np.stack([tm.csf, tm.gm, tm.wm], axis=-1)
    return float((post.argmax(-1) == label).mean())


def test_t1_mixture_recovers_tissues() -> None:
    label, t1, _, mask = _layers()
    tm = estimate_tissues([t1], mask, primary="t1")
    assert _accuracy(tm, label) > 0.98
    np.testing.assert_allclose(tm.means[:, 0], [80, 270, 360], atol=5)
    np.testing.assert_allclose(tm.csf + tm.gm + tm.wm, 1.0, atol=1e-5)
    assert not tm.used_priors


def test_flair_primary_orders_wm_below_gm() -> None:
    label, _, flair, mask = _layers()
    tm = estimate_tissues([flair], mask, primary="flair")
    assert _accuracy(tm, label) > 0.98
    assert tm.means[1, 0] > tm.means[2, 0]  # GM brighter than WM on FLAIR


def test_two_channels_and_priors() -> None:
    label, t1, flair, mask = _layers()
    priors = {
        name: ndi.gaussian_filter((label == k).astype(np.float32), 2.0)
        for k, name in enumerate(TISSUES)
    }
    tm = estimate_tissues([t1, flair], mask, primary="t1", priors=priors)
    assert tm.used_priors
    assert tm.means.shape == (3, 2)
    assert _accuracy(tm, label) > 0.98
    assert tm.posterior("wm") is tm.wm


def test_outside_mask_is_zero_and_deterministic() -> None:
    label, t1, _, _ = _layers()
    mask = np.zeros(t1.shape, bool)
    mask[:, 2:-2, 2:-2] = True
    a = estimate_tissues([t1], mask)
    b = estimate_tissues([t1.copy()], mask.copy())
    assert not a.wm[~mask].any() and not a.csf[~mask].any()
    assert np.array_equal(a.wm, b.wm) and np.array_equal(a.means, b.means)


def test_invalid_inputs() -> None:
    _, t1, _, mask = _layers()
    with pytest.raises(InputError, match="primary"):
        estimate_tissues([t1], mask, primary="t2")
    with pytest.raises(InputError, match="at least one"):
        estimate_tissues([], mask)
    with pytest.raises(InputError, match="shape"):
        estimate_tissues([t1[:-1]], mask)
    with pytest.raises(InputError, match="missing"):
        estimate_tissues([t1], mask, priors={"wm": np.ones(t1.shape)})
    with pytest.raises(InputError, match=r"\[0, 1\]"):
        estimate_tissues(
            [t1], mask, priors={k: np.full(t1.shape, 2.0, np.float32) for k in TISSUES}
        )
    with pytest.raises(InputError, match="constant"):
        estimate_tissues([np.ones(t1.shape, np.float32)], mask)
    with pytest.raises(InputError, match="1000"):
        small = np.zeros(t1.shape, bool)
        small[:5, :5, :5] = True
        estimate_tissues([t1], small)
