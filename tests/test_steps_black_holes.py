"""The in-memory black-hole step (lesionq.steps.black_holes) and its protocol section."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from lesionq.config import load_protocol
from lesionq.errors import ConfigError, GeometryError
from lesionq.steps import validate_settings
from lesionq.steps.black_holes import (
    BH_LABEL,
    BH_SET_BY_STEP,
    BH_TABLE_COLUMNS,
    check_black_holes_section,
    segment_black_hole_volumes,
)
from lesionq.types import Volume

AFFINE = np.diag([1.0, 1.0, 2.0, 1.0])
AFFINE[:3, 3] = (-10.0, 5.0, 0.0)
LESIONS = {"min_volume_mm3": 3.0, "connectivity": 26}


@pytest.fixture(scope="module")
def visit() -> dict[str, Volume]:
    shape = (48, 40, 40)
    rng = np.random.default_rng(0)
    brain = np.zeros(shape, np.uint8)
    brain[2:-2, 2:-2, 2:-2] = 1
    t1 = np.where(brain > 0, 100.0, 0.0)
    t1[2:8] = np.where(brain[2:8] > 0, 20.0, 0.0)  # CSF
    t1[8:14] = np.where(brain[8:14] > 0, 60.0, 0.0)  # grey matter
    t1 = (t1 + rng.normal(0, 1.0, shape) * brain).astype(np.float32)
    t2 = np.zeros(shape, np.int32)
    t2[20:34, 12:28, 12:28] = 1
    t2[38:44, 30:36, 30:36] = 2
    t1[23:29, 15:22, 16:21] = 40.0  # 210 voxels at c = 0.75 in T2 lesion 1
    enh = np.zeros(shape, np.uint8)
    enh[23:26, 15:22, 16:21] = 1  # 105 of them enhance
    return {
        "t1": Volume(t1, AFFINE, "T1w"),
        "t2": Volume(t2, AFFINE, "labels"),
        "brain": Volume(brain, AFFINE, "mask"),
        "enh": Volume(enh, AFFINE, "mask"),
    }


def test_table_mask_and_ids(visit) -> None:
    t2_table = pd.DataFrame(
        {"lesion_id": [1, 2], "label": ["T2", "T2"], "location": ["periventricular", "juxta"]}
    )
    res = segment_black_hole_volumes(
        visit["t1"], visit["t2"], visit["brain"], t2_table=t2_table,
        black_holes={}, lesions=LESIONS,
    )  # fmt: skip
    assert list(res.table.columns) == list(BH_TABLE_COLUMNS)
    assert res.count == 1 and res.volume_mm3 == pytest.approx(210 * 2.0)
    row = res.table.iloc[0]
    assert row["label"] == BH_LABEL == "T1hypo"
    assert (row["lesion_id"], row["t2_lesion_id"], row["location"]) == (1, 1, "periventricular")
    assert row["t1_contrast_mean"] == pytest.approx(0.75, abs=0.02)
    assert row["t1_reference"] == "local"
    # centroid in world RAS mm through the affine
    ijk = np.argwhere(np.asarray(res.labels.array) == 1).mean(axis=0)
    assert row["centroid_z_mm"] == pytest.approx(2.0 * ijk[2], abs=0.01)
    assert row["centroid_x_mm"] == pytest.approx(ijk[0] - 10.0, abs=0.01)
    assert res.mask.array.dtype == np.uint8 and res.labels.array.dtype == np.int32
    np.testing.assert_array_equal(res.mask.array > 0, res.labels.array > 0)
    assert res.levels["gm_fraction"] == pytest.approx(0.5, abs=0.02)


def test_enhancing_part_is_left_out(visit) -> None:
    res = segment_black_hole_volumes(
        visit["t1"], visit["t2"], visit["brain"], enhancing=visit["enh"],
        black_holes={}, lesions=LESIONS,
    )  # fmt: skip
    assert res.volume_mm3 == pytest.approx(105 * 2.0)
    assert res.levels["excluded_enhancing_mm3"] == pytest.approx(105 * 2.0)
    assert not (np.asarray(res.mask.array) & np.asarray(visit["enh"].array)).any()


def test_reruns_are_bit_identical(visit) -> None:
    a = segment_black_hole_volumes(
        visit["t1"], visit["t2"], visit["brain"], black_holes={}, lesions=LESIONS
    )
    b = segment_black_hole_volumes(
        visit["t1"], visit["t2"], visit["brain"], black_holes={}, lesions=LESIONS
    )
    np.testing.assert_array_equal(a.labels.array, b.labels.array)
    pd.testing.assert_frame_equal(a.table, b.table)


def test_off_grid_input_is_refused(visit) -> None:
    shifted = Volume(visit["t1"].array, AFFINE + _shift(1.0), "T1w")
    with pytest.raises(GeometryError, match="t1"):
        segment_black_hole_volumes(
            shifted, visit["t2"], visit["brain"], black_holes={}, lesions=LESIONS
        )


def _shift(mm: float) -> np.ndarray:
    out = np.zeros((4, 4))
    out[0, 3] = mm
    return out


def test_section_keys_are_checked() -> None:
    assert check_black_holes_section({"hypo_fraction": 0.3}) == {"hypo_fraction": 0.3}
    with pytest.raises(ConfigError, match="not a parameter"):
        check_black_holes_section({"hypo_fractoin": 0.3})
    for key in BH_SET_BY_STEP:
        with pytest.raises(ConfigError, match="set by the black-hole step"):
            check_black_holes_section({key: 1})


def test_protocol_validation_covers_the_new_keys() -> None:
    s = load_protocol("mesems_testing")
    validate_settings(s)
    assert s.section("gd")["confident_min"] == 0.5
    validate_settings(s.with_overrides({"black_holes.hypo_fraction": 0.4}))
    bad = s.with_overrides({"gd.confident_min": 1.5})
    with pytest.raises(ConfigError, match="confident_min"):
        validate_settings(bad)
    data = s.dump()
    data["black_holes"]["connectivity"] = 6
    from lesionq.config import Settings, _freeze

    with pytest.raises(ConfigError, match="connectivity"):
        validate_settings(Settings(s.name, s.source, _freeze(data)))
