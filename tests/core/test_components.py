"""Tests for lesionq.core.components: canonical labelling, size rule, lesion tables."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from scipy import ndimage as ndi

from lesionq.core.components import (
    LesionTable,
    canonical_order,
    check_mask,
    label_components,
    label_lesions,
    lesion_table,
    relabel_canonical,
    structure_for,
)
from lesionq.errors import ConfigError, InputError


def _mask(shape, *voxels):
    m = np.zeros(shape, dtype=bool)
    for v in voxels:
        m[v] = True
    return m


# ----------------------------------------------------------------------------- numbering


def test_largest_first_then_first_voxel_in_c_order():
    m = np.zeros((6, 6, 6), dtype=bool)
    m[5, 0, 0:3] = True  # size 3, first flat index large
    m[0, 5, 0:3] = True  # size 3, first flat index smaller -> before the one above
    m[2, 2, 1:6] = True  # size 5 -> label 1
    lab, n = label_components(m)
    assert n == 3
    assert lab[2, 2, 1] == 1
    assert lab[0, 5, 0] == 2
    assert lab[5, 0, 0] == 3
    assert lab.dtype == np.int32


def test_canonical_order_ties():
    order = canonical_order(np.array([4, 4, 9, 1]), np.array([30, 10, 50, 0]))
    assert order.tolist() == [2, 1, 0, 3]


@pytest.mark.parametrize(
    ("offset", "joined"),
    [
        ((0, 0, 1), {6: True, 18: True, 26: True}),  # face
        ((0, 1, 1), {6: False, 18: True, 26: True}),  # edge
        ((1, 1, 1), {6: False, 18: False, 26: True}),  # corner
    ],
)
def test_connectivity(offset, joined):
    m = _mask((3, 3, 3), (0, 0, 0), offset)
    for conn, expect in joined.items():
        _, n = label_components(m, connectivity=conn)
        assert n == (1 if expect else 2), conn


def test_relabel_canonical_drops_small_and_keeps_ids_dense():
    lab = np.zeros((1, 1, 9), dtype=np.int64)
    lab[0, 0] = [50, 50, 0, 7, 0, 9, 9, 9, 0]
    out, n = relabel_canonical(lab, min_voxels=2)
    assert n == 2
    assert out[0, 0].tolist() == [2, 2, 0, 0, 0, 1, 1, 1, 0]


def test_empty_mask():
    lab, n = label_components(np.zeros((4, 5, 6), dtype=bool))
    assert n == 0 and lab.shape == (4, 5, 6) and not lab.any()


# ----------------------------------------------------------------------------- size rule


def test_min_volume_is_inclusive():
    m = np.zeros((10, 10, 10), dtype=bool)
    m[1, 1, 1:4] = True  # 3 voxels x 2 mm3 = 6 mm3
    m[5, 5, 1:3] = True  # 2 voxels = 4 mm3
    lab, n = label_lesions(m, (1.0, 1.0, 2.0), min_volume_mm3=6.0)
    assert n == 1
    assert lab[1, 1, 1:4].tolist() == [1, 1, 1]
    assert not lab[5, 5].any()
    _, n = label_lesions(m, (1.0, 1.0, 2.0), min_volume_mm3=6.0001)
    assert n == 0
    _, n = label_lesions(m, (1.0, 1.0, 2.0), min_volume_mm3=0.0)
    assert n == 2


def test_min_volume_anisotropic_voxels():
    # 0.72 x 0.72 x 4 mm = 2.0736 mm3: one voxel < 3 mm3 <= two voxels
    m = _mask((5, 5, 5), (0, 0, 0), (3, 3, 3), (3, 3, 4))
    lab, n = label_lesions(m, (0.72, 0.72, 4.0), min_volume_mm3=3.0)
    assert n == 1 and lab[0, 0, 0] == 0 and lab[3, 3, 3] == 1


def test_label_lesions_matches_scipy_partition():
    rng = np.random.default_rng(3)
    m = ndi.gaussian_filter(rng.random((30, 30, 20)), 1.5) > 0.55
    lab, n = label_lesions(m, (1.0, 1.0, 1.0), min_volume_mm3=1.0, connectivity=18)
    ref, nref = ndi.label(m, structure=ndi.generate_binary_structure(3, 2))
    assert n == nref
    pairs = set(zip(lab[m].tolist(), ref[m].tolist(), strict=True))
    assert len(pairs) == n  # same partition
    sizes = np.bincount(lab.ravel())[1:]
    assert np.all(np.diff(sizes) <= 0)


@settings(max_examples=60, deadline=None)
@given(
    hnp.arrays(bool, hnp.array_shapes(min_dims=3, max_dims=3, min_side=1, max_side=7)),
    st.sampled_from([6, 18, 26]),
)
def test_canonical_invariants(mask, conn):
    lab, n = label_components(mask, connectivity=conn)
    assert (lab > 0).sum() == mask.sum()
    if n == 0:
        return
    sizes = np.bincount(lab.ravel(), minlength=n + 1)[1:]
    firsts = np.array([np.flatnonzero(lab.ravel() == i + 1)[0] for i in range(n)])
    key = list(zip((-sizes).tolist(), firsts.tolist(), strict=True))
    assert key == sorted(key)
    ref, nref = ndi.label(mask, structure=structure_for(conn))
    assert nref == n


# ----------------------------------------------------------------------------- validation


def test_check_mask_rejects_non_binary_and_non_3d():
    with pytest.raises(InputError, match="only 0 and 1"):
        check_mask(np.full((2, 2, 2), 2, dtype=np.uint8))
    with pytest.raises(InputError, match="3-D"):
        check_mask(np.zeros((2, 2), dtype=bool))
    assert check_mask(np.ones((1, 1, 2), dtype=np.float32)).dtype == bool


def test_bad_parameters():
    m = np.zeros((2, 2, 2), dtype=bool)
    with pytest.raises(ConfigError, match="connectivity"):
        label_components(m, connectivity=8)
    with pytest.raises(ConfigError, match="min_volume_mm3"):
        label_lesions(m, (1.0, 1.0, 1.0), min_volume_mm3=-1.0)
    with pytest.raises(ConfigError, match="voxel_size_mm"):
        label_lesions(m, (1.0, 0.0, 1.0), min_volume_mm3=1.0)


# ----------------------------------------------------------------------------- tables


def test_lesion_table_geometry():
    lab = np.zeros((10, 10, 10), dtype=np.int32)
    lab[2:4, 5, 5] = 1  # 2 voxels, centroid (2.5, 5, 5)
    lab[7, 1:4, 8] = 2  # 3 voxels, centroid (7, 2, 8)
    aff = np.array(
        [[0.0, -2.0, 0.0, 10.0], [1.5, 0.0, 0.0, -5.0], [0.0, 0.0, 3.0, 1.0], [0, 0, 0, 1]]
    )  # permuted axes, voxel sizes (1.5, 2, 3)
    t = lesion_table(lab, aff)
    assert isinstance(t, LesionTable) and len(t) == 2
    assert t.voxel_size_mm == (1.5, 2.0, 3.0)
    assert t.lesion_id.tolist() == [1, 2]
    assert t.n_voxels.tolist() == [2, 3]
    np.testing.assert_allclose(t.volume_mm3, [18.0, 27.0])
    np.testing.assert_allclose(t.centroid_vox[0], [2.5, 5.0, 5.0])
    np.testing.assert_allclose(t.centroid_ras_mm[0], [10.0 - 10.0, 1.5 * 2.5 - 5.0, 16.0])
    np.testing.assert_allclose(t.centroid_ras_mm[1], [10.0 - 4.0, 1.5 * 7 - 5.0, 25.0])
    assert t.bbox_min_vox[1].tolist() == [7, 1, 8]
    assert t.bbox_max_vox[1].tolist() == [7, 3, 8]  # inclusive
    assert t.total_volume_mm3 == pytest.approx(45.0)
    assert not t.volume_mm3.flags.writeable


def test_lesion_table_location_intensity_and_columns():
    lab = np.zeros((5, 5, 5), dtype=np.int32)
    lab[0, 0, 0:2] = 1
    lab[4, 4, 4] = 2
    img = np.arange(125, dtype=np.float32).reshape(5, 5, 5)
    t = lesion_table(
        lab, np.eye(4), location={1: "periventricular", 2: "juxtacortical"}, intensity=img
    )
    assert t.location == ("periventricular", "juxtacortical")
    np.testing.assert_allclose(t.mean_intensity, [0.5, 124.0])
    np.testing.assert_allclose(t.max_intensity, [1.0, 124.0])
    cols = t.columns()
    assert list(cols)[:6] == [
        "lesion_id",
        "n_voxels",
        "volume_mm3",
        "centroid_x_mm",
        "centroid_y_mm",
        "centroid_z_mm",
    ]
    assert {"location", "mean_intensity", "bbox_k_max"} <= set(cols)
    assert all(len(v) == 2 for v in cols.values())
    rows = t.rows()
    assert rows[1]["lesion_id"] == 2 and rows[1]["location"] == "juxtacortical"
    assert isinstance(rows[0]["volume_mm3"], float)


def test_lesion_table_errors_and_empty():
    lab = np.zeros((3, 3, 3), dtype=np.int32)
    lab[1, 1, 1] = 1
    with pytest.raises(InputError, match=r"lesion ids \[1\]"):
        lesion_table(lab, np.eye(4), location={})
    with pytest.raises(InputError, match="integer"):
        lesion_table(lab.astype(float), np.eye(4))
    with pytest.raises(InputError, match="intensity"):
        lesion_table(lab, np.eye(4), intensity=np.zeros((2, 2, 2)))
    t = lesion_table(np.zeros((3, 3, 3), dtype=np.int32), np.eye(4))
    assert len(t) == 0 and t.centroid_ras_mm.shape == (0, 3) and t.total_volume_mm3 == 0.0
