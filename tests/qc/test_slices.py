"""Slice choice, orientation and contours of lesionq.qc.slices."""

from __future__ import annotations

import numpy as np
import pytest

from lesionq.qc.slices import (
    canonical,
    canonical_index,
    choose_slices,
    contour_segments,
    display_slice,
    edge_map,
    even_slices,
    label_anchors,
    side_markers,
)

LAS = np.array([[-2.0, 0, 0, 40.0], [0, 2.0, 0, -50.0], [0, 0, 3.0, -20.0], [0, 0, 0, 1.0]])
RAS = np.array([[2.0, 0, 0, -40.0], [0, 2.0, 0, -50.0], [0, 0, 3.0, -20.0], [0, 0, 0, 1.0]])


def _random_lesions(n: int, shape=(40, 40, 30), seed: int = 3) -> np.ndarray:
    rng = np.random.default_rng(seed)
    lab = np.zeros(shape, np.int32)
    for lid in range(1, n + 1):
        size = rng.integers(1, 5, size=3)
        corner = [rng.integers(0, s - z) for s, z in zip(shape, size, strict=True)]
        sl = tuple(slice(c, c + z) for c, z in zip(corner, size, strict=True))
        lab[sl][lab[sl] == 0] = lid
    return lab


@pytest.mark.parametrize("axis", ["axial", "coronal", "sagittal"])
def test_choice_covers_every_lesion(axis: str) -> None:
    lab = _random_lesions(25)
    ids = set(np.unique(lab[lab > 0]).tolist())
    choice = choose_slices(lab, axis, max_panels=100)
    assert choice.uncovered == ()
    assert set(choice.shown_ids) == ids
    assert list(choice.indices) == sorted(choice.indices)
    ax = {"sagittal": 0, "coronal": 1, "axial": 2}[axis]
    for lid in ids:
        areas = np.array([(np.take(lab, s, axis=ax) == lid).sum() for s in range(lab.shape[ax])])
        # covered: some chosen slice shows at least half of the largest cross-section
        assert max(areas[s] for s in choice.indices) >= 0.5 * areas.max()
        assert choice.best[lid] == int(areas.argmax())
    for s, vis in zip(choice.indices, choice.visible, strict=True):
        assert set(vis) == set(np.unique(np.take(lab, s, axis=ax))) - {0}


def test_choice_respects_max_panels_and_reports_uncovered() -> None:
    lab = np.zeros((5, 5, 30), np.int32)
    for lid in range(1, 11):  # ten lesions on ten different slices
        lab[2, 2, 3 * lid - 2] = lid
    choice = choose_slices(lab, max_panels=4)
    assert len(choice.indices) == 4
    assert len(choice.uncovered) == 6
    assert set(choice.uncovered) | set(choice.shown_ids) == set(range(1, 11))


def test_choice_empty_and_even_slices() -> None:
    choice = choose_slices(np.zeros((4, 4, 4), int))
    assert choice.indices == () and choice.uncovered == ()
    vol = np.zeros((4, 4, 50))
    vol[..., 10:41] = 1
    s = even_slices(vol, "axial", 6)
    assert len(s) == 6 and s[0] >= 10 and s[-1] <= 40


@pytest.mark.parametrize("affine", [LAS, RAS], ids=["LAS", "RAS"])
def test_patient_left_marker_on_viewer_right_in_radiological(affine: np.ndarray) -> None:
    shape = (40, 30, 10)
    vol = np.zeros(shape, np.float32)
    # a voxel in the patient's LEFT hemisphere (world x < 0), posterior-ish, slice k=4
    inv = np.linalg.inv(affine)
    i, j, k = np.rint(inv @ np.array([-30.0, -30.0, -8.0, 1.0]))[:3].astype(int)
    vol[i, j, k] = 1
    ras, aff_ras = canonical(vol, affine)
    assert np.all(np.diag(aff_ras)[:3] > 0)
    ci, cj, ck = canonical_index(affine, shape, (i, j, k))
    assert ras[ci, cj, ck] == 1
    for axis, index in (("axial", ck), ("coronal", cj)):
        radio = display_slice(ras, axis, index, "radiological")
        neuro = display_slice(ras, axis, index, "neurological")
        col_r = np.argwhere(radio == 1)[0][1]
        col_n = np.argwhere(neuro == 1)[0][1]
        assert col_r > (radio.shape[1] - 1) / 2, "patient's left must be on the viewer's right"
        assert col_n < (neuro.shape[1] - 1) / 2
    assert side_markers("axial") == ("R", "L")
    assert side_markers("coronal", "neurological") == ("L", "R")
    # axial: anterior at the top; the marker is posterior (y = -30 mm of -50..8) -> lower half
    row = np.argwhere(display_slice(ras, "axial", ck) == 1)[0][0]
    assert row > (ras.shape[1] - 1) / 2
    # coronal: superior at the top; marker at z = -8 mm of -20..7 -> lower half
    row = np.argwhere(display_slice(ras, "coronal", cj) == 1)[0][0]
    assert row > (ras.shape[2] - 1) / 2


def test_contours_exact_on_a_cube() -> None:
    vol = np.zeros((12, 12, 12), bool)
    vol[3:7, 5:9, 2:6] = True  # a 4-voxel cube
    ras, _ = canonical(vol, RAS)
    img = display_slice(ras, "axial", 3)
    segs = contour_segments(img)
    rows, cols = np.nonzero(img)
    r0, r1, c0, c1 = rows.min() - 0.5, rows.max() + 0.5, cols.min() - 0.5, cols.max() + 0.5
    expected = {
        ((c0, r0), (c1, r0)),
        ((c0, r1), (c1, r1)),
        ((c0, r0), (c0, r1)),
        ((c1, r0), (c1, r1)),
    }
    got = {tuple(map(tuple, s.tolist())) for s in segs}
    assert got == expected
    assert c1 - c0 == 4 and r1 - r0 == 4
    assert contour_segments(np.zeros((3, 3), bool)).shape == (0, 2, 2)
    # an L shape: 6 merged segments, perimeter 10 pixel edges
    m = np.zeros((4, 4), bool)
    m[0:3, 0] = True
    m[2, 0:2] = True
    segs = contour_segments(m)
    assert len(segs) == 6
    assert np.abs(segs[:, 1] - segs[:, 0]).sum() == 10


def test_label_anchor_and_edges() -> None:
    lab = np.zeros((10, 10), int)
    lab[2:5, 3:6] = 4
    assert label_anchors(lab) == {4: (5.5, 1.5)}
    img = np.zeros((40, 40))
    img[10:30, 10:30] = 100
    edges = edge_map(img)
    assert edges.any()
    rows, cols = np.nonzero(edges)
    assert rows.min() >= 8 and rows.max() <= 31 and cols.min() >= 8 and cols.max() <= 31
    assert not edges[15:25, 15:25].any()
    assert not edge_map(np.ones((10, 10))).any()


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="axis"):
        display_slice(np.zeros((2, 2, 2)), "oblique", 0)
    with pytest.raises(ValueError, match="convention"):
        display_slice(np.zeros((2, 2, 2)), "axial", 0, "upside-down")
    with pytest.raises(ValueError, match="index"):
        display_slice(np.zeros((2, 2, 2)), "axial", 5)
    with pytest.raises(ValueError, match="max_panels"):
        choose_slices(np.zeros((2, 2, 2), int), max_panels=0)
