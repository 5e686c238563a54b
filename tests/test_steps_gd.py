"""Tests of lesionq.steps.gd.segment_gd_volumes (the in-memory Gd+ step of a visit).

The phantom is the one of ``tests/core/test_enhancement.py`` (loaded by path),
wrapped in :class:`~lesionq.types.Volume` objects with a RAS affine.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from lesionq.errors import ConfigError, GeometryError
from lesionq.steps.gd import (
    GD_DETAIL_COLUMNS,
    GD_STEP_KEYS,
    GD_TABLE_COLUMNS,
    GdResult,
    segment_gd_volumes,
)
from lesionq.types import Volume

_spec = importlib.util.spec_from_file_location(
    "gd_phantom", Path(__file__).parent / "core" / "test_enhancement.py"
)
_mod = importlib.util.module_from_spec(_spec)  # type: ignore[arg-type]
sys.modules["gd_phantom"] = _mod  # dataclasses look their module up
_spec.loader.exec_module(_mod)  # type: ignore[union-attr]

AFFINE = np.array(
    [[-1.0, 0.0, 0.0, 31.5], [0.0, 1.0, 0.0, -31.5], [0.0, 0.0, 1.0, -27.5], [0, 0, 0, 1]]
)


@pytest.fixture(scope="module")
def vols() -> dict[str, object]:
    ph = _mod.make_phantom()
    priors = {k: Volume(v, AFFINE, k) for k, v in ph.priors.items()}
    priors["location"] = Volume(ph.location.astype(np.uint8), AFFINE, "location")
    return {
        "ph": ph,
        "t1ce": Volume(ph.post, AFFINE, "T1w-ce"),
        "t1": Volume(ph.pre, AFFINE, "T1w"),
        "flair": Volume(ph.flair, AFFINE, "FLAIR"),
        "brain": Volume(ph.brain.astype(np.uint8), AFFINE, "mask"),
        "priors": priors,
    }


@pytest.fixture(scope="module")
def result(vols) -> GdResult:
    return segment_gd_volumes(
        vols["t1ce"],
        vols["flair"],
        vols["brain"],
        t1=vols["t1"],
        priors=vols["priors"],
        gd={"strong_z": 9.0},
        min_volume_mm3=3.0,
    )


def test_outputs_on_flair_grid_and_table(vols, result: GdResult) -> None:
    ph = vols["ph"]
    for v in (result.mask, result.labels, result.enhancement):
        assert v.same_grid(vols["flair"])
    assert result.mask.array.dtype == np.uint8 and result.labels.array.dtype == np.int32
    assert result.inputs == "post+pre"
    t = result.table
    assert tuple(t.columns) == GD_TABLE_COLUMNS
    assert tuple(result.details.columns) == GD_DETAIL_COLUMNS
    assert len(t) == result.count == 2
    assert (t["label"] == "Gd").all() and (t["inputs"] == "post+pre").all()
    assert t["lesion_id"].tolist() == [1, 2]
    assert t["ring"].dtype == bool and t["ring"].sum() == 1
    assert (t["location"] == "deep_white_matter").all()
    assert result.volume_mm3 == pytest.approx(float(t["volume_mm3"].sum()))
    # centroids in world mm through the affine: the ring lesion is at array
    # offset RING_C from the centre, the x axis flipped by the affine
    ring = t[t["ring"]].iloc[0]
    assert ring["centroid_x_mm"] == pytest.approx(-_mod.RING_C[0], abs=1.0)
    assert ring["centroid_y_mm"] == pytest.approx(_mod.RING_C[1], abs=1.0)
    assert ring["centroid_z_mm"] == pytest.approx(_mod.RING_C[2], abs=1.0)
    # labels and table agree
    for _, row in t.iterrows():
        assert int((result.labels.array == row["lesion_id"]).sum()) == row["n_voxels"]
    assert not result.mask.array[ph.structures["vessel"]].any()
    assert isinstance(result.candidates, pd.DataFrame) and "reason" in result.candidates


def test_without_t1_and_without_atlas(vols) -> None:
    res = segment_gd_volumes(
        vols["t1ce"],
        vols["flair"],
        vols["brain"],
        t1=None,
        priors=None,
        gd={},
        min_volume_mm3=3.0,
    )
    assert res.inputs == "post+flair"
    assert (res.table["inputs"] == "post+flair").all()
    assert (res.table["location"] == "n/a").all()
    assert res.mask.array[vols["ph"].structures["nodular"]].any()


def test_empty_table_has_columns(vols) -> None:
    res = segment_gd_volumes(
        vols["t1ce"],
        vols["flair"],
        vols["brain"],
        t1=vols["t1"],
        priors=vols["priors"],
        gd={"seed_z": 1e6, "strong_z": 1e6},
        min_volume_mm3=3.0,
    )
    assert res.count == 0 and res.volume_mm3 == 0.0
    assert tuple(res.table.columns) == GD_TABLE_COLUMNS and len(res.table) == 0
    assert not res.mask.array.any()


def test_bad_grid_and_bad_section(vols) -> None:
    shifted = Volume(vols["t1ce"].array, AFFINE + np.diag([0, 0, 0, 0]) + _shift(2.0), "ce")
    with pytest.raises(GeometryError, match="t1ce"):
        segment_gd_volumes(
            shifted, vols["flair"], vols["brain"], t1=None, priors=None, gd={}, min_volume_mm3=3
        )
    small = Volume(vols["t1"].array[:-1], AFFINE, "T1w")
    with pytest.raises(GeometryError, match="pre-contrast"):
        segment_gd_volumes(
            vols["t1ce"], vols["flair"], vols["brain"], t1=small, priors=None, gd={},
            min_volume_mm3=3,
        )  # fmt: skip
    with pytest.raises(ConfigError, match="not a parameter"):
        segment_gd_volumes(
            vols["t1ce"], vols["flair"], vols["brain"], t1=None, priors=None,
            gd={"seed_zz": 4.0}, min_volume_mm3=3,
        )  # fmt: skip
    with pytest.raises(ConfigError, match="lesions"):
        segment_gd_volumes(
            vols["t1ce"], vols["flair"], vols["brain"], t1=None, priors=None,
            gd={"min_volume_mm3": 5.0}, min_volume_mm3=3,
        )  # fmt: skip


def _shift(mm: float) -> np.ndarray:
    out = np.zeros((4, 4))
    out[0, 3] = mm
    return out


def test_protocol_gd_section_matches_the_function(repo_root: Path, vols, result) -> None:
    """The shipped protocols' [gd]: every key a parameter, values the defaults."""
    import inspect
    import tomllib

    from lesionq.core.enhancement import segment_enhancing

    gd = tomllib.loads((repo_root / "pipelines" / "mesems_v1.toml").read_text())["gd"]
    testing = tomllib.loads((repo_root / "pipelines" / "mesems_testing.toml").read_text())["gd"]
    assert testing == gd
    params = inspect.signature(segment_enhancing).parameters
    for key, value in gd.items():
        if key in GD_STEP_KEYS:  # handled by the step (confident_min)
            assert GD_STEP_KEYS[key] == value, key
            continue
        assert key in params, key
        assert params[key].default == value, key
    res = segment_gd_volumes(
        vols["t1ce"], vols["flair"], vols["brain"], t1=vols["t1"], priors=vols["priors"],
        gd=gd, min_volume_mm3=3.0,
    )  # fmt: skip
    assert res.table.equals(result.table)


@pytest.mark.slow
def test_real_cs07_no_detection_and_injected_lesions_found(shared_data: Path) -> None:
    """sub-cs07: nothing on the real post-contrast scan; two planted lesions found."""
    from scipy import ndimage as ndi

    from lesionq.io.nifti import load_array
    from lesionq.steps import atlas_priors
    from lesionq.testing.inject import LesionSpec, plant_lesions

    anat = shared_data / "sub-cs07" / "ses-01" / "anat"
    imgs = {}
    for key, suffix in (("flair", "FLAIR"), ("t1", "T1w"), ("t1ce", "ce-gadolinium_T1w")):
        imgs[key], aff = load_array(anat / f"sub-cs07_ses-01_{suffix}.nii.gz")
    brain = Volume((imgs["flair"] != 0).astype(np.uint8), aff, "mask")
    maps = atlas_priors(
        Volume(imgs["flair"], aff, "FLAIR"), brain, t1=Volume(imgs["t1"], aff, "T1w"),
        template={"min_mask_dice": 0.7, "seed": 0},
    )  # fmt: skip

    def run(images: dict[str, np.ndarray]) -> GdResult:
        return segment_gd_volumes(
            Volume(images["t1ce"], aff, "ce"), Volume(images["flair"], aff, "FLAIR"), brain,
            t1=Volume(images["t1"], aff, "T1w"), priors=maps.maps, gd={}, min_volume_mm3=3.0,
        )  # fmt: skip

    real = run(imgs)
    assert real.inputs == "post+pre" and real.count == 0
    wm = np.asarray(maps.maps["wm"].array) > 0.9
    wm &= ndi.binary_erosion(wm, iterations=4)
    specs = [
        LesionSpec(radius_mm=3.0, kind="nodular", enhancement_fraction=0.4),
        LesionSpec(radius_mm=4.0, kind="ring", enhancement_fraction=0.4),
    ]
    inj = plant_lesions(
        imgs, voxel_size_mm=(1.0, 1.0, 1.0), specs=specs, seed=0, placement_mask=wm,
        reference_mask=wm,
    )  # fmt: skip
    res = run(inj.images)
    lab = np.asarray(res.labels.array)
    for les in inj.lesions:
        assert (lab[inj.labels == les.lesion_id] > 0).any(), les.kind
    assert res.count == 2


def test_post_contrast_misregistration_is_corrected(vols, result: GdResult, caplog) -> None:
    """A post-contrast T1 2 mm off the pre-contrast one is moved back before segmenting.

    The translation is recovered within 0.3 mm and the two lesions are found as on
    the aligned phantom; with ``align_post_max_mm`` = 0 nothing moves, and a bound
    below the residual leaves it uncorrected with a warning.
    """
    from scipy import ndimage as ndi

    ph = vols["ph"]
    moved = ndi.shift(ph.post, (0.0, 2.0, 0.0), order=1, mode="nearest").astype(np.float32)
    kw = dict(t1=vols["t1"], priors=vols["priors"], min_volume_mm3=3.0)
    args = (Volume(moved, AFFINE, "T1w-ce"), vols["flair"], vols["brain"])
    fixed = segment_gd_volumes(*args, gd={"strong_z": 9.0}, **kw)
    assert np.allclose(fixed.post_shift_mm, (0.0, 2.0, 0.0), atol=0.3)
    assert result.post_shift_mm == (0.0, 0.0, 0.0)  # the aligned phantom is not resampled
    assert fixed.count == result.count == 2
    overlap = (np.asarray(fixed.mask.array) > 0) & (np.asarray(result.mask.array) > 0)
    assert overlap.sum() >= 0.8 * (np.asarray(result.mask.array) > 0).sum()
    off = segment_gd_volumes(*args, gd={"strong_z": 9.0, "align_post_max_mm": 0.0}, **kw)
    assert off.post_shift_mm == (0.0, 0.0, 0.0)
    assert not np.array_equal(off.enhancement.array, fixed.enhancement.array)
    with caplog.at_level("WARNING", logger="lesionq.steps.gd"):
        bounded = segment_gd_volumes(*args, gd={"strong_z": 9.0, "align_post_max_mm": 1.0}, **kw)
    assert bounded.post_shift_mm == (0.0, 0.0, 0.0)
    assert np.array_equal(bounded.enhancement.array, off.enhancement.array)
    assert "exceeds align_post_max_mm" in caplog.text
