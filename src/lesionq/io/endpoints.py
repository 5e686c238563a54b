"""``OUT/endpoints.tsv``: trial endpoints per subject and period, with its JSON sidecar.

Reads the per-visit counts of ``visits.tsv`` (a DataFrame), places each session
on the protocol's visit schedule (:func:`lesionq.core.endpoints.assign_visits`),
cumulates the counts per period (:func:`lesionq.core.endpoints.period_endpoints`;
rules in :mod:`lesionq.core.endpoints`) and writes one row per subject and
period, atomically, with a sidecar that describes every column (units), the
schedule used, each session's placement, the settings hash and the lesionq
version.

Columns of the visits table used here:

* ``participant_id``, ``session_id``, ``status`` (required);
* ``acq_time`` (ISO 8601, optional): without it every session is placed by
  ``[schedule] session_weeks``;
* the counts named in ``[endpoints] counts`` (``new_t2_count``,
  ``enlarging_t2_count``, ``gd_count``, ``cua_count``): a column that is
  absent is **not available** (n/a) at every visit, never zero;
* the volumes named in ``[endpoints] volumes`` (``bh_volume_mm3``,
  ``t2_volume_mm3``): reported at each period's start and end weeks, never
  summed; an absent column is n/a;
* ``previous_session_id`` (optional): to flag counts that cover another
  interval than the schedule's.

Treatment arm is never read (blinded reading): a column of that name in the
visits table would simply be ignored.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Mapping
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd

from ..config import Settings
from ..core.endpoints import (
    Schedule,
    assign_visits,
    endpoint_columns,
    parse_schedule,
    period_endpoints,
    resolve_baseline_date,
    schedule_from_protocol,
)
from ..errors import InputError, LesionQError
from .bids import parse_acq_time
from .derivatives import provenance, write_sidecar
from .tables import write_tsv

__all__ = [
    "ENDPOINTS_TSV",
    "ASSIGNMENT_COLUMNS",
    "compute_endpoints",
    "endpoints_column_descriptions",
    "write_endpoints",
    "with_reviewed_counts",
    "REVIEWED_SUFFIX",
    "load_schedule",
]

log = logging.getLogger(__name__)

#: Name of the endpoints table at the top of the output folder.
ENDPOINTS_TSV = "endpoints.tsv"

#: Columns of the per-session placement table returned by :func:`compute_endpoints`.
ASSIGNMENT_COLUMNS: tuple[str, ...] = (
    "participant_id",
    "session_id",
    "acq_time",
    "baseline_date",
    "week",
    "nearest_week",
    "days_from_baseline",
    "in_window",
    "method",
    "used",
    "code",
    "reason",
)

_REQUIRED = ("participant_id", "session_id", "status")

_VOLUME_TEXT = {
    "t2_volume_mm3": "total T2 lesion volume",
    "bh_volume_mm3": "total T1 black-hole volume (T2 lesions hypointense on the pre-contrast T1)",
}

_COUNT_TEXT = {
    "new_t2_count": "new T2 lesions since the previous visit",
    "enlarging_t2_count": "enlarging T2 lesions since the previous visit",
    "gd_count": "Gd-enhancing lesions",
    "cua_count": "combined unique active lesions (Gd+ plus new/enlarging T2, each once)",
}


def _na(v: Any) -> bool:
    if v is None or v is pd.NA or v is pd.NaT:
        return True
    return isinstance(v, float) and math.isnan(v)


def _clean(v: Any) -> Any:
    """None for missing values, Python scalars otherwise."""
    if _na(v):
        return None
    return v.item() if hasattr(v, "item") else v


#: Suffix of a count after radiologists' review (``gd_count`` -> ``gd_count_reviewed``).
REVIEWED_SUFFIX = "_reviewed"


def with_reviewed_counts(schedule: Schedule, visits_df: pd.DataFrame) -> Schedule:
    """Add the reviewed twin of each endpoint count that the visits table has.

    ``visits.tsv`` gains ``<count>_reviewed`` columns once radiologists review
    visits (:mod:`lesionq.review`); the endpoints table then carries both the
    automatic and the reviewed cumulative counts. A reviewed count is n/a for a
    visit whose review is not final, so a period's reviewed sum stays n/a until
    every counted visit is final (nothing imputed, never 0 by default).

    Examples
    --------
    >>> from lesionq.core.endpoints import parse_schedule
    >>> s = parse_schedule({"baseline_week": 0, "weeks": [0, 4], "window_days": 7},
    ...                    {"p": [4]}, {"counts": ["gd_count", "cua_count"]})
    >>> with_reviewed_counts(s, pd.DataFrame(columns=["gd_count_reviewed"])).counts
    ('gd_count', 'cua_count', 'gd_count_reviewed')
    """
    extra = tuple(
        f"{c}{REVIEWED_SUFFIX}"
        for c in schedule.counts
        if f"{c}{REVIEWED_SUFFIX}" in visits_df.columns
        and f"{c}{REVIEWED_SUFFIX}" not in schedule.counts
    )
    return replace(schedule, counts=schedule.counts + extra) if extra else schedule


def endpoints_column_descriptions(schedule: Schedule) -> dict[str, dict[str, str]]:
    """BIDS-style description (and units) of every ``endpoints.tsv`` column."""
    d: dict[str, dict[str, str]] = {
        "participant_id": {"Description": "Subject (sub-<label>)"},
        "period": {"Description": "Period name ([periods] of the protocol)"},
        "period_weeks": {
            "Description": "Nominal weeks of the period, comma-separated",
            "Units": "weeks",
        },
        "n_visits_expected": {"Description": "Scheduled visits in the period", "Units": "visits"},
        "n_visits_observed": {
            "Description": "Scheduled visits of the period with a used session whose processing "
            "succeeded (status ok)",
            "Units": "visits",
        },
        "missing_weeks": {
            "Description": "Scheduled weeks of the period with no usable session (none in the "
            "window, or its processing failed), comma-separated; empty when none",
            "Units": "weeks",
        },
        "sessions": {"Description": "Sessions counted, in week order, comma-separated"},
        "failed_sessions": {
            "Description": "Sessions placed in the period whose processing failed (not counted)"
        },
        "excluded_sessions": {
            "Description": "Sessions not counted, with the reason code: out_of_window, duplicate, "
            "ambiguous (listed in the period of their nearest week) or unassigned (listed in "
            "every period); see the VisitAssignments of this sidecar"
        },
    }
    for c in schedule.counts:
        base = c.removesuffix(REVIEWED_SUFFIX)
        what = _COUNT_TEXT.get(base, base)
        if c != base:
            what += " after radiologists' review (final reviews only)"
        d[f"{c}_cumulative"] = {
            "Description": f"Sum over the counted visits of the period of {what} ({c} of "
            f"visits.tsv); n/a when no counted visit has it (never 0 by default)",
            "Units": "lesions",
        }
        d[f"{c}_n_visits"] = {
            "Description": f"Counted visits where {c} is available (the visits the sum covers)",
            "Units": "visits",
        }
        d[f"{c}_per_visit"] = {
            "Description": f"{c}_cumulative / {c}_n_visits (mean over the visits it covers; "
            "nothing imputed)",
            "Units": "lesions per visit",
        }
    for v in schedule.volumes:
        what = _VOLUME_TEXT.get(v, v)
        d[f"{v}_start_week"] = {
            "Description": f"Week of {v}_start: the scheduled week just before the period "
            "(n/a when the period starts at the first scheduled week)",
            "Units": "weeks",
        }
        d[f"{v}_start"] = {
            "Description": f"The {what} ({v} of visits.tsv) at {v}_start_week; n/a when that "
            "visit is missing, failed or has no value (never 0 by default)",
            "Units": "mm3",
        }
        d[f"{v}_end_week"] = {
            "Description": f"Week of {v}_end: the period's last scheduled week",
            "Units": "weeks",
        }
        d[f"{v}_end"] = {
            "Description": f"The {what} ({v} of visits.tsv) at {v}_end_week; n/a when that visit "
            "is missing, failed or has no value",
            "Units": "mm3",
        }
        d[f"{v}_change"] = {
            "Description": f"{v}_end - {v}_start (change over the period); n/a when either is n/a",
            "Units": "mm3",
        }
    d["complete"] = {
        "Description": "true when every scheduled week of the period was counted, every count is "
        "available at each and every volume at the period's start and end weeks; false otherwise"
    }
    d["missing_counts"] = {
        "Description": "Counts not available at a counted visit, and volumes not available at "
        "the observed visit of a period's start or end week, as <name>@<week>, comma-separated"
    }
    d["notes"] = {
        "Description": "Visits whose new/enlarging counts are relative to another session than "
        "the previous counted scheduled visit (they cover a different interval)"
    }
    return d


def _acq(value: Any, where: str) -> datetime | None:
    if _na(value):
        return None
    if isinstance(value, datetime):
        return value
    if isinstance(value, pd.Timestamp):
        return value.to_pydatetime()
    try:
        return parse_acq_time(str(value))
    except InputError as exc:
        raise InputError(f"{where}: {exc}") from exc


def compute_endpoints(
    visits_df: pd.DataFrame, schedule: Schedule
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Endpoints table and per-session placements from a visits table.

    Parameters
    ----------
    visits_df : pandas.DataFrame
        ``visits.tsv`` rows (see the module docstring for the columns used).
    schedule : Schedule
        :func:`lesionq.core.endpoints.schedule_from_protocol`.

    Returns
    -------
    endpoints : pandas.DataFrame
        One row per subject and period, columns
        :func:`lesionq.core.endpoints.endpoint_columns`; counts and visit numbers
        nullable integers (``Int64``), means ``Float64``, ``complete`` boolean.
    assignments : pandas.DataFrame
        One row per session, columns :data:`ASSIGNMENT_COLUMNS`.

    Raises
    ------
    InputError
        A required column is missing, an ``acq_time`` is not ISO 8601, a
        session is listed twice, or a count is not a non-negative integer.
    """
    missing = [c for c in _REQUIRED if c not in visits_df.columns]
    if missing:
        raise InputError(f"visits table: required column(s) {missing} missing")
    absent = [c for c in (*schedule.counts, *schedule.volumes) if c not in visits_df.columns]
    if absent:
        log.info("visits table has no %s column(s): taken as not available (n/a)", absent)
    if "acq_time" not in visits_df.columns:
        log.info("visits table has no acq_time column: sessions placed by [schedule] session_weeks")
    has_prev = "previous_session_id" in visits_df.columns

    records = [{k: _clean(v) for k, v in r.items()} for r in visits_df.to_dict("records")]
    by_subject: dict[str, list[dict[str, Any]]] = {}
    for r in records:
        if r["participant_id"] is None:
            raise InputError(f"visits table: a row has no participant_id: {r!r}")
        by_subject.setdefault(str(r["participant_id"]), []).append(r)

    rows: list[dict[str, Any]] = []
    placed: list[dict[str, Any]] = []
    for pid in sorted(by_subject):
        recs = by_subject[pid]
        sessions = []
        for r in recs:
            sid = None if r["session_id"] is None else str(r["session_id"])
            when = _acq(r.get("acq_time"), f"visits table, {pid} {sid}, acq_time")
            sessions.append((sid, when, None))
        failed = {
            s
            for (s, _, _), r in zip(sessions, recs, strict=True)
            if r["status"] != "ok" and s is not None
        }
        base, rule = resolve_baseline_date(sessions, schedule)
        assigned = assign_visits(sessions, schedule, base, failed_sessions=failed)
        for r, (sid, when, _), a in zip(recs, sessions, assigned, strict=True):
            row: dict[str, Any] = {
                "participant_id": pid,
                "session_id": sid,
                "status": r["status"],
                "week": a.week,
                "used": a.used,
                "nearest_week": a.nearest_week,
                "code": a.code,
            }
            for c in (*schedule.counts, *schedule.volumes):
                row[c] = r.get(c)  # absent column: None = not available
            if has_prev:
                row["previous_session_id"] = r.get("previous_session_id")
            rows.append(row)
            placed.append(
                {
                    "participant_id": pid,
                    "session_id": sid,
                    "acq_time": None if when is None else when.isoformat(),
                    "baseline_date": None if base is None else base.isoformat(),
                    **{k: v for k, v in a.as_dict().items() if k != "session_id"},
                    "reason": f"{a.reason} (baseline: {rule})",
                }
            )
    table = pd.DataFrame(period_endpoints(rows, schedule), columns=list(endpoint_columns(schedule)))
    for col in table.columns:
        if col.endswith(("_cumulative", "_n_visits", "_week")) or col.startswith("n_visits_"):
            table[col] = table[col].astype("Int64")
        elif col.endswith(("_per_visit", "_start", "_end", "_change")):
            table[col] = table[col].astype("Float64")
    table["complete"] = table["complete"].astype("boolean")
    assignments = pd.DataFrame(placed, columns=list(ASSIGNMENT_COLUMNS))
    for col in ("week", "nearest_week", "days_from_baseline"):
        assignments[col] = assignments[col].astype("Int64")
    for col in ("in_window", "used"):
        assignments[col] = assignments[col].astype("boolean")
    return table, assignments


def write_endpoints(
    out_dir: str | os.PathLike[str],
    visits_df: pd.DataFrame,
    settings: Settings,
    *,
    visits_path: str | os.PathLike[str] | None = None,
) -> Path:
    """Write ``OUT/endpoints.tsv`` (one row per subject and period) and its JSON sidecar.

    Parameters
    ----------
    out_dir : path-like
        Derivatives folder (created if needed).
    visits_df : pandas.DataFrame
        The visits table (``visits.tsv`` as read by :func:`lesionq.io.tables.read_tsv`).
    settings : Settings
        Effective settings; their ``[schedule]``, ``[periods]`` and
        ``[endpoints]`` sections define the endpoints.
    visits_path : path-like, optional
        The ``visits.tsv`` file ``visits_df`` was read from: hashed into the
        sidecar's ``inputs``.

    Returns
    -------
    Path
        ``OUT/endpoints.tsv``.

    Raises
    ------
    lesionq.errors.ConfigError
        The protocol has no or a bad ``[schedule]``.
    lesionq.errors.InputError
        See :func:`compute_endpoints`.
    """
    schedule = with_reviewed_counts(
        schedule_from_protocol(settings.sections, source=settings.source), visits_df
    )
    table, assignments = compute_endpoints(visits_df, schedule)
    dest = Path(out_dir) / ENDPOINTS_TSV
    dest.parent.mkdir(parents=True, exist_ok=True)
    write_tsv(table, dest)
    inputs: Mapping[str, str | os.PathLike[str]] = (
        {} if visits_path is None else {"visits": visits_path}
    )
    placements = [{k: _clean(v) for k, v in r.items()} for r in assignments.to_dict("records")]
    extra: dict[str, Any] = {
        **endpoints_column_descriptions(schedule),
        "Blinded": "Treatment arm is not an input: periods are nominal weeks only",
        "Schedule": schedule.as_dict(),
        "CountsNotInVisitsTable": [
            c for c in (*schedule.counts, *schedule.volumes) if c not in visits_df.columns
        ],
        "Rules": _RULES,
        "VisitAssignments": placements,
    }
    write_sidecar(
        dest,
        prov=provenance(settings, inputs),
        description="Trial MRI endpoints: one row per subject and period, per-visit counts of "
        "visits.tsv cumulated over the period's scheduled visits (blinded reading)",
        extra=extra,
    )
    log.info("wrote %s (%d rows)", dest, len(table))
    return dest


_RULES: tuple[str, ...] = (
    "Visit windows: |days after baseline - 7*(week - baseline_week)| <= window_days, inclusive; "
    "days are calendar days between acquisition dates.",
    "Baseline date: the acq_time of the session mapped to the baseline week by [schedule] "
    "session_weeks, else the subject's earliest dated session.",
    "A dated session outside every window is reported (out_of_window), never counted; an undated "
    "session is placed by [schedule] session_weeks, else reported (unassigned).",
    "Several sessions for one week: the one used is not failed, then dated, then closest to the "
    "nominal day, then earliest; the others are reported (duplicate); undated ties: none used "
    "(ambiguous).",
    "A failed visit (status not ok) is missing; its counts are never used.",
    "Counts are summed over the counted visits where they are available; a count that is n/a is "
    "left out, not taken as 0; a period with no such visit gives n/a; nothing is imputed; "
    "complete is false whenever a week or a count is missing.",
    "Volumes are not summed: each is reported at the scheduled week before the period (start) and "
    "at the period's last week (end), with end - start; a missing or n/a value stays n/a.",
)


def _schedule_from_sidecar(path: Path) -> Any:
    """The schedule recorded in ``endpoints.json`` (its ``Schedule`` entry)."""
    body = json.loads(path.read_text(encoding="utf-8"))
    s = body["Schedule"]
    visits = s["visits"]
    return parse_schedule(
        {
            "baseline_week": s["baseline_week"],
            "weeks": [v["week"] for v in visits],
            "window_days": [v["window_days"] for v in visits],
            "session_weeks": dict(s.get("session_weeks") or {}),
        },
        dict(s.get("periods") or {}),
        source=str(path),
    )


def load_schedule(out_dir: str | os.PathLike[str], settings: Any = None) -> Any:
    """The trial's visit schedule, or None when there is none.

    Parameters
    ----------
    out_dir : path-like
        Output folder of a run.
    settings : lesionq.config.Settings, optional
        Protocol settings: their ``[schedule]`` and ``[periods]`` when present;
        otherwise the ``Schedule`` recorded in ``OUT/endpoints.json``.

    Returns
    -------
    lesionq.core.endpoints.Schedule or None
        None without a schedule, or when it cannot be read (logged).
    """
    try:
        if settings is not None and "schedule" in settings.sections:
            return schedule_from_protocol(settings.sections, source=settings.source)
        sidecar = Path(out_dir) / "endpoints.json"
        if sidecar.is_file():
            return _schedule_from_sidecar(sidecar)
    except (LesionQError, OSError, ValueError, KeyError, TypeError) as exc:
        log.warning("visit schedule not usable for the timelines: %s", exc)
    return None
