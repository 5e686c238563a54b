"""Tests of lesionq.core.normalise (robust intensity normalisation)."""

from __future__ import annotations

import numpy as np
import pytest

from lesionq.core.normalise import (
    NormalisationResult,
    histogram_peak,
    normalise_intensity,
    robust_location_scale,
)
from lesionq.errors import InputError


def _two_tissue_image(
    seed: int = 0, outlier_fraction: float = 0.0
) -> tuple[np.ndarray, np.ndarray]:
    """40 % 'GM' at 270 +- 12, 60 % 'WM' at 360 +- 8 (a T1-like histogram), in a cube mask."""
    rng = np.random.default_rng(seed)
    shape = (40, 40, 30)
    n = int(np.prod(shape))
    is_wm = rng.random(n) < 0.6
    vals = np.where(is_wm, rng.normal(360, 8, n), rng.normal(270, 12, n))
    if outlier_fraction:
        k = int(outlier_fraction * n)
        vals[rng.choice(n, k, replace=False)] = rng.uniform(500, 900, k)  # e.g. vessels
    img = vals.reshape(shape).astype(np.float32)
    mask = np.zeros(shape, bool)
    mask[2:-2, 2:-2, 2:-2] = True
    img[~mask] = 0.0
    return img, mask


def test_robust_location_scale_gaussian() -> None:
    rng = np.random.default_rng(1)
    med, sd = robust_location_scale(rng.normal(5.0, 2.0, 200_000))
    assert med == pytest.approx(5.0, abs=0.02)
    assert sd == pytest.approx(2.0, rel=0.02)


def test_robust_location_scale_ignores_outliers_and_nan() -> None:
    v = np.array([1.0, 2.0, 3.0, 4.0, 100.0, np.nan])
    med, sd = robust_location_scale(v)
    assert med == 3.0
    assert sd == pytest.approx(1.4826)
    with pytest.raises(InputError):
        robust_location_scale(np.array([np.nan]))


def test_rightmost_peak_is_the_white_matter_peak() -> None:
    img, mask = _two_tissue_image()
    res = normalise_intensity(img, mask, method="peak", peak="rightmost")
    assert isinstance(res, NormalisationResult)
    assert res.reference == pytest.approx(360.0, abs=3.0)
    assert res.scale == pytest.approx(8.0, rel=0.25)
    assert res.relative_scale == pytest.approx(res.scale / res.reference)
    wm_like = img[mask] > 330
    assert np.median(res.image[mask][wm_like]) == pytest.approx(1.0, abs=0.01)
    assert res.image.dtype == np.float32 and not res.image[~mask].any()


def test_highest_peak() -> None:
    img, mask = _two_tissue_image()
    # the narrower, larger WM population makes the tallest peak here as well
    assert normalise_intensity(img, mask).reference == pytest.approx(360.0, abs=3.0)


def test_peak_is_robust_to_bright_outliers() -> None:
    clean = normalise_intensity(*_two_tissue_image(), peak="rightmost").reference
    dirty = normalise_intensity(
        *_two_tissue_image(outlier_fraction=0.05), peak="rightmost"
    ).reference
    assert dirty == pytest.approx(clean, abs=4.0)


def test_scale_invariance() -> None:
    img, mask = _two_tissue_image()
    a = normalise_intensity(img, mask, peak="rightmost")
    b = normalise_intensity(img * 3.0, mask, peak="rightmost")
    assert b.reference == pytest.approx(3.0 * a.reference, rel=1e-3)
    np.testing.assert_allclose(a.image, b.image, rtol=1e-3, atol=1e-3)


def test_percentile_method() -> None:
    img, mask = _two_tissue_image()
    res = normalise_intensity(img, mask, method="percentile", percentile=50.0)
    assert res.reference == pytest.approx(float(np.median(img[mask])), rel=1e-6)
    assert res.method == "percentile"


def test_histogram_peak_bimodal_choices() -> None:
    rng = np.random.default_rng(3)
    v = np.concatenate([rng.normal(100, 5, 70_000), rng.normal(200, 5, 30_000)])
    assert histogram_peak(v, peak="highest")[0] == pytest.approx(100, abs=2)
    assert histogram_peak(v, peak="rightmost", min_height=0.3)[0] == pytest.approx(200, abs=2)
    # a right-hand peak lower than min_height x the tallest is ignored
    assert histogram_peak(v, peak="rightmost", min_height=0.6)[0] == pytest.approx(100, abs=2)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(method="zscore"), "method"),
        (dict(peak="leftmost"), "peak"),
        (dict(method="percentile", percentile=100.0), "percentile"),
    ],
)
def test_invalid_parameters(kwargs: dict, match: str) -> None:
    img, mask = _two_tissue_image()
    with pytest.raises(InputError, match=match):
        normalise_intensity(img, mask, **kwargs)


def test_invalid_inputs() -> None:
    img, mask = _two_tissue_image()
    with pytest.raises(InputError, match="empty"):
        normalise_intensity(img, np.zeros_like(mask))
    with pytest.raises(InputError, match="bool"):
        normalise_intensity(img, mask.astype(np.uint8))
    with pytest.raises(InputError, match="shape"):
        normalise_intensity(img, mask[:-1])
    with pytest.raises(InputError, match="3-D"):
        normalise_intensity(img[0], mask[0])
    with pytest.raises(InputError, match="constant"):
        normalise_intensity(np.full(img.shape, 5.0, np.float32), mask)
    bad = img.copy()
    bad[5, 5, 5] = np.inf
    with pytest.raises(InputError, match="NaN or infinite"):
        normalise_intensity(bad, mask)
    with pytest.raises(InputError, match="> 0"):
        normalise_intensity(-img, mask, method="percentile")
