"""Accounts, login, sessions, CSRF and the authentication of every route."""

from __future__ import annotations

import re
import time

import pytest
from fastapi.routing import APIRoute
from review_helpers import PASSWORDS, csrf_of, login, post_login, result_id

from lesionq.errors import InputError
from lesionq.review import auth, create_app
from lesionq.review.app import LOGIN_CSRF_COOKIE, SESSION_COOKIE


def test_hash_and_verify() -> None:
    h = auth.hash_password("a long password")
    assert h.startswith("scrypt$16384$8$1$") and "a long password" not in h
    assert auth.verify_password("a long password", h)
    assert not auth.verify_password("a long passwore", h)
    assert not auth.verify_password("a long password", "md5$abc")
    assert auth.hash_password("a long password") != h  # fresh salt


def test_add_reader_rules(env_sqlite) -> None:  # noqa: ANN001
    eng = env_sqlite.db.engine
    with pytest.raises(InputError, match="exists already"):
        auth.add_reader(eng, "reader1", "reader", "another-password", actor="t")
    with pytest.raises(InputError, match="at least 10"):
        auth.add_reader(eng, "shorty", "reader", "short", actor="t")
    with pytest.raises(InputError, match="role"):
        auth.add_reader(eng, "boss", "root", "a-long-password", actor="t")
    with pytest.raises(InputError, match="username"):
        auth.add_reader(eng, "../etc", "reader", "a-long-password", actor="t")
    stored = [r["username"] for r in auth.list_readers(eng)]
    assert stored == ["adj", "admin", "reader1", "reader2"]


def test_login_ok_and_bad_password(clients, env_sqlite) -> None:  # noqa: ANN001
    c = clients()
    page = c.get("/login")
    assert page.status_code == 200 and LOGIN_CSRF_COOKIE in page.cookies
    bad = c.post(
        "/login",
        data={
            "username": "reader1",
            "password": "nope-nope-nope",
            "csrf_token": csrf_of(page.text),
        },
        follow_redirects=False,
    )
    assert bad.status_code == 401 and SESSION_COOKIE not in c.cookies
    assert "Wrong username or password" in bad.text
    unknown = c.post(
        "/login",
        data={"username": "ghost", "password": "nope-nope-nope", "csrf_token": csrf_of(bad.text)},
        follow_redirects=False,
    )
    assert unknown.status_code == 401
    login(c, "reader1")
    home = c.get("/")
    assert home.status_code == 200 and 'id="whoami">reader1 (reader)' in home.text
    log = env_sqlite.db.audit_log()
    failed = log[log["action"] == "reader.login_failed"]
    # an unknown name (perhaps a password typed into the wrong field) is logged keyed-hashed
    assert failed["actor"].iloc[0] == "reader1"
    assert failed["actor"].iloc[1].startswith("(unknown account ")
    assert "ghost" not in log.to_string()
    assert (log["action"] == "reader.login").sum() == 1


def test_failed_logins_are_throttled_per_username(env) -> None:  # noqa: ANN001
    """MAX_FAILED_LOGINS wrong passwords lock that username (even the right password) for
    the window; another account is unaffected; the lock ends when the failures age out.
    On SQLite and PostgreSQL (the count is an audit-log query)."""
    eng = env.db.engine
    for _ in range(auth.MAX_FAILED_LOGINS):
        assert auth.login(eng, "reader1", "wrong-password!", ttl_s=60) is None
    with pytest.raises(auth.LoginThrottled, match="too many failed logins") as exc:
        auth.login(eng, "reader1", PASSWORDS["reader1"], ttl_s=60)
    assert 0 < exc.value.retry_after_s <= auth.FAILED_LOGIN_WINDOW_S
    assert auth.login(eng, "reader2", PASSWORDS["reader2"], ttl_s=60) is not None
    log = env.db.audit_log()
    assert (log["action"] == "reader.login_throttled").sum() == 1
    # a window shorter than the failures' age: they no longer count
    time.sleep(1.1)
    assert auth.login(eng, "reader1", PASSWORDS["reader1"], ttl_s=60, window_s=1.0) is not None


def test_throttled_login_form_answers_429(clients, env_sqlite) -> None:  # noqa: ANN001
    for _ in range(auth.MAX_FAILED_LOGINS):
        auth.login(env_sqlite.db.engine, "reader1", "wrong-password!", ttl_s=60)
    c = clients()
    r = post_login(c, "reader1")
    assert r.status_code == 429 and int(r.headers["Retry-After"]) >= 1
    assert "Too many failed logins" in r.text and SESSION_COOKIE not in c.cookies


def test_session_cookie_flags(clients) -> None:  # noqa: ANN001
    c = clients()
    r = post_login(c, "reader1")
    cookie = [v for k, v in r.headers.multi_items() if k == "set-cookie" and SESSION_COOKIE in v]
    assert len(cookie) == 1
    flags = cookie[0].lower()
    assert "httponly" in flags and "samesite=strict" in flags and "path=/" in flags


def test_login_form_needs_its_csrf_token(clients) -> None:  # noqa: ANN001
    c = clients()
    c.get("/login")
    r = c.post(
        "/login",
        data={"username": "reader1", "password": PASSWORDS["reader1"], "csrf_token": "forged"},
        follow_redirects=False,
    )
    assert r.status_code == 403 and SESSION_COOKIE not in c.cookies


def test_session_expires(env_sqlite) -> None:  # noqa: ANN001
    from fastapi.testclient import TestClient

    app = create_app(env_sqlite.url, env_sqlite.out, session_ttl_s=1.5)
    try:
        c = TestClient(app)
        login(c, "reader1")
        assert c.get("/", follow_redirects=False).status_code == 200
        time.sleep(1.7)
        r = c.get("/", follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"] == "/login"
    finally:
        app.state.db.close()


def test_logout_invalidates_the_session(clients) -> None:  # noqa: ANN001
    c = clients()
    csrf = login(c, "reader1")
    token = c.cookies[SESSION_COOKIE]
    r = c.post("/logout", data={"csrf_token": csrf}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/login"
    # replaying the old cookie does not work
    c2 = clients()
    c2.cookies.set(SESSION_COOKIE, token)
    assert c2.get("/", follow_redirects=False).status_code == 303


def test_disabling_a_reader_ends_its_sessions(clients) -> None:  # noqa: ANN001
    r1, adm = clients(), clients()
    login(r1, "reader1")
    csrf = login(adm, "admin")
    r = adm.post(
        "/admin/readers",
        data={"csrf_token": csrf, "action": "disable", "username": "reader1"},
        follow_redirects=False,
    )
    assert r.status_code == 303
    assert r1.get("/", follow_redirects=False).status_code == 303
    assert clients().post(
        "/login", data={"username": "reader1", "password": PASSWORDS["reader1"]}
    ).status_code in (401, 403)


@pytest.mark.parametrize("token", [None, "", "wrong-token"])
def test_post_without_right_csrf_is_refused(clients, env_sqlite, token) -> None:  # noqa: ANN001
    c = clients()
    login(c, "reader1")
    vid = env_sqlite.visit_ids["sub-01"]
    data = {"result_id": result_id(env_sqlite, "sub-01"), "lesion": "T2:1", "choice": "reject"}
    if token is not None:
        data["csrf_token"] = token
    r = c.post(f"/visits/{vid}/decision", data=data, follow_redirects=False)
    assert r.status_code == 403 and "CSRF" in r.text
    assert not (env_sqlite.db.audit_log()["action"] == "lesion_decision.recorded").any()
    # logout needs it too
    assert c.post("/logout", data={}, follow_redirects=False).status_code == 403


def test_csrf_token_of_another_session_is_refused(clients, env_sqlite) -> None:  # noqa: ANN001
    a, b = clients(), clients()
    login(a, "reader1")
    csrf_b = login(b, "reader2")
    vid = env_sqlite.visit_ids["sub-01"]
    r = a.post(
        f"/visits/{vid}/decision",
        data={
            "csrf_token": csrf_b,
            "result_id": result_id(env_sqlite, "sub-01"),
            "lesion": "T2:1",
            "choice": "reject",
        },
        follow_redirects=False,
    )
    assert r.status_code == 403


def test_cross_origin_post_is_refused(clients, env_sqlite) -> None:  # noqa: ANN001
    c = clients()
    csrf = login(c, "reader1")
    vid = env_sqlite.visit_ids["sub-01"]
    r = c.post(
        f"/visits/{vid}/decision",
        data={
            "csrf_token": csrf,
            "result_id": result_id(env_sqlite, "sub-01"),
            "lesion": "T2:1",
            "choice": "reject",
        },
        headers={"Origin": "http://evil.example"},
        follow_redirects=False,
    )
    assert r.status_code == 403


def _concrete(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "1", path)


def _api_routes(routes: list) -> list[APIRoute]:
    """The APIRoutes, those of included routers too (recent FastAPI keeps these apart)."""
    out: list[APIRoute] = []
    for r in routes:
        if isinstance(r, APIRoute):
            out.append(r)
        elif hasattr(r, "original_router"):  # an APIRouter included in the app
            out += _api_routes(r.original_router.routes)
    return out


def test_every_route_but_login_needs_a_session(app, clients) -> None:  # noqa: ANN001
    c = clients()
    routes = _api_routes(app.routes)
    assert len(routes) >= 14
    seen = set()
    for route in routes:
        for method in route.methods:
            path = _concrete(route.path)
            seen.add((method, route.path))
            r = c.request(method, path, follow_redirects=False, data={"csrf_token": "x"})
            if route.path == "/login":
                assert r.status_code in (200, 403), (method, path, r.status_code)
                continue
            if method == "GET":
                assert r.status_code == 303 and r.headers["location"] == "/login", (method, path)
            else:
                assert r.status_code == 401, (method, path, r.status_code)
    assert {("GET", "/visits/{visit_id}/slice"), ("GET", "/figures/{visit_id}/{name}")} <= seen
    # no documentation / schema routes
    for path in ("/docs", "/redoc", "/openapi.json"):
        assert c.get(path).status_code == 404


def test_forged_cookie_is_refused(clients) -> None:  # noqa: ANN001
    c = clients()
    c.cookies.set(SESSION_COOKIE, "x" * 43)
    assert c.get("/", follow_redirects=False).status_code == 303


def test_role_rules(clients, env_sqlite) -> None:  # noqa: ANN001
    r1 = clients()
    csrf = login(r1, "reader1")
    assert r1.get("/admin/readers").status_code == 403
    assert (
        r1.post(
            "/admin/lock", data={"csrf_token": csrf, "action": "lock"}, follow_redirects=False
        ).status_code
        == 403
    )
    assert r1.get(f"/adjudicate/{env_sqlite.visit_ids['sub-01']}").status_code == 403
    adm = clients()
    csrf_a = login(adm, "admin")
    r = adm.post(
        f"/visits/{env_sqlite.visit_ids['sub-01']}/decision",
        data={
            "csrf_token": csrf_a,
            "result_id": result_id(env_sqlite, "sub-01"),
            "lesion": "T2:1",
            "choice": "reject",
        },
    )
    assert r.status_code == 403  # administrators do not read
    r = adm.post(
        "/admin/readers",
        data={
            "csrf_token": csrf_a,
            "action": "add",
            "username": "reader3",
            "role": "reader",
            "password": "reader3-password",
        },
        follow_redirects=False,
    )
    assert r.status_code == 303
    login(clients(), "reader3", "reader3-password")
    assert (
        adm.post(
            "/admin/readers",
            data={"csrf_token": csrf_a, "action": "disable", "username": "admin"},
        ).status_code
        == 409
    )
