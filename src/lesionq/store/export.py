"""Export tables of the results database to TSV, CSV or Parquet (``lesionq export``)."""

from __future__ import annotations

import io
import json
import logging
import math
import os
from pathlib import Path
from typing import Any

import pandas as pd

from ..errors import InputError
from ..io.nifti import atomic_path, atomic_write_text
from ..io.tables import write_tsv
from .db import ResultsDB
from .reviewed import added_lesions_table

__all__ = ["EXPORT_TABLES", "EXPORT_FORMATS", "export_table", "table_frame", "write_frame"]

LOGGER = logging.getLogger(__name__)

#: Tables that can be exported: the current results, then the audit trail (every run,
#: the per-visit run ledger, the append-only audit log), then the lesions readers added
#: in the review (with their review status, as ``OUT/added_lesions.tsv``).
EXPORT_TABLES: tuple[str, ...] = (
    "endpoints",
    "visits",
    "lesions",
    "runs",
    "ledger",
    "audit",
    "added",
)
#: Columns of the audit-trail tables that hold JSON objects (exported as JSON text).
_JSON_COLUMNS: tuple[str, ...] = ("settings", "before", "after")
#: Formats and the file suffixes that select them.
EXPORT_FORMATS: dict[str, tuple[str, ...]] = {
    "tsv": (".tsv",),
    "csv": (".csv",),
    "parquet": (".parquet", ".pq"),
}


def _json_text(value: Any) -> str | None:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def table_frame(db: ResultsDB, table: str) -> pd.DataFrame:
    """A table of the database, as exported (one of :data:`EXPORT_TABLES`).

    ``endpoints``, ``visits``, ``lesions``: the current rows; ``runs``: every run;
    ``ledger``: every run's per-visit outcomes; ``audit``: the audit log; ``added``:
    the lesions readers added in the review, one row each with its review status
    (:func:`lesionq.store.reviewed.added_lesions_table`, the rows of
    ``OUT/added_lesions.tsv``). JSON
    columns (``settings``, ``before``, ``after``) become compact JSON text with
    sorted keys, so every format holds them the same way.
    """
    frames = {
        "endpoints": db.endpoints_table,
        "visits": db.visits_table,
        "lesions": db.lesions_table,
        "runs": db.runs_table,
        "ledger": db.ledger,
        "audit": db.audit_log,
        "added": lambda: added_lesions_table(db),
    }
    if table not in frames:
        raise InputError(f"export: table must be one of {EXPORT_TABLES}, got {table!r}")
    df = frames[table]()
    for col in _JSON_COLUMNS:
        if col in df.columns:
            df[col] = df[col].map(_json_text).astype(object)
    return df


def _format(dest: Path, fmt: str | None) -> str:
    if fmt is not None:
        f = fmt.lower().lstrip(".")
        if f not in EXPORT_FORMATS:
            raise InputError(f"export: format must be one of {tuple(EXPORT_FORMATS)}, got {fmt!r}")
        return f
    suffix = dest.suffix.lower()
    for f, suffixes in EXPORT_FORMATS.items():
        if suffix in suffixes:
            return f
    raise InputError(
        f"export: cannot tell the format of {dest} from its suffix {suffix!r}; use .tsv, .csv "
        "or .parquet, or give fmt"
    )


def export_table(
    db: ResultsDB,
    dest: str | os.PathLike[str],
    *,
    table: str = "endpoints",
    fmt: str | None = None,
) -> Path:
    """Write a table of the results database to a file, atomically.

    Parameters
    ----------
    db : ResultsDB
    dest : path-like
        Destination file (its folder is created when missing).
    table : {'endpoints', 'visits', 'lesions', 'runs', 'ledger', 'audit', 'added'}
        See :func:`table_frame`.
    fmt : {'tsv', 'csv', 'parquet'}, optional
        Default: from the suffix of ``dest``. TSV writes ``n/a`` for missing
        values (as :func:`lesionq.io.tables.write_tsv`), CSV an empty field,
        Parquet keeps the column dtypes.

    Returns
    -------
    Path
        ``dest``.

    Raises
    ------
    InputError
        Unknown table or format.
    """
    df = table_frame(db, table)
    dest = write_frame(df, dest, fmt=fmt)
    LOGGER.info("exported %d %s rows from %s to %s", len(df), table, db.url_display, dest)
    return dest


def write_frame(df: pd.DataFrame, dest: str | os.PathLike[str], *, fmt: str | None = None) -> Path:
    """Write a table as TSV, CSV or Parquet, atomically (format from ``fmt`` or the suffix).

    TSV writes ``n/a`` for missing values (as :func:`lesionq.io.tables.write_tsv`),
    CSV an empty field, Parquet keeps the column dtypes.
    """
    dest = Path(dest)
    f = _format(dest, fmt)
    if f == "tsv":
        write_tsv(df, dest)
    elif f == "csv":
        buf = io.StringIO()
        df.to_csv(buf, index=False, lineterminator="\n")
        atomic_write_text(dest, buf.getvalue())
    else:
        with atomic_path(dest) as tmp:
            df.to_parquet(tmp, index=False, engine="pyarrow")
    return dest
