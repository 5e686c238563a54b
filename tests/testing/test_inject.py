"""Tests of the synthetic lesion injection model (lesionq.testing.inject)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import ndimage as ndi

from lesionq.errors import InputError, ProcessingError
from lesionq.testing.inject import (
    Contrast,
    LesionSpec,
    confluent_periventricular_specs,
    plant_lesions,
    random_gd_specs,
    random_t2_specs,
)

FULL = np.ones((3, 3, 3), bool)
VS = (1.0, 1.0, 1.0)
# reference (white-matter) median and SD per image, given explicitly so that the
# expected signal changes are exact numbers
STATS = {"flair": (100.0, 8.0), "t2": (80.0, 5.0), "t1": (400.0, 20.0), "t1ce": (420.0, 20.0)}


def _images(shape=(48, 48, 48), seed=0):
    rng = np.random.default_rng(seed)
    return {
        k: (med + rng.normal(0, sd, shape)).astype(np.float32) for k, (med, sd) in STATS.items()
    }


def _box(shape=(48, 48, 48), margin=4):
    m = np.zeros(shape, bool)
    m[margin:-margin, margin:-margin, margin:-margin] = True
    return m


def _plant(images, specs, seed=0, **kw):
    kw.setdefault("placement_mask", _box(next(iter(images.values())).shape))
    kw.setdefault("reference_stats", STATS)
    kw.setdefault("voxel_size_mm", VS)
    return plant_lesions(images, specs=specs, seed=seed, **kw)


def test_shapes_dtypes_and_inputs_untouched():
    imgs = _images()
    before = {k: v.copy() for k, v in imgs.items()}
    out = _plant(imgs, [LesionSpec(volume_mm3=200.0), LesionSpec(volume_mm3=50.0)])
    images, labels, lesions = out  # unpacks as a 3-tuple
    assert set(images) == set(imgs)
    for k, v in images.items():
        assert v.shape == imgs[k].shape and v.dtype == np.float32
        assert np.array_equal(imgs[k], before[k])
    assert labels.shape == (48, 48, 48) and labels.dtype == np.int32
    assert [les.lesion_id for les in lesions] == [1, 2]
    assert set(np.unique(labels)) == {0, 1, 2}
    assert out.truth.sum() == sum(les.n_voxels for les in lesions)
    assert len(out.rows()) == 2 and "slices" not in out.rows()[0]


def test_deterministic_by_seed():
    specs = random_t2_specs(4, seed=3, volume_mm3=(20, 300))
    a = _plant(_images(), specs, seed=11)
    b = _plant(_images(), specs, seed=11)
    c = _plant(_images(), specs, seed=12)
    assert np.array_equal(a.labels, b.labels)
    for k in a.images:
        assert np.array_equal(a.images[k], b.images[k])
    assert [x.centre_vox for x in a.lesions] != [x.centre_vox for x in c.lesions]


@pytest.mark.parametrize("shape", ["ellipsoid", "irregular"])
@pytest.mark.parametrize("volume", [30.0, 200.0, 1500.0])
def test_truth_volume_close_to_requested(shape, volume):
    specs = [LesionSpec(volume_mm3=volume, shape=shape) for _ in range(3)]
    grid = (72, 72, 72) if volume > 1000 else (48, 48, 48)
    out = _plant(_images(grid), specs, seed=5, placement_mask=_box(grid))
    tol = 0.25 if volume < 100 else 0.12
    for les in out.lesions:
        assert abs(les.volume_mm3 - volume) / volume < tol, (les.volume_mm3, volume)
    # separate lesions: one 26-connected component each
    assert ndi.label(out.truth, FULL)[1] == 3


def test_volume_on_thick_slices():
    vs = (0.75, 0.75, 3.0)
    shape = (80, 80, 24)
    imgs = _images(shape)
    specs = [LesionSpec(volume_mm3=500.0) for _ in range(3)]
    out = _plant(imgs, specs, seed=2, voxel_size_mm=vs, placement_mask=_box(shape, 2))
    for les in out.lesions:
        assert abs(les.volume_mm3 - 500.0) / 500.0 < 0.2, les.volume_mm3


def test_contrast_at_centre_as_specified():
    spec = LesionSpec(
        radius_mm=4.0,
        centre_vox=(24.0, 24.0, 24.0),
        contrast={
            "flair": Contrast(5.0, "sd"),
            "t2": Contrast(3.0, "sd"),
            "t1": Contrast(-0.12, "wm_fraction"),
        },
    )
    imgs = _images()
    out = _plant(imgs, [spec], placement_mask=None)
    c = (24, 24, 24)
    d = {k: float(out.images[k][c] - imgs[k][c]) for k in imgs}
    assert d["flair"] == pytest.approx(5.0 * 8.0, rel=0.02)
    assert d["t2"] == pytest.approx(3.0 * 5.0, rel=0.02)
    assert d["t1"] == pytest.approx(-0.12 * 400.0, rel=0.02)
    assert d["t1ce"] == 0.0  # no contrast entry for it: unchanged
    assert out.lesions[0].contrast["flair"] == pytest.approx(40.0)
    # the edge is soft: half-way at the radius, nothing 3 mm outside it
    edge = float(out.images["flair"][24, 24, 28] - imgs["flair"][24, 24, 28])
    far = float(out.images["flair"][24, 24, 31] - imgs["flair"][24, 24, 31])
    assert 0.2 * 40 < edge < 0.8 * 40
    assert abs(far) < 0.01 * 40


def test_contrast_from_reference_mask():
    imgs = _images()
    wm = _box()
    spec = LesionSpec(radius_mm=4.0, centre_vox=(24.0, 24.0, 24.0))
    out = plant_lesions(imgs, voxel_size_mm=VS, specs=[spec], seed=0, reference_mask=wm)
    sd = 1.4826 * np.median(np.abs(imgs["flair"][wm] - np.median(imgs["flair"][wm])))
    assert out.lesions[0].contrast["flair"] == pytest.approx(4.5 * sd, rel=1e-5)


def test_ring_has_hypointense_core_and_enhancing_shell():
    ring = LesionSpec(
        radius_mm=4.5, centre_vox=(16.0, 24.0, 24.0), kind="ring", enhancement_fraction=0.4
    )
    nod = LesionSpec(
        radius_mm=3.0, centre_vox=(34.0, 24.0, 24.0), kind="nodular", enhancement_fraction=0.4
    )
    imgs = _images()
    out = _plant(imgs, [ring, nod], placement_mask=None)
    d = out.images["t1ce"] - imgs["t1ce"]
    wm = STATS["t1ce"][0]
    assert d[16, 24, 24] == pytest.approx(-0.12 * wm, rel=0.05)  # core: hypointense
    shell = (out.labels == 1) & ~ndi.binary_erosion(out.labels == 1, iterations=2)
    assert d[shell].max() > 0.15 * wm  # enhancing rim (blurred by the soft edge)
    assert d[shell].max() - d[16, 24, 24] > 0.25 * wm
    assert d[34, 24, 24] == pytest.approx((0.4 - 0.12) * wm, rel=0.05)  # nodular centre
    assert np.array_equal(out.enhancing, out.truth)  # Gd truth: whole extent of both
    assert out.lesions[0].kind == "ring" and out.lesions[1].kind == "nodular"


def test_enhancing_needs_its_image():
    imgs = {k: v for k, v in _images().items() if k != "t1ce"}
    spec = LesionSpec(radius_mm=3.0, kind="nodular", enhancement_fraction=0.3)
    with pytest.raises(InputError, match="t1ce"):
        _plant(imgs, [spec])


def test_placement_respects_mask_and_nothing_outside_changes():
    imgs = _images()
    place = np.zeros((48, 48, 48), bool)
    place[6:24, 6:42, 6:42] = True
    tissue = np.ones_like(place)
    tissue[:, :, 30:] = False
    specs = random_t2_specs(5, seed=1, volume_mm3=(20, 200))
    out = _plant(imgs, specs, placement_mask=place, tissue_mask=tissue)
    for les in out.lesions:
        assert place[tuple(int(round(x)) for x in les.centre_vox)]
    changed = np.zeros(place.shape, bool)
    for k in imgs:
        changed |= out.images[k] != imgs[k]
    boxes = np.zeros(place.shape, bool)
    for les in out.lesions:
        boxes[les.slices] = True
    assert changed.any()
    assert not (changed & ~boxes).any()
    assert not (changed & ~tissue).any()
    assert not (out.truth & ~tissue).any()
    # lesions sit within the placement mask but for their logistic edge
    assert (out.truth & place).sum() >= 0.9 * out.truth.sum()


def test_no_room_and_invalid_specs():
    small = np.zeros((48, 48, 48), bool)
    small[20:24, 20:24, 20:24] = True
    with pytest.raises(ProcessingError, match="no room"):
        _plant(_images(), [LesionSpec(volume_mm3=2000.0)], placement_mask=small)
    with pytest.raises(InputError, match="exactly one"):
        _plant(_images(), [LesionSpec()])
    with pytest.raises(InputError, match="ring"):
        _plant(_images(), [LesionSpec(radius_mm=1.2, kind="ring", enhancement_fraction=0.3)])
    with pytest.raises(InputError, match="enhancement_fraction"):
        _plant(_images(), [LesionSpec(radius_mm=3.0, kind="nodular")])
    with pytest.raises(InputError, match="reference"):
        plant_lesions(
            _images(), voxel_size_mm=VS, specs=[LesionSpec(radius_mm=3.0)], seed=0,
            placement_mask=_box(),
        )  # fmt: skip


def test_random_gd_specs_ranges():
    specs = random_gd_specs(40, seed=4, ring_fraction=0.5)
    r = np.array([s.radius_mm for s in specs])
    e = np.array([s.enhancement_fraction for s in specs])
    assert r.min() >= 1.5 and r.max() <= 4.5
    assert e.min() >= 0.25 and e.max() <= 0.6
    kinds = {s.kind for s in specs}
    assert kinds == {"nodular", "ring"}
    assert all(s.radius_mm >= 2.5 for s in specs if s.kind == "ring")
    # the smallest ring keeps a hypointense core
    ring = LesionSpec(
        radius_mm=2.5, centre_vox=(24.0, 24.0, 24.0), kind="ring", enhancement_fraction=0.6
    )
    imgs = _images()
    out = _plant(imgs, [ring], placement_mask=None)
    assert out.images["t1ce"][24, 24, 24] < imgs["t1ce"][24, 24, 24]


def test_confluent_periventricular_load():
    shape = (64, 64, 64)
    g = np.mgrid[: shape[0], : shape[1], : shape[2]].astype(float) - 31.5
    brain = ((g / np.array([29.0, 29.0, 29.0])[:, None, None, None]) ** 2).sum(0) <= 1
    vent = ((g / np.array([12.0, 5.0, 5.0])[:, None, None, None]) ** 2).sum(0) <= 1
    tissue = brain & ~vent
    target = 8000.0
    specs = confluent_periventricular_specs(
        vent, tissue, VS, target_volume_mm3=target, seed=0, radius_mm=(3.0, 5.0)
    )
    assert len(specs) >= 5 and all(s.centre_vox is not None for s in specs)
    imgs = _images(shape)
    out = _plant(imgs, specs, placement_mask=None, tissue_mask=tissue)
    vol = out.truth.sum()
    assert abs(vol - target) / target < 0.15, vol
    assert not (out.truth & vent).any()
    assert not (out.images["flair"] != imgs["flair"])[vent].any()
    dist = ndi.distance_transform_edt(~vent)
    lab, n = ndi.label(out.truth, FULL)
    sizes = np.bincount(lab.ravel())[1:]
    assert sizes.max() >= 0.5 * vol  # confluent: one component holds most of the load
    biggest = lab == (np.argmax(sizes) + 1)
    assert dist[biggest].min() <= 1.5  # grown from the ventricle wall
    assert n < len(specs)  # lesions merged


def test_confluent_needs_wall():
    vent = np.zeros((20, 20, 20), bool)
    vent[8:12, 8:12, 8:12] = True
    far = np.zeros_like(vent)
    far[:3] = True
    with pytest.raises(InputError, match="wall"):
        confluent_periventricular_specs(vent, far, VS, target_volume_mm3=100.0, seed=0)


def test_requested_volume_of_radius_spec():
    s = LesionSpec(radius_mm=2.0)
    assert s.requested_volume_mm3 == pytest.approx(4 / 3 * math.pi * 8)
