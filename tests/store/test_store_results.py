"""Visit results: record, supersede, current, longitudinal update, normalisation, privacy."""

from __future__ import annotations

from datetime import datetime, timedelta

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
from store_helpers import T0, lesion_rows, record, scan_rows, start_run, visit_row

from lesionq.errors import InputError
from lesionq.io.tables import VISIT_COLUMNS, VISIT_DTYPES
from lesionq.store import ResultsDB
from lesionq.store.models import Base, Lesion, Scan, VisitResult


def test_record_then_current(db: ResultsDB) -> None:
    run = start_run(db)
    assert db.current_result("sub-01", "ses-01") is None
    rid = record(db, run)
    cur = db.current_result("sub-01", "ses-01")
    assert cur is not None
    assert (cur["id"], cur["run_id"], cur["status"]) == (rid, run, "ok")
    assert cur["inputs_sha256"] == "i" * 64
    assert list(cur["row"]) == list(VISIT_COLUMNS)
    assert cur["row"] == visit_row()
    with db.engine.connect() as conn:
        scans = conn.execute(sa.select(Scan.contrast, Scan.sha256, Scan.size_bytes)).all()
        assert sorted(scans) == [("flair", "f" * 64, 123456), ("t1", "1" * 64, 234567)]
        started = conn.execute(sa.select(VisitResult.started_at)).scalar_one()
        assert started == T0 and started.utcoffset() == timedelta(0)


def test_supersede_keeps_history_and_one_current(db: ResultsDB) -> None:
    run1 = start_run(db)
    first = record(db, run1)
    run2 = start_run(db)
    second = record(db, run2, visit_row(t2_count=4), inputs="j" * 64)
    cur = db.current_result("sub-01", "ses-01")
    assert cur["id"] == second and cur["row"]["t2_count"] == 4
    with db.engine.connect() as conn:
        rows = conn.execute(
            sa.select(VisitResult.id, VisitResult.is_current, VisitResult.superseded_by).order_by(
                VisitResult.id
            )
        ).all()
    assert rows == [(first, False, second), (second, True, None)]
    log = db.audit_log()
    sup = log[log["action"] == "visit_result.superseded"]
    assert len(sup) == 1
    entry = sup.iloc[0]
    assert entry["entity_id"] == str(first)
    assert entry["before"]["t2_count"] == 3 and entry["after"]["t2_count"] == 4
    assert entry["before"]["inputs_sha256"] == "i" * 64
    assert entry["after"]["inputs_sha256"] == "j" * 64
    assert "inputs changed" in entry["detail"]
    assert entry["actor"] == f"lesionq run {run2}"
    recorded = log[log["action"] == "visit_result.recorded"]
    assert recorded["entity_id"].tolist() == [str(first), str(second)]
    # the visits table shows the current result only, and lesions of the current result only
    vt = db.visits_table()
    assert len(vt) == 1 and vt.loc[0, "t2_count"] == 4
    assert len(db.lesions_table()) == len(lesion_rows())


def test_second_current_result_refused_by_database(db: ResultsDB) -> None:
    run = start_run(db)
    rid = record(db, run)
    with db.engine.connect() as conn:
        visit_id = conn.execute(
            sa.select(VisitResult.visit_id).where(VisitResult.id == rid)
        ).scalar_one()
        conn.rollback()
        with pytest.raises(sa.exc.IntegrityError):
            with conn.begin():
                conn.execute(
                    sa.insert(VisitResult).values(
                        visit_id=visit_id, run_id=run, status="ok", is_current=True
                    )
                )


def test_visit_without_session_is_one_visit(db: ResultsDB) -> None:
    run = start_run(db)
    record(db, run, visit_row(session=None))
    record(db, run, visit_row(session=None, t2_count=7))
    vt = db.visits_table()
    assert len(vt) == 1
    assert pd.isna(vt.loc[0, "session_id"]) and vt.loc[0, "t2_count"] == 7
    assert db.current_result("sub-01", None)["row"]["session_id"] is None


def test_missing_values_and_numpy_scalars_are_normalised(db: ResultsDB) -> None:
    run = start_run(db)
    row = visit_row(
        t2_count=np.int64(5),
        t2_volume_mm3=np.float32(10.5),
        skull_stripped_input=np.bool_(True),
        gd_count=pd.NA,
        gd_volume_mm3=float("nan"),
        gd_inputs=None,
        reason=np.nan,
    )
    lesions = pd.DataFrame(lesion_rows(2))  # a DataFrame: NaN where a column is absent
    db.record_visit(
        run,
        row,
        inputs_sha256="i" * 64,
        scans=[],
        lesions=lesions,
        error_class=None,
        started_at=T0.timestamp(),
        finished_at=None,
    )
    got = db.current_result("sub-01", "ses-01")["row"]
    assert got["t2_count"] == 5 and type(got["t2_count"]) is int
    assert got["t2_volume_mm3"] == 10.5
    assert got["skull_stripped_input"] is True
    assert got["gd_count"] is None and got["gd_volume_mm3"] is None and got["reason"] is None
    lt = db.lesions_table()
    t2 = lt[lt["label"] == "T2"]
    assert t2["enhancement_peak"].isna().all()  # absent on T2 rows: missing, not 0
    assert lt.loc[lt["label"] == "Gd", "ring"].tolist() == [False]


def test_visits_table_columns_and_dtypes(db: ResultsDB) -> None:
    run = start_run(db)
    record(db, run, visit_row("sub-02", "ses-01"))
    record(db, run, visit_row("sub-01", "ses-02"))
    failed = visit_row(
        "sub-01",
        "ses-01",
        status="failed",
        reason="MissingInputError: FLAIR",
        t2_count=None,
        t2_volume_mm3=None,
        gd_count=None,
    )
    db.record_visit(
        run,
        failed,
        inputs_sha256="x" * 64,
        scans=[],
        lesions=[],
        error_class="MissingInputError",
        started_at=T0,
        finished_at=T0,
    )
    vt = db.visits_table()
    assert list(vt.columns) == list(VISIT_COLUMNS)
    assert list(zip(vt["participant_id"], vt["session_id"], strict=True)) == [
        ("sub-01", "ses-01"),
        ("sub-01", "ses-02"),
        ("sub-02", "ses-01"),
    ]
    for col, dtype in VISIT_DTYPES.items():
        assert str(vt[col].dtype) == dtype, col
    assert vt.loc[0, "status"] == "failed" and pd.isna(vt.loc[0, "t2_count"])
    assert vt["t2_volume_mm3"].dtype == np.float64


def test_update_longitudinal(db: ResultsDB) -> None:
    run = start_run(db)
    rid = record(db, run, visit_row(session="ses-02"))
    fields = {
        "new_t2_count": 2,
        "enlarging_t2_count": 1,
        "previous_session_id": "ses-01",
        "reference_session_id": "ses-01",
        "longitudinal_status": "ok",
        "cua_count": 3,
        "t2_count": 999,  # not a longitudinal column: ignored
    }
    tracked = [
        dict(r, track_id=i + 1, status="new", status_vs_baseline="new")
        for i, r in enumerate(lesion_rows(2))
    ]
    db.update_longitudinal("sub-01", "ses-02", fields, tracked, run_id=run)
    cur = db.current_result("sub-01", "ses-02")
    assert cur["id"] == rid
    assert cur["row"]["new_t2_count"] == 2 and cur["row"]["cua_count"] == 3
    assert cur["row"]["t2_count"] == 3
    lt = db.lesions_table()
    assert lt["track_id"].tolist() == [1, 2, 3]
    assert set(lt["status"]) == {"new"}
    log = db.audit_log()
    upd = log[log["action"] == "visit_result.longitudinal_updated"].iloc[0]
    assert upd["before"]["new_t2_count"] is None and upd["after"]["new_t2_count"] == 2
    assert "t2_count" not in upd["after"]
    # fields only: lesions untouched
    db.update_longitudinal(
        "sub-01", "ses-02", {"longitudinal_status": "baseline"}, None, run_id=run
    )
    assert len(db.lesions_table()) == 3
    with pytest.raises(InputError, match="no result recorded"):
        db.update_longitudinal("sub-09", "ses-01", fields, None, run_id=run)


def test_longitudinal_update_is_audited_as_the_run_that_made_it(db: ResultsDB) -> None:
    """A later run redoes a subject's longitudinal step over a visit an earlier run computed."""
    first = start_run(db)
    rid = record(db, first, visit_row(session="ses-02"))
    later = start_run(db)
    db.update_longitudinal(
        "sub-01", "ses-02", {"longitudinal_status": "ok", "new_t2_count": 1}, None, run_id=later
    )
    log = db.audit_log()
    upd = log[log["action"] == "visit_result.longitudinal_updated"]
    assert upd["actor"].tolist() == [f"lesionq run {later}"]
    assert upd["entity_id"].tolist() == [str(rid)]
    assert f"result {rid} (of run {first})" in upd["detail"].iloc[0]
    assert db.current_result("sub-01", "ses-02")["run_id"] == first  # the result stays its own
    with pytest.raises(TypeError):
        db.update_longitudinal("sub-01", "ses-02", {}, None)  # the acting run is required


def test_bad_inputs_are_refused(db: ResultsDB) -> None:
    run = start_run(db)
    with pytest.raises(InputError, match="status must be"):
        record(db, run, visit_row(status="done"))
    with pytest.raises(InputError, match="t2_count.*int"):
        record(db, run, visit_row(t2_count=2.5))
    with pytest.raises(InputError, match="participant_id"):
        record(db, run, visit_row(participant=""))
    with pytest.raises(InputError, match="no time zone"):
        db.record_visit(
            run,
            visit_row(),
            inputs_sha256="i" * 64,
            scans=[],
            lesions=[],
            error_class=None,
            started_at=datetime(2026, 1, 1),
            finished_at=None,
        )
    with pytest.raises(InputError, match="contrast"):
        db.record_visit(
            run,
            visit_row(),
            inputs_sha256="i" * 64,
            scans=[{"contrast": "dwi", "path": "x.nii.gz"}],
            lesions=[],
            error_class=None,
            started_at=None,
            finished_at=None,
        )
    assert db.current_result("sub-01", "ses-01") is None  # nothing half-written


def test_failed_transaction_leaves_nothing(db: ResultsDB) -> None:
    run = start_run(db)
    record(db, run)
    bad = lesion_rows(1) + [{"label": "T2"}]  # no lesion_id
    with pytest.raises(InputError, match="lesion_id"):
        record(db, run, visit_row(t2_count=9), lesions=bad)
    assert db.current_result("sub-01", "ses-01")["row"]["t2_count"] == 3
    with db.engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(Lesion)).scalar() == 4


def test_unknown_row_keys_are_not_stored(db: ResultsDB) -> None:
    run = start_run(db)
    row = visit_row(PatientName="Doe^Jane", PatientBirthDate="19610203", treatment_arm="B")
    record(db, run, row)
    assert "PatientName" not in db.current_result("sub-01", "ses-01")["row"]
    found = []
    with db.engine.connect() as conn:
        for table in Base.metadata.sorted_tables:
            for r in conn.execute(sa.select(table)):
                text = repr(tuple(r))
                found += [
                    (table.name, s) for s in ("Doe^Jane", "19610203", "treatment_arm") if s in text
                ]
    assert found == []


def test_scans_carry_given_paths(db: ResultsDB) -> None:
    run = start_run(db)
    record(db, run)
    with db.engine.connect() as conn:
        paths = conn.execute(sa.select(Scan.path).order_by(Scan.id)).scalars().all()
    assert paths == [s["path"] for s in scan_rows()]
