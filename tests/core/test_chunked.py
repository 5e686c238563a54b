"""Chunked (dask) twins must equal their numpy twins exactly, for any chunking."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from scipy import ndimage as ndi

from lesionq.core.chunked import (
    gaussian_filter_chunked,
    gaussian_filter_slabs,
    label_components_chunked,
    label_lesions_chunked,
    median_filter_chunked,
    uniform_filter_chunked,
)
from lesionq.core.components import label_components, label_lesions
from lesionq.errors import ConfigError, InputError

SHAPE = (23, 17, 11)  # odd sizes on purpose
CHUNKS = [
    (1, -1, -1),  # one slice per chunk along axis 0
    (-1, -1, 1),  # one slice per chunk along axis 2
    (5, 4, 3),
    (7, 17, 2),
    (23, 17, 11),  # a single chunk
    (2, 2, 2),
]


@pytest.fixture(scope="module")
def blobs():
    """Blobby mask with components crossing many chunk borders (seeded)."""
    rng = np.random.default_rng(20261125)
    return ndi.gaussian_filter(rng.random(SHAPE), 1.2) > 0.53


@pytest.mark.parametrize("chunks", CHUNKS)
@pytest.mark.parametrize("connectivity", [6, 18, 26])
def test_labels_equal_numpy(blobs, chunks, connectivity):
    ref, n = label_components(blobs, connectivity=connectivity)
    got, m = label_components_chunked(blobs, chunks=chunks, connectivity=connectivity)
    assert m == n and n > 3
    assert got.dtype == np.int32
    np.testing.assert_array_equal(got, ref)


@pytest.mark.parametrize("chunks", [(1, -1, -1), (5, 4, 3), (4, 4, 4)])
def test_lesions_equal_numpy(blobs, chunks):
    vs = (0.9, 1.1, 3.0)
    ref, n = label_lesions(blobs, vs, min_volume_mm3=20.0)
    got, m = label_lesions_chunked(blobs, vs, min_volume_mm3=20.0, chunks=chunks, num_workers=2)
    assert m == n
    np.testing.assert_array_equal(got, ref)
    assert n < label_components(blobs)[1]  # the size rule removed something


def test_corner_only_contact_across_diagonal_chunks():
    m = np.zeros((4, 4, 4), dtype=bool)
    m[1, 1, 1] = m[2, 2, 2] = True  # meet only at a corner shared by 8 chunks
    for conn, n_expect in ((26, 1), (18, 2), (6, 2)):
        lab, n = label_components_chunked(m, chunks=(2, 2, 2), connectivity=conn)
        assert n == n_expect
        np.testing.assert_array_equal(lab, label_components(m, connectivity=conn)[0])


def test_spiral_through_many_chunks():
    m = np.zeros((9, 9, 3), dtype=bool)
    m[0, :, 1] = m[:, 8, 1] = m[8, :, 1] = m[2:, 0, 1] = m[2, :7, 1] = True  # one snake
    m[5, 4, 1] = True  # isolated voxel
    lab, n = label_components_chunked(m, chunks=(2, 3, 1))
    assert n == 2
    np.testing.assert_array_equal(lab, label_components(m)[0])


def test_dask_input_and_empty():
    m = np.zeros((6, 6, 6), dtype=bool)
    lab, n = label_components_chunked(da.from_array(m, chunks=3), chunks=None)
    assert n == 0 and not lab.any()
    m[1:5, 2, 2] = True
    lab, n = label_components_chunked(da.from_array(m.astype(np.uint8), chunks=2), chunks=None)
    assert n == 1 and lab[1:5, 2, 2].tolist() == [1, 1, 1, 1]


@settings(max_examples=40, deadline=None)
@given(
    hnp.arrays(
        bool,
        hnp.array_shapes(min_dims=3, max_dims=3, min_side=1, max_side=9),
        elements=st.booleans(),
    ),
    st.tuples(st.integers(1, 5), st.integers(1, 5), st.integers(1, 5)),
    st.sampled_from([6, 18, 26]),
)
def test_random_masks(mask, chunks, connectivity):
    ref, n = label_components(mask, connectivity=connectivity)
    got, m = label_components_chunked(mask, chunks=chunks, connectivity=connectivity)
    assert m == n
    np.testing.assert_array_equal(got, ref)


def test_labelling_validation():
    with pytest.raises(ConfigError, match="num_workers"):
        label_components_chunked(np.zeros((2, 2, 2), bool), chunks=1, num_workers=0)
    with pytest.raises(ConfigError, match="chunks"):
        label_components_chunked(np.zeros((2, 2, 2), bool), chunks=None)
    with pytest.raises(ConfigError, match="connectivity"):
        label_components_chunked(np.zeros((2, 2, 2), bool), chunks=1, connectivity=4)
    with pytest.raises(InputError, match="only 0 and 1"):
        label_components_chunked(np.full((2, 2, 2), 3, np.uint8), chunks=1)
    with pytest.raises(InputError, match="3-D"):
        label_components_chunked(np.zeros((2, 2), bool), chunks=1)


# ----------------------------------------------------------------------------- filters


@pytest.fixture(scope="module")
def image():
    rng = np.random.default_rng(7)
    return rng.normal(size=SHAPE).astype(np.float32)


@pytest.mark.parametrize("chunks", CHUNKS)
@pytest.mark.parametrize("sigma", [1.0, (0.5, 2.0, 1.3)])
def test_gaussian_equal_scipy(image, chunks, sigma):
    ref = ndi.gaussian_filter(image, sigma)
    got = gaussian_filter_chunked(image, sigma, chunks=chunks, num_workers=2)
    assert got.dtype == ref.dtype
    np.testing.assert_array_equal(got, ref)


@pytest.mark.parametrize("n_slabs", [1, 2, 3, 7, 40])
@pytest.mark.parametrize("sigma", [0.8, (3.0, 1.0, 10.0)])
@pytest.mark.parametrize("mode", ["constant", "reflect"])
def test_gaussian_slabs_equal_scipy(image, n_slabs, sigma, mode):
    """Slabs of 1 line to the whole volume, kernels wider than an axis: bit-identical."""
    ref = ndi.gaussian_filter(image, sigma, mode=mode)
    got = gaussian_filter_slabs(image, sigma, num_workers=2, n_slabs=n_slabs, mode=mode)
    assert got.dtype == ref.dtype
    np.testing.assert_array_equal(got, ref)


def test_gaussian_slabs_reject_bad_arguments(image):
    with pytest.raises(ConfigError):
        gaussian_filter_slabs(image, 1.0, n_slabs=0)
    with pytest.raises(InputError):
        gaussian_filter_slabs(image[0], 1.0)


def test_gaussian_radius_longer_than_axis(image):
    # radius int(4 * 3 + 0.5) = 12 > 11 voxels on axis 2
    ref = ndi.gaussian_filter(image, 3.0, mode="nearest")
    got = gaussian_filter_chunked(image, 3.0, chunks=(5, 4, 3), mode="nearest")
    np.testing.assert_array_equal(got, ref)


@pytest.mark.parametrize("chunks", [(1, -1, -1), (5, 4, 3), (-1, -1, 1)])
@pytest.mark.parametrize("size", [3, (2, 3, 5)])
def test_median_and_uniform_equal_scipy(image, chunks, size):
    np.testing.assert_array_equal(
        median_filter_chunked(image, size, chunks=chunks), ndi.median_filter(image, size=size)
    )
    np.testing.assert_array_equal(
        uniform_filter_chunked(image, size, chunks=chunks), ndi.uniform_filter(image, size=size)
    )


def test_filter_validation(image):
    with pytest.raises(ConfigError, match="sigma_vox"):
        gaussian_filter_chunked(image, -1.0, chunks=4)
    with pytest.raises(ConfigError, match="size"):
        median_filter_chunked(image, 0, chunks=4)
    with pytest.raises(ConfigError, match="size"):
        uniform_filter_chunked(image, 1.5, chunks=4)
