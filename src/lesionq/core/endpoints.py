"""Trial endpoints by protocol: visit schedule, visit windows, periods, cumulative counts.

Pure Python (no numpy needed, no pandas, no files): a protocol's ``[schedule]``,
``[periods]`` and ``[endpoints]`` sections are parsed into a frozen
:class:`Schedule`; :func:`assign_visits` places a subject's sessions on the
schedule; :func:`period_endpoints` turns per-visit counts into one row per
subject and period.

**Blinded reading.** Treatment arm is never an input to anything here, and no
function accepts it: periods are defined by nominal weeks only (e.g. MESEMS:
weeks 4, 12, 24 on first treatment, weeks 28, 36, 48 after the cross-over),
so the reading centre stays blinded. Un-blinding happens downstream, at the
sponsor's statistician, by joining ``endpoints.tsv`` on ``participant_id``.

Rules
-----
Schedule (checked by :func:`parse_schedule`, each broken rule a
:class:`~lesionq.errors.ConfigError` naming the protocol, section, key and value):

* ``weeks`` are distinct integers in increasing order and hold ``baseline_week``;
  the nominal day of week ``w`` is ``7 * (w - baseline_week)``.
* ``window_days`` (one integer for all visits, or one per week) is the
  half-width of each visit's window in calendar days, **inclusive at both
  edges**: a session ``d`` days after the baseline date is in the window of
  week ``w`` when ``|d - nominal_day(w)| <= window_days(w)``. Negative windows
  are errors, and so are windows that overlap (a session may never fall into
  two windows).
* ``[periods]``: each key a period name, each value the nominal weeks it
  cumulates; every week must be in ``weeks``, none may be the baseline week
  (counts of new and enlarging lesions are relative to an earlier visit), a
  period may not repeat a week. Periods may share weeks (e.g. an "overall"
  period beside the two halves).
* ``[endpoints] counts``: the per-visit counts cumulated per period, a subset of
  :data:`ENDPOINT_COUNTS` (default: all of them).
* ``[endpoints] volumes``: per-visit volumes reported per period, a subset of
  :data:`ENDPOINT_VOLUMES` (default: none).

Visit assignment (:func:`assign_visits`):

* Days are whole calendar days between acquisition dates (times of day are
  ignored).
* A session with an acquisition date (and a baseline date to count from) is
  placed by date: in the window that contains it; a session outside every
  window is **reported, never assigned** (``code="out_of_window"``, with its
  nearest nominal week for the reader), and does not count.
* A session without a date is placed by its label through
  ``[schedule] session_weeks`` (``code="label"``, ``in_window`` unknown);
  without a date and a label there, it stays unassigned (``code="unassigned"``).
* Baseline date (when not given): the date of the session that
  ``session_weeks`` maps to the baseline week; when no session maps there, the
  earliest dated session. When the session mapped to the baseline week has no
  date, nothing can be dated: every session is placed by label.
* Several sessions for one week (rescans): the one used is, in order of
  preference, not failed (``failed_sessions``), placed by date rather than by
  label, closest to the nominal day, earliest (then first session id); the
  others are reported (``code="duplicate"``). Sessions placed by label only that stay tied are all
  left out (``code="ambiguous"``): the week is then missing.

Period endpoints (:func:`period_endpoints`):

* A scheduled week is *observed* when its used session has ``status == "ok"``.
  A week with no session, or whose session failed, is *missing*; failed
  sessions are listed (``failed_sessions``) and their counts, if any, are never
  used.
* Each count is cumulated (summed) over the observed visits of the period where
  it is available. A count that is not available (``None``/NaN: e.g. no
  post-contrast scan for ``gd_count``) is **not** zero: it is left out, and
  ``<count>_n_visits`` says how many visits the sum covers. With no visit
  covered, the sum is ``None`` (n/a), never 0. ``<count>_per_visit`` is the sum
  divided by ``<count>_n_visits``.
* A volume (e.g. ``bh_volume_mm3``, the T1 black holes) is not summed: each
  period reports it at its *start*, the scheduled week just before the
  period's first week (the baseline for a period right after it), and at its
  *end*, the period's last week, and their difference (``change`` = end -
  start). A value at a week that is not observed, or not available there
  (None/NaN: e.g. no T1w at that visit), is None (n/a), and so is a change
  that needs it; an observed visit without the value is listed in
  ``missing_counts`` as ``<volume>@<week>``.
* Nothing is imputed. ``complete`` is true only when every scheduled week of
  the period is observed, every count is available at each of them and every
  volume at the period's start and end weeks.
* New and enlarging counts are relative to the visit before (``previous_session_id``
  in the visit rows, when given). When that is not the subject's previous
  observed scheduled visit (an out-of-window or failed visit in between, a
  missing week), the row's ``notes`` say so: the counts then cover a
  different interval than the schedule's.
* Two used sessions of one subject for one week is an input error.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import date, datetime
from types import MappingProxyType
from typing import Any

from ..errors import ConfigError, InputError

__all__ = [
    "ENDPOINT_COUNTS",
    "ENDPOINT_VOLUMES",
    "ASSIGNMENT_CODES",
    "ScheduledVisit",
    "Period",
    "Schedule",
    "VisitAssignment",
    "parse_schedule",
    "schedule_from_protocol",
    "resolve_baseline_date",
    "assign_visits",
    "endpoint_columns",
    "period_endpoints",
]

log = logging.getLogger(__name__)

#: Per-visit counts (``visits.tsv`` columns) that may be cumulated per period.
ENDPOINT_COUNTS: tuple[str, ...] = (
    "new_t2_count",
    "enlarging_t2_count",
    "gd_count",
    "cua_count",
)

#: Per-visit volumes (``visits.tsv`` columns, mm3) that may be reported per period
#: (at the period's start and end weeks and their change; never summed).
ENDPOINT_VOLUMES: tuple[str, ...] = (
    "t2_volume_mm3",
    "bh_volume_mm3",
)

#: Suffixes of the per-period columns of each volume, in table order.
VOLUME_SUFFIXES: tuple[str, ...] = ("_start_week", "_start", "_end_week", "_end", "_change")

#: ``VisitAssignment.code`` values.
ASSIGNMENT_CODES: tuple[str, ...] = (
    "in_window",  # placed by date, inside the window of `week`
    "label",  # placed by session label ([schedule] session_weeks), no date
    "out_of_window",  # dated, outside every window (not used)
    "unassigned",  # no date to place it and no label mapping (not used)
    "duplicate",  # another session was preferred for the same week (not used)
    "ambiguous",  # tied label-only sessions for one week: none used
)

_SCHEDULE_KEYS = ("baseline_week", "weeks", "window_days", "session_weeks")
_ENDPOINT_KEYS = ("counts", "volumes")


# --------------------------------------------------------------------------- the model


@dataclass(frozen=True)
class ScheduledVisit:
    """One scheduled MRI visit.

    Attributes
    ----------
    week : int
        Nominal week.
    nominal_day : int
        ``7 * (week - baseline_week)``: days after the baseline date.
    window_days : int
        Half-width of the window (calendar days, inclusive at both edges).
    """

    week: int
    nominal_day: int
    window_days: int

    @property
    def first_day(self) -> int:
        """First day of the window (inclusive)."""
        return self.nominal_day - self.window_days

    @property
    def last_day(self) -> int:
        """Last day of the window (inclusive)."""
        return self.nominal_day + self.window_days

    def contains(self, day: int) -> bool:
        """Whether ``day`` (days after baseline) lies in the window, edges included."""
        return self.first_day <= day <= self.last_day


@dataclass(frozen=True)
class Period:
    """A named set of scheduled weeks whose counts are cumulated."""

    name: str
    weeks: tuple[int, ...]


@dataclass(frozen=True)
class Schedule:
    """A trial's visit schedule, periods and endpoint counts (see :func:`parse_schedule`).

    Attributes
    ----------
    baseline_week : int
    visits : tuple of ScheduledVisit
        In increasing week order.
    periods : tuple of Period
        In protocol order.
    counts : tuple of str
        Counts cumulated per period (a subset of :data:`ENDPOINT_COUNTS`).
    session_weeks : Mapping[str, int]
        Session label -> nominal week, used for sessions without a date.
    source : str
        Where the schedule came from (for messages).
    volumes : tuple of str
        Volumes reported per period at its start and end weeks (a subset of
        :data:`ENDPOINT_VOLUMES`; empty by default).
    """

    baseline_week: int
    visits: tuple[ScheduledVisit, ...]
    periods: tuple[Period, ...]
    counts: tuple[str, ...]
    session_weeks: Mapping[str, int] = field(default_factory=lambda: MappingProxyType({}))
    source: str = "protocol"
    volumes: tuple[str, ...] = ()

    @property
    def weeks(self) -> tuple[int, ...]:
        """Scheduled weeks, increasing."""
        return tuple(v.week for v in self.visits)

    def visit(self, week: int) -> ScheduledVisit:
        """The scheduled visit of ``week`` (KeyError when not scheduled)."""
        for v in self.visits:
            if v.week == week:
                return v
        raise KeyError(f"week {week} is not in the schedule {self.weeks}")

    def as_dict(self) -> dict[str, Any]:
        """JSON-serialisable description (for sidecars)."""
        return {
            "baseline_week": self.baseline_week,
            "visits": [asdict(v) for v in self.visits],
            "periods": {p.name: list(p.weeks) for p in self.periods},
            "counts": list(self.counts),
            "volumes": list(self.volumes),
            "session_weeks": dict(self.session_weeks),
        }

    def start_week(self, period: Period) -> int | None:
        """The scheduled week just before ``period`` (its volumes' start), None when none.

        Examples
        --------
        >>> s = parse_schedule({"baseline_week": 0, "weeks": [0, 4, 12], "window_days": 7},
        ...                    {"a": [4], "b": [12]})
        >>> s.start_week(s.periods[0]), s.start_week(s.periods[1])
        (0, 4)
        """
        earlier = [w for w in self.weeks if w < min(period.weeks)]
        return earlier[-1] if earlier else None


@dataclass(frozen=True)
class VisitAssignment:
    """Where one session sits on the schedule (see :func:`assign_visits`).

    Attributes
    ----------
    session_id : str or None
    week : int or None
        Scheduled week the session belongs to (by window or by label); None
        when outside every window or unassignable.
    nearest_week : int or None
        Nominal week nearest its date (None without a date); set also for
        out-of-window sessions, to help the reader.
    days_from_baseline : int or None
        Calendar days after the baseline date (None without dates).
    in_window : bool or None
        Whether the date lies in the window of ``week`` (None: not checked,
        placed by label).
    method : {"date", "label", "none"}
    used : bool
        Whether this session is the one counted for ``week``.
    code : str
        One of :data:`ASSIGNMENT_CODES`.
    reason : str
        Human explanation (for sidecars and review).
    """

    session_id: str | None
    week: int | None
    nearest_week: int | None
    days_from_baseline: int | None
    in_window: bool | None
    method: str
    used: bool
    code: str
    reason: str

    def as_dict(self) -> dict[str, Any]:
        """Plain dict of the fields."""
        return asdict(self)


# --------------------------------------------------------------------------- parsing


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def parse_schedule(
    schedule: Mapping[str, Any],
    periods: Mapping[str, Any],
    endpoints: Mapping[str, Any] | None = None,
    *,
    source: str = "protocol",
) -> Schedule:
    """Build a :class:`Schedule` from the protocol's sections (rules in the module docstring).

    Parameters
    ----------
    schedule : mapping
        ``[schedule]``: ``baseline_week`` (int), ``weeks`` (list of int),
        ``window_days`` (int >= 0, or a list of them, one per week) and,
        optionally, ``session_weeks`` (table: session label -> week).
    periods : mapping
        ``[periods]``: period name -> list of weeks.
    endpoints : mapping, optional
        ``[endpoints]``: ``counts`` (list of names of :data:`ENDPOINT_COUNTS`;
        default all) and ``volumes`` (list of names of :data:`ENDPOINT_VOLUMES`;
        default none).
    source : str
        Protocol file, named in error messages.

    Raises
    ------
    ConfigError
        Unknown key, missing key, wrong type, negative or overlapping windows,
        unknown or baseline week in a period, unknown count.

    Examples
    --------
    >>> s = parse_schedule({"baseline_week": 0, "weeks": [0, 4, 12], "window_days": 7},
    ...                    {"early": [4, 12]})
    >>> s.weeks, s.visit(12).nominal_day, s.periods[0]
    ((0, 4, 12), 84, Period(name='early', weeks=(4, 12)))
    >>> parse_schedule({"baseline_week": 0, "weeks": [0, 1], "window_days": 4}, {})
    Traceback (most recent call last):
    ...
    lesionq.errors.ConfigError: protocol: [schedule] window_days: the windows of week 0 (days -4..4) and week 1 (days 3..11) overlap
    """
    where = f"{source}: [schedule]"
    unknown = sorted(set(schedule) - set(_SCHEDULE_KEYS))
    if unknown:
        raise ConfigError(f"{where} unknown key(s) {unknown} (known: {list(_SCHEDULE_KEYS)})")
    for key in ("baseline_week", "weeks", "window_days"):
        if key not in schedule:
            raise ConfigError(f"{where} {key} is required")
    base = schedule["baseline_week"]
    if not _is_int(base):
        raise ConfigError(f"{where} baseline_week must be an integer, got {base!r}")
    weeks = schedule["weeks"]
    if isinstance(weeks, str | bytes) or not isinstance(weeks, Sequence) or not weeks:
        raise ConfigError(f"{where} weeks must be a non-empty list of integers, got {weeks!r}")
    if not all(_is_int(w) for w in weeks):
        raise ConfigError(f"{where} weeks must hold integers only, got {list(weeks)!r}")
    weeks = [int(w) for w in weeks]
    if any(b <= a for a, b in zip(weeks, weeks[1:], strict=False)):
        raise ConfigError(
            f"{where} weeks must be distinct and increasing, got {weeks} (a week listed twice "
            "would make two visits share a window)"
        )
    if base not in weeks:
        raise ConfigError(f"{where} baseline_week {base} is not one of weeks {weeks}")
    win = schedule["window_days"]
    if _is_int(win):
        wins = [int(win)] * len(weeks)
    elif isinstance(win, Sequence) and not isinstance(win, str | bytes):
        if len(win) != len(weeks) or not all(_is_int(w) for w in win):
            raise ConfigError(
                f"{where} window_days must be one integer or one integer per week "
                f"({len(weeks)}), got {list(win)!r}"
            )
        wins = [int(w) for w in win]
    else:
        raise ConfigError(
            f"{where} window_days must be an integer number of days (or one per week), got {win!r}"
        )
    for w, d in zip(weeks, wins, strict=True):
        if d < 0:
            raise ConfigError(f"{where} window_days: the window of week {w} is negative ({d})")
    visits = tuple(
        ScheduledVisit(week=w, nominal_day=7 * (w - base), window_days=d)
        for w, d in zip(weeks, wins, strict=True)
    )
    for a, b in zip(visits, visits[1:], strict=False):
        if a.last_day >= b.first_day:
            raise ConfigError(
                f"{where} window_days: the windows of week {a.week} (days {a.first_day}..{a.last_day})"
                f" and week {b.week} (days {b.first_day}..{b.last_day}) overlap"
            )
    sw = schedule.get("session_weeks", {})
    if not isinstance(sw, Mapping):
        raise ConfigError(f"{where} session_weeks must be a table (label = week), got {sw!r}")
    for label, w in sw.items():
        if not _is_int(w) or w not in weeks:
            raise ConfigError(
                f"{where} session_weeks: {label!r} = {w!r} is not a scheduled week {weeks}"
            )
    session_weeks = MappingProxyType({str(k): int(v) for k, v in sw.items()})

    pwhere = f"{source}: [periods]"
    plist: list[Period] = []
    for name, pw in periods.items():
        if not isinstance(name, str) or not name.isidentifier():
            raise ConfigError(f"{pwhere} period name {name!r} must be an identifier")
        if isinstance(pw, str | bytes) or not isinstance(pw, Sequence) or not pw:
            raise ConfigError(f"{pwhere} {name} must be a non-empty list of weeks, got {pw!r}")
        for w in pw:
            if not _is_int(w) or w not in weeks:
                raise ConfigError(
                    f"{pwhere} {name}: week {w!r} is not a scheduled week (weeks = {weeks})"
                )
            if w == base:
                raise ConfigError(
                    f"{pwhere} {name}: the baseline week {base} cannot be in a period (new and "
                    "enlarging lesions are counted relative to an earlier visit)"
                )
        if len(set(pw)) != len(pw):
            raise ConfigError(f"{pwhere} {name} lists a week twice: {list(pw)}")
        plist.append(Period(name=name, weeks=tuple(sorted(int(w) for w in pw))))

    ewhere = f"{source}: [endpoints]"
    ep = {} if endpoints is None else dict(endpoints)
    unknown = sorted(set(ep) - set(_ENDPOINT_KEYS))
    if unknown:
        raise ConfigError(f"{ewhere} unknown key(s) {unknown} (known: {list(_ENDPOINT_KEYS)})")
    counts = ep.get("counts", ENDPOINT_COUNTS)
    if isinstance(counts, str | bytes) or not isinstance(counts, Sequence) or not counts:
        raise ConfigError(f"{ewhere} counts must be a non-empty list of names, got {counts!r}")
    for c in counts:
        if c not in ENDPOINT_COUNTS:
            raise ConfigError(f"{ewhere} counts: unknown count {c!r} (known: {ENDPOINT_COUNTS})")
    if len(set(counts)) != len(counts):
        raise ConfigError(f"{ewhere} counts lists a name twice: {list(counts)}")
    volumes = ep.get("volumes", ())
    if isinstance(volumes, str | bytes) or not isinstance(volumes, Sequence):
        raise ConfigError(f"{ewhere} volumes must be a list of names, got {volumes!r}")
    for v in volumes:
        if v not in ENDPOINT_VOLUMES:
            raise ConfigError(f"{ewhere} volumes: unknown volume {v!r} (known: {ENDPOINT_VOLUMES})")
    if len(set(volumes)) != len(volumes):
        raise ConfigError(f"{ewhere} volumes lists a name twice: {list(volumes)}")
    return Schedule(
        baseline_week=int(base),
        visits=visits,
        periods=tuple(plist),
        counts=tuple(counts),
        session_weeks=session_weeks,
        source=source,
        volumes=tuple(str(v) for v in volumes),
    )


def schedule_from_protocol(sections: Mapping[str, Any], *, source: str = "protocol") -> Schedule:
    """:func:`parse_schedule` over a protocol's sections (e.g. ``Settings.sections``).

    Raises
    ------
    ConfigError
        The protocol has no ``[schedule]`` section (``[periods]`` and
        ``[endpoints]`` may be absent: no period rows, all counts).
    """
    if "schedule" not in sections:
        raise ConfigError(
            f"{source}: no [schedule] section: endpoints need the trial's visit schedule "
            "(see pipelines/mesems_v1.toml)"
        )
    return parse_schedule(
        sections["schedule"],
        sections.get("periods", {}),
        sections.get("endpoints"),
        source=source,
    )


# --------------------------------------------------------------------------- assignment


def _as_date(value: date | datetime | None, session_id: Any) -> date | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    raise InputError(
        f"session {session_id!r}: acquisition time must be a datetime, a date or None, "
        f"got {value!r}"
    )


def _norm_sessions(
    sessions: Iterable[Sequence[Any]],
) -> list[tuple[str | None, date | None, str | None]]:
    out = []
    seen: set[str] = set()
    for s in sessions:
        if len(s) != 3:
            raise InputError(f"a session must be (session_id, acq_datetime, label), got {s!r}")
        sid, when, label = s
        if sid is not None:
            if sid in seen:
                raise InputError(f"session {sid!r} is listed twice")
            seen.add(sid)
        out.append((sid, _as_date(when, sid), label))
    return out


def _label_week(schedule: Schedule, sid: str | None, label: str | None) -> int | None:
    key = label if label is not None else sid
    return None if key is None else schedule.session_weeks.get(key)


def resolve_baseline_date(
    sessions: Iterable[Sequence[Any]], schedule: Schedule
) -> tuple[date | None, str]:
    """The baseline date of one subject when none is given, and the rule that chose it.

    Parameters
    ----------
    sessions : iterable of (session_id, acq_datetime or None, label)
        As for :func:`assign_visits`.
    schedule : Schedule

    Returns
    -------
    (date or None, str)
        The date (None: nothing can be dated) and a sentence saying why.

    Examples
    --------
    >>> s = parse_schedule({"baseline_week": 0, "weeks": [0, 4], "window_days": 7}, {})
    >>> resolve_baseline_date([("ses-2", date(2020, 2, 1), None),
    ...                        ("ses-1", date(2020, 1, 3), None)], s)
    (datetime.date(2020, 1, 3), 'earliest dated session ses-1')
    """
    ss = _norm_sessions(sessions)
    mapped = [
        (sid, d) for sid, d, lab in ss if _label_week(schedule, sid, lab) == schedule.baseline_week
    ]
    if mapped:
        dated = sorted((d, sid or "") for sid, d in mapped if d is not None)
        if dated:
            return dated[0][0], (
                f"date of {dated[0][1]}, mapped to baseline week {schedule.baseline_week} "
                "by [schedule] session_weeks"
            )
        return None, (
            f"{mapped[0][0]} is mapped to baseline week {schedule.baseline_week} but has no "
            "acquisition date: sessions are placed by label"
        )
    dated = sorted((d, sid or "") for sid, d, _ in ss if d is not None)
    if dated:
        return dated[0][0], f"earliest dated session {dated[0][1]}"
    return None, "no session has an acquisition date: sessions are placed by label"


def assign_visits(
    sessions: Iterable[Sequence[Any]],
    schedule: Schedule,
    baseline_date: date | datetime | None = None,
    *,
    failed_sessions: Collection[str] = (),
) -> list[VisitAssignment]:
    """Place one subject's sessions on the schedule (rules in the module docstring).

    Parameters
    ----------
    sessions : iterable of (session_id, acq_datetime or None, label)
        ``session_id`` (str, e.g. ``"ses-02"``, unique), its acquisition time
        (``datetime`` or ``date``; None when unknown) and the label looked up in
        ``[schedule] session_weeks`` when it has no date (None: the session id
        is looked up).
    schedule : Schedule
    baseline_date : date or datetime, optional
        Day 0 of the subject. Default: :func:`resolve_baseline_date`.
    failed_sessions : collection of str
        Sessions whose processing failed: for a week with several sessions, one
        that did not fail is preferred (a rescan after a failed scan).

    Returns
    -------
    list of VisitAssignment
        One per session, in input order.

    Examples
    --------
    >>> s = parse_schedule({"baseline_week": 0, "weeks": [0, 4, 12], "window_days": 7}, {})
    >>> a = assign_visits([("ses-01", date(2020, 1, 1), None),
    ...                    ("ses-02", date(2020, 2, 5), None),
    ...                    ("ses-03", date(2020, 2, 20), None)], s)
    >>> [(x.session_id, x.week, x.days_from_baseline, x.in_window, x.code) for x in a]
    ... # doctest: +NORMALIZE_WHITESPACE
    [('ses-01', 0, 0, True, 'in_window'), ('ses-02', 4, 35, True, 'in_window'),
     ('ses-03', None, 50, False, 'out_of_window')]
    """
    ss = _norm_sessions(sessions)
    failed = set(failed_sessions)
    if baseline_date is None:
        anchor, rule = resolve_baseline_date(ss, schedule)
    else:
        anchor, rule = _as_date(baseline_date, "baseline_date"), "given baseline date"
    log.debug("assign_visits: baseline %s (%s)", anchor, rule)

    draft: list[dict[str, Any]] = []
    for sid, d, label in ss:
        lw = _label_week(schedule, sid, label)
        rec: dict[str, Any] = dict(
            session_id=sid,
            week=None,
            nearest_week=None,
            days_from_baseline=None,
            in_window=None,
            method="none",
            used=False,
            code="unassigned",
            reason="",
            _date=d,
        )
        if d is not None and anchor is not None:
            day = (d - anchor).days
            rec.update(days_from_baseline=day, method="date")
            near = min(schedule.visits, key=lambda v: (abs(day - v.nominal_day), v.week))
            rec["nearest_week"] = near.week
            inside = [v for v in schedule.visits if v.contains(day)]
            if inside:
                v = inside[0]
                rec.update(week=v.week, in_window=True, used=True, code="in_window")
                rec["reason"] = (
                    f"day {day} in the window of week {v.week} "
                    f"(day {v.nominal_day} +- {v.window_days}, edges included)"
                )
                if lw is not None and lw != v.week:
                    rec["reason"] += f"; note: session_weeks maps it to week {lw}"
            else:
                rec.update(in_window=False, code="out_of_window")
                rec["reason"] = (
                    f"day {day} is outside every visit window; nearest: week {near.week} "
                    f"(day {near.nominal_day} +- {near.window_days}); not used"
                )
        elif lw is not None:
            rec.update(week=lw, method="label", used=True, code="label")
            why = "no acquisition date" if d is None else f"no baseline date ({rule})"
            rec["reason"] = f"{why}; placed by [schedule] session_weeks: week {lw}"
        else:
            key = label if label is not None else sid
            why = "no acquisition date" if d is None else f"no baseline date ({rule})"
            rec["reason"] = f"{why} and label {key!r} is not in [schedule] session_weeks; not used"
        draft.append(rec)

    by_week: dict[int, list[dict[str, Any]]] = {}
    for rec in draft:
        if rec["used"]:
            by_week.setdefault(rec["week"], []).append(rec)
    for week, cands in by_week.items():
        if len(cands) < 2:
            continue
        nominal = schedule.visit(week).nominal_day

        def rank(r: dict[str, Any], nominal: int = nominal) -> tuple[Any, ...]:
            dated = r["method"] == "date"
            return (
                r["session_id"] in failed,
                not dated,
                abs(r["days_from_baseline"] - nominal) if dated else 0,
                r["_date"] or date.max,
            )

        cands.sort(key=lambda r: (rank(r), r["session_id"] or ""))
        best = cands[0]
        if best["method"] == "label" and rank(cands[1]) == rank(best):
            tied = [r for r in cands if rank(r) == rank(best)]
            names = [r["session_id"] for r in tied]
            for r in cands:
                is_tied = any(r is t for t in tied)
                r.update(used=False, code="ambiguous" if is_tied else "duplicate")
                r["reason"] += (
                    f"; sessions {names} are all placed in week {week} by label only: none used"
                )
            continue
        for r in cands[1:]:
            r.update(used=False, code="duplicate")
            r["reason"] += (
                f"; week {week} also matched by {best['session_id']}, which is used (preferred: "
                "not failed, then dated, then closest to the nominal day, then earliest)"
            )
    return [VisitAssignment(**{k: v for k, v in r.items() if k != "_date"}) for r in draft]


# --------------------------------------------------------------------------- endpoints


def endpoint_columns(schedule: Schedule) -> tuple[str, ...]:
    """Keys of :func:`period_endpoints` rows, in table order.

    Examples
    --------
    >>> s = parse_schedule({"baseline_week": 0, "weeks": [0, 4], "window_days": 7},
    ...                    {"p": [4]}, {"counts": ["gd_count"]})
    >>> endpoint_columns(s)[-6:]
    ('gd_count_cumulative', 'gd_count_n_visits', 'gd_count_per_visit', 'complete', 'missing_counts', 'notes')
    """
    cols = [
        "participant_id",
        "period",
        "period_weeks",
        "n_visits_expected",
        "n_visits_observed",
        "missing_weeks",
        "sessions",
        "failed_sessions",
        "excluded_sessions",
    ]
    for c in schedule.counts:
        cols += [f"{c}_cumulative", f"{c}_n_visits", f"{c}_per_visit"]
    for v in schedule.volumes:
        cols += [f"{v}{suffix}" for suffix in VOLUME_SUFFIXES]
    cols += ["complete", "missing_counts", "notes"]
    return tuple(cols)


def _row_number(row: Mapping[str, Any], name: str, what: str) -> float | None:
    """``row[name]`` as a float (None when absent or NaN); not a number: InputError."""
    v = row.get(name)
    if v is None:
        return None
    try:
        f = float(v)
    except (TypeError, ValueError) as exc:
        raise InputError(
            f"{row.get('participant_id')} {row.get('session_id')}: {name} must be {what}, got {v!r}"
        ) from exc
    return None if math.isnan(f) else f


def _count_value(row: Mapping[str, Any], name: str) -> int | None:
    f = _row_number(row, name, "a count")
    if f is None:
        return None
    if f < 0 or f != int(f):
        raise InputError(
            f"{row.get('participant_id')} {row.get('session_id')}: {name} must be a "
            f"non-negative integer, got {row.get(name)!r}"
        )
    return int(f)


def _volume_value(row: Mapping[str, Any], name: str) -> float | None:
    f = _row_number(row, name, "a volume (mm3)")
    if f is None:
        return None
    if f < 0 or math.isinf(f):
        raise InputError(
            f"{row.get('participant_id')} {row.get('session_id')}: {name} must be a finite "
            f"volume >= 0, got {row.get(name)!r}"
        )
    return f


def _join(items: Iterable[Any]) -> str:
    return ",".join(str(i) for i in items)


def period_endpoints(
    visit_rows: Iterable[Mapping[str, Any]], schedule: Schedule
) -> list[dict[str, Any]]:
    """Cumulative counts per subject and period (rules in the module docstring).

    Parameters
    ----------
    visit_rows : iterable of mapping
        One per session, with keys ``participant_id``, ``session_id``,
        ``status`` (``"ok"`` when the visit was processed), ``week`` (the
        scheduled week, None when not assigned) and, optionally, ``used``
        (default: ``week is not None``), ``nearest_week``, ``code``, the
        counts named in ``schedule.counts`` (int; None/NaN or absent = not
        available), the volumes named in ``schedule.volumes`` (mm3, float;
        None/NaN or absent = not available) and ``previous_session_id`` (the session the new/enlarging
        counts are relative to). :func:`assign_visits` gives ``week``,
        ``used``, ``nearest_week`` and ``code``. There is no treatment-arm key:
        the reading is blinded.
    schedule : Schedule

    Returns
    -------
    list of dict
        One per subject (sorted by ``participant_id``) and period (protocol
        order), keys :func:`endpoint_columns`. List-valued fields are
        comma-separated strings (``""`` when empty); ``<count>_cumulative`` and
        ``<count>_per_visit`` are None (n/a) when no visit has the count.

    Raises
    ------
    InputError
        Two used sessions of one subject for one week, a used session for a
        week that is not scheduled, a row without ``participant_id``, or a
        count that is not a non-negative integer.

    Examples
    --------
    >>> s = parse_schedule({"baseline_week": 0, "weeks": [0, 4, 12], "window_days": 7},
    ...                    {"early": [4, 12]}, {"counts": ["gd_count"]})
    >>> rows = [dict(participant_id="sub-1", session_id="ses-2", status="ok", week=4, gd_count=2),
    ...         dict(participant_id="sub-1", session_id="ses-3", status="failed", week=12)]
    >>> r = period_endpoints(rows, s)[0]
    >>> r["gd_count_cumulative"], r["n_visits_observed"], r["missing_weeks"], r["complete"]
    (2, 1, '12', False)
    """
    by_subject: dict[str, list[Mapping[str, Any]]] = {}
    for vr in visit_rows:
        pid = vr.get("participant_id")
        if pid is None or (isinstance(pid, float) and math.isnan(pid)):
            raise InputError(f"visit row without participant_id: {dict(vr)!r}")
        by_subject.setdefault(str(pid), []).append(vr)

    weeks = set(schedule.weeks)
    out: list[dict[str, Any]] = []
    for pid in sorted(by_subject):
        rows = by_subject[pid]
        used: dict[int, Mapping[str, Any]] = {}
        for r in rows:
            w = r.get("week")
            if w is None or (isinstance(w, float) and math.isnan(w)):
                continue
            if not bool(r.get("used", True)):
                continue
            w = int(w)
            if w not in weeks:
                raise InputError(
                    f"{pid} {r.get('session_id')}: week {w} is not scheduled {schedule.weeks}"
                )
            if w in used:
                raise InputError(
                    f"{pid}: sessions {used[w].get('session_id')} and {r.get('session_id')} are "
                    f"both used for week {w}; keep one (assign_visits resolves duplicates)"
                )
            used[w] = r
        ok_weeks = sorted(w for w, r in used.items() if r.get("status") == "ok")

        def excluded_for(period_weeks: tuple[int, ...], rows=rows) -> list[str]:
            ex = []
            for r in rows:
                w = r.get("week")
                has_week = w is not None and not (isinstance(w, float) and math.isnan(w))
                if has_week and bool(r.get("used", True)):
                    continue
                near = r.get("week") if has_week else r.get("nearest_week")
                near_ok = near is not None and not (isinstance(near, float) and math.isnan(near))
                if not near_ok or int(near) in period_weeks:
                    code = r.get("code")
                    ex.append(f"{r.get('session_id')}" + (f" ({code})" if code else ""))
            return ex

        for period in schedule.periods:
            observed: list[tuple[int, Mapping[str, Any]]] = []
            missing: list[int] = []
            failed: list[str] = []
            notes: list[str] = []
            for w in period.weeks:
                uv = used.get(w)
                if uv is None:
                    missing.append(w)
                    continue
                if uv.get("status") != "ok":
                    missing.append(w)
                    failed.append(str(uv.get("session_id")))
                    continue
                observed.append((w, uv))
                prev = uv.get("previous_session_id")
                if prev is not None and not (isinstance(prev, float) and math.isnan(prev)):
                    earlier = [x for x in ok_weeks if x < w]
                    expect = used[earlier[-1]].get("session_id") if earlier else None
                    if prev != expect:
                        notes.append(
                            f"{uv.get('session_id')} (week {w}): new/enlarging counted since "
                            f"{prev}, not since the previous observed scheduled visit "
                            f"{expect if expect is not None else '(none)'}"
                        )
            row: dict[str, Any] = {
                "participant_id": pid,
                "period": period.name,
                "period_weeks": _join(period.weeks),
                "n_visits_expected": len(period.weeks),
                "n_visits_observed": len(observed),
                "missing_weeks": _join(missing),
                "sessions": _join(r.get("session_id") for _, r in observed),
                "failed_sessions": _join(failed),
                "excluded_sessions": _join(excluded_for(period.weeks)),
            }
            complete = not missing
            missing_counts: list[str] = []
            for c in schedule.counts:
                vals = []
                for w, r in observed:
                    v = _count_value(r, c)
                    if v is None:
                        missing_counts.append(f"{c}@{w}")
                    else:
                        vals.append(v)
                n = len(vals)
                total = sum(vals) if n else None
                row[f"{c}_cumulative"] = total
                row[f"{c}_n_visits"] = n
                row[f"{c}_per_visit"] = None if total is None else total / n
                if n < len(period.weeks):
                    complete = False
            start_week = schedule.start_week(period)
            end_week = period.weeks[-1]
            for vname in schedule.volumes:
                ends: list[float | None] = []
                for w in (start_week, end_week):
                    uv = None if w is None else used.get(w)
                    val = None
                    if uv is not None and uv.get("status") == "ok":
                        val = _volume_value(uv, vname)
                        if val is None:  # observed, but no value (e.g. no T1w)
                            missing_counts.append(f"{vname}@{w}")
                    if val is None:
                        complete = False
                    ends.append(val)
                row[f"{vname}_start_week"] = start_week
                row[f"{vname}_start"] = ends[0]
                row[f"{vname}_end_week"] = end_week
                row[f"{vname}_end"] = ends[1]
                row[f"{vname}_change"] = (
                    None if ends[0] is None or ends[1] is None else round(ends[1] - ends[0], 3)
                )
            row["complete"] = complete
            row["missing_counts"] = _join(missing_counts)
            row["notes"] = "; ".join(notes)
            out.append(row)
    return out
