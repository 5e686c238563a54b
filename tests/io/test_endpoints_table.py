"""OUT/endpoints.tsv and its sidecar (lesionq.io.endpoints) from a small synthetic visits table."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pandas as pd
import pytest

from lesionq.config import Settings, _freeze
from lesionq.core.endpoints import endpoint_columns, schedule_from_protocol
from lesionq.errors import ConfigError, InputError
from lesionq.io.endpoints import ENDPOINTS_TSV, compute_endpoints, write_endpoints
from lesionq.io.tables import read_tsv, write_tsv

PROTOCOL_TOML = Path(__file__).parents[2] / "pipelines" / "mesems_v1.toml"


def settings(**sections) -> Settings:
    data = {"protocol": {"name": "trial"}, **tomllib.loads(PROTOCOL_TOML.read_text("utf-8"))}
    data.update(sections)
    return Settings(name="trial", source="trial.toml", sections=_freeze(data))


def visits() -> pd.DataFrame:
    """Two subjects. sub-01: dated, week 12 failed, an unscheduled visit at day 60.
    sub-02: no acq_time, placed by session label; no post-contrast and no T1w at week 28."""
    na = pd.NA
    rows = [
        # participant, session, status, acq_time, new, enl, gd, cua, bh_volume_mm3
        ("sub-01", "ses-01", "ok", "2024-01-10T09:00:00", na, na, 0, na, 100.0),
        ("sub-01", "ses-02", "ok", "2024-02-07T10:00:00", 2, 1, 1, 3, 110.0),
        ("sub-01", "ses-02x", "ok", "2024-03-10T10:00:00", 4, 0, 0, 4, 0.0),  # day 60: no window
        ("sub-01", "ses-03", "failed", "2024-04-03T10:00:00", na, na, na, na, na),
        ("sub-01", "ses-04", "ok", "2024-06-26T10:00:00", 1, 0, 2, 2, 130.5),  # day 168
        ("sub-01", "ses-05", "ok", "2024-07-31T10:00:00", 0, 0, 0, 0, 131.0),  # day 203 (+7, edge)
        ("sub-01", "ses-06", "ok", "2024-09-25T10:00:00", 0, 1, 0, 1, 140.0),
        ("sub-01", "ses-07", "ok", "2024-12-04T10:00:00", 0, 0, 0, 0, 150.0),
        ("sub-02", "ses-01", "ok", na, na, na, 3, na, 50.0),
        ("sub-02", "ses-02", "ok", na, 1, 0, 0, 1, 52.0),
        ("sub-02", "ses-03", "ok", na, 0, 0, 0, 0, 53.0),
        ("sub-02", "ses-04", "ok", na, 2, 0, 1, 2, 55.0),
        ("sub-02", "ses-05", "ok", na, 1, 0, na, na, na),
    ]
    cols = ["participant_id", "session_id", "status", "acq_time"] + [
        "new_t2_count",
        "enlarging_t2_count",
        "gd_count",
        "cua_count",
        "bh_volume_mm3",
    ]
    df = pd.DataFrame(rows, columns=cols)
    for c in cols[4:8]:
        df[c] = df[c].astype("Int64")
    df["bh_volume_mm3"] = df["bh_volume_mm3"].astype("Float64")
    return df


def row(table, pid, period):
    sel = table[(table["participant_id"] == pid) & (table["period"] == period)]
    assert len(sel) == 1
    return sel.iloc[0]


def test_write_endpoints_table_and_sidecar(tmp_path):
    s = settings()
    vpath = write_tsv(visits(), tmp_path / "visits.tsv")
    dest = write_endpoints(tmp_path / "out", read_tsv(vpath), s, visits_path=vpath)
    assert dest == tmp_path / "out" / ENDPOINTS_TSV and dest.is_file()
    table = read_tsv(dest)
    sched = schedule_from_protocol(s.sections)
    assert tuple(table.columns) == endpoint_columns(sched)
    assert len(table) == 4  # 2 subjects x 2 periods

    ft = row(table, "sub-01", "first_treatment")
    assert ft["n_visits_observed"] == 2 and ft["missing_weeks"] == "12"
    assert ft["failed_sessions"] == "ses-03"
    assert ft["excluded_sessions"] == "ses-02x (out_of_window)"
    assert ft["new_t2_count_cumulative"] == 3 and ft["cua_count_cumulative"] == 5
    assert ft["cua_count_per_visit"] == pytest.approx(2.5)
    assert not ft["complete"]
    ac = row(table, "sub-01", "after_crossover")
    assert ac["complete"] and ac["sessions"] == "ses-05,ses-06,ses-07"
    assert ac["enlarging_t2_count_cumulative"] == 1
    # black-hole volume: at the week before the period and at its last week, not summed
    assert (ft["bh_volume_mm3_start_week"], ft["bh_volume_mm3_end_week"]) == (0, 24)
    assert ft["bh_volume_mm3_start"] == 100.0 and ft["bh_volume_mm3_end"] == 130.5
    assert ft["bh_volume_mm3_change"] == pytest.approx(30.5)
    assert (ac["bh_volume_mm3_start_week"], ac["bh_volume_mm3_end_week"]) == (24, 48)
    assert ac["bh_volume_mm3_change"] == pytest.approx(19.5)

    # sub-02: placed by label; gd/cua n/a at week 28 -> left out, not zero
    ac2 = row(table, "sub-02", "after_crossover")
    assert ac2["n_visits_observed"] == 1 and ac2["missing_weeks"] == "36,48"
    assert pd.isna(ac2["gd_count_cumulative"]) and ac2["gd_count_n_visits"] == 0
    assert ac2["new_t2_count_cumulative"] == 1
    ft2 = row(table, "sub-02", "first_treatment")
    assert ft2["complete"] and ft2["gd_count_cumulative"] == 1
    assert ft2["bh_volume_mm3_change"] == pytest.approx(5.0)
    # no visit at week 48 (and no T1w at week 28): the end volume and the change are n/a
    assert ac2["bh_volume_mm3_start"] == 55.0
    assert pd.isna(ac2["bh_volume_mm3_end"]) and pd.isna(ac2["bh_volume_mm3_change"])
    assert "bh_volume_mm3" not in ac2["missing_counts"] and not ac2["complete"]  # week 48: missing

    # "n/a" on disk for missing values
    text = dest.read_text()
    assert "\tn/a\t" in text

    side = json.loads(dest.with_suffix(".json").read_text())
    assert side["settings_sha256"] == s.hash() and side["protocol"] == "trial"
    assert "lesionq_version" in side
    assert side["inputs"]["visits"]["sha256"]
    assert side["Schedule"]["periods"]["first_treatment"] == [4, 12, 24]
    assert side["gd_count_cumulative"]["Units"] == "lesions"
    assert side["bh_volume_mm3_change"]["Units"] == "mm3"
    assert side["Schedule"]["volumes"] == ["bh_volume_mm3"]
    assert set(endpoint_columns(sched)) <= set(side)
    placed = {(a["participant_id"], a["session_id"]): a for a in side["VisitAssignments"]}
    assert placed[("sub-01", "ses-02x")]["code"] == "out_of_window"
    assert placed[("sub-01", "ses-02x")]["days_from_baseline"] == 60
    assert placed[("sub-01", "ses-05")]["in_window"] is True
    assert placed[("sub-02", "ses-03")]["method"] == "label"
    assert placed[("sub-01", "ses-01")]["baseline_date"] == "2024-01-10"
    assert side["CountsNotInVisitsTable"] == []
    assert "arm" not in " ".join(table.columns)


def test_missing_count_column_is_not_available_not_zero():
    df = visits().drop(columns=["gd_count", "cua_count"])
    table, _ = compute_endpoints(df, schedule_from_protocol(settings().sections))
    assert table["gd_count_cumulative"].isna().all()
    assert (table["gd_count_n_visits"] == 0).all()
    assert not table["complete"].any()
    assert table["new_t2_count_cumulative"].notna().all()


def test_no_acq_time_column_places_by_label():
    df = visits().drop(columns=["acq_time"])
    _, placed = compute_endpoints(df, schedule_from_protocol(settings().sections))
    sub1 = placed[placed["participant_id"] == "sub-01"].set_index("session_id")
    assert sub1.loc["ses-03", "method"] == "label" and sub1.loc["ses-03", "week"] == 12
    assert sub1.loc["ses-02x", "code"] == "unassigned"


def test_previous_session_mismatch_is_noted():
    df = visits()
    df["previous_session_id"] = ["n/a"] * len(df)
    df.loc[
        (df["participant_id"] == "sub-01") & (df["session_id"] == "ses-04"), "previous_session_id"
    ] = "ses-02x"
    df["previous_session_id"] = df["previous_session_id"].replace("n/a", pd.NA)
    table, _ = compute_endpoints(df, schedule_from_protocol(settings().sections))
    ft = row(table, "sub-01", "first_treatment")
    assert "ses-04 (week 24): new/enlarging counted since ses-02x" in ft["notes"]


def test_errors(tmp_path):
    with pytest.raises(InputError, match="required column"):
        compute_endpoints(
            visits().drop(columns=["status"]), schedule_from_protocol(settings().sections)
        )
    bad = visits()
    bad.loc[0, "acq_time"] = "10/01/2024"
    with pytest.raises(InputError, match="sub-01 ses-01.*ISO 8601"):
        compute_endpoints(bad, schedule_from_protocol(settings().sections))
    no_sched = Settings("trial", "trial.toml", _freeze({"protocol": {"name": "trial"}}))
    with pytest.raises(ConfigError, match=r"no \[schedule\]"):
        write_endpoints(tmp_path, visits(), no_sched)
    assert not (tmp_path / ENDPOINTS_TSV).exists()


def test_empty_visits_table(tmp_path):
    df = visits().iloc[0:0]
    dest = write_endpoints(tmp_path, df, settings())
    table = read_tsv(dest)
    assert len(table) == 0 and list(table.columns)[:2] == ["participant_id", "period"]
