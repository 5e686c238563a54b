"""Tables of the review web app: re-exported from :mod:`lesionq.store.review_tables`.

The definitions live in the store, next to the migrations that create them, so
that the review read model (:mod:`lesionq.store.reviewed`), which ``lesionq run``,
``lesionq status`` and the exports use, can query them without importing the
review app. Import them from here or from there: they are the same objects.
"""

from __future__ import annotations

from ..store.review_tables import (
    APPEND_ONLY_TABLES,
    REVIEW_TABLES,
    added_lesions,
    adjudications,
    amendments,
    lesion_decisions,
    lesion_views,
    metadata,
    reader_sessions,
    readers,
    review_settings,
    study_lock,
    visit_reviews,
)

__all__ = [
    "metadata",
    "readers",
    "reader_sessions",
    "lesion_decisions",
    "adjudications",
    "visit_reviews",
    "study_lock",
    "review_settings",
    "added_lesions",
    "amendments",
    "lesion_views",
    "REVIEW_TABLES",
    "APPEND_ONLY_TABLES",
]
