"""Where a results database stands: runs, visit outcomes, failures and review progress.

What ``lesionq status`` prints for a reading centre's operator: the last run and
any unfinished one, how many visits have a current result and how many of those
failed (each with its reason, which names the file and the problem), the
longitudinal step's outcome per follow-up, and the radiologists' review progress.
Everything is read from the database; nothing is written.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pandas as pd

from ..store import ResultsDB
from ..store.reviewed import reviewed_counts

__all__ = ["DatasetStatus", "dataset_status", "format_status"]


@dataclass(frozen=True)
class DatasetStatus:
    """A summary of one results database (see :func:`dataset_status`).

    Attributes
    ----------
    n_runs : int
        Runs recorded.
    last_run : dict or None
        The newest run's row (``id``, ``status``, ``started_at``, ``finished_at``,
        ``n_ok``, ``n_failed``, ``n_skipped``, ``protocol``, ``lesionq_version``...).
    unfinished_runs : list of int
        Ids of runs still marked 'running' or 'interrupted'.
    n_subjects, n_visits : int
        Subjects and visits with a current result.
    outcomes : dict
        Current results by status (``ok``, ``failed``).
    failed : list of (participant_id, session_id, reason)
        Every visit whose current result failed.
    longitudinal : dict
        ``longitudinal_status`` of the current results, counted (follow-ups only).
    review : dict
        Visits by review status (``not_started``, ``in_review``, ``final``).
    """

    n_runs: int
    last_run: dict[str, Any] | None
    unfinished_runs: list[int]
    n_subjects: int
    n_visits: int
    outcomes: dict[str, int]
    failed: list[tuple[str, str, str]]
    longitudinal: dict[str, int] = field(default_factory=dict)
    review: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """True when no current result failed."""
        return not self.failed


def _text(value: Any) -> str:
    return "n/a" if value is None or (not isinstance(value, str) and pd.isna(value)) else str(value)


def _when(value: Any) -> str:
    """A stored UTC time to the second (``2026-11-26 00:19:00 UTC``), or n/a."""
    if isinstance(value, datetime) and not pd.isna(value):
        return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    return _text(value)


def _counts(series: pd.Series) -> dict[str, int]:
    values = series.map(_text)
    return {str(k): int(v) for k, v in values.value_counts().sort_index().items()}


def dataset_status(db: ResultsDB) -> DatasetStatus:
    """Summarise a results database (:class:`lesionq.store.ResultsDB`); read-only."""
    runs = db.runs_table()
    visits = db.visits_table()
    failed_rows = visits[visits["status"] != "ok"]
    follow_ups = visits[visits["longitudinal_status"].map(_text) != "baseline"]
    longitudinal = _counts(follow_ups["longitudinal_status"]) if not follow_ups.empty else {}
    review = reviewed_counts(db)
    return DatasetStatus(
        n_runs=len(runs),
        last_run=None if runs.empty else runs.iloc[-1].to_dict(),
        unfinished_runs=[
            int(r) for r in runs.loc[runs["status"].isin(["running", "interrupted"]), "id"]
        ],
        n_subjects=int(visits["participant_id"].nunique()),
        n_visits=len(visits),
        outcomes=_counts(visits["status"]) if not visits.empty else {},
        failed=[
            (str(r.participant_id), _text(r.session_id), _text(r.reason))
            for r in failed_rows.itertuples()
        ],
        longitudinal=longitudinal,
        review=_counts(review["review_status"]) if not review.empty else {},
    )


def format_status(status: DatasetStatus, source: str) -> str:
    """The summary as the lines ``lesionq status`` prints (``source``: the database, masked)."""
    lines = [f"lesionq status of {source}"]
    r = status.last_run
    if r is None:
        lines.append("runs: none recorded")
    else:
        counts = "/".join(_text(r.get(k)) for k in ("n_ok", "n_failed", "n_skipped"))
        lines.append(
            f"runs: {status.n_runs}; last: run {r['id']} {r['status']}, started "
            f"{_when(r.get('started_at'))}, finished {_when(r.get('finished_at'))}, "
            f"visits ok/failed/skipped {counts}, protocol {_text(r.get('protocol'))}, "
            f"lesionq {_text(r.get('lesionq_version'))}"
        )
    if status.unfinished_runs:
        ids = ", ".join(str(i) for i in status.unfinished_runs)
        lines.append(f"unfinished runs (running or interrupted): {ids}; `lesionq run --resume`")
    outcome = ", ".join(f"{n} {k}" for k, n in status.outcomes.items()) or "none"
    lines.append(
        f"visits: {status.n_visits} with a current result ({outcome}), {status.n_subjects} subjects"
    )
    if status.failed:
        lines.append(f"failed visits ({len(status.failed)}):")
        lines += [f"  {p} {s}: {reason}" for p, s, reason in status.failed]
    if status.longitudinal:
        text = ", ".join(f"{n} {k}" for k, n in status.longitudinal.items())
        lines.append(f"longitudinal step of the follow-ups: {text}")
    if status.review:
        text = ", ".join(f"{n} {k}" for k, n in status.review.items())
        lines.append(f"review: {text}")
    return "\n".join(lines)
