"""``lesionq ingest``: a DICOM upload through the command line, ambiguity resolved by --choose."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from lesionq.cli.main import build_parser, main
from lesionq.testing.dicom import PRESETS, DicomIdentity, SeriesSpec, write_series


def _upload(root: Path) -> None:
    visit = root / "siteA" / "P-7" / "week0"
    ident = DicomIdentity()
    aff = np.diag([1.0, 1.0, 3.0, 1.0])
    rng = np.random.default_rng(3)
    for number, preset in ((2, "flair"), (9, "flair"), (3, "t1")):
        vol = rng.integers(0, 900, (24, 20, 12)).astype(np.int16)
        write_series(SeriesSpec(vol, aff, number, **PRESETS[preset]), visit, ident, uid_seed="p7")


def test_ingest_reports_an_ambiguity_then_choose_resolves_it(tmp_path, capsys):
    _upload(tmp_path / "up")
    bids = tmp_path / "bids"
    flair = bids / "sub-P7" / "ses-week0" / "anat" / "sub-P7_ses-week0_FLAIR.nii.gz"
    assert main(["ingest", str(tmp_path / "up"), str(bids)]) == 1
    text = capsys.readouterr().out
    assert "ambiguous" in text and "#9" in text
    assert not flair.exists()
    assert main(["ingest", str(tmp_path / "up"), str(bids), "--choose", "P-7/week0/flair=9"]) == 0
    assert flair.is_file()


def test_choose_syntax_errors_are_usage_errors():
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args(["ingest", "a", "b", "--choose", "P7-week0-flair=9"])
    assert exc.value.code == 2


def test_run_dicom_refuses_an_ingest_folder_inside_the_outputs(tmp_path, capsys):
    _upload(tmp_path / "up")
    out = tmp_path / "out"
    code = main(
        ["run", str(tmp_path / "up"), str(out), "participant", "--dicom", str(out / "bids")]
    )
    assert code == 2
    assert "must lie outside the output folder" in capsys.readouterr().err
    assert not (out / "bids").exists()


def test_run_dicom_stops_when_no_visit_could_be_ingested(tmp_path, capsys):
    _upload(tmp_path / "up")  # two FLAIR series: ambiguous, so no FLAIR is written
    code = main(
        [
            "run",
            str(tmp_path / "up"),
            str(tmp_path / "out"),
            "participant",
            "--dicom",
            str(tmp_path / "bids"),
        ]
    )
    assert code == 1  # the visit fails on its missing FLAIR, named in the summary
    text = capsys.readouterr().out
    assert "ambiguous" in text
    assert "FAILED sub-P7 ses-week0" in text and "FLAIR" in text
    assert "QC report" not in text  # no report for a subject without a successful visit
