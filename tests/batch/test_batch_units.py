"""Fast tests of the batch system's parts: fingerprints, locks, leftovers, worker sizing."""

from __future__ import annotations

import json
import multiprocessing as mp
import shutil
import time
from pathlib import Path

import pytest

from lesionq.batch.executor import default_workers
from lesionq.batch.fingerprint import fingerprint_visit
from lesionq.batch.locks import SubjectBusy, subject_lock, tables_lock
from lesionq.batch.subject import SubjectJob, _up_to_date
from lesionq.config import DEFAULT_ATLAS, atlases_dir, load_protocol
from lesionq.io.bids import discover
from lesionq.io.derivatives import remove_stale_temporaries
from lesionq.io.nifti import atomic_path, is_partial_file

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "sample_data" / "bids"


def _copy_subject(tmp_path: Path) -> Path:
    root = tmp_path / "bids"
    shutil.copytree(SAMPLE / "sub-phantom01", root / "sub-phantom01")
    shutil.copy(SAMPLE / "dataset_description.json", root / "dataset_description.json")
    return root


def test_fingerprint_changes_with_a_scan_byte_and_with_acq_time(tmp_path):
    root = _copy_subject(tmp_path)
    v1 = discover(root)[0]
    fp1 = fingerprint_visit(v1, root)
    assert fingerprint_visit(v1, root) == fp1  # deterministic
    assert {s.contrast for s in fp1.scans} == {"flair", "t1", "t2", "t1ce"}
    assert all(not s.path.startswith("/") for s in fp1.scans)  # relative to the BIDS root
    # one changed byte in one scan
    raw = bytearray(v1.t2.read_bytes())
    raw[-10] ^= 0xFF
    v1.t2.write_bytes(bytes(raw))
    fp2 = fingerprint_visit(v1, root)
    assert fp2.inputs_sha256 != fp1.inputs_sha256
    assert [s.sha256 for s in fp2.scans if s.contrast == "flair"] == [
        s.sha256 for s in fp1.scans if s.contrast == "flair"
    ]
    # a new acquisition date moves the visit in the schedule: a different computation
    sessions = root / "sub-phantom01" / "sub-phantom01_sessions.tsv"
    sessions.write_text(sessions.read_text().replace("2025-09-22", "2025-09-23"))
    v1b = discover(root)[0]
    assert fingerprint_visit(v1b, root).inputs_sha256 != fp2.inputs_sha256


def test_fingerprint_of_an_unreadable_scan_still_exists(tmp_path):
    root = _copy_subject(tmp_path)
    v1 = discover(root)[0]
    v1.t1.unlink()
    fp = fingerprint_visit(v1, root)
    t1 = [s for s in fp.scans if s.contrast == "t1"][0]
    assert t1.sha256 == "unreadable:FileNotFoundError"
    assert t1.size_bytes == -1


def test_fingerprint_of_a_symlink_loop_a_fifo_or_a_folder_exists_without_hanging(tmp_path):
    """Bad paths get an ``unreadable:`` hash: no exception, and a FIFO is never opened."""
    import os
    import threading

    root = _copy_subject(tmp_path)
    v1 = discover(root)[0]
    v1.flair.unlink()
    v1.flair.symlink_to(v1.flair.name)  # a link to itself
    v1.t2.unlink()
    os.mkfifo(v1.t2)  # opening it for reading would wait for a writer for ever
    v1.t1.unlink()
    v1.t1.mkdir()
    got: list = []
    worker = threading.Thread(target=lambda: got.append(fingerprint_visit(v1, root)), daemon=True)
    worker.start()
    worker.join(30)
    if worker.is_alive():  # release the reader stuck on the FIFO before failing
        os.close(os.open(v1.t2, os.O_WRONLY | os.O_NONBLOCK))
        worker.join(5)
        pytest.fail("fingerprint_visit opened the FIFO and hung")
    (fp,) = got
    by = {s.contrast: s for s in fp.scans}
    assert by["flair"].sha256.startswith("unreadable:")
    assert by["flair"].path == "sub-phantom01/ses-01/anat/sub-phantom01_ses-01_FLAIR.nii.gz"
    assert by["t2"].sha256 == by["t1"].sha256 == "unreadable:not-a-regular-file"
    assert by["t1ce"].sha256 != by["flair"].sha256 and by["t1ce"].size_bytes > 0


def test_another_atlas_makes_a_finished_visit_out_of_date(tmp_path, monkeypatch):
    monkeypatch.delenv("LESIONQ_ATLASES", raising=False)
    root = _copy_subject(tmp_path)
    visit = discover(root)[0]
    inputs_sha256 = fingerprint_visit(visit, root).inputs_sha256
    bundled = load_protocol("mesems_testing")
    # the visit's current result, computed with the bundled atlas (failed: no outputs needed)
    current = {
        "inputs_sha256": inputs_sha256,
        "settings_sha256": bundled.hash(),
        "status": "failed",
    }

    def job(settings):
        return SubjectJob(
            subject="phantom01",
            visits=(visit,),
            bids_dir=root,
            out_dir=tmp_path / "out",
            work_dir=tmp_path / "work",
            settings=settings,
            db_url="sqlite://",
            run_id=1,
        )

    assert _up_to_date(job(bundled), visit, current, inputs_sha256)
    other = tmp_path / "atlases" / DEFAULT_ATLAS
    shutil.copytree(atlases_dir() / DEFAULT_ATLAS, other)
    manifest = json.loads((other / "manifest.json").read_text())
    manifest["files"][0]["description"] += " (rebuilt)"
    (other / "manifest.json").write_text(json.dumps(manifest))
    monkeypatch.setenv("LESIONQ_ATLASES", str(other.parent))
    assert not _up_to_date(job(load_protocol("mesems_testing")), visit, current, inputs_sha256)


def _hold_lock(out: str, ready, release) -> None:
    with subject_lock(out, "a"):
        ready.set()
        release.wait(20)


def test_subject_lock_is_exclusive_across_processes_and_freed_when_the_holder_dies(tmp_path):
    ctx = mp.get_context("spawn")
    ready, release = ctx.Event(), ctx.Event()
    proc = ctx.Process(target=_hold_lock, args=(str(tmp_path), ready, release))
    proc.start()
    try:
        assert ready.wait(30)
        with pytest.raises(SubjectBusy, match="sub-a is being processed by another"):
            with subject_lock(tmp_path, "a"):
                pass
        with subject_lock(tmp_path, "b"):  # another subject is free
            pass
    finally:
        proc.kill()  # SIGKILL: no clean release
        proc.join(10)
    deadline = time.monotonic() + 10
    while True:
        try:
            with subject_lock(tmp_path, "a"):
                break
        except SubjectBusy:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def test_tables_lock_serialises(tmp_path):
    with tables_lock(tmp_path):
        with pytest.raises(TimeoutError):
            with tables_lock(tmp_path, timeout_s=0.2):
                pass


def test_remove_stale_temporaries_removes_only_leftovers(tmp_path):
    sub = tmp_path / "sub-a" / "ses-01"
    (sub / "anat").mkdir(parents=True)
    finished = sub / "anat" / "sub-a_ses-01_FLAIR.nii.gz"
    finished.write_bytes(b"x")
    with pytest.raises(RuntimeError):
        with atomic_path(sub / "anat" / "lesions.tsv") as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert not list((sub / "anat").glob(".*"))  # atomic_path cleans up after an exception
    # what a SIGKILL leaves: a partial file and a staging folder of a visit swap
    partial = sub / "anat" / ".sub-a_ses-01_desc-preproc_FLAIR.abc123.part.nii.gz"
    partial.write_bytes(b"half")
    staging = sub / ".anat.staging-xyz"
    (staging).mkdir()
    (staging / "sub-a_ses-01_FLAIR.nii.gz").write_bytes(b"half")
    old = sub / ".anat.old-123"
    old.mkdir()
    hidden_ok = tmp_path / "sub-a" / ".keepme"
    hidden_ok.write_text("not ours")
    assert is_partial_file(partial) and not is_partial_file(finished)
    removed = remove_stale_temporaries(tmp_path / "sub-a")
    assert set(removed) == {partial, staging, old}
    assert finished.is_file() and hidden_ok.is_file()
    assert remove_stale_temporaries(tmp_path / "missing") == []


def test_a_swap_killed_between_its_renames_gets_the_previous_outputs_back(tmp_path: Path) -> None:
    """anat -> .anat.old-* done, staging -> anat not: the previous outputs are restored."""
    ses = tmp_path / "sub-a" / "ses-01"
    old = ses / ".anat.old-4242"
    old.mkdir(parents=True)
    (old / "sub-a_ses-01_lesions.tsv").write_text("previous")
    staging = ses / ".anat.staging-xyz"
    staging.mkdir()
    (staging / "sub-a_ses-01_lesions.tsv").write_text("maybe half")
    removed = remove_stale_temporaries(tmp_path / "sub-a")
    assert removed == [staging]
    assert (ses / "anat" / "sub-a_ses-01_lesions.tsv").read_text() == "previous"
    assert sorted(p.name for p in ses.iterdir()) == ["anat"]


def test_a_failed_second_rename_puts_the_previous_outputs_back(tmp_path, monkeypatch) -> None:
    import os

    from lesionq.io import derivatives

    final = tmp_path / "sub-a" / "ses-01" / "anat"
    final.mkdir(parents=True)
    (final / "x.tsv").write_text("previous")
    real_replace = os.replace

    def replace(src, dst):  # noqa: ANN001
        if Path(src).name.startswith(".anat.staging-"):
            raise OSError("disk gone")
        real_replace(src, dst)

    monkeypatch.setattr(derivatives.os, "replace", replace)
    with pytest.raises(OSError, match="disk gone"):
        derivatives._stage_and_swap(final, lambda staging: (staging / "x.tsv").write_text("new"))
    assert (final / "x.tsv").read_text() == "previous"
    assert [p.name for p in final.parent.iterdir()] == ["anat"]


@pytest.mark.parametrize(
    ("subjects", "cores", "mem", "expected"),
    [(10, 2, 24.0, 2), (1, 16, 64.0, 1), (10, 16, 8.0, 2), (10, 1, 1.0, 1)],
)
def test_default_workers(subjects, cores, mem, expected):
    assert default_workers(subjects, cores=cores, memory_gb=mem) == expected


def test_resume_leaves_a_live_run_alone_and_closes_a_dead_one(tmp_path) -> None:
    """--resume marks a 'running' run interrupted only when its process is gone."""
    import subprocess
    import sys

    import sqlalchemy as sa

    from lesionq.batch.runner import _close_interrupted_run
    from lesionq.store import ResultsDB
    from lesionq.store.models import Run

    db = ResultsDB.open(f"sqlite:///{tmp_path / 'r.sqlite'}")
    kw = dict(lesionq_version="t", protocol="p", settings_sha256="s", settings={}, command="c")
    live = db.start_run(**kw)  # this very process: alive
    said: list[str] = []
    assert _close_interrupted_run(db, said.append) is None
    assert db.run(live)["status"] == "running" and "still running" in said[-1]
    dead_pid = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                              capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    with db.engine.begin() as conn:
        conn.execute(sa.update(Run).where(Run.id == live).values(pid=int(dead_pid)))
    assert _close_interrupted_run(db, said.append) == live
    assert db.run(live)["status"] == "interrupted"
    db.close()


def test_resume_removes_the_scratch_folder_of_the_killed_run(tmp_path) -> None:
    """``--resume`` of a run whose process is gone removes its ``.lesionq-work/run-<id>``."""
    import json as _json
    import subprocess
    import sys

    import sqlalchemy as sa

    from lesionq.batch.runner import run_dataset
    from lesionq.store import ResultsDB
    from lesionq.store.models import Run

    bids = tmp_path / "bids"
    (bids / "sub-01" / "ses-01" / "anat").mkdir(parents=True)  # no FLAIR: fails at once
    (bids / "dataset_description.json").write_text(
        _json.dumps({"Name": "t", "BIDSVersion": "1.9.0"})
    )
    out = tmp_path / "out"
    out.mkdir()
    db = ResultsDB.open(None, out_dir=out)
    kw = dict(lesionq_version="t", protocol="p", settings_sha256="s", settings={}, command="c")
    killed = db.start_run(**kw)
    dead_pid = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                              capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    with db.engine.begin() as conn:
        conn.execute(sa.update(Run).where(Run.id == killed).values(pid=int(dead_pid)))
    scratch = out / ".lesionq-work" / f"run-{killed}"
    (scratch / "sub-01" / "node").mkdir(parents=True)
    (scratch / "sub-01" / "node" / "result.pklz").write_bytes(b"\0" * 4096)
    other = out / ".lesionq-work" / "run-999"  # not the resumed run's: left alone
    other.mkdir()
    said: list[str] = []
    summary = run_dataset(
        bids, out, settings=load_protocol("mesems_testing"), resume=True, progress=said.append
    )
    assert db.run(summary.run_id)["resumed_from"] == killed
    assert not scratch.exists()
    assert any(f"removed the scratch folder {scratch}" in line for line in said), said
    assert other.is_dir()
    assert not (out / ".lesionq-work" / f"run-{summary.run_id}").exists()
    db.close()


def test_a_subject_task_that_raises_leaves_its_visits_listed_as_failed(tmp_path, monkeypatch):
    """A subject task that raises (a bug, a lost worker) fails its visits with the error as
    reason, in the ledger and in visits.tsv, instead of leaving them out; a visit with an
    earlier result keeps it."""
    import sqlalchemy as sa

    import lesionq.batch.subject as subject_mod
    from lesionq.batch.runner import run_dataset
    from lesionq.config import load_protocol
    from lesionq.io.tables import read_tsv
    from lesionq.store import ResultsDB

    bids = REPO / "sample_data" / "bids"

    def boom(job, db, send, t0):  # noqa: ANN001
        raise RuntimeError(f"boom in sub-{job.subject}")

    monkeypatch.setattr(subject_mod, "_process_locked", boom)
    out = tmp_path / "out"
    summary = run_dataset(bids, out, settings=load_protocol("mesems_testing"), n_procs=1)
    assert not summary.all_ok
    visits = read_tsv(out / "visits.tsv")
    expected = {
        (f"sub-{p.name[4:]}", s.name)
        for p in bids.glob("sub-*")
        if p.is_dir()
        for s in p.glob("ses-*")
    }
    assert set(zip(visits["participant_id"], visits["session_id"], strict=True)) == expected
    assert (visits["status"] == "failed").all()
    for pid, reason in zip(visits["participant_id"], visits["reason"], strict=True):
        assert reason == f"task failed: RuntimeError: boom in {pid}", reason
    db = ResultsDB.open(f"sqlite:///{out / 'lesionq.sqlite'}")
    ledger = db.ledger(summary.run_id)
    assert len(ledger) == len(expected)
    assert set(ledger["outcome"]) == {"failed"} and set(ledger["error_class"]) == {"RuntimeError"}
    # a second crashing run adds ledger rows but no second failed result per visit
    run_dataset(bids, out, settings=load_protocol("mesems_testing"), n_procs=1)
    assert len(read_tsv(out / "visits.tsv")) == len(expected)
    with db.engine.connect() as conn:
        n_results = conn.execute(sa.text("SELECT count(*) FROM visit_results")).scalar_one()
    assert n_results == len(expected)
    db.close()
