"""The trial tables as a reading centre sees them: automatic results plus radiologists' review.

The results database (:mod:`lesionq.store`) holds the automatic per-visit
results; the review app (:mod:`lesionq.review`) records the radiologists'
decisions in the same database, and the review read model
(:mod:`lesionq.store.reviewed`) reads their reviewed counts back. This module
joins the two:

* :func:`visits_table`: the current ``visits.tsv`` rows with the reviewed
  columns (``review_status``, ``t2_count_reviewed``, ``t2_volume_reviewed_mm3``,
  ``gd_count_reviewed``, ``gd_volume_reviewed_mm3``; counts n/a until a visit's
  review is final) after the automatic ones;
* :func:`endpoints_table`: the endpoints recomputed from that table with the
  protocol settings of the database's latest finished run, so the automatic
  and the reviewed cumulative counts sit side by side;
* :func:`export`: either of them, or the lesions, to TSV / CSV / Parquet.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pandas as pd
import sqlalchemy as sa

from ..config import Settings, _settings_from_plain
from ..core.endpoints import schedule_from_protocol
from ..errors import InputError
from ..io.derivatives import VISITS_TSV
from ..io.endpoints import compute_endpoints, with_reviewed_counts, write_endpoints
from ..io.tables import write_tsv
from ..qc.overview import index_path, refresh_index
from ..store import ResultsDB
from ..store.export import table_frame, write_frame
from ..store.models import Run
from ..store.reviewed import merge_reviewed_counts, reviewed_counts
from .locks import tables_lock

__all__ = ["visits_table", "endpoints_table", "latest_settings", "export", "refresh_tables"]

LOGGER = logging.getLogger(__name__)


def visits_table(db: ResultsDB) -> pd.DataFrame:
    """Current per-visit results with the reviewed counts merged in (``visits.tsv``)."""
    return merge_reviewed_counts(db.visits_table(), reviewed_counts(db))


def latest_settings(db: ResultsDB) -> Settings | None:
    """The protocol settings of the latest finished run in the database (None: no such run)."""
    with db.engine.connect() as conn:
        row = conn.execute(
            sa.select(Run.protocol, Run.settings)
            .where(Run.status == "finished")
            .order_by(Run.id.desc())
            .limit(1)
        ).first()
    if row is None or not row.settings:
        return None
    return _settings_from_plain(row.protocol, f"results database {db.url_display}", row.settings)


def endpoints_table(db: ResultsDB, settings: Settings | None = None) -> pd.DataFrame:
    """Endpoints per subject and period from the database, automatic and reviewed.

    Parameters
    ----------
    db : ResultsDB
    settings : Settings, optional
        Default: those of the latest finished run (:func:`latest_settings`).

    Raises
    ------
    InputError
        No finished run to take the schedule from, or its protocol has no schedule.
    """
    settings = settings or latest_settings(db)
    if settings is None:
        raise InputError(f"{db.url_display}: no finished run, so no protocol schedule to use")
    if "schedule" not in settings.sections:
        raise InputError(f"protocol {settings.name!r} has no [schedule]: no endpoints")
    visits = visits_table(db)
    schedule = with_reviewed_counts(
        schedule_from_protocol(settings.sections, source=settings.source), visits
    )
    table, _ = compute_endpoints(visits, schedule)
    return table


def export(
    db: ResultsDB,
    dest: str | os.PathLike[str],
    *,
    table: str = "endpoints",
    fmt: str | None = None,
) -> Path:
    """Write the ``endpoints``, ``visits`` or ``lesions`` table to ``dest`` (atomically).

    ``endpoints`` and ``visits`` include the radiologists' reviewed counts next to
    the automatic ones (see the module docstring).
    """
    if table == "endpoints":
        df = endpoints_table(db)
    elif table == "visits":
        df = visits_table(db)
    else:
        df = table_frame(db, table)
    path = write_frame(df, dest, fmt=fmt)
    LOGGER.info("exported %d %s rows to %s", len(df), table, path)
    return path


def refresh_tables(out_dir: str | os.PathLike[str], db: ResultsDB) -> list[Path]:
    """Rewrite ``OUT/visits.tsv`` and ``OUT/endpoints.tsv`` from the database; never raises.

    Called by the review app when a review changes the reviewed counts, so the
    files a reading centre picks up carry the adjudicated numbers without
    waiting for the next ``lesionq run``; the trial overview ``OUT/index.html``,
    when a run wrote one, is rewritten too (its review progress). Endpoints use the settings of the
    latest finished run (none written when there is no such run or it has no
    ``[schedule]``). Failures are logged: the review itself is already stored.

    Returns
    -------
    list of Path
        The files rewritten.
    """
    out = Path(out_dir)
    written: list[Path] = []
    try:
        with tables_lock(out):
            visits = visits_table(db)
            written.append(write_tsv(visits, out / VISITS_TSV))
            settings = latest_settings(db)
            if settings is not None and "schedule" in settings.sections:
                written.append(write_endpoints(out, visits, settings, visits_path=out / VISITS_TSV))
            if index_path(out).is_file():  # the overview's review progress follows the review
                page = refresh_index(out, settings=settings)
                if page is not None:
                    written.append(page)
    except Exception as exc:  # the review is stored; the files follow at the next run
        LOGGER.error("could not refresh the tables in %s: %s", out, exc, exc_info=True)
    return written
