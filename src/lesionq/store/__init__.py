"""Results database of lesionq runs (SQLAlchemy; SQLite by default, PostgreSQL by URL).

Tables: subjects, visits, runs, visit_results (the per-visit counts, with the
history of superseded results), scans (with sha256), lesions, endpoints, the run
ledger, and an append-only audit log. The schema is managed by Alembic
migrations shipped in :mod:`lesionq.store.migrations` and applied by
:meth:`ResultsDB.open`.

The radiologists' review is stored in the same database: its tables
(:mod:`lesionq.store.review_tables`) are written by the review app
(:mod:`lesionq.review`) and read back by the review read model
(:mod:`lesionq.store.reviewed`: review states and reviewed counts, with the rules of
:mod:`lesionq.store.review_rules` and :mod:`lesionq.store.review_added`), which the
batch layer uses for ``visits.tsv``, the endpoints and ``lesionq status``.

Examples
--------
>>> import tempfile
>>> from lesionq.store import ResultsDB
>>> with tempfile.TemporaryDirectory() as d, ResultsDB.open(out_dir=d) as db:
...     db.visits_table().shape
(0, 31)
"""

from __future__ import annotations

from .db import ResultsDB
from .engine import (
    BUSY_TIMEOUT_S,
    DEFAULT_SQLITE_NAME,
    alembic_config,
    create_store_engine,
    current_revision,
    normalise_url,
    upgrade,
)
from .export import EXPORT_FORMATS, EXPORT_TABLES, export_table

__all__ = [
    "ResultsDB",
    "export_table",
    "EXPORT_TABLES",
    "EXPORT_FORMATS",
    "DEFAULT_SQLITE_NAME",
    "BUSY_TIMEOUT_S",
    "alembic_config",
    "create_store_engine",
    "current_revision",
    "normalise_url",
    "upgrade",
]
