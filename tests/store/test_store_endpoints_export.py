"""Endpoints replacement and export of the tables (TSV, CSV, Parquet)."""

from __future__ import annotations

import pandas as pd
import pytest
from store_helpers import record, start_run, visit_row

from lesionq.errors import InputError
from lesionq.io.tables import read_tsv
from lesionq.store import ResultsDB, export_table


def endpoints_frame(value: int) -> pd.DataFrame:
    """A small endpoints.tsv-like table (two subjects, one period)."""
    return pd.DataFrame(
        {
            "participant_id": ["sub-01", "sub-02"],
            "period": ["weeks_12_24", "weeks_12_24"],
            "period_weeks": ["12,24", "12,24"],
            "n_visits_expected": [2, 2],
            "n_visits_observed": [2, 1],
            "missing_weeks": [None, "24,36"],
            "gd_count_cumulative": pd.array([value, pd.NA], dtype="Int64"),
            "gd_count_per_visit": [value / 2, float("nan")],
            "complete": [True, False],
            "notes": ["", "week 24 missing"],
        }
    )


def _plain(df: pd.DataFrame) -> list[list]:
    return [[None if pd.isna(v) else v for v in row] for row in df.astype(object).values.tolist()]


def test_replace_endpoints(db: ResultsDB) -> None:
    run1 = start_run(db)
    db.replace_endpoints(run1, endpoints_frame(4))
    run2 = start_run(db)
    db.replace_endpoints(run2, endpoints_frame(6))
    cur = db.endpoints_table()
    assert list(cur.columns) == list(endpoints_frame(6).columns)
    assert cur["gd_count_cumulative"].tolist()[0] == 6 and pd.isna(cur.loc[1, "gd_count_per_visit"])
    assert _plain(cur) == _plain(endpoints_frame(6))
    log = db.audit_log()
    rep = log[log["action"] == "endpoints.replaced"]
    assert len(rep) == 2
    assert rep.iloc[1]["before"] == {"run_ids": [run1], "n_rows": 2}
    assert rep.iloc[1]["after"]["run_ids"] == [run2] and rep.iloc[1]["after"]["n_rows"] == 2
    db.replace_endpoints(run2, endpoints_frame(6).iloc[:0])
    assert db.endpoints_table().empty


@pytest.mark.parametrize("suffix", [".tsv", ".csv", ".parquet"])
def test_export_round_trip(db: ResultsDB, tmp_path, suffix: str) -> None:  # noqa: ANN001
    run = start_run(db)
    record(db, run, visit_row("sub-01", "ses-01"))
    record(db, run, visit_row("sub-02", None, gd_count=None, gd_volume_mm3=None))
    db.replace_endpoints(run, endpoints_frame(4))
    for table, expected in (
        ("endpoints", db.endpoints_table()),
        ("visits", db.visits_table()),
        ("lesions", db.lesions_table()),
    ):
        dest = export_table(db, tmp_path / f"{table}{suffix}", table=table)
        assert dest == tmp_path / f"{table}{suffix}"
        if suffix == ".tsv":
            back = read_tsv(dest)
            assert "n/a" in dest.read_text()
        elif suffix == ".csv":
            back = pd.read_csv(dest, dtype={"participant_id": str, "session_id": str})
        else:
            back = pd.read_parquet(dest)
            for col in expected.columns:  # parquet keeps the nullable dtypes
                if str(expected[col].dtype) in ("Int64", "boolean", "Float64"):
                    assert str(back[col].dtype) == str(expected[col].dtype), col
        assert list(back.columns) == list(expected.columns)
        assert len(back) == len(expected)
        if suffix == ".parquet":
            assert _plain(back) == _plain(expected)
        else:  # text: compare the numbers as numbers
            for col in expected.columns:
                for a, b in zip(_plain(back[[col]]), _plain(expected[[col]]), strict=True):
                    if isinstance(b[0], bool):  # text formats read booleans back as bool
                        assert bool(a[0]) == b[0], col
                    elif isinstance(b[0], int | float) and a[0] is not None:
                        assert float(a[0]) == pytest.approx(float(b[0])), col
                    else:
                        assert (a[0] is None or a[0] == "") == (b[0] is None or b[0] == ""), col
                        if b[0] not in (None, ""):
                            assert str(a[0]) == str(b[0]), col
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp files left


def test_export_errors(db: ResultsDB, tmp_path) -> None:  # noqa: ANN001
    with pytest.raises(InputError, match="suffix"):
        export_table(db, tmp_path / "endpoints.xlsx")
    with pytest.raises(InputError, match="table must be"):
        export_table(db, tmp_path / "x.tsv", table="subjects")
    with pytest.raises(InputError, match="format must be"):
        export_table(db, tmp_path / "x.out", fmt="json")
    path = export_table(db, tmp_path / "endpoints.out", fmt="csv")
    assert path.read_text() == "\n"  # empty table, no columns


@pytest.mark.parametrize("suffix", [".tsv", ".parquet"])
def test_export_of_the_audit_trail(db: ResultsDB, tmp_path, suffix: str) -> None:  # noqa: ANN001
    """runs, ledger and audit export every row; JSON columns become JSON text."""
    import json

    run = start_run(db)
    record(db, run, visit_row("sub-01", "ses-01"))
    db.add_ledger(
        run,
        participant_id="sub-01",
        session_id="ses-01",
        step="visit",
        outcome="ok",
        duration_s=1.5,
    )
    db.finish_run(run, status="finished", n_ok=1, n_failed=0, n_skipped=0)
    read = read_tsv if suffix == ".tsv" else pd.read_parquet
    runs = read(export_table(db, tmp_path / f"runs{suffix}", table="runs"))
    assert runs["id"].tolist() == [run] and runs["status"].tolist() == ["finished"]
    assert json.loads(runs["settings"].iloc[0]) == db.run(run)["settings"]
    ledger = read(export_table(db, tmp_path / f"ledger{suffix}", table="ledger"))
    assert ledger["outcome"].tolist() == ["ok"] and ledger["participant_id"].tolist() == ["sub-01"]
    audit = read(export_table(db, tmp_path / f"audit{suffix}", table="audit"))
    log = db.audit_log()
    assert audit["action"].tolist() == log["action"].tolist() and len(audit) >= 1
    for got, want in zip(audit["after"], log["after"], strict=True):
        assert (json.loads(got) if isinstance(got, str) else None) == want


def test_cli_export_choices_are_the_export_tables() -> None:
    from lesionq.cli.main import build_parser
    from lesionq.store.export import EXPORT_TABLES

    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    table = next(a for a in sub.choices["export"]._actions if a.dest == "table")
    assert tuple(table.choices) == EXPORT_TABLES
