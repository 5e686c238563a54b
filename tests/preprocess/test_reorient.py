"""Internal RAS reorientation: exact, invertible, world-preserving."""

from __future__ import annotations

import numpy as np
import pytest

from lesionq.errors import GeometryError, InputError
from lesionq.preprocess.reorient import axcodes, from_closest_ras, to_closest_ras


def _affine(perm, flips, zooms=(0.7, 0.9, 4.0), origin=(10.0, -20.0, 30.0)) -> np.ndarray:
    a = np.zeros((4, 4))
    for col, (row, flip, zoom) in enumerate(zip(perm, flips, zooms, strict=True)):
        a[row, col] = flip * zoom
    a[:3, 3] = origin
    a[3, 3] = 1.0
    return a


CASES = [
    ((0, 1, 2), (1, 1, 1)),  # RAS
    ((0, 1, 2), (-1, -1, 1)),  # LPS
    ((0, 1, 2), (-1, 1, 1)),  # LAS
    ((2, 0, 1), (1, -1, 1)),  # permuted
    ((1, 2, 0), (-1, 1, -1)),
]


@pytest.mark.parametrize(("perm", "flips"), CASES)
def test_round_trip_and_world_positions(perm, flips) -> None:
    aff = _affine(perm, flips)
    arr = np.arange(5 * 6 * 7, dtype=np.float32).reshape(5, 6, 7)
    ras, aff_ras, ornt = to_closest_ras(arr, aff)
    assert axcodes(aff_ras) == ("R", "A", "S")
    np.testing.assert_array_equal(from_closest_ras(ras, ornt), arr)
    # each voxel keeps its world position
    for ijk in [(0, 0, 0), (4, 5, 6), (1, 2, 3)]:
        value = arr[ijk]
        world = aff @ np.r_[ijk, 1.0]
        ijk_ras = np.argwhere(ras == value)[0]
        np.testing.assert_allclose(aff_ras @ np.r_[ijk_ras, 1.0], world, atol=1e-9)


def test_oblique_affine_goes_to_closest_axes() -> None:
    c, s = np.cos(0.2), np.sin(0.2)
    aff = np.array([[0, 0, 1.0, 0], [-c, s, 0, 0], [s, c, 0, 0], [0, 0, 0, 1.0]])
    arr = np.random.default_rng(0).normal(size=(3, 4, 5))
    ras, aff_ras, ornt = to_closest_ras(arr, aff)
    assert axcodes(aff_ras) == ("R", "A", "S")
    assert ras.shape == (5, 3, 4)
    np.testing.assert_array_equal(from_closest_ras(ras, ornt), arr)


def test_errors() -> None:
    with pytest.raises(InputError):
        to_closest_ras(np.zeros((2, 2)), np.eye(4))
    with pytest.raises(GeometryError):
        to_closest_ras(np.zeros((2, 2, 2)), np.eye(3))
