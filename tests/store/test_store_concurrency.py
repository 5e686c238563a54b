"""Two real processes (spawn) opening one fresh database at once and writing into it."""

from __future__ import annotations

import multiprocessing as mp
import traceback
from typing import Any

import sqlalchemy as sa
from store_helpers import lesion_rows, record, start_run, visit_row

from lesionq.store import ResultsDB
from lesionq.store.models import AuditEntry, Lesion, VisitResult

N_VISITS = 6  # own visits per process; each process also re-records one shared visit N times


def _worker(url: str, name: str, barrier: Any, errors: Any) -> None:
    try:
        barrier.wait(timeout=60)
        db = ResultsDB.open(url)  # both processes migrate a fresh database at the same time
        try:
            run = start_run(db, command=f"worker {name}")
            barrier.wait(timeout=60)
            for i in range(N_VISITS):
                record(db, run, visit_row(f"sub-{name}{i}", "ses-01", t2_count=i))
                record(
                    db,
                    run,
                    visit_row("sub-shared", "ses-01", t2_count=i),
                    inputs=f"{name}{i}".ljust(64, "0"),
                )
                db.add_ledger(
                    run,
                    participant_id=f"sub-{name}{i}",
                    session_id="ses-01",
                    step="visit",
                    outcome="ok",
                )
            db.finish_run(run, status="finished", n_ok=N_VISITS, n_failed=0, n_skipped=0)
        finally:
            db.close()
    except BaseException:
        errors.put(f"{name}: {traceback.format_exc()}")
        raise


def test_two_processes_open_and_write_at_once(db_url: str) -> None:
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(2)
    errors = ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(db_url, n, barrier, errors)) for n in "ab"]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    failures = []
    while not errors.empty():
        failures.append(errors.get())
    assert failures == []
    assert [p.exitcode for p in procs] == [0, 0]

    with ResultsDB.open(db_url) as db:
        vt = db.visits_table()
        own = vt[vt["participant_id"] != "sub-shared"]
        assert len(own) == 2 * N_VISITS
        assert sorted(own["participant_id"]) == sorted(
            f"sub-{n}{i}" for n in "ab" for i in range(N_VISITS)
        )
        assert (vt["participant_id"] == "sub-shared").sum() == 1
        assert len(db.ledger()) == 2 * N_VISITS
        with db.engine.connect() as conn:
            cur_id = db.current_result("sub-shared", "ses-01")["id"]
            visit_id = conn.execute(
                sa.select(VisitResult.visit_id).where(VisitResult.id == cur_id)
            ).scalar_one()
            shared = conn.execute(
                sa.select(VisitResult.id, VisitResult.is_current, VisitResult.superseded_by)
                .where(VisitResult.visit_id == visit_id)
                .order_by(VisitResult.id)
            ).all()
            n_results = conn.execute(sa.select(sa.func.count()).select_from(VisitResult)).scalar()
            n_lesions = conn.execute(sa.select(sa.func.count()).select_from(Lesion)).scalar()
            n_audit = conn.execute(sa.select(sa.func.count()).select_from(AuditEntry)).scalar()
    # the shared visit: 2N results, one current, every other superseded by its successor
    assert len(shared) == 2 * N_VISITS
    assert [c for _, c, _ in shared].count(True) == 1
    assert shared[-1][1] is True
    ids = [i for i, _, _ in shared]
    assert [s for _, _, s in shared[:-1]] == ids[1:]
    assert n_results == 4 * N_VISITS
    assert n_lesions == 4 * N_VISITS * len(lesion_rows())
    # per process: run.started + run.finished, 2N recorded; shared visit: 2N-1 supersessions
    assert n_audit == 2 * (2 + 2 * N_VISITS) + (2 * N_VISITS - 1)
