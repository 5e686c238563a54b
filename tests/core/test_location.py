"""Tests for lesionq.core.location on small synthetic volumes."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import ndimage as ndi

from lesionq.core.location import (
    CORTEX,
    DEEP_GREY_MATTER,
    INFRATENTORIAL,
    LOCATION_CLASSES,
    VENTRICLES,
    classify_locations,
    location_measures,
)
from lesionq.errors import ConfigError, GeometryError, InputError

ISO = (1.0, 1.0, 1.0)


@pytest.fixture
def loc_map():
    """40^3 map: ventricle block in the middle, cortex shell outside, infratentorial slab low."""
    loc = np.zeros((40, 40, 40), dtype=np.uint8)
    loc[:3, :, :] = CORTEX
    loc[-3:, :, :] = CORTEX
    loc[17:23, 17:23, 15:25] = VENTRICLES
    loc[:, :, :5] = INFRATENTORIAL
    loc[25:28, 5:8, 30:33] = DEEP_GREY_MATTER
    return loc


def _lab(shape, *lesions):
    lab = np.zeros(shape, dtype=np.int32)
    for i, sl in enumerate(lesions, start=1):
        lab[sl] = i
    return lab


def test_each_class_and_priority(loc_map):
    lab = _lab(
        loc_map.shape,
        np.s_[23, 19, 18:21],  # touches the ventricle block (face) -> periventricular
        np.s_[25, 19, 20],  # 3 mm from ventricle (x=22 -> 25) -> periventricular at D=3
        np.s_[26, 19, 20],  # 4 mm -> deep white matter
        np.s_[5, 30, 20],  # 3 mm from cortex (x=2 -> 5) -> juxtacortical
        np.s_[20, 30, 1:4],  # inside infratentorial slab and touching nothing else
        np.s_[20, 19, 3:7],  # 2 of 4 voxels infratentorial (0.5) -> infratentorial
        np.s_[26, 6, 31],  # inside deep grey matter -> deep_white_matter class
    )
    got = classify_locations(lab, loc_map, ISO)
    assert got == {
        1: "periventricular",
        2: "periventricular",
        3: "deep_white_matter",
        4: "juxtacortical",
        5: "infratentorial",
        6: "infratentorial",
        7: "deep_white_matter",
    }
    assert set(got.values()) <= set(LOCATION_CLASSES)


def test_periventricular_beats_juxtacortical():
    loc = np.zeros((12, 3, 3), dtype=np.uint8)
    loc[0] = VENTRICLES
    loc[4] = CORTEX
    lab = _lab(loc.shape, np.s_[2, 1, 1])
    assert classify_locations(lab, loc, ISO) == {1: "periventricular"}


def test_infratentorial_fraction_threshold_inclusive(loc_map):
    lab = _lab(loc_map.shape, np.s_[30, 30, 3:7])  # 2 of 4 voxels in the slab
    assert classify_locations(lab, loc_map, ISO)[1] == "infratentorial"
    got = classify_locations(lab, loc_map, ISO, infratentorial_min_fraction=0.6)
    assert got[1] == "deep_white_matter"


def test_distance_thresholds_are_parameters(loc_map):
    lab = _lab(loc_map.shape, np.s_[25, 19, 20])  # 3 mm from the ventricles
    assert classify_locations(lab, loc_map, ISO, periventricular_distance_mm=2.9)[1] == (
        "deep_white_matter"
    )
    assert classify_locations(lab, loc_map, ISO, periventricular_distance_mm=3.0)[1] == (
        "periventricular"
    )


def test_touching_counts_with_thick_slices():
    # 1 x 1 x 4 mm voxels: the slice above the ventricle is 4 mm away centre to centre
    loc = np.zeros((5, 5, 6), dtype=np.uint8)
    loc[:, :, 0] = VENTRICLES
    lab = _lab(loc.shape, np.s_[2, 2, 1], np.s_[2, 2, 2])
    got = classify_locations(lab, loc, (1.0, 1.0, 4.0), periventricular_distance_mm=3.0)
    assert got == {1: "periventricular", 2: "deep_white_matter"}
    m = location_measures(lab, loc, (1.0, 1.0, 4.0), max_distance_mm=10.0)
    assert m[1].touches_ventricles and m[1].ventricle_distance_mm == pytest.approx(4.0)
    assert not m[2].touches_ventricles and m[2].ventricle_distance_mm == pytest.approx(8.0)


def test_diagonal_touch_counts():
    loc = np.zeros((6, 6, 6), dtype=np.uint8)
    loc[2, 2, 2] = CORTEX
    lab = _lab(loc.shape, np.s_[3, 3, 3])  # corner contact, sqrt(3) * 2 mm apart
    got = classify_locations(lab, loc, (2.0, 2.0, 2.0), juxtacortical_distance_mm=1.0)
    assert got == {1: "juxtacortical"}


def test_no_regions_and_no_lesions():
    loc = np.zeros((8, 8, 8), dtype=np.uint8)
    lab = _lab(loc.shape, np.s_[4, 4, 4])
    assert classify_locations(lab, loc, ISO) == {1: "deep_white_matter"}
    m = location_measures(lab, loc, ISO, max_distance_mm=3.0)[1]
    assert m.ventricle_distance_mm == np.inf and m.infratentorial_fraction == 0.0
    assert classify_locations(np.zeros_like(lab), loc, ISO) == {}


@settings(max_examples=25, deadline=None)
@given(
    st.integers(0, 2**31 - 1),
    st.floats(0.5, 6.0),
    st.sampled_from([(1.0, 1.0, 1.0), (0.7, 0.7, 3.0), (2.0, 1.0, 1.5)]),
)
def test_cropped_distances_match_full_volume(seed, dmax, vs):
    rng = np.random.default_rng(seed)
    shape = (18, 16, 12)
    loc = np.where(rng.random(shape) < 0.02, VENTRICLES, 0).astype(np.uint8)
    loc[rng.random(shape) < 0.02] = CORTEX
    lab, n = ndi.label(rng.random(shape) < 0.01)
    if n == 0:
        return
    got = location_measures(lab, loc, vs, max_distance_mm=dmax)
    for value, key in ((VENTRICLES, "ventricle_distance_mm"), (CORTEX, "cortex_distance_mm")):
        region = loc == value
        full = (
            ndi.distance_transform_edt(~region, sampling=vs)
            if region.any()
            else np.full(shape, np.inf)
        )
        for lid in range(1, n + 1):
            ref = float(full[lab == lid].min())
            d = getattr(got[lid], key)
            if ref <= dmax:
                assert d == pytest.approx(ref)
            else:
                assert d > dmax


def test_validation(loc_map):
    lab = np.zeros(loc_map.shape, dtype=np.int32)
    with pytest.raises(GeometryError, match="resample"):
        classify_locations(lab, loc_map[:-1], ISO)
    with pytest.raises(InputError, match="integer label map"):
        classify_locations(lab, loc_map.astype(np.float32), ISO)
    with pytest.raises(InputError, match="integer label image"):
        classify_locations(lab.astype(float), loc_map, ISO)
    with pytest.raises(InputError, match="voxel_size_mm"):
        classify_locations(lab, loc_map, (1.0, 1.0))
    with pytest.raises(InputError, match="negative"):
        classify_locations(lab - 1, loc_map, ISO)
    with pytest.raises(ConfigError, match="periventricular_distance_mm"):
        classify_locations(lab, loc_map, ISO, periventricular_distance_mm=-1.0)
    with pytest.raises(ConfigError, match="infratentorial_min_fraction"):
        classify_locations(lab, loc_map, ISO, infratentorial_min_fraction=0.0)
