"""Run a BIDS dataset: new or changed visits only, subjects spread over workers.

:func:`run_dataset` records a run in the results database (:mod:`lesionq.store`),
sends one job per subject to :func:`lesionq.batch.executor.run_jobs` and
rewrites the top-level tables from the database. The per-visit and per-subject
steps a job calls, :func:`lesionq.batch.visit.run_visit` and
:func:`lesionq.batch.longitudinal.run_longitudinal`, are re-exported here.

A visit that fails (bad input found by the check battery, or an error while
processing) gets a ``failed`` row in ``visits.tsv`` with the reason; the other
visits go on. Outputs of a visit are published all at once (see
:func:`lesionq.io.derivatives.publish_visit`), so a failed or killed visit never
leaves a partial set of files that looks finished.

After the last visit of a subject, the subject's longitudinal step runs over its
successful visits (:func:`lesionq.batch.longitudinal.run_subject_longitudinal`).
Its failure is isolated too: the visits keep their cross-sectional results and
rows, with ``longitudinal_status = "failed: <reason>"``.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._version import __version__
from ..config import Settings
from ..errors import ConfigError, LesionQError, MissingInputError
from ..io.bids import VisitInputs, discover, participant_sites
from ..io.derivatives import VISITS_TSV, ensure_writable_dir, write_dataset_description
from ..io.endpoints import write_endpoints
from ..io.tables import read_tsv
from ..qc.overview import refresh_index
from ..steps import validate_settings
from ..store import ResultsDB
from .executor import TASK_FAILED, run_jobs
from .locks import tables_lock
from .longitudinal import longitudinal_problem, run_longitudinal
from .subject import SubjectJob, SubjectOutcome, write_visits_table
from .visit import run_visit

__all__ = ["RunSummary", "run_dataset", "run_visit", "run_longitudinal"]

LOGGER = logging.getLogger(__name__)

ProgressFn = Callable[[str], None]


@dataclass(frozen=True)
class RunSummary:
    """Outcome of :func:`run_dataset`.

    Attributes
    ----------
    out_dir : Path
    rows : tuple of dict
        The ``visits.tsv`` row of every visit this run looked at, with its
        ``outcome`` in this run (``ok``, ``failed``, ``skipped_up_to_date``,
        ``skipped_locked``).
    run_id : int
        The run's id in the results database.
    db_url : str
        The results database (password masked).
    subjects : tuple of SubjectOutcome
        Per-subject outcomes (longitudinal step, QC report, peak memory, time).
    """

    out_dir: Path
    rows: tuple[dict[str, Any], ...] = field(default_factory=tuple)
    run_id: int | None = None
    db_url: str | None = None
    subjects: tuple[Any, ...] = field(default_factory=tuple)

    @property
    def n_ok(self) -> int:
        """Visits whose current result succeeded (computed now or up to date)."""
        return sum(r.get("status") == "ok" for r in self.rows)

    @property
    def n_failed(self) -> int:
        """Visits whose current result failed (now, or earlier on unchanged inputs)."""
        return sum(r.get("status") not in ("ok", None) for r in self.rows)

    @property
    def n_computed(self) -> int:
        """Visits processed by this run."""
        return sum(r.get("outcome") in ("ok", "failed") for r in self.rows)

    @property
    def n_up_to_date(self) -> int:
        """Visits skipped because their result was up to date."""
        return sum(r.get("outcome") == "skipped_up_to_date" for r in self.rows)

    @property
    def n_locked(self) -> int:
        """Visits skipped because another run held their subject."""
        return sum(r.get("outcome") == "skipped_locked" for r in self.rows)

    @property
    def n_longitudinal_failed(self) -> int:
        """Visits ok cross-sectionally whose longitudinal step failed or was flagged.

        That is a ``longitudinal_status`` of ``failed: ...`` (the subject's step
        raised) or ``registration_failed: ...`` (this visit could not be registered).
        """
        return sum(longitudinal_problem(r) for r in self.rows)

    @property
    def all_ok(self) -> bool:
        """True when no visit failed, longitudinal step included (and there was a visit).

        Visits left to another run that holds their subject do not count as failed.
        """
        return bool(self.rows) and self.n_failed == 0 and self.n_longitudinal_failed == 0

    def describe(self) -> str:
        """One human line per failed visit plus a total line."""
        lines = [
            f"FAILED {r['participant_id']} {r['session_id']}: {r['reason']}"
            for r in self.rows
            if r.get("status") not in ("ok", None)
        ]
        lines += [
            f"LONGITUDINAL {r['participant_id']} {r['session_id']}: {r['longitudinal_status']}"
            for r in self.rows
            if longitudinal_problem(r)
        ]
        lines.append(
            f"lesionq: {self.n_ok} visit(s) ok, {self.n_failed} failed, "
            f"{self.n_longitudinal_failed} without longitudinal result "
            f"({self.n_computed} processed now, {self.n_up_to_date} up to date, "
            f"{self.n_locked} left to another run); table: {self.out_dir / VISITS_TSV}"
        )
        return "\n".join(lines)


def run_dataset(
    bids_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    settings: Settings,
    participant_labels: Sequence[str] | None = None,
    n_procs: int | None = None,
    work_dir: str | os.PathLike[str] | None = None,
    progress: ProgressFn | None = None,
    keep_work: bool = False,
    db_url: str | None = None,
    workers: int = 1,
    scheduler_address: str | None = None,
    resume: bool = False,
    force: bool = False,
    retry_failed: bool = False,
    report: bool = True,
    command: str | None = None,
    on_event: Callable[[dict[str, Any]], None] | None = None,
) -> RunSummary:
    """Process the new or changed visits of a BIDS dataset; update tables and database.

    Each subject is one job (:func:`lesionq.batch.subject.process_subject`):
    its up-to-date visits are skipped, the others processed one at a time and
    recorded in the results database as soon as they are published, then the
    subject's longitudinal step and QC report run. Jobs run in this process
    (``workers=1``) or on a dask cluster. At the end ``OUT/visits.tsv`` and
    ``OUT/endpoints.tsv`` are rewritten from the database and the endpoints
    stored in it.

    Parameters
    ----------
    bids_dir : path-like
        Input BIDS dataset.
    out_dir : path-like
        Output derivatives folder (created).
    settings : Settings
        Effective protocol settings (see :func:`lesionq.config.load_protocol`).
    participant_labels : sequence of str, optional
        Subjects to process (with or without ``sub-``); default all.
    n_procs : int, optional
        Thread budget of each visit's heavy steps; default: the cores divided
        among the local workers (1 with a remote scheduler).
    work_dir : path-like, optional
        Scratch root; default ``OUT/.lesionq-work/run-<id>``, removed at the end
        unless ``keep_work`` (a resumed run removes the one its killed
        predecessor left).
    progress : callable, optional
        Called with one human-readable line per visit started / finished.
    db_url : str, optional
        SQLAlchemy URL of the results database; default a SQLite file
        ``OUT/lesionq.sqlite``.
    workers : int
        Local dask workers (1: no cluster, subjects one after the other).
    scheduler_address : str, optional
        Use this existing dask scheduler instead of a local cluster.
    resume : bool
        Record this run as the continuation of the last interrupted one. Finished
        visits are never repeated, with or without it.
    force : bool
        Recompute every visit, up to date or not.
    retry_failed : bool
        Recompute visits that failed before even when their inputs are unchanged.
    report : bool
        Render each subject's QC report.
    command : str, optional
        The command line, recorded with the run.
    on_event : callable, optional
        Receives the structured progress events (see :func:`process_subject`).

    Returns
    -------
    RunSummary

    Raises
    ------
    lesionq.errors.OutputError
        ``out_dir`` (or ``work_dir``) cannot be created or written; checked with
        a real write before anything else is written.
    """
    validate_settings(settings)
    if workers < 1:
        raise ConfigError(f"workers must be >= 1, got {workers}")
    # absolute paths: nipype runs each node in its own working folder
    bids_dir = Path(bids_dir).resolve()
    out = Path(out_dir).resolve()
    visits = discover(bids_dir, participant_labels=participant_labels)
    if not visits:
        raise MissingInputError(f"{bids_dir}: no visits with anatomical scans found")
    ensure_writable_dir(out, what="output folder (OUT_DIR)")
    if work_dir is not None:
        ensure_writable_dir(work_dir, what="work folder (--work-dir)")
    write_dataset_description(out, source_dir=str(bids_dir))
    db = ResultsDB.open(db_url, out_dir=out)
    resumed_from = None
    if resume:
        resumed_from = _close_interrupted_run(db, progress)
        if resumed_from is not None:
            _remove_scratch(out, db.run(resumed_from), progress)
    run_id = db.start_run(
        lesionq_version=__version__,
        protocol=settings.name,
        settings_sha256=settings.hash(),
        settings=settings.dump(),
        command=command or "lesionq.run_dataset (Python API)",
        resumed_from=resumed_from,
    )
    work = (
        Path(work_dir).resolve()
        if work_dir is not None
        else out / ".lesionq-work" / f"run-{run_id}"
    )
    sites = participant_sites(bids_dir)
    by_subject: dict[str, list[VisitInputs]] = {}
    for visit in visits:
        by_subject.setdefault(visit.subject, []).append(visit)
    if n_procs is None:
        n_procs = max(1, (os.cpu_count() or 1) // workers) if scheduler_address is None else 1
    jobs = [
        SubjectJob(
            subject=subject,
            visits=tuple(sub_visits),
            bids_dir=bids_dir,
            out_dir=out,
            work_dir=work,
            settings=settings,
            db_url=db.engine.url.render_as_string(hide_password=False),
            run_id=run_id,
            n_procs=n_procs,
            force=force,
            retry_failed=retry_failed,
            report=report,
            site=sites.get(f"sub-{subject}"),
        )
        for subject, sub_visits in by_subject.items()
    ]
    lines = _ProgressLines(len(visits), progress)
    if on_event:
        on_event(
            {"event": "run_started", "run_id": run_id, "total": len(visits), "jobs": len(jobs)}
        )

    def forward(event: dict[str, Any]) -> None:
        lines(event)
        if on_event:
            on_event(event)

    status = "failed"
    try:
        outcomes = run_jobs(
            jobs,
            workers=workers,
            scheduler_address=scheduler_address,
            on_event=forward,
            on_outcome=lines.subject_done,
        )
        _record_crashed(db, run_id, outcomes)
        write_visits_table(out, db)
        if "schedule" in settings.sections:
            _write_endpoints(out, settings, progress, db=db, run_id=run_id)
        if report:  # OUT/index.html, the trial overview (never raises)
            refresh_index(out, settings=settings, progress=progress)
        status = "finished"
    except KeyboardInterrupt:
        status = "interrupted"
        raise
    finally:
        counts = _ledger_counts(db, run_id)
        db.finish_run(run_id, status=status, **counts)
        if not keep_work and work_dir is None:
            shutil.rmtree(work, ignore_errors=True)
    rows = tuple(
        {
            **v.row,
            "outcome": v.outcome,
            "participant_id": v.participant_id,
            "session_id": v.session_id,
        }
        for o in outcomes
        for v in o.visits
    )
    return RunSummary(
        out_dir=out, rows=rows, run_id=run_id, db_url=db.url_display, subjects=tuple(outcomes)
    )


def _record_crashed(db: ResultsDB, run_id: int, outcomes: Sequence[SubjectOutcome]) -> None:
    """Record the visits of subjects whose task raised, so that no visit goes missing.

    A subject task that raised (worker lost, a bug, the database gone for a while)
    may have recorded none, some or all of its visits. Each of its visits gets a
    ``failed`` ledger row in this run unless the task wrote one, and a ``failed``
    result (with the task's error as ``reason``) where the visit has no result at
    all, so that ``visits.tsv`` lists it with the reason instead of leaving it out.
    A visit with an earlier result keeps it (nothing finished is overwritten).
    """
    crashed = [
        v
        for o in outcomes
        for v in o.visits
        if str(v.row.get("reason") or "").startswith(TASK_FAILED)
    ]
    if not crashed:
        return
    ledger = db.ledger(run_id)
    logged = {
        (str(p), None if s is None or s != s else str(s))  # NaN -> None
        for p, s in zip(ledger["participant_id"], ledger["session_id"], strict=True)
    }
    for v in crashed:
        reason, error = str(v.row["reason"]), v.row.get("error_class")
        if (v.participant_id, v.session_id) not in logged:
            db.add_ledger(
                run_id,
                participant_id=v.participant_id,
                session_id=v.session_id,
                step="visit",
                outcome="failed",
                error_class=error,
                message=reason,
            )
        if db.current_result(v.participant_id, v.session_id) is None:
            row = {"participant_id": v.participant_id, "session_id": v.session_id,
                   "status": "failed", "reason": reason, "lesionq_version": __version__}  # fmt: skip
            db.record_visit(
                run_id, row, inputs_sha256=None, scans=[], lesions=[], error_class=error,
                started_at=None, finished_at=None,
            )  # fmt: skip


def _ledger_counts(db: ResultsDB, run_id: int) -> dict[str, int]:
    """ok / failed / skipped visit counts of one run, from its ledger."""
    ledger = db.ledger(run_id)
    if ledger.empty:
        return {"n_ok": 0, "n_failed": 0, "n_skipped": 0}
    visits = ledger[ledger["step"] == "visit"]["outcome"]
    return {
        "n_ok": int((visits == "ok").sum()),
        "n_failed": int((visits == "failed").sum()),
        "n_skipped": int(visits.str.startswith("skipped").sum()),
    }


def _remove_scratch(out: Path, run: dict[str, Any] | None, progress: ProgressFn | None) -> None:
    """Remove the default scratch folder ``OUT/.lesionq-work/run-<id>`` of a dead run.

    A killed run cannot remove its own scratch folder (nipype's intermediate
    files, megabytes per visit); the run that resumes it does. Only called for a
    run that :func:`_close_interrupted_run` closed; a run recorded on another
    host is left alone (whether its process is gone cannot be told from here).
    """
    if run is None:
        return
    scratch = out / ".lesionq-work" / f"run-{run['id']}"
    if not scratch.is_dir():
        return
    if run.get("host") != socket.gethostname():
        LOGGER.warning(
            "%s: scratch folder of run %s (host %s) left in place; remove it once that run "
            "is known to be gone",
            scratch,
            run["id"],
            run.get("host"),
        )
        return
    shutil.rmtree(scratch, ignore_errors=True)
    if scratch.exists():
        LOGGER.warning("%s: scratch folder of run %s could not be removed", scratch, run["id"])
    elif progress:
        progress(f"resume: removed the scratch folder {scratch} of run {run['id']}")


def _alive_here(host: str | None, pid: int | None) -> bool:
    """Whether ``pid`` is a live process on this host (False for other hosts: unknown)."""
    if not pid or host != socket.gethostname():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by another user
    return True


def _close_interrupted_run(db: ResultsDB, progress: ProgressFn | None) -> int | None:
    """Mark the last unfinished run as interrupted; return its id (or None)."""
    last = db.last_interrupted_run()
    if last is None:
        if progress:
            progress("resume: no interrupted run found; processing what is new or changed")
        return None
    run_id = int(last["id"])
    if last.get("status") == "running" and _alive_here(last.get("host"), last.get("pid")):
        if progress:
            progress(
                f"resume: run {run_id} is still running (pid {last['pid']} on this host); "
                "nothing to resume: its subjects are locked and skipped"
            )
        return None
    if last.get("status") == "running":
        db.finish_run(run_id, status="interrupted", **_ledger_counts(db, run_id))
    if progress:
        progress(f"resume: continuing run {run_id} (finished visits are kept)")
    return run_id


class _ProgressLines:
    """Turns progress events into numbered human lines (``[3/20] sub-01 ses-02: ok in 31.2 s``)."""

    def __init__(self, total: int, progress: ProgressFn | None) -> None:
        self.total = total
        self.done = 0
        self.progress = progress

    def __call__(self, event: dict[str, Any]) -> None:
        if self.progress is None:
            return
        label = " ".join(x for x in (event["participant_id"], event["session_id"]) if x)
        kind = event["event"]
        if kind == "visit_started":
            self.progress(f"[{self.done + 1}/{self.total}] {label}: running")
        elif kind == "visit_done":
            self.done += 1
            outcome = event["outcome"]
            text = {
                "ok": f"ok in {event['duration_s']:.1f} s",
                "skipped_up_to_date": "up to date (skipped)",
                "skipped_locked": "being processed by another run (skipped)",
            }.get(outcome, f"FAILED ({event['reason']})")
            self.progress(f"[{self.done}/{self.total}] {label}: {text}")
        elif kind == "longitudinal_done":
            status = "ok" if not event["reason"] else event["reason"]
            self.progress(f"{label}: longitudinal step {status} in {event['duration_s']:.1f} s")

    def subject_done(self, outcome: Any) -> None:
        if self.progress is not None and outcome.report:
            self.progress(f"sub-{outcome.subject}: QC report {outcome.report}")


def _write_endpoints(
    out: Path,
    settings: Settings,
    progress: ProgressFn | None,
    *,
    db: ResultsDB,
    run_id: int,
) -> None:
    """Rewrite ``OUT/endpoints.tsv`` from the whole ``visits.tsv`` and store it in the database.

    A failure here is logged and reported, never raised: the per-visit results
    stand and the table can be rebuilt by the next run.
    """
    try:
        with tables_lock(out):
            path = write_endpoints(
                out, read_tsv(out / VISITS_TSV), settings, visits_path=out / VISITS_TSV
            )
            db.replace_endpoints(run_id, read_tsv(path))
    except LesionQError as exc:
        LOGGER.error("endpoints table not written: %s", exc)
        if progress:
            progress(f"endpoints: FAILED ({exc})")
        return
    if progress:
        progress(f"endpoints: {path}")
