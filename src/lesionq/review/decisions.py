"""Pure rules of the lesion review: re-exported from :mod:`lesionq.store.review_rules`.

The rules (final decision per lesion, review status, reviewed counts; see that
module's docstring) live in the store so that the review read model
(:mod:`lesionq.store.reviewed`) applies the same rules as the review app without
importing it. Import them from here or from there: they are the same objects.
"""

from __future__ import annotations

from ..store.review_rules import (
    ACCEPT,
    COUNTED_LABELS,
    DECISIONS,
    READERS_REQUIRED_CHOICES,
    RELABELS,
    REVIEW_STATUSES,
    REVIEWED_LABELS,
    STAGES,
    Decision,
    LesionKey,
    VisitOutcome,
    check_decision,
    count_lesions,
    parse_choice,
    resolve_visit,
    review_sort_key,
)

__all__ = [
    "DECISIONS",
    "RELABELS",
    "COUNTED_LABELS",
    "REVIEWED_LABELS",
    "review_sort_key",
    "REVIEW_STATUSES",
    "STAGES",
    "READERS_REQUIRED_CHOICES",
    "LesionKey",
    "Decision",
    "ACCEPT",
    "parse_choice",
    "check_decision",
    "VisitOutcome",
    "resolve_visit",
    "count_lesions",
]
