"""``lesionq run`` and ``check`` through ``main()`` on tiny BIDS trees: participant labels
and quiet logs.

The trees hold visits that fail fast (no FLAIR: the check battery stops them; a
box phantom: brain extraction stops it), so the runs take seconds.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from lesionq.cli.main import QUIET_LOGGERS, main
from lesionq.io.tables import read_tsv
from lesionq.testing.bids import write_nifti
from lesionq.testing.phantoms import make_block_phantom


def _bids(root: Path, subjects: dict[str, bool]) -> Path:
    """A BIDS tree: one session per subject, with a box-phantom FLAIR or an empty anat/."""
    root.mkdir(parents=True)
    (root / "dataset_description.json").write_text(
        json.dumps({"Name": "tiny", "BIDSVersion": "1.9.0"})
    )
    box = make_block_phantom(shape=(48, 48, 32), voxel_size_mm=(1.0, 1.0, 1.0))
    for subject, with_flair in subjects.items():
        anat = root / f"sub-{subject}" / "ses-01" / "anat"
        anat.mkdir(parents=True)
        if with_flair:
            name = f"sub-{subject}_ses-01_FLAIR.nii.gz"
            write_nifti(np.round(box.image), box.affine, anat / name, np.int16)
    return root


def _run(bids: Path, out: Path, *extra: str) -> list[str]:
    return [
        "run",
        str(bids),
        str(out),
        "participant",
        "--pipeline",
        "mesems_testing",
        "--no-report",
        "--n-procs",
        "1",
        *extra,
    ]


# ----------------------------------------------------------------------------- labels


@pytest.mark.parametrize(
    "labels",
    [
        ["--participant-label", "03", "--participant_label", "sub-01"],
        ["--participant-label", "03", "--participant-label", "01"],
        ["--participant_label", "03", "01"],
    ],
)
def test_run_processes_every_label_of_repeated_flags(tmp_path, capsys, labels):
    bids = _bids(tmp_path / "bids", {"01": False, "02": False, "03": False})
    out = tmp_path / "out"
    code = main(_run(bids, out, "--workers", "1", *labels))
    assert code == 1, capsys.readouterr()  # no FLAIR anywhere: every visit fails
    visits = read_tsv(out / "visits.tsv")
    assert sorted(visits["participant_id"]) == ["sub-01", "sub-03"]


def test_check_checks_every_label_of_repeated_flags(tmp_path, capsys):
    bids = _bids(tmp_path / "bids", {"01": False, "02": False, "03": False})
    code = main(["check", str(bids), "--participant-label", "03", "--participant_label", "01"])
    out = capsys.readouterr().out
    assert code == 1
    assert "sub-01" in out and "sub-03" in out and "sub-02" not in out


@pytest.mark.parametrize("command", ["run", "check"])
def test_a_label_without_a_subject_is_a_usage_error_naming_it(tmp_path, capsys, command):
    bids = _bids(tmp_path / "bids", {"01": False, "02": False})
    out = tmp_path / "out"
    args = _run(bids, out) if command == "run" else ["check", str(bids)]
    labels = ["--participant-label", "01", "nope", "--participant-label", "sub-zz9"]
    assert main([*args, *labels]) == 2
    captured = capsys.readouterr()
    assert "'nope'" in captured.err and "'zz9'" in captured.err
    assert "'01'" not in captured.err.split("subjects there")[0]
    assert "subjects there: 01, 02" in captured.err
    assert not out.exists()


# ----------------------------------------------------------------------------- bad inputs


def test_a_symlink_loop_fails_its_visit_and_every_count_agrees(tmp_path, capsys):
    """A visit whose FLAIR or T2w is a symlink loop gets a failed row naming the file;
    the run's console, ``lesionq status`` and the run record count the same failures."""
    bids = _bids(tmp_path / "bids", {"loop": False, "noflair": False})
    anat1 = bids / "sub-loop" / "ses-01" / "anat"
    (anat1 / "sub-loop_ses-01_FLAIR.nii.gz").symlink_to("sub-loop_ses-01_FLAIR.nii.gz")
    anat2 = bids / "sub-loop" / "ses-02" / "anat"
    anat2.mkdir(parents=True)
    box = make_block_phantom(shape=(48, 48, 32), voxel_size_mm=(1.0, 1.0, 1.0))
    write_nifti(np.round(box.image), box.affine, anat2 / "sub-loop_ses-02_FLAIR.nii.gz", np.int16)
    (anat2 / "a").symlink_to("b")
    (anat2 / "b").symlink_to("a")
    (anat2 / "sub-loop_ses-02_T2w.nii.gz").symlink_to("a")
    out = tmp_path / "out"

    assert main(_run(bids, out, "--workers", "1")) == 1
    console = capsys.readouterr().out
    visits = read_tsv(out / "visits.tsv").set_index(["participant_id", "session_id"])
    assert len(visits) == 3 and (visits["status"] == "failed").all()
    for ses, name in (("ses-01", "sub-loop_ses-01_FLAIR.nii.gz"), ("ses-02", "sub-loop_ses-02_T2w.nii.gz")):  # fmt: skip
        reason = visits.loc[("sub-loop", ses), "reason"]
        assert name in reason and "symlink loop" in reason, reason
    assert "0 visit(s) ok, 3 failed" in console

    db = str(out / "lesionq.sqlite")
    assert main(["status", "--db", db]) == 1
    status = capsys.readouterr().out
    assert "failed visits (3):" in status and "visits ok/failed/skipped 0/3/0" in status
    assert status.count("symlink loop") == 2

    assert main(["check", str(bids)]) == 1
    check = capsys.readouterr().out
    assert check.count("symlink-loop") == 2
    assert "datalad" not in check and "annexed" not in check


@pytest.mark.parametrize("where", ["under-a-file", "is-a-file"])
def test_an_output_folder_that_cannot_be_written_is_a_one_line_usage_error(tmp_path, capsys, where):
    bids = _bids(tmp_path / "bids", {"01": False})
    blocker = tmp_path / "taken"
    blocker.write_text("not a folder\n")
    out = blocker / "out" if where == "under-a-file" else blocker
    assert main(_run(bids, out, "--workers", "1")) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith(f"lesionq: error: {out}: the output folder (OUT_DIR) cannot be written")
    assert f"{blocker} is a file, not a folder" in err and "(fix: " in err


# ----------------------------------------------------------------------------- logs

# an INFO line of dask / distributed / nipype, in any of their formats:
# "... INFO distributed.scheduler: ...", "distributed.nanny - INFO - ...",
# "... nipype.workflow INFO:"
_NAMES = "|".join(re.escape(n) for n in QUIET_LOGGERS)
_CHATTER = re.compile(rf"\b({_NAMES})(\.\w+)*\b\W+INFO\b|\bINFO\W+({_NAMES})(\.\w+)*\b")


@pytest.mark.parametrize("verbose", [False, True], ids=["default", "-v"])
def test_run_on_dask_workers_prints_no_library_info_lines_unless_verbose(tmp_path, capfd, verbose):
    """A fresh process calls ``main()`` (as the console script does: logging not yet
    configured, dask not yet imported); its dask workers inherit its stderr."""
    bids = _bids(tmp_path / "bids", {"01": True, "02": True})
    argv = (["-v"] if verbose else []) + _run(bids, tmp_path / "out", "--workers", "2")
    code = "import sys; from lesionq.cli.main import main; sys.exit(main(sys.argv[1:]))"
    proc = subprocess.run([sys.executable, "-c", code, *argv], timeout=300, check=False)
    captured = capfd.readouterr()
    assert proc.returncode in (0, 1), captured.err
    assert len(read_tsv(tmp_path / "out" / "visits.tsv")) == 2
    chatter = [line for line in captured.err.splitlines() if _CHATTER.search(line)]
    if verbose:
        assert any("distributed.scheduler" in line for line in chatter), captured.err
    else:
        assert chatter == [], "\n".join(chatter)
