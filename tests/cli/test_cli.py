"""Command-line parsing and exit codes that need no processing."""

from __future__ import annotations

import json

import pytest

from lesionq.cli.main import build_parser, main


def test_parser_bids_app_signature():
    args = build_parser().parse_args(
        [
            "run",
            "in",
            "out",
            "participant",
            "--participant-label",
            "01",
            "sub-02",
            "--pipeline",
            "mesems_testing",
            "--n-procs",
            "2",
            "--set",
            "lesions.min_volume_mm3=5",
        ]
    )
    assert args.participant_label == ["01", "sub-02"]
    assert args.n_procs == 2
    assert args.overrides == [("lesions.min_volume_mm3", 5)]


def test_only_participant_level():
    with pytest.raises(SystemExit):
        build_parser().parse_args(["run", "in", "out", "group"])


def test_unknown_protocol_exits_2(tmp_path, capsys):
    code = main(
        ["run", str(tmp_path), str(tmp_path / "o"), "participant", "--pipeline", "no_such_protocol"]
    )
    assert code == 2
    assert "no_such_protocol" in capsys.readouterr().err


def test_bad_override_exits_2(tmp_path, capsys):
    code = main(
        [
            "run",
            str(tmp_path),
            str(tmp_path / "o"),
            "participant",
            "--pipeline",
            "mesems_testing",
            "--set",
            "lesions.no_such_key=1",
        ]
    )
    assert code == 2
    assert "no_such_key" in capsys.readouterr().err


def test_check_reports_missing_flair(tmp_path, capsys):
    (tmp_path / "dataset_description.json").write_text(
        json.dumps({"Name": "x", "BIDSVersion": "1.9.0"})
    )
    (tmp_path / "sub-01" / "ses-01" / "anat").mkdir(parents=True)
    code = main(["check", str(tmp_path)])
    out = capsys.readouterr().out
    assert code == 1
    assert "missing-flair" in out or "FLAIR" in out
