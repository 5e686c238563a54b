"""Region growing on synthetic FLAIR-like volumes (lesionq.core.region_grow)."""

from __future__ import annotations

import numpy as np
import pytest

from lesionq.core.region_grow import grow_region
from lesionq.errors import InputError


def _phantom(seed: int = 0) -> np.ndarray:
    """White matter ~ N(100, 5), a 5x5x3 lesion at 180 and a touching bright line at 160."""
    rng = np.random.default_rng(seed)
    img = 100 + 5 * rng.standard_normal((32, 32, 16))
    img[10:15, 10:15, 6:9] = 180 + rng.standard_normal((5, 5, 3))
    return img.astype(np.float32)


def test_zscore_grows_the_lesion_and_nothing_else() -> None:
    img = _phantom()
    g = grow_region(img, (12, 12, 7), (1.0, 1.0, 3.0), threshold=4.0)
    assert g.n_voxels == 75
    assert g.volume_mm3 == pytest.approx(225.0)
    assert g.bbox == ((10, 15), (10, 15), (6, 9))
    assert 100 < g.lower < 180 and not g.capped
    assert g.mask[10:15, 10:15, 6:9].all() and g.mask.sum() == 75


def test_fraction_mode_and_seed_below_threshold_is_empty() -> None:
    img = _phantom()
    g = grow_region(img, (12, 12, 7), (1.0, 1.0, 1.0), threshold=0.9, mode="fraction")
    assert g.n_voxels == 75
    # a seed in normal white matter against a high z: nothing grows
    g0 = grow_region(img, (25, 25, 3), (1.0, 1.0, 1.0), threshold=4.0)
    assert g0.n_voxels == 0 and g0.volume_mm3 == 0.0 and g0.bbox == ((0, 0),) * 3
    assert not g0.mask.any()


def test_connectivity_6_vs_26() -> None:
    img = np.full((10, 10, 10), 100.0)
    img[4, 4, 4] = img[5, 5, 5] = 200.0  # corner neighbours only
    assert grow_region(img, (4, 4, 4), (1, 1, 1), threshold=0.9, mode="fraction").n_voxels == 1
    g26 = grow_region(img, (4, 4, 4), (1, 1, 1), threshold=0.9, mode="fraction", connectivity=26)
    assert g26.n_voxels == 2


def test_volume_cap_stops_a_leak_near_the_seed() -> None:
    img = np.full((40, 40, 40), 100.0)
    img[:, 20, 20] = 200.0  # a 40-voxel bright line
    g = grow_region(
        img, (20, 20, 20), (1, 1, 1), threshold=0.9, mode="fraction", max_volume_mm3=11.0
    )
    assert g.capped and g.n_voxels == 11
    assert g.bbox == ((15, 26), (20, 21), (20, 21))  # symmetric layers around the seed


def test_radius_limits_the_region() -> None:
    img = np.full((40, 5, 5), 100.0)
    img[:, 2, 2] = 200.0
    g = grow_region(img, (20, 2, 2), (2.0, 1, 1), threshold=0.9, mode="fraction", max_radius_mm=10)
    assert g.bbox[0] == (15, 26)


@pytest.mark.parametrize(
    ("seed", "kw"),
    [
        ((40, 0, 0), {}),
        ((1, 2), {}),
        ((1, 2, 3), {"mode": "otsu"}),
        ((1, 2, 3), {"connectivity": 18}),
        ((1, 2, 3), {"mode": "fraction", "threshold": 1.5}),
        ((1, 2, 3), {"max_volume_mm3": 0.0}),
    ],
)
def test_bad_arguments(seed, kw) -> None:  # noqa: ANN001
    with pytest.raises(InputError):
        grow_region(np.ones((8, 8, 8)), seed, (1, 1, 1), **kw)
