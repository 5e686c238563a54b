"""The batch system under faults, through the real command line (slow).

One uninterrupted reference run of the sample data (2 subjects x 3 visits) is
compared with: a run killed with SIGKILL mid-batch and resumed; a rerun with
nothing new; a rerun after one input changed and another was corrupted; two
runs started at once on the same output folder and database; a run on a local
dask cluster of 2 workers.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from lesionq.io.nifti import is_partial_file
from lesionq.io.tables import read_tsv
from lesionq.store import ResultsDB

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "sample_data" / "bids"
N_VISITS = 6


def _cli(bids: Path, out: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "lesionq.cli.main",
        "run",
        str(bids),
        str(out),
        "participant",
        "--pipeline",
        "mesems_testing",
        "--n-procs",
        "1",
        "--no-report",
        *extra,
    ]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(NIPYPE_NO_ET="1", OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    return env


def _run(bids: Path, out: Path, *extra: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        _cli(bids, out, *extra), env=_env(), capture_output=True, text=True, timeout=900
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"lesionq run failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
        )
    return proc


def _copy_bids(dest: Path) -> Path:
    shutil.copytree(SAMPLE, dest, ignore=shutil.ignore_patterns("derivatives"))
    return dest


def _tables(out: Path) -> dict[str, pd.DataFrame]:
    """Every result table of an output folder, keyed by relative path (timings dropped)."""
    tables = {}
    for path in sorted(out.rglob("*.tsv")):
        rel = path.relative_to(out).as_posix()
        if rel.startswith(".") or "/." in rel:
            continue
        df = read_tsv(path)
        tables[rel] = df.drop(columns=[c for c in ("duration_s",) if c in df.columns])
    return tables


def _assert_same_tables(out: Path, ref: Path) -> None:
    got, want = _tables(out), _tables(ref)
    assert sorted(got) == sorted(want)
    for name in want:
        pd.testing.assert_frame_equal(got[name], want[name], obj=name)


def _no_leftovers(out: Path) -> None:
    left = [
        p
        for p in out.rglob(".*")
        if (p.is_file() and is_partial_file(p)) or p.name.startswith((".anat.staging", ".anat.old"))
    ]
    assert not left, left
    # a finished run removes its scratch folder, a resumed run its killed predecessor's
    work = out / ".lesionq-work"
    assert not work.exists() or not list(work.iterdir()), list(work.iterdir())


def _finished_files_are_whole(out: Path) -> None:
    """Every visible output file reads completely (nothing half-written looks finished)."""
    for path in out.rglob("*"):
        rel = path.relative_to(out).as_posix()
        if not path.is_file() or rel.startswith(".") or "/." in rel:
            continue
        if path.name.endswith(".nii.gz"):
            with gzip.open(path) as fh:  # a truncated stream raises here
                while fh.read(1 << 20):
                    pass
            np.asarray(nib.load(str(path)).dataobj)
        elif path.suffix == ".json":
            json.loads(path.read_text())
        elif path.suffix == ".tsv":
            read_tsv(path)


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> tuple[Path, Path]:
    """An uninterrupted serial run: (bids, out)."""
    root = tmp_path_factory.mktemp("reference")
    bids = _copy_bids(root / "bids")
    out = root / "out"
    _run(bids, out, "--workers", "1")
    assert len(read_tsv(out / "visits.tsv")) == N_VISITS
    return bids, out


def _results_db(out: Path) -> ResultsDB:
    return ResultsDB.open(None, out_dir=out)


def test_kill_mid_batch_then_resume_repeats_no_finished_visit(reference, tmp_path):
    bids_ref, out_ref = reference
    out = tmp_path / "out"
    proc = subprocess.Popen(
        _cli(bids_ref, out, "--workers", "1"),
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    # kill once the third visit's processing has started (two finished, one half-done)
    deadline = time.monotonic() + 600
    lines = []
    assert proc.stdout is not None
    for line in proc.stdout:
        lines.append(line)
        if line.startswith("[3/6]") and line.rstrip().endswith("running"):
            time.sleep(2.0)  # inside the third visit's workflow
            break
        assert time.monotonic() < deadline, "".join(lines)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(30)
    assert proc.returncode == -signal.SIGKILL, "".join(lines)
    _finished_files_are_whole(out)

    db = _results_db(out)
    killed_run = int(db.ledger()["run_id"].max())
    done_before = {
        (r.participant_id, r.session_id)
        for r in db.ledger(killed_run).itertuples()
        if r.step == "visit" and r.outcome == "ok"
    }
    assert len(done_before) == 2, done_before

    resumed = _run(bids_ref, out, "--workers", "1", "--resume")
    assert f"resume: continuing run {killed_run}" in resumed.stdout
    ledger = db.ledger()
    new_run = int(ledger["run_id"].max())
    visits = ledger[(ledger["run_id"] == new_run) & (ledger["step"] == "visit")]
    skipped = {
        (r.participant_id, r.session_id)
        for r in visits.itertuples()
        if r.outcome == "skipped_up_to_date"
    }
    computed = {(r.participant_id, r.session_id) for r in visits.itertuples() if r.outcome == "ok"}
    assert skipped == done_before  # finished visits are not recomputed
    assert len(computed) == N_VISITS - 2 and not computed & done_before
    runs = pd.read_sql_table("runs", db.engine)
    assert runs.set_index("id").loc[killed_run, "status"] == "interrupted"
    assert runs.set_index("id").loc[new_run, "resumed_from"] == killed_run
    _no_leftovers(out)
    _assert_same_tables(out, out_ref)


def test_rerun_is_a_no_op_and_a_changed_or_corrupt_input_fails_or_recomputes_alone(
    reference, tmp_path
):
    bids_ref, out_ref = reference
    bids = _copy_bids(tmp_path / "bids")
    out = tmp_path / "out"
    shutil.copytree(out_ref, out)
    mtimes = {p: p.stat().st_mtime_ns for p in out.rglob("*.nii.gz")}

    again = _run(bids, out, "--workers", "1")
    assert "0 processed now, 6 up to date" in again.stdout
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.nii.gz")} == mtimes
    _assert_same_tables(out, out_ref)

    # one changed input (a visit re-uploaded) and one corrupt input (truncated upload)
    changed = bids / "sub-phantom02" / "ses-03" / "anat" / "sub-phantom02_ses-03_FLAIR.nii.gz"
    img = nib.load(str(changed))
    data = np.asarray(img.dataobj).copy()
    data[data.shape[0] // 2, data.shape[1] // 2, data.shape[2] // 2] += 1
    nib.save(nib.Nifti1Image(data, img.affine, img.header), str(changed))
    corrupt = bids / "sub-phantom01" / "ses-02" / "anat" / "sub-phantom01_ses-02_FLAIR.nii.gz"
    raw = corrupt.read_bytes()
    corrupt.write_bytes(raw[: len(raw) // 2])

    third = _run(bids, out, "--workers", "1", check=False)
    assert third.returncode == 1  # a visit failed
    db = _results_db(out)
    ledger = db.ledger()
    last = ledger[(ledger["run_id"] == ledger["run_id"].max()) & (ledger["step"] == "visit")]
    by_visit = {(r.participant_id, r.session_id): r for r in last.itertuples()}
    assert by_visit[("sub-phantom02", "ses-03")].outcome == "ok"
    bad = by_visit[("sub-phantom01", "ses-02")]
    assert bad.outcome == "failed"
    assert str(corrupt) in bad.message and bad.error_class
    assert sum(r.outcome == "skipped_up_to_date" for r in last.itertuples()) == N_VISITS - 2
    visits = read_tsv(out / "visits.tsv").set_index(["participant_id", "session_id"])
    assert visits.loc[("sub-phantom01", "ses-02"), "status"] == "failed"
    assert str(corrupt) in visits.loc[("sub-phantom01", "ses-02"), "reason"]
    # the old results are kept in the audit history, the new ones are current
    audit = db.audit_log()
    superseded = audit[audit["action"] == "visit_result.superseded"]
    ids = {json.dumps(a) for a in superseded["entity_id"]}
    assert len(superseded) == 2, ids
    for before in superseded["before"]:
        before = before if isinstance(before, dict) else json.loads(before)
        assert before["status"] == "ok"
    results = pd.read_sql_table("visit_results", db.engine)
    assert results.groupby("visit_id")["is_current"].sum().eq(1).all()
    assert len(results) == N_VISITS + 2


def test_two_runs_at_once_share_the_work_without_duplicates(reference, tmp_path):
    bids_ref, out_ref = reference
    out = tmp_path / "out"
    procs = [
        subprocess.Popen(
            _cli(bids_ref, out, "--workers", "1"),
            env=_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for _ in range(2)
    ]
    outputs = [p.communicate(timeout=900)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    db = _results_db(out)
    ledger = db.ledger()
    visits = ledger[ledger["step"] == "visit"]
    assert visits["run_id"].nunique() == 2
    # every visit computed exactly once over both runs; the other run skipped it
    computed = visits[visits["outcome"] == "ok"]
    assert len(computed) == N_VISITS
    assert not computed.duplicated(["participant_id", "session_id"]).any()
    assert set(visits["outcome"]) <= {"ok", "skipped_locked", "skipped_up_to_date"}
    results = pd.read_sql_table("visit_results", db.engine)
    assert len(results) == N_VISITS and results["is_current"].all()
    _no_leftovers(out)
    _assert_same_tables(out, out_ref)


def test_two_dask_workers_give_the_serial_results(reference, tmp_path):
    bids_ref, out_ref = reference
    out = tmp_path / "out"
    proc = _run(bids_ref, out, "--workers", "2")
    assert "6 processed now" in proc.stdout
    _assert_same_tables(out, out_ref)


@pytest.mark.parametrize("fmt", ["tsv", "csv", "parquet"])
def test_export_writes_the_endpoint_table_of_the_database(reference, tmp_path, fmt):
    _, out_ref = reference
    dest = tmp_path / f"endpoints.{fmt}"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "lesionq.cli.main",
            "export",
            "--db",
            str(out_ref / "lesionq.sqlite"),
            str(dest),
        ],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    got = {
        "tsv": lambda: read_tsv(dest),
        "csv": lambda: pd.read_csv(dest, dtype={"participant_id": str}),
        "parquet": lambda: pd.read_parquet(dest),
    }[fmt]()
    want = read_tsv(out_ref / "endpoints.tsv")
    assert list(got.columns) == list(want.columns)
    assert len(got) == len(want) > 0
    key = ["participant_id", "period"]
    got = got.sort_values(key).reset_index(drop=True)
    want = want.sort_values(key).reset_index(drop=True)
    for col in want.columns:
        a, b = got[col], want[col]
        if pd.api.types.is_numeric_dtype(b):
            np.testing.assert_allclose(
                a.astype(float), b.astype(float), equal_nan=True, err_msg=col
            )
        else:
            # CSV cannot tell an empty string from a missing value: compare both as n/a
            norm = lambda x: x.fillna("n/a").astype(str).replace("", "n/a").tolist()  # noqa: E731
            assert norm(a) == norm(b), col


def test_export_refuses_a_missing_database(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "lesionq.cli.main",
            "export",
            "--db",
            str(tmp_path / "none.sqlite"),
            str(tmp_path / "x.tsv"),
        ],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert "no such SQLite results database" in proc.stderr
    assert not (tmp_path / "none.sqlite").exists()
