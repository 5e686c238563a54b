"""``lesionq reader`` and the parsers of ``lesionq review``."""

from __future__ import annotations

import argparse

import pytest

from lesionq.errors import InputError
from lesionq.review import auth
from lesionq.review.cli import add_review_parsers, run_review_command
from lesionq.store import ResultsDB


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="lesionq")
    add_review_parsers(p.add_subparsers(dest="command", required=True))
    return p


def test_reader_add_list_disable(tmp_path, capsys) -> None:  # noqa: ANN001
    db_file = tmp_path / "lesionq.sqlite"
    ResultsDB.open(f"sqlite:///{db_file}").close()
    pw = tmp_path / "pw.txt"
    pw.write_text("a-secret-password\n")
    p = _parser()
    args = p.parse_args(
        [
            "reader",
            "add",
            "--db",
            str(db_file),
            "--username",
            "rad1",
            "--role",
            "adjudicator",
            "--password-file",
            str(pw),
        ]
    )
    assert run_review_command(args) == 0
    assert run_review_command(p.parse_args(["reader", "list", "--db", str(db_file)])) == 0
    out = capsys.readouterr().out
    assert "rad1\tadjudicator\tactive" in out and "a-secret-password" not in out
    assert (
        run_review_command(
            p.parse_args(["reader", "disable", "--db", str(db_file), "--username", "rad1"])
        )
        == 0
    )
    with ResultsDB.open(f"sqlite:///{db_file}") as db:
        assert auth.get_reader(db.engine, "rad1").active is False
        assert auth.login(db.engine, "rad1", "a-secret-password", ttl_s=60) is None
        log = db.audit_log()
        assert list(log["action"])[-3:] == [
            "reader.added",
            "reader.disabled",
            "reader.login_failed",
        ]
        assert "a-secret-password" not in log.to_string()


def test_password_is_never_an_argument(tmp_path) -> None:  # noqa: ANN001
    p = _parser()
    with pytest.raises(SystemExit):
        p.parse_args(
            [
                "reader",
                "add",
                "--db",
                "x",
                "--username",
                "u",
                "--role",
                "reader",
                "--password",
                "secret",
            ]
        )


def test_reader_add_needs_role_and_a_good_password(tmp_path) -> None:  # noqa: ANN001
    db_file = tmp_path / "lesionq.sqlite"
    ResultsDB.open(f"sqlite:///{db_file}").close()
    short = tmp_path / "pw.txt"
    short.write_text("short\n")
    p = _parser()
    with pytest.raises(InputError, match="--role"):
        run_review_command(p.parse_args(["reader", "add", "--db", str(db_file), "--username", "u"]))
    with pytest.raises(InputError, match="at least 10"):
        run_review_command(
            p.parse_args(
                [
                    "reader",
                    "add",
                    "--db",
                    str(db_file),
                    "--username",
                    "user1",
                    "--role",
                    "reader",
                    "--password-file",
                    str(short),
                ]
            )
        )


def test_review_parser_defaults() -> None:
    a = _parser().parse_args(["review", "--db", "sqlite:///x.sqlite", "--out", "OUT"])
    assert (a.host, a.port, a.readers_required, a.secure_cookies) == ("127.0.0.1", 8000, 2, False)
