"""The radiologists' review web app (``lesionq review``) and its rules.

* :mod:`lesionq.review.decisions`: the pure rules (final decision per lesion,
  review status, reviewed counts), re-exported from :mod:`lesionq.store.review_rules`;
* :mod:`lesionq.review.state`: writing the review in the results database; the
  read side, :func:`reviewed_counts` for ``visits.tsv``, the endpoints export and
  ``lesionq status`` included, is the review read model :mod:`lesionq.store.reviewed`
  (re-exported here and there), so that the batch layer need not import the app;
* :mod:`lesionq.review.auth`: reader accounts, password hashing, sessions;
* :mod:`lesionq.review.app`: :func:`create_app`, the FastAPI app;
* :mod:`lesionq.review.cli`: the ``lesionq review`` and ``lesionq reader`` commands.

``create_app`` is imported on first use, so that ``reviewed_counts`` does not
import the web stack.
"""

from __future__ import annotations

from typing import Any

from ..store.reviewed import REVIEWED_COLUMNS, merge_reviewed_counts, reviewed_counts
from .decisions import DECISIONS, RELABELS, REVIEW_STATUSES, Decision, LesionKey

__all__ = [
    "create_app",
    "reviewed_counts",
    "merge_reviewed_counts",
    "REVIEWED_COLUMNS",
    "DECISIONS",
    "RELABELS",
    "REVIEW_STATUSES",
    "Decision",
    "LesionKey",
]


def __getattr__(name: str) -> Any:
    if name == "create_app":
        from .app import create_app  # lazy: PEP 562, create_app loads FastAPI on first use only

        return create_app
    raise AttributeError(f"module 'lesionq.review' has no attribute {name!r}")
