"""DICOM reading, grouping, classification rules and dcm2niix conversion."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest

from lesionq.errors import CorruptFileError, ProcessingError
from lesionq.io.dicom import (
    SeriesFeatures,
    classify_series,
    convert_series,
    group_series,
    is_dicom_file,
    parse_dicom_datetime,
    pixel_digest,
    read_header,
)
from lesionq.testing.dicom import (
    PRESETS,
    DicomIdentity,
    SeriesSpec,
    lps_geometry,
    source_indices,
    write_enhanced_series,
    write_localiser,
    write_series,
)

AFF = np.array(
    [[-0.9, 0.0, 0.0, 20.0], [0.0, 1.1, 0.0, -15.0], [0.0, 0.0, 3.0, -10.0], [0, 0, 0, 1]]
)


def _vol(seed: int = 0, shape=(16, 14, 12)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 900, shape).astype(np.int16)


def _features(preset: str, **kw) -> SeriesFeatures:
    p = PRESETS[preset]
    base = dict(
        description=p["description"],
        scanning_sequence=p["scanning_sequence"],
        sequence_variant=p["sequence_variant"],
        scan_options=p["scan_options"],
        echo_time_ms=p["echo_time_ms"],
        repetition_time_ms=p["repetition_time_ms"],
        inversion_time_ms=p.get("inversion_time_ms"),
        acquisition_type=p["acquisition_type"],
        image_type=p.get("image_type", ("ORIGINAL", "PRIMARY")),
        contrast_agent=p.get("contrast_agent", ""),
        n_slices=40,
    )
    base.update(kw)
    return SeriesFeatures(**base)


@pytest.mark.parametrize(
    ("features", "label"),
    [
        (_features("flair"), "flair"),
        (_features("t1"), "t1"),
        (_features("t1ce"), "t1ce"),
        (_features("t2"), "t2"),
        (_features("dwi"), "other"),
        # physics alone (meaningless names) still decides
        (_features("flair", description="series A"), "flair"),
        (_features("t2", description="series B"), "t2"),
        (_features("t1ce", description="series C"), "t1ce"),
        # names alone are not enough for T1/T2 (2 points < 3)
        (_features("t2", description="t2", echo_time_ms=None, repetition_time_ms=None), "unknown"),
        # localisers
        (_features("t1", n_slices=3), "localiser"),
        (_features("t1", description="AAHead_Scout"), "localiser"),
        (_features("t2", image_type=("ORIGINAL", "PRIMARY", "LOCALIZER")), "localiser"),
        (_features("t2", n_orientations=3), "localiser"),
        # contradictions
        (_features("t1", description="t1_mprage_pre", contrast_agent="GADOVIST"), "unknown"),
        (_features("t2", description="t1_tse"), "unknown"),
        (_features("t2", modality="CT"), "other"),
    ],
)
def test_classify_series_rule_table(features: SeriesFeatures, label: str) -> None:
    c = classify_series(features)
    assert c.label == label, c.reasons
    assert c.reasons and all(isinstance(r, str) for r in c.reasons)


def test_unknown_lists_candidates() -> None:
    c = classify_series(_features("t2", description="t1_tse"))
    assert set(c.candidates) == {"t1", "t2"}
    assert "undecided" in c.reasons[-1]


def test_post_name_needs_a_token() -> None:
    c = classify_series(_features("t2", description="t2_tse_tra_posterior_fossa"))
    assert c.label == "t2"


def test_is_dicom_and_header(tmp_path: Path) -> None:
    files = write_series(SeriesSpec(_vol(), AFF, 4, **PRESETS["flair"]), tmp_path / "s")
    (tmp_path / "x.txt").write_text("DICM")
    assert is_dicom_file(files[0]) and not is_dicom_file(tmp_path / "x.txt")
    assert not is_dicom_file(tmp_path)
    h = read_header(files[0])
    assert h.series_number == 4 and h.inversion_time_ms == 2500.0
    assert h.scanning_sequence == ("SE", "IR")
    assert "DOEXQ" in h.identifiers and "PIDQ94731" in h.identifiers
    assert h.acquired is not None and h.study_started is not None
    ds = pydicom.dcmread(files[0])
    assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.4"
    orient, spacing, origin = lps_geometry(AFF)
    np.testing.assert_allclose([float(v) for v in ds.ImageOrientationPatient], orient)
    np.testing.assert_allclose([float(v) for v in ds.PixelSpacing], [1.1, 0.9])
    np.testing.assert_allclose([float(v) for v in ds.ImagePositionPatient], [-20.0, 15.0, -10.0])
    assert float(ds.SliceThickness) == 3.0
    with pytest.raises(CorruptFileError, match="x.txt"):
        read_header(tmp_path / "x.txt")


def test_group_series_collapses_repeated_files(tmp_path: Path) -> None:
    a = write_series(SeriesSpec(_vol(1), AFF, 2, **PRESETS["t2"]), tmp_path / "a")
    write_series(SeriesSpec(_vol(2), AFF, 3, **PRESETS["t1"]), tmp_path / "b")
    write_localiser(tmp_path / "c")
    for f in a[:3]:
        (tmp_path / "copy").mkdir(exist_ok=True)
        (tmp_path / "copy" / f.name).write_bytes(f.read_bytes())
    headers = [read_header(p) for p in sorted(tmp_path.rglob("*.dcm"))]
    series = group_series(reversed(headers))
    assert [s.series_number for s in series] == [1, 2, 3]
    loc, t2, t1 = series
    assert loc.n_orientations == 3 and loc.n_slices == 3
    assert len(t2.headers) == 12 and len(t2.repeated_files) == 3 and t2.n_slices == 12
    # slices are sorted along the normal
    z = [h.position[2] for h in t2.headers]
    assert z in (sorted(z), sorted(z, reverse=True))
    assert classify_series(loc.features()).label == "localiser"
    assert pixel_digest(t2) != pixel_digest(t1)


def test_pixel_digest_names_truncated_file(tmp_path: Path) -> None:
    files = write_series(SeriesSpec(_vol(), AFF, 2, **PRESETS["t2"]), tmp_path)
    series = group_series(read_header(p) for p in files)[0]
    before = pixel_digest(series)
    files[5].write_bytes(files[5].read_bytes()[:-100])
    with pytest.raises(CorruptFileError, match=files[5].name):
        pixel_digest(series)
    assert len(before) == 64


def test_parse_dicom_datetime() -> None:
    assert parse_dicom_datetime("20190301", "0930").hour == 9
    assert parse_dicom_datetime("2019", "") is None
    assert parse_dicom_datetime("20190231", "") is None


@pytest.mark.parametrize("oblique_deg", [0.0, 17.0])
def test_convert_series_geometry_values_and_deid(tmp_path: Path, oblique_deg: float) -> None:
    th = np.radians(oblique_deg)
    rot = np.array([[1, 0, 0], [0, np.cos(th), -np.sin(th)], [0, np.sin(th), np.cos(th)]])
    aff = AFF.copy()
    aff[:3, :3] = rot @ AFF[:3, :3]
    vol = _vol(3)
    ident = DicomIdentity()
    files = write_series(
        SeriesSpec(vol, aff, 9, **{**PRESETS["flair"], "description": "flair DOEXQ 20190301"}),
        tmp_path / "in",
        ident,
    )
    series = group_series(read_header(p) for p in files)[0]
    dest = tmp_path / "out" / "sub-1_ses-1_FLAIR.nii.gz"
    res = convert_series(series, dest)
    assert res.image.action == "created" and res.converter.startswith("dcm2niix v")
    img = nib.load(str(dest))
    data = np.asanyarray(img.dataobj)
    s, offset = source_indices(img.affine, data.shape, aff)
    assert offset < 1e-3
    np.testing.assert_array_equal(vol[s[0], s[1], s[2]], data.reshape(-1))
    raw = dest.read_bytes()
    import gzip

    for blob in (raw, gzip.decompress(raw), dest.with_suffix("").with_suffix(".json").read_bytes()):
        for needle in ident.strings():
            assert needle.encode() not in blob
    side = json.loads(dest.with_name("sub-1_ses-1_FLAIR.json").read_text())
    assert side["SeriesDescription"] == "flair [redacted] [redacted]"
    assert "InstitutionName" in res.dropped_fields and "descrip" in res.cleared_header_fields
    again = convert_series(series, dest)
    assert again.image.action == "unchanged" and again.sidecar.action == "unchanged"


def test_convert_series_missing_binary(tmp_path: Path) -> None:
    files = write_series(SeriesSpec(_vol(), AFF, 2, **PRESETS["t2"]), tmp_path)
    series = group_series(read_header(p) for p in files)[0]
    with pytest.raises(ProcessingError, match="cannot run"):
        convert_series(series, tmp_path / "o.nii.gz", binary=tmp_path / "no-dcm2niix")


@pytest.mark.parametrize(
    ("preset", "label"), [("flair", "flair"), ("t1", "t1"), ("t2", "t2"), ("t1ce", "t1ce")]
)
def test_enhanced_multiframe_headers_classify_like_classic_ones(
    tmp_path: Path, preset: str, label: str
) -> None:
    """One Enhanced MR file per series, with a name that says nothing: the functional
    groups alone (times, sequence type, contrast use) must give the class."""
    spec = SeriesSpec(_vol(4), AFF, 7, **{**PRESETS[preset], "description": "series 7"})
    path = write_enhanced_series(spec, tmp_path)
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.4.1" and int(ds.NumberOfFrames) == 12
    assert (
        "EchoTime" not in ds and "ScanningSequence" not in ds and "ImagePositionPatient" not in ds
    )
    h = read_header(path)
    assert h.echo_time_ms == PRESETS[preset]["echo_time_ms"]
    assert h.repetition_time_ms == PRESETS[preset]["repetition_time_ms"]
    assert h.inversion_time_ms == PRESETS[preset].get("inversion_time_ms")
    assert ("IR" in h.scanning_sequence) == ("IR" in PRESETS[preset]["scanning_sequence"])
    assert h.orientation is not None and h.position is not None and h.acquired is not None
    series = group_series([h])[0]
    assert series.n_slices == 12
    assert classify_series(series.features()).label == label


def test_enhanced_multiframe_series_converts_with_its_geometry(tmp_path: Path) -> None:
    vol = _vol(5)
    path = write_enhanced_series(SeriesSpec(vol, AFF, 3, **PRESETS["flair"]), tmp_path / "in")
    series = group_series([read_header(path)])[0]
    assert pixel_digest(series)  # whole multi-frame pixel data present
    dest = tmp_path / "out" / "sub-1_ses-1_FLAIR.nii.gz"
    convert_series(series, dest)
    img = nib.load(str(dest))
    data = np.asanyarray(img.dataobj)
    s, offset = source_indices(img.affine, data.shape, AFF)
    assert offset < 1e-3
    np.testing.assert_array_equal(vol[s[0], s[1], s[2]], data.reshape(-1))
