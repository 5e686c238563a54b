"""Command line of the review app: ``lesionq review`` and ``lesionq reader``.

::

    lesionq review --db URL --out OUT [--host 127.0.0.1] [--port 8000]
                   [--readers-required 2] [--session-ttl-s 28800] [--secure-cookies]
    lesionq reader add     --db URL --username U --role reader|adjudicator|admin
                           [--password-file F]
    lesionq reader disable --db URL --username U
    lesionq reader enable  --db URL --username U
    lesionq reader password --db URL --username U [--password-file F]
    lesionq reader list    --db URL
    lesionq audit verify   --db URL

``lesionq audit verify`` recomputes the audit log's hash chain
(:mod:`lesionq.store.auditchain`): exit 0 on an intact log (it prints the row
count and the head hash, worth keeping elsewhere), 1 naming the first bad row.

A password is read from ``--password-file`` (first line) or prompted twice
(:func:`getpass.getpass`); it is never taken from the command line. ``--db`` may
also be a path to a SQLite file. Wire into :mod:`lesionq.cli.main` with
:func:`add_review_parsers` and :func:`run_review_command`.
"""

from __future__ import annotations

import argparse
import getpass
import logging
import os
from pathlib import Path

from ..errors import ConfigError, InputError, MissingInputError
from ..store import ResultsDB
from ..store.auditchain import verify_chain
from . import auth
from .auth import DEFAULT_SESSION_TTL_S, ROLES

__all__ = ["add_review_parsers", "run_review_command", "COMMANDS"]

LOGGER = logging.getLogger(__name__)

#: Sub-commands this module adds.
COMMANDS: tuple[str, ...] = ("review", "reader", "audit")


def add_review_parsers(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add the ``review``, ``reader`` and ``audit`` sub-commands to ``lesionq``'s sub-parsers."""
    rev = subparsers.add_parser("review", help="serve the radiologists' review web app")
    rev.add_argument("--db", required=True, help="results database URL or SQLite file")
    rev.add_argument("--out", required=True, type=Path, help="output folder of lesionq run")
    rev.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    rev.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    rev.add_argument(
        "--readers-required",
        type=int,
        choices=(1, 2),
        default=2,
        help="readers who must submit each visit (default 2; disagreements are adjudicated)",
    )
    rev.add_argument(
        "--session-ttl-s",
        type=float,
        default=DEFAULT_SESSION_TTL_S,
        help="session lifetime from login, seconds (default 8 h)",
    )
    rev.add_argument(
        "--secure-cookies",
        action="store_true",
        help="mark cookies Secure (when served over HTTPS, e.g. behind a reverse proxy)",
    )

    rd = subparsers.add_parser(
        "reader",
        help="manage the review app's reader accounts",
        allow_abbrev=False,  # "--password" must not abbreviate "--password-file"
    )
    rd.add_argument("action", choices=("add", "disable", "enable", "password", "list"))
    rd.add_argument("--db", required=True, help="results database URL or SQLite file")
    rd.add_argument("--username", help="account name (all actions but list)")
    rd.add_argument("--role", choices=ROLES, help="role of a new account (add)")
    rd.add_argument(
        "--password-file",
        type=Path,
        help="file whose first line is the password (add, password); default: prompt",
    )

    au = subparsers.add_parser(
        "audit",
        help="check the audit log's hash chain",
        description="verify: recompute the hash chain of the audit log. Exit 0 on an intact "
        "log, 1 naming the first inserted, changed or removed row.",
    )
    au.add_argument("action", choices=("verify",))
    au.add_argument("--db", required=True, help="results database URL or SQLite file")


def _db_url(text: str) -> str:
    if "://" in text:
        return text
    p = Path(text).resolve()
    if not p.is_file():
        raise MissingInputError(f"--db {text}: no such SQLite results database")
    return f"sqlite:///{p}"


def _read_password(path: Path | None) -> str:
    if path is not None:
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except OSError as exc:
            raise MissingInputError(f"--password-file {path}: cannot read ({exc})") from exc
        if not lines or not lines[0]:
            raise InputError(f"--password-file {path}: the first line (the password) is empty")
        return lines[0]
    first = getpass.getpass("Password: ")
    if first != getpass.getpass("Password again: "):
        raise InputError("the two passwords differ")
    return first


def _actor() -> str:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"lesionq reader (command line, {user})"


def _reader_command(args: argparse.Namespace) -> int:
    db = ResultsDB.open(_db_url(args.db))
    try:
        if args.action == "list":
            for r in auth.list_readers(db.engine):
                print(
                    f"{r['username']}\t{r['role']}\t{'active' if r['active'] else 'disabled'}\t"
                    f"{r['created_at']:%Y-%m-%d}"
                )
            return 0
        if not args.username:
            raise InputError(f"lesionq reader {args.action}: give --username")
        if args.action == "add":
            if not args.role:
                raise InputError("lesionq reader add: give --role")
            added = auth.add_reader(
                db.engine,
                args.username,
                args.role,
                _read_password(args.password_file),
                actor=_actor(),
            )
            print(f"lesionq: reader {added.username} ({added.role}) added")
        elif args.action == "password":
            if auth.get_reader(db.engine, args.username) is None:
                raise InputError(f"no reader {args.username!r}")
            auth.set_password(
                db.engine, args.username, _read_password(args.password_file), actor=_actor()
            )
            print(f"lesionq: password of {args.username} changed (its sessions ended)")
        else:
            auth.set_reader_active(
                db.engine, args.username, args.action == "enable", actor=_actor()
            )
            print(f"lesionq: reader {args.username} {args.action}d")
        return 0
    finally:
        db.close()


def _audit_command(args: argparse.Namespace) -> int:
    db = ResultsDB.open(_db_url(args.db))
    try:
        with db.engine.connect() as conn:
            report = verify_chain(conn)
            conn.rollback()
    finally:
        db.close()
    if not report.ok:
        where = f"row {report.bad_id}" if report.bad_id is not None else "the end of the log"
        print(f"lesionq audit verify: FAILED at {where}: {report.problem}")
        return 1
    print(f"lesionq audit verify: OK, {report.n_rows} rows, head {report.head}")
    return 0


def _serve(args: argparse.Namespace) -> int:
    import uvicorn  # lazy: CLI start-up (uvicorn)

    from .app import create_app  # lazy: CLI start-up (FastAPI)

    if not Path(args.out).is_dir():
        raise ConfigError(f"--out {args.out}: not a folder")
    if args.host not in ("127.0.0.1", "localhost", "::1") and not args.secure_cookies:
        LOGGER.warning(
            "lesionq review: serving on %s without --secure-cookies; put it behind HTTPS",
            args.host,
        )
    app = create_app(
        _db_url(args.db),
        os.fspath(args.out),
        session_ttl_s=args.session_ttl_s,
        readers_required=args.readers_required,
        secure_cookies=args.secure_cookies,
    )
    uvicorn.run(app, host=args.host, port=args.port, log_level="info", proxy_headers=False)
    return 0


def run_review_command(args: argparse.Namespace) -> int:
    """Run ``lesionq review`` or ``lesionq reader`` (``args.command``); returns the exit code.

    Raises
    ------
    lesionq.errors.LesionQError
        Bad arguments, missing database, refused account change (the caller
        prints it and exits 2).
    """
    if args.command == "review":
        return _serve(args)
    if args.command == "reader":
        return _reader_command(args)
    if args.command == "audit":
        return _audit_command(args)
    raise ConfigError(f"run_review_command: unknown command {args.command!r}")
