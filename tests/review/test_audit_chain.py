"""The audit log: hash chain and ``lesionq audit verify``, refused requests, client address,
keyed hash of unknown login names. Chain tests run on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import threading

import pytest
import sqlalchemy as sa
from alembic import command
from review_helpers import csrf_of, login, post_login

from lesionq.cli.main import main
from lesionq.store import ResultsDB, alembic_config
from lesionq.store.auditchain import GENESIS, verify_chain


def _verify(url: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main(["audit", "verify", "--db", url])
    return code, capsys.readouterr().out


def _fill(db: ResultsDB, n: int = 5) -> list[int]:
    for i in range(n):
        db.audit(actor=f"user{i}", action="test.event", entity="t", entity_id=i, after={"i": i})
    return [int(x) for x in db.audit_log()["id"]]


def _tamper(db: ResultsDB, sql: str) -> None:
    """Run ``sql`` on audit_log with its append-only triggers dropped (as an intruder would)."""
    with db.engine.begin() as conn:
        if conn.dialect.name == "sqlite":
            conn.exec_driver_sql("DROP TRIGGER IF EXISTS audit_log_no_update")
            conn.exec_driver_sql("DROP TRIGGER IF EXISTS audit_log_no_delete")
        else:
            conn.exec_driver_sql("DROP TRIGGER IF EXISTS audit_log_no_update_delete ON audit_log")
        conn.exec_driver_sql(sql)


def test_verify_passes_on_an_untouched_log(db_url: str, capsys) -> None:  # noqa: ANN001
    with ResultsDB.open(db_url) as db:
        ids = _fill(db)
        log = db.audit_log()
        assert log["prev_hash"].iloc[0] == GENESIS
        assert list(log["prev_hash"].iloc[1:]) == list(log["row_hash"].iloc[:-1])
    code, out = _verify(db_url, capsys)
    assert code == 0, out
    assert f"OK, {len(ids)} rows, head {log['row_hash'].iloc[-1]}" in out


def test_verify_names_a_changed_row(db_url: str, capsys) -> None:  # noqa: ANN001
    with ResultsDB.open(db_url) as db:
        ids = _fill(db)
        _tamper(db, f"UPDATE audit_log SET detail = 'back-dated' WHERE id = {ids[2]}")
    code, out = _verify(db_url, capsys)
    assert code == 1
    assert f"FAILED at row {ids[2]}: row {ids[2]} was changed" in out


def test_verify_names_the_row_after_a_removed_one(db_url: str, capsys) -> None:  # noqa: ANN001
    with ResultsDB.open(db_url) as db:
        ids = _fill(db)
        _tamper(db, f"DELETE FROM audit_log WHERE id = {ids[2]}")
    code, out = _verify(db_url, capsys)
    assert code == 1
    assert f"FAILED at row {ids[3]}: row {ids[3]} does not follow row {ids[1]}" in out


def test_verify_catches_inserted_and_truncated_rows(db_url: str, capsys) -> None:  # noqa: ANN001
    with ResultsDB.open(db_url) as db:
        ids = _fill(db)
        with db.engine.begin() as conn:  # a back-dated INSERT passes the triggers
            conn.exec_driver_sql(
                "INSERT INTO audit_log (at, actor, action, entity) "
                "VALUES ('2020-01-01 00:00:00', 'intruder', 'x', 'y')"
            )
        code, out = _verify(db_url, capsys)
        assert code == 1 and "has no hash: inserted outside lesionq" in out
        _tamper(db, "DELETE FROM audit_log WHERE actor = 'intruder'")
        assert _verify(db_url, capsys)[0] == 0
        # the last row removed: the chain itself holds, the head does not
        _tamper(db, f"DELETE FROM audit_log WHERE id = {ids[-1]}")
        with db.engine.connect() as conn:
            report = verify_chain(conn)
        assert (
            not report.ok and report.bad_id is None and "at the end were removed" in report.problem
        )
    code, out = _verify(db_url, capsys)
    assert code == 1 and "FAILED at the end of the log" in out


def test_concurrent_appends_do_not_fork_the_chain(db_url: str) -> None:
    """Eight threads append at once (each its own connection); the chain stays one line."""
    with ResultsDB.open(db_url) as db:
        errors: list[BaseException] = []

        def work(k: int) -> None:
            try:
                for i in range(8):
                    db.audit(actor=f"t{k}", action="test.concurrent", entity="t", entity_id=i)
            except BaseException as exc:  # noqa: BLE001
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(k,)) for k in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors
        with db.engine.connect() as conn:
            report = verify_chain(conn)
        assert report.ok, report.problem
        assert report.n_rows == 64


def test_migration_chains_the_rows_written_before_it(db_url: str) -> None:
    """Rows of a 0004 database are chained by 0005 as found; later rows continue the chain."""
    with ResultsDB.open(db_url) as db:
        with db.engine.connect() as conn:
            with conn.begin():
                command.downgrade(alembic_config(conn), "0004_black_holes")
        with db.engine.begin() as conn:
            for i in range(3):
                conn.execute(
                    sa.text(
                        "INSERT INTO audit_log (at, actor, action, entity, after) "
                        "VALUES (:at, 'old', 'legacy.event', 't', :after)"
                    ),
                    {"at": f"2026-01-0{i + 1} 10:00:00.123456", "after": json.dumps({"n": i})},
                )
    with ResultsDB.open(db_url) as db:  # migrates to head
        db.audit(actor="new", action="test.event", entity="t", entity_id=None)
        log = db.audit_log()
        assert list(log["actor"]) == ["old", "old", "old", "new"]
        assert log["row_hash"].notna().all()
        with db.engine.connect() as conn:
            assert verify_chain(conn).ok


# ----------------------------------------------------------------------------- web app


def test_refused_requests_are_audited_with_the_client_address(clients, env_sqlite) -> None:  # noqa: ANN001
    env = env_sqlite
    c = clients()
    csrf = login(c, "reader1")
    vid = env.visit_ids["sub-01"]
    assert c.post(f"/visits/{vid}/decision", data={"csrf_token": "forged"}).status_code == 403
    evil = c.post("/logout", data={"csrf_token": csrf}, headers={"Origin": "http://evil.example"})
    assert evil.status_code == 403
    assert c.get("/admin/readers").status_code == 403  # role refusal
    anon = clients()
    assert anon.post(f"/visits/{vid}/submit", data={}).status_code == 401
    log = env.db.audit_log()
    refused = log[log["action"] == "request.refused"]
    got = [(a["status"], a["method"], a["path"]) for a in refused["after"]]
    assert got == [
        (403, "POST", f"/visits/{vid}/decision"),
        (403, "POST", "/logout"),
        (403, "GET", "/admin/readers"),
        (401, "POST", f"/visits/{vid}/submit"),
    ]
    assert list(refused["actor"]) == ["reader1", "(anonymous)", "reader1", "(anonymous)"]
    assert "CSRF" in refused["detail"].iloc[0] and "evil.example" in refused["detail"].iloc[1]
    # every row written through the app carries the client address
    web = log[log["action"].isin(["reader.login", "request.refused"])]
    assert set(web["client"]) == {"testclient"}
    added = log[log["action"] == "reader.added"]  # written outside a request
    assert added["client"].isna().all()


def test_failed_login_names_only_existing_accounts(clients, env_sqlite) -> None:  # noqa: ANN001
    env = env_sqlite
    typed = "Sup3r-Secret-Passw0rd"  # a password typed into the username field
    for _ in range(2):
        assert post_login(clients(), "reader1", "wrong-password-x").status_code == 401
        r = clients().post(
            "/login",
            data={"username": typed, "password": "x", "csrf_token": "bad"},
        )
        assert r.status_code == 403  # the login form's CSRF refusal, audited
        page = clients()
        form = page.get("/login")
        r = page.post(
            "/login",
            data={"username": typed, "password": "x" * 12, "csrf_token": csrf_of(form.text)},
        )
        assert r.status_code == 401
    log = env.db.audit_log()
    assert typed not in log.to_string()
    failed = log[log["action"] == "reader.login_failed"]
    actors = list(failed["actor"])
    assert actors[0] == actors[2] == "reader1"
    assert actors[1] == actors[3] and actors[1].startswith("(unknown account ")
    assert len(actors[1]) == len("(unknown account )") + 24
    refused = log[log["action"] == "request.refused"]
    assert [a["path"] for a in refused["after"]] == ["/login", "/login"]


def test_repeated_anonymous_page_refusals_are_audited_once_per_window(clients, env_sqlite) -> None:  # noqa: ANN001
    """A client polling a page without a session does not grow the audit log without
    bound; refused writes and a reader's refusals are all audited."""
    env = env_sqlite
    vid = env.visit_ids["sub-01"]
    anon = clients()
    for _ in range(5):  # sent to the login page, audited once
        assert anon.get(f"/visits/{vid}", follow_redirects=False).status_code == 303
    for _ in range(2):  # a refused write, audited each time
        assert anon.post(f"/visits/{vid}/submit", data={}).status_code == 401
    reader = clients()
    csrf = login(reader, "reader1")
    for _ in range(3):  # a logged-in reader's refusals are always audited
        assert reader.get("/admin/readers").status_code == 403
    assert csrf
    log = env.db.audit_log()
    refused = log[log["action"] == "request.refused"]
    got = [(actor, a["path"]) for actor, a in zip(refused["actor"], refused["after"], strict=True)]
    assert got == [
        ("(anonymous)", f"/visits/{vid}"),
        ("(anonymous)", f"/visits/{vid}/submit"),
        ("(anonymous)", f"/visits/{vid}/submit"),
        ("reader1", "/admin/readers"),
        ("reader1", "/admin/readers"),
        ("reader1", "/admin/readers"),
    ]


def test_refusal_throttle_forgets_after_the_window() -> None:
    from lesionq.review.routes.context import RefusalThrottle

    t = RefusalThrottle(window_s=60.0, max_keys=2)
    key = ("1.2.3.4", "GET", "/", 401)
    assert t.should_audit(key, 0.0)
    assert not t.should_audit(key, 59.9)
    assert t.should_audit(key, 60.0)
    # past max_keys, entries older than the window are dropped, recent ones kept
    assert t.should_audit(("a",), 61.0) and t.should_audit(("b",), 200.0)
    assert not t.should_audit(("b",), 201.0)
