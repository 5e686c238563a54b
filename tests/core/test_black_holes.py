"""T1 black holes (lesionq.core.black_holes) on small synthetic volumes with known truth."""

from __future__ import annotations

import numpy as np
import pytest

from lesionq.core.black_holes import BH_DEFAULTS, segment_black_holes
from lesionq.errors import GeometryError, InputError, ProcessingError
from lesionq.steps.black_holes import BH_LONGITUDINAL_KEYS

WM, GM, CSF = 100.0, 60.0, 20.0  # T1 levels: grey matter at c = 0.5, CSF at c = 1
SHAPE = (48, 40, 40)


def brain_and_t1(noise: float = 0.0, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Brain box: a CSF slab, a grey-matter slab, white matter elsewhere."""
    brain = np.zeros(SHAPE, bool)
    brain[2:-2, 2:-2, 2:-2] = True
    t1 = np.where(brain, WM, 0.0)
    t1[2:8] = np.where(brain[2:8], CSF, 0.0)
    t1[8:14] = np.where(brain[8:14], GM, 0.0)
    if noise:
        t1 = t1 + np.random.default_rng(seed).normal(0.0, noise, SHAPE) * brain
    return brain, t1.astype(np.float32)


def t2_box(lo: tuple[int, int, int], hi: tuple[int, int, int], value: int = 1) -> np.ndarray:
    lab = np.zeros(SHAPE, np.int32)
    lab[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]] = value
    return lab


def darken(t1: np.ndarray, region: tuple[slice, ...], contrast: float) -> np.ndarray:
    """T1 of ``region`` set to ``contrast`` of the way from white matter to CSF."""
    out = t1.copy()
    out[region] = WM - contrast * (WM - CSF)
    return out


def test_planted_dark_voxels_give_their_known_volume() -> None:
    """A sharp dark block inside a larger T2 lesion: exactly its voxels, in mm3."""
    brain, t1 = brain_and_t1(noise=1.0)
    t2 = t2_box((20, 12, 12), (34, 28, 28))
    dark = (slice(23, 29), slice(15, 22), slice(16, 21))  # 6 x 7 x 5 = 210 voxels
    t1 = darken(t1, dark, 0.75)
    vs = (1.0, 1.0, 2.0)  # 2 mm3 voxels
    res = segment_black_holes(t1, t2, brain, vs, min_volume_mm3=3.0)
    assert res.n_lesions == 1
    assert res.volume_mm3 == pytest.approx(210 * 2.0)
    bh = res.lesions[0]
    assert (bh.lesion_id, bh.t2_lesion_id, bh.n_voxels) == (1, 1, 210)
    assert bh.contrast_mean == pytest.approx(0.75, abs=0.02)
    assert bh.reference_local and bh.reference_nawm == pytest.approx(WM, abs=0.5)
    truth = np.zeros(SHAPE, bool)
    truth[dark] = True
    np.testing.assert_array_equal(res.mask, truth)
    assert res.labels.dtype == np.int32 and set(np.unique(res.labels)) == {0, 1}
    assert res.gm_fraction == pytest.approx(0.5, abs=0.02)
    assert res.nawm == pytest.approx(WM, abs=0.5) and res.csf == pytest.approx(CSF, abs=0.5)


def test_threshold_is_inclusive_on_the_contrast_scale() -> None:
    """A voxel whose contrast c equals hypo_fraction counts; one float32 step above does not."""
    brain, t1 = brain_and_t1(noise=1.0)
    t2 = t2_box((20, 10, 10), (30, 30, 30))
    probe = (slice(22, 25), slice(12, 15), slice(12, 15))  # 27 voxels at c = 0.5
    t1 = darken(t1, probe, 0.5)
    vs = (1.0, 1.0, 1.0)
    res = segment_black_holes(t1, t2, brain, vs, min_volume_mm3=3.0, rim_voxels=0)
    assert res.n_lesions == 1 and res.lesions[0].n_voxels == 27
    c0 = res.contrast[probe].min()  # the least dark voxel of the block
    at = segment_black_holes(
        t1, t2, brain, vs, min_volume_mm3=0.0, rim_voxels=0, hypo_fraction=float(c0)
    )
    assert at.mask[probe].all()
    above = float(np.nextafter(c0, np.float32(1.0)))
    over = segment_black_holes(
        t1, t2, brain, vs, min_volume_mm3=0.0, rim_voxels=0, hypo_fraction=above
    )
    assert not over.mask[probe][res.contrast[probe] == c0].any()
    assert over.volume_mm3 == at.volume_mm3 - np.count_nonzero(res.contrast[probe] == c0)
    # the scale: 0 at the NAWM level, 1 at the CSF level
    assert res.lesions[0].contrast_mean == pytest.approx(0.5, abs=0.02)
    assert res.contrast[t2 > 0][~res.mask[t2 > 0]].mean() == pytest.approx(0.0, abs=0.02)


def test_partial_volume_rim_joins_at_half_maximum() -> None:
    """The rim of a dark block counts when at least half as dark as its core, one voxel deep."""
    brain, t1 = brain_and_t1(noise=0.5)
    t2 = t2_box((18, 10, 10), (34, 30, 30))
    core = (slice(22, 28), slice(16, 22), slice(16, 22))  # 216 voxels, c = 0.8
    t1 = darken(t1, core, 0.8)
    # rim: one face at c = 0.5 (>= 0.4, half of 0.8), the opposite face at 0.3 (< 0.4)
    t1[21, 16:22, 16:22] = WM - 0.5 * (WM - CSF)
    t1[28, 16:22, 16:22] = WM - 0.3 * (WM - CSF)
    # and a layer at 0.5 beyond the first one: two voxels from the core
    t1[20, 16:22, 16:22] = WM - 0.5 * (WM - CSF)
    vs = (1.0, 1.0, 1.0)
    res = segment_black_holes(t1, t2, brain, vs, min_volume_mm3=3.0)
    # c = 0.5 >= hypo_fraction (0.35): both 0.5 layers are seeds themselves
    assert res.mask[core].all() and res.mask[20:22, 16:22, 16:22].all()
    assert not res.mask[28].any()
    assert res.volume_mm3 == pytest.approx(216 + 72)
    # a seed rule stricter than 0.5: the first layer joins as rim, the second does not
    strict = segment_black_holes(t1, t2, brain, vs, min_volume_mm3=3.0, hypo_fraction=0.6)
    assert strict.mask[21, 16:22, 16:22].all() and not strict.mask[20].any()
    assert strict.volume_mm3 == pytest.approx(216 + 36)
    no_rim = segment_black_holes(
        t1, t2, brain, vs, min_volume_mm3=3.0, hypo_fraction=0.6, rim_voxels=0
    )
    assert no_rim.volume_mm3 == pytest.approx(216)


def test_enhancing_voxels_are_never_black_holes() -> None:
    brain, t1 = brain_and_t1(noise=1.0)
    t2 = t2_box((20, 12, 12), (34, 28, 28))
    dark = (slice(22, 32), slice(14, 20), slice(14, 20))  # 360 voxels
    t1 = darken(t1, dark, 0.7)
    enhancing = np.zeros(SHAPE, bool)
    enhancing[22:27, 14:20, 14:20] = True  # half of it enhances: acute, oedema
    res = segment_black_holes(
        t1, t2, brain, (1.0, 1.0, 1.0), enhancing=enhancing, min_volume_mm3=3.0
    )
    assert not (res.mask & enhancing).any()
    assert res.volume_mm3 == pytest.approx(180.0)
    assert res.excluded_enhancing_mm3 == pytest.approx(180.0)
    # a margin around the enhancement takes one more layer away
    wider = segment_black_holes(
        t1, t2, brain, (1.0, 1.0, 1.0), enhancing=enhancing, min_volume_mm3=3.0,
        enhancing_margin_mm=1.0,
    )  # fmt: skip
    assert wider.volume_mm3 == pytest.approx(144.0)


def test_minimum_volume_is_inclusive_in_mm3() -> None:
    brain, t1 = brain_and_t1()
    t2 = t2_box((20, 10, 10), (34, 30, 30))
    t1 = darken(t1, (slice(22, 24), slice(12, 13), slice(12, 13)), 0.8)  # 2 voxels
    t1 = darken(t1, (slice(28, 31), slice(25, 26), slice(25, 26)), 0.8)  # 3 voxels
    vs = (1.0, 1.0, 1.5)  # 1.5 mm3 voxels: 3 mm3 = 2 voxels
    res = segment_black_holes(t1, t2, brain, vs, min_volume_mm3=3.0, rim_voxels=0)
    assert [b.n_voxels for b in res.lesions] == [3, 2]
    res = segment_black_holes(t1, t2, brain, vs, min_volume_mm3=3.01, rim_voxels=0)
    assert [b.n_voxels for b in res.lesions] == [3]


def test_each_black_hole_names_its_t2_lesion() -> None:
    brain, t1 = brain_and_t1(noise=0.5)
    t2 = t2_box((18, 8, 8), (26, 16, 16), value=2) + t2_box((30, 24, 24), (40, 34, 34), value=1)
    t1 = darken(t1, (slice(20, 24), slice(10, 14), slice(10, 14)), 0.9)  # 64 voxels in T2 #2
    t1 = darken(t1, (slice(32, 34), slice(26, 28), slice(26, 28)), 0.9)  # 8 voxels in T2 #1
    t1 = darken(t1, (slice(40, 44), slice(5, 8), slice(5, 8)), 0.9)  # not in a T2 lesion
    res = segment_black_holes(t1, t2, brain, (1.0, 1.0, 1.0), min_volume_mm3=3.0)
    assert [(b.lesion_id, b.t2_lesion_id, b.n_voxels) for b in res.lesions] == [
        (1, 2, 64),
        (2, 1, 8),
    ]
    assert not res.mask[40:44, 5:8, 5:8].any()


def test_local_white_matter_reference_absorbs_a_bias_field() -> None:
    """Where the T1 reads 15 % brighter (a residual bias), a lesion as dark as grey matter
    relative to the white matter around it is found; against the global white matter
    it would be missed."""
    brain, t1 = brain_and_t1(noise=0.5)
    t1[30:, 20:, 20:] *= 1.15  # white matter of this corner reads 115
    t2 = (
        t2_box((34, 24, 24), (42, 32, 32), value=1)  # c = 0.4 locally, 0.27 globally
        + t2_box((18, 24, 24), (26, 32, 32), value=2)  # c = 0.4, unbiased region
    )
    t1[36:40, 26:30, 26:30] = 1.15 * (WM - 0.4 * (WM - CSF))
    t1[20:24, 26:30, 26:30] = WM - 0.4 * (WM - CSF)
    vs = (1.0, 1.0, 1.0)
    res = segment_black_holes(t1, t2, brain, vs, min_volume_mm3=3.0, rim_voxels=0)
    assert res.nawm == pytest.approx(WM, abs=1.0)
    assert sorted(b.t2_lesion_id for b in res.lesions) == [1, 2]
    assert all(b.n_voxels == 64 and b.reference_local for b in res.lesions)
    ref = {b.t2_lesion_id: b.reference_nawm for b in res.lesions}
    assert ref[1] == pytest.approx(115.0, abs=1.0) and ref[2] == pytest.approx(100.0, abs=1.0)
    for b in res.lesions:
        assert b.contrast_mean == pytest.approx(0.4, abs=0.02)
    # with the global reference only (no shell is large enough) lesion 1 is missed
    glob = segment_black_holes(
        t1, t2, brain, vs, min_volume_mm3=3.0, rim_voxels=0, min_reference_voxels=10**6
    )
    assert [b.t2_lesion_id for b in glob.lesions] == [2]
    assert not any(b.reference_local for b in glob.lesions)


def test_no_lesion_or_no_dark_voxel_gives_zero() -> None:
    brain, t1 = brain_and_t1(noise=1.0)
    res = segment_black_holes(t1, np.zeros(SHAPE, np.int32), brain, (1, 1, 1), min_volume_mm3=3)
    assert (res.n_lesions, res.volume_mm3) == (0, 0.0) and not res.mask.any()
    res = segment_black_holes(t1, t2_box((20, 10, 10), (30, 20, 20)), brain, (1, 1, 1),
                              min_volume_mm3=3)  # fmt: skip
    assert (res.n_lesions, res.volume_mm3) == (0, 0.0)


def test_reruns_are_bit_identical() -> None:
    brain, t1 = brain_and_t1(noise=2.0, seed=3)
    t2 = t2_box((20, 12, 12), (34, 28, 28))
    t1 = darken(t1, (slice(22, 30), slice(14, 22), slice(14, 24)), 0.6)
    a = segment_black_holes(t1, t2, brain, (1.0, 1.0, 1.0), min_volume_mm3=3.0)
    b = segment_black_holes(t1, t2, brain, (1.0, 1.0, 1.0), min_volume_mm3=3.0)
    np.testing.assert_array_equal(a.labels, b.labels)
    np.testing.assert_array_equal(a.contrast, b.contrast)
    assert a.lesions == b.lesions and a.nawm == b.nawm and a.csf == b.csf


def test_defaults_match_the_function_and_the_protocols(repo_root) -> None:
    import inspect
    import tomllib

    params = inspect.signature(segment_black_holes).parameters
    assert {k: params[k].default for k in BH_DEFAULTS} == dict(BH_DEFAULTS)
    for name in ("mesems_v1", "mesems_testing"):
        section = tomllib.loads((repo_root / "pipelines" / f"{name}.toml").read_text())
        longitudinal = {k: section["black_holes"].pop(k) for k in BH_LONGITUDINAL_KEYS}
        assert section["black_holes"] == dict(BH_DEFAULTS), name
        assert longitudinal == {"persistent_min_days": 182}, name


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"hypo_fraction": 1.5}, "hypo_fraction"),
        ({"edge_level": -0.1}, "edge_level"),
        ({"rim_voxels": 1.5}, "rim_voxels"),
        ({"reference_shell_mm": 1.0}, "reference_shell_mm"),
        ({"tissue_min_probability": 0.2}, "tissue_min_probability"),
        ({"min_volume_mm3": -1.0}, "min_volume_mm3"),
        ({"hypo_fraction": True}, "hypo_fraction"),
    ],
)
def test_bad_parameters_are_refused(kwargs, match) -> None:
    brain, t1 = brain_and_t1()
    args = {"min_volume_mm3": 3.0, **kwargs}
    with pytest.raises(InputError, match=match):
        segment_black_holes(t1, t2_box((20, 10, 10), (30, 20, 20)), brain, (1, 1, 1), **args)


def test_bad_inputs_are_refused() -> None:
    brain, t1 = brain_and_t1()
    t2 = t2_box((20, 10, 10), (30, 20, 20))
    with pytest.raises(GeometryError, match="t1"):
        segment_black_holes(t1[:-1], t2, brain, (1, 1, 1), min_volume_mm3=3.0)
    with pytest.raises(GeometryError, match="enhancing"):
        segment_black_holes(
            t1, t2, brain, (1, 1, 1), enhancing=np.zeros((3, 3, 3), bool), min_volume_mm3=3.0
        )
    with pytest.raises(InputError, match="t2_labels"):
        segment_black_holes(t1, t2.astype(float), brain, (1, 1, 1), min_volume_mm3=3.0)
    with pytest.raises(InputError, match="NaN"):
        bad = t1.copy()
        bad[20, 20, 20] = np.nan
        segment_black_holes(bad, t2, brain, (1, 1, 1), min_volume_mm3=3.0)
    _, noisy = brain_and_t1(noise=1.0)
    everywhere = t2_box((14, 2, 2), (46, 38, 38))  # the whole white matter is "lesion"
    with pytest.raises(ProcessingError, match="white-matter"):
        segment_black_holes(noisy, everywhere, brain, (1, 1, 1), min_volume_mm3=3.0)
