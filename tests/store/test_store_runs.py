"""Runs, the run ledger and the append-only audit log."""

from __future__ import annotations

import os
import socket
from datetime import timedelta

import pytest
import sqlalchemy as sa
from store_helpers import T0, start_run

from lesionq.errors import InputError
from lesionq.store import ResultsDB
from lesionq.store.models import AuditEntry


def test_run_life_cycle(db: ResultsDB) -> None:
    assert db.last_interrupted_run() is None
    run1 = start_run(db)
    info = db.last_interrupted_run()
    assert info["id"] == run1 and info["status"] == "running"
    assert info["pid"] == os.getpid() and info["host"] == socket.gethostname()
    assert info["settings"] == {"segmentation": {"threshold": 0.5}}
    db.finish_run(run1, status="interrupted", n_ok=1, n_failed=0, n_skipped=0)
    run2 = start_run(db, resumed_from=run1)
    db.finish_run(run2, status="finished", n_ok=3, n_failed=1, n_skipped=2)
    last = db.last_interrupted_run()
    assert last["id"] == run1 and last["status"] == "interrupted"
    done = db.run(run2)
    assert (done["resumed_from"], done["n_ok"], done["n_failed"], done["n_skipped"]) == (
        run1,
        3,
        1,
        2,
    )
    assert done["finished_at"] >= done["started_at"]
    actions = db.audit_log()["action"].tolist()
    assert actions == ["run.started", "run.finished", "run.started", "run.finished"]
    with pytest.raises(InputError, match="run status"):
        db.finish_run(run2, status="done", n_ok=0, n_failed=0, n_skipped=0)
    with pytest.raises(InputError, match="no run with id"):
        db.finish_run(run2 + 100, status="failed", n_ok=0, n_failed=0, n_skipped=0)


def test_ledger(db: ResultsDB) -> None:
    run1 = start_run(db)
    run2 = start_run(db)
    db.add_ledger(
        run1,
        participant_id="sub-01",
        session_id="ses-01",
        step="visit",
        outcome="ok",
        started_at=T0,
        finished_at=T0 + timedelta(seconds=4),
    )
    db.add_ledger(
        run1,
        participant_id="sub-02",
        session_id=None,
        step="visit",
        outcome="failed",
        error_class="MissingInputError",
        message="FLAIR: file not found",
        duration_s=0.5,
    )
    db.add_ledger(
        run2,
        participant_id="sub-01",
        session_id="ses-01",
        step="visit",
        outcome="skipped_up_to_date",
    )
    led = db.ledger(run1)
    assert led["participant_id"].tolist() == ["sub-01", "sub-02"]
    assert led["outcome"].tolist() == ["ok", "failed"]
    assert led["duration_s"].tolist() == [4.0, 0.5]
    assert led.loc[1, "error_class"] == "MissingInputError"
    assert led.loc[0, "started_at"] == T0
    assert len(db.ledger()) == 3 and db.ledger(run2)["outcome"].tolist() == ["skipped_up_to_date"]
    with pytest.raises(InputError, match="outcome"):
        db.add_ledger(run1, participant_id="sub-01", session_id=None, step="visit", outcome="meh")
    with pytest.raises(InputError, match="step"):
        db.add_ledger(run1, participant_id="sub-01", session_id=None, step="qc", outcome="ok")


def test_audit_entries(db: ResultsDB) -> None:
    db.audit(
        actor="dr.reader",
        action="lesion.adjudicated",
        entity="lesions",
        entity_id=12,
        before={"label": "T2"},
        after={"label": "Gd", "score": float("nan")},
        detail="enhancing on review",
    )
    log = db.audit_log()
    e = log.iloc[-1]
    assert (e["actor"], e["action"], e["entity"], e["entity_id"]) == (
        "dr.reader",
        "lesion.adjudicated",
        "lesions",
        "12",
    )
    assert e["before"] == {"label": "T2"} and e["after"] == {"label": "Gd", "score": None}
    assert e["at"].utcoffset() == timedelta(0)


@pytest.mark.parametrize(
    "sql",
    [
        "UPDATE audit_log SET actor = 'someone else'",
        "DELETE FROM audit_log",
    ],
)
def test_audit_log_is_append_only_in_the_database(db: ResultsDB, sql: str) -> None:
    db.audit(actor="dr.reader", action="note", entity="runs", entity_id=1)
    with db.engine.connect() as conn:
        with pytest.raises(sa.exc.DBAPIError, match="append-only"):
            with conn.begin():
                conn.exec_driver_sql(sql)
    log = db.audit_log()
    assert len(log) == 1 and log.loc[0, "actor"] == "dr.reader"


def test_audit_log_cannot_be_truncated_on_postgresql(db: ResultsDB) -> None:
    if db.engine.dialect.name != "postgresql":
        pytest.skip("TRUNCATE exists on PostgreSQL only")
    db.audit(actor="dr.reader", action="note", entity="runs", entity_id=1)
    with db.engine.connect() as conn:
        with pytest.raises(sa.exc.DBAPIError, match="append-only"):
            with conn.begin():
                conn.exec_driver_sql("TRUNCATE audit_log")
        n = conn.execute(sa.select(sa.func.count()).select_from(AuditEntry)).scalar()
    assert n == 1
