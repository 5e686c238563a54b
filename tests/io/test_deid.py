"""De-identification helpers: identifiers, redaction, sidecar whitelist, NIfTI scrub, dates."""

from __future__ import annotations

from datetime import datetime

import nibabel as nib
import numpy as np
from nibabel.nifti1 import Nifti1Extension

from lesionq.io.deid import (
    REDACTED,
    SIDECAR_WHITELIST,
    anonymous_nifti,
    filter_sidecar,
    hash_uid,
    identifying_values,
    redact,
    scrub_nifti_header,
    shift_dates,
)


def test_identifying_values_split_person_names_only() -> None:
    ids = identifying_values(
        {
            "PatientName": "DOE^JANE",
            "PatientID": "12345",
            "InstitutionName": "Univ Medical Centre",
            "PatientSex": "F",
            "StudyDate": "20190301",
            "EchoTime": "81",
        }
    )
    assert {"DOE^JANE", "DOE", "JANE", "12345", "Univ Medical Centre", "20190301"} == ids


def test_redact_names_and_dates_case_insensitive() -> None:
    text = redact("flair doe jane 01.03.2019 2019-03-01 20190301", {"DOE", "JANE"})
    assert "doe" not in text.lower() and "2019" not in text
    assert text.startswith("flair ") and text.count(REDACTED) == 5
    assert redact("t2_tse_tra b1000 v1.0.20260724", date_tokens=False) == (
        "t2_tse_tra b1000 v1.0.20260724"
    )


def test_filter_sidecar_whitelist_and_redaction() -> None:
    meta = {
        "EchoTime": 0.08,
        "InstitutionName": "HOSP",
        "DeviceSerialNumber": "123",
        "AcquisitionTime": "09:35:00",
        "SeriesDescription": "FLAIR DOE 20190301",
        "PatientName": "DOE",
    }
    kept, dropped = filter_sidecar(meta, {"DOE"})
    assert set(kept) == {"EchoTime", "SeriesDescription"} and set(kept) <= SIDECAR_WHITELIST
    assert kept["SeriesDescription"] == f"FLAIR {REDACTED} {REDACTED}"
    assert dropped == ["AcquisitionTime", "DeviceSerialNumber", "InstitutionName", "PatientName"]


def test_scrub_and_anonymous_nifti_keep_voxels_geometry_scaling() -> None:
    values = np.arange(4 * 5 * 6, dtype=np.float32).reshape(4, 5, 6) * 2.5 + 1.0
    aff = np.array([[-0.9, 0.1, 0, 10], [0.1, 0.9, 0, -5], [0, 0, 3, 2], [0, 0, 0, 1]])
    img = nib.Nifti1Image(values, aff)
    img.set_data_dtype(np.int16)  # nibabel stores int16 with scl_slope/scl_inter
    img.header["descrip"] = b"DOE^JANE 20190301"
    img.header["aux_file"] = b"PID123"
    img.header["intent_name"] = b"x"
    img.header["db_name"] = b"y"
    img.header.extensions.append(Nifti1Extension(6, b"PatientName=DOE"))
    img = nib.Nifti1Image.from_bytes(img.to_bytes())
    assert img.dataobj.slope not in (None, 1.0)
    out = anonymous_nifti(img)
    blob = out.to_bytes()
    assert b"DOE" not in blob and b"PID123" not in blob
    raw = nib.Nifti1Image.from_bytes(blob)
    np.testing.assert_array_equal(
        np.asanyarray(raw.dataobj.get_unscaled()), np.asanyarray(img.dataobj.get_unscaled())
    )
    np.testing.assert_allclose(raw.get_fdata(), img.get_fdata())
    np.testing.assert_allclose(raw.affine, aff, atol=1e-6)
    assert raw.dataobj.slope == img.dataobj.slope and raw.dataobj.inter == img.dataobj.inter
    assert raw.get_data_dtype() == np.int16
    h = img.header.copy()
    assert scrub_nifti_header(h) == ["descrip", "aux_file", "intent_name", "db_name", "extensions"]
    assert scrub_nifti_header(h) == []


def test_shift_dates_anchor_and_exact_intervals() -> None:
    real = {
        "b": datetime(2019, 3, 29, 8, 0, 1),
        "a": datetime(2019, 3, 1, 23, 59, 59),
        "c": None,
        "d": datetime(2020, 2, 29, 12, 0),
    }
    out = shift_dates(real)
    assert out["a"] == datetime(1900, 1, 1, 23, 59, 59)
    assert out["c"] is None
    for k in ("b", "d"):
        assert out[k] - out["a"] == real[k] - real["a"]
    assert shift_dates({"x": None}) == {"x": None}


def test_hash_uid_is_stable_and_short() -> None:
    assert hash_uid("1.2.840.1") == hash_uid(" 1.2.840.1 ")
    assert hash_uid("1.2.840.1") != hash_uid("1.2.840.2")
    assert len(hash_uid("1.2")) == 16
