"""The added lesions as a table (``OUT/added_lesions.tsv``), with their review status.

Written by the review app beside ``visits.tsv`` whenever it refreshes the tables
(:func:`refresh_review_tables`), so the reading centre sees which lesions the
readers added, by whom, and whether they count. The table itself
(:func:`added_lesions_table`, :func:`added_status`, :data:`ADDED_COLUMNS`) is built by
the review read model :mod:`lesionq.store.reviewed` (also ``lesionq export --table
added``) and re-exported here.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from ..batch.tables import refresh_tables
from ..io.tables import write_tsv
from ..store import ResultsDB
from ..store.reviewed import ADDED_COLUMNS, added_lesions_table, added_status

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
