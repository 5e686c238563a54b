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
