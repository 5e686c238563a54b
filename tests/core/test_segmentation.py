"""Tests of lesionq.core.segmentation (T2/FLAIR lesion segmentation).

Synthetic phantoms: an ellipsoidal brain with a grey-matter rim, a CSF
"ventricle" and white matter, Gaussian noise, and bright planted lesions of
known volume; plus one slow test on the real sub-cs07 scan against its
consensus truth with the independent scorer.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage as ndi

from lesionq.core.segmentation import (
    LesionCandidate,
    SegmentationResult,
    drop_small_infratentorial,
    segment_lesions,
)
from lesionq.errors import GeometryError, InputError

FULL = np.ones((3, 3, 3), bool)

# tissue intensities (FLAIR, T1, T2) and noise SD per channel
CSF = (30.0, 80.0, 900.0)
GM = (120.0, 270.0, 330.0)
WM = (100.0, 360.0, 250.0)
NOISE = (4.0, 8.0, 8.0)
LESION_DELTA = (45.0, -60.0, 120.0)


@dataclass(frozen=True)
class Phantom:
    flair: np.ndarray
    t1: np.ndarray
    t2: np.ndarray
    brain: np.ndarray
    priors: dict[str, np.ndarray]
    lesions: list[np.ndarray]  # one bool mask per planted lesion
    voxel_size_mm: tuple[float, float, float]


def make_phantom(
    voxel_size_mm: tuple[float, float, float] = (1.0, 1.0, 1.0),
    lesions_mm: tuple[tuple[tuple[float, float, float], float], ...] = (
        ((-10.0, -8.0, 4.0), 1.6),  # ~17 mm3
        ((10.0, -8.0, -4.0), 2.3),  # ~50 mm3
        ((-10.0, 9.0, -5.0), 3.3),  # ~150 mm3
        ((11.0, 10.0, 5.0), 4.9),  # ~490 mm3
    ),
    seed: int = 0,
) -> Phantom:
    """Brain of semi-axes 30 x 30 x 22 mm in a 72 x 72 x 56 mm field of view."""
    vs = np.asarray(voxel_size_mm)
    shape = tuple(int(round(e / v)) for e, v in zip((72.0, 72.0, 56.0), vs, strict=True))
    coords = np.meshgrid(
        *[(np.arange(n) - (n - 1) / 2.0) * v for n, v in zip(shape, vs, strict=True)],
        indexing="ij",
    )
    x, y, z = coords
    rho = np.sqrt((x / 30.0) ** 2 + (y / 30.0) ** 2 + (z / 22.0) ** 2)
    brain = rho <= 1.0
    gm = brain & (rho > 0.88)  # ~3 mm cortical rim
    ventricle = np.sqrt((x / 4.0) ** 2 + (y / 9.0) ** 2 + (z / 5.0) ** 2) <= 1.0
    wm = brain & ~gm & ~ventricle
    rng = np.random.default_rng(seed)
    chans = []
    for c in range(3):
        img = np.zeros(shape, np.float32)
        img[ventricle] = CSF[c]
        img[gm] = GM[c]
        img[wm] = WM[c]
        img += rng.normal(0.0, NOISE[c], shape).astype(np.float32)
        img[~brain] = 0.0
        chans.append(img)
    lesion_masks = []
    for centre, radius in lesions_mm:
        d = np.sqrt(sum((g - c) ** 2 for g, c in zip(coords, centre, strict=True)))
        les = (d <= radius) & wm
        lesion_masks.append(les)
        for c in range(3):
            chans[c][les] += LESION_DELTA[c]
    sig = tuple(2.0 / v for v in vs)
    priors = {
        "csf": ndi.gaussian_filter(ventricle.astype(np.float32), sig),
        "gm": ndi.gaussian_filter(gm.astype(np.float32), sig),
        "wm": ndi.gaussian_filter(wm.astype(np.float32), sig),
    }
    tot = np.maximum(sum(priors.values()), 1e-6)
    priors = {k: np.where(brain, v / tot, 0).astype(np.float32) for k, v in priors.items()}
    return Phantom(chans[0], chans[1], chans[2], brain, priors, lesion_masks, tuple(vs))


@pytest.fixture(scope="module")
def phantom() -> Phantom:
    return make_phantom()


def _check_found(res: SegmentationResult, ph: Phantom, *, tol: float = 0.5) -> None:
    lab, n = ndi.label(res.mask, FULL)
    vv = float(np.prod(ph.voxel_size_mm))
    hit_ids: set[int] = set()
    for les in ph.lesions:
        ids = set(np.unique(lab[les]).tolist()) - {0}
        assert ids, f"planted lesion of {les.sum() * vv:.0f} mm3 not found"
        hit_ids |= ids
        seg = np.isin(lab, list(ids)).sum() * vv
        true = les.sum() * vv
        assert abs(seg - true) <= tol * true, f"volume {seg:.0f} mm3 vs true {true:.0f} mm3"
    invented = set(range(1, n + 1)) - hit_ids
    assert not invented, f"{len(invented)} lesion(s) invented"


# --------------------------------------------------------------------------- phantoms


def test_phantom_all_inputs_finds_every_lesion_and_invents_none(phantom: Phantom) -> None:
    res = segment_lesions(
        phantom.flair, phantom.brain, phantom.voxel_size_mm, t1=phantom.t1, t2=phantom.t2,
        priors=phantom.priors,
    )  # fmt: skip
    _check_found(res, phantom)
    assert res.inputs_used == ("t1", "t2", "priors")
    # reference statistics come out near the simulated white matter
    assert abs(res.nawm_median - WM[0]) < 2.0
    assert abs(res.nawm_sd - NOISE[0]) < 1.0


def test_phantom_priors_none(phantom: Phantom) -> None:
    res = segment_lesions(
        phantom.flair, phantom.brain, phantom.voxel_size_mm, t1=phantom.t1, t2=phantom.t2
    )
    _check_found(res, phantom)
    assert res.inputs_used == ("t1", "t2")


def test_phantom_flair_only(phantom: Phantom) -> None:
    res = segment_lesions(phantom.flair, phantom.brain, phantom.voxel_size_mm)
    _check_found(res, phantom)
    assert res.inputs_used == ()


def test_phantom_misaligned_priors(phantom: Phantom) -> None:
    shifted = {k: np.roll(v, 3, axis=1) for k, v in phantom.priors.items()}  # 3 mm off
    res = segment_lesions(
        phantom.flair, phantom.brain, phantom.voxel_size_mm, t1=phantom.t1, t2=phantom.t2,
        priors=shifted,
    )  # fmt: skip
    _check_found(res, phantom)


def test_phantom_anisotropic_voxels() -> None:
    ph = make_phantom(
        voxel_size_mm=(1.0, 1.0, 3.0),
        lesions_mm=(((-10.0, -8.0, 3.0), 3.5), ((10.0, 9.0, -3.0), 5.0)),
    )
    res = segment_lesions(ph.flair, ph.brain, ph.voxel_size_mm, t1=ph.t1, t2=ph.t2)
    _check_found(res, ph, tol=0.6)


def test_local_reference_absorbs_residual_bias_field(phantom: Phantom) -> None:
    """A +-15 % intensity ramp across the FLAIR: the local NAWM reference copes."""
    x = np.linspace(-1.0, 1.0, phantom.flair.shape[0])[:, None, None]
    biased = (phantom.flair * (1.0 + 0.15 * x)).astype(np.float32)
    res = segment_lesions(
        biased, phantom.brain, phantom.voxel_size_mm, t1=phantom.t1, t2=phantom.t2,
        background_sigma_mm=15.0,
    )  # fmt: skip
    _check_found(res, phantom, tol=0.6)


def test_threads_do_not_change_the_result(phantom: Phantom) -> None:
    """n_threads > 1 smooths through dask.array slabs: the same bits as one thread."""
    kw = dict(t1=phantom.t1, t2=phantom.t2, priors=phantom.priors, background_sigma_mm=10.0)
    one = segment_lesions(phantom.flair, phantom.brain, phantom.voxel_size_mm, **kw)
    two = segment_lesions(phantom.flair, phantom.brain, phantom.voxel_size_mm, n_threads=2, **kw)
    np.testing.assert_array_equal(one.probability, two.probability)
    np.testing.assert_array_equal(one.mask, two.mask)
    assert repr(one.candidates) == repr(two.candidates)  # NaN fields compare by text


def test_flair_only_location_rule_needs_atlas_white_matter(phantom: Phantom) -> None:
    """Without a T1, shell voxels count as WM only where the atlas WM prior agrees.

    The atlas here claims grey matter around the planted lesions (WM prior 0):
    with ``wm_prior_min`` > 0 a FLAIR-only run rejects them by the location rule,
    a run with a T1 (whose tissue model is trusted) is unaffected.
    """
    wrong = {k: v.copy() for k, v in phantom.priors.items()}
    around = ndi.binary_dilation(np.any(phantom.lesions, axis=0), iterations=5)
    wrong["wm"][around] = 0.0
    wrong["gm"][around] = 1.0
    kw = dict(priors=wrong, wm_prior_min=0.3)
    flair_only = segment_lesions(phantom.flair, phantom.brain, phantom.voxel_size_mm, **kw)
    assert not flair_only.mask.any()
    assert {c.reason for c in flair_only.candidates if c.peak_z >= 4.0} <= {"location", "csf"}
    # with a T1 the gate is not applied: the same result whatever wm_prior_min
    with_t1 = segment_lesions(
        phantom.flair, phantom.brain, phantom.voxel_size_mm, t1=phantom.t1, **kw
    )
    t1_ungated = segment_lesions(
        phantom.flair, phantom.brain, phantom.voxel_size_mm, t1=phantom.t1, priors=wrong
    )
    assert with_t1.mask.any()
    np.testing.assert_array_equal(with_t1.mask, t1_ungated.mask)
    ignored = segment_lesions(
        phantom.flair, phantom.brain, phantom.voxel_size_mm, priors=wrong, wm_prior_min=0.0
    )
    assert ignored.mask.any()


def test_no_lesions_gives_empty_mask() -> None:
    ph = make_phantom(lesions_mm=())
    res = segment_lesions(ph.flair, ph.brain, ph.voxel_size_mm, t1=ph.t1, t2=ph.t2)
    assert not res.mask.any()
    assert res.n_lesions == 0
    assert all(not c.accepted for c in res.candidates)


def test_lesion_below_min_volume_is_not_reported() -> None:
    ph = make_phantom(lesions_mm=(((-10.0, -8.0, 4.0), 1.0), ((10.0, 9.0, -4.0), 3.3)))
    small, big = ph.lesions
    assert small.sum() < 10  # 7 voxels of 1 mm3
    res = segment_lesions(
        ph.flair, ph.brain, ph.voxel_size_mm, t1=ph.t1, t2=ph.t2, min_volume_mm3=20.0
    )
    assert not res.mask[small].any()
    assert res.mask[big].any()


def test_probability_and_mask_contract(phantom: Phantom) -> None:
    thr = 0.5
    res = segment_lesions(
        phantom.flair, phantom.brain, phantom.voxel_size_mm, t1=phantom.t1, t2=phantom.t2,
        threshold=thr, min_volume_mm3=3.0,
    )  # fmt: skip
    p = res.probability
    assert p.dtype == np.float32 and p.shape == phantom.flair.shape
    assert p.min() >= 0.0 and p.max() <= 1.0
    assert res.mask.dtype == bool
    above = p >= thr
    lab, n = ndi.label(above, FULL)
    sizes = np.bincount(lab.ravel(), minlength=n + 1)
    expected = (sizes >= 3)[lab] & above
    assert np.array_equal(res.mask, expected)
    assert not p[~phantom.brain].any()
    # a lower threshold never gives a smaller mask
    lower = segment_lesions(
        phantom.flair, phantom.brain, phantom.voxel_size_mm, t1=phantom.t1, t2=phantom.t2,
        threshold=0.2,
    )  # fmt: skip
    assert lower.mask.sum() >= res.mask.sum()
    assert np.all(lower.mask[res.mask])


def test_candidates_report_decisions(phantom: Phantom) -> None:
    res = segment_lesions(
        phantom.flair, phantom.brain, phantom.voxel_size_mm, t1=phantom.t1, t2=phantom.t2
    )
    assert res.candidates and all(isinstance(c, LesionCandidate) for c in res.candidates)
    accepted = [c for c in res.candidates if c.accepted]
    assert len(accepted) >= len(phantom.lesions)
    assert {c.reason for c in res.candidates} <= {"accepted", "contrast", "t2", "location", "csf"}
    for c in accepted:
        assert c.peak_z >= res.parameters["seed_z"]
        assert c.t2_z >= res.parameters["t2_min_z"]


def test_deterministic_bit_for_bit(phantom: Phantom) -> None:
    kw = dict(t1=phantom.t1, t2=phantom.t2, priors=phantom.priors)
    a = segment_lesions(phantom.flair, phantom.brain, phantom.voxel_size_mm, **kw)
    b = segment_lesions(phantom.flair.copy(), phantom.brain.copy(), phantom.voxel_size_mm, **kw)
    assert np.array_equal(a.probability, b.probability)
    assert np.array_equal(a.mask, b.mask)
    assert repr(a.candidates) == repr(b.candidates)  # NaN-aware


def test_intensity_scale_invariance(phantom: Phantom) -> None:
    """Thresholds are in units of the image's own noise: rescaling changes nothing."""
    a = segment_lesions(
        phantom.flair, phantom.brain, phantom.voxel_size_mm, t1=phantom.t1, t2=phantom.t2
    )
    b = segment_lesions(
        phantom.flair * 7.5, phantom.brain, phantom.voxel_size_mm, t1=phantom.t1 * 0.1,
        t2=phantom.t2 * 3.0,
    )  # fmt: skip
    assert np.array_equal(a.mask, b.mask)


# --------------------------------------------------------------------------- validation


def test_shell_lesion_counts_crowded_lesion_tissue_as_white_matter() -> None:
    """A lesion wrapped in diffusely abnormal tissue passes the location rule only with it.

    The halo is what heavy loads look like to the tissue model: T1-dark like grey
    matter, FLAIR 3 WM SDs bright (below grey matter, so no candidate of its own).
    Without ``shell_lesion`` its shell is "grey matter" and the lesion is rejected by
    location; with it the FLAIR-bright shell counts as white matter where the atlas
    says white matter, and the lesion is found. Where the atlas says grey matter
    (``wm_prior_min``), the halo does not count and the lesion stays rejected.
    """
    centre, radius = (10.0, -8.0, -4.0), 2.3
    ph = make_phantom(lesions_mm=((centre, radius),), seed=3)
    vs = ph.voxel_size_mm
    shape = ph.flair.shape
    coords = np.meshgrid(
        *[(np.arange(n) - (n - 1) / 2.0) * v for n, v in zip(shape, vs, strict=True)],
        indexing="ij",
    )
    d = np.sqrt(sum((g - c) ** 2 for g, c in zip(coords, centre, strict=True)))
    halo = (d <= radius + 4.0) & ~ph.lesions[0] & ph.brain
    rng = np.random.default_rng(7)
    flair, t1 = ph.flair.copy(), ph.t1.copy()
    flair[halo] = WM[0] + 3.0 * NOISE[0] + rng.normal(0, NOISE[0], int(halo.sum()))
    t1[halo] = GM[1] + rng.normal(0, NOISE[1], int(halo.sum()))
    kw = dict(t1=t1, priors=ph.priors, wm_prior_min=0.3)

    def verdict(res: SegmentationResult) -> str:
        hit = [c for c in res.candidates if ph.lesions[0][tuple(round(x) for x in c.centroid_vox)]]
        assert len(hit) == 1
        return hit[0].reason

    off = segment_lesions(flair, ph.brain, vs, **kw)
    assert verdict(off) == "location"
    assert not (off.mask & ph.lesions[0]).any()
    on = segment_lesions(flair, ph.brain, vs, shell_lesion=True, **kw)
    assert verdict(on) == "accepted"
    assert (on.mask & ph.lesions[0]).sum() >= 0.5 * ph.lesions[0].sum()
    grey = {k: v.copy() for k, v in ph.priors.items()}
    grey["wm"][halo] = 0.0
    gated = segment_lesions(flair, ph.brain, vs, shell_lesion=True, **dict(kw, priors=grey))
    assert verdict(gated) == "location"


def test_candidate_outside_the_atlas_brain_is_rejected(phantom: Phantom) -> None:
    """A FLAIR-bright lesion where the atlas has no brain is "outside" with the rule on.

    The phantom's largest lesion stays where it is; only the atlas priors around it
    are set to zero, as at a pituitary left inside a skull-stripping mask. With
    ``atlas_brain_min`` = 0 (off) it is found as before; with 0.5 its candidate is
    rejected as ``"outside"`` and the other lesions are untouched.
    """
    target = phantom.lesions[3]
    hole = ndi.binary_dilation(target, iterations=4)
    priors = {k: np.where(hole, 0.0, v).astype(np.float32) for k, v in phantom.priors.items()}
    kw = dict(t1=phantom.t1, t2=phantom.t2, priors=priors)
    off = segment_lesions(phantom.flair, phantom.brain, phantom.voxel_size_mm, **kw)
    on = segment_lesions(
        phantom.flair, phantom.brain, phantom.voxel_size_mm, atlas_brain_min=0.5, **kw
    )
    assert (off.mask & target).sum() >= 0.5 * target.sum()
    assert not (on.mask & target).any()
    hit = [c for c in on.candidates if target[tuple(round(x) for x in c.centroid_vox)]]
    assert [c.reason for c in hit] == ["outside"]
    for les in phantom.lesions[:3]:
        assert np.array_equal(on.mask & les, off.mask & les)


def test_small_infratentorial_lesions_are_dropped(phantom: Phantom) -> None:
    """With a location map, a small lesion of the posterior fossa is dropped; a large one stays.

    The phantom's smallest (~17 mm3) and largest (~490 mm3) lesions are labelled
    infratentorial in a location map passed with the priors. With
    ``infratentorial_min_mm3`` = 20 the small one goes (its candidate's reason says
    why, and its probability is 0), the large one and the supratentorial ones stay;
    with 0 (off) everything is as without a location map.
    """
    small, large = phantom.lesions[0], phantom.lesions[3]
    loc = np.zeros(phantom.flair.shape, np.uint8)
    loc[ndi.binary_dilation(small | large, iterations=3)] = 2
    pri = dict(phantom.priors, location=loc)
    kw = dict(t1=phantom.t1, t2=phantom.t2)
    base = segment_lesions(
        phantom.flair, phantom.brain, phantom.voxel_size_mm, priors=phantom.priors, **kw
    )
    off = segment_lesions(phantom.flair, phantom.brain, phantom.voxel_size_mm, priors=pri, **kw)
    on = segment_lesions(
        phantom.flair, phantom.brain, phantom.voxel_size_mm, priors=pri,
        infratentorial_min_mm3=20.0, **kw,
    )  # fmt: skip
    assert np.array_equal(off.mask, base.mask)
    assert (off.mask & small).any()
    assert not (on.mask & small).any()
    assert not (on.probability[small] > 0).any()
    assert np.array_equal(on.mask & ~small, off.mask & ~small)
    assert (on.mask & large).sum() >= 0.5 * large.sum()
    hit = [c for c in on.candidates if small[tuple(round(x) for x in c.centroid_vox)]]
    assert hit and all(c.reason == "infratentorial" and not c.accepted for c in hit)


def test_drop_small_infratentorial_counts_volume_in_mm3() -> None:
    """The volume rule is in mm3, inclusive, and needs a majority of infratentorial voxels."""
    mask = np.zeros((20, 20, 20), bool)
    mask[2:4, 2:4, 2:4] = True  # 8 voxels
    mask[10:13, 10:13, 10:13] = True  # 27 voxels
    loc = np.zeros(mask.shape, np.uint8)
    loc[:, :, :3] = 2  # the first cube: 4 of 8 voxels infratentorial (a half counts)
    loc[10:13, 10:13, 10:13] = 2
    out = drop_small_infratentorial(mask, loc, (1.0, 1.0, 1.0), 27.0)
    assert not out[2:4, 2:4, 2:4].any()
    assert out[10:13, 10:13, 10:13].all()  # exactly 27 mm3: kept
    out2 = drop_small_infratentorial(mask, loc, (1.0, 1.0, 0.5), 27.0)  # 13.5 mm3 now
    assert not out2.any()
    loc[2:4, 2:4, 2] = 0  # none of its voxels infratentorial now: kept
    assert drop_small_infratentorial(mask, loc, (1.0, 1.0, 1.0), 27.0)[2:4, 2:4, 2:4].all()
    assert np.array_equal(drop_small_infratentorial(mask, loc, (1.0, 1.0, 1.0), 0.0), mask)


def test_drop_small_infratentorial_uses_the_location_fraction() -> None:
    """The infratentorial share is the ``[location]`` one: 4 of 8 voxels is not 0.6."""
    mask = np.zeros((12, 12, 12), bool)
    mask[2:4, 2:4, 2:4] = True
    loc = np.zeros(mask.shape, np.uint8)
    loc[:, :, :3] = 2  # half the cube
    vs = (1.0, 1.0, 1.0)
    assert not drop_small_infratentorial(mask, loc, vs, 20.0, 0.5).any()
    assert np.array_equal(drop_small_infratentorial(mask, loc, vs, 20.0, 0.6), mask)
    for bad in (0.0, 1.5, "half"):
        with pytest.raises(InputError, match="min_fraction"):
            drop_small_infratentorial(mask, loc, vs, 20.0, bad)


def test_segment_lesions_passes_the_infratentorial_fraction(phantom: Phantom) -> None:
    """segment_lesions hands ``infratentorial_min_fraction`` to the posterior-fossa rule.

    The small lesion is marked infratentorial on one side of its centre only (about
    half its voxels): a fraction of 0.3 drops it, 0.9 keeps it; 0 is refused.
    """
    small = phantom.lesions[0]
    idx = np.argwhere(small)
    half = np.zeros_like(small)
    cut = int(np.median(idx[:, 2]))
    half[..., : cut + 1] = True
    loc = np.zeros(phantom.flair.shape, np.uint8)
    loc[ndi.binary_dilation(small, iterations=3) & half] = 2
    frac = (loc[small] == 2).mean()
    assert 0.3 < frac < 0.9
    pri = dict(phantom.priors, location=loc)
    kw = dict(t1=phantom.t1, t2=phantom.t2, priors=pri, infratentorial_min_mm3=20.0)
    args = (phantom.flair, phantom.brain, phantom.voxel_size_mm)
    low = segment_lesions(*args, infratentorial_min_fraction=0.3, **kw)
    high = segment_lesions(*args, infratentorial_min_fraction=0.9, **kw)
    assert not (low.mask & small).any()
    assert (high.mask & small).any()
    with pytest.raises(InputError, match="infratentorial_min_fraction"):
        segment_lesions(*args, infratentorial_min_fraction=0.0, **kw)


def test_partial_volume_rim_on_thick_slices_only() -> None:
    """A lesion's partial-volume edge joins it on thick slices: one voxel, along the slices.

    Thick-slice phantom (1 x 1 x 4 mm): one lesion at full contrast in its slab, and
    in the slabs above and below a weaker "partial-volume" edge, 2 WM SDs bright:
    under ``grow_z`` (2.5) but over ``partial_volume_z`` (1.5). A second ring of the
    same brightness, two slabs away, is not adjacent and stays out. With the rule
    off, or when the slices are thinner than ``partial_volume_slice_mm``, the edge
    stays out as well.
    """
    vs = (1.0, 1.0, 4.0)
    ph = make_phantom(voxel_size_mm=vs, lesions_mm=(((10.0, -8.0, 2.0), 3.3),), seed=5)
    core = ph.lesions[0]
    edge = (ndi.binary_dilation(core, FULL) & ~core & ph.brain) & (
        ndi.binary_dilation(core, np.ones((1, 1, 3), bool)) & ~core
    )
    far = ndi.binary_dilation(edge, np.ones((1, 1, 3), bool)) & ~edge & ~core & ph.brain
    far &= ~ndi.binary_dilation(core, FULL)
    assert edge.sum() > 10 and far.sum() > 10
    flair = ph.flair.copy()
    rng = np.random.default_rng(11)
    for region in (edge, far):
        flair[region] = WM[0] + 2.0 * NOISE[0] + rng.normal(0, 0.2 * NOISE[0], int(region.sum()))
    kw = dict(t1=ph.t1, priors=ph.priors, partial_volume_z=1.5)
    off = segment_lesions(flair, ph.brain, vs, **kw)
    on = segment_lesions(flair, ph.brain, vs, partial_volume_slice_mm=2.0, **kw)
    thin = segment_lesions(flair, ph.brain, (1.0, 1.0, 1.9), partial_volume_slice_mm=2.0, **kw)
    assert (off.mask & core).sum() >= 0.8 * core.sum()
    assert not (off.mask & edge).any()
    assert not (thin.mask & edge).any()
    assert (on.mask & edge).sum() >= 0.9 * edge.sum()
    assert not (on.mask & far).any()
    # nothing beyond one voxel along the slice axis from what the rule-free delineation found
    assert not (on.mask & ~ndi.binary_dilation(off.mask, np.ones((1, 1, 3), bool))).any()
    assert np.array_equal(on.mask, on.probability >= 0.5)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(threshold=0.0), "threshold"),
        (dict(shell_lesion=1), "shell_lesion"),
        (dict(partial_volume_slice_mm=-1.0), "partial_volume_slice_mm"),
        (dict(partial_volume_z=float("inf")), "partial_volume_z"),
        (dict(atlas_brain_min=1.5), "atlas_brain_min"),
        (dict(infratentorial_min_mm3=-5.0), "infratentorial_min_mm3"),
        (dict(threshold=1.5), "threshold"),
        (dict(min_volume_mm3=-1.0), "min_volume_mm3"),
        (dict(seed_z=2.0, candidate_z=3.0), "seed_z"),
        (dict(context_sigma_mm=0.0), "context_sigma_mm"),
        (dict(grow_mm=-1.0), "grow_mm"),
        (dict(wm_shell_min=1.2), "wm_shell_min"),
        (dict(csf_near_fraction=-0.1), "csf_near_fraction"),
        (dict(tissue_iterations=0), "tissue_iterations"),
        (dict(grow_z=float("nan")), "grow_z"),
    ],
)
def test_invalid_parameters_raise(phantom: Phantom, kwargs: dict, match: str) -> None:
    with pytest.raises(InputError, match=match):
        segment_lesions(phantom.flair, phantom.brain, phantom.voxel_size_mm, **kwargs)


def test_invalid_inputs_raise(phantom: Phantom) -> None:
    f, m, vs = phantom.flair, phantom.brain, phantom.voxel_size_mm
    with pytest.raises(InputError, match="voxel_size_mm"):
        segment_lesions(f, m, (1.0, 0.0, 1.0))
    with pytest.raises(InputError, match="voxel_size_mm"):
        segment_lesions(f, m, (1.0, 1.0))
    with pytest.raises(InputError, match="bool"):
        segment_lesions(f, m.astype(np.uint8), vs)
    with pytest.raises(InputError, match="empty"):
        segment_lesions(f, np.zeros_like(m), vs)
    with pytest.raises(InputError, match="3-D"):
        segment_lesions(f[0], m[0], vs)
    with pytest.raises(GeometryError, match="t1"):
        segment_lesions(f, m, vs, t1=phantom.t1[:-1])
    with pytest.raises(GeometryError, match="brain_mask"):
        segment_lesions(f, m[:-1], vs)
    bad = f.copy()
    bad[tuple(np.argwhere(m)[0])] = np.nan
    with pytest.raises(InputError, match="NaN"):
        segment_lesions(bad, m, vs)
    with pytest.raises(InputError, match="priors"):
        segment_lesions(f, m, vs, priors={"wm": phantom.priors["wm"]})
    with pytest.raises(GeometryError, match="priors"):
        segment_lesions(f, m, vs, priors={k: v[:-1] for k, v in phantom.priors.items()})


# --------------------------------------------------------------------------- real data


@pytest.mark.slow
def test_real_cs07_meets_dice_and_f1_bars(shared_data: Path, tmp_path: Path) -> None:
    """sub-cs07 with the pipeline's inputs (T1, T2, registered atlas priors): Dice and F1 >= 0.6."""
    from lesionq.config import load_protocol
    from lesionq.io.nifti import load_array, save_image
    from lesionq.steps import atlas_priors
    from lesionq.types import Volume

    anat = shared_data / "sub-cs07" / "ses-01" / "anat"
    truth = (
        shared_data / "derivatives" / "truth" / "sub-cs07" / "ses-01" / "anat"
        / "sub-cs07_ses-01_label-lesion_desc-consensus_mask.nii.gz"
    )  # fmt: skip
    scorer = shared_data.parents[1] / "eval" / "score.py"
    flair, aff = load_array(anat / "sub-cs07_ses-01_FLAIR.nii.gz")
    t1, _ = load_array(anat / "sub-cs07_ses-01_T1w.nii.gz")
    t2, _ = load_array(anat / "sub-cs07_ses-01_T2w.nii.gz")
    brain = flair != 0
    settings = load_protocol("mesems_v1")
    template = {k: v for k, v in settings.section("template").items() if k != "enabled"}
    maps = atlas_priors(
        Volume(flair, aff, "FLAIR"), Volume(brain.astype(np.uint8), aff, "mask"),
        t1=Volume(t1, aff, "T1w"), template=template,
    )  # fmt: skip
    priors = {k: np.asarray(maps.maps[k].array) for k in ("wm", "gm", "csf")}
    res = segment_lesions(
        flair, brain, (1.0, 1.0, 1.0), t1=t1, t2=t2, priors=priors,
        **dict(settings.section("segmentation")),
    )  # fmt: skip
    pred = tmp_path / "pred.nii.gz"
    save_image(res.mask.astype(np.uint8), aff, pred)
    out = subprocess.run(
        [sys.executable, str(scorer), "lesions", str(pred), str(truth)],
        check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip
    score = json.loads(out)
    assert score["dice"] >= 0.60, score
    assert score["f1"] >= 0.60, score


def test_shell_fraction_leaves_out_excluded_voxels():
    """Rule (c): CSF around a periventricular lesion is neither WM nor non-WM."""
    from lesionq.core.segmentation import _shell_fraction

    labels = np.zeros((20, 20, 20), np.int32)
    labels[8:12, 8:12, 8:12] = 1
    wm = np.zeros(labels.shape, bool)
    wm[:, :10, :] = True  # white matter on one side...
    csf = np.zeros(labels.shape, bool)
    csf[:, 10:, :] = True  # ...ventricle on the other
    csf &= labels == 0
    plain = _shell_fraction(labels, 1, wm, 2.0, (1.0, 1.0, 1.0))[0]
    excl = _shell_fraction(labels, 1, wm, 2.0, (1.0, 1.0, 1.0), exclude=csf)[0]
    assert plain < 0.6
    assert excl == 1.0
