"""Tests of the input check battery: one bad input per class, plus the real data."""

from __future__ import annotations

import dataclasses
import gzip
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from lesionq.errors import CorruptFileError, GeometryError, InputError, MissingInputError
from lesionq.io.bids import discover
from lesionq.io.checks import (
    IMAGE_CHECKS,
    VISIT_CHECKS,
    CheckLimits,
    Finding,
    LoadedImage,
    check_dataset,
    check_grids,
    check_intensities,
    check_visit,
    format_findings,
    has_errors,
    raise_on_errors,
    read_image,
)


def _only(findings: list[Finding], code: str) -> Finding:
    hits = [f for f in findings if f.code == code]
    assert len(hits) == 1, f"expected one {code!r}, got {[(f.code, f.message) for f in findings]}"
    return hits[0]


def _codes(findings: list[Finding], level: str | None = None) -> set[str]:
    return {f.code for f in findings if level is None or f.level == level}


def _assert_names_file(f: Finding, path: Path) -> None:
    assert f.path == path
    assert str(path) in f.message


# ---------------------------------------------------------------- good input


def test_good_visit_has_no_errors_or_warnings(make_visit):
    visit = make_visit(contrasts=("flair", "t1", "t2", "t1ce"))
    findings = check_visit(visit)
    assert not has_errors(findings)
    # only the orientation facts, one per image, remain
    assert [f.code for f in findings] == ["orientation"] * 4
    assert all(f.level == "info" and "RAS" in f.message for f in findings)


def test_battery_is_a_list_of_single_checks():
    assert len(IMAGE_CHECKS) >= 8 and len(VISIT_CHECKS) >= 5
    img = LoadedImage.from_array(np.zeros((10, 10, 10), np.float32), np.eye(4))
    assert [f.code for f in check_intensities(img, CheckLimits())] == ["empty-image"]


# ---------------------------------------------------------------- unreadable files


def test_truncated_gzip(make_visit):
    visit = make_visit()
    data = visit.flair.read_bytes()
    visit.flair.write_bytes(data[: len(data) // 2])
    f = _only(check_visit(visit), "truncated")
    assert f.level == "error"
    _assert_names_file(f, visit.flair)


def test_truncated_uncompressed_nii(tmp_path, write_nifti):
    p = write_nifti(tmp_path / "sub-01_ses-01_FLAIR.nii")
    full = p.stat().st_size
    p.write_bytes(p.read_bytes()[:-100])
    img, findings = read_image(p)
    assert img is None
    f = _only(findings, "truncated")
    assert f.level == "error" and str(full) in f.message
    _assert_names_file(f, p)


def test_corrupt_gzip_bytes_flipped_mid_stream(make_visit):
    visit = make_visit()
    raw = bytearray(visit.flair.read_bytes())
    mid = len(raw) // 2
    raw[mid : mid + 16] = bytes(b ^ 0xFF for b in raw[mid : mid + 16])
    visit.flair.write_bytes(bytes(raw))
    f = _only(check_visit(visit), "corrupt-gzip")
    assert f.level == "error"
    _assert_names_file(f, visit.flair)


def test_corrupt_gzip_in_stored_block_is_caught_by_crc(tmp_path, write_nifti):
    """Random data is stored uncompressed inside the deflate stream: nibabel reads the
    flipped bytes without complaint; only the CRC32 at the end of the stream tells."""
    rng = np.random.default_rng(1)
    p = write_nifti(tmp_path / "x.nii.gz", rng.random((16, 16, 16)).astype(np.float32))
    raw = bytearray(p.read_bytes())
    pos = len(raw) // 2
    raw[pos] ^= 0xFF
    p.write_bytes(bytes(raw))
    img, findings = read_image(p)
    assert img is None
    f = _only(findings, "corrupt-gzip")
    assert "CRC" in f.message
    _assert_names_file(f, p)


def test_text_file_named_nii_gz(make_visit):
    visit = make_visit(flair=lambda p: p.write_text("this is not an image\n"))
    f = _only(check_visit(visit), "not-nifti")
    assert f.level == "error"
    _assert_names_file(f, visit.flair)


def test_gzip_of_text_named_nii_gz(tmp_path):
    p = tmp_path / "a.nii.gz"
    p.write_bytes(gzip.compress(b"hello" * 100))
    _, findings = read_image(p)
    assert _only(findings, "not-nifti").level == "error"


def test_broken_symlink_is_file_missing(tmp_path):
    p = tmp_path / "sub-01_FLAIR.nii.gz"
    p.symlink_to(tmp_path / ".git" / "annex" / "objects" / "nowhere")
    img, findings = read_image(p)
    f = _only(findings, "file-missing")
    assert img is None and f.level == "error" and "symbolic link" in f.message
    _assert_names_file(f, p)


def test_dangling_symlink_outside_annex_names_its_target(tmp_path):
    p = tmp_path / "sub-01_FLAIR.nii.gz"
    p.symlink_to(tmp_path / "moved" / "flair.nii.gz")
    f = _only(read_image(p)[1], "file-missing")
    assert "moved/flair.nii.gz" in f.message and "annex" not in f.message + f.fix
    _assert_names_file(f, p)


@pytest.mark.parametrize("loop", ["self", "pair"])
def test_symlink_loop_is_named_as_such(tmp_path, loop):
    p = tmp_path / "sub-01_FLAIR.nii.gz"
    if loop == "self":
        p.symlink_to(p.name)
    else:
        (tmp_path / "a").symlink_to("b")
        (tmp_path / "b").symlink_to("a")
        p.symlink_to("a")
    img, findings = read_image(p)
    f = _only(findings, "symlink-loop")
    assert img is None and f.level == "error" and "symlink loop" in f.message
    assert "datalad" not in f.fix and "annex" not in f.message
    _assert_names_file(f, p)
    with pytest.raises(MissingInputError, match="symlink loop"):
        raise_on_errors(findings)


def test_unreadable_file_is_permission_denied(make_visit, no_access):
    visit = make_visit()
    with no_access(visit.flair):
        img, findings = read_image(visit.flair)
    f = _only(findings, "permission-denied")
    assert img is None and f.level == "error" and "permission denied" in f.message
    assert "re-export" not in f.fix and "read access" in f.fix
    _assert_names_file(f, visit.flair)


@pytest.mark.parametrize("kind", ["folder", "fifo"])
def test_folder_or_fifo_named_like_the_image_is_not_a_regular_file(bids_root, kind):
    anat = bids_root / "sub-01" / "ses-01" / "anat"
    anat.mkdir(parents=True)
    flair = anat / "sub-01_ses-01_FLAIR.nii.gz"
    if kind == "folder":
        flair.mkdir()
    else:
        os.mkfifo(flair)  # opening it would wait for a writer for ever
    (visit,) = discover(bids_root)
    assert visit.flair == flair
    findings = check_visit(visit)
    f = _only(findings, "not-regular-file")
    assert f.level == "error" and ("folder" if kind == "folder" else "FIFO") in f.message
    assert "missing-flair" not in _codes(findings) and "file-missing" not in _codes(findings)
    _assert_names_file(f, flair)


# ---------------------------------------------------------------- dimensions and shape


def test_4d_image(make_visit, write_nifti, head_data):
    vol = head_data()
    visit = make_visit(flair=lambda p: write_nifti(p, np.stack([vol, vol, vol], axis=-1)))
    findings = check_visit(visit)
    f = _only(findings, "not-3d")
    assert f.level == "error" and "(20, 22, 16, 3)" in f.message
    _assert_names_file(f, visit.flair)
    # gate: no further checks on that image
    assert not [g for g in findings if g.path == visit.flair and g.code != "not-3d"]


def test_4d_with_trailing_singleton_is_fine(make_visit, write_nifti, head_data):
    visit = make_visit(flair=lambda p: write_nifti(p, head_data()[..., None]))
    assert not has_errors(check_visit(visit))


def test_2d_image(make_visit, write_nifti, head_data):
    visit = make_visit(flair=lambda p: write_nifti(p, head_data()[:, :, 8]))
    f = _only(check_visit(visit), "not-3d")
    assert f.level == "error" and "(20, 22)" in f.message
    _assert_names_file(f, visit.flair)


def test_tiny_shape(make_visit, write_nifti, head_data):
    visit = make_visit(t1=lambda p: write_nifti(p, head_data((20, 22, 3))))
    f = _only(check_visit(visit), "shape-tiny")
    assert f.level == "error" and "(20, 22, 3)" in f.message
    _assert_names_file(f, visit.t1)


def test_complex_dtype(tmp_path):
    img = LoadedImage.from_array(np.ones((10, 10, 10), np.complex64), np.eye(4), tmp_path / "c.nii")
    from lesionq.io.checks import check_dtype

    assert [f.code for f in check_dtype(img, CheckLimits())] == ["dtype-unsupported"]


# ---------------------------------------------------------------- voxel values


def test_nan_values(make_visit, write_nifti, head_data):
    vol = head_data()
    vol[3, 4, 5] = np.nan
    vol[0, 0, 0] = np.nan
    visit = make_visit(flair=lambda p: write_nifti(p, vol))
    f = _only(check_visit(visit), "nan-values")
    assert f.level == "error" and f.message.split(": ", 1)[1].startswith("2 of ")
    _assert_names_file(f, visit.flair)


def test_inf_values(make_visit, write_nifti, head_data):
    vol = head_data()
    vol[3, 4, 5] = -np.inf
    visit = make_visit(t1=lambda p: write_nifti(p, vol))
    findings = check_visit(visit)
    f = _only(findings, "inf-values")
    assert f.level == "error"
    assert "nan-values" not in _codes(findings)
    _assert_names_file(f, visit.t1)


def test_all_zero_image(make_visit, write_nifti):
    visit = make_visit(flair=lambda p: write_nifti(p, np.zeros((20, 22, 16), np.float32)))
    f = _only(check_visit(visit), "empty-image")
    assert f.level == "error"
    _assert_names_file(f, visit.flair)


def test_constant_image(make_visit, write_nifti):
    visit = make_visit(flair=lambda p: write_nifti(p, np.full((20, 22, 16), 7, np.int16)))
    findings = check_visit(visit)
    f = _only(findings, "constant-image")
    assert f.level == "error" and "value 7" in f.message
    assert "empty-image" not in _codes(findings)
    _assert_names_file(f, visit.flair)


def test_binary_image_warns(make_visit, write_nifti, head_data):
    mask = (head_data() > 0).astype(np.uint8)
    visit = make_visit(flair=lambda p: write_nifti(p, mask))
    f = _only(check_visit(visit), "few-intensity-levels")
    assert f.level == "warning"
    _assert_names_file(f, visit.flair)


# ---------------------------------------------------------------- geometry


def test_qform_and_sform_codes_both_zero(make_visit, write_nifti, head_data):
    visit = make_visit(flair=lambda p: write_nifti(p, head_data(), qform_code=0, sform_code=0))
    f = _only(check_visit(visit), "no-orientation")
    assert f.level == "error" and "qform_code 0" in f.message
    _assert_names_file(f, visit.flair)


def test_qform_sform_disagree(make_visit, write_nifti, head_data):
    q = np.eye(4)
    s = np.eye(4)
    s[:3, 3] = [5.0, 0.0, 0.0]
    visit = make_visit(flair=lambda p: write_nifti(p, head_data(), qform=q, sform=s))
    findings = check_visit(visit)
    f = _only(findings, "qform-sform-mismatch")
    assert f.level == "warning" and "5.00 mm" in f.message and "sform" in f.message
    assert not has_errors(findings)
    _assert_names_file(f, visit.flair)


def test_qform_sform_agree_within_tolerance(make_visit, write_nifti, head_data):
    s = np.eye(4)
    s[:3, 3] = [0.2, 0.0, 0.0]
    visit = make_visit(flair=lambda p: write_nifti(p, head_data(), qform=np.eye(4), sform=s))
    assert "qform-sform-mismatch" not in _codes(check_visit(visit))


def test_singular_affine(make_visit, write_nifti, head_data):
    a = np.eye(4)
    a[:3, 1] = a[:3, 0]  # axes i and j both along x
    visit = make_visit(flair=lambda p: write_nifti(p, head_data(), a, qform_code=0, sform_code=2))
    f = _only(check_visit(visit), "affine-singular")
    assert f.level == "error"
    _assert_names_file(f, visit.flair)


def test_sheared_affine(make_visit, write_nifti, head_data):
    a = np.eye(4)
    a[0, 1] = 0.3  # j axis leans along x
    visit = make_visit(flair=lambda p: write_nifti(p, head_data(), a, qform_code=0, sform_code=1))
    f = _only(check_visit(visit), "affine-shear")
    assert f.level == "error" and "sform" in f.message
    _assert_names_file(f, visit.flair)


def test_zero_voxel_size(tmp_path, head_data):
    a = np.diag([1.0, 0.0, 1.0, 1.0])
    img = LoadedImage.from_array(head_data(), a, tmp_path / "z.nii.gz", qform_code=0)
    from lesionq.io.checks import run_image_checks

    findings = run_image_checks(img)
    f = _only(findings, "voxel-size-invalid")
    assert f.level == "error" and "1x0x1" in f.message
    assert "affine-singular" not in _codes(findings)


def test_zero_pixdim_in_file(make_visit, head_data):
    def write(p: Path) -> None:
        img = nib.Nifti1Image(head_data(), None)
        img.header.set_zooms((1.0, 0.0, 1.0))
        img.header["qform_code"] = 1
        nib.save(img, str(p))

    visit = make_visit(flair=write)
    f = _only(check_visit(visit), "voxel-size-invalid")
    assert f.level == "error" and "[1.0, 0.0, 1.0]" in f.message
    _assert_names_file(f, visit.flair)


def test_header_repaired_by_nibabel_is_reported(make_visit, head_data):
    def write(p: Path) -> None:
        nib.save(nib.Nifti1Image(head_data(), np.eye(4)), str(p))
        raw = bytearray(gzip.decompress(p.read_bytes()))
        raw[252:254] = np.int16(7).tobytes()  # qform_code must be 0..4
        p.write_bytes(gzip.compress(bytes(raw)))

    visit = make_visit(flair=write)
    findings = check_visit(visit)
    f = _only(findings, "header-fixed")
    assert f.level == "warning" and "qform_code" in f.message
    assert not has_errors(findings)
    _assert_names_file(f, visit.flair)


@pytest.mark.parametrize("size_mm", [0.01, 20.0])
def test_implausible_voxel_size(make_visit, write_nifti, head_data, size_mm):
    a = np.diag([1.0, 1.0, size_mm, 1.0])
    visit = make_visit(flair=lambda p: write_nifti(p, head_data(), a))
    f = _only(check_visit(visit), "voxel-size-implausible")
    assert f.level == "error" and f"{size_mm:.3g}" in f.message
    _assert_names_file(f, visit.flair)


def test_thick_anisotropic_slices_warn_only(make_visit, write_nifti, head_data):
    a = np.diag([0.7, 0.7, 5.0, 1.0])
    visit = make_visit(flair=lambda p: write_nifti(p, head_data(), a), contrasts=("flair",))
    findings = check_visit(visit)
    assert not has_errors(findings)
    assert _only(findings, "thick-slices").level == "warning"
    assert _only(findings, "anisotropic-voxels").level == "info"
    # a protocol may raise the limit
    relaxed = check_visit(visit, limits=CheckLimits(thick_slice_mm=6.0))
    assert "thick-slices" not in _codes(relaxed)


def test_oblique_is_info(make_visit, write_nifti, head_data):
    t = np.deg2rad(10.0)
    a = np.eye(4)
    a[:3, :3] = [[1, 0, 0], [0, np.cos(t), -np.sin(t)], [0, np.sin(t), np.cos(t)]]
    visit = make_visit(flair=lambda p: write_nifti(p, head_data(), a), contrasts=("flair",))
    f = _only(check_visit(visit), "oblique")
    assert f.level == "info" and "10.0 degrees" in f.message


# ---------------------------------------------------------------- visit-level


def test_missing_flair(make_visit):
    visit = make_visit(contrasts=("t1", "t2"))
    findings = check_visit(visit)
    f = _only(findings, "missing-flair")
    assert f.level == "error"
    expected = visit.anat_dir / "sub-01_ses-01_FLAIR.nii.gz"
    _assert_names_file(f, expected)
    with pytest.raises(MissingInputError, match="FLAIR"):
        raise_on_errors(findings)


def test_missing_flair_lists_unrecognised_images(bids_root, write_nifti):
    anat = bids_root / "sub-01" / "ses-01" / "anat"
    write_nifti(anat / "sub-01_ses-01_flair.nii.gz")  # BIDS suffixes are case-sensitive
    write_nifti(anat / "sub-01_ses-01_run-1_acq-3D_FLAIR.nii.gz")  # entities out of order
    (visit,) = discover(bids_root)
    findings = check_visit(visit)
    missing = _only(findings, "missing-flair").message
    assert "sub-01_ses-01_flair.nii.gz" in missing and "run-1_acq-3D" in missing
    unused = {f.path.name: f for f in findings if f.code == "unrecognised-image"}
    assert all(f.level == "warning" for f in unused.values())
    assert "acq- comes after run-" in unused["sub-01_ses-01_run-1_acq-3D_FLAIR.nii.gz"].message


def test_acq_ce_rec_run_entities_are_accepted(bids_root, write_nifti, head_data):
    anat = bids_root / "sub-01" / "ses-01" / "anat"
    names = {
        "flair": "sub-01_ses-01_acq-3D_run-1_FLAIR.nii.gz",
        "t1": "sub-01_ses-01_acq-mprage_rec-norm_T1w.nii.gz",
        "t2": "sub-01_ses-01_run-01_T2w.nii",
        "t1ce": "sub-01_ses-01_acq-highres_ce-gadolinium_rec-norm_run-1_T1w.nii.gz",
    }
    for i, name in enumerate(names.values()):
        write_nifti(anat / name, head_data(seed=i))
    (visit,) = discover(bids_root)
    assert {k: p.name for k, p in visit.images().items()} == names
    findings = check_visit(visit)
    assert not has_errors(findings) and not _codes(findings, "warning"), findings


def test_two_runs_of_the_flair_use_the_highest_with_a_warning(bids_root, write_nifti):
    anat = bids_root / "sub-01" / "ses-01" / "anat"
    run1 = write_nifti(anat / "sub-01_ses-01_run-1_FLAIR.nii.gz")
    run2 = write_nifti(anat / "sub-01_ses-01_run-2_FLAIR.nii.gz")
    (visit,) = discover(bids_root)
    assert visit.flair == run2 and visit.other_runs == (run1,)
    findings = check_visit(visit)
    assert not has_errors(findings)
    f = _only(findings, "several-runs")
    assert f.level == "warning" and f.path == run2
    assert run1.name in f.message and run2.name in f.message and "highest" in f.message


def test_duplicate_contrast_fix_is_what_resolves_it(bids_root, write_nifti):
    anat = bids_root / "sub-01" / "ses-01" / "anat"
    a = write_nifti(anat / "sub-01_ses-01_acq-2D_FLAIR.nii.gz")
    b = write_nifti(anat / "sub-01_ses-01_acq-3D_FLAIR.nii.gz")
    (visit,) = discover(bids_root)
    f = _only(check_visit(visit), "duplicate-contrast")
    assert f.level == "error" and a.name in f.message and b.name in f.message
    assert "run-1" in f.fix and "highest run" in f.fix
    # doing what the fix says (repeats of one acquisition named by run) resolves it
    a.rename(anat / "sub-01_ses-01_acq-3D_run-1_FLAIR.nii.gz")
    b.rename(anat / "sub-01_ses-01_acq-3D_run-2_FLAIR.nii.gz")
    (visit,) = discover(bids_root)
    findings = check_visit(visit)
    assert not has_errors(findings) and _codes(findings, "warning") == {"several-runs"}
    assert visit.flair.name == "sub-01_ses-01_acq-3D_run-2_FLAIR.nii.gz"


def test_duplicate_flair(bids_root, write_nifti):
    anat = bids_root / "sub-01" / "ses-01" / "anat"
    write_nifti(anat / "sub-01_ses-01_FLAIR.nii.gz")
    write_nifti(anat / "sub-01_ses-01_FLAIR.nii")
    (visit,) = discover(bids_root)
    findings = check_visit(visit)
    f = _only(findings, "duplicate-contrast")
    assert f.level == "error" and "FLAIR.nii.gz" in f.message and "FLAIR.nii'" in f.message
    assert "several files" in _only(findings, "missing-flair").message


def test_subject_entity_mismatch(bids_root, write_nifti):
    anat = bids_root / "sub-01" / "ses-01" / "anat"
    write_nifti(anat / "sub-01_ses-01_FLAIR.nii.gz")
    wrong = write_nifti(anat / "sub-02_ses-01_T1w.nii.gz")
    (visit,) = discover(bids_root)
    f = _only(check_visit(visit), "entity-mismatch")
    assert f.level == "error" and "sub-02_ses-01" in f.message
    _assert_names_file(f, wrong)


def test_session_entity_mismatch(bids_root, write_nifti):
    for ses in ("01", "02"):
        write_nifti(bids_root / "sub-01" / f"ses-{ses}" / "anat" / f"sub-01_ses-{ses}_T1w.nii.gz")
    # the ses-01 FLAIR was copied into the ses-02 folder
    wrong = write_nifti(bids_root / "sub-01" / "ses-02" / "anat" / "sub-01_ses-01_FLAIR.nii.gz")
    write_nifti(bids_root / "sub-01" / "ses-01" / "anat" / "sub-01_ses-01_FLAIR.nii.gz")
    v1, v2 = discover(bids_root)
    assert not has_errors(check_visit(v1))
    f = _only(check_visit(v2), "entity-mismatch")
    assert f.level == "error" and "sub-01_ses-01" in f.message and "ses-02" in f.message
    _assert_names_file(f, wrong)


def test_fov_not_overlapping(make_visit, write_nifti, head_data):
    far = np.eye(4)
    far[:3, 3] = [200.0, 0.0, 0.0]
    visit = make_visit(t2=lambda p: write_nifti(p, head_data(), far), contrasts=("flair", "t2"))
    findings = check_visit(visit)
    f = _only(findings, "fov-mismatch")
    assert f.level == "error" and "covers 0%" in f.message
    _assert_names_file(f, visit.t2)
    with pytest.raises(GeometryError):
        raise_on_errors(findings)


def test_fov_partly_overlapping_warns(make_visit, write_nifti, head_data):
    shift = np.eye(4)
    shift[:3, 3] = [0.0, 0.0, 7.0]  # 7 of 16 slices shifted out: ~60 % of the head covered
    visit = make_visit(t2=lambda p: write_nifti(p, head_data(), shift), contrasts=("flair", "t2"))
    findings = check_visit(visit)
    f = _only(findings, "fov-partial")
    assert f.level == "warning" and not has_errors(findings)
    covered = int(f.message.split("covers ")[1].split("%")[0])
    assert 50 <= covered < 80
    _assert_names_file(f, visit.t2)


def test_different_grid_same_anatomy_is_info(make_visit, write_nifti, head_data):
    # T2 at half the voxel size over the same field of view
    a = np.diag([0.5, 0.5, 1.0, 1.0])
    a[:3, 3] = [-0.25, -0.25, 0.0]
    visit = make_visit(
        t2=lambda p: write_nifti(p, head_data((40, 44, 16)), a), contrasts=("flair", "t2")
    )
    findings = check_visit(visit)
    assert not has_errors(findings)
    f = _only(findings, "different-grid")
    assert f.level == "info" and "co-registered" in f.message and "covers 100%" in f.message


def test_grid_check_unit(tmp_path, head_data):
    flair = LoadedImage.from_array(head_data(), np.eye(4), tmp_path / "f.nii.gz")
    same = dataclasses.replace(flair, path=tmp_path / "t1.nii.gz")
    from lesionq.io.bids import VisitInputs

    v = VisitInputs("01", "01", tmp_path)
    assert check_grids(v, {"flair": flair, "t1": same}, CheckLimits()) == []


def test_acq_time_invalid_warns(bids_root, write_nifti):
    write_nifti(bids_root / "sub-01" / "ses-01" / "anat" / "sub-01_ses-01_FLAIR.nii.gz")
    tsv = bids_root / "sub-01" / "sub-01_sessions.tsv"
    tsv.write_text("session_id\tacq_time\nses-01\tyesterday\n", encoding="utf-8")
    (visit,) = discover(bids_root)
    f = _only(check_visit(visit), "acq-time-invalid")
    assert f.level == "warning" and "yesterday" in f.message and str(tsv) in f.message


# ---------------------------------------------------------------- dataset level


def test_dataset_without_description(bids_root, write_nifti):
    write_nifti(bids_root / "sub-01" / "ses-01" / "anat" / "sub-01_ses-01_FLAIR.nii.gz")
    (bids_root / "dataset_description.json").unlink()
    findings = check_dataset(bids_root)
    f = _only(findings, "no-dataset-description")
    assert f.level == "error" and "dataset_description.json" in f.message


def test_dataset_participant_missing_still_checks_others(bids_root, write_nifti):
    write_nifti(bids_root / "sub-01" / "ses-01" / "anat" / "sub-01_ses-01_FLAIR.nii.gz")
    findings = check_dataset(bids_root, ["sub-01", "09"])
    f = _only(findings, "participant-missing")
    assert f.level == "error" and "'09'" in f.message and "['01']" in f.message
    assert _only(findings, "orientation").path.name == "sub-01_ses-01_FLAIR.nii.gz"


def test_dataset_no_subjects(bids_root):
    assert _only(check_dataset(bids_root), "no-subjects").level == "error"


# ---------------------------------------------------------------- helpers


def test_raise_on_errors_and_has_errors(tmp_path):
    warn = Finding("warning", "thick-slices", None, "a: thick")
    assert not has_errors([warn])
    raise_on_errors([warn])  # no error: nothing raised
    bad = Finding("error", "truncated", tmp_path / "a.nii.gz", "a.nii.gz: truncated")
    other = Finding("error", "nan-values", tmp_path / "b.nii.gz", "b.nii.gz: NaN")
    with pytest.raises(CorruptFileError, match=r"\[truncated\].*\[nan-values\]"):
        raise_on_errors([warn, bad, other])
    with pytest.raises(InputError, match="nan-values"):
        raise_on_errors([other])


def test_format_findings(tmp_path):
    fs = [
        Finding(
            "error", "nan-values", tmp_path / "a.nii", f"{tmp_path / 'a.nii'}: 3 NaN", "re-export"
        ),
        Finding("info", "orientation", tmp_path / "a.nii", f"{tmp_path / 'a.nii'}: RAS"),
    ]
    text = format_findings(fs, root=tmp_path)
    assert text.splitlines() == [
        "ERROR    nan-values  a.nii: 3 NaN",
        "         fix: re-export",
        "INFO     orientation  a.nii: RAS",
        "1 error, 0 warnings, 1 info",
    ]
    assert "orientation" not in format_findings(fs, min_level="warning")


# ---------------------------------------------------------------- real data


@pytest.mark.slow
@pytest.mark.parametrize("subject", ["cs07", "lo01"])
def test_real_data_has_no_errors(shared_data, subject):
    visits = discover(shared_data, [subject])
    assert len(visits) == (1 if subject == "cs07" else 2)
    for visit in visits:
        findings = check_visit(visit)
        assert not has_errors(findings), format_findings(findings)
    if subject == "lo01":
        codes = _codes(findings)
        assert "different-grid" in codes and "oblique" in codes
