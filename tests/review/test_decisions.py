"""The pure review rules: agreement, disagreement, adjudication, readers_required, counts."""

from __future__ import annotations

import pytest

from lesionq.errors import InputError
from lesionq.review.decisions import (
    ACCEPT,
    Decision,
    LesionKey,
    check_decision,
    count_lesions,
    parse_choice,
    resolve_visit,
)

T1, T2, G1 = LesionKey("T2", 1), LesionKey("T2", 2), LesionKey("Gd", 1)
LESIONS = [T1, T2, G1]
VOLS = {T1: 10.0, T2: 4.0, G1: 2.5}
REJECT = Decision("reject")
VESSEL = Decision("relabel", "vessel")


def test_nothing_done_is_not_started() -> None:
    out = resolve_visit(LESIONS, [], {}, readers_required=2)
    assert (out.status, out.stage, out.n_submitted) == ("not_started", "not_started", 0)
    assert out.final == {}


def test_decisions_without_submission_are_in_review() -> None:
    out = resolve_visit(LESIONS, [], {}, readers_required=2, started=True)
    assert (out.status, out.stage) == ("in_review", "reading")


def test_one_of_two_readers_submitted_is_in_review_and_nothing_final() -> None:
    out = resolve_visit(LESIONS, [{T1: REJECT}], {}, readers_required=2)
    assert (out.status, out.stage, out.n_submitted) == ("in_review", "reading", 1)
    assert out.final == {}


def test_two_readers_agree_is_final() -> None:
    r1 = {T1: REJECT, G1: VESSEL}
    r2 = {T1: REJECT, T2: ACCEPT, G1: VESSEL}  # explicit accept == untouched
    out = resolve_visit(LESIONS, [r1, r2], {}, readers_required=2)
    assert out.status == "final" and out.disagreements == ()
    assert out.final == {T1: REJECT, T2: ACCEPT, G1: VESSEL}
    c = count_lesions(VOLS, out.final, default=None)
    assert c == {"t2_count": 1, "t2_volume_mm3": 4.0, "gd_count": 0, "gd_volume_mm3": 0.0}


def test_disagreement_waits_for_adjudication() -> None:
    r1 = {T1: REJECT}
    r2 = {T1: Decision("relabel", "artefact")}  # both "not counted", still a disagreement
    out = resolve_visit(LESIONS, [r1, r2], {}, readers_required=2)
    assert (out.status, out.stage) == ("in_review", "awaiting_adjudication")
    assert out.disagreements == (T1,) and out.pending == (T1,)
    assert T1 not in out.final and out.final[T2] == ACCEPT


def test_adjudication_decides_and_is_ignored_where_readers_agree() -> None:
    r1 = {T1: REJECT}
    out = resolve_visit(LESIONS, [r1, {}], {T1: ACCEPT, T2: REJECT}, readers_required=2)
    assert out.status == "final" and out.pending == ()
    assert out.final[T1] == ACCEPT  # the adjudicator's word
    assert out.final[T2] == ACCEPT  # readers agreed: the adjudication on T2 has no effect
    assert count_lesions(VOLS, out.final)["t2_count"] == 2


def test_readers_required_one() -> None:
    out = resolve_visit(LESIONS, [{G1: VESSEL}], {}, readers_required=1)
    assert out.status == "final"
    assert count_lesions(VOLS, out.final)["gd_count"] == 0
    # a second submission is not taken into account
    out2 = resolve_visit(LESIONS, [{G1: VESSEL}, {}], {}, readers_required=1)
    assert out2.final == out.final and out2.n_submitted == 1


def test_readers_required_must_be_1_or_2() -> None:
    with pytest.raises(InputError, match="readers_required"):
        resolve_visit(LESIONS, [], {}, readers_required=3)


def test_visit_without_lesions_is_final_once_submitted() -> None:
    out = resolve_visit([], [{}, {}], {}, readers_required=2)
    assert out.status == "final" and out.final == {}
    assert count_lesions({}, out.final)["t2_count"] == 0


def test_check_decision_vocabulary() -> None:
    assert check_decision("T2", "reject", None) == REJECT
    assert parse_choice("Gd", "relabel:choroid plexus") == Decision("relabel", "choroid plexus")
    with pytest.raises(InputError, match="needs new_label"):
        check_decision("T2", "relabel", "vessel-ish")
    with pytest.raises(InputError, match="needs new_label"):
        parse_choice("Gd", "relabel")
    with pytest.raises(InputError, match="decision must be"):
        parse_choice("T2", "delete")
    with pytest.raises(InputError, match="given with decision"):
        check_decision("T2", "accept", "vessel")


def test_count_default_and_rounding() -> None:
    vols = {LesionKey("T2", i): 0.1 for i in range(1, 4)}
    assert count_lesions(vols, {})["t2_volume_mm3"] == 0.3
    assert count_lesions(vols, {}, default=None)["t2_count"] == 0
