"""Final means final: 409 on every decision path, amendments, versions, views, confirmation.

Also the smaller review defects of issue 17: blinded adjudication page with QC pictures,
worklist sorting, admin role change / password reset, long comments refused, another
visit's ``result_id``.
"""

from __future__ import annotations

import pytest
from review_helpers import PASSWORDS, csrf_of, login, post_login, result_id

from lesionq.batch.tables import visits_table
from lesionq.review import auth, reviewed_counts
from lesionq.review import state as rs
from lesionq.review.decisions import Decision, LesionKey

T1 = LesionKey("T2", 1)
KW = {"readers_required": 2}


def _readers(env) -> dict[str, auth.Reader]:  # noqa: ANN001
    return {n: auth.get_reader(env.db.engine, n) for n in ("reader1", "reader2", "adj", "admin")}


def _final_sub02(env) -> tuple[int, int]:  # noqa: ANN001
    """sub-02 (one T2 lesion): reader1 rejects, reader2 accepts, adj accepts -> final (1 lesion)."""
    eng, r = env.db.engine, _readers(env)
    vid, rid = env.visit_ids["sub-02"], result_id(env, "sub-02")
    rs.record_decision(eng, r["reader1"], vid, rid, T1, Decision("reject"), None, **KW)
    rs.submit_visit(eng, r["reader1"], vid, rid, **KW)
    rs.submit_visit(eng, r["reader2"], vid, rid, **KW)
    rs.adjudicate(eng, r["adj"], vid, rid, T1, Decision("accept"), None, **KW)
    return vid, rid


def _row(env, pid: str = "sub-02"):  # noqa: ANN001, ANN202
    return reviewed_counts(env.db).set_index("participant_id").loc[pid]


def test_final_visit_refuses_every_write_path(env) -> None:  # noqa: ANN001
    """State level, SQLite and PostgreSQL: decision, submission, adjudication all raise 409."""
    eng, r = env.db.engine, _readers(env)
    vid, rid = _final_sub02(env)
    row = _row(env)
    assert row["review_status"] == "final" and row["t2_count_reviewed"] == 1
    assert row["review_version"] == 1
    calls = {
        "decision (another reader)": lambda: rs.record_decision(
            eng, r["adj"], vid, rid, T1, Decision("reject"), None, **KW
        ),
        "decision (a reader of it)": lambda: rs.record_decision(
            eng, r["reader1"], vid, rid, T1, Decision("accept"), None, **KW
        ),
        "submission": lambda: rs.submit_visit(eng, r["adj"], vid, rid, **KW),
        "re-adjudication": lambda: rs.adjudicate(
            eng, r["adj"], vid, rid, T1, Decision("reject"), None, **KW
        ),
    }
    for what, call in calls.items():
        with pytest.raises(rs.VisitFinal, match="is final .*amendment") as info:
            call()
        assert info.value.status_code == 409, what
    # nothing changed: still version 1, same counts, no new decision audited
    assert _row(env)["t2_count_reviewed"] == 1 and _row(env)["review_version"] == 1
    actions = list(env.db.audit_log()["action"])
    assert actions.count("adjudication.recorded") == 1


def test_final_visit_answers_409_over_http_and_audits_it(clients, env_sqlite) -> None:  # noqa: ANN001
    env = env_sqlite
    vid, rid = _final_sub02(env)
    adj = clients()
    csrf = login(adj, "adj")
    posts = {
        f"/visits/{vid}/decision": {"lesion": "T2:1", "choice": "reject"},
        f"/adjudicate/{vid}": {"lesion": "T2:1", "choice": "reject"},
        f"/visits/{vid}/submit": {"confirm": "1"},
    }
    for path, data in posts.items():
        r = adj.post(path, data={"csrf_token": csrf, "result_id": rid, **data})
        assert r.status_code == 409, path
        assert "is final" in r.text and "amendment" in r.text
    # the submission's confirmation step refuses too
    assert (
        adj.post(f"/visits/{vid}/submit", data={"csrf_token": csrf, "result_id": rid}).status_code
        == 409
    )
    # the adjudication page shows the visit as final, without decision forms, with an amend link
    page = adj.get(f"/adjudicate/{vid}").text
    assert 'id="final-note"' in page and f'href="/visits/{vid}/amend"' in page
    assert 'class="inline adjudicate"' not in page
    log = env.db.audit_log()
    refused = log[log["action"] == "request.refused"]
    statuses = [a["status"] for a in refused["after"]]
    assert statuses.count(409) == 4
    assert set(refused["actor"]) == {"adj"} and set(refused["client"]) == {"testclient"}


def test_amendment_needs_role_and_reason_and_makes_a_new_version(env) -> None:  # noqa: ANN001
    """SQLite and PostgreSQL."""
    eng, r = env.db.engine, _readers(env)
    vid2, rid2 = env.visit_ids["sub-01"], result_id(env, "sub-01")
    with pytest.raises(rs.ReviewRefused, match="not final") as info:  # nothing to amend yet
        rs.amend(eng, r["admin"], vid2, rid2, T1, Decision("reject"), "why", **KW)
    assert info.value.status_code == 409
    vid, rid = _final_sub02(env)
    reject = Decision("reject")
    for who, code in (("reader2", 403), ("reader1", 403)):  # readers never amend
        with pytest.raises(rs.ReviewRefused) as info:
            rs.amend(eng, r[who], vid, rid, T1, reject, "a reason", **KW)
        assert info.value.status_code == code
    for reason in (None, "", "   "):
        with pytest.raises(rs.ReviewRefused, match="needs a reason") as info:
            rs.amend(eng, r["admin"], vid, rid, T1, reject, reason, **KW)
        assert info.value.status_code == 400
    with pytest.raises(rs.ReviewRefused, match="at most 2000"):
        rs.amend(eng, r["admin"], vid, rid, T1, reject, "x" * 2001, **KW)
    assert _row(env)["review_version"] == 1  # none of that changed anything
    # an adjudicator who did not read the visit amends it: version 2, new counts
    a = rs.amend(eng, r["adj"], vid, rid, T1, reject, "vessel on the SWI", **KW)
    assert a is not None and a.version == 2
    row = _row(env)
    assert (row["review_status"], row["t2_count_reviewed"], row["review_version"]) == (
        "final",
        0,
        2,
    )
    # the same decision again changes nothing (no version 3)
    assert rs.amend(eng, r["admin"], vid, rid, T1, reject, "again", **KW) is None
    # an administrator amends back: version 3
    assert rs.amend(eng, r["admin"], vid, rid, T1, Decision("accept"), "re-read", **KW).version == 3
    row = _row(env)
    assert (row["t2_count_reviewed"], row["review_version"]) == (1, 3)
    # still locked against plain decisions
    with pytest.raises(rs.VisitFinal):
        rs.adjudicate(eng, r["adj"], vid, rid, T1, reject, None, **KW)
    log = env.db.audit_log()
    amended = log[log["action"] == "amendment.recorded"]
    assert list(amended["actor"]) == ["adj", "admin"]
    first = amended.iloc[0]
    assert first["after"]["reason"] == "vessel on the SWI" and first["after"]["version"] == 2
    assert first["before"]["version"] == 1 and first["before"]["decision"] == "accept"
    assert first["before"]["reviewed"]["t2_count_reviewed"] == 1
    assert first["after"]["reviewed"]["t2_count_reviewed"] == 0
    # the exports show the version: reviewed counts and the merged visits.tsv
    merged = visits_table(env.db).set_index("participant_id")
    assert merged.loc["sub-02", "review_version"] == 3
    assert merged.loc["sub-01", "review_version"] is pd_na()


def pd_na():  # noqa: ANN201
    import pandas as pd

    return pd.NA


def test_amendment_over_http(clients, env_sqlite) -> None:  # noqa: ANN001
    env = env_sqlite
    vid, rid = _final_sub02(env)
    reader, adj, admin = clients(), clients(), clients()
    csrf_r, csrf_adj, _ = (
        login(reader, "reader1"),
        login(adj, "adj"),
        login(admin, "admin"),
    )
    data = {"result_id": rid, "lesion": "T2:1", "choice": "reject", "reason": "artefact"}
    assert reader.get(f"/visits/{vid}/amend").status_code == 403
    assert (
        reader.post(f"/visits/{vid}/amend", data={"csrf_token": csrf_r, **data}).status_code == 403
    )
    no_reason = adj.post(
        f"/visits/{vid}/amend", data={"csrf_token": csrf_adj, **data, "reason": ""}
    )
    assert no_reason.status_code == 400 and "needs a reason" in no_reason.text
    page = adj.get(f"/visits/{vid}/amend")
    assert page.status_code == 200 and 'id="review-version">1<' in page.text
    ok = adj.post(
        f"/visits/{vid}/amend", data={"csrf_token": csrf_adj, **data}, follow_redirects=False
    )
    assert ok.status_code == 303
    page = admin.get(f"/visits/{vid}/amend").text
    assert 'id="review-version">2<' in page and "artefact" in page
    assert f'href="/visits/{vid}/amend"' in admin.get("/").text  # the worklist links it
    visits = (env.out / "visits.tsv").read_text()  # the app rewrote OUT/visits.tsv
    assert "review_version" in visits.splitlines()[0]
    # a reader's refused attempt is audited (403), the amendment with its reason
    log = env.db.audit_log()
    assert log[log["action"] == "amendment.recorded"].iloc[0]["after"]["reason"] == "artefact"
    refused = log[log["action"] == "request.refused"]
    assert any(a["status"] == 403 and a["path"].endswith("/amend") for a in refused["after"])


def test_views_are_recorded_and_submit_asks_for_confirmation(clients, env_sqlite) -> None:  # noqa: ANN001
    env = env_sqlite
    vid, rid = env.visit_ids["sub-01"], result_id(env, "sub-01")
    c = clients()
    csrf = login(c, "reader1")
    assert c.get(f"/visits/{vid}?lesion=T2:1").status_code == 200  # "show" records a view
    r = c.post(f"/visits/{vid}/viewed", json={"lesion": "T2:2"}, headers={"X-CSRF-Token": csrf})
    assert r.status_code == 200 and r.json() == {"lesion": "T2:2", "first_view": True}
    again = c.post(f"/visits/{vid}/viewed", data={"csrf_token": csrf, "lesion": "T2:2"})
    assert again.json()["first_view"] is False
    assert c.post(f"/visits/{vid}/viewed", json={"lesion": "T2:2"}).status_code == 403  # CSRF
    assert (
        c.post(
            f"/visits/{vid}/viewed", json={"lesion": "T2:99"}, headers={"X-CSRF-Token": csrf}
        ).status_code
        == 404
    )
    with env.db.engine.connect() as conn:
        st = rs.load_state(conn, vid, 2)
    me = _readers(env)["reader1"]
    assert set(st.unviewed(me.id)) == {LesionKey("T2", 3), LesionKey("Gd", 1)}
    # submit without confirm=1: the confirmation page lists the lesions never opened
    ask = c.post(f"/visits/{vid}/submit", data={"csrf_token": csrf, "result_id": rid})
    assert ask.status_code == 200 and 'id="confirm-submit"' in ask.text
    assert 'id="unviewed-T2-3"' in ask.text and 'id="unviewed-Gd-1"' in ask.text
    assert 'id="unviewed-T2-1"' not in ask.text
    with env.db.engine.connect() as conn:
        assert rs.load_state(conn, vid, 2).submitted_by(me.id) is None  # nothing submitted yet
    done = c.post(
        f"/visits/{vid}/submit",
        data={"csrf_token": csrf_of(ask.text), "result_id": rid, "confirm": "1"},
        follow_redirects=False,
    )
    assert done.status_code == 303
    log = env.db.audit_log()
    sub = log[log["action"] == "visit_review.submitted"].iloc[0]
    assert sorted(sub["after"]["not_viewed"]) == ["Gd:1", "T2:3"]


def test_adjudication_page_is_blinded_and_shows_qc_pictures(clients, env_sqlite) -> None:  # noqa: ANN001
    env = env_sqlite
    eng, r = env.db.engine, _readers(env)
    vid, rid = env.visit_ids["sub-01"], result_id(env, "sub-01")
    rs.record_decision(eng, r["reader1"], vid, rid, T1, Decision("reject"), "small", **KW)
    rs.submit_visit(eng, r["reader1"], vid, rid, **KW)
    rs.submit_visit(eng, r["reader2"], vid, rid, **KW)
    adj = clients()
    login(adj, "adj")
    page = adj.get(f"/adjudicate/{vid}").text
    assert "<th>Reader A</th>" in page and "<th>Reader B</th>" in page
    assert "reader1" not in page and "reader2" not in page
    assert 'id="figures"' in page and f"/figures/{vid}/" in page


def test_worklist_sorts_by_whitelisted_columns(clients, env_sqlite) -> None:  # noqa: ANN001
    ids = env_sqlite.visit_ids
    c = clients()
    login(c, "reader1")

    def order(sort: str) -> list[str]:
        text = c.get(f"/?sort={sort}").text
        return sorted(ids, key=lambda p: text.index(f'id="visit-{ids[p]}"'))

    assert order("participant") == ["sub-01", "sub-02"]
    assert order("-participant") == ["sub-02", "sub-01"]
    assert order("t2") == ["sub-02", "sub-01"]  # 1 and 3 automatic T2 lesions
    assert order("-t2") == ["sub-01", "sub-02"]
    assert order("site") == ["sub-01", "sub-02"]  # LJU, ZAG
    for bad in ("password_hash", "participant;drop", "--t2"):
        assert c.get(f"/?sort={bad}").status_code == 400
    assert 'id="sort-t2"' in c.get("/").text


def test_admin_changes_a_role_and_resets_a_password(clients, env_sqlite) -> None:  # noqa: ANN001
    env = env_sqlite
    admin, reader = clients(), clients()
    csrf = login(admin, "admin")
    login(reader, "reader2")
    r = admin.post(
        "/admin/readers",
        data={"csrf_token": csrf, "action": "role", "username": "reader2", "role": "adjudicator"},
        follow_redirects=False,
    )
    assert r.status_code == 303
    assert auth.get_reader(env.db.engine, "reader2").role == "adjudicator"
    assert "reader2 (adjudicator)" in reader.get("/").text  # at once
    own = admin.post(
        "/admin/readers",
        data={"csrf_token": csrf, "action": "role", "username": "admin", "role": "reader"},
    )
    assert own.status_code == 409
    bad = admin.post(
        "/admin/readers",
        data={"csrf_token": csrf, "action": "role", "username": "reader2", "role": "root"},
    )
    assert bad.status_code == 400
    new_pw = "a-brand-new-password"
    r = admin.post(
        "/admin/readers",
        data={"csrf_token": csrf, "action": "password", "username": "reader1", "password": new_pw},
        follow_redirects=False,
    )
    assert r.status_code == 303
    assert post_login(clients(), "reader1", PASSWORDS["reader1"]).status_code == 401
    assert post_login(clients(), "reader1", new_pw).status_code == 303
    log = env.db.audit_log()
    role = log[log["action"] == "reader.role_changed"].iloc[0]
    assert role["actor"] == "admin" and role["before"]["role"] == "reader"
    assert role["after"]["role"] == "adjudicator"
    pw = log[log["action"] == "reader.password_changed"]
    assert list(pw["actor"]) == ["admin"] and new_pw not in log.to_string()


def test_long_comment_is_refused_not_cut(clients, env_sqlite) -> None:  # noqa: ANN001
    env = env_sqlite
    vid, rid = env.visit_ids["sub-01"], result_id(env, "sub-01")
    c = clients()
    csrf = login(c, "reader1")
    data = {"csrf_token": csrf, "result_id": rid, "lesion": "T2:1", "choice": "reject"}
    long = c.post(f"/visits/{vid}/decision", data={**data, "comment": "y" * 2001})
    assert long.status_code == 400 and "2001 characters" in long.text
    with env.db.engine.connect() as conn:
        assert rs.load_state(conn, vid, 2).decisions == {}  # nothing recorded
    ok = c.post(
        f"/visits/{vid}/decision", data={**data, "comment": "y" * 2000}, follow_redirects=False
    )
    assert ok.status_code == 303
    with env.db.engine.connect() as conn:
        rows = rs.load_state(conn, vid, 2).decisions
    assert len(next(iter(rows.values()))[T1].comment) == 2000


def test_another_visits_result_id_is_named_as_such(clients, env_sqlite) -> None:  # noqa: ANN001
    env = env_sqlite
    vid = env.visit_ids["sub-01"]
    c = clients()
    csrf = login(c, "reader1")
    other = result_id(env, "sub-02")
    r = c.post(
        f"/visits/{vid}/decision",
        data={"csrf_token": csrf, "result_id": other, "lesion": "T2:1", "choice": "reject"},
    )
    assert r.status_code == 400
    assert f"result {other} is not a result of sub-01 ses-01" in r.text
    assert "recomputed" not in r.text
