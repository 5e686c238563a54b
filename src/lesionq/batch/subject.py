"""One subject, end to end: the unit of work sent to a dask worker.

:func:`process_subject` takes the subject's lock, skips the visits that are up
to date, processes the others one at a time (each recorded in the results
database as soon as it is published, so a killed run repeats none of them),
runs the subject's longitudinal step, rewrites ``visits.tsv`` from the
database, and renders the QC report. It never raises for a bad visit or a
failed step: every outcome is a ledger row.

Everything it needs travels in a picklable :class:`SubjectJob`; the database is
opened from its URL inside the worker, so workers on other machines only need
the output folder and the database server.
"""

from __future__ import annotations

import logging
import os
import resource
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from ..config import Settings
from ..io.bids import VisitInputs
from ..io.derivatives import VISITS_TSV, output_path, remove_stale_temporaries
from ..io.tables import LONGITUDINAL_VISIT_COLUMNS, read_tsv, write_tsv
from ..qc.report import report_path, write_subject_report
from ..store import ResultsDB
from .fingerprint import fingerprint_visit, outputs_present
from .locks import SubjectBusy, subject_lock, tables_lock
from .longitudinal import longitudinal_problem, run_longitudinal
from .tables import visits_table
from .visit import run_visit

__all__ = [
    "SubjectJob",
    "SubjectOutcome",
    "VisitOutcome",
    "process_subject",
    "write_visits_table",
    "EventFn",
]

LOGGER = logging.getLogger(__name__)

#: Receives progress events (plain dicts, see :func:`process_subject`).
EventFn = Callable[[dict[str, Any]], None]


@dataclass(frozen=True)
class SubjectJob:
    """Everything one subject's processing needs (picklable).

    Attributes
    ----------
    subject : str
        Label without ``sub-``.
    visits : tuple of VisitInputs
        The subject's visits, in processing order.
    bids_dir, out_dir, work_dir : Path
        Absolute folders (the work folder is the run's scratch root).
    settings : Settings
    db_url : str
        SQLAlchemy URL of the results database (never ``None`` here).
    run_id : int
        The run this job belongs to (ledger rows and results refer to it).
    n_procs : int
        Thread budget handed to each visit's heavy steps.
    force : bool
        Recompute every visit even when up to date.
    retry_failed : bool
        Recompute visits whose current result failed on unchanged inputs.
    report : bool
        Render the subject's QC report after the longitudinal step.
    site : str, optional
        The subject's site (``participants.tsv``), recorded in the database.
    """

    subject: str
    visits: tuple[VisitInputs, ...]
    bids_dir: Path
    out_dir: Path
    work_dir: Path
    settings: Settings
    db_url: str
    run_id: int
    n_procs: int = 1
    force: bool = False
    retry_failed: bool = False
    report: bool = True
    site: str | None = None


@dataclass(frozen=True)
class VisitOutcome:
    """What happened to one visit in this run.

    Attributes
    ----------
    participant_id, session_id : str, str or None
    outcome : str
        ``"ok"``, ``"failed"``, ``"skipped_up_to_date"`` or ``"skipped_locked"``.
    row : dict
        The visit's ``visits.tsv`` row after this run (empty when skipped_locked).
    """

    participant_id: str
    session_id: str | None
    outcome: str
    row: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class SubjectOutcome:
    """Outcome of :func:`process_subject`.

    Attributes
    ----------
    subject : str
    visits : tuple of VisitOutcome
    longitudinal : str
        ``"ok"``, ``"failed: ..."``, ``"not_needed"`` or ``"skipped_locked"``.
    report : str or None
        Path of the QC report, or ``"failed: ..."``; ``None`` when not rendered.
    peak_rss_mb : float
        Peak resident memory of the worker process so far (MiB).
    duration_s : float
    """

    subject: str
    visits: tuple[VisitOutcome, ...]
    longitudinal: str
    report: str | None
    peak_rss_mb: float
    duration_s: float


_DB_CACHE: dict[str, ResultsDB] = {}
_DB_LOCK = threading.Lock()


def _database(url: str) -> ResultsDB:
    """The process's :class:`lesionq.store.ResultsDB` for ``url`` (opened once per process)."""
    with _DB_LOCK:
        db = _DB_CACHE.get(url)
        if db is None:
            db = ResultsDB.open(url)
            _DB_CACHE[url] = db
        return db


def _now() -> datetime:
    return datetime.now(UTC)


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _error_class(reason: str | None) -> str | None:
    """``"MissingInputError"`` from ``"MissingInputError: ..."`` (reasons start with the class)."""
    if not reason:
        return None
    head = reason.split(":", 1)[0].strip()
    return head if head.isidentifier() else "InputRejected"


def _lesion_rows(out_dir: Path, visit: VisitInputs) -> list[dict[str, Any]]:
    path = output_path(out_dir, visit.subject, visit.session, "lesions")
    if not path.is_file():
        return []
    return read_tsv(path).to_dict(orient="records")


def write_visits_table(out_dir: str | os.PathLike[str], db: ResultsDB) -> Path:
    """Rewrite ``OUT/visits.tsv`` from the database's current results (under the tables lock).

    The database is the source of truth: the file always equals
    :func:`lesionq.batch.tables.visits_table` (automatic results plus the
    radiologists' reviewed counts), whichever process wrote last.
    """
    out = Path(out_dir)
    with tables_lock(out):
        return write_tsv(visits_table(db), out / VISITS_TSV)


def _fingerprint(visit: VisitInputs, bids_dir: Path) -> tuple[str, list[dict[str, object]]]:
    """``(inputs_sha256, scans)`` of a visit; never raises, so no visit goes unrecorded.

    :func:`~lesionq.batch.fingerprint.fingerprint_visit` hashes unreadable files
    as such; should it still fail, the visit is processed anyway (its check
    battery names the bad file) under a hash that matches no later fingerprint,
    so the next run looks at it again.
    """
    try:
        fp = fingerprint_visit(visit, bids_dir)
    except Exception as exc:  # a visit never takes its subject down with it
        LOGGER.error("%s: inputs could not be fingerprinted: %s", visit.visit_id, exc)
        return f"unfingerprinted:{type(exc).__name__}"[:64], []  # fits the column
    return fp.inputs_sha256, [scan.as_dict() for scan in fp.scans]


def _up_to_date(
    job: SubjectJob, visit: VisitInputs, current: Mapping[str, Any] | None, inputs_sha256: str
) -> bool:
    if job.force or current is None:
        return False
    if current["inputs_sha256"] != inputs_sha256:
        return False
    if current["settings_sha256"] != job.settings.hash():
        return False
    if current["status"] == "ok":
        return outputs_present(job.out_dir, visit)
    return not job.retry_failed


def process_subject(job: SubjectJob, emit: EventFn | None = None) -> SubjectOutcome:
    """Process one subject (see the module docstring); never raises for bad data.

    Parameters
    ----------
    job : SubjectJob
    emit : callable, optional
        Receives progress events: ``{"event": "visit_started" | "visit_done" |
        "longitudinal_done" | "subject_skipped", "participant_id", "session_id",
        "outcome", "reason", "duration_s"}``.

    Returns
    -------
    SubjectOutcome
    """
    t0 = time.perf_counter()
    send = emit or (lambda _event: None)
    db = _database(job.db_url)
    try:
        with subject_lock(job.out_dir, job.subject):
            return _process_locked(job, db, send, t0)
    except SubjectBusy as exc:
        LOGGER.warning("%s", exc)
        outcomes = []
        for visit in job.visits:
            pid, sid = _ids(visit)
            db.add_ledger(
                job.run_id,
                participant_id=pid,
                session_id=sid,
                step="visit",
                outcome="skipped_locked",
                message=str(exc),
            )
            outcomes.append(VisitOutcome(pid, sid, "skipped_locked"))
            send(_event("visit_done", visit, "skipped_locked", str(exc), 0.0))
        return SubjectOutcome(
            job.subject,
            tuple(outcomes),
            "skipped_locked",
            None,
            _peak_rss_mb(),
            time.perf_counter() - t0,
        )


def _ids(visit: VisitInputs) -> tuple[str, str | None]:
    return f"sub-{visit.subject}", (f"ses-{visit.session}" if visit.session is not None else None)


def _event(
    kind: str, visit: VisitInputs | None, outcome: str | None, reason: str | None, dur: float
) -> dict[str, Any]:
    pid, sid = _ids(visit) if visit is not None else (None, None)
    return {
        "event": kind,
        "participant_id": pid,
        "session_id": sid,
        "outcome": outcome,
        "reason": reason,
        "duration_s": round(dur, 2),
    }


def _process_locked(job: SubjectJob, db: ResultsDB, send: EventFn, t0: float) -> SubjectOutcome:
    if job.site:
        db.set_site(f"sub-{job.subject}", job.site)
    removed = remove_stale_temporaries(job.out_dir / f"sub-{job.subject}")
    if removed:
        LOGGER.warning("sub-%s: removed %d leftover(s) of a killed run", job.subject, len(removed))
    rows: list[dict[str, Any]] = []
    outcomes: list[str] = []
    computed = False
    for visit in job.visits:
        pid, sid = _ids(visit)
        inputs_sha256, scans = _fingerprint(visit, job.bids_dir)
        current = db.current_result(pid, sid)
        if current is not None and _up_to_date(job, visit, current, inputs_sha256):
            db.add_ledger(
                job.run_id,
                participant_id=pid,
                session_id=sid,
                step="visit",
                outcome="skipped_up_to_date",
                message=f"result {current['id']} of run {current['run_id']} is up to date",
            )
            rows.append(dict(current["row"]))
            outcomes.append("skipped_up_to_date")
            send(_event("visit_done", visit, "skipped_up_to_date", None, 0.0))
            continue
        send(_event("visit_started", visit, None, None, 0.0))
        started = _now()
        row = run_visit(
            visit, job.out_dir, settings=job.settings, n_procs=job.n_procs, work_dir=job.work_dir
        )
        finished = _now()
        error_class = None if row["status"] == "ok" else _error_class(row.get("reason"))
        db.record_visit(
            job.run_id,
            row,
            inputs_sha256=inputs_sha256,
            scans=scans,
            lesions=_lesion_rows(job.out_dir, visit) if row["status"] == "ok" else [],
            error_class=error_class,
            started_at=started,
            finished_at=finished,
        )
        db.add_ledger(
            job.run_id,
            participant_id=pid,
            session_id=sid,
            step="visit",
            outcome=row["status"],
            error_class=error_class,
            message=row.get("reason"),
            started_at=started,
            finished_at=finished,
            duration_s=row.get("duration_s"),
        )
        write_visits_table(job.out_dir, db)
        rows.append(row)
        outcomes.append(row["status"])
        computed = True
        send(_event("visit_done", visit, row["status"], row.get("reason"), row["duration_s"]))

    longitudinal = _longitudinal(job, db, rows, computed, send)
    write_visits_table(job.out_dir, db)
    any_ok = any(r.get("status") == "ok" for r in rows)
    stale = _report_stale(job, computed, longitudinal)
    report = _report(job) if job.report and any_ok and stale else None
    final = {
        (r["participant_id"], r["session_id"]): r for r in db.visits_table().to_dict("records")
    }
    visit_outcomes = tuple(
        VisitOutcome(
            *_ids(v),
            outcome,
            dict(final.get(_ids(v), {})),
        )
        for v, outcome in zip(job.visits, outcomes, strict=True)
    )
    return SubjectOutcome(
        job.subject,
        visit_outcomes,
        longitudinal,
        report,
        _peak_rss_mb(),
        time.perf_counter() - t0,
    )


def _needs_longitudinal(rows: Sequence[Mapping[str, Any]], computed: bool) -> bool:
    ok = [r for r in rows if r.get("status") == "ok"]
    if not ok:
        return False
    if computed:
        return True
    # every visit was up to date: rerun only when a killed run left the step undone
    return any(_missing(r.get("longitudinal_status")) for r in ok)


def _missing(value: Any) -> bool:
    return value is None or (not isinstance(value, str) and bool(pd.isna(value)))


def _longitudinal(
    job: SubjectJob, db: ResultsDB, rows: list[dict[str, Any]], computed: bool, send: EventFn
) -> str:
    if not _needs_longitudinal(rows, computed):
        return "not_needed"
    t0 = time.perf_counter()
    started = _now()
    # the longitudinal step rewrites the longitudinal columns of every visit it covers
    for row in rows:
        for col in LONGITUDINAL_VISIT_COLUMNS:
            row.pop(col, None)
    run_longitudinal(
        list(job.visits),
        rows,
        job.out_dir,
        settings=job.settings,
        n_procs=job.n_procs,
        work_dir=job.work_dir,
    )
    failed = [r for r in rows if longitudinal_problem(r)]
    for visit, row in zip(job.visits, rows, strict=True):
        if row.get("status") != "ok":
            continue
        pid, sid = _ids(visit)
        fields = {c: row.get(c) for c in LONGITUDINAL_VISIT_COLUMNS}
        db.update_longitudinal(
            pid, sid, fields, _lesion_rows(job.out_dir, visit), run_id=job.run_id
        )
    subject_failed = all(
        isinstance(r.get("longitudinal_status"), str)
        and r["longitudinal_status"].startswith("failed")
        for r in rows
        if r.get("status") == "ok"
    )
    outcome = "failed" if subject_failed else "ok"
    message = "; ".join(f"{r['session_id']}: {r['longitudinal_status']}" for r in failed) or None
    db.add_ledger(
        job.run_id,
        participant_id=f"sub-{job.subject}",
        session_id=None,
        step="longitudinal",
        outcome=outcome,
        error_class=_error_class(failed[0]["longitudinal_status"].removeprefix("failed: "))
        if subject_failed and failed
        else None,
        message=message,
        started_at=started,
        finished_at=_now(),
        duration_s=round(time.perf_counter() - t0, 2),
    )
    send(
        {
            "event": "longitudinal_done",
            "participant_id": f"sub-{job.subject}",
            "session_id": None,
            "outcome": outcome,
            "reason": message,
            "duration_s": round(time.perf_counter() - t0, 2),
        }
    )
    return outcome if not message else f"{outcome}: {message}"


def _report_stale(job: SubjectJob, computed: bool, longitudinal: str) -> bool:
    """True when the subject's QC report must be (re)rendered: results changed or report missing."""
    return (
        computed
        or longitudinal != "not_needed"
        or not report_path(job.out_dir, job.subject).is_file()
    )


def _report(job: SubjectJob) -> str | None:
    """Render the subject's QC report; a failure is logged and returned, never raised."""
    try:
        return str(write_subject_report(job.out_dir, job.subject, settings=job.settings))
    except Exception as exc:  # a report never fails the quantification
        LOGGER.error("sub-%s: QC report failed: %s", job.subject, exc, exc_info=True)
        return f"failed: {type(exc).__name__}: {exc}"
