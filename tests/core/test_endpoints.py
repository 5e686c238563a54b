"""Trial endpoints (lesionq.core.endpoints): one test per schedule, window and period rule."""

from __future__ import annotations

import inspect
import tomllib
from datetime import date, datetime, timedelta
from pathlib import Path

import pytest

from lesionq.core.endpoints import (
    ENDPOINT_COUNTS,
    Schedule,
    assign_visits,
    endpoint_columns,
    parse_schedule,
    period_endpoints,
    resolve_baseline_date,
    schedule_from_protocol,
)
from lesionq.errors import ConfigError, InputError

PROTOCOL_TOML = Path(__file__).parents[2] / "pipelines" / "mesems_v1.toml"

MESEMS = {
    "baseline_week": 0,
    "weeks": [0, 4, 12, 24, 28, 36, 48],
    "window_days": 7,
}
PERIODS = {"first_treatment": [4, 12, 24], "after_crossover": [28, 36, 48]}
D0 = date(2024, 1, 10)


def mesems(**changes) -> Schedule:
    sched = {**MESEMS, **changes}
    return parse_schedule(sched, PERIODS)


def on(day: int) -> date:
    return D0 + timedelta(days=day)


# --------------------------------------------------------------------------- parsing


def test_example_protocol_fragment_parses():
    data = tomllib.loads(PROTOCOL_TOML.read_text(encoding="utf-8"))
    s = schedule_from_protocol(data, source=str(PROTOCOL_TOML))
    assert s.weeks == (0, 4, 12, 24, 28, 36, 48)
    assert [p.name for p in s.periods] == ["first_treatment", "after_crossover"]
    assert s.periods[1].weeks == (28, 36, 48)
    assert s.counts == ENDPOINT_COUNTS
    assert s.session_weeks["ses-05"] == 28
    assert s.visit(24).nominal_day == 168 and s.visit(24).window_days == 7
    assert s.as_dict()["periods"] == {
        "first_treatment": [4, 12, 24],
        "after_crossover": [28, 36, 48],
    }


def test_schedule_accepts_frozen_settings_sections():
    from lesionq.config import _freeze

    s = schedule_from_protocol(_freeze({"schedule": MESEMS, "periods": PERIODS}))
    assert s.weeks == tuple(MESEMS["weeks"]) and len(s.periods) == 2


def test_per_week_windows():
    s = mesems(window_days=[0, 7, 7, 14, 7, 14, 14])
    assert s.visit(0).window_days == 0 and s.visit(24).first_day == 154


@pytest.mark.parametrize(
    ("changes", "periods", "match"),
    [
        ({}, {"p": [4, 13]}, r"week 13 is not a scheduled week"),
        ({}, {"p": [0, 4]}, r"baseline week 0 cannot be in a period"),
        ({}, {"p": [4, 4]}, r"lists a week twice"),
        ({}, {"p": []}, r"non-empty list"),
        ({}, {"bad name": [4]}, r"identifier"),
        ({"window_days": -1}, {}, r"negative"),
        ({"window_days": [7, 7, 7, -2, 7, 7, 7]}, {}, r"week 24 is negative"),
        ({"window_days": [7, 7]}, {}, r"one integer per week"),
        ({"window_days": 7.5}, {}, r"integer number of days"),
        (
            {"window_days": 14},
            {},
            r"week 0 \(days -14\.\.14\) and week 4 \(days 14\.\.42\) overlap",
        ),
        ({"weeks": [0, 4, 4, 12]}, {}, r"distinct and increasing"),
        ({"weeks": [0, 12, 4]}, {}, r"distinct and increasing"),
        ({"weeks": [4, 12]}, {}, r"baseline_week 0 is not one of weeks"),
        ({"weeks": [0, True]}, {}, r"integers only"),
        ({"session_weeks": {"ses-09": 60}}, {}, r"'ses-09' = 60 is not a scheduled week"),
        ({"window_day": 7}, {}, r"unknown key\(s\) \['window_day'\]"),
    ],
)
def test_bad_schedules_are_config_errors(changes, periods, match):
    with pytest.raises(ConfigError, match=match):
        parse_schedule({**MESEMS, **changes}, periods, source="trial.toml")


def test_overlap_is_inclusive_at_the_edges():
    # week 24 window ends on day 168 + 14 = 182, week 28 starts on 196 - 14 = 182: overlap
    with pytest.raises(ConfigError, match="overlap"):
        mesems(window_days=[7, 7, 7, 14, 14, 7, 7])
    # one day less: days ..181 and 182..: no overlap
    mesems(window_days=[7, 7, 7, 13, 14, 7, 7])


def test_missing_required_key_and_section():
    with pytest.raises(ConfigError, match="window_days is required"):
        parse_schedule({"baseline_week": 0, "weeks": [0, 4]}, {})
    with pytest.raises(ConfigError, match=r"no \[schedule\] section"):
        schedule_from_protocol({"periods": PERIODS})


def test_endpoint_counts_validated_and_default():
    assert mesems().counts == ENDPOINT_COUNTS
    s = parse_schedule(MESEMS, PERIODS, {"counts": ["gd_count", "cua_count"]})
    assert s.counts == ("gd_count", "cua_count")
    with pytest.raises(ConfigError, match="unknown count 'gd_volume_mm3'"):
        parse_schedule(MESEMS, PERIODS, {"counts": ["gd_volume_mm3"]})
    with pytest.raises(ConfigError, match="unknown key"):
        parse_schedule(MESEMS, PERIODS, {"count": ["gd_count"]})


def test_treatment_arm_is_never_an_input():
    for func in (parse_schedule, assign_visits, period_endpoints):
        assert not any("arm" in p for p in inspect.signature(func).parameters)
    with pytest.raises(ConfigError, match="unknown key"):
        parse_schedule({**MESEMS, "arm": "A"}, PERIODS)


# --------------------------------------------------------------------------- assignment


def by_id(assignments):
    return {a.session_id: a for a in assignments}


def test_window_edges_are_inclusive():
    s = mesems()
    sessions = [
        ("ses-01", on(0), None),
        ("ses-02", on(28 - 7), None),  # first day of the week-4 window
        ("ses-03", on(84 + 7), None),  # last day of the week-12 window
        ("ses-04", on(168 + 8), None),  # one day past the week-24 window
        ("ses-05", on(196 - 8), None),  # one day before the week-28 window
    ]
    a = by_id(assign_visits(sessions, s, D0))
    assert (a["ses-02"].week, a["ses-02"].in_window, a["ses-02"].days_from_baseline) == (
        4,
        True,
        21,
    )
    assert (a["ses-03"].week, a["ses-03"].in_window) == (12, True)
    for sid, near in (("ses-04", 24), ("ses-05", 28)):
        assert a[sid].week is None and a[sid].in_window is False and not a[sid].used
        assert a[sid].code == "out_of_window" and a[sid].nearest_week == near
        assert "outside every visit window" in a[sid].reason


def test_calendar_days_ignore_time_of_day():
    s = mesems()
    base = datetime(2024, 1, 10, 23, 59)
    late = datetime(2024, 2, 14, 0, 1)  # 35 calendar days later, 34.0 x 24 h
    a = assign_visits([("a", base, None), ("b", late, None)], s)
    assert a[1].days_from_baseline == 35 and a[1].week == 4 and a[1].in_window


def test_before_baseline_is_out_of_window():
    s = mesems()
    a = by_id(assign_visits([("ses-01", on(0), None), ("ses-00", on(-30), None)], s, D0))
    assert a["ses-00"].code == "out_of_window" and a["ses-00"].days_from_baseline == -30
    assert a["ses-00"].nearest_week == 0


def test_label_fallback_without_dates():
    s = mesems(session_weeks={"ses-01": 0, "ses-02": 4, "v3": 12})
    a = by_id(
        assign_visits(
            [
                ("ses-01", None, None),
                ("ses-02", None, None),
                ("ses-03", None, "v3"),
                ("x", None, None),
            ],
            s,
        )
    )
    assert (a["ses-02"].week, a["ses-02"].method, a["ses-02"].in_window) == (4, "label", None)
    assert a["ses-03"].week == 12 and a["ses-03"].used  # looked up by its label
    assert a["x"].code == "unassigned" and not a["x"].used and a["x"].week is None
    assert "not in [schedule] session_weeks" in a["x"].reason


def test_date_wins_over_label_and_disagreement_is_noted():
    s = mesems(session_weeks={"ses-01": 0, "ses-02": 12})
    a = by_id(assign_visits([("ses-01", on(0), None), ("ses-02", on(30), None)], s))
    assert a["ses-02"].week == 4 and a["ses-02"].method == "date"
    assert "session_weeks maps it to week 12" in a["ses-02"].reason


def test_baseline_date_rules():
    s = mesems(session_weeks={"ses-01": 0})
    # the session mapped to the baseline week gives day 0, even if not the earliest
    d, rule = resolve_baseline_date([("ses-00", on(-20), None), ("ses-01", on(0), None)], s)
    assert d == D0 and "mapped to baseline week" in rule
    # no session mapped: the earliest dated one
    d, rule = resolve_baseline_date([("b", on(40), None), ("a", on(3), None)], mesems())
    assert d == on(3) and "earliest" in rule
    # the mapped baseline session has no date: nothing is dated, all by label
    s2 = mesems(session_weeks={"ses-01": 0, "ses-02": 4})
    sessions = [("ses-01", None, None), ("ses-02", on(29), None), ("ses-03", on(85), None)]
    d, rule = resolve_baseline_date(sessions, s2)
    assert d is None and "placed by label" in rule
    a = by_id(assign_visits(sessions, s2))
    assert a["ses-02"].method == "label" and a["ses-02"].week == 4
    assert a["ses-03"].code == "unassigned"
    # a given baseline date overrides the rules
    a = by_id(assign_visits(sessions, s2, baseline_date=on(1)))
    assert a["ses-02"].days_from_baseline == 28 and a["ses-03"].week == 12


def test_duplicate_week_closest_to_nominal_is_used():
    s = mesems()
    a = by_id(
        assign_visits(
            [("ses-01", on(0), None), ("ses-02", on(24), None), ("ses-02r", on(30), None)], s
        )
    )
    assert a["ses-02r"].used and a["ses-02r"].code == "in_window"  # 2 days off vs 4
    assert not a["ses-02"].used and a["ses-02"].code == "duplicate" and a["ses-02"].week == 4
    assert "ses-02r" in a["ses-02"].reason


def test_duplicate_tie_earliest_is_used():
    a = by_id(
        assign_visits([("b", on(0), None), ("x", on(26), None), ("y", on(30), None)], mesems())
    )
    assert a["x"].used and not a["y"].used


def test_duplicate_failed_session_is_not_preferred():
    sessions = [("ses-01", on(0), None), ("ses-02", on(28), None), ("ses-02r", on(33), None)]
    a = by_id(assign_visits(sessions, mesems(), failed_sessions={"ses-02"}))
    assert a["ses-02r"].used and a["ses-02"].code == "duplicate"


def test_duplicate_dated_preferred_over_label_and_label_ties_are_ambiguous():
    s = mesems(session_weeks={"ses-01": 0, "u1": 4, "u2": 4})
    # dated in window beats label-only for the same week
    a = by_id(assign_visits([("ses-01", on(0), None), ("d", on(28), None), ("u1", None, None)], s))
    assert a["d"].used and a["u1"].code == "duplicate"
    # two label-only sessions for one week: none used, the week is missing
    a = by_id(assign_visits([("ses-01", None, None), ("u1", None, None), ("u2", None, None)], s))
    assert not a["u1"].used and not a["u2"].used
    assert a["u1"].code == a["u2"].code == "ambiguous"


def test_bad_sessions():
    with pytest.raises(InputError, match="listed twice"):
        assign_visits([("a", None, None), ("a", None, None)], mesems())
    with pytest.raises(InputError, match="must be a datetime"):
        assign_visits([("a", "2024-01-01", None)], mesems())
    with pytest.raises(InputError, match="session_id, acq_datetime, label"):
        assign_visits([("a", None)], mesems())


# --------------------------------------------------------------------------- periods


def visit(sid, week, status="ok", **counts):
    row = {"participant_id": "sub-01", "session_id": sid, "status": status, "week": week}
    row.update(counts)
    return row


def full(n=1, **kw):
    return dict(new_t2_count=n, enlarging_t2_count=0, gd_count=n, cua_count=n, **kw)


def rows_for(rows, period):
    return next(r for r in rows if r["period"] == period)


def test_complete_periods_sum_and_mean():
    rows = [visit("ses-01", 0, **full(0))]
    rows += [visit(f"ses-{w}", w, **full(i)) for i, w in enumerate((4, 12, 24, 28, 36, 48), 1)]
    out = period_endpoints(rows, mesems())
    assert [r["period"] for r in out] == ["first_treatment", "after_crossover"]
    ft = rows_for(out, "first_treatment")
    assert ft["new_t2_count_cumulative"] == 1 + 2 + 3 and ft["new_t2_count_n_visits"] == 3
    assert ft["new_t2_count_per_visit"] == pytest.approx(2.0)
    assert ft["enlarging_t2_count_cumulative"] == 0  # observed zeros are zeros
    assert ft["complete"] is True and ft["missing_weeks"] == "" and ft["n_visits_observed"] == 3
    assert ft["sessions"] == "ses-4,ses-12,ses-24"
    ac = rows_for(out, "after_crossover")
    assert ac["gd_count_cumulative"] == 4 + 5 + 6 and ac["complete"] is True
    assert set(out[0]) == set(endpoint_columns(mesems()))


def test_missing_visit_sums_observed_and_flags_incomplete():
    rows = [visit("ses-01", 0), visit("ses-02", 4, **full(2)), visit("ses-04", 24, **full(5))]
    ft = rows_for(period_endpoints(rows, mesems()), "first_treatment")
    assert ft["n_visits_expected"] == 3 and ft["n_visits_observed"] == 2
    assert ft["missing_weeks"] == "12" and ft["complete"] is False
    assert ft["new_t2_count_cumulative"] == 7 and ft["new_t2_count_n_visits"] == 2
    assert ft["new_t2_count_per_visit"] == pytest.approx(3.5)  # not 7 / 3: nothing imputed


def test_period_with_no_visit_is_na_not_zero():
    out = period_endpoints([visit("ses-01", 0, **full(0))], mesems())
    ac = rows_for(out, "after_crossover")
    assert ac["n_visits_observed"] == 0 and ac["missing_weeks"] == "28,36,48"
    assert ac["cua_count_cumulative"] is None and ac["cua_count_per_visit"] is None
    assert ac["cua_count_n_visits"] == 0 and ac["complete"] is False


def test_failed_visit_counts_are_never_used():
    rows = [
        visit("ses-02", 4, **full(1)),
        visit("ses-03", 12, status="failed", **full(50)),
        visit("ses-04", 24, **full(1)),
    ]
    ft = rows_for(period_endpoints(rows, mesems()), "first_treatment")
    assert ft["gd_count_cumulative"] == 2 and ft["failed_sessions"] == "ses-03"
    assert ft["missing_weeks"] == "12" and ft["complete"] is False


def test_unavailable_count_is_not_zero():
    rows = [
        visit("ses-02", 4, new_t2_count=1, enlarging_t2_count=0, gd_count=None, cua_count=None),
        visit(
            "ses-03", 12, new_t2_count=2, enlarging_t2_count=0, gd_count=3, cua_count=float("nan")
        ),
        visit("ses-04", 24, new_t2_count=0, enlarging_t2_count=1),  # no gd/cua keys at all
    ]
    ft = rows_for(period_endpoints(rows, mesems()), "first_treatment")
    assert ft["n_visits_observed"] == 3 and ft["missing_weeks"] == ""
    assert ft["new_t2_count_cumulative"] == 3 and ft["new_t2_count_n_visits"] == 3
    assert ft["gd_count_cumulative"] == 3 and ft["gd_count_n_visits"] == 1
    assert ft["gd_count_per_visit"] == pytest.approx(3.0)
    assert ft["cua_count_cumulative"] is None and ft["cua_count_n_visits"] == 0
    assert ft["complete"] is False
    assert "gd_count@4" in ft["missing_counts"] and "cua_count@24" in ft["missing_counts"]


def test_out_of_window_visit_is_reported_not_counted():
    s = mesems()
    sessions = [("ses-01", on(0), None), ("ses-02", on(45), None), ("ses-03", on(84), None)]
    assigned = assign_visits(sessions, s)
    counts = {"ses-01": 0, "ses-02": 9, "ses-03": 1}
    rows = [
        {
            "participant_id": "sub-01",
            "status": "ok",
            **a.as_dict(),
            **full(counts[a.session_id]),
        }
        for a in assigned
    ]
    ft = rows_for(period_endpoints(rows, s), "first_treatment")
    assert ft["new_t2_count_cumulative"] == 1  # ses-02's 9 are not counted
    assert ft["missing_weeks"] == "4,24"
    assert ft["excluded_sessions"] == "ses-02 (out_of_window)"
    ac = rows_for(period_endpoints(rows, s), "after_crossover")
    assert ac["excluded_sessions"] == ""  # listed in the period of its nearest week only


def test_unassigned_session_is_listed_in_every_period():
    rows = [visit("ses-02", 4, **full(1)), {**visit("odd", None), "code": "unassigned"}]
    out = period_endpoints(rows, mesems())
    assert all(r["excluded_sessions"] == "odd (unassigned)" for r in out)


def test_overlapping_periods_are_allowed():
    s = parse_schedule(MESEMS, {**PERIODS, "overall": [4, 12, 24, 28, 36, 48]})
    rows = [visit(f"s{w}", w, **full(1)) for w in (4, 12, 24, 28, 36, 48)]
    out = {r["period"]: r for r in period_endpoints(rows, s)}
    assert out["overall"]["cua_count_cumulative"] == 6
    assert out["first_treatment"]["cua_count_cumulative"] == 3


def test_subjects_are_separate_and_sorted():
    rows = [
        {**visit("ses-02", 4, **full(3)), "participant_id": "sub-02"},
        visit("ses-02", 4, **full(1)),
    ]
    out = period_endpoints(rows, mesems())
    assert [r["participant_id"] for r in out] == ["sub-01"] * 2 + ["sub-02"] * 2
    assert out[0]["gd_count_cumulative"] == 1 and out[2]["gd_count_cumulative"] == 3


def test_two_used_sessions_for_one_week_is_an_error():
    rows = [visit("a", 4, **full()), visit("b", 4, **full())]
    with pytest.raises(InputError, match="both used for week 4"):
        period_endpoints(rows, mesems())
    # a duplicate marked unused (assign_visits) is fine and reported
    rows[1] = {**rows[1], "used": False, "code": "duplicate"}
    ft = rows_for(period_endpoints(rows, mesems()), "first_treatment")
    assert ft["excluded_sessions"] == "b (duplicate)" and ft["gd_count_cumulative"] == 1


def test_bad_rows_are_errors():
    with pytest.raises(InputError, match="week 5 is not scheduled"):
        period_endpoints([visit("a", 5)], mesems())
    with pytest.raises(InputError, match="non-negative integer"):
        period_endpoints([visit("a", 4, gd_count=-1)], mesems())
    with pytest.raises(InputError, match="non-negative integer"):
        period_endpoints([visit("a", 4, gd_count=1.5)], mesems())
    with pytest.raises(InputError, match="without participant_id"):
        period_endpoints([{"session_id": "a", "week": 4, "status": "ok"}], mesems())


def test_count_interval_mismatch_is_noted():
    rows = [
        visit("ses-01", 0),
        visit("ses-02", 4, previous_session_id="ses-01", **full(1)),
        # week 12 compared with an unscheduled visit, not with ses-02
        visit("ses-03", 12, previous_session_id="ses-x", **full(1)),
        visit("ses-04", 24, previous_session_id="ses-03", **full(1)),
    ]
    ft = rows_for(period_endpoints(rows, mesems()), "first_treatment")
    assert ft["notes"].count("counted since") == 1
    assert "ses-03 (week 12): new/enlarging counted since ses-x" in ft["notes"]
    assert "ses-02" in ft["notes"]


# --------------------------------------------------------------------------- volumes


def test_volumes_are_reported_at_the_period_start_and_end_not_summed():
    s = parse_schedule(MESEMS, PERIODS, {"counts": ["gd_count"], "volumes": ["bh_volume_mm3"]})
    assert s.volumes == ("bh_volume_mm3",) and s.as_dict()["volumes"] == ["bh_volume_mm3"]
    assert endpoint_columns(s)[-8:-3] == (
        "bh_volume_mm3_start_week",
        "bh_volume_mm3_start",
        "bh_volume_mm3_end_week",
        "bh_volume_mm3_end",
        "bh_volume_mm3_change",
    )
    rows = [
        # a visit without a T1w has no black-hole volume (None), never 0
        dict(participant_id="s", session_id=f"ses-{w}", status="ok", week=w, gd_count=0,
             bh_volume_mm3=v)
        for w, v in ((0, 100.0), (4, 500.0), (12, 700.0), (24, 130.25), (28, None), (36, 1.0))
    ]  # fmt: skip
    first, after = period_endpoints(rows, s)
    assert (first["bh_volume_mm3_start_week"], first["bh_volume_mm3_end_week"]) == (0, 24)
    assert (first["bh_volume_mm3_start"], first["bh_volume_mm3_end"]) == (100.0, 130.25)
    assert first["bh_volume_mm3_change"] == pytest.approx(30.25) and first["complete"]
    # after the cross-over: start = week 24, end = week 48 (not scanned): n/a, incomplete
    assert after["bh_volume_mm3_start"] == 130.25 and after["bh_volume_mm3_end"] is None
    assert after["bh_volume_mm3_change"] is None and not after["complete"]
    # week 28 was scanned without a T1w: not a missing start/end volume (it is neither)
    assert "bh_volume_mm3" not in after["missing_counts"]
    rows[3]["bh_volume_mm3"] = float("nan")  # week 24 scanned, no T1w
    first, after = period_endpoints(rows, s)
    assert first["bh_volume_mm3_change"] is None and not first["complete"]
    assert first["missing_counts"] == "bh_volume_mm3@24"
    assert after["bh_volume_mm3_start"] is None and "bh_volume_mm3@24" in after["missing_counts"]


def test_volumes_default_to_none_and_bad_names_are_refused():
    assert parse_schedule(MESEMS, PERIODS).volumes == ()
    with pytest.raises(ConfigError, match="unknown volume"):
        parse_schedule(MESEMS, PERIODS, {"volumes": ["bh_count"]})
    with pytest.raises(ConfigError, match="twice"):
        parse_schedule(MESEMS, PERIODS, {"volumes": ["bh_volume_mm3", "bh_volume_mm3"]})
    s = parse_schedule(MESEMS, PERIODS, {"volumes": ["bh_volume_mm3"]})
    bad = dict(participant_id="s", session_id="a", status="ok", week=24, bh_volume_mm3=-1.0)
    with pytest.raises(InputError, match="bh_volume_mm3"):
        period_endpoints([bad], s)
