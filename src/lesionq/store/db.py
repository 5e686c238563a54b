"""The results database: :class:`ResultsDB` (SQLite by default, PostgreSQL by URL).

One :class:`ResultsDB` per process (do not share it across ``fork``). Every
write is one short transaction:

* SQLite: WAL journal, ``busy_timeout`` of :data:`BUSY_TIMEOUT_S`, foreign keys
  on, and ``BEGIN IMMEDIATE`` for writes, so two processes writing at once queue
  for the write lock instead of failing.
* PostgreSQL (``postgresql://`` is read as ``postgresql+psycopg://``): READ
  COMMITTED, the visit's row locked (``SELECT ... FOR UPDATE``) while its current
  result is swapped, advisory locks around migrations and endpoint replacement,
  and a retry on serialization failures and deadlocks.

Values arrive from pandas tables (``None``, ``pd.NA``, NaN, numpy scalars) and
are normalised to Python scalars / SQL NULL. Only known columns are stored: a
row key that is not a ``visits.tsv`` column is ignored (so no identifying
header can slip in through a row).
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from ..errors import ConfigError, InputError
from ..io.tables import LONGITUDINAL_VISIT_COLUMNS, VISIT_COLUMNS, VISIT_DTYPES
from .auditchain import append_row, current_client
from .engine import (
    BUSY_TIMEOUT_S,
    DEFAULT_SQLITE_NAME,
    LOCK_ENDPOINTS,
    create_store_engine,
    retryable,
    upgrade,
)
from .models import (
    LEDGER_OUTCOMES,
    LEDGER_STEPS,
    RESULT_COUNT_COLUMNS,
    RUN_STATUSES,
    SCAN_CONTRASTS,
    AuditEntry,
    Endpoint,
    LedgerEntry,
    Lesion,
    Run,
    Scan,
    Subject,
    Visit,
    VisitResult,
)
from .values import coerce, jsonable, scalar, session_key, utc, visit_keys

__all__ = ["ResultsDB", "DEFAULT_SQLITE_NAME", "BUSY_TIMEOUT_S", "audit_row"]

LOGGER = logging.getLogger(__name__)

#: Retries of a write transaction after a serialization failure / deadlock / lock timeout.
_MAX_ATTEMPTS = 5

_T = TypeVar("_T")

#: visits.tsv columns stored in visit_results (all but the visit keys and acq_time: see visits).
_RESULT_ROW_COLUMNS: tuple[str, ...] = (
    "status",
    "reason",
    *RESULT_COUNT_COLUMNS,
    "protocol",
    "settings_sha256",
    "lesionq_version",
    "duration_s",
)
_LESION_CORE: dict[str, type[Any]] = {
    "lesion_id": int,
    "label": str,
    "volume_mm3": float,
    "n_voxels": int,
    "centroid_x_mm": float,
    "centroid_y_mm": float,
    "centroid_z_mm": float,
    "location": str,
}
_LESION_LONGITUDINAL: dict[str, type[Any]] = {
    "track_id": int,
    "status": str,
    "status_vs_baseline": str,
}
_PY_TYPES: dict[type[Any], type[Any]] = {
    sa.Integer: int,
    sa.Float: float,
    sa.Boolean: bool,
    sa.Text: str,
}
_ROW_TYPES: dict[str, type[Any]] = {
    **{k: _PY_TYPES[v] for k, v in RESULT_COUNT_COLUMNS.items()},
    "status": str,
    "reason": str,
    "protocol": str,
    "settings_sha256": str,
    "lesionq_version": str,
    "duration_s": float,
    "acq_time": str,
}


def _new_id(result: sa.CursorResult[Any]) -> int:
    """Primary key of the row a single-row INSERT created."""
    pk = result.inserted_primary_key
    if pk is None or pk[0] is None:  # pragma: no cover - every table has an integer id
        raise RuntimeError("results database: INSERT returned no primary key")
    return int(pk[0])


def _result_row(r: Mapping[Any, Any], participant_id: str, session_id: str | None) -> dict:
    row: dict[str, Any] = {"participant_id": participant_id, "session_id": session_id}
    for col in VISIT_COLUMNS:
        if col in ("participant_id", "session_id"):
            continue
        row[col] = r.get(col)
    return row


def _summary(r: Mapping[Any, Any], participant_id: str, session_id: str | None) -> dict:
    """Key fields and counts of a result, for the audit log (JSON-safe)."""
    out = {
        "result_id": r.get("id"),
        "run_id": r.get("run_id"),
        "participant_id": participant_id,
        "session_id": session_id,
        "status": r.get("status"),
        "inputs_sha256": r.get("inputs_sha256"),
        "settings_sha256": r.get("settings_sha256"),
    }
    out.update({c: r.get(c) for c in RESULT_COUNT_COLUMNS})
    return jsonable(out)


def _lesion_values(lesion: Mapping[str, Any], where: str) -> dict[str, Any]:
    if "lesion_id" not in lesion or scalar(lesion["lesion_id"]) is None:
        raise InputError(f"results database: {where}: lesion row without lesion_id: {lesion!r}")
    vals = {k: coerce(k, lesion.get(k), t) for k, t in _LESION_CORE.items()}
    vals.update({k: coerce(k, lesion.get(k), t) for k, t in _LESION_LONGITUDINAL.items()})
    extra = {
        str(k): v
        for k, v in lesion.items()
        if k not in _LESION_CORE and k not in _LESION_LONGITUDINAL
    }
    vals["extra"] = jsonable(extra) if extra else None
    return vals


def _records(rows: Sequence[Mapping[str, Any]] | pd.DataFrame | None) -> list[Mapping[str, Any]]:
    if rows is None:
        return []
    if isinstance(rows, pd.DataFrame):
        return rows.to_dict("records")
    return list(rows)


def audit_row(
    conn: sa.Connection,
    *,
    actor: str,
    action: str,
    entity: str,
    entity_id: Any,
    before: Any = None,
    after: Any = None,
    detail: str | None = None,
    client: str | None = None,
) -> int:
    """Append one row to ``audit_log`` inside the caller's transaction; its id.

    The change and its audit row then commit or fail together (the review app
    writes its decisions this way). ``before`` / ``after`` are made
    JSON-serialisable (numpy scalars, NA, datetimes). The row joins the hash
    chain (:func:`lesionq.store.auditchain.append_row`). ``client``: the client
    address (default: the one set by :func:`lesionq.store.auditchain.audit_client`).
    """
    return append_row(
        conn,
        {
            "at": datetime.now(UTC),
            "actor": str(actor),
            "action": str(action),
            "entity": str(entity),
            "entity_id": None if entity_id is None else str(entity_id),
            "before": jsonable(before) if before is not None else None,
            "after": jsonable(after) if after is not None else None,
            "detail": detail,
            "client": client if client is not None else current_client(),
        },
    )


class ResultsDB:
    """Results database of lesionq runs (SQLite file or PostgreSQL server).

    Open with :meth:`open`; it brings the schema to the newest migration.

    Attributes
    ----------
    engine : sqlalchemy.Engine
    url_display : str
        The URL with the password masked (for logs and reports).

    Examples
    --------
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as d:
    ...     db = ResultsDB.open(out_dir=d)
    ...     run = db.start_run(lesionq_version="0.1.0", protocol="demo", settings_sha256="0" * 64,
    ...                        settings={}, command="lesionq run bids out participant")
    ...     db.finish_run(run, status="finished", n_ok=0, n_failed=0, n_skipped=0)
    ...     db.close()
    """

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine
        self.url_display = engine.url.render_as_string(hide_password=True)

    # ------------------------------------------------------------------ life cycle

    @classmethod
    def open(
        cls, url: str | None = None, *, out_dir: str | os.PathLike[str] | None = None
    ) -> ResultsDB:
        """Open (creating or migrating when needed) the results database.

        Parameters
        ----------
        url : str, optional
            ``sqlite:///path/file.sqlite`` or ``postgresql://user:pw@host/db``.
            Default: ``sqlite:///<out_dir>/lesionq.sqlite``.
        out_dir : path-like, optional
            Output folder of the run (created when missing); required without ``url``.

        Raises
        ------
        ConfigError
            Neither given, an unsupported URL, or a SQLite folder that does not exist.
        """
        if url is None:
            if out_dir is None:
                raise ConfigError("results database: give a database URL or an output folder")
            folder = Path(out_dir)
            folder.mkdir(parents=True, exist_ok=True)
            url = f"sqlite:///{(folder / DEFAULT_SQLITE_NAME).resolve()}"
        engine = create_store_engine(url)
        try:
            upgrade(engine)
        except BaseException:
            engine.dispose()
            raise
        db = cls(engine)
        LOGGER.debug("opened results database %s", db.url_display)
        return db

    def close(self) -> None:
        """Release every connection."""
        self.engine.dispose()

    def __enter__(self) -> ResultsDB:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"ResultsDB({self.url_display!r})"

    # ------------------------------------------------------------------ transactions

    def _write(self, fn: Callable[[sa.Connection], _T]) -> _T:
        """Run ``fn(conn)`` in one write transaction, retried on lock / serialization errors."""
        for attempt in range(1, _MAX_ATTEMPTS + 1):
            try:
                with self.engine.connect() as conn:
                    conn.execution_options(lesionq_write=True)
                    with conn.begin():
                        return fn(conn)
            except sa.exc.DBAPIError as exc:
                if attempt == _MAX_ATTEMPTS or not retryable(exc):
                    raise
                LOGGER.warning(
                    "results database: transaction retried (%d/%d): %s",
                    attempt,
                    _MAX_ATTEMPTS,
                    str(exc.orig).splitlines()[0],
                )
                time.sleep(0.05 * attempt)
        raise AssertionError("unreachable")  # pragma: no cover

    @contextmanager
    def _read(self) -> Iterator[sa.Connection]:
        with self.engine.connect() as conn:
            with conn.begin():
                yield conn

    @staticmethod
    def _insert_ignore(conn: sa.Connection, table: Any, values: dict[str, Any]) -> None:
        """INSERT ... ON CONFLICT DO NOTHING (a row another process inserted first is kept)."""
        if conn.dialect.name == "postgresql":
            conn.execute(postgresql.insert(table).values(**values).on_conflict_do_nothing())
        else:
            conn.execute(sqlite.insert(table).values(**values).on_conflict_do_nothing())

    _audit = staticmethod(audit_row)

    # ------------------------------------------------------------------ runs

    def start_run(
        self,
        *,
        lesionq_version: str,
        protocol: str,
        settings_sha256: str,
        settings: Mapping[str, Any],
        command: str,
        resumed_from: int | None = None,
    ) -> int:
        """Record the start of a run (host and pid of this process); returns the run id."""
        values = {
            "started_at": datetime.now(UTC),
            "status": "running",
            "lesionq_version": str(lesionq_version),
            "protocol": str(protocol),
            "settings_sha256": str(settings_sha256),
            "settings": jsonable(dict(settings)),
            "command": str(command),
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "resumed_from": resumed_from,
        }

        def tx(conn: sa.Connection) -> int:
            run_id = _new_id(conn.execute(sa.insert(Run).values(**values)))
            self._audit(
                conn,
                actor=f"lesionq run {run_id}",
                action="run.started",
                entity="runs",
                entity_id=run_id,
                after={k: v for k, v in values.items() if k != "settings"},
            )
            return run_id

        return self._write(tx)

    def finish_run(
        self, run_id: int, *, status: str, n_ok: int, n_failed: int, n_skipped: int
    ) -> None:
        """Record the end of a run: ``status`` one of 'finished', 'interrupted', 'failed'."""
        if status not in RUN_STATUSES:
            raise InputError(
                f"results database: run status must be one of {RUN_STATUSES}, got {status!r}"
            )
        values = {
            "finished_at": datetime.now(UTC),
            "status": status,
            "n_ok": int(n_ok),
            "n_failed": int(n_failed),
            "n_skipped": int(n_skipped),
        }

        def tx(conn: sa.Connection) -> None:
            res = conn.execute(sa.update(Run).where(Run.id == run_id).values(**values))
            if res.rowcount != 1:
                raise InputError(f"results database: no run with id {run_id}")
            self._audit(
                conn,
                actor=f"lesionq run {run_id}",
                action="run.finished",
                entity="runs",
                entity_id=run_id,
                after=values,
            )

        self._write(tx)

    def run(self, run_id: int) -> dict[str, Any] | None:
        """The run's row as a dict (None when there is no such run)."""
        with self._read() as conn:
            r = conn.execute(sa.select(Run.__table__).where(Run.id == run_id)).mappings().first()
        return dict(r) if r is not None else None

    def runs_table(self) -> pd.DataFrame:
        """Every run, oldest first (``settings`` as a dict or None)."""
        q = sa.select(Run.__table__).order_by(Run.id)
        return self._frame(q, [c.name for c in Run.__table__.columns])

    def last_interrupted_run(self) -> dict[str, Any] | None:
        """The most recent run whose status is 'running' or 'interrupted' (for ``--resume``).

        A 'running' run may belong to a process that is still alive: compare
        ``host`` and ``pid`` before resuming it.
        """
        q = (
            sa.select(Run.__table__)
            .where(Run.status.in_(("running", "interrupted")))
            .order_by(Run.started_at.desc(), Run.id.desc())
            .limit(1)
        )
        with self._read() as conn:
            r = conn.execute(q).mappings().first()
        return dict(r) if r is not None else None

    # ------------------------------------------------------------------ visit results

    def _current(
        self, conn: sa.Connection, participant_id: str, session_id: str | None
    ) -> sa.RowMapping | None:
        q = (
            sa.select(VisitResult.__table__, Visit.acq_time)
            .join(Visit, Visit.id == VisitResult.visit_id)
            .join(Subject, Subject.id == Visit.subject_id)
            .where(
                Subject.participant_id == participant_id,
                Visit.session_key == session_key(session_id),
                VisitResult.is_current.is_(True),
            )
        )
        return conn.execute(q).mappings().first()

    def current_result(self, participant_id: str, session_id: str | None) -> dict[str, Any] | None:
        """The visit's current result, or None when it has none.

        Returns
        -------
        dict or None
            ``{"id", "run_id", "status", "inputs_sha256", "settings_sha256",
            "row"}``; ``row`` maps every ``visits.tsv`` column (VISIT_COLUMNS) to
            its value (None when missing).
        """
        pid, ses = visit_keys(participant_id, session_id)
        with self._read() as conn:
            r = self._current(conn, pid, ses)
        if r is None:
            return None
        return {
            "id": r["id"],
            "run_id": r["run_id"],
            "status": r["status"],
            "inputs_sha256": r["inputs_sha256"],
            "settings_sha256": r["settings_sha256"],
            "row": _result_row(r, pid, ses),
        }

    def _visit_id(
        self, conn: sa.Connection, participant_id: str, session_id: str | None, acq_time: Any
    ) -> int:
        """Upsert subject and visit; lock the visit row (PostgreSQL); return the visit id."""
        self._insert_ignore(
            conn,
            Subject.__table__,
            {"participant_id": participant_id, "created_at": datetime.now(UTC)},
        )
        subject_id = conn.execute(
            sa.select(Subject.id).where(Subject.participant_id == participant_id)
        ).scalar_one()
        key = session_key(session_id)
        self._insert_ignore(
            conn,
            Visit.__table__,
            {
                "subject_id": subject_id,
                "session_id": session_id,
                "session_key": key,
                "acq_time": acq_time,
                "created_at": datetime.now(UTC),
            },
        )
        q = sa.select(Visit.id, Visit.acq_time).where(
            Visit.subject_id == subject_id, Visit.session_key == key
        )
        if conn.dialect.name == "postgresql":
            q = q.with_for_update()
        visit_id, old_acq = conn.execute(q).one()
        if acq_time is not None and acq_time != old_acq:
            conn.execute(sa.update(Visit).where(Visit.id == visit_id).values(acq_time=acq_time))
        return int(visit_id)

    def set_site(self, participant_id: str, site: str | None) -> None:
        """Record the subject's site (from ``participants.tsv``); audited when it changes.

        Creates the subject when it is not there yet. ``None`` or an empty site
        leaves a stored site unchanged.
        """
        pid = coerce("participant_id", participant_id, str)
        if not pid:
            raise InputError("results database: set_site needs a participant_id")
        site = coerce("site", site, str)
        if not site:
            return

        def tx(conn: sa.Connection) -> None:
            self._insert_ignore(
                conn,
                Subject.__table__,
                {"participant_id": pid, "created_at": datetime.now(UTC)},
            )
            old = conn.execute(
                sa.select(Subject.site).where(Subject.participant_id == pid)
            ).scalar_one()
            if old == site:
                return
            conn.execute(sa.update(Subject).where(Subject.participant_id == pid).values(site=site))
            self._audit(
                conn,
                actor="lesionq",
                action="subject.site_set",
                entity="subjects",
                entity_id=pid,
                before={"site": old},
                after={"site": site},
            )

        self._write(tx)

    def record_visit(
        self,
        run_id: int,
        row: Mapping[str, Any],
        *,
        inputs_sha256: str,
        scans: Sequence[Mapping[str, Any]],
        lesions: Sequence[Mapping[str, Any]],
        error_class: str | None,
        started_at: Any,
        finished_at: Any,
    ) -> int:
        """Record one visit's result (one transaction); it becomes the visit's current result.

        Parameters
        ----------
        run_id : int
            From :meth:`start_run`.
        row : mapping
            A ``visits.tsv`` row: ``participant_id``, ``session_id`` (None without
            sessions), ``acq_time``, ``status`` ('ok' or 'failed'), ``reason``,
            the counts, ``protocol``, ``settings_sha256``, ``lesionq_version``,
            ``duration_s``. Missing values may be None, NaN or ``pd.NA``; numpy
            scalars are fine. Keys that are not ``visits.tsv`` columns are ignored.
        inputs_sha256 : str
            Hash identifying the visit's inputs (a changed input means a new result).
        scans : sequence of mappings
            ``contrast`` ('flair', 't1', 't2', 't1ce'), ``path``, ``sha256``, ``size_bytes``.
        lesions : sequence of mappings (or a DataFrame)
            ``lesions.tsv`` rows; columns other than the fixed ones go to ``extra``.
        error_class : str or None
            Exception class name of a failed visit.
        started_at, finished_at : datetime (timezone-aware), epoch seconds, or None

        Returns
        -------
        int
            The new result's id. The previous current result (if any) is kept,
            marked superseded, and both are written to the audit log.
        """
        pid, ses = visit_keys(row.get("participant_id"), row.get("session_id"))
        status = scalar(row.get("status"))
        if status not in ("ok", "failed"):
            raise InputError(
                f"results database: {pid} {ses}: status must be 'ok' or 'failed', got {status!r}"
            )
        values = {c: coerce(c, row.get(c), _ROW_TYPES[c]) for c in _RESULT_ROW_COLUMNS}
        acq_time = coerce("acq_time", row.get("acq_time"), str)
        t0 = utc("started_at", started_at)
        t1 = utc("finished_at", finished_at)
        if values["duration_s"] is None and t0 is not None and t1 is not None:
            values["duration_s"] = (t1 - t0).total_seconds()
        values.update(
            run_id=run_id,
            inputs_sha256=None if inputs_sha256 is None else str(inputs_sha256),
            error_class=None if error_class is None else str(error_class),
            started_at=t0,
            finished_at=t1,
        )
        scan_rows = []
        for s in scans:
            contrast = scalar(s.get("contrast"))
            if contrast not in SCAN_CONTRASTS:
                raise InputError(
                    f"results database: {pid} {ses}: scan contrast must be one of "
                    f"{SCAN_CONTRASTS}, got {contrast!r}"
                )
            if scalar(s.get("path")) is None:
                raise InputError(f"results database: {pid} {ses}: scan without path: {s!r}")
            scan_rows.append(
                {
                    "contrast": contrast,
                    "path": str(s["path"]),
                    "sha256": coerce("sha256", s.get("sha256"), str),
                    "size_bytes": coerce("size_bytes", s.get("size_bytes"), int),
                }
            )
        lesion_rows = [_lesion_values(les, f"{pid} {ses}") for les in _records(lesions)]
        actor = f"lesionq run {run_id}"

        def tx(conn: sa.Connection) -> int:
            visit_id = self._visit_id(conn, pid, ses, acq_time)
            prev = (
                conn.execute(
                    sa.select(VisitResult.__table__).where(
                        VisitResult.visit_id == visit_id, VisitResult.is_current.is_(True)
                    )
                )
                .mappings()
                .first()
            )
            if prev is not None:
                conn.execute(
                    sa.update(VisitResult)
                    .where(VisitResult.id == prev["id"])
                    .values(is_current=False)
                )
            new_id = _new_id(
                conn.execute(
                    sa.insert(VisitResult).values(visit_id=visit_id, is_current=True, **values)
                )
            )
            if scan_rows:
                conn.execute(sa.insert(Scan), [{"visit_result_id": new_id, **s} for s in scan_rows])
            if lesion_rows:
                conn.execute(
                    sa.insert(Lesion), [{"visit_result_id": new_id, **les} for les in lesion_rows]
                )
            after = _summary({"id": new_id, **values}, pid, ses)
            if prev is not None:
                conn.execute(
                    sa.update(VisitResult)
                    .where(VisitResult.id == prev["id"])
                    .values(superseded_by=new_id)
                )
                self._audit(
                    conn,
                    actor=actor,
                    action="visit_result.superseded",
                    entity="visit_results",
                    entity_id=prev["id"],
                    before=_summary(prev, pid, ses),
                    after=after,
                    detail=f"{pid} {ses or ''}".strip()
                    + f": result {prev['id']} superseded by {new_id}"
                    + (
                        " (inputs changed)"
                        if prev["inputs_sha256"] != values["inputs_sha256"]
                        else ""
                    ),
                )
            self._audit(
                conn,
                actor=actor,
                action="visit_result.recorded",
                entity="visit_results",
                entity_id=new_id,
                after=after,
                detail=f"{len(scan_rows)} scans, {len(lesion_rows)} lesions",
            )
            return new_id

        return self._write(tx)

    def update_longitudinal(
        self,
        participant_id: str,
        session_id: str | None,
        fields: Mapping[str, Any],
        lesions: Sequence[Mapping[str, Any]] | None,
        *,
        run_id: int,
    ) -> None:
        """Set the longitudinal columns of the visit's current result.

        Parameters
        ----------
        participant_id, session_id : str, str or None
            The visit.
        fields : mapping
            Values of :data:`lesionq.io.tables.LONGITUDINAL_VISIT_COLUMNS`; other keys
            are ignored.
        lesions : sequence of mappings (or a DataFrame), optional
            When given, the result's lesion rows are replaced by these (the
            ``lesions.tsv`` rewritten by the longitudinal step, with ``track_id``,
            ``status``, ``status_vs_baseline``).
        run_id : int
            The run that computed the longitudinal step (from :meth:`start_run`):
            the audit row names it as the actor. It may be a later run than the
            one that computed the visit's result (a subject's step is redone when
            another of its visits changed).

        Raises
        ------
        InputError
            The visit has no recorded result.
        """
        pid, ses = visit_keys(participant_id, session_id)
        values = {
            c: coerce(c, fields[c], _ROW_TYPES[c])
            for c in LONGITUDINAL_VISIT_COLUMNS
            if c in fields
        }
        lesion_rows = (
            None
            if lesions is None
            else [_lesion_values(les, f"{pid} {ses}") for les in _records(lesions)]
        )

        def tx(conn: sa.Connection) -> None:
            if conn.dialect.name == "postgresql":
                self._visit_lock(conn, pid, ses)
            cur = self._current(conn, pid, ses)
            if cur is None:
                raise InputError(
                    f"results database: {pid} {ses}: no result recorded; record_visit first"
                )
            if values:
                conn.execute(
                    sa.update(VisitResult).where(VisitResult.id == cur["id"]).values(**values)
                )
            n_old = None
            if lesion_rows is not None:
                n_old = conn.execute(
                    sa.delete(Lesion).where(Lesion.visit_result_id == cur["id"])
                ).rowcount
                if lesion_rows:
                    conn.execute(
                        sa.insert(Lesion),
                        [{"visit_result_id": cur["id"], **les} for les in lesion_rows],
                    )
            self._audit(
                conn,
                actor=f"lesionq run {run_id}",
                action="visit_result.longitudinal_updated",
                entity="visit_results",
                entity_id=cur["id"],
                before={c: cur[c] for c in values},
                after=values,
                detail=(
                    f"{pid} {ses or ''}".strip()
                    + f": result {cur['id']} (of run {cur['run_id']})"
                    + (
                        f", {n_old} lesion rows replaced by {len(lesion_rows)}"
                        if lesion_rows is not None
                        else ""
                    )
                ),
            )

        self._write(tx)

    def _visit_lock(self, conn: sa.Connection, pid: str, ses: str | None) -> None:
        conn.execute(
            sa.select(Visit.id)
            .join(Subject, Subject.id == Visit.subject_id)
            .where(Subject.participant_id == pid, Visit.session_key == session_key(ses))
            .with_for_update(of=Visit)
        ).all()

    # ------------------------------------------------------------------ ledger

    def add_ledger(
        self,
        run_id: int,
        *,
        participant_id: str | None,
        session_id: str | None,
        step: str,
        outcome: str,
        error_class: str | None = None,
        message: str | None = None,
        started_at: Any = None,
        finished_at: Any = None,
        duration_s: float | None = None,
    ) -> None:
        """Append one line to the run ledger.

        ``step`` is one of 'visit', 'longitudinal', 'endpoints'; ``outcome`` one of
        'ok', 'failed', 'skipped_up_to_date', 'skipped_locked'.
        """
        if step not in LEDGER_STEPS:
            raise InputError(
                f"results database: ledger step must be one of {LEDGER_STEPS}, got {step!r}"
            )
        if outcome not in LEDGER_OUTCOMES:
            raise InputError(
                f"results database: ledger outcome must be one of {LEDGER_OUTCOMES}, got {outcome!r}"
            )
        t0 = utc("started_at", started_at)
        t1 = utc("finished_at", finished_at)
        dur = coerce("duration_s", duration_s, float)
        if dur is None and t0 is not None and t1 is not None:
            dur = (t1 - t0).total_seconds()
        values = {
            "run_id": run_id,
            "participant_id": coerce("participant_id", participant_id, str),
            "session_id": coerce("session_id", session_id, str),
            "step": step,
            "outcome": outcome,
            "error_class": coerce("error_class", error_class, str),
            "message": coerce("message", message, str),
            "started_at": t0,
            "finished_at": t1,
            "duration_s": dur,
        }
        self._write(lambda conn: conn.execute(sa.insert(LedgerEntry).values(**values)))

    def ledger(self, run_id: int | None = None) -> pd.DataFrame:
        """The run ledger (of one run, or all), in insertion order."""
        q = sa.select(LedgerEntry.__table__).order_by(LedgerEntry.id)
        if run_id is not None:
            q = q.where(LedgerEntry.run_id == run_id)
        return self._frame(q, [c.name for c in LedgerEntry.__table__.columns])

    # ------------------------------------------------------------------ endpoints

    def replace_endpoints(self, run_id: int, table: pd.DataFrame) -> None:
        """Make ``table`` (an ``endpoints.tsv`` table) the current endpoints.

        The previous current rows are kept, no longer current; the replacement is
        written to the audit log.
        """
        cols = [str(c) for c in table.columns]
        rows = [
            {
                "run_id": run_id,
                "is_current": True,
                "participant_id": coerce("participant_id", rec.get("participant_id"), str),
                "period": coerce("period", rec.get("period"), str),
                "data": jsonable({c: rec[c] for c in cols}),
            }
            for rec in table.to_dict("records")
        ]

        def tx(conn: sa.Connection) -> None:
            if conn.dialect.name == "postgresql":
                conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": LOCK_ENDPOINTS})
            prev_runs = (
                conn.execute(
                    sa.select(Endpoint.run_id, sa.func.count())
                    .where(Endpoint.is_current.is_(True))
                    .group_by(Endpoint.run_id)
                    .order_by(Endpoint.run_id)
                )
                .tuples()
                .all()
            )
            conn.execute(
                sa.update(Endpoint).where(Endpoint.is_current.is_(True)).values(is_current=False)
            )
            if rows:
                conn.execute(sa.insert(Endpoint), rows)
            self._audit(
                conn,
                actor=f"lesionq run {run_id}",
                action="endpoints.replaced",
                entity="endpoints",
                entity_id=run_id,
                before={
                    "run_ids": [r for r, _ in prev_runs],
                    "n_rows": int(sum(n for _, n in prev_runs)),
                },
                after={"run_ids": [run_id], "n_rows": len(rows), "columns": cols},
            )

        self._write(tx)

    def endpoints_table(self) -> pd.DataFrame:
        """The current endpoints, one row per subject and period (``endpoints.tsv`` columns)."""
        q = sa.select(Endpoint.data).where(Endpoint.is_current.is_(True)).order_by(Endpoint.id)
        with self._read() as conn:
            data = [d if isinstance(d, dict) else json.loads(d) for d in conn.execute(q).scalars()]
        cols: list[str] = []
        for d in data:
            cols.extend(k for k in d if k not in cols)
        return pd.DataFrame(data, columns=cols)

    # ------------------------------------------------------------------ tables

    def _frame(self, q: sa.Select[Any], columns: Sequence[str]) -> pd.DataFrame:
        with self._read() as conn:
            rows = [dict(r) for r in conn.execute(q).mappings()]
        return pd.DataFrame(rows, columns=list(columns))

    def visits_table(self) -> pd.DataFrame:
        """Current results as ``visits.tsv``: VISIT_COLUMNS order and dtypes, sorted by visit."""
        q = (
            sa.select(
                VisitResult.__table__,
                Subject.participant_id,
                Visit.session_id.label("visit_session_id"),
                Visit.acq_time,
            )
            .join(Visit, Visit.id == VisitResult.visit_id)
            .join(Subject, Subject.id == Visit.subject_id)
            .where(VisitResult.is_current.is_(True))
        )
        with self._read() as conn:
            res = list(conn.execute(q).mappings())
        rows = [_result_row(r, r["participant_id"], r["visit_session_id"]) for r in res]
        df = pd.DataFrame(rows, columns=list(VISIT_COLUMNS))
        for col in VISIT_COLUMNS:
            kind = _ROW_TYPES.get(col)
            if col in VISIT_DTYPES:
                df[col] = df[col].astype(VISIT_DTYPES[col])
            elif kind is float:
                df[col] = df[col].astype("float64")
            elif kind is bool:
                df[col] = df[col].astype("boolean")
            else:
                df[col] = df[col].astype(object).where(df[col].notna(), None)
        df = df.sort_values(["participant_id", "session_id"], kind="stable", na_position="first")
        return df.reset_index(drop=True)

    def lesions_table(self) -> pd.DataFrame:
        """Lesions of the current results, with ``participant_id`` and ``session_id`` first.

        Columns: ``participant_id``, ``session_id``, the fixed lesion columns
        (``lesion_id`` ... ``location``), the other ``lesions.tsv`` columns in
        order of appearance, then ``track_id``, ``status``, ``status_vs_baseline``.
        """
        q = (
            sa.select(Lesion.__table__, Subject.participant_id, Visit.session_id.label("ses"))
            .join(VisitResult, VisitResult.id == Lesion.visit_result_id)
            .join(Visit, Visit.id == VisitResult.visit_id)
            .join(Subject, Subject.id == Visit.subject_id)
            .where(VisitResult.is_current.is_(True))
            .order_by(Subject.participant_id, Visit.session_key, Lesion.id)
        )
        with self._read() as conn:
            res = list(conn.execute(q).mappings())
        extra_cols: list[str] = []
        rows = []
        for r in res:
            extra = r["extra"] or {}
            if not isinstance(extra, dict):
                extra = json.loads(extra)
            extra_cols.extend(k for k in extra if k not in extra_cols)
            row = {"participant_id": r["participant_id"], "session_id": r["ses"]}
            row.update({k: r[k] for k in _LESION_CORE})
            row.update(extra)
            row.update({k: r[k] for k in _LESION_LONGITUDINAL})
            rows.append(row)
        cols = ["participant_id", "session_id", *_LESION_CORE, *extra_cols, *_LESION_LONGITUDINAL]
        df = pd.DataFrame(rows, columns=cols)
        for col in ("lesion_id", "n_voxels", "track_id"):
            df[col] = df[col].astype("Int64")
        for col in ("volume_mm3", "centroid_x_mm", "centroid_y_mm", "centroid_z_mm"):
            df[col] = df[col].astype("float64")
        return df

    # ------------------------------------------------------------------ audit

    def audit(
        self,
        *,
        actor: str,
        action: str,
        entity: str,
        entity_id: Any,
        before: Any = None,
        after: Any = None,
        detail: str | None = None,
    ) -> None:
        """Append one entry to the audit log (e.g. a reader's adjudication)."""
        self._write(
            lambda conn: self._audit(
                conn,
                actor=actor,
                action=action,
                entity=entity,
                entity_id=entity_id,
                before=before,
                after=after,
                detail=detail,
            )
        )

    def audit_log(self) -> pd.DataFrame:
        """The whole audit log in order (``before`` / ``after`` as dicts or None)."""
        q = sa.select(AuditEntry.__table__).order_by(AuditEntry.id)
        return self._frame(q, [c.name for c in AuditEntry.__table__.columns])
