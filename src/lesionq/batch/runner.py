"""Run the visit workflow over a BIDS dataset, one visit at a time, isolating failures.

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
import re
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import __version__
from ..config import Settings
from ..errors import LesionQError, MissingInputError
from ..io.bids import VisitInputs, discover
from ..io.checks import check_visit
from ..io.derivatives import VISITS_TSV, write_dataset_description
from ..io.tables import update_visits_table

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
        The ``visits.tsv`` rows of the visits processed by this run.
    """

    out_dir: Path
    rows: tuple[dict[str, Any], ...] = field(default_factory=tuple)

    @property
    def n_ok(self) -> int:
        """Number of visits that succeeded."""
        return sum(r["status"] == "ok" for r in self.rows)

    @property
    def n_failed(self) -> int:
        """Number of visits that failed."""
        return sum(r["status"] != "ok" for r in self.rows)

    @property
    def n_longitudinal_failed(self) -> int:
        """Visits ok cross-sectionally whose longitudinal step failed or was flagged.

        That is a ``longitudinal_status`` of ``failed: ...`` (the subject's step
        raised) or ``registration_failed: ...`` (this visit could not be registered).
        """
        return sum(_longitudinal_problem(r) for r in self.rows)

    @property
    def all_ok(self) -> bool:
        """True when every visit succeeded, longitudinal step included (and there was one)."""
        return bool(self.rows) and self.n_failed == 0 and self.n_longitudinal_failed == 0

    def describe(self) -> str:
        """One human line per failed visit plus a total line."""
        lines = [
            f"FAILED {r['participant_id']} {r['session_id']}: {r['reason']}"
            for r in self.rows
            if r["status"] != "ok"
        ]
        lines += [
            f"LONGITUDINAL {r['participant_id']} {r['session_id']}: {r['longitudinal_status']}"
            for r in self.rows
            if _longitudinal_problem(r)
        ]
        lines.append(
            f"lesionq: {self.n_ok} visit(s) ok, {self.n_failed} failed, "
            f"{self.n_longitudinal_failed} without longitudinal result; "
            f"table: {self.out_dir / VISITS_TSV}"
        )
        return "\n".join(lines)


def _longitudinal_problem(row: dict[str, Any]) -> bool:
    status = row.get("longitudinal_status")
    return (
        row.get("status") == "ok"
        and isinstance(status, str)
        and status.startswith(("failed", "registration_failed"))
    )


def _base_row(visit: VisitInputs, settings: Settings) -> dict[str, Any]:
    return {
        "participant_id": f"sub-{visit.subject}",
        "session_id": f"ses-{visit.session}" if visit.session is not None else None,
        "acq_time": visit.acq_time,
        "protocol": settings.name,
        "settings_sha256": settings.hash(),
        "lesionq_version": __version__,
    }


_EXC_LINE = re.compile(r"^\s*(?:[\w]+\.)*(?P<name>\w+(?:Error|Exception)):\s*(?P<msg>.+)$")


def _reason(exc: BaseException) -> str:
    """One-line reason for ``visits.tsv``.

    nipype wraps a node's exception in ``NodeExecutionError`` whose message
    holds the node's traceback; the original exception (its last line) is what a
    reader needs, e.g. ``MissingInputError: .../FLAIR.nii.gz: file not found``.
    """
    lines = [ln for ln in str(exc).strip().splitlines() if ln.strip()]
    if type(exc).__name__ == "NodeExecutionError":
        for line in reversed(lines):
            m = _EXC_LINE.match(line)
            if m:
                node = lines[0].rstrip(".").split()[-1] if lines else "?"
                return f"{m['name']}: {m['msg'].strip()} (node {node})"
    first = lines[0] if lines else ""
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


def run_visit(
    visit: VisitInputs,
    out_dir: str | os.PathLike[str],
    *,
    settings: Settings,
    n_procs: int = 1,
    work_dir: str | os.PathLike[str] | None = None,
) -> dict[str, Any]:
    """Check, process and publish one visit; never raises for a bad visit.

    Parameters
    ----------
    visit : VisitInputs
        The visit's input files.
    out_dir : path-like
        Derivatives folder.
    settings : Settings
        Effective protocol settings.
    n_procs : int
        Thread budget for the visit's heavy steps.
    work_dir : path-like, optional
        Scratch folder (default ``out_dir/.lesionq-work``).

    Returns
    -------
    dict
        The visit's ``visits.tsv`` row (``status`` is ``"ok"`` or ``"failed"``).
    """
    from .visit import run_visit_workflow

    row = _base_row(visit, settings)
    t0 = time.perf_counter()
    try:
        findings = check_visit(visit)
        errors = [f for f in findings if f.level == "error"]
        for f in findings:
            if f.level == "warning":
                LOGGER.warning("%s", f.message)
        if errors:
            raise _InputRejected("; ".join(f.message for f in errors))
        work = Path(work_dir) if work_dir is not None else Path(out_dir) / ".lesionq-work"
        result = run_visit_workflow(
            visit, out_dir, settings=settings, n_procs=n_procs, work_dir=work
        )
        row.update(result)
        row["status"] = "ok"
        row["reason"] = None
    except (LesionQError, _InputRejected, Exception) as exc:  # one visit never stops the batch
        LOGGER.error(
            "visit %s %s failed: %s",
            row["participant_id"],
            row["session_id"],
            exc,
            exc_info=not isinstance(exc, LesionQError | _InputRejected),
        )
        row["status"] = "failed"
        row["reason"] = str(exc) if isinstance(exc, _InputRejected) else _reason(exc)
    row["duration_s"] = round(time.perf_counter() - t0, 2)
    return row


class _InputRejected(Exception):
    """The check battery found errors in a visit's inputs (message: the findings)."""


def run_longitudinal(
    visits: Sequence[VisitInputs],
    rows: Sequence[dict[str, Any]],
    out_dir: str | os.PathLike[str],
    *,
    settings: Settings,
    n_procs: int = 1,
    work_dir: str | os.PathLike[str],
) -> None:
    """Run one subject's longitudinal step and fill its rows in place; never raises.

    Parameters
    ----------
    visits, rows : sequence
        The subject's visits and their ``visits.tsv`` rows (same order), as
        returned by :func:`run_visit`; only visits with ``status == "ok"`` take part.
    out_dir, settings, n_procs, work_dir :
        As for :func:`run_visit` (``work_dir`` is required).

    Notes
    -----
    On any error every taking-part row gets ``longitudinal_status`` =
    ``"failed: <reason>"`` and the subject-level tracks table is removed; the
    cross-sectional outputs are untouched (nothing is published before the whole
    step has been computed).
    """
    from .longitudinal import remove_subject_outputs, run_subject_longitudinal

    ok = [(v, r) for v, r in zip(visits, rows, strict=True) if r.get("status") == "ok"]
    if not ok:
        return
    subject = ok[0][0].subject
    try:
        updates = run_subject_longitudinal(
            [v for v, _ in ok], out_dir, settings=settings, n_procs=n_procs, work_dir=work_dir
        )
    except Exception as exc:  # the cross-sectional results stand whatever happens here
        LOGGER.error(
            "sub-%s: longitudinal step failed: %s",
            subject,
            exc,
            exc_info=not isinstance(exc, LesionQError),
        )
        reason = _reason(exc)
        for _, row in ok:
            row["longitudinal_status"] = f"failed: {reason}"
        try:
            remove_subject_outputs(out_dir, subject)
        except OSError as rm_exc:  # pragma: no cover - reported, not fatal
            LOGGER.error("sub-%s: could not remove stale tracks table: %s", subject, rm_exc)
        return
    for visit, row in ok:
        row.update(updates.get(visit.session, {}))


def run_dataset(
    bids_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    settings: Settings,
    participant_labels: Sequence[str] | None = None,
    n_procs: int = 1,
    work_dir: str | os.PathLike[str] | None = None,
    progress: ProgressFn | None = None,
    keep_work: bool = False,
) -> RunSummary:
    """Process every visit of a BIDS dataset and update ``OUT/visits.tsv``.

    Visits run one at a time; after the last visit of a subject its longitudinal
    step runs over the subject's successful visits (:func:`run_longitudinal`)
    and the subject's rows are rewritten with the longitudinal columns.

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
    n_procs : int
        Thread budget handed down to each visit's heavy steps.
    work_dir : path-like, optional
        Scratch folder; default ``OUT/.lesionq-work``, removed at the end unless
        ``keep_work``.
    progress : callable, optional
        Called with one human-readable line per visit started / finished.

    Returns
    -------
    RunSummary
    """
    from ..steps import validate_settings

    validate_settings(settings)
    # absolute paths: nipype runs each node in its own working folder
    bids_dir = Path(bids_dir).resolve()
    out = Path(out_dir).resolve()
    visits = discover(bids_dir, participant_labels=participant_labels)
    if not visits:
        raise MissingInputError(f"{bids_dir}: no visits with anatomical scans found")
    out.mkdir(parents=True, exist_ok=True)
    write_dataset_description(out, source_dir=str(bids_dir))
    work = Path(work_dir).resolve() if work_dir is not None else out / ".lesionq-work"
    rows: list[dict[str, Any]] = []
    first_of_subject = 0
    for i, visit in enumerate(visits, start=1):
        label = f"sub-{visit.subject}" + (f" ses-{visit.session}" if visit.session else "")
        if progress:
            progress(f"[{i}/{len(visits)}] {label}: running")
        row = run_visit(visit, out, settings=settings, n_procs=n_procs, work_dir=work)
        rows.append(row)
        # the table is rewritten after every visit: a killed run keeps what finished
        update_visits_table(out / VISITS_TSV, [row])
        if progress:
            status = "ok" if row["status"] == "ok" else f"FAILED ({row['reason']})"
            progress(f"[{i}/{len(visits)}] {label}: {status} in {row['duration_s']:.1f} s")
        if i == len(visits) or visits[i].subject != visit.subject:
            # the subject's last visit: its longitudinal step, then its rows again
            sub_visits = visits[first_of_subject:i]
            sub_rows = rows[first_of_subject:i]
            first_of_subject = i
            if not any(r["status"] == "ok" for r in sub_rows):
                continue
            if progress:
                progress(f"sub-{visit.subject}: longitudinal step running")
            t0 = time.perf_counter()
            run_longitudinal(
                sub_visits, sub_rows, out, settings=settings, n_procs=n_procs, work_dir=work
            )
            update_visits_table(out / VISITS_TSV, sub_rows)
            if progress:
                flagged = [r for r in sub_rows if _longitudinal_problem(r)]
                status = (
                    "ok"
                    if not flagged
                    else "; ".join(
                        f"{r['session_id']}: {r['longitudinal_status']}" for r in flagged
                    )
                )
                progress(
                    f"sub-{visit.subject}: longitudinal step {status} "
                    f"in {time.perf_counter() - t0:.1f} s"
                )
    if "schedule" in settings.sections:
        _write_endpoints(out, settings, progress)
    if not keep_work and work_dir is None:
        shutil.rmtree(work, ignore_errors=True)
    return RunSummary(out_dir=out, rows=tuple(rows))


def _write_endpoints(out: Path, settings: Settings, progress: ProgressFn | None) -> None:
    """Rewrite ``OUT/endpoints.tsv`` from the whole ``visits.tsv`` (all runs so far).

    A failure here is logged and reported, never raised: the per-visit results
    stand and the table can be rebuilt by the next run.
    """
    from ..io.endpoints import write_endpoints
    from ..io.tables import read_tsv

    try:
        path = write_endpoints(
            out, read_tsv(out / VISITS_TSV), settings, visits_path=out / VISITS_TSV
        )
    except LesionQError as exc:
        LOGGER.error("endpoints table not written: %s", exc)
        if progress:
            progress(f"endpoints: FAILED ({exc})")
        return
    if progress:
        progress(f"endpoints: {path}")
