"""The review read model lives in the store; the review app's modules re-export it."""

from __future__ import annotations

import importlib

import pytest

from lesionq.store import review_added, review_rules, review_tables, reviewed

#: The added-lesion table of the read model, re-exported by ``review.added_export``
#: (``OUT/added_lesions.tsv``) rather than ``review.state``.
ADDED_TABLE = ("ADDED_COLUMNS", "added_status", "added_lesions_table")

MOVED = {
    "lesionq.review.state": (reviewed, [n for n in reviewed.__all__ if n not in ADDED_TABLE]),
    "lesionq.review.added_export": (reviewed, ADDED_TABLE),
    "lesionq.review.decisions": (review_rules, review_rules.__all__),
    "lesionq.review.models": (review_tables, review_tables.__all__),
    "lesionq.review.added": (review_added, review_added.__all__),
    "lesionq.review": (
        reviewed,
        ("reviewed_counts", "merge_reviewed_counts", "REVIEWED_COLUMNS"),
    ),
}


@pytest.mark.parametrize("old", sorted(MOVED))
def test_the_old_names_are_the_store_objects(old: str) -> None:
    module = importlib.import_module(old)
    store_module, names = MOVED[old]
    for name in names:
        if name == "AUTOMATIC_COLUMNS":  # private there (_AUTO_COLUMNS)
            continue
        assert getattr(module, name) is getattr(store_module, name), f"{old}.{name}"
        assert name in getattr(module, "__all__", ()), f"{name} missing from {old}.__all__"


def test_the_read_model_counts_an_empty_database(tmp_path) -> None:
    from lesionq.store import ResultsDB

    with ResultsDB.open(out_dir=tmp_path) as db:
        counts = reviewed.reviewed_counts(db)
        merged = reviewed.merge_reviewed_counts(db.visits_table(), counts)
    assert list(counts.columns) == ["participant_id", "session_id", *reviewed.REVIEWED_COLUMNS]
    assert counts.empty
    assert list(merged.columns)[-len(reviewed.REVIEWED_COLUMNS) :] == list(
        reviewed.REVIEWED_COLUMNS
    )
