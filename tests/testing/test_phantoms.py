"""Tests of the synthetic phantoms (lesionq.testing.phantoms) and their BIDS writer."""

from __future__ import annotations

import csv
import gzip
import importlib.util
import json
import math
import re
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage as ndi

from lesionq.errors import InputError
from lesionq.testing import (
    CONTRASTS,
    LESION_STATUSES,
    TISSUE_LABELS,
    default_weeks,
    make_block_phantom,
    make_subject,
    render_lesion_labels,
    write_bids,
    write_bids_skeleton,
)
from lesionq.testing.phantoms import CSF, FAT, GM, WM

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "sample_data" / "bids"
SAMPLE_SEED = 20261125
FULL = np.ones((3, 3, 3), bool)
# a coarse grid (4 x 4 x 6 mm) renders 8x faster; the anatomy and lesions are the same
COARSE = {"shape": (48, 56, 24), "voxel_size_mm": (4.0, 4.0, 6.0)}


@pytest.fixture(scope="module")
def subject():
    """The first subject of the bundled sample data (default grid, 3 visits)."""
    return make_subject(SAMPLE_SEED, label="phantom01")


def _generate_module():
    spec = importlib.util.spec_from_file_location(
        "sample_generate", REPO / "sample_data" / "generate.py"
    )
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _world_centroid(mask: np.ndarray, affine: np.ndarray) -> np.ndarray:
    ijk = np.argwhere(mask).mean(axis=0)
    return affine[:3, :3] @ ijk + affine[:3, 3]


# --------------------------------------------------------------------------- determinism


def test_same_seed_gives_identical_arrays_and_another_seed_does_not():
    a = make_subject(11, n_visits=2, **COARSE)
    b = make_subject(11, n_visits=2, **COARSE)
    c = make_subject(12, n_visits=2, **COARSE)
    for va, vb, vc in zip(a.visits, b.visits, c.visits, strict=True):
        for k in CONTRASTS:
            np.testing.assert_array_equal(va.images[k], vb.images[k])
            assert not np.array_equal(va.images[k], vc.images[k])
        np.testing.assert_array_equal(va.lesion_ids, vb.lesion_ids)
        np.testing.assert_array_equal(va.enhancing_mask, vb.enhancing_mask)
        np.testing.assert_array_equal(va.brain_mask, vb.brain_mask)
        np.testing.assert_array_equal(va.affine, vb.affine)
        assert va.acq_time == vb.acq_time
    assert str(a.lesion_table()) == str(b.lesion_table())  # str: NaN != NaN
    assert [r["centre_x_mm"] for r in a.lesion_table()] != [
        r["centre_x_mm"] for r in c.lesion_table()
    ]


def test_first_visits_do_not_depend_on_the_number_of_visits():
    short = make_subject(5, n_visits=2, **COARSE)
    long = make_subject(5, n_visits=4, **COARSE)
    for vs, vl in zip(short.visits, long.visits[:2], strict=True):
        np.testing.assert_array_equal(vs.images["FLAIR"], vl.images["FLAIR"])
        np.testing.assert_array_equal(vs.lesion_ids, vl.lesion_ids)
    for ls, ll in zip(short.lesions, long.lesions, strict=False):
        assert ls.status == ll.status[:2]
    assert len(long.lesions) > len(short.lesions)  # visits 3-4 bring new lesions


def test_images_are_scanner_like_integers():
    s = make_subject(3, n_visits=1, **COARSE)
    for k in CONTRASTS:
        img = s.visits[0].images[k]
        assert img.dtype == np.float32
        assert np.array_equal(img, np.rint(img))
        assert 0 <= img.min() and img.max() <= 32767
        assert (img == 0).mean() > 0.3  # suppressed background, as in the real raw scans


# --------------------------------------------------------------------------- truth


def test_statuses_match_the_masks_across_visits(subject):
    rows = subject.lesion_table()
    by = {(r["lesion_id"], r["visit"]): r for r in rows}
    assert {r["status"] for r in rows} <= set(LESION_STATUSES)
    for les in subject.lesions:
        for v in range(subject.n_visits):
            r = by[les.lesion_id, v]
            n = int(np.count_nonzero(subject.visits[v].lesion_ids == les.lesion_id))
            assert r["mask_voxels"] == n
            if r["status"] == "absent":
                assert n == 0 and r["volume_mm3"] == 0
                continue
            assert n >= 3, f"lesion {les.lesion_id} visit {v}: only {n} voxels"
            prev = by.get((les.lesion_id, v - 1))
            if r["status"] == "new":
                assert prev["status"] == "absent" and prev["mask_voxels"] == 0
            elif r["status"] == "baseline":
                assert v == 0
            elif r["status"] == "stable":
                assert r["volume_mm3"] == pytest.approx(prev["volume_mm3"])
                assert 0.5 <= n / prev["mask_voxels"] <= 2.0
            elif r["status"] == "enlarging":
                assert r["volume_mm3"] / prev["volume_mm3"] >= 2.0
                assert n / prev["mask_voxels"] >= 1.5
            elif r["status"] == "shrinking":
                assert r["volume_mm3"] / prev["volume_mm3"] <= 0.55
                assert n / prev["mask_voxels"] <= 0.75


def test_each_follow_up_has_new_enlarging_shrinking_and_enhancing_lesions(subject):
    for v in (1, 2):
        st = [les.status[v] for les in subject.lesions]
        assert st.count("enlarging") == 1 and st.count("shrinking") == 1 and st.count("new") >= 1
        assert any(les.status[v] == "new" and les.enhancing(v) for les in subject.lesions)
    for les in subject.lesions:  # enhancement lasts one visit
        assert sum(e != "none" for e in les.enhancement) <= 1


def test_each_lesion_is_one_separate_component(subject):
    for v in subject.visits:
        present = {les.lesion_id for les in subject.lesions if les.present(v.index)}
        assert set(np.unique(v.lesion_ids)) - {0} == present
        _, n = ndi.label(v.lesion_mask, FULL)
        assert n == len(present)  # no two lesions touch
        for lid in present:
            assert ndi.label(v.lesion_ids == lid, FULL)[1] == 1


def test_lesions_lie_in_white_matter_and_enhance_only_on_ce_t1(subject):
    for v in subject.visits:
        # lesions sit in white matter: their neighbours are white matter, or the CSF of a
        # ventricle for periventricular ones (partial volume aside)
        ring = ndi.binary_dilation(v.lesion_mask, FULL) & ~v.lesion_mask
        around = v.tissue[ring]
        assert np.isin(around, (WM, CSF)).mean() > 0.97
        assert (around == WM).mean() > 0.85
        enh_ids = [les.lesion_id for les in subject.lesions if les.enhancing(v.index)]
        np.testing.assert_array_equal(v.enhancing_mask, np.isin(v.lesion_ids, enh_ids))
        diff = v.images["ce-gadolinium_T1w"] - v.images["T1w"]
        quiet = v.lesion_mask & ~v.enhancing_mask
        assert abs(diff[quiet].mean()) < 15
        if v.enhancing_mask.any():
            assert diff[v.enhancing_mask].mean() > 40
            wm = v.images["ce-gadolinium_T1w"][v.tissue == WM].mean()
            for lid in enh_ids:
                les = subject.lesions[lid - 1]
                m = v.lesion_ids == lid
                top = v.images["ce-gadolinium_T1w"][m].max()
                assert top > 1.15 * wm, (
                    f"lesion {lid} ({les.enhancement[v.index]}) not bright on ce-T1"
                )


def test_change_masks_mark_only_what_changed(subject):
    for vi in (1, 2):
        v = subject.visits[vi]
        newenl, shrink = subject.change_masks(vi)
        for les in subject.lesions:
            cur = v.lesion_ids == les.lesion_id
            st = les.status[vi]
            if st == "new":
                assert np.array_equal(newenl & cur, cur)
            elif st == "enlarging":
                part = newenl & cur
                assert 0 < part.sum() < cur.sum()
            elif st == "shrinking":
                assert (shrink & ~cur).any() and not (shrink & cur).any()
            else:
                assert not (newenl & cur).any()
        # the previous visit's lesions drawn on this grid: the enlarging lesion was smaller
        prev = render_lesion_labels(subject.lesions, vi - 1, v.affine, v.motion, v.lesion_ids.shape)
        assert np.count_nonzero(prev) != np.count_nonzero(v.lesion_ids)


def test_contrast_orderings_hold_within_tissues(subject):
    v = subject.visits[0]
    plane = np.zeros((3, 3, 1), bool)
    plane[1, :, 0] = plane[:, 1, 0] = True

    def mean(img, label):
        m = ndi.binary_erosion(v.tissue == label, plane) if label != 5 else v.tissue == 5
        return float(img[m].mean())

    f, t1, t2 = v.images["FLAIR"], v.images["T1w"], v.images["T2w"]
    assert mean(f, CSF) < mean(f, WM) < mean(f, GM) < mean(f, 5)  # FLAIR: CSF dark, lesion bright
    assert mean(f, 5) > 1.4 * mean(f, WM)
    assert mean(t1, CSF) < mean(t1, GM) < mean(t1, WM)  # T1
    assert mean(t1, 5) < mean(t1, GM)  # lesions hypointense
    assert mean(t1, FAT) > mean(t1, WM)  # scalp fat bright on T1
    assert mean(t2, WM) < mean(t2, GM) < mean(t2, 5) < mean(t2, CSF)  # T2
    assert TISSUE_LABELS[5] == "lesion"


def test_brain_stays_inside_the_field_of_view(subject):
    for v in subject.visits:
        idx = np.argwhere(v.brain_mask)
        shape = np.array(v.brain_mask.shape)
        assert (idx.min(axis=0) >= [4, 4, 1]).all() and (idx.max(axis=0) <= shape - [5, 5, 2]).all()
        head = np.argwhere(v.tissue > 0)
        assert head[:, 0].min() >= 2 and head[:, 0].max() <= shape[0] - 3  # not cut left-right
        assert head[:, 1].min() >= 2 and head[:, 1].max() <= shape[1] - 3
        vol_ml = v.brain_mask.sum() * np.prod(v.voxel_size_mm) / 1000
        assert 600 < vol_ml < 1200  # head_scale 0.9: a small adult brain


def test_bias_field_and_noise_are_present():
    clean = make_subject(4, n_visits=1, snr=1e6, bias_strength=0.0, **COARSE).visits[0]
    dirty = make_subject(4, n_visits=1, **COARSE).visits[0]
    wm = ndi.binary_erosion(clean.tissue == WM, iterations=1)
    assert clean.images["FLAIR"][wm].std() < 0.02 * clean.images["FLAIR"][wm].mean()
    assert dirty.images["FLAIR"][wm].std() > 0.06 * dirty.images["FLAIR"][wm].mean()
    noisy_bg = make_subject(4, n_visits=1, zero_background=False, **COARSE).visits[0]
    air = noisy_bg.tissue == 0
    assert noisy_bg.images["FLAIR"][air].mean() > 2.0  # Rician floor in the air


# --------------------------------------------------------------------------- motion


def test_motion_is_bounded_and_nontrivial(subject):
    assert subject.visits[0].motion.rotation_deg == (0.0, 0.0, 0.0)
    for v in subject.visits[1:]:
        rot, tra = np.abs(v.motion.rotation_deg), np.abs(v.motion.translation_mm)
        assert (rot <= 3.0).all() and (rot >= 1.0).all()
        assert (tra <= 3.0).all() and (tra >= 1.0).all()
        np.testing.assert_allclose(v.motion.matrix @ v.world_to_baseline, np.eye(4), atol=1e-12)


def test_undoing_the_motion_brings_lesions_and_brain_back(subject):
    base = subject.visits[0]
    brain0 = _world_centroid(base.brain_mask, base.affine)
    for v in subject.visits:
        back = v.world_to_baseline
        for les in subject.lesions:
            if not les.present(v.index):
                continue
            c = _world_centroid(v.lesion_ids == les.lesion_id, v.affine)
            c_head = back[:3, :3] @ c + back[:3, 3]
            assert np.linalg.norm(c_head - les.centres_mm[v.index]) < 1.2, (les.lesion_id, v.index)
        b = _world_centroid(v.brain_mask, v.affine)
        assert np.linalg.norm(back[:3, :3] @ b + back[:3, 3] - brain0) < 0.5
        if v.index:
            assert np.linalg.norm(b - brain0) > 1.0  # the head did move
    rows = [r for r in subject.lesion_table() if r["visit"] == 2 and r["status"] != "absent"]
    m = subject.visits[2].motion.matrix
    for r in rows:
        head = np.array([r["head_x_mm"], r["head_y_mm"], r["head_z_mm"]])
        world = np.array([r["centre_x_mm"], r["centre_y_mm"], r["centre_z_mm"]])
        np.testing.assert_allclose(m[:3, :3] @ head + m[:3, 3], world, atol=1e-9)


# --------------------------------------------------------------------------- helpers


def test_block_phantom():
    b = make_block_phantom()
    assert b.image.shape == (32, 32, 16) and b.image.dtype == np.float32
    assert set(np.unique(b.lesion_ids)) == {0, 1, 2}
    # radius 3 mm on 1x1x2 mm voxels, centred on a voxel (inclusive rule): 29 voxels in
    # the centre slice (i2 + j2 <= 9) and 21 in each neighbour slice (i2 + j2 <= 5)
    assert (b.lesion_ids == 1).sum() == 29 + 2 * 21
    assert np.all(b.image[b.lesion_ids > 0] == 200) and b.image[0, 0, 0] == 0
    noisy = make_block_phantom(noise_sd=5.0, seed=1)
    assert 4.0 < float(np.std(noisy.image[noisy.brain_mask & (noisy.lesion_ids == 0)])) < 6.0


def test_bad_parameters_raise():
    with pytest.raises(InputError, match="n_visits"):
        make_subject(1, n_visits=0)
    with pytest.raises(InputError, match="weeks"):
        make_subject(1, n_visits=2, weeks=(0, 0))
    with pytest.raises(InputError, match="n_baseline"):
        make_subject(1, n_baseline=2, **COARSE)
    assert default_weeks(5) == (0, 4, 12, 24, 36)


# --------------------------------------------------------------------------- BIDS


def test_write_bids_layout_and_truth(tmp_path):
    s = make_subject(8, label="p1", **COARSE)
    files = write_bids([s], tmp_path)
    assert all(f.is_file() for f in files)
    desc = json.loads((tmp_path / "dataset_description.json").read_text())
    assert desc["BIDSVersion"] and desc["DatasetType"] == "raw"
    parts = list(csv.DictReader(open(tmp_path / "participants.tsv"), delimiter="\t"))
    assert parts == [{"participant_id": "sub-p1", "seed": "8", "n_sessions": "3"}]
    sessions = list(
        csv.DictReader(open(tmp_path / "sub-p1" / "sub-p1_sessions.tsv"), delimiter="\t")
    )
    assert [r["session_id"] for r in sessions] == ["ses-01", "ses-02", "ses-03"]
    assert [r["week"] for r in sessions] == ["0", "4", "12"]
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d", r["acq_time"]) for r in sessions)
    for v in s.visits:
        for k in CONTRASTS:
            img = nib.load(
                tmp_path
                / "sub-p1"
                / f"ses-{v.session}"
                / "anat"
                / f"sub-p1_ses-{v.session}_{k}.nii.gz"
            )
            assert img.get_data_dtype() == np.int16
            np.testing.assert_array_equal(np.asarray(img.dataobj), v.images[k])
            np.testing.assert_allclose(img.affine, v.affine, atol=1e-5)
            assert int(img.header["sform_code"]) == 1 and int(img.header["qform_code"]) == 1
        tdir = tmp_path / "derivatives" / "truth" / "sub-p1" / f"ses-{v.session}" / "anat"
        ids = np.asarray(
            nib.load(tdir / f"sub-p1_ses-{v.session}_desc-lesionid_dseg.nii.gz").dataobj
        )
        np.testing.assert_array_equal(ids, v.lesion_ids)
        mask = np.asarray(
            nib.load(tdir / f"sub-p1_ses-{v.session}_label-lesion_mask.nii.gz").dataobj
        )
        np.testing.assert_array_equal(mask > 0, v.lesion_mask)
        assert (tdir / f"sub-p1_ses-{v.session}_label-brain_mask.nii.gz").is_file()
        assert (
            tdir / f"sub-p1_ses-{v.session}_label-lesionchange_desc-newenlarging_mask.nii.gz"
        ).is_file() == (v.index > 0)
    rows = list(
        csv.DictReader(
            open(tmp_path / "derivatives/truth/sub-p1/sub-p1_lesions.tsv"), delimiter="\t"
        )
    )
    assert len(rows) == len(s.lesions) * 3
    assert {r["status"] for r in rows} <= set(LESION_STATUSES)
    visits = list(
        csv.DictReader(
            open(tmp_path / "derivatives/truth/sub-p1/sub-p1_visits.tsv"), delimiter="\t"
        )
    )
    assert int(visits[1]["n_new"]) >= 1 and int(visits[1]["n_enlarging"]) == 1
    truth = json.loads((tmp_path / "derivatives/truth/sub-p1/sub-p1_truth.json").read_text())
    assert truth["seed"] == 8 and len(truth["sessions"]) == 3
    np.testing.assert_allclose(
        truth["sessions"][2]["head_to_world"], s.visits[2].motion.matrix, atol=1e-6
    )
    # writing again gives the same bytes
    again = write_bids([s], tmp_path / "again")
    for f, g in zip(files, again, strict=True):
        assert f.read_bytes() == g.read_bytes(), f


def test_itk_transform_maps_common_points_to_session_points(tmp_path):
    sitk = pytest.importorskip("SimpleITK")
    s = make_subject(8, label="p1", **COARSE)
    write_bids([s], tmp_path, contrasts=())
    les = next(le for le in s.lesions if le.present(2))
    xfm = (
        tmp_path
        / "derivatives/truth/sub-p1/ses-03/xfm/sub-p1_ses-03_from-FLAIR_to-common_mode-image_xfm.txt"
    )
    t = sitk.ReadTransform(str(xfm))
    head = les.centres_mm[2]
    lps = t.TransformPoint((-head[0], -head[1], head[2]))
    m = s.visits[2].motion.matrix
    world = m[:3, :3] @ head + m[:3, 3]
    np.testing.assert_allclose([-lps[0], -lps[1], lps[2]], world, atol=1e-6)


def test_write_bids_skeleton_misses_contrasts_but_keeps_truth(tmp_path):
    s = make_subject(8, label="p1", n_visits=2, **COARSE)
    write_bids_skeleton([s], tmp_path)
    anat1 = sorted(p.name for p in (tmp_path / "sub-p1/ses-01/anat").iterdir())
    anat2 = sorted(p.name for p in (tmp_path / "sub-p1/ses-02/anat").iterdir())
    assert len(anat1) == 4 and anat2 == ["sub-p1_ses-02_FLAIR.nii.gz"]
    assert (
        tmp_path / "derivatives/truth/sub-p1/ses-02/anat/sub-p1_ses-02_label-lesion_mask.nii.gz"
    ).is_file()
    with pytest.raises(InputError, match="unknown"):
        write_bids([s], tmp_path / "x", contrasts=("FLAIR", "DWI"))
    with pytest.raises(InputError, match="duplicate"):
        write_bids([s, s], tmp_path / "y")


# --------------------------------------------------------------------------- bundled data


def _same_image(a: Path, b: Path) -> bool:
    ia, ib = nib.load(a), nib.load(b)
    if ia.shape != ib.shape or not np.allclose(ia.affine, ib.affine, atol=1e-6):
        return False
    da, db = np.asarray(ia.dataobj), np.asarray(ib.dataobj)
    # same machine: identical; another CPU may flip a few sample points at tissue borders
    return float(np.mean(da != db)) <= 1e-4


def _same_text(a: Path, b: Path) -> bool:
    ta, tb = a.read_text(), b.read_text()
    if ta == tb:
        return True
    # tolerate last-digit float differences and single-voxel count changes
    na = re.split(r"(-?\d+\.?\d*(?:e-?\d+)?)", ta)
    nb = re.split(r"(-?\d+\.?\d*(?:e-?\d+)?)", tb)
    if len(na) != len(nb):
        return False
    for x, y in zip(na, nb, strict=True):
        if x == y:
            continue
        try:
            fx, fy = float(x), float(y)
        except ValueError:
            return False
        if not math.isclose(fx, fy, rel_tol=0.05, abs_tol=1e-3):
            return False
    return True


def test_bundled_sample_matches_the_generator_for_phantom01(subject, tmp_path):
    """Fast check: the first bundled subject equals a fresh make_subject (images and truth)."""
    if not (SAMPLE / "dataset_description.json").is_file():
        pytest.skip(f"{SAMPLE} not generated (run: python sample_data/generate.py)")
    write_bids([subject], tmp_path, contrasts=())
    for v in subject.visits:
        for k in CONTRASTS:
            p = (
                SAMPLE
                / "sub-phantom01"
                / f"ses-{v.session}"
                / "anat"
                / f"sub-phantom01_ses-{v.session}_{k}.nii.gz"
            )
            data = np.asarray(nib.load(p).dataobj)
            assert float(np.mean(data != v.images[k])) <= 1e-4, p
    fresh = tmp_path / "derivatives" / "truth" / "sub-phantom01"
    for f in sorted(fresh.rglob("*")):
        if f.is_file():
            g = SAMPLE / "derivatives" / "truth" / "sub-phantom01" / f.relative_to(fresh)
            ok = _same_image(f, g) if f.name.endswith(".nii.gz") else _same_text(f, g)
            assert ok, f"{g} differs from a regeneration"


@pytest.mark.slow
def test_bundled_sample_equals_a_full_regeneration(tmp_path):
    if not (SAMPLE / "dataset_description.json").is_file():
        pytest.skip(f"{SAMPLE} not generated (run: python sample_data/generate.py)")
    gen = _generate_module()
    gen.generate(tmp_path / "bids", SAMPLE_SEED)
    exact = gen.compare(SAMPLE, tmp_path / "bids")
    for line in exact:
        assert line.startswith("differs: "), line  # same file set
        p = line.removeprefix("differs: ")
        a, b = SAMPLE / p, tmp_path / "bids" / p
        assert _same_image(a, b) if p.endswith(".nii.gz") else _same_text(a, b), p
    assert gzip.decompress(
        (SAMPLE / "sub-phantom01/ses-01/anat/sub-phantom01_ses-01_FLAIR.nii.gz").read_bytes()
    )


def test_bundled_sample_is_small():
    if not SAMPLE.is_dir():
        pytest.skip(f"{SAMPLE} not generated")
    size = sum(p.stat().st_size for p in SAMPLE.rglob("*") if p.is_file())
    assert size < 5_000_000
