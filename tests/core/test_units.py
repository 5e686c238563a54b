"""The voxel <-> mm3 conversions (inclusive minimum-size rule)."""

from __future__ import annotations

import numpy as np
import pytest

from lesionq.core.units import (
    min_voxels_for_mm3,
    voxel_size_from_affine,
    voxel_volume_mm3,
    voxels_to_mm3,
)


def test_inclusive_threshold_at_exact_multiple():
    # 3 voxels of exactly 1 mm3 satisfy a 3 mm3 rule; 2 do not
    assert min_voxels_for_mm3(3.0, (1, 1, 1)) == 3
    # 0.1 mm voxels: floating point must not push 3.0 mm3 to 3001 voxels
    assert min_voxels_for_mm3(3.0, (0.1, 0.1, 0.1)) == 3000


def test_anisotropic_and_zero():
    assert min_voxels_for_mm3(3.0, (0.72, 0.72, 4.0)) == 2  # 2 * 2.07 mm3 >= 3
    assert min_voxels_for_mm3(0.0, (1, 1, 1)) == 1


@pytest.mark.parametrize("bad", [(0, 1, 1), (1, 1), (1, -1, 1), (np.nan, 1, 1)])
def test_bad_voxel_sizes(bad):
    with pytest.raises(ValueError):
        voxel_volume_mm3(bad)


def test_conversions_agree():
    vs = (0.5, 0.8, 3.0)
    assert voxels_to_mm3(10, vs) == pytest.approx(12.0)
    aff = np.diag([*vs, 1.0])
    aff[:3, :3] = aff[:3, :3] @ np.array([[0, 1, 0], [-1, 0, 0], [0, 0, 1]])  # rotated
    # column norms of diag(vs) @ R: axis 0 now runs along world y (0.8 mm)
    assert voxel_size_from_affine(aff) == pytest.approx((0.8, 0.5, 3.0))
    assert voxel_volume_mm3(voxel_size_from_affine(aff)) == pytest.approx(1.2)
