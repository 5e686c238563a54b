"""Rules of lesionq.core.change on small synthetic volumes (one test per rule)."""

from __future__ import annotations

import numpy as np
import pytest

from lesionq.core.change import (
    STATUS_CODES,
    change_candidates,
    classify_change,
    detect_change,
    difference_evidence,
    enlargement_threshold_mm3,
    quantile_match,
    resolution_sigma_mm,
    track_lesions,
)
from lesionq.errors import ConfigError, InputError

VS = (1.0, 1.0, 1.0)
RULES = dict(
    enlarge_small_fraction=0.45,
    enlarge_large_fraction=0.25,
    large_volume_mm3=100.0,
    enlarge_min_mm3=10.0,
)


def box(shape, lo, hi):
    m = np.zeros(shape, bool)
    m[tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))] = True
    return m


SHAPE = (30, 30, 30)


def classify(later, earlier, **kw):
    kw.setdefault("min_volume_mm3", 3.0)
    return classify_change(later, earlier, VS, **kw)


# --------------------------------------------------------------------------- growth rule


def test_threshold_small_lesion_uses_small_fraction():
    assert enlargement_threshold_mm3(80.0, **RULES) == pytest.approx(36.0)


def test_threshold_large_lesion_uses_large_fraction():
    assert enlargement_threshold_mm3(400.0, **RULES) == pytest.approx(100.0)


def test_threshold_never_below_absolute_minimum():
    assert enlargement_threshold_mm3(8.0, **RULES) == pytest.approx(10.0)


def test_threshold_rejects_negative_parameter():
    with pytest.raises(ConfigError, match="enlarge_min_mm3"):
        enlargement_threshold_mm3(8.0, **{**RULES, "enlarge_min_mm3": -1.0})


# --------------------------------------------------------------------------- new


def test_new_lesion_absent_before():
    later = box(SHAPE, (5, 5, 5), (8, 8, 8))
    res = classify(later, np.zeros(SHAPE, bool), **RULES)
    assert res.status == ("new",)
    assert res.previous_volume_mm3[0] == 0


def test_new_lesion_needs_evidence_when_evidence_given():
    later = box(SHAPE, (5, 5, 5), (8, 8, 8))
    weak = np.full(SHAPE, 1.0, np.float32)
    strong = np.full(SHAPE, 3.0, np.float32)
    assert classify(later, ~later & False, evidence=weak, new_min_evidence=2.0).status == (
        "stable",
    )
    assert classify(later, ~later & False, evidence=strong, new_min_evidence=2.0).status == ("new",)


def test_new_lesion_below_minimum_volume_is_ignored():
    later = box(SHAPE, (5, 5, 5), (6, 6, 7))  # 2 voxels
    res = classify(later, np.zeros(SHAPE, bool), **RULES)
    assert res.n == 0


def test_marginal_overlap_with_earlier_lesion_still_new():
    earlier = box(SHAPE, (2, 5, 5), (5, 8, 8))
    later = box(SHAPE, (4, 5, 5), (14, 8, 8))  # 10 % of it overlaps the old lesion
    res = classify(later, earlier, new_max_overlap_fraction=0.1, **RULES)
    assert res.status == ("new",)
    res = classify(later, earlier, new_max_overlap_fraction=0.05, **RULES)
    assert res.status == ("enlarging",)


# --------------------------------------------------------------------------- enlarging


def test_enlarging_when_growth_exceeds_threshold():
    earlier = box(SHAPE, (5, 5, 5), (9, 9, 9))  # 64 mm3 -> needs 28.8 mm3 growth
    later = box(SHAPE, (5, 5, 5), (11, 9, 9))  # 96 mm3, +32
    res = classify(later, earlier, **RULES)
    assert res.status == ("enlarging",)
    assert res.grown_volume_mm3[0] == pytest.approx(32.0)


def test_growth_below_threshold_is_stable():
    earlier = box(SHAPE, (5, 5, 5), (9, 9, 9))  # 64
    later = box(SHAPE, (5, 5, 5), (10, 9, 9))  # 80, +16 < 28.8
    assert classify(later, earlier, **RULES).status == ("stable",)


def test_large_lesion_uses_smaller_fraction():
    earlier = box(SHAPE, (5, 5, 5), (15, 10, 10))  # 250 mm3 -> 62.5 needed
    later = box(SHAPE, (5, 5, 5), (18, 10, 10))  # 325, +75
    assert classify(later, earlier, **RULES).status == ("enlarging",)
    later = box(SHAPE, (5, 5, 5), (17, 10, 10))  # 300, +50: below 25 %
    assert classify(later, earlier, **RULES).status == ("stable",)


def test_enlarging_needs_evidence_in_grown_part():
    earlier = box(SHAPE, (5, 5, 5), (9, 9, 9))
    later = box(SHAPE, (5, 5, 5), (11, 9, 9))
    ev = np.zeros(SHAPE, np.float32)
    assert classify(later, earlier, evidence=ev, enlarge_min_evidence=1.5, **RULES).status == (
        "stable",
    )
    ev[9:11] = 2.0
    assert classify(later, earlier, evidence=ev, enlarge_min_evidence=1.5, **RULES).status == (
        "enlarging",
    )


# --------------------------------------------------------------------------- shrinking, resolved


def test_shrinking_and_resolved():
    earlier = box(SHAPE, (5, 5, 5), (11, 9, 9)) | box(SHAPE, (20, 20, 20), (23, 23, 23))
    later = box(SHAPE, (5, 5, 5), (8, 9, 9))  # 96 -> 48 mm3
    res = classify(later, earlier, **RULES)
    assert res.status == ("shrinking",)
    assert len(res.resolved) == 1


# --------------------------------------------------------------------------- merge, split


def test_merge_compares_group_volumes():
    a = box(SHAPE, (5, 5, 5), (9, 9, 9))
    b = box(SHAPE, (11, 5, 5), (15, 9, 9))
    merged = box(SHAPE, (5, 5, 5), (15, 9, 9))  # 160 vs 128: +32 < 0.25 * 128? no: 32 >= 32
    res = classify(merged, a | b, **RULES)
    assert res.n == 1 and res.previous_volume_mm3[0] == pytest.approx(128.0)
    assert res.status == ("enlarging",)
    res = classify(merged, a | b | box(SHAPE, (9, 5, 5), (11, 9, 9)), **RULES)
    assert res.status == ("stable",)  # it was one lesion of the same size


def test_split_pieces_share_the_group_status():
    earlier = box(SHAPE, (5, 5, 5), (14, 9, 9))  # 144
    later = box(SHAPE, (5, 5, 5), (9, 9, 9)) | box(SHAPE, (10, 5, 5), (14, 9, 9))  # 2 x 64
    res = classify(later, earlier, **RULES)
    assert res.n == 2
    assert res.group[0] == res.group[1]
    assert set(res.status) == {"stable"}  # 128 vs 144: loss 16 < 0.25 * 128
    assert res.previous_volume_mm3.tolist() == [144.0, 144.0]
    later = box(SHAPE, (5, 5, 5), (8, 9, 9)) | box(SHAPE, (11, 5, 5), (14, 9, 9))  # 2 x 48
    assert set(classify(later, earlier, **RULES).status) == {"shrinking"}


def test_status_image_codes():
    later = box(SHAPE, (5, 5, 5), (8, 8, 8))
    res = classify(later, np.zeros(SHAPE, bool), **RULES)
    img = res.status_image()
    assert set(np.unique(img)) == {0, STATUS_CODES["new"]}
    assert res.mask().sum() == 27


def test_shape_mismatch_is_an_error():
    with pytest.raises(InputError, match="shape"):
        classify(np.zeros(SHAPE, bool), np.zeros((3, 3, 3), bool))


# --------------------------------------------------------------------------- image steps


def test_quantile_match_undoes_monotone_drift():
    rng = np.random.default_rng(1)
    ref = rng.gamma(4.0, 20.0, SHAPE).astype(np.float32)
    moving = np.sqrt(ref) * 7 + 3  # non-linear scanner drift
    out = quantile_match(moving, ref, np.ones(SHAPE, bool))
    inner = (ref > np.percentile(ref, 1)) & (ref < np.percentile(ref, 99))
    assert np.abs(out - ref)[inner].max() < 0.05 * ref.std()


def test_resolution_sigma_only_on_coarser_axis():
    s = resolution_sigma_mm((1, 1, 3), (1, 1, 4))
    assert s[0] == 0 and s[1] == 0 and s[2] == pytest.approx(np.sqrt(7) / 2.3548, rel=1e-3)


def test_difference_evidence_is_robust_z():
    rng = np.random.default_rng(2)
    earlier = rng.normal(100, 5, SHAPE).astype(np.float32)
    later = earlier + rng.normal(0, 2, SHAPE).astype(np.float32)
    later[10:14, 10:14, 10:14] += 20  # a rise of 10 noise SDs
    ev = difference_evidence(later, earlier, np.ones(SHAPE, bool), VS, smoothing_mm=0.0)
    assert 8 < np.median(ev[10:14, 10:14, 10:14]) < 12
    assert abs(np.median(ev)) < 0.1


def test_candidates_need_a_seed_and_hyperintensity():
    ev = np.zeros(SHAPE, np.float32)
    ev[5:8, 5:8, 5:8] = 3.0
    ev[6, 6, 6] = 5.0  # seeded
    ev[20:23, 20:23, 20:23] = 3.0  # never reaches the seed
    lz = np.full(SHAPE, 2.0, np.float32)
    region = np.ones(SHAPE, bool)
    c = change_candidates(ev, lz, region, seed_z=4.0, grow_z=2.5, later_min_z=1.5)
    assert c[5:8, 5:8, 5:8].all() and not c[20:23, 20:23, 20:23].any()
    c = change_candidates(ev, lz * 0, region, seed_z=4.0, grow_z=2.5, later_min_z=1.5)
    assert not c.any()
    with pytest.raises(ConfigError, match="grow_z"):
        change_candidates(ev, lz, region, seed_z=2.0, grow_z=3.0, later_min_z=1.5)


def _brain_pair(seed=0):
    rng = np.random.default_rng(seed)
    shape = (40, 40, 20)
    brain = np.zeros(shape, bool)
    brain[4:36, 4:36, 2:18] = True
    base = np.where(brain, 100.0, 0.0) + rng.normal(0, 3, shape)
    later = base + rng.normal(0, 3, shape)
    return shape, brain, base.astype(np.float32), later.astype(np.float32)


def test_detect_change_finds_a_new_lesion_and_ignores_drift():
    shape, brain, earlier, later = _brain_pair()
    later[18:22, 18:22, 8:12] += 60  # new lesion, 64 mm3
    lesion = np.zeros(shape, bool)
    lesion[18:22, 18:22, 8:12] = True
    earlier_drift = earlier * 1.3 + 10  # scanner gain change
    res, matched = detect_change(
        later, earlier_drift, brain, brain, lesion, np.zeros(shape, bool), VS, min_volume_mm3=3.0
    )
    assert res.status == ("new",)
    assert abs(np.median(matched[brain]) - np.median(later[brain])) < 1.0


def test_detect_change_same_lesion_both_visits_is_stable():
    shape, brain, earlier, later = _brain_pair(3)
    lesion = np.zeros(shape, bool)
    lesion[18:22, 18:22, 8:12] = True
    earlier[lesion] += 60
    later[lesion] += 60
    # the earlier segmentation missed it: no intensity rise, so not new
    res, _ = detect_change(
        later, earlier, brain, brain, lesion, np.zeros(shape, bool), VS, min_volume_mm3=3.0
    )
    assert res.status == ("stable",)


def test_detect_change_enlarging_lesion_grows_into_candidates():
    shape, brain, earlier, later = _brain_pair(4)
    old = np.zeros(shape, bool)
    old[16:20, 16:20, 8:12] = True
    new = np.zeros(shape, bool)
    new[16:24, 16:20, 8:12] = True
    earlier[old] += 60
    later[new] += 60
    # the later cross-sectional mask saw only the old part: the rise next to it is growth
    res, _ = detect_change(later, earlier, brain, brain, old, old, VS, min_volume_mm3=3.0)
    assert res.status == ("enlarging",)
    assert res.volume_mm3[0] >= 100


def test_detect_change_is_deterministic():
    shape, brain, earlier, later = _brain_pair(5)
    later[18:22, 18:22, 8:12] += 60
    lesion = later > 140
    a, _ = detect_change(later, earlier, brain, brain, lesion, lesion * 0, VS, min_volume_mm3=3.0)
    b, _ = detect_change(later, earlier, brain, brain, lesion, lesion * 0, VS, min_volume_mm3=3.0)
    assert np.array_equal(a.labels, b.labels) and a.status == b.status


# --------------------------------------------------------------------------- tracking


def test_tracking_keeps_ids_and_starts_new_tracks():
    a = np.zeros(SHAPE, int)
    a[2:5, 2:5, 2:5] = 1
    a[20:23, 20:23, 20:23] = 2
    b = np.zeros(SHAPE, int)
    b[20:24, 20:23, 20:23] = 1  # lesion 2 of visit 1 (relabelled 1)
    b[10:12, 10:12, 10:12] = 2  # new
    t = track_lesions([a, b])
    assert t[0][1].track_id == 1 and t[0][2].track_id == 2
    assert t[1][1].track_id == 2
    assert t[1][2].track_id == 3 and t[1][2].parent_track_id == 0


def test_tracking_remembers_resolved_tracks():
    a = np.zeros(SHAPE, int)
    a[2:5, 2:5, 2:5] = 1
    empty = np.zeros(SHAPE, int)
    t = track_lesions([a, empty, a])
    assert t[1] == {} and t[2][1].track_id == 1


def test_tracking_merge_keeps_largest_overlap():
    a = np.zeros(SHAPE, int)
    a[2:5, 2:5, 2:5] = 1
    a[6:8, 2:5, 2:5] = 2
    b = np.zeros(SHAPE, int)
    b[2:8, 2:5, 2:5] = 1
    t = track_lesions([a, b])
    assert t[1][1].track_id == 1


def test_boundary_layer_ignores_one_voxel_rim_growth():
    earlier = box(SHAPE, (5, 5, 5), (9, 9, 9))
    later = box(SHAPE, (4, 4, 4), (10, 10, 10))  # one-voxel rim all round: 216 vs 64
    ev = np.full(SHAPE, 3.0, np.float32)
    kw = dict(evidence=ev, enlarge_min_evidence=1.5, **RULES)
    assert classify(later, earlier, boundary_layer_voxels=0, **kw).status == ("enlarging",)
    assert classify(later, earlier, boundary_layer_voxels=1, **kw).status == ("stable",)


def test_white_matter_rule_demotes_new_lesions_outside_white_matter():
    shape, brain, earlier, later = _brain_pair(6)
    later[18:22, 18:22, 8:12] += 60
    lesion = np.zeros(shape, bool)
    lesion[18:22, 18:22, 8:12] = True
    wm = np.zeros(shape, np.float32)
    kw = dict(min_volume_mm3=3.0, new_min_wm_prior=0.4)
    none = np.zeros(shape, bool)
    res, _ = detect_change(later, earlier, brain, brain, lesion, none, VS, wm_prior=wm, **kw)
    assert res.status == ("stable",) and res.wm_prior_mean[0] == 0
    res, _ = detect_change(later, earlier, brain, brain, lesion, none, VS, wm_prior=wm + 1, **kw)
    assert res.status == ("new",)


def test_candidates_away_from_lesions_need_scope_all():
    shape, brain, earlier, later = _brain_pair(7)
    later[18:22, 18:22, 8:12] += 60  # a rise the cross-sectional mask did not see
    none = np.zeros(shape, bool)
    wm = np.ones(shape, np.float32)
    kw = dict(min_volume_mm3=3.0, wm_prior=wm)
    res, _ = detect_change(later, earlier, brain, brain, none, none, VS, **kw)
    assert res.n == 0
    res, _ = detect_change(
        later, earlier, brain, brain, none, none, VS, candidate_scope="all", **kw
    )
    assert res.status == ("new",)
