"""Combined unique active lesions (lesionq.core.activity): one test per counting rule."""

from __future__ import annotations

import numpy as np
import pytest

from lesionq.core.activity import CUA_KINDS, combined_unique_active
from lesionq.errors import ConfigError, GeometryError, InputError

SHAPE = (12, 12, 12)


def boxes(*specs, shape=SHAPE):
    """Label image with one box per spec ``(label, lo, hi)`` (hi exclusive)."""
    lab = np.zeros(shape, np.int32)
    for value, lo, hi in specs:
        lab[tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))] = value
    return lab


def test_gd_inside_new_t2_counts_once():
    gd = boxes((1, (3, 3, 3), (5, 5, 5)))
    t2 = boxes((1, (2, 2, 2), (6, 6, 6)))
    r = combined_unique_active(gd, t2)
    assert r.cua_count == 1
    assert r.kind == ("both",)
    assert r.gd_ids == ((1,),) and r.t2_ids == ((1,),)
    assert r.cua_count_additive == 1
    # the unit covers the union of both lesions
    assert int(r.n_voxels[0]) == 64
    assert np.array_equal(r.labels > 0, (gd > 0) | (t2 > 0))


def test_non_overlapping_lesions_each_count():
    gd = boxes((1, (0, 0, 0), (2, 2, 2)), (2, (0, 8, 8), (1, 9, 9)))
    t2 = boxes((1, (6, 6, 6), (9, 9, 9)))
    r = combined_unique_active(gd, t2)
    assert r.cua_count == 3
    assert r.count_by_kind() == {"gd_only": 2, "t2_only": 1, "both": 0}
    # canonical numbering: most voxels first (T2 27, Gd 8, Gd 1)
    assert r.kind == ("t2_only", "gd_only", "gd_only")
    assert r.gd_ids == ((), (1,), (2,))
    assert r.n_voxels.tolist() == [27, 8, 1]
    assert r.cua_count == r.cua_count_additive == 3


def test_chain_one_t2_two_gd_is_one_unit():
    # a new T2 lesion holding two separate enhancing foci
    gd = boxes((1, (2, 2, 2), (3, 3, 3)), (2, (2, 2, 6), (3, 3, 7)))
    t2 = boxes((1, (1, 1, 1), (4, 4, 8)))
    r = combined_unique_active(gd, t2)
    assert r.cua_count == 1
    assert r.kind == ("both",) and r.gd_ids == ((1, 2),) and r.t2_ids == ((1,),)
    # the additive formula counts each focus
    assert r.cua_count_additive == 2


def test_chain_one_gd_two_t2_is_one_unit():
    gd = boxes((1, (2, 2, 2), (3, 3, 8)))
    t2 = boxes((1, (1, 1, 1), (4, 4, 3)), (2, (1, 1, 7), (4, 4, 9)))
    r = combined_unique_active(gd, t2)
    assert r.cua_count == 1
    assert r.t2_ids == ((1, 2),)
    assert r.cua_count_additive == 1


def test_long_chain_collapses_to_one_unit():
    # gd1 - t2a - gd2 - t2b: one connected component of the overlap graph
    gd = boxes((1, (1, 1, 0), (2, 2, 2)), (2, (1, 1, 4), (2, 2, 6)))
    t2 = boxes((1, (1, 1, 1), (2, 2, 5)), (2, (1, 1, 5), (2, 2, 9)))
    r = combined_unique_active(gd, t2)
    assert r.cua_count == 1
    assert r.gd_ids == ((1, 2),) and r.t2_ids == ((1, 2),)


def test_touching_but_not_overlapping_counts_twice():
    # face-adjacent, corner-adjacent: no shared voxel, so two physical lesions
    gd = boxes((1, (2, 2, 2), (4, 4, 4)), (2, (8, 8, 8), (9, 9, 9)))
    t2 = boxes((1, (4, 2, 2), (6, 4, 4)), (2, (9, 9, 9), (10, 10, 10)))
    r = combined_unique_active(gd, t2, connectivity=26)
    assert r.cua_count == 4
    assert set(r.kind) == {"gd_only", "t2_only"}
    assert r.count_by_kind()["both"] == 0


def test_min_overlap_voxels_inclusive():
    gd = boxes((1, (2, 2, 2), (4, 4, 4)))  # 8 voxels
    t2 = boxes((1, (3, 2, 2), (6, 4, 4)))  # 12 voxels, shares 4 with gd
    assert combined_unique_active(gd, t2, min_overlap_voxels=4).cua_count == 1
    assert combined_unique_active(gd, t2, min_overlap_voxels=5).cua_count == 2


def test_lesion_wholly_inside_the_other_is_always_linked():
    gd = boxes((1, (2, 2, 2), (6, 6, 6)))
    t2 = boxes((1, (3, 3, 3), (4, 4, 5)))  # 2 voxels, all inside the Gd+ lesion
    r = combined_unique_active(gd, t2, min_overlap_voxels=10)
    assert r.cua_count == 1 and r.kind == ("both",)


def test_unlinked_shared_voxels_go_to_the_gd_unit():
    gd = boxes((1, (2, 2, 2), (4, 4, 4)))
    t2 = boxes((1, (3, 2, 2), (6, 4, 4)))
    r = combined_unique_active(gd, t2, min_overlap_voxels=5)
    gd_unit = 1 + r.kind.index("gd_only")
    assert np.all(r.labels[gd > 0] == gd_unit)
    assert r.n_voxels.sum() == np.count_nonzero((gd > 0) | (t2 > 0))


def test_bool_masks_are_labelled_with_connectivity():
    gd = np.zeros(SHAPE, bool)
    gd[2, 2, 2] = gd[3, 3, 3] = True  # corner neighbours
    t2 = np.zeros(SHAPE, bool)
    t2[8, 8, 8] = True
    assert combined_unique_active(gd, t2, connectivity=26).count_by_kind()["gd_only"] == 1
    assert combined_unique_active(gd, t2, connectivity=6).count_by_kind()["gd_only"] == 2


def test_empty_inputs():
    empty = np.zeros(SHAPE, np.int32)
    r = combined_unique_active(empty, empty)
    assert r.cua_count == 0 and r.kind == () and r.rows() == []
    assert r.labels.shape == SHAPE and not r.labels.any()
    assert r.n_voxels.shape == (0,)
    only_t2 = combined_unique_active(empty, boxes((3, (1, 1, 1), (2, 2, 2))))
    assert only_t2.cua_count == 1 and only_t2.kind == ("t2_only",)
    assert only_t2.t2_ids == ((3,),)


def test_rows_and_kinds():
    gd = boxes((1, (3, 3, 3), (5, 5, 5)), (2, (0, 0, 0), (1, 1, 1)))
    t2 = boxes((7, (2, 2, 2), (6, 6, 6)))
    rows = combined_unique_active(gd, t2).rows()
    assert rows[0] == {"cua_id": 1, "kind": "both", "gd_ids": "1", "t2_ids": "7", "n_voxels": 64}
    assert rows[1]["kind"] == "gd_only" and rows[1]["t2_ids"] == ""
    assert {r["kind"] for r in rows} <= set(CUA_KINDS)


def test_result_is_deterministic_under_label_permutation():
    gd = boxes((1, (0, 0, 0), (2, 2, 2)), (2, (5, 5, 5), (6, 6, 9)))
    t2 = boxes((1, (5, 5, 8), (7, 7, 10)), (2, (9, 9, 9), (10, 10, 10)))
    a = combined_unique_active(gd, t2)
    swapped = np.where(gd == 1, 2, np.where(gd == 2, 1, 0)).astype(np.int32)
    b = combined_unique_active(swapped, t2)
    assert np.array_equal(a.labels, b.labels)
    assert a.kind == b.kind


def test_shape_mismatch_is_an_error():
    with pytest.raises(GeometryError, match="differs"):
        combined_unique_active(np.zeros((4, 4, 4), int), np.zeros((4, 4, 5), int))


@pytest.mark.parametrize(
    "bad",
    [np.zeros((4, 4), int), np.zeros((4, 4, 4), float), -np.ones((4, 4, 4), int)],
    ids=["2d", "float", "negative"],
)
def test_bad_label_images(bad):
    with pytest.raises(InputError):
        combined_unique_active(bad, np.zeros(bad.shape, int))


@pytest.mark.parametrize("kw", [{"min_overlap_voxels": 0}, {"connectivity": 8}])
def test_bad_parameters(kw):
    z = np.zeros((3, 3, 3), int)
    with pytest.raises(ConfigError):
        combined_unique_active(z, z, **kw)
