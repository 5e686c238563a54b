"""Per-subject timelines of the trial's MRI measures, drawn as small hand-written SVG.

Pure functions, no file I/O and no plotting library: :func:`build_timeline`
turns a subject's ``visits.tsv`` rows (a DataFrame) and, optionally, the
protocol's visit schedule (:class:`lesionq.core.endpoints.Schedule`) into a
:class:`Timeline`; :func:`timeline_svg` draws it as one SVG with a panel per
measure (for the subject's QC report) and :func:`sparkline_svg` as a tiny
one-measure line (for the trial overview page). Same input, same bytes: every
number is written with a fixed number of decimals and nothing depends on the
clock, the locale or the fonts installed.

Measures (:data:`SERIES`), per visit:

* ``t2_volume``: total T2 lesion volume, **mL** (``t2_volume_mm3`` / 1000);
* ``new_enlarging``: new plus enlarging T2 lesions since the previous visit,
  **count** (``new_t2_count`` + ``enlarging_t2_count``; n/a when either is);
* ``gd``: Gd-enhancing lesions, **count** (``gd_count``);
* ``cua``: combined unique active lesions, **count** (``cua_count``);
* ``bh_volume``: T1 black-hole volume, **mL** (``bh_volume_mm3`` / 1000; n/a
  without a pre-contrast T1w).

The x axis is in **weeks**. With a schedule, each session sits at the nominal
week the endpoints place it in (:func:`lesionq.io.endpoints.compute_endpoints`:
by acquisition date within the visit windows, else by ``session_weeks``); a
session outside every window sits at its actual week (days after baseline / 7)
and is marked off schedule; the protocol's ``[periods]`` are shaded from the
scheduled week before the period (the interval its first counts cover) to its
last week. Without a schedule, sessions sit at weeks since the subject's first
dated session, else at their visit number.

A failed visit (``status`` not ``ok``) has no values: lines break there and a
red cross on the week axis carries the failure reason as a tooltip (SVG
``<title>``). A value that is not available at a visit (``n/a``, e.g. no
post-contrast scan for ``gd``) is not drawn and breaks the line too: nothing
is imputed.

Only BIDS labels and nominal weeks are written (no acquisition dates, no
participant attributes).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from html import escape
from typing import Any

import pandas as pd

from ..errors import LesionQError
from ..io.endpoints import compute_endpoints

__all__ = [
    "SeriesSpec",
    "SERIES",
    "TimelineVisit",
    "TimelinePeriod",
    "Timeline",
    "PERIOD_COLOURS",
    "schedule_periods",
    "build_timeline",
    "format_week",
    "x_range",
    "timeline_svg",
    "sparkline_svg",
]

_SVG_NS = "http://www.w3.org/2000/svg"
_FAILED = "#d70015"
#: Fill colours of the shaded periods, in protocol order (cycled).
PERIOD_COLOURS: tuple[str, ...] = ("#4f7cff", "#22a06b", "#c77700", "#9b51e0", "#d14d72")


@dataclass(frozen=True)
class SeriesSpec:
    """One measure of the timeline.

    Attributes
    ----------
    key : str
        Short name (``data-series`` of the SVG elements).
    title : str
        Panel heading.
    unit : str
        ``"mL"`` or ``"count"``.
    colour : str
        Line and point colour.
    """

    key: str
    title: str
    unit: str
    colour: str


#: The measures drawn, in panel order.
SERIES: tuple[SeriesSpec, ...] = (
    SeriesSpec("t2_volume", "T2 lesion volume", "mL", "#b08800"),
    SeriesSpec("new_enlarging", "New + enlarging T2 lesions", "count", "#e0531f"),
    SeriesSpec("gd", "Gd+ lesions", "count", "#c2189b"),
    SeriesSpec("cua", "Combined unique active lesions (CUA)", "count", "#1f5fbf"),
    SeriesSpec("bh_volume", "T1 black-hole volume", "mL", "#5b5b5b"),
)
_SERIES_BY_KEY = {s.key: s for s in SERIES}


@dataclass(frozen=True)
class TimelineVisit:
    """One session of the subject on the timeline.

    Attributes
    ----------
    session : str
        ``ses-<v>`` (empty for a dataset without sessions).
    week : float or None
        Position on the x axis, weeks (None: the session could not be placed).
    failed : bool
        Processing failed (``status`` is not ``ok``): no values.
    reason : str
        Failure reason (``visits.tsv`` ``reason``), or the placement note of an
        off-schedule session.
    values : Mapping[str, float or None]
        Measure key of :data:`SERIES` -> value (mL or count); None when not
        available.
    off_schedule : bool
        Placed at its actual week, outside every scheduled visit window.
    """

    session: str
    week: float | None
    failed: bool = False
    reason: str = ""
    values: Mapping[str, float | None] = field(default_factory=dict)
    off_schedule: bool = False


@dataclass(frozen=True)
class TimelinePeriod:
    """A shaded treatment period.

    Attributes
    ----------
    name : str
        Period name (``[periods]`` of the protocol).
    start_week, end_week : float
        Shaded interval, weeks: from the scheduled week before the period (its
        first week when none) to its last week.
    """

    name: str
    start_week: float
    end_week: float


@dataclass(frozen=True)
class Timeline:
    """A subject's measures over time (see :func:`build_timeline`).

    Attributes
    ----------
    visits : tuple of TimelineVisit
        In x order (unplaced sessions last).
    periods : tuple of TimelinePeriod
    scheduled_weeks : tuple of int
        The schedule's nominal weeks (empty without a schedule).
    x_label : str
        What the x axis counts.
    """

    visits: tuple[TimelineVisit, ...]
    periods: tuple[TimelinePeriod, ...] = ()
    scheduled_weeks: tuple[int, ...] = ()
    x_label: str = "week"

    def series(self, key: str) -> list[tuple[TimelineVisit, float | None]]:
        """``(visit, value)`` of measure ``key`` for every placed visit, in x order."""
        return [
            (v, None if v.failed else v.values.get(key)) for v in self.visits if v.week is not None
        ]


# ----------------------------------------------------------------------------- model


def _num(value: Any) -> float | None:
    """A finite float, or None for missing / non-numeric values."""
    if value is None or value is pd.NA:
        return None
    try:
        f = float(value)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def _text(value: Any) -> str:
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return ""
    return str(value)


def _values(row: Mapping[str, Any]) -> dict[str, float | None]:
    vol = _num(row.get("t2_volume_mm3"))
    bh = _num(row.get("bh_volume_mm3"))
    new, enl = _num(row.get("new_t2_count")), _num(row.get("enlarging_t2_count"))
    return {
        "t2_volume": None if vol is None else vol / 1000.0,
        "new_enlarging": None if new is None or enl is None else new + enl,
        "gd": _num(row.get("gd_count")),
        "cua": _num(row.get("cua_count")),
        "bh_volume": None if bh is None else bh / 1000.0,
    }


def _session(value: Any) -> str:
    s = _text(value)
    return s if not s or s.startswith("ses-") else f"ses-{s}"


def _scheduled_weeks(rows: pd.DataFrame, schedule: Any) -> dict[str, tuple[float | None, bool]]:
    """Session -> (week, off_schedule) from the endpoints' placement; {} when it fails."""
    try:
        _, placed = compute_endpoints(rows, schedule)
    except (LesionQError, KeyError, ValueError):
        return {}
    out: dict[str, tuple[float | None, bool]] = {}
    for r in placed.to_dict("records"):
        week = _num(r.get("week"))
        off = False
        if week is None:
            days = _num(r.get("days_from_baseline"))
            if days is not None:
                week, off = schedule.baseline_week + days / 7.0, True
        out[_session(r.get("session_id"))] = (week, off)
    return out


def _dated_weeks(rows: pd.DataFrame) -> dict[str, float] | None:
    """Session -> weeks since the first dated session; None when no session is dated."""
    if "acq_time" not in rows.columns:
        return None
    when = pd.to_datetime(rows["acq_time"], errors="coerce", format="ISO8601")
    if when.isna().all():
        return None
    first = when.min().normalize()
    return {
        _session(s): (t.normalize() - first).days / 7.0
        for s, t in zip(rows["session_id"], when, strict=True)
        if not pd.isna(t)
    }


def schedule_periods(schedule: Any) -> tuple[TimelinePeriod, ...]:
    """The shaded interval of each period of ``schedule``, in protocol order.

    A period covers from the scheduled week before its first week (the interval
    its first new/enlarging counts cover) to its last week.

    Examples
    --------
    >>> from lesionq.core.endpoints import parse_schedule
    >>> s = parse_schedule({"baseline_week": 0, "weeks": [0, 4, 12, 24], "window_days": 7},
    ...                    {"first": [4, 12], "second": [24]})
    >>> [(p.name, p.start_week, p.end_week) for p in schedule_periods(s)]
    [('first', 0.0, 12.0), ('second', 12.0, 24.0)]
    """
    out = []
    for p in schedule.periods:
        start = schedule.start_week(p)
        out.append(
            TimelinePeriod(
                p.name, float(p.weeks[0] if start is None else start), float(p.weeks[-1])
            )
        )
    return tuple(out)


def build_timeline(visits: pd.DataFrame, schedule: Any = None) -> Timeline:
    """A subject's timeline from its ``visits.tsv`` rows.

    Parameters
    ----------
    visits : pandas.DataFrame
        One subject's rows of ``visits.tsv`` (``session_id``, ``status``,
        ``reason``, ``acq_time``, ``t2_volume_mm3``, ``new_t2_count``,
        ``enlarging_t2_count``, ``gd_count``, ``cua_count``, ``bh_volume_mm3``; absent columns
        are n/a).
    schedule : lesionq.core.endpoints.Schedule, optional
        The protocol's visit schedule: x in nominal weeks, periods shaded.

    Returns
    -------
    Timeline

    Examples
    --------
    >>> from lesionq.core.endpoints import parse_schedule
    >>> s = parse_schedule({"baseline_week": 0, "weeks": [0, 4, 12], "window_days": 7,
    ...                     "session_weeks": {"ses-a": 0, "ses-b": 4, "ses-c": 12}},
    ...                    {"treated": [4, 12]})
    >>> rows = pd.DataFrame({"participant_id": "sub-1", "session_id": ["ses-a", "ses-b", "ses-c"],
    ...                      "status": ["ok", "ok", "failed"], "t2_volume_mm3": [1500.0, 1750.0, None]})
    >>> t = build_timeline(rows, s)
    >>> [(v.session, v.week, v.failed, v.values.get("t2_volume")) for v in t.visits]
    [('ses-a', 0.0, False, 1.5), ('ses-b', 4.0, False, 1.75), ('ses-c', 12.0, True, None)]
    >>> t.periods
    (TimelinePeriod(name='treated', start_week=0.0, end_week=12.0),)
    """
    rows = visits.reset_index(drop=True)
    if "session_id" not in rows.columns:
        rows = rows.assign(session_id=None)
    if "status" not in rows.columns:
        rows = rows.assign(status="ok")
    records = rows.to_dict("records")
    placement: dict[str, tuple[float | None, bool]] = {}
    periods: tuple[TimelinePeriod, ...] = ()
    weeks: tuple[int, ...] = ()
    x_label = "visit number"
    if schedule is not None:
        placement = _scheduled_weeks(rows.assign(participant_id="sub-x"), schedule)
    if any(w is not None for w, _ in placement.values()):
        x_label = "week of the study schedule"
        weeks = tuple(schedule.weeks)
        periods = schedule_periods(schedule)
    else:
        dated = _dated_weeks(rows)
        if dated is not None:
            x_label = "weeks since the first visit"
            placement = {s: (w, False) for s, w in dated.items()}
        else:
            order = sorted(range(len(records)), key=lambda i: _session(records[i]["session_id"]))
            placement = {
                _session(records[i]["session_id"]): (float(n + 1), False)
                for n, i in enumerate(order)
            }
    out: list[TimelineVisit] = []
    for r in records:
        ses = _session(r.get("session_id"))
        week, off = placement.get(ses, (None, False))
        failed = _text(r.get("status")) != "ok"
        reason = _text(r.get("reason")) if failed else ""
        if off and not failed:
            reason = "outside every scheduled visit window"
        out.append(
            TimelineVisit(
                session=ses,
                week=week,
                failed=failed,
                reason=reason or ("failed" if failed else ""),
                values={} if failed else _values(r),
                off_schedule=off,
            )
        )
    out.sort(key=lambda v: (v.week is None, v.week if v.week is not None else 0.0, v.session))
    return Timeline(tuple(out), periods, weeks, x_label)


def x_range(timelines: Sequence[Timeline]) -> tuple[float, float]:
    """Weeks spanned by the visits, scheduled weeks and periods of ``timelines``.

    Examples
    --------
    >>> x_range([Timeline((TimelineVisit("ses-1", 2.0), TimelineVisit("ses-2", 9.0)))])
    (2.0, 9.0)
    >>> x_range([])
    (0.0, 1.0)
    """
    xs: list[float] = []
    for t in timelines:
        xs += [v.week for v in t.visits if v.week is not None]
        xs += [float(w) for w in t.scheduled_weeks]
        xs += [w for p in t.periods for w in (p.start_week, p.end_week)]
    if not xs:
        return 0.0, 1.0
    lo, hi = min(xs), max(xs)
    return (lo, hi) if hi > lo else (lo - 1.0, hi + 1.0)


# ----------------------------------------------------------------------------- drawing


def format_week(x: float) -> str:
    """A number with at most 2 decimals, trailing zeros dropped (weeks, SVG coordinates).

    >>> format_week(3.14159), format_week(-0.0), format_week(2.0)
    ('3.14', '0', '2')
    """
    s = f"{x:.2f}".rstrip("0").rstrip(".")
    return "0" if s in ("-0", "") else s


_f = format_week


def _fmt(value: float, unit: str) -> str:
    """A value for labels and tooltips: mL with 2 decimals, counts as integers."""
    if unit == "mL":
        return f"{value:.2f} mL"
    return f"{value:.0f}"


def _nice_max(vmax: float, unit: str) -> float:
    """Top of a y axis: a round number at or above ``vmax`` (at least 1 count / 0.1 mL).

    >>> _nice_max(7, "count"), _nice_max(0, "count"), _nice_max(2.3, "mL"), _nice_max(0.04, "mL")
    (8.0, 1.0, 2.5, 0.1)
    """
    floor = 0.1 if unit == "mL" else 1.0
    v = max(float(vmax), floor)
    mag = 10.0 ** math.floor(math.log10(v))
    for step in (1.0, 1.25, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0):
        top = round(step * mag, 6)
        if top >= v - 1e-9:
            return top if unit == "mL" else float(math.ceil(top))
    return 10.0 * mag  # pragma: no cover - the loop always returns


def _xticks(timeline: Timeline, lo: float, hi: float) -> list[float]:
    if timeline.scheduled_weeks:
        return [float(w) for w in timeline.scheduled_weeks if lo <= w <= hi]
    span = hi - lo
    step = next(
        (s for s in (1, 2, 4, 5, 10, 12, 20, 24, 26, 52, 104) if span / s <= 10), span / 5 or 1
    )
    first = math.ceil(lo / step) * step
    return [first + k * step for k in range(int((hi - first) // step) + 1)]


def _lanes(periods: Sequence[TimelinePeriod]) -> list[int]:
    """A label row per period so overlapping periods' labels do not collide.

    >>> _lanes([TimelinePeriod("a", 0, 24), TimelinePeriod("b", 24, 48), TimelinePeriod("c", 0, 48)])
    [0, 0, 1]
    """
    ends: list[float] = []
    lanes = []
    for p in periods:
        for n, end in enumerate(ends):
            if p.start_week >= end:
                ends[n] = p.end_week
                lanes.append(n)
                break
        else:
            ends.append(p.end_week)
            lanes.append(len(ends) - 1)
    return lanes


def _segments(
    points: Sequence[tuple[float, float | None, str]],
) -> list[list[tuple[float, float, str]]]:
    """Runs of consecutive ``(x, y, session)`` points with a value (a None ends a run).

    >>> _segments([(0, 1.0, "a"), (1, 2.0, "b"), (2, None, "c"), (3, 1.0, "d")])
    [[(0, 1.0, 'a'), (1, 2.0, 'b')], [(3, 1.0, 'd')]]
    """
    runs: list[list[tuple[float, float, str]]] = [[]]
    for x, y, tag in points:
        if y is None:
            if runs[-1]:
                runs.append([])
        else:
            runs[-1].append((x, y, tag))
    return [r for r in runs if r]


def _cross(x: float, y: float, r: float) -> str:
    return f"M{_f(x - r)} {_f(y - r)}L{_f(x + r)} {_f(y + r)}M{_f(x - r)} {_f(y + r)}L{_f(x + r)} {_f(y - r)}"


@dataclass(frozen=True)
class _Scale:
    lo: float
    hi: float
    left: float
    right: float

    def __call__(self, week: float) -> float:
        return self.left + (week - self.lo) / (self.hi - self.lo) * (self.right - self.left)


def timeline_svg(
    timeline: Timeline,
    *,
    width: int = 900,
    panel_height: int = 96,
    weeks: tuple[float, float] | None = None,
    title: str = "",
) -> str:
    """The timeline as one inline SVG: a panel per measure of :data:`SERIES`, weeks below.

    Parameters
    ----------
    timeline : Timeline
    width : int
        Width in SVG user units (CSS pixels at 100 %); the picture scales with
        its container (``viewBox``).
    panel_height : int
        Height of each measure's panel, user units.
    weeks : (float, float), optional
        x range in weeks (default :func:`x_range` of ``timeline``).
    title : str
        Accessible title (``<title>`` of the picture).

    Returns
    -------
    str
        An ``<svg>`` element (no XML declaration), for inline use in HTML.

    Notes
    -----
    Elements carry data attributes for tests and readers: each point
    ``circle.point`` has ``data-series``, ``data-session``, ``data-week`` and
    ``data-value``; each unbroken line ``polyline.line`` has ``data-series``
    and ``data-sessions``; each failed visit ``g.failed-visit`` has
    ``data-session`` and ``data-week``; each period ``rect.period`` has
    ``data-period``, ``data-start-week`` and ``data-end-week``. The x position
    of week ``w`` is linear between ``data-x0`` (week ``data-week0``) and
    ``data-x1`` (week ``data-week1``) of the root element.
    """
    lo, hi = weeks if weeks is not None else x_range([timeline])
    pad = 0.03 * (hi - lo)
    lo, hi = lo - pad, hi + pad
    lanes = _lanes(timeline.periods)
    n_lanes = (max(lanes) + 1) if lanes else 0
    left, right = 64.0, float(width) - 16.0
    top = 8.0 + 16.0 * n_lanes
    gap = 10.0
    ph = float(panel_height)
    plots_bottom = top + len(SERIES) * ph + (len(SERIES) - 1) * gap
    unplaced = [v.session or "visit" for v in timeline.visits if v.week is None]
    height = plots_bottom + (62.0 if unplaced else 44.0)
    sx = _Scale(lo, hi, left, right)
    out: list[str] = [
        f'<svg xmlns="{_SVG_NS}" class="lq-timeline" viewBox="0 0 {width} {_f(height)}" '
        f'width="{width}" height="{_f(height)}" role="img" font-family="system-ui, sans-serif" '
        f'font-size="12" data-x0="{_f(sx(lo))}" data-week0="{_f(lo)}" data-x1="{_f(sx(hi))}" '
        f'data-week1="{_f(hi)}">',
        f"<title>{escape(title or 'Timeline of the MRI measures per visit')}</title>",
        f'<rect x="0" y="0" width="{width}" height="{_f(height)}" fill="#ffffff"/>',
    ]
    # periods: shading across every panel, name above
    for n, (p, lane) in enumerate(zip(timeline.periods, lanes, strict=True)):
        x0, x1 = sx(p.start_week), sx(p.end_week)
        fill = PERIOD_COLOURS[n % len(PERIOD_COLOURS)]
        out.append(
            f'<g class="period-band"><title>period {escape(p.name)}: weeks '
            f"{_f(p.start_week)} to {_f(p.end_week)}</title>"
            f'<rect class="period" data-period="{escape(p.name)}" '
            f'data-start-week="{_f(p.start_week)}" data-end-week="{_f(p.end_week)}" '
            f'x="{_f(x0)}" y="{_f(top)}" width="{_f(max(x1 - x0, 1.0))}" '
            f'height="{_f(plots_bottom - top)}" fill="{fill}" fill-opacity="0.10"/>'
            f'<line x1="{_f(x0)}" x2="{_f(x1)}" y1="{_f(6 + 16 * lane + 9)}" '
            f'y2="{_f(6 + 16 * lane + 9)}" stroke="{fill}" stroke-width="3"/>'
            f'<text x="{_f(x0 + 2)}" y="{_f(6 + 16 * lane + 6)}" fill="#333" font-size="11">'
            f"{escape(p.name)}</text></g>"
        )
    xticks = _xticks(timeline, lo, hi)
    # week grid and axis
    for w in xticks:
        x = sx(w)
        out.append(
            f'<line class="week-grid" x1="{_f(x)}" x2="{_f(x)}" y1="{_f(top)}" '
            f'y2="{_f(plots_bottom)}" stroke="#d0d0d0" stroke-dasharray="2 3"/>'
        )
        out.append(
            f'<text class="week-tick" x="{_f(x)}" y="{_f(plots_bottom + 16)}" '
            f'text-anchor="middle" fill="#333">{_f(w)}</text>'
        )
    out.append(
        f'<text x="{_f((left + right) / 2)}" y="{_f(plots_bottom + 36)}" text-anchor="middle" '
        f'fill="#333">{escape(timeline.x_label)}</text>'
    )
    if unplaced:
        out.append(
            f'<text class="unplaced" x="{_f(left)}" y="{_f(plots_bottom + 54)}" fill="{_FAILED}">'
            f"Not on the week axis (no date and no [schedule] session_weeks entry): "
            f"{escape(', '.join(unplaced))}</text>"
        )
    for k, spec in enumerate(SERIES):
        y0 = top + k * (ph + gap)
        y1 = y0 + ph
        pts = timeline.series(spec.key)
        vals = [v for _, v in pts if v is not None]
        vmax = _nice_max(max(vals) if vals else 0.0, spec.unit)
        inner_top = y0 + 18.0

        def sy(v: float, inner_top: float = inner_top, y1: float = y1, vmax: float = vmax) -> float:
            return y1 - 4.0 - v / vmax * (y1 - 4.0 - inner_top)

        out.append(f'<g class="panel" data-series="{spec.key}" data-unit="{spec.unit}">')
        out.append(
            f'<rect x="{_f(left)}" y="{_f(y0)}" width="{_f(right - left)}" height="{_f(ph)}" '
            f'fill="none" stroke="#9a9a9a"/>'
        )
        out.append(
            f'<text x="{_f(left + 6)}" y="{_f(y0 + 13)}" fill="#1d1d1f" font-weight="600">'
            f"{escape(spec.title)} ({spec.unit})</text>"
        )
        for v in (0.0, vmax):
            out.append(
                f'<text class="y-tick" x="{_f(left - 6)}" y="{_f(sy(v) + 4)}" text-anchor="end" '
                f'fill="#333">{format_week(v)}</text>'
            )
            out.append(
                f'<line x1="{_f(left)}" x2="{_f(right)}" y1="{_f(sy(v))}" y2="{_f(sy(v))}" '
                f'stroke="#e4e4e4"/>'
            )
        for seg_n, run in enumerate(_segments([(v.week or 0.0, y, v.session) for v, y in pts])):
            sessions = " ".join(tag for _, _, tag in run)
            coords = " ".join(f"{_f(sx(x))},{_f(sy(y))}" for x, y, _ in run)
            out.append(
                f'<polyline class="line" data-series="{spec.key}" data-segment="{seg_n}" '
                f'data-sessions="{escape(sessions)}" points="{coords}" fill="none" '
                f'stroke="{spec.colour}" stroke-width="2" stroke-linejoin="round"/>'
            )
        for v, y in pts:
            if y is None:
                continue
            assert v.week is not None
            tip = f"{v.session or 'visit'}, week {_f(v.week)}: {_fmt(y, spec.unit)}"
            if v.off_schedule:
                tip += " (outside every scheduled visit window)"
            out.append(
                f'<circle class="point" data-series="{spec.key}" data-session="{escape(v.session)}" '
                f'data-week="{_f(v.week)}" data-value="{y:.6g}" cx="{_f(sx(v.week))}" '
                f'cy="{_f(sy(y))}" r="4" fill="{"#ffffff" if v.off_schedule else spec.colour}" '
                f'stroke="{spec.colour}" stroke-width="1.5"><title>{escape(tip)}</title></circle>'
            )
        out.append("</g>")
    for v in timeline.visits:
        if not v.failed or v.week is None:
            continue
        x = sx(v.week)
        out.append(
            f'<g class="failed-visit" data-session="{escape(v.session)}" data-week="{_f(v.week)}">'
            f"<title>{escape(v.session or 'visit')}, week {_f(v.week)}: processing failed: "
            f"{escape(v.reason)}</title>"
            f'<line x1="{_f(x)}" x2="{_f(x)}" y1="{_f(top)}" y2="{_f(plots_bottom)}" '
            f'stroke="{_FAILED}" stroke-width="1.5" stroke-dasharray="5 4"/>'
            f'<rect x="{_f(x - 8)}" y="{_f(plots_bottom - 8)}" width="16" height="16" '
            f'fill="#ffffff" fill-opacity="0"/>'
            f'<path d="{_cross(x, plots_bottom, 5)}" stroke="{_FAILED}" stroke-width="2.5"/>'
            f"</g>"
        )
    out.append("</svg>")
    return "\n".join(out)


def sparkline_svg(
    timeline: Timeline,
    key: str,
    *,
    weeks: tuple[float, float] | None = None,
    width: int = 140,
    height: int = 30,
) -> str:
    """One measure of ``timeline`` as a small inline SVG line (for the overview page).

    Parameters
    ----------
    timeline : Timeline
    key : str
        Measure key of :data:`SERIES`.
    weeks : (float, float), optional
        x range in weeks; pass the same range to every subject's sparklines so
        they line up (default :func:`x_range` of ``timeline``).
    width, height : int
        Size, CSS pixels.

    Returns
    -------
    str
        An ``<svg>`` element: periods shaded, values as a line with points
        (tooltips give session, week and value), failed visits as red crosses
        whose tooltip is the failure reason.

    Raises
    ------
    KeyError
        Unknown ``key``.
    """
    spec = _SERIES_BY_KEY[key]
    lo, hi = weeks if weeks is not None else x_range([timeline])
    pad = 0.04 * (hi - lo)
    sx = _Scale(lo - pad, hi + pad, 3.0, float(width) - 3.0)
    pts = timeline.series(key)
    vals = [v for _, v in pts if v is not None]
    vmax = _nice_max(max(vals) if vals else 0.0, spec.unit)

    def sy(v: float) -> float:
        return float(height) - 4.0 - v / vmax * (float(height) - 8.0)

    out = [
        f'<svg xmlns="{_SVG_NS}" class="sparkline" data-series="{key}" '
        f'viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img">',
        f"<title>{escape(spec.title)} ({spec.unit}) per visit, 0 to {escape(_fmt(vmax, spec.unit))}"
        f"</title>",
    ]
    for n, p in enumerate(timeline.periods):
        x0, x1 = sx(p.start_week), sx(p.end_week)
        out.append(
            f'<rect class="period" data-period="{escape(p.name)}" x="{_f(x0)}" y="0" '
            f'width="{_f(max(x1 - x0, 1.0))}" height="{height}" '
            f'fill="{PERIOD_COLOURS[n % len(PERIOD_COLOURS)]}" fill-opacity="0.12"/>'
        )
    out.append(f'<line x1="0" x2="{width}" y1="{_f(sy(0))}" y2="{_f(sy(0))}" stroke="#d0d0d0"/>')
    for run in _segments([(v.week or 0.0, y, v.session) for v, y in pts]):
        coords = " ".join(f"{_f(sx(x))},{_f(sy(y))}" for x, y, _ in run)
        out.append(
            f'<polyline class="line" points="{coords}" fill="none" stroke="{spec.colour}" '
            f'stroke-width="1.5"/>'
        )
    for v, y in pts:
        if y is None:
            continue
        assert v.week is not None
        out.append(
            f'<circle class="point" data-session="{escape(v.session)}" data-week="{_f(v.week)}" '
            f'cx="{_f(sx(v.week))}" cy="{_f(sy(y))}" r="2.2" fill="{spec.colour}">'
            f"<title>{escape(v.session or 'visit')}, week {_f(v.week)}: "
            f"{escape(_fmt(y, spec.unit))}</title></circle>"
        )
    for v in timeline.visits:
        if v.failed and v.week is not None:
            x = sx(v.week)
            out.append(
                f'<g class="failed-visit" data-session="{escape(v.session)}">'
                f"<title>{escape(v.session or 'visit')}, week {_f(v.week)}: processing failed: "
                f"{escape(v.reason)}</title>"
                f'<path d="{_cross(x, float(height) / 2, 3.5)}" stroke="{_FAILED}" '
                f'stroke-width="2"/></g>'
            )
    out.append("</svg>")
    return "".join(out)
