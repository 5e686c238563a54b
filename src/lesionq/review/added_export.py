"""The added lesions as a table (``OUT/added_lesions.tsv``), with their review status.

Written by the review app beside ``visits.tsv`` whenever it refreshes the tables
(:func:`refresh_review_tables`), so the reading centre sees which lesions the
readers added, by whom, and whether they count.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import pandas as pd

from ..batch.tables import refresh_tables
from ..io.tables import write_tsv
from ..store import ResultsDB
from .dbutil import read_tx
from .state import DEFAULT_READERS_REQUIRED, ReviewState, load_states, stored_readers_required

__all__ = [
    "ADDED_TSV",
    "ADDED_COLUMNS",
    "added_status",
    "added_lesions_table",
    "refresh_review_tables",
]

LOGGER = logging.getLogger(__name__)

#: File name of the added-lesion table in the output folder.
ADDED_TSV = "added_lesions.tsv"
#: Columns of :func:`added_lesions_table`.
ADDED_COLUMNS: tuple[str, ...] = (
    "participant_id",
    "session_id",
    "lesion",
    "label",
    "reader",
    "status",
    "volume_mm3",
    "n_voxels",
    "centroid_x_mm",
    "centroid_y_mm",
    "centroid_z_mm",
    "location",
    "seed_i",
    "seed_j",
    "seed_k",
    "threshold",
    "mode",
    "connectivity",
    "created_at",
)


def added_status(st: ReviewState, key: Any) -> str:
    """Review status of an added lesion.

    One of ``reading`` (its reader has not submitted), ``not_counted`` (its reader
    is beyond the readers required), ``awaiting_adjudication``, ``counted``,
    ``rejected`` (by the adjudicator) or ``merged`` (agreed with the other
    reader's overlapping lesion, counted once as that one).
    """
    a = next(x for x in st.added if x.key == key)
    used = [s.reader_id for s in st.submissions][: st.readers_required]
    if st.submitted_by(a.reader_id) is None:
        return "reading"
    if a.reader_id not in used:
        return "not_counted"
    if key in st.added_merged:
        return "merged"
    if key in st.outcome.pending:
        return "awaiting_adjudication"
    d = st.outcome.final.get(key)
    if d is None:
        return "reading"
    return "counted" if d.counted else "rejected"


def added_lesions_table(db: ResultsDB, *, readers_required: int | None = None) -> pd.DataFrame:
    """Every added lesion of the visits' current results (columns :data:`ADDED_COLUMNS`)."""
    with read_tx(db.engine) as conn:
        n = readers_required or stored_readers_required(conn) or DEFAULT_READERS_REQUIRED
        states = load_states(conn, n)
    rows = []
    for st in states:
        for a in st.added:
            rows.append(
                {
                    "participant_id": st.visit.participant_id,
                    "session_id": st.visit.session_id,
                    "lesion": a.name,
                    "label": a.label,
                    "reader": a.username,
                    "status": added_status(st, a.key),
                    "volume_mm3": a.volume_mm3,
                    "n_voxels": a.n_voxels,
                    "centroid_x_mm": round(a.centroid_mm[0], 3),
                    "centroid_y_mm": round(a.centroid_mm[1], 3),
                    "centroid_z_mm": round(a.centroid_mm[2], 3),
                    "location": a.location,
                    "seed_i": a.seed[0],
                    "seed_j": a.seed[1],
                    "seed_k": a.seed[2],
                    "threshold": a.threshold,
                    "mode": a.mode,
                    "connectivity": a.connectivity,
                    "created_at": a.created_at.isoformat() if a.created_at else None,
                }
            )
    return pd.DataFrame(rows, columns=list(ADDED_COLUMNS))


def refresh_review_tables(out_dir: str | os.PathLike[str], db: ResultsDB) -> list[Path]:
    """:func:`lesionq.batch.tables.refresh_tables`, then ``OUT/added_lesions.tsv``; never raises.

    The added-lesion table is written when there is an added lesion (or the file
    exists already).
    """
    written = refresh_tables(out_dir, db)
    dest = Path(out_dir) / ADDED_TSV
    try:
        table = added_lesions_table(db)
        if len(table) or dest.exists():
            written.append(write_tsv(table, dest))
    except Exception as exc:  # the review is stored; the file follows at the next refresh
        LOGGER.error("could not write %s: %s", dest, exc, exc_info=True)
    return written
