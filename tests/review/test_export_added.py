"""``lesionq export --table added``: the lesions readers added, with their review status.

The rows are those of ``OUT/added_lesions.tsv`` (the table is built by the review
read model in ``lesionq.store``; the review app re-exports it), and the status
follows the review: ``awaiting_adjudication`` after a one-reader addition, then
``counted`` once the adjudicator accepts it.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from review_helpers import add_missed_lesion, login, result_id

from lesionq.cli.main import main
from lesionq.io.tables import read_tsv
from lesionq.review.added_export import ADDED_COLUMNS
from lesionq.store import EXPORT_TABLES


def _export(url: str, dest: Path) -> object:
    assert main(["export", "--db", url, str(dest), "--table", "added"]) == 0
    return read_tsv(dest)


def test_export_added_table_has_the_added_lesion_and_its_status(
    clients,  # noqa: ANN001
    env_sqlite,  # noqa: ANN001
    tmp_path: Path,
) -> None:
    env = env_sqlite
    assert "added" in EXPORT_TABLES
    empty = _export(env.url, tmp_path / "none.tsv")
    assert list(empty.columns) == list(ADDED_COLUMNS) and len(empty) == 0
    xyz = add_missed_lesion(env.out)
    vid, rid = env.visit_ids["sub-01"], result_id(env, "sub-01")
    c1 = clients()
    csrf1 = login(c1, "reader1")
    body = {"result_id": rid, "x": xyz[0], "y": xyz[1], "z": xyz[2], "threshold": 3}
    r = c1.post(
        f"/api/visits/{vid}/added",
        json={**body, "location": "juxtacortical"},
        headers={"X-CSRF-Token": csrf1},
    )
    assert r.status_code == 200, r.text
    got = _export(env.url, tmp_path / "reading.tsv")
    assert list(got["lesion"]) == ["A1"] and list(got["status"]) == ["reading"]
    c2 = clients()
    csrf2 = login(c2, "reader2")
    for c, csrf in ((c1, csrf1), (c2, csrf2)):
        s = c.post(
            f"/visits/{vid}/submit",
            data={"csrf_token": csrf, "result_id": rid, "confirm": "1"},
        )
        assert s.status_code == 200
    got = _export(env.url, tmp_path / "pending.tsv")
    assert list(got["status"]) == ["awaiting_adjudication"]
    ca = clients()
    csrfa = login(ca, "adj")
    r = ca.post(
        f"/api/adjudicate/{vid}",
        json={"result_id": rid, "lesion": "A:1", "choice": "accept"},
        headers={"X-CSRF-Token": csrfa},
    )
    assert r.status_code == 200, r.text
    got = _export(env.url, tmp_path / "added.tsv")
    assert list(got.columns) == list(ADDED_COLUMNS)
    assert len(got) == 1
    row = got.iloc[0]
    assert (row["participant_id"], row["session_id"]) == ("sub-01", "ses-01")
    assert row["lesion"] == "A1" and row["label"] == "T2" and row["reader"] == "reader1"
    assert row["status"] == "counted" and row["location"] == "juxtacortical"
    assert row["n_voxels"] == 8 and row["volume_mm3"] == pytest.approx(16.0)
    # the same rows as OUT/added_lesions.tsv, which the app rewrote with visits.tsv
    app_tsv = read_tsv(env.out / "added_lesions.tsv")
    assert got.astype(str).values.tolist() == app_tsv.astype(str).values.tolist()
