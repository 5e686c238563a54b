"""`lesionq status`: a read-only summary of a results database."""

from __future__ import annotations

from store_helpers import record, start_run, visit_row

from lesionq.batch.status import dataset_status, format_status
from lesionq.cli.main import main
from lesionq.store import ResultsDB


def test_status_counts_failures_and_unfinished_runs(db: ResultsDB) -> None:
    empty = dataset_status(db)
    assert empty.n_runs == 0 and empty.n_visits == 0 and empty.ok
    assert "runs: none recorded" in format_status(empty, "db")
    first = start_run(db)
    record(db, first, visit_row("sub-01", "ses-01", longitudinal_status="baseline"))
    record(db, first, visit_row("sub-01", "ses-02", longitudinal_status="ok"))
    bad = visit_row(
        "sub-02", "ses-01", status="failed", t2_count=None, t2_volume_mm3=None,
        reason="sub-02_ses-01_FLAIR.nii.gz: truncated (gzip stream ends early)",
    )  # fmt: skip
    record(db, first, bad)
    db.finish_run(first, status="finished", n_ok=2, n_failed=1, n_skipped=0)
    second = start_run(db)  # killed: still 'running'
    st = dataset_status(db)
    assert st.n_runs == 2 and st.last_run["id"] == second and st.unfinished_runs == [second]
    assert (st.n_subjects, st.n_visits) == (2, 3)
    assert st.outcomes == {"failed": 1, "ok": 2} and not st.ok
    assert st.failed == [("sub-02", "ses-01", bad["reason"])]
    assert st.longitudinal == {"n/a": 1, "ok": 1}  # sub-02 ses-01 failed before that step
    assert st.review == {"not_started": 2}
    text = format_status(st, "sqlite:///x")
    assert f"unfinished runs (running or interrupted): {second}" in text
    assert "sub-02 ses-01: sub-02_ses-01_FLAIR.nii.gz: truncated" in text
    assert "3 with a current result (1 failed, 2 ok), 2 subjects" in text


def test_status_command_exit_codes(tmp_path, capsys) -> None:  # noqa: ANN001
    path = tmp_path / "lesionq.sqlite"
    assert main(["status", "--db", str(path)]) == 2  # no such database: not created
    assert not path.exists()
    db = ResultsDB.open(f"sqlite:///{path}")
    run = start_run(db)
    record(db, run, visit_row("sub-01", "ses-01"))
    db.close()
    assert main(["status", "--db", str(path)]) == 0
    assert "1 with a current result (1 ok)" in capsys.readouterr().out
    db = ResultsDB.open(f"sqlite:///{path}")
    record(db, run, visit_row("sub-01", "ses-02", status="failed", reason="x.nii.gz: corrupt"))
    db.close()
    assert main(["status", "--db", str(path)]) == 1
    assert "sub-01 ses-02: x.nii.gz: corrupt" in capsys.readouterr().out
