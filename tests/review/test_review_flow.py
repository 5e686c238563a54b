"""Reading, submitting, adjudicating, locking; reviewed counts; audit log; blinding."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from review_helpers import login, record, result_id, visit_row, write_visit

from lesionq.review import auth, merge_reviewed_counts, reviewed_counts
from lesionq.review import state as rs
from lesionq.review.decisions import Decision, LesionKey
from lesionq.review.models import APPEND_ONLY_TABLES, lesion_decisions

T1, T2, G1 = LesionKey("T2", 1), LesionKey("T2", 2), LesionKey("Gd", 1)


def _readers(env) -> dict[str, auth.Reader]:  # noqa: ANN001
    return {n: auth.get_reader(env.db.engine, n) for n in ("reader1", "reader2", "adj", "admin")}


def _row(env, pid: str = "sub-01"):  # noqa: ANN001, ANN202
    df = reviewed_counts(env.db)
    return df[df["participant_id"] == pid].iloc[0]


def test_two_readers_disagree_then_adjudicated(env) -> None:  # noqa: ANN001
    """The whole flow at the state level, on SQLite and PostgreSQL."""
    eng, r = env.db.engine, _readers(env)
    vid, rid = env.visit_ids["sub-01"], result_id(env, "sub-01")
    kw = {"readers_required": 2}
    assert _row(env)["review_status"] == "not_started"
    rs.record_decision(eng, r["reader1"], vid, rid, T2, Decision("reject"), "motion", **kw)
    rs.record_decision(eng, r["reader1"], vid, rid, G1, Decision("relabel", "vessel"), None, **kw)
    assert _row(env)["review_status"] == "in_review"
    sub1 = rs.submit_visit(eng, r["reader1"], vid, rid, **kw)
    assert sub1.counts == {
        "t2_count": 2,
        "t2_volume_mm3": 20.0,
        "gd_count": 0,
        "gd_volume_mm3": 0.0,
    }
    rs.record_decision(eng, r["reader2"], vid, rid, G1, Decision("relabel", "vessel"), None, **kw)
    rs.submit_visit(eng, r["reader2"], vid, rid, **kw)
    row = _row(env)
    assert row["review_status"] == "in_review" and row["t2_count_reviewed"] is pd_na()
    # the adjudicator decides the one disagreement (T2 lesion 2)
    with pytest.raises(rs.ReviewRefused, match="agree"):
        rs.adjudicate(eng, r["adj"], vid, rid, T1, Decision("reject"), None, **kw)
    with pytest.raises(rs.ReviewRefused, match="only adjudicators"):
        rs.adjudicate(eng, r["reader1"], vid, rid, T2, Decision("reject"), None, **kw)
    rs.adjudicate(eng, r["adj"], vid, rid, T2, Decision("reject"), "agree with reader1", **kw)
    row = _row(env)
    assert row["review_status"] == "final"
    assert (row["t2_count_reviewed"], row["t2_volume_reviewed_mm3"]) == (2, 20.0)
    assert (row["gd_count_reviewed"], row["gd_volume_reviewed_mm3"]) == (0, 0.0)
    # sub-02 has no Gd+ inputs: its reviewed Gd stays missing even when final
    other = _row(env, "sub-02")
    assert other["review_status"] == "not_started"
    log = env.db.audit_log()
    actions = list(log["action"])
    assert actions.count("lesion_decision.recorded") == 3
    assert actions.count("visit_review.submitted") == 2
    assert actions.count("adjudication.recorded") == 1
    final = log[log["action"] == "review.final"].iloc[0]
    assert final["actor"] == "adj"
    assert final["before"]["t2_count"] == 3 and final["after"]["t2_count_reviewed"] == 2
    dec = log[log["action"] == "lesion_decision.recorded"].iloc[0]
    assert dec["actor"] == "reader1" and dec["before"] is None
    assert dec["after"]["decision"] == "reject" and dec["after"]["comment"] == "motion"


def pd_na():  # noqa: ANN201
    import pandas as pd

    return pd.NA


def test_readers_required_one_and_merge(env_sqlite) -> None:  # noqa: ANN001
    env = env_sqlite
    eng, r = env.db.engine, _readers(env)
    rs.ensure_readers_required(eng, 1, actor="test")
    vid, rid = env.visit_ids["sub-02"], result_id(env, "sub-02")
    rs.record_decision(
        eng, r["reader2"], vid, rid, T1, Decision("reject"), None, readers_required=1
    )
    rs.submit_visit(eng, r["reader2"], vid, rid, readers_required=1)
    with pytest.raises(rs.VisitFinal, match="is final"):  # one reader makes it final
        rs.submit_visit(eng, r["reader1"], vid, rid, readers_required=1)
    df = reviewed_counts(env.db)  # the rule stored in the database (1)
    row = df[df["participant_id"] == "sub-02"].iloc[0]
    assert row["review_status"] == "final" and row["t2_count_reviewed"] == 0
    assert pd_na() is row["gd_count_reviewed"]  # no Gd+ inputs
    assert (
        reviewed_counts(env.db, readers_required=2)
        .set_index("participant_id")
        .loc["sub-02", "review_status"]
        == "in_review"
    )
    merged = merge_reviewed_counts(env.db.visits_table(), df)
    assert list(merged["participant_id"]) == ["sub-01", "sub-02"]
    assert list(merged["t2_count"]) == [3, 1]
    assert merged["t2_count_reviewed"].tolist()[1] == 0


def add_same_lesion(env, *readers) -> None:  # noqa: ANN001
    """Each reader adds the lesion grown on sub-01's FLAIR at T2 lesion 1 (they overlap)."""
    from lesionq.io.derivatives import output_path
    from lesionq.review.added import add_lesion, grow_on_visit
    from lesionq.review.images import VolumeCache

    vid, rid = env.visit_ids["sub-01"], result_id(env, "sub-01")
    vol = VolumeCache().load(output_path(env.out, "01", "01", "flair_preproc"))
    g = grow_on_visit(
        vol.data, vol.affine, (2.5, 2.5, 3.0), threshold=3, mode="zscore", connectivity=6
    )
    for reader in readers:
        add_lesion(
            env.db.engine,
            reader,
            lambda conn, reader=reader: rs.reader_writable_state(conn, reader, vid, rid, 2),
            g,
            label="T2",
            threshold=3.0,
            mode="zscore",
            connectivity=6,
            location=None,
            comment=None,
        )


def test_changed_decision_is_a_new_row_and_db_refuses_updates(env) -> None:  # noqa: ANN001
    eng, r = env.db.engine, _readers(env)
    vid, rid = env.visit_ids["sub-01"], result_id(env, "sub-01")
    first = rs.record_decision(
        eng, r["reader1"], vid, rid, T1, Decision("reject"), None, readers_required=2
    )
    same = rs.record_decision(
        eng, r["reader1"], vid, rid, T1, Decision("reject"), None, readers_required=2
    )
    assert same is None
    second = rs.record_decision(
        eng, r["reader1"], vid, rid, T1, Decision("accept"), "no", readers_required=2
    )
    with eng.connect() as conn:
        rows = (
            conn.execute(sa.select(lesion_decisions).order_by(lesion_decisions.c.id))
            .mappings()
            .all()
        )
    assert [(x["id"], x["decision"], x["supersedes"]) for x in rows] == [
        (first.id, "reject", None),
        (second.id, "accept", first.id),
    ]
    log = env.db.audit_log()
    change = log[log["action"] == "lesion_decision.recorded"].iloc[-1]
    assert change["before"]["decision"] == "reject" and change["after"]["decision"] == "accept"
    rs.set_lock(eng, r["admin"], False, "only to have a study_lock row")
    rs.ensure_readers_required(eng, 2, actor="test")
    add_same_lesion(env, r["reader1"], r["reader2"])  # an added_lesions row (agreed)
    rs.submit_visit(eng, r["reader1"], vid, rid, readers_required=2)
    rs.record_decision(
        eng, r["reader2"], vid, rid, T1, Decision("reject"), None, readers_required=2
    )
    rs.submit_visit(eng, r["reader2"], vid, rid, readers_required=2)
    rs.adjudicate(eng, r["adj"], vid, rid, T1, Decision("accept"), None, readers_required=2)
    rs.record_view(eng, r["reader1"], vid, T1, readers_required=2)
    rs.amend(eng, r["admin"], vid, rid, T1, Decision("reject"), "second look", readers_required=2)
    for table in APPEND_ONLY_TABLES + ("audit_log",):
        with eng.connect() as conn:
            assert conn.exec_driver_sql(f"SELECT count(*) FROM {table}").scalar() > 0, table
        for sql in (f"UPDATE {table} SET id = id", f"DELETE FROM {table}"):
            with pytest.raises(sa.exc.DBAPIError, match="append-only"):
                with eng.begin() as conn:
                    conn.exec_driver_sql(sql)


def test_recomputed_visit_starts_a_new_review(env_sqlite) -> None:  # noqa: ANN001
    env = env_sqlite
    eng, r = env.db.engine, _readers(env)
    vid, rid = env.visit_ids["sub-02"], result_id(env, "sub-02")
    rs.record_decision(
        eng, r["reader1"], vid, rid, T1, Decision("reject"), None, readers_required=2
    )
    run = env.db.start_run(
        lesionq_version="0.1.0",
        protocol="p",
        settings_sha256="b" * 64,
        settings={},
        command="rerun",
    )
    les = write_visit(env.out, "02", "01", gd=False)
    record(env.db, run, visit_row("sub-02", "ses-01", les, False), les, inputs="x" * 64)
    with pytest.raises(rs.ReviewRefused, match="recomputed") as err:
        rs.record_decision(
            eng, r["reader1"], vid, rid, T1, Decision("accept"), None, readers_required=2
        )
    assert err.value.status_code == 409
    with eng.connect() as conn:
        st = rs.load_state(conn, vid, 2)
    assert st.visit.result_id != rid and st.decisions == {} and st.outcome.status == "not_started"


def test_lock_refuses_decisions(env_sqlite) -> None:  # noqa: ANN001
    env = env_sqlite
    eng, r = env.db.engine, _readers(env)
    vid, rid = env.visit_ids["sub-01"], result_id(env, "sub-01")
    with pytest.raises(rs.ReviewRefused):
        rs.set_lock(eng, r["reader1"], True, "no")
    rs.set_lock(eng, r["admin"], True, "database lock for the interim analysis")
    for call in (
        lambda: rs.record_decision(
            eng, r["reader1"], vid, rid, T1, Decision("reject"), None, readers_required=2
        ),
        lambda: rs.submit_visit(eng, r["reader1"], vid, rid, readers_required=2),
    ):
        with pytest.raises(rs.ReviewRefused, match="locked") as err:
            call()
        assert err.value.status_code == 403
    rs.set_lock(eng, r["admin"], False, None)
    assert rs.record_decision(
        eng, r["reader1"], vid, rid, T1, Decision("reject"), None, readers_required=2
    )
    actions = list(env.db.audit_log()["action"])
    assert actions.count("study.locked") == 1 and actions.count("study.unlocked") == 1


# ----------------------------------------------------------------------------- over HTTP


def _decide(c, csrf, env, vid, lesion, choice, **extra):  # noqa: ANN001, ANN202
    data = {
        "csrf_token": csrf,
        "result_id": result_id(env, "sub-01"),
        "lesion": lesion,
        "choice": choice,
        **extra,
    }
    return c.post(f"/visits/{vid}/decision", data=data, follow_redirects=False)


def test_reader_cannot_act_as_another(clients, env_sqlite) -> None:  # noqa: ANN001
    env = env_sqlite
    a, b = clients(), clients()
    csrf_a, csrf_b = login(a, "reader1"), login(b, "reader2")
    vid = env.visit_ids["sub-01"]
    assert _decide(b, csrf_b, env, vid, "T2:1", "reject").status_code == 303
    b_row = env.db.audit_log().iloc[-1]
    # reader1 forges reader fields and the id of reader2's decision: only reader1's row changes
    r = _decide(
        a,
        csrf_a,
        env,
        vid,
        "T2:1",
        "relabel:artefact",
        reader_id="2",
        reader="reader2",
        username="reader2",
        supersedes=str(b_row["entity_id"]),
        decision_id=str(b_row["entity_id"]),
    )
    assert r.status_code == 303
    with env.db.engine.connect() as conn:
        st = rs.load_state(conn, vid, 2)
    r1, r2 = _readers(env)["reader1"], _readers(env)["reader2"]
    assert st.own(r2.id) == {T1: Decision("reject")}
    assert st.own(r1.id) == {T1: Decision("relabel", "artefact")}
    # reader1 does not see reader2's decision on the visit page before submitting
    page = a.get(f"/visits/{vid}").text
    assert "reject" not in page.split('id="lesion-T2-1"')[1].split("</tr>")[0].split("<select")[0]
    # reader1 cannot submit for reader2, and its own submission leaves reader2 unsubmitted
    assert (
        a.post(
            f"/visits/{vid}/submit",
            data={
                "csrf_token": csrf_a,
                "result_id": result_id(env, "sub-01"),
                "reader_id": str(r2.id),
                "confirm": "1",
            },
            follow_redirects=False,
        ).status_code
        == 303
    )
    with env.db.engine.connect() as conn:
        st = rs.load_state(conn, vid, 2)
    assert [s.username for s in st.submissions] == ["reader1"]
    # after submitting, reader1 can no longer change anything
    assert _decide(a, csrf_a, env, vid, "T2:2", "reject").status_code == 409


def test_http_flow_counts_and_blinding(clients, env_sqlite) -> None:  # noqa: ANN001
    env = env_sqlite
    vid = env.visit_ids["sub-01"]
    a, b, adj = clients(), clients(), clients()
    csrf_a, csrf_b, csrf_adj = login(a, "reader1"), login(b, "reader2"), login(adj, "adj")
    page = a.get(f"/visits/{vid}")
    assert page.status_code == 200
    assert 'id="provisional-t2-count">3<' in page.text
    for word in ("treatment", "arm", "/tmp", str(env.out)):
        assert word not in page.text.lower() if word.islower() else word not in page.text
    assert _decide(a, csrf_a, env, vid, "T2:3", "reject").status_code == 303
    assert 'id="provisional-t2-count">2<' in a.get(f"/visits/{vid}").text
    assert _decide(a, csrf_a, env, vid, "T2:9", "reject").status_code == 404
    assert _decide(a, csrf_a, env, vid, "T2:1", "relabel:vessel-ish").status_code == 400
    assert _decide(a, csrf_a, env, vid, "../../x", "reject").status_code == 400
    assert (
        a.post(
            f"/visits/{vid}/submit",
            data={"csrf_token": csrf_a, "result_id": result_id(env, "sub-01"), "confirm": "1"},
            follow_redirects=False,
        ).status_code
        == 303
    )
    assert adj.get(f"/adjudicate/{vid}").status_code == 409  # reader2 has not submitted
    assert (
        b.post(
            f"/visits/{vid}/submit",
            data={"csrf_token": csrf_b, "result_id": result_id(env, "sub-01"), "confirm": "1"},
            follow_redirects=False,
        ).status_code
        == 303
    )
    work = adj.get("/?status=awaiting_adjudication")
    assert f'href="/adjudicate/{vid}"' in work.text
    adj_page = adj.get(f"/adjudicate/{vid}")
    # blinded: the adjudicator sees "Reader A" / "Reader B", never the readers' names
    assert (
        adj_page.status_code == 200 and "Reader A" in adj_page.text and "Reader B" in adj_page.text
    )
    assert "reader1" not in adj_page.text and "reader2" not in adj_page.text
    assert 'class="disagree"' in adj_page.text
    r = adj.post(
        f"/adjudicate/{vid}",
        data={
            "csrf_token": csrf_adj,
            "result_id": result_id(env, "sub-01"),
            "lesion": "T2:3",
            "choice": "reject",
        },
        follow_redirects=False,
    )
    assert r.status_code == 303
    assert 'id="reviewed-t2-count">2<' in adj.get(f"/visits/{vid}").text
    # a reader of the visit may not adjudicate it (even with the adjudicator role the rule holds)
    assert a.get(f"/adjudicate/{vid}").status_code == 403
    # worklist filters
    assert "sub-02" not in a.get("/?site=LJU").text and "sub-01" in a.get("/?site=LJU").text
    final_list = a.get("/?status=final").text
    assert f'id="visit-{vid}"' in final_list and "sub-02" not in final_list
    assert a.get("/?status=bogus").status_code == 400
    row = reviewed_counts(env.db).set_index("participant_id").loc["sub-01"]
    assert row["review_status"] == "final" and row["t2_count_reviewed"] == 2


def test_no_route_modifies_the_audit_log(app, clients, env_sqlite) -> None:  # noqa: ANN001
    c = clients()
    csrf = login(c, "admin")
    before = env_sqlite.db.audit_log()
    for method in ("DELETE", "PUT", "PATCH"):
        for path in ("/", "/admin/readers", "/admin/lock", "/audit", "/audit_log"):
            r = c.request(method, path, data={"csrf_token": csrf})
            assert r.status_code in (404, 405), (method, path)
    assert c.post("/audit_log", data={"csrf_token": csrf}).status_code in (404, 405)
    after = env_sqlite.db.audit_log()
    pd_testing = __import__("pandas").testing
    pd_testing.assert_frame_equal(after.iloc[: len(before)], before)
    for route in app.routes:
        assert "audit" not in getattr(route, "path", "")
