"""DICOM upload -> BIDS ingest, end to end on a small synthetic upload (pydicom + dcm2niix)."""

from __future__ import annotations

import csv
import gzip
import json
import shutil
from dataclasses import replace
from datetime import datetime
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from lesionq.batch.ingest import DATE_SHIFT_KEY, REPORT_DIR, ingest_upload, read_subject_map
from lesionq.io.bids import discover
from lesionq.io.checks import check_visit, has_errors
from lesionq.testing.dicom import (
    PRESETS,
    DicomIdentity,
    SeriesSpec,
    source_indices,
    write_enhanced_series,
    write_localiser,
    write_series,
)

SHAPE = (32, 30, 12)

#: subject folder -> (site, identity, {visit folder: (study date, study time)})
SUBJECTS = {
    "S-01": (
        "siteA",
        DicomIdentity(),
        {"V1": ("20190301", "093012"), "V2": ("20190329", "101500")},
    ),
    "S-02": (
        "siteB",
        DicomIdentity(
            patient_name="ROEXQ^MARKOZ",
            patient_id="PIDQ55210",
            patient_birth_date="19750911",
            accession_number="ACCQ112233",
        ),
        {"V1": ("20200715", "140000"), "V2": ("20201007", "081530")},
    ),
}

#: series number -> (preset, expected class, expected status, contrast)
SERIES = {
    1: ("localiser", "localiser", "localiser", None),
    2: ("flair", "flair", "chosen", "flair"),
    3: ("t1", "t1", "chosen", "t1"),
    4: ("t1-mpr", "t1", "not-preferred", None),
    5: ("t2", "t2", "chosen", "t2"),
    6: ("dwi", "other", "other", None),
    7: ("t1ce", "t1ce", "chosen", "t1ce"),
}


def _affine(seed: int) -> np.ndarray:
    """Slightly oblique LAS-like grid, 0.9 x 1.1 x 3 mm, per-visit rotation."""
    th = np.radians(4.0 + seed)
    rot = np.array([[np.cos(th), -np.sin(th), 0], [np.sin(th), np.cos(th), 0], [0, 0, 1]])
    a = np.eye(4)
    a[:3, :3] = rot @ np.diag([-0.9, 1.1, 3.0])
    a[:3, 3] = [14.0 + seed, -16.0, -18.0]
    return a


def _volume(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(-50, 1200, SHAPE).astype(np.int16)


def _scatter(files: list[Path], visit_dir: Path, rng: np.random.Generator) -> None:
    """Move files into random nested folders under random names."""
    for f in files:
        depth = int(rng.integers(0, 3))
        parts = [f"d{int(rng.integers(0, 4))}" for _ in range(depth)]
        dest = visit_dir.joinpath(*parts, f"{int(rng.integers(0, 1 << 40)):x}")
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(f), dest)


def build_upload(root: Path) -> dict:
    """Write the test upload; returns the truth {(subject, visit, series): (volume, affine)}."""
    truth: dict = {}
    rng = np.random.default_rng(7)
    for s_idx, (subj, (site, ident, visits)) in enumerate(SUBJECTS.items()):
        for v_idx, (visit, (date, tm)) in enumerate(visits.items()):
            identity = replace(ident, study_date=date, study_time=tm)
            stage = root / "_stage" / subj / visit
            visit_dir = root / site / subj / visit
            seed = 100 * s_idx + 10 * v_idx
            aff = _affine(seed)
            uid_seed = f"{subj}-{visit}"
            files = write_localiser(stage, identity, series_number=1, uid_seed=uid_seed)
            for number, (preset, *_rest) in SERIES.items():
                if number == 1:
                    continue
                vol = _volume(seed + number)
                kw = dict(PRESETS["t1" if preset == "t1-mpr" else preset])
                if preset == "t1-mpr":
                    kw["description"] = "t1_mprage_sag_p2_iso_MPR_tra"
                    kw["image_type"] = ("DERIVED", "SECONDARY", "MPR", "NORM", "DIS2D")
                spec = SeriesSpec(
                    vol, aff, series_number=number, acquisition_time=f"09{40 + number}00", **kw
                )
                files += write_series(spec, stage, identity, uid_seed=uid_seed)
                truth[(subj, visit, number)] = (vol, aff)
            # the FLAIR uploaded twice (same SOP instances) ...
            flair = sorted(stage.glob("IM_0002_*"))
            for f in flair:
                copy = stage / "again" / f.name
                copy.parent.mkdir(exist_ok=True)
                shutil.copy(f, copy)
                files.append(copy)
            # ... and re-sent as another series with identical pixels (series 102)
            vol2, _ = truth[(subj, visit, 2)]
            files += write_series(
                SeriesSpec(
                    vol2,
                    aff,
                    series_number=102,
                    acquisition_time="095000",
                    **PRESETS["flair"],
                ),
                stage,
                identity,
                uid_seed=uid_seed,
            )
            _scatter(files, visit_dir, rng)
            (visit_dir / "notes.txt").write_text("export log\n", encoding="utf-8")
    shutil.rmtree(root / "_stage")
    return truth


def _read_tsv(path: Path) -> list[dict[str, str]]:
    with open(path, encoding="utf-8", newline="") as fh:
        return list(csv.DictReader(fh, delimiter="\t"))


@pytest.fixture(scope="module")
def ingested(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("ingest")
    upload = root / "upload"
    truth = build_upload(upload)
    bids = root / "bids"
    report = ingest_upload(upload, bids)
    return upload, bids, truth, report


def test_classification_and_status(ingested) -> None:
    _, _, _, report = ingested
    assert report.ok, report.to_text()
    assert len(report.visits) == 4
    for v in report.visits:
        got = {s.series_number: (s.label, s.status, s.contrast) for s in v.series}
        want = {n: (cls, status, c) for n, (_, cls, status, c) in SERIES.items()}
        want[102] = ("flair", "duplicate", None)
        assert got == want, v.visit_id
        codes = {f.code for f in v.findings}
        assert {"localiser-dropped", "other-series", "duplicate-series", "duplicate-file"} <= codes
        assert {"derived-not-preferred", "non-dicom-file"} <= codes
        assert not has_errors(v.findings)


def test_bids_names_geometry_and_values(ingested) -> None:
    _, bids, truth, report = ingested
    suffix = {2: "FLAIR", 3: "T1w", 5: "T2w", 7: "ce-gadolinium_T1w"}
    for subj, (_, _, visits) in SUBJECTS.items():
        label = subj.replace("-", "")
        for visit in visits:
            anat = bids / f"sub-{label}" / f"ses-{visit}" / "anat"
            names = sorted(p.name for p in anat.iterdir())
            assert names == sorted(
                f"sub-{label}_ses-{visit}_{s}{ext}"
                for s in suffix.values()
                for ext in (".json", ".nii.gz")
            )
            for number, s in suffix.items():
                vol, aff = truth[(subj, visit, number)]
                img = nib.load(str(anat / f"sub-{label}_ses-{visit}_{s}.nii.gz"))
                data = np.asanyarray(img.dataobj)
                # dcm2niix may reorder the axes of 3-D acquisitions (lossless)
                assert sorted(data.shape) == sorted(vol.shape)
                # every output voxel centre maps onto the source voxel of the same value
                s_ijk, offset = source_indices(img.affine, data.shape, aff)
                assert offset * 3.0 < 1e-3  # < 1e-3 mm off
                np.testing.assert_array_equal(vol[s_ijk[0], s_ijk[1], s_ijk[2]], data.reshape(-1))

                # the grid corners are the same world points (mm), whatever the axis order
                def corners(shape):
                    c = np.array(np.meshgrid(*[[0, n - 1] for n in shape], indexing="ij"))
                    return np.vstack([c.reshape(3, -1), np.ones((1, 8))])

                got = (img.affine @ corners(data.shape))[:3].T
                want = (aff @ corners(vol.shape))[:3].T
                dist = np.linalg.norm(got[:, None, :] - want[None, :, :], axis=2).min(axis=1)
                assert dist.max() < 1e-3


def test_sessions_dates_shifted_intervals_kept(ingested) -> None:
    _, bids, _, report = ingested
    for subj, (_site, _, visits) in SUBJECTS.items():
        label = subj.replace("-", "")
        rows = _read_tsv(bids / f"sub-{label}" / f"sub-{label}_sessions.tsv")
        got = {r["session_id"]: datetime.fromisoformat(r["acq_time"]) for r in rows}
        real = {
            f"ses-{v}": datetime.strptime(d + t, "%Y%m%d%H%M%S") for v, (d, t) in visits.items()
        }
        assert got["ses-V1"].date() == datetime(1900, 1, 1).date()
        assert got["ses-V1"].time() == real["ses-V1"].time()
        assert got["ses-V2"] - got["ses-V1"] == real["ses-V2"] - real["ses-V1"]
    parts = {r["participant_id"]: r for r in _read_tsv(bids / "participants.tsv")}
    assert parts["sub-S01"]["site"] == "siteA" and parts["sub-S02"]["site"] == "siteB"
    assert set(parts["sub-S01"]) == {"participant_id", "site"}
    assert {v.acq_time for v in report.visits} >= {"1900-01-01T09:30:12", "1900-01-01T14:00:00"}


def _all_bytes(folder: Path) -> list[tuple[Path, bytes]]:
    out = []
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            raw = p.read_bytes()
            out.append((p, raw))
            if p.name.endswith(".gz"):
                out.append((p, gzip.decompress(raw)))
    return out


def test_no_identifying_data_in_any_output(ingested) -> None:
    _, bids, _, report = ingested
    needles: set[str] = set()
    for _, ident, visits in SUBJECTS.values():
        needles.update(ident.strings())
        for date, _tm in visits.values():
            needles.update({date, f"{date[:4]}-{date[4:6]}-{date[6:]}"})
        b = ident.patient_birth_date
        needles.update({b, f"{b[:4]}-{b[4:6]}-{b[6:]}"})
    files = _all_bytes(bids)
    assert len(files) > 30
    for path, data in files:
        low = data.lower()
        for s in needles:
            assert s.lower().encode() not in low, f"{s!r} found in {path}"
    text = report.to_text().lower()
    for s in needles:
        assert s.lower() not in text
    # NIfTI text fields are empty; sidecars hold whitelisted keys only
    for p in bids.rglob("*.nii.gz"):
        hdr = nib.load(str(p)).header
        for name in ("descrip", "aux_file", "intent_name", "db_name"):
            assert hdr[name].item() == b""
        assert len(hdr.extensions) == 0
    side = json.loads(next(bids.rglob("*_FLAIR.json")).read_text())
    assert side["EchoTime"] == pytest.approx(0.081) and side["InversionTime"] == pytest.approx(2.5)
    assert "InstitutionName" not in side and "DeviceSerialNumber" not in side
    assert "AcquisitionTime" not in side


def test_discover_and_checks(ingested) -> None:
    _, bids, _, _ = ingested
    visits = discover(bids)
    assert [(v.subject, v.session) for v in visits] == [
        ("S01", "V1"),
        ("S01", "V2"),
        ("S02", "V1"),
        ("S02", "V2"),
    ]
    for v in visits:
        assert set(v.images()) == {"flair", "t1", "t2", "t1ce"}
        assert v.acq_datetime is not None
        findings = check_visit(v)
        assert not has_errors(findings), [str(f) for f in findings if f.level == "error"]
    assert (bids / REPORT_DIR / "ingest_report.json").is_file()
    rows = _read_tsv(bids / REPORT_DIR / "ingest_series.tsv")
    assert len(rows) == 4 * 8
    assert all(len(r["series_hash"]) == 16 for r in rows)


def test_reingest_is_noop_and_changes_are_reported(ingested, tmp_path: Path) -> None:
    upload, bids, truth, _ = ingested
    work = tmp_path / "bids"
    shutil.copytree(bids, work)
    again = ingest_upload(upload, work)
    data_files = [w for w in again.written if REPORT_DIR.parts[0] not in w.path.parts]
    assert data_files and all(w.action == "unchanged" for w in data_files), [
        (w.path.name, w.action) for w in data_files if w.action != "unchanged"
    ]
    # change the T2 pixels of one visit: that file is replaced and reported
    changed = tmp_path / "upload"
    shutil.copytree(upload / "siteB", changed / "siteB")  # one subject keeps this test fast
    t2_file = next(
        p
        for p in (changed / "siteB" / "S-02" / "V1").rglob("*")
        if p.is_file() and p.name != "notes.txt" and _series_number(p) == 5
    )
    import pydicom

    ds = pydicom.dcmread(t2_file)
    arr = ds.pixel_array.copy()
    arr[0, 0] += 1
    ds.PixelData = arr.astype("<i2").tobytes()
    ds.save_as(t2_file)
    third = ingest_upload(changed, work)
    replaced = [w.path.name for w in third.written if w.action == "replaced"]
    assert "sub-S02_ses-V1_T2w.nii.gz" in replaced
    assert any(f.code == "file-replaced" and "T2w" in f.message for f in third.findings)


def _series_number(path: Path) -> int | None:
    import pydicom

    try:
        return int(pydicom.dcmread(path, stop_before_pixels=True).SeriesNumber)
    except Exception:  # noqa: BLE001
        return None


def _small_visit(root: Path, flair_numbers: tuple[int, ...] = (2,)) -> dict:
    """One subject, one visit: FLAIR(s) + T1 + T2, written into one folder."""
    visit = root / "site" / "P7" / "base"
    ident = DicomIdentity()
    truth = {}
    aff = _affine(3)
    for n in flair_numbers:
        vol = _volume(500 + n)
        write_series(SeriesSpec(vol, aff, n, **PRESETS["flair"]), visit, ident, uid_seed="p7")
        truth[n] = vol
    for n, preset in ((3, "t1"), (5, "t2")):
        vol = _volume(500 + n)
        write_series(SeriesSpec(vol, aff, n, **PRESETS[preset]), visit, ident, uid_seed="p7")
        truth[n] = vol
    return truth


def test_two_flairs_are_ambiguous_until_chosen(tmp_path: Path) -> None:
    truth = _small_visit(tmp_path / "up", flair_numbers=(2, 9))
    report = ingest_upload(tmp_path / "up", tmp_path / "bids")
    assert not report.ok
    amb = [f for f in report.findings if f.code == "ambiguous-series"]
    assert len(amb) == 1 and amb[0].level == "error"
    assert "#2 't2_tirm_tra_dark-fluid'" in amb[0].message and "#9" in amb[0].message
    anat = tmp_path / "bids" / "sub-P7" / "ses-base" / "anat"
    assert not (anat / "sub-P7_ses-base_FLAIR.nii.gz").exists()
    assert (anat / "sub-P7_ses-base_T1w.nii.gz").exists()
    statuses = {s.series_number: s.status for s in report.visits[0].series}
    assert statuses[2] == statuses[9] == "ambiguous"

    chosen = ingest_upload(tmp_path / "up", tmp_path / "bids", choices={("P7", "base", "flair"): 9})
    assert chosen.ok, chosen.to_text()
    img = nib.load(str(anat / "sub-P7_ses-base_FLAIR.nii.gz"))
    data = np.asanyarray(img.dataobj)
    assert sorted(np.unique(data).tolist()) == sorted(np.unique(truth[9]).tolist())
    assert int(data.sum()) == int(truth[9].astype(np.int64).sum())
    assert any(f.code == "choice-applied" for f in chosen.findings)
    side = json.loads((anat / "sub-P7_ses-base_FLAIR.json").read_text())
    assert side["LesionqIngest"]["ChosenBy"] == "explicit choice"


def test_corrupt_file_is_named_and_the_rest_converted(tmp_path: Path) -> None:
    _small_visit(tmp_path / "up")
    visit = tmp_path / "up" / "site" / "P7" / "base"
    victim = visit / "IM_0005_0006.dcm"  # one T2 slice, pixel data cut short
    victim.write_bytes(victim.read_bytes()[:-700])
    header_cut = visit / "IM_0003_0004.dcm"  # one T1 slice, cut inside the header
    shutil.copy(header_cut, visit / "broken_copy.dcm")
    (visit / "broken_copy.dcm").write_bytes(header_cut.read_bytes()[:300])
    report = ingest_upload(tmp_path / "up", tmp_path / "bids")
    corrupt = [f for f in report.findings if f.code == "series-corrupt"]
    assert len(corrupt) == 1 and "IM_0005_0006.dcm" in corrupt[0].message
    unreadable = [f for f in report.findings if f.code == "dicom-unreadable"]
    assert len(unreadable) == 1 and "broken_copy.dcm" in unreadable[0].message
    anat = tmp_path / "bids" / "sub-P7" / "ses-base" / "anat"
    assert (anat / "sub-P7_ses-base_FLAIR.nii.gz").exists()
    assert (anat / "sub-P7_ses-base_T1w.nii.gz").exists()
    assert not (anat / "sub-P7_ses-base_T2w.nii.gz").exists()
    assert report.ok  # a broken T2 is a warning, the FLAIR is there


def test_missing_flair_fails_only_that_visit(tmp_path: Path) -> None:
    _small_visit(tmp_path / "up")
    other = tmp_path / "up" / "site" / "P8" / "base"
    aff = _affine(1)
    write_series(SeriesSpec(_volume(1), aff, 3, **PRESETS["t1"]), other, uid_seed="p8")
    report = ingest_upload(tmp_path / "up", tmp_path / "bids")
    by_subject = {v.subject: v for v in report.visits}
    assert by_subject["P7"].ok
    assert not by_subject["P8"].ok
    assert [f.code for f in by_subject["P8"].findings if f.level == "error"] == ["missing-flair"]


def test_subject_map_labels(tmp_path: Path) -> None:
    _small_visit(tmp_path / "up")
    tsv = tmp_path / "map.tsv"
    tsv.write_text("upload_name\tparticipant_id\nP7\tsub-trial042\n", encoding="utf-8")
    mapping = read_subject_map(tsv)
    assert mapping == {"P7": "trial042"}
    report = ingest_upload(tmp_path / "up", tmp_path / "bids", subject_map=mapping)
    assert report.visits[0].visit_id == "sub-trial042_ses-base"
    assert (tmp_path / "bids" / "sub-trial042" / "ses-base" / "anat").is_dir()


def test_bids_upload_goes_straight_in(ingested, tmp_path: Path) -> None:
    _, bids, _, _ = ingested
    up = tmp_path / "up" / "siteC"
    shutil.copytree(bids, up, ignore=shutil.ignore_patterns("sourcedata", "sub-S02"))
    report = ingest_upload(tmp_path / "up", tmp_path / "bids")
    assert report.ok, report.to_text()
    assert {v.kind for v in report.visits} == {"bids"}
    out = discover(tmp_path / "bids")
    assert [(v.subject, v.session) for v in out] == [("S01", "V1"), ("S01", "V2")]
    a = np.asanyarray(nib.load(str(out[0].flair)).dataobj)
    b = np.asanyarray(
        nib.load(str(bids / "sub-S01/ses-V1/anat/sub-S01_ses-V1_FLAIR.nii.gz")).dataobj
    )
    np.testing.assert_array_equal(a, b)
    assert out[1].acq_time == "1900-01-29T10:15:00"


def test_a_later_upload_of_a_follow_up_keeps_the_subjects_date_anchor(tmp_path: Path) -> None:
    full = tmp_path / "full"
    build_upload(full)
    first, later = tmp_path / "first", tmp_path / "later"
    shutil.copytree(full, first)
    shutil.copytree(full, later)
    for v in first.glob("*/*/V2"):
        shutil.rmtree(v)
    for v in later.glob("*/*/V1"):
        shutil.rmtree(v)
    bids = tmp_path / "bids"
    ingest_upload(first, bids)
    report = ingest_upload(later, bids)
    assert not [f for f in report.findings if f.code == "date-shift-partial"]
    key = {r["participant_id"]: r for r in _read_tsv(bids / DATE_SHIFT_KEY)}
    assert set(key) == {"sub-S01", "sub-S02"}
    for subj, (_site, _, visits) in SUBJECTS.items():
        label = subj.replace("-", "")
        rows = _read_tsv(bids / f"sub-{label}" / f"sub-{label}_sessions.tsv")
        got = {r["session_id"]: datetime.fromisoformat(r["acq_time"]) for r in rows}
        real = {
            f"ses-{v}": datetime.strptime(d + t, "%Y%m%d%H%M%S") for v, (d, t) in visits.items()
        }
        assert got["ses-V1"].date() == datetime(1900, 1, 1).date()
        assert got["ses-V2"] - got["ses-V1"] == real["ses-V2"] - real["ses-V1"]
        assert (
            int(key[f"sub-{label}"]["shift_days"])
            == (real["ses-V1"].date() - datetime(1900, 1, 1).date()).days
        )


def test_an_enhanced_multiframe_upload_is_classified_and_converted(tmp_path: Path) -> None:
    """A visit exported as Enhanced MR (one multi-frame file per series, names that say
    nothing): every contrast found from the functional groups, voxels intact."""
    visit = tmp_path / "up" / "site" / "P9" / "base"
    aff = _affine(2)
    truth = {}
    for n, preset in ((2, "flair"), (3, "t1"), (5, "t2"), (7, "t1ce")):
        vol = _volume(900 + n)
        spec = SeriesSpec(vol, aff, n, **{**PRESETS[preset], "description": f"series {n}"})
        write_enhanced_series(spec, visit, DicomIdentity(), uid_seed="p9")
        truth[n] = vol
    report = ingest_upload(tmp_path / "up", tmp_path / "bids")
    assert report.ok, report.to_text()
    got = {s.series_number: (s.label, s.status) for s in report.visits[0].series}
    assert got == {2: ("flair", "chosen"), 3: ("t1", "chosen"), 5: ("t2", "chosen"),
                   7: ("t1ce", "chosen")}  # fmt: skip
    anat = tmp_path / "bids" / "sub-P9" / "ses-base" / "anat"
    for n, suffix in ((2, "FLAIR"), (3, "T1w"), (5, "T2w"), (7, "ce-gadolinium_T1w")):
        img = nib.load(str(anat / f"sub-P9_ses-base_{suffix}.nii.gz"))
        data = np.asanyarray(img.dataobj)
        s, offset = source_indices(img.affine, data.shape, aff)
        assert offset < 1e-3, suffix
        np.testing.assert_array_equal(truth[n][s[0], s[1], s[2]], data.reshape(-1))
    ident = DicomIdentity()
    needles = {*ident.strings(), ident.study_date, "2019-03-01", ident.patient_birth_date}
    for path, data in _all_bytes(tmp_path / "bids"):
        for needle in needles:
            assert needle.lower().encode() not in data.lower(), f"{needle!r} found in {path}"
