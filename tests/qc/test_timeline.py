"""Timeline SVG of lesionq.qc.timeline: points at the schedule's weeks, gaps, periods."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from datetime import date, timedelta

import pandas as pd
import pytest

from lesionq.core.endpoints import parse_schedule
from lesionq.qc.timeline import (
    SERIES,
    build_timeline,
    schedule_periods,
    sparkline_svg,
    timeline_svg,
)

NS = {"s": "http://www.w3.org/2000/svg"}
WEEKS = [0, 4, 12, 24, 28, 36, 48]
SCHEDULE = parse_schedule(
    {"baseline_week": 0, "weeks": WEEKS, "window_days": 7},
    {"first_treatment": [4, 12, 24], "after_crossover": [28, 36, 48]},
)
BASE = date(2021, 3, 1)


def _visits(
    failed: dict[int, str] | None = None, *, shift_days: dict[int, int] | None = None
) -> pd.DataFrame:
    """Seven scheduled visits of one subject (acq_time a few days off the nominal day)."""
    failed = failed or {}
    shift_days = shift_days or {}
    rows = []
    for n, week in enumerate(WEEKS):
        day = 7 * week + shift_days.get(n, (n % 3) - 1 if n else 0)
        row = {
            "participant_id": "sub-t1",
            "session_id": f"ses-{n + 1:02d}",
            "acq_time": (BASE + timedelta(days=day)).isoformat(),
            "status": "failed" if n in failed else "ok",
            "reason": failed.get(n, pd.NA),
        }
        if n not in failed:
            row |= {
                "t2_volume_mm3": 2000.0 + 250.0 * n,
                "gd_count": n % 3,
                "new_t2_count": pd.NA if n == 0 else 1,
                "enlarging_t2_count": pd.NA if n == 0 else n % 2,
                "cua_count": pd.NA if n == 0 else 2,
            }
        rows.append(row)
    df = pd.DataFrame(rows)
    for c in ("gd_count", "new_t2_count", "enlarging_t2_count", "cua_count"):
        df[c] = df[c].astype("Int64")
    return df


def _svg(text: str) -> ET.Element:
    return ET.fromstring(text)


def _x_of(root: ET.Element):
    x0, w0 = float(root.get("data-x0")), float(root.get("data-week0"))
    x1, w1 = float(root.get("data-x1")), float(root.get("data-week1"))
    return lambda week: x0 + (week - w0) / (w1 - w0) * (x1 - x0)


def test_one_point_per_visit_at_the_schedule_week() -> None:
    t = build_timeline(_visits(), SCHEDULE)
    assert [v.week for v in t.visits] == [float(w) for w in WEEKS]
    assert t.x_label == "week of the study schedule"
    root = _svg(timeline_svg(t))
    x_of = _x_of(root)
    for spec in SERIES:
        points = root.findall(f".//s:circle[@data-series='{spec.key}']", NS)
        expected = [v for v, y in t.series(spec.key) if y is not None]
        assert [p.get("data-session") for p in points] == [v.session for v in expected]
        for p, v in zip(points, expected, strict=True):
            assert float(p.get("data-week")) == v.week
            assert float(p.get("cx")) == pytest.approx(x_of(v.week), abs=0.01)
    # T2 volume in mL; baseline new/enlarging and CUA are n/a (not drawn, never 0)
    vols = root.findall(".//s:circle[@data-series='t2_volume']", NS)
    assert [float(p.get("data-value")) for p in vols] == [2.0 + 0.25 * n for n in range(7)]
    assert len(root.findall(".//s:circle[@data-series='new_enlarging']", NS)) == 6
    new_enl = root.findall(".//s:circle[@data-series='new_enlarging']", NS)
    assert [float(p.get("data-value")) for p in new_enl] == [1 + n % 2 for n in range(1, 7)]
    # points rise with the value inside a panel (SVG y grows downwards)
    ys = [float(p.get("cy")) for p in vols]
    assert ys == sorted(ys, reverse=True)


def test_failed_visits_are_gaps_with_their_reason() -> None:
    t = build_timeline(_visits({2: "preprocess: FLAIR <missing> & more"}), SCHEDULE)
    root = _svg(timeline_svg(t))
    failed = root.findall(".//s:g[@class='failed-visit']", NS)
    assert [(g.get("data-session"), g.get("data-week")) for g in failed] == [("ses-03", "12")]
    assert "preprocess: FLAIR <missing> & more" in failed[0].find("s:title", NS).text
    for spec in SERIES:
        assert not root.findall(
            f".//s:circle[@data-series='{spec.key}'][@data-session='ses-03']", NS
        )
    lines = root.findall(".//s:polyline[@data-series='t2_volume']", NS)
    assert [line.get("data-sessions").split() for line in lines] == [
        ["ses-01", "ses-02"],
        ["ses-04", "ses-05", "ses-06", "ses-07"],
    ]
    # n/a at baseline starts the new/enlarging line at ses-02 (nothing imputed)
    lines = root.findall(".//s:polyline[@data-series='new_enlarging']", NS)
    assert lines[0].get("data-sessions").split() == ["ses-02"]


def test_periods_are_shaded_from_the_week_before() -> None:
    t = build_timeline(_visits(), SCHEDULE)
    assert [(p.name, p.start_week, p.end_week) for p in t.periods] == [
        ("first_treatment", 0.0, 24.0),
        ("after_crossover", 24.0, 48.0),
    ]
    assert t.periods == schedule_periods(SCHEDULE)
    root = _svg(timeline_svg(t))
    x_of = _x_of(root)
    rects = root.findall(".//s:rect[@class='period']", NS)
    assert [r.get("data-period") for r in rects] == ["first_treatment", "after_crossover"]
    for r, p in zip(rects, t.periods, strict=True):
        assert float(r.get("x")) == pytest.approx(x_of(p.start_week), abs=0.01)
        assert float(r.get("x")) + float(r.get("width")) == pytest.approx(
            x_of(p.end_week), abs=0.02
        )
    ticks = [e.text for e in root.findall(".//s:text[@class='week-tick']", NS)]
    assert ticks == [str(w) for w in WEEKS]


def test_off_schedule_visit_sits_at_its_actual_week() -> None:
    t = build_timeline(_visits(shift_days={3: 20}), SCHEDULE)  # week 24 + 20 days
    v = next(v for v in t.visits if v.session == "ses-04")
    assert v.off_schedule and v.week == pytest.approx(24 + 20 / 7)
    assert "outside every scheduled visit window" in v.reason


def test_without_schedule_weeks_count_from_the_first_visit() -> None:
    t = build_timeline(_visits(shift_days={n: 0 for n in range(7)}))
    assert t.periods == ()
    assert [v.week for v in t.visits] == [float(w) for w in WEEKS]
    assert t.x_label == "weeks since the first visit"
    undated = build_timeline(_visits().drop(columns=["acq_time"]))
    assert [v.week for v in undated.visits] == [float(n) for n in range(1, 8)]
    assert undated.x_label == "visit number"
    # a schedule that places no session (no dates, no session_weeks): visit numbers too
    assert build_timeline(_visits().drop(columns=["acq_time"]), SCHEDULE) == undated


def test_unplaced_visit_is_named_under_the_axis() -> None:
    visits = _visits()
    visits.loc[6, "acq_time"] = pd.NA  # undated, and no session_weeks in SCHEDULE
    t = build_timeline(visits, SCHEDULE)
    assert t.visits[-1].session == "ses-07" and t.visits[-1].week is None
    root = _svg(timeline_svg(t))
    assert not root.findall(".//s:circle[@data-session='ses-07']", NS)
    note = root.find(".//s:text[@class='unplaced']", NS)
    assert note is not None and note.text.endswith("ses-07")


def test_svg_is_deterministic_and_escapes_labels() -> None:
    visits = _visits({5: 'bad "scan" <b>'})
    a = timeline_svg(build_timeline(visits, SCHEDULE), title="sub-t1 <x>")
    b = timeline_svg(build_timeline(visits.copy(), SCHEDULE), title="sub-t1 <x>")
    assert a == b
    assert "<b>" not in a and "sub-t1 &lt;x&gt;" in a
    assert "http://" not in a.replace("http://www.w3.org/2000/svg", "")


def test_sparkline_has_points_gaps_and_failure_tooltips() -> None:
    t = build_timeline(_visits({4: "registration failed"}), SCHEDULE)
    root = _svg(sparkline_svg(t, "t2_volume", weeks=(0.0, 48.0)))
    assert len(root.findall(".//s:circle", NS)) == 6
    assert len(root.findall(".//s:polyline", NS)) == 2
    failed = root.findall(".//s:g[@class='failed-visit']", NS)
    assert len(failed) == 1 and "registration failed" in failed[0].find("s:title", NS).text
    assert len(root.findall(".//s:rect[@class='period']", NS)) == 2
    with pytest.raises(KeyError):
        sparkline_svg(t, "nope")
