"""Trial overview page ``OUT/index.html``: one line per subject, sparklines, failures, review.

Built from files only (``OUT/visits.tsv``, the subjects' reports ``OUT/sub-<s>.html``
and, for the schedule, the protocol settings or ``OUT/endpoints.json``); it needs
no database. Per subject: a link to its QC report, its visits (failed ones
listed, the failure reason as a tooltip), the radiologists' review progress
from the ``review_status`` column the results database adds to ``visits.tsv``
("not reviewed" when there is none) and sparklines of the measures of
:data:`lesionq.qc.timeline.SERIES` on a common week axis with the protocol's
periods shaded.

The page follows the QC report's conventions: no JavaScript, no external
resources (inline CSS and SVG), BIDS labels and nominal weeks only (no
acquisition dates, no participant attributes). It is rewritten atomically
(temporary file, then :func:`os.replace`) at the end of each batch run
(:func:`refresh_index`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2
import pandas as pd
from markupsafe import Markup

from .._version import __version__
from ..errors import MissingInputError
from ..io.derivatives import VISITS_TSV
from ..io.endpoints import load_schedule
from ..io.nifti import atomic_write_text
from ..io.tables import read_tsv
from . import timeline as tl
from .report import report_path

__all__ = ["INDEX_HTML", "load_schedule", "index_path", "write_index", "refresh_index"]

LOGGER = logging.getLogger(__name__)

#: Name of the overview page at the top of the output folder.
INDEX_HTML = "index.html"


def index_path(out_dir: str | os.PathLike[str]) -> Path:
    """``OUT/index.html``.

    Examples
    --------
    >>> index_path("OUT").as_posix()
    'OUT/index.html'
    """
    return Path(out_dir) / INDEX_HTML


def _strip(value: str, prefix: str) -> str:
    return value[len(prefix) :] if value.startswith(prefix) else value


def subject_timelines(visits: pd.DataFrame | None, schedule: Any = None) -> dict[str, tl.Timeline]:
    """Subject label (without ``sub-``) -> :class:`~lesionq.qc.timeline.Timeline`."""
    if visits is None or "participant_id" not in visits.columns:
        return {}
    pid = visits["participant_id"].map(lambda s: _strip(str(s), "sub-"))
    return {
        str(s): tl.build_timeline(visits[pid == s], schedule) for s in sorted(pid.dropna().unique())
    }


@dataclass
class _Row:
    subject: str
    report: str = ""
    n_visits: int = 0
    n_ok: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)  # (label, reason)
    review: str = "not reviewed"
    n_final: int = 0
    sparklines: list[tuple[str, str, str]] = field(default_factory=list)  # key, svg, latest


def _review(rows: pd.DataFrame) -> tuple[str, int]:
    """Review progress text and the number of final visits among the ok visits."""
    if "review_status" not in rows.columns:
        return "not reviewed", 0
    ok = rows[rows["status"] == "ok"] if "status" in rows.columns else rows
    status = ok["review_status"].dropna().astype(str)
    if status.empty or (status == "not_started").all():
        return "not reviewed", 0
    n = len(ok)
    final = int((status == "final").sum())
    busy = int((status == "in_review").sum())
    parts = [f"{final} of {n} visits final"]
    if busy:
        parts.append(f"{busy} in review")
    return ", ".join(parts), final


def _latest(t: tl.Timeline, spec: tl.SeriesSpec) -> str:
    vals = [y for _, y in t.series(spec.key) if y is not None]
    if not vals:
        return "n/a"
    return f"{vals[-1]:.2f}" if spec.unit == "mL" else f"{vals[-1]:.0f}"


def _render(context: Mapping[str, Any]) -> str:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("lesionq.qc", "templates"),
        autoescape=jinja2.select_autoescape(["html", "j2"]),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
    )
    return env.get_template("index.html.j2").render(**context)


def write_index(out_dir: str | os.PathLike[str], *, settings: Any = None) -> Path:
    """Write ``OUT/index.html``, the trial overview, atomically.

    Parameters
    ----------
    out_dir : path-like
        Output folder of a run (``visits.tsv``, ``sub-<s>.html``).
    settings : lesionq.config.Settings, optional
        Protocol settings, for the visit schedule (see :func:`load_schedule`).

    Returns
    -------
    pathlib.Path
        ``OUT/index.html``.

    Raises
    ------
    lesionq.errors.MissingInputError
        ``out_dir`` does not exist.

    Notes
    -----
    Subjects are those of ``visits.tsv`` and those with a report or an output
    folder. Every link is relative and points at a file that exists when the
    page is written (a subject without a report says so instead).
    """

    out = Path(out_dir)
    if not out.is_dir():
        raise MissingInputError(f"{out}: output folder not found (out_dir)")
    notes: list[str] = []
    visits = None
    if (out / VISITS_TSV).is_file():
        try:
            visits = read_tsv(out / VISITS_TSV)
        except Exception as exc:
            notes.append(f"{VISITS_TSV}: unreadable ({type(exc).__name__}: {exc})")
    else:
        notes.append(f"{VISITS_TSV} not found: no per-visit counts")
    schedule = load_schedule(out, settings)
    if schedule is None:
        notes.append(
            "no visit schedule (protocol [schedule] or endpoints.json): weeks count from each "
            "subject's first visit"
        )
    timelines = subject_timelines(visits, schedule)
    subjects = set(timelines)
    subjects |= {p.name[4:] for p in out.glob("sub-*") if p.is_dir()}
    subjects |= {p.name[4:-5] for p in out.glob("sub-*.html") if p.is_file()}
    weeks = tl.x_range(list(timelines.values()))
    rows: list[_Row] = []
    for subject in sorted(subjects):
        row = _Row(subject)
        if report_path(out, subject).is_file():
            row.report = report_path(out, subject).name
        t = timelines.get(subject)
        if t is not None and visits is not None:
            pid = visits["participant_id"].map(lambda s: _strip(str(s), "sub-"))
            sub_rows = visits[pid == subject]
            row.n_visits = len(t.visits)
            row.n_ok = sum(not v.failed for v in t.visits)
            row.failed = [
                (
                    (v.session or "visit")
                    + ("" if v.week is None else f" (week {tl.format_week(v.week)})"),
                    v.reason,
                )
                for v in t.visits
                if v.failed
            ]
            row.review, row.n_final = _review(sub_rows)
            for spec in tl.SERIES:
                row.sparklines.append(
                    (spec.key, tl.sparkline_svg(t, spec.key, weeks=weeks), _latest(t, spec))
                )
        rows.append(row)
    periods = [
        (
            p.name,
            tl.format_week(p.start_week),
            tl.format_week(p.end_week),
            tl.PERIOD_COLOURS[n % len(tl.PERIOD_COLOURS)],
        )
        for n, p in enumerate(tl.schedule_periods(schedule) if schedule is not None else ())
    ]
    links = [(name, name) for name in (VISITS_TSV, "endpoints.tsv") if (out / name).is_file()]
    context = {
        "version": __version__,
        "rows": rows,
        "series": tl.SERIES,
        "markup": Markup,
        "notes": notes,
        "periods": periods,
        "links": links,
        "weeks": (tl.format_week(weeks[0]), tl.format_week(weeks[1])),
        "x_label": "week of the study schedule" if schedule is not None else "weeks",
    }
    dest = index_path(out)
    atomic_write_text(dest, _render(context))
    LOGGER.info("trial overview: %s (%d subjects)", dest, len(rows))
    return dest


def refresh_index(
    out_dir: str | os.PathLike[str],
    *,
    settings: Any = None,
    progress: Callable[[str], Any] | None = None,
) -> Path | None:
    """:func:`write_index`, but a failure is logged (and reported), never raised.

    Called at the end of each batch run: the overview never fails the run.
    """
    try:
        path = write_index(out_dir, settings=settings)
    except Exception as exc:  # the per-visit results stand; the next run rewrites the page
        LOGGER.error("trial overview %s not written: %s", index_path(out_dir), exc, exc_info=True)
        if progress:
            progress(f"overview: FAILED ({type(exc).__name__}: {exc})")
        return None
    if progress:
        progress(f"overview: {path}")
    return path
