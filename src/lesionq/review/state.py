"""Writing the review: decisions, submissions, adjudications, amendments, views, lock.

Every write is one transaction that also appends its audit-log row(s) (actor =
the reader's username, with ``before`` and ``after``); the acting reader always
comes from the caller's session, never from request data. See
:mod:`lesionq.store.review_rules` for the rules. The read side (the
:class:`ReviewState` of each visit, :func:`load_states`, :func:`reviewed_counts`,
:func:`merge_reviewed_counts`) is the review read model
:mod:`lesionq.store.reviewed`, re-exported here.
"""

from __future__ import annotations

import logging
from typing import Any

import sqlalchemy as sa

from ..errors import LesionQError
from ..store.models import VisitResult
from ..store.review_tables import (
    adjudications,
    amendments,
    lesion_decisions,
    lesion_views,
    readers,
    review_settings,
    study_lock,
)
from ..store.review_tables import visit_reviews as visit_reviews_t
from ..store.reviewed import (
    AUTOMATIC_COLUMNS,
    DEFAULT_READERS_REQUIRED,
    REVIEWED_COLUMNS,
    Amendment,
    DecisionRow,
    LesionRow,
    ReviewState,
    Submission,
    VisitInfo,
    load_state,
    load_states,
    merge_reviewed_counts,
    reviewed_counts,
    stored_readers_required,
)
from .auth import Reader
from .dbutil import audit, inserted_id, now, write_tx
from .decisions import READERS_REQUIRED_CHOICES, Decision, LesionKey, check_decision

__all__ = [
    "ReviewRefused",
    "VisitFinal",
    "MAX_COMMENT_CHARS",
    "Amendment",
    "LesionRow",
    "VisitInfo",
    "DecisionRow",
    "Submission",
    "ReviewState",
    "DEFAULT_READERS_REQUIRED",
    "load_states",
    "load_state",
    "record_decision",
    "reader_writable_state",
    "submit_visit",
    "adjudicate",
    "amend",
    "record_view",
    "lock_state",
    "set_lock",
    "stored_readers_required",
    "ensure_readers_required",
    "reviewed_counts",
    "merge_reviewed_counts",
    "REVIEWED_COLUMNS",
]

LOGGER = logging.getLogger(__name__)


#: Longest accepted comment or amendment reason (characters); longer ones are refused.
MAX_COMMENT_CHARS = 2000
#: The automatic counts (audit rows show the first four before a review's counts).
_AUTO_COLUMNS: tuple[str, ...] = AUTOMATIC_COLUMNS


class ReviewRefused(LesionQError):
    """An action the review rules refuse; ``status_code`` is the HTTP status to answer."""

    def __init__(self, status_code: int, message: str) -> None:
        super().__init__(message)
        self.status_code = int(status_code)


class VisitFinal(ReviewRefused):
    """A decision, submission or adjudication on a visit whose review is final (HTTP 409).

    A final visit changes only through an amendment (:func:`amend`).
    """

    def __init__(self, title: str, version: int | None) -> None:
        super().__init__(
            409,
            f"{title} is final (review version {version}): it is locked; changing it takes "
            "an amendment with a reason, by an adjudicator or an administrator",
        )


# ----------------------------------------------------------------------------- reads


def lock_state(conn: sa.Connection) -> dict[str, Any]:
    """``{"locked": bool, "at", "by", "reason"}`` of the newest lock event (unlocked if none)."""
    r = (
        conn.execute(
            sa.select(study_lock, readers.c.username)
            .join(readers, readers.c.id == study_lock.c.reader_id, isouter=True)
            .order_by(study_lock.c.id.desc())
            .limit(1)
        )
        .mappings()
        .first()
    )
    if r is None:
        return {"locked": False, "at": None, "by": None, "reason": None}
    return {"locked": bool(r["locked"]), "at": r["at"], "by": r["username"], "reason": r["reason"]}


# ----------------------------------------------------------------------------- writes


def ensure_readers_required(engine: sa.Engine, readers_required: int, *, actor: str) -> None:
    """Store the ``readers_required`` rule when it differs from the stored one (audited)."""
    if readers_required not in READERS_REQUIRED_CHOICES:
        raise ReviewRefused(
            400,
            f"readers_required must be one of {READERS_REQUIRED_CHOICES}, got {readers_required!r}",
        )
    with write_tx(engine) as conn:
        old = stored_readers_required(conn)
        if old == readers_required:
            return
        conn.execute(
            sa.insert(review_settings).values(
                at=now(), actor=actor, readers_required=readers_required
            )
        )
        audit(
            conn,
            actor=actor,
            action="review.readers_required_set",
            entity="review_settings",
            entity_id=None,
            before=None if old is None else {"readers_required": old},
            after={"readers_required": readers_required},
        )
    if old is not None:
        LOGGER.warning("review: readers_required changed from %d to %d", old, readers_required)


def _lock_result_row(conn: sa.Connection, result_id: int) -> None:
    """Serialise the review writes on one visit result on PostgreSQL (row lock).

    SQLite writes are serialised already (``BEGIN IMMEDIATE``).
    """
    if conn.dialect.name == "postgresql":
        conn.execute(
            sa.select(VisitResult.id).where(VisitResult.id == int(result_id)).with_for_update()
        )


def _writable_state(
    conn: sa.Connection,
    visit_id: int,
    result_id: int,
    readers_required: int,
    *,
    amending: bool = False,
) -> ReviewState:
    """The visit's state if its current result ``result_id`` may be written to.

    Every decision, submission and adjudication goes through here: a final visit
    raises :class:`VisitFinal` (409), unless ``amending`` (then it must be final).
    """
    if lock_state(conn)["locked"]:
        raise ReviewRefused(403, "the study is locked: no more decisions are accepted")
    state = load_state(conn, visit_id, readers_required)
    if state is None:
        raise ReviewRefused(404, f"no visit {visit_id}")
    if state.visit.result_id != int(result_id):
        owner = conn.execute(
            sa.select(VisitResult.visit_id).where(VisitResult.id == int(result_id))
        ).scalar()
        if owner is None or int(owner) != int(visit_id):
            raise ReviewRefused(
                400,
                f"result {result_id} is not a result of {state.visit.title} (its current "
                f"result is {state.visit.result_id})",
            )
        raise ReviewRefused(
            409,
            f"{state.visit.title} was recomputed (result {result_id} is no longer current): "
            "reload the visit",
        )
    if state.visit.result_status != "ok":
        raise ReviewRefused(409, f"{state.visit.title}: the processing failed; nothing to review")
    final = state.outcome.status == "final"
    if final and not amending:
        raise VisitFinal(state.visit.title, state.version)
    if amending and not final:
        raise ReviewRefused(409, f"{state.visit.title} is not final: nothing to amend")
    return state


def _final_audit(
    conn: sa.Connection, before: ReviewState, actor: str, readers_required: int
) -> None:
    """Audit the visit becoming final (automatic counts before, reviewed counts after)."""
    if before.outcome.status == "final":
        return
    after = load_state(conn, before.visit.visit_id, readers_required)
    if after is None or after.outcome.status != "final":
        return
    audit(
        conn,
        actor=actor,
        action="review.final",
        entity="visit_results",
        entity_id=after.visit.result_id,
        before={k: after.visit.automatic.get(k) for k in _AUTO_COLUMNS[:4]},
        after=after.reviewed,
        detail=f"{after.visit.title}: {len(after.outcome.disagreements)} disagreements adjudicated",
    )


def _clean_comment(comment: str | None, what: str = "comment") -> str | None:
    """A free-text comment or reason, stripped; None when empty.

    Raises
    ------
    ReviewRefused
        400 when longer than :data:`MAX_COMMENT_CHARS` (refused, never cut).
    """
    text = (comment or "").strip()
    if len(text) > MAX_COMMENT_CHARS:
        raise ReviewRefused(
            400,
            f"the {what} has {len(text)} characters; at most {MAX_COMMENT_CHARS} are accepted: "
            "shorten it",
        )
    return text or None


def _check_lesion(state: ReviewState, key: LesionKey, *, added: bool = False) -> None:
    """404 unless ``key`` is a lesion of the visit (or, with ``added``, an added lesion)."""
    if added and any(a.key == key for a in state.added):
        return
    if key not in state.visit.volumes:
        raise ReviewRefused(404, f"{state.visit.title} has no {key.label} lesion {key.lesion_id}")


def _insert_decision(
    conn: sa.Connection,
    table: sa.Table,
    actor_column: str,
    state: ReviewState,
    reader: Reader,
    key: LesionKey,
    decision: Decision,
    comment: str | None,
    old: DecisionRow | None,
) -> DecisionRow:
    """Insert one reader decision or adjudication (superseding ``old``) and return it."""
    t = now()
    new_id = inserted_id(
        conn.execute(
            sa.insert(table).values(
                visit_result_id=state.visit.result_id,
                label=key.label,
                lesion_id=key.lesion_id,
                decision=decision.decision,
                new_label=decision.new_label,
                comment=comment,
                by_default=False,
                created_at=t,
                supersedes=None if old is None else old.id,
                **{actor_column: reader.id},
            )
        )
    )
    return DecisionRow(
        id=int(new_id),
        key=key,
        actor_id=reader.id,
        username=reader.username,
        decision=decision,
        comment=comment,
        by_default=False,
        created_at=t,
    )


def record_decision(
    engine: sa.Engine,
    reader: Reader,
    visit_id: int,
    result_id: int,
    key: LesionKey,
    decision: Decision,
    comment: str | None,
    *,
    readers_required: int,
) -> DecisionRow | None:
    """Record (or change) ``reader``'s decision on one lesion; None when unchanged.

    Raises
    ------
    ReviewRefused
        403: study locked, or the account does not read; 404: no such visit or
        lesion; 409: the visit was recomputed, failed, the reader already submitted
        it, or it has its required readers already.
    """
    if not reader.can_read:
        raise ReviewRefused(403, f"role {reader.role!r} does not read visits")
    decision = check_decision(key.label, decision.decision, decision.new_label)
    comment = _clean_comment(comment)
    with write_tx(engine) as conn:
        _lock_result_row(conn, result_id)
        state = _writable_state(conn, visit_id, result_id, readers_required)
        _check_lesion(state, key)
        if state.submitted_by(reader.id) is not None:
            raise ReviewRefused(409, f"you submitted {state.visit.title} already")
        if len(state.submissions) >= readers_required:
            raise ReviewRefused(409, f"{state.visit.title} has its {readers_required} readers")
        old = state.decisions.get(reader.id, {}).get(key)
        if old is not None and old.decision == decision and old.comment == comment:
            return None
        row = _insert_decision(
            conn, lesion_decisions, "reader_id", state, reader, key, decision, comment, old
        )
        audit(
            conn,
            actor=reader.username,
            action="lesion_decision.recorded",
            entity="lesion_decisions",
            entity_id=row.id,
            before=None if old is None else old.as_dict(),
            after=row.as_dict(),
            detail=f"{state.visit.title} result {state.visit.result_id}: {key.label} lesion "
            f"{key.lesion_id}",
        )
    return row


def reader_writable_state(
    conn: sa.Connection, reader: Reader, visit_id: int, result_id: int, readers_required: int
) -> ReviewState:
    """The visit's state when ``reader`` may still change their reading (add a lesion).

    Raises
    ------
    ReviewRefused
        As :func:`record_decision`, and 409 when the visit is final.
    """
    if not reader.can_read:
        raise ReviewRefused(403, f"role {reader.role!r} does not read visits")
    state = _writable_state(conn, visit_id, result_id, readers_required)
    if state.outcome.status == "final":
        raise ReviewRefused(409, f"{state.visit.title} is final: it takes an amendment")
    if state.submitted_by(reader.id) is not None:
        raise ReviewRefused(409, f"you submitted {state.visit.title} already")
    if len(state.submissions) >= readers_required:
        raise ReviewRefused(409, f"{state.visit.title} has its {readers_required} readers")
    return state


def submit_visit(
    engine: sa.Engine, reader: Reader, visit_id: int, result_id: int, *, readers_required: int
) -> Submission:
    """Submit ``reader``'s review of a visit result: untouched lesions become explicit accepts.

    Raises
    ------
    ReviewRefused
        As :func:`record_decision`.
    """
    if not reader.can_read:
        raise ReviewRefused(403, f"role {reader.role!r} does not read visits")
    with write_tx(engine) as conn:
        _lock_result_row(conn, result_id)
        state = _writable_state(conn, visit_id, result_id, readers_required)
        if state.submitted_by(reader.id) is not None:
            raise ReviewRefused(409, f"you submitted {state.visit.title} already")
        if len(state.submissions) >= readers_required:
            raise ReviewRefused(409, f"{state.visit.title} has its {readers_required} readers")
        own = state.decisions.get(reader.id, {})
        t = now()
        defaults = [les.key for les in state.visit.lesions if les.key not in own]
        if defaults:
            conn.execute(
                sa.insert(lesion_decisions),
                [
                    {
                        "visit_result_id": state.visit.result_id,
                        "label": k.label,
                        "lesion_id": k.lesion_id,
                        "reader_id": reader.id,
                        "decision": "accept",
                        "new_label": None,
                        "comment": None,
                        "by_default": True,
                        "created_at": t,
                        "supersedes": None,
                    }
                    for k in defaults
                ],
            )
        counts = state.provisional(reader.id)
        conn.execute(
            sa.insert(visit_reviews_t).values(
                visit_result_id=state.visit.result_id,
                reader_id=reader.id,
                submitted_at=t,
                **counts,
            )
        )
        audit(
            conn,
            actor=reader.username,
            action="visit_review.submitted",
            entity="visit_reviews",
            entity_id=state.visit.result_id,
            before={k: state.visit.automatic.get(k) for k in _AUTO_COLUMNS[:4]},
            after={
                **counts,
                "decisions": {
                    f"{k.label}:{k.lesion_id}": d.decision.choice for k, d in sorted(own.items())
                },
                "accepted_by_default": [f"{k.label}:{k.lesion_id}" for k in defaults],
                "added": [a.name for a in state.added_by(reader.id)],
                "not_viewed": [f"{k.label}:{k.lesion_id}" for k in state.unviewed(reader.id)],
            },
            detail=f"{state.visit.title} result {state.visit.result_id}",
        )
        _final_audit(conn, state, reader.username, readers_required)
    return Submission(reader_id=reader.id, username=reader.username, submitted_at=t, counts=counts)


def adjudicate(
    engine: sa.Engine,
    reader: Reader,
    visit_id: int,
    result_id: int,
    key: LesionKey,
    decision: Decision,
    comment: str | None,
    *,
    readers_required: int,
) -> DecisionRow | None:
    """Record (or change) the adjudication of a disagreement; None when unchanged.

    Raises
    ------
    ReviewRefused
        403: locked study, not an adjudicator, or one of the visit's readers;
        404: no such visit / lesion; 409: recomputed visit, readers not all
        submitted, or no disagreement on this lesion.
    """
    if not reader.can_adjudicate:
        raise ReviewRefused(403, "only adjudicators adjudicate")
    decision = check_decision(key.label, decision.decision, decision.new_label)
    comment = _clean_comment(comment)
    with write_tx(engine) as conn:
        _lock_result_row(conn, result_id)
        state = _writable_state(conn, visit_id, result_id, readers_required)
        if any(s.reader_id == reader.id for s in state.submissions):
            raise ReviewRefused(403, f"you read {state.visit.title}: another adjudicator decides")
        _check_lesion(state, key, added=True)
        if state.outcome.n_submitted < readers_required:
            raise ReviewRefused(409, f"{state.visit.title}: the readers have not all submitted")
        if key not in state.outcome.disagreements:
            raise ReviewRefused(409, f"the readers agree on {key.label} lesion {key.lesion_id}")
        old = state.adjudications.get(key)
        if old is not None and old.decision == decision and old.comment == comment:
            return None
        row = _insert_decision(
            conn, adjudications, "adjudicator_id", state, reader, key, decision, comment, old
        )
        readers_said = {
            s.username: state.decisions.get(s.reader_id, {}).get(key) for s in state.submissions
        }
        audit(
            conn,
            actor=reader.username,
            action="adjudication.recorded",
            entity="adjudications",
            entity_id=row.id,
            before={
                "adjudication": None if old is None else old.as_dict(),
                "readers": {
                    u: (d.decision.choice if d is not None else "accept")
                    for u, d in readers_said.items()
                },
            },
            after=row.as_dict(),
            detail=f"{state.visit.title} result {state.visit.result_id}: {key.label} lesion "
            f"{key.lesion_id}",
        )
        _final_audit(conn, state, reader.username, readers_required)
    return row


def amend(
    engine: sa.Engine,
    actor: Reader,
    visit_id: int,
    result_id: int,
    key: LesionKey,
    decision: Decision,
    reason: str | None,
    *,
    readers_required: int,
) -> Amendment | None:
    """Change a final visit's decision on one lesion: a new review version (audited).

    The visit stays final; its reviewed counts use the amended decision from now
    on, and :attr:`ReviewState.version` (exported as ``review_version``) goes up
    by one. The audit row ``amendment.recorded`` holds the reason, the decision
    and reviewed counts before and after, and both versions.

    Parameters
    ----------
    engine : sqlalchemy.Engine
    actor : Reader
        An adjudicator who did not read the visit, or an administrator.
    visit_id, result_id : int
        The visit and its current result.
    key : LesionKey
    decision : Decision
    reason : str
        Mandatory (non-empty, at most :data:`MAX_COMMENT_CHARS` characters).
    readers_required : {1, 2}

    Returns
    -------
    Amendment or None
        None when ``decision`` is already the lesion's final decision (nothing
        recorded).

    Raises
    ------
    ReviewRefused
        400: no reason, or too long; 403: locked study, a role other than
        adjudicator / admin, or an adjudicator who read the visit; 404: no such
        visit / lesion; 409: the visit is not final, or was recomputed.
    """
    if not (actor.can_adjudicate or actor.is_admin):
        raise ReviewRefused(403, "only adjudicators and administrators amend a final review")
    decision = check_decision(key.label, decision.decision, decision.new_label)
    text = _clean_comment(reason, "reason")
    if text is None:
        raise ReviewRefused(400, "an amendment needs a reason")
    with write_tx(engine) as conn:
        _lock_result_row(conn, result_id)
        state = _writable_state(conn, visit_id, result_id, readers_required, amending=True)
        if any(s.reader_id == actor.id for s in state.submissions):
            raise ReviewRefused(403, f"you read {state.visit.title}: another adjudicator amends")
        _check_lesion(state, key, added=True)
        old = state.outcome.final.get(key)
        if old == decision:
            return None
        version = int(state.version or 1) + 1
        t = now()
        new_id = inserted_id(
            conn.execute(
                sa.insert(amendments).values(
                    visit_result_id=state.visit.result_id,
                    label=key.label,
                    lesion_id=key.lesion_id,
                    actor_id=actor.id,
                    decision=decision.decision,
                    new_label=decision.new_label,
                    reason=text,
                    version=version,
                    created_at=t,
                )
            )
        )
        after = load_state(conn, visit_id, readers_required)
        audit(
            conn,
            actor=actor.username,
            action="amendment.recorded",
            entity="amendments",
            entity_id=new_id,
            before={
                "version": state.version,
                "decision": None if old is None else old.choice,
                "reviewed": state.reviewed,
            },
            after={
                "version": version,
                "decision": decision.choice,
                "reason": text,
                "reviewed": None if after is None else after.reviewed,
            },
            detail=f"{state.visit.title} result {state.visit.result_id}: {key.label} lesion "
            f"{key.lesion_id}, review version {version}",
        )
    return Amendment(
        id=new_id,
        key=key,
        actor_id=actor.id,
        username=actor.username,
        decision=decision,
        reason=text,
        version=version,
        created_at=t,
    )


def record_view(
    engine: sa.Engine, reader: Reader, visit_id: int, key: LesionKey, *, readers_required: int
) -> bool:
    """Record that ``reader`` opened a lesion of the visit's current result; True the first time.

    Only the first view per reader, result and lesion is stored (``lesion_views``);
    accounts that do not read (administrators) are not recorded (False).

    Raises
    ------
    ReviewRefused
        404: no such visit or lesion.
    """
    if not reader.can_read:
        return False
    with write_tx(engine) as conn:
        state = load_state(conn, visit_id, readers_required)
        if state is None:
            raise ReviewRefused(404, f"no visit {visit_id}")
        _check_lesion(state, key, added=True)
        if key in state.views.get(reader.id, frozenset()):
            return False
        conn.execute(
            sa.insert(lesion_views).values(
                visit_result_id=state.visit.result_id,
                reader_id=reader.id,
                label=key.label,
                lesion_id=key.lesion_id,
                viewed_at=now(),
            )
        )
    return True


def set_lock(engine: sa.Engine, admin: Reader, locked: bool, reason: str | None) -> None:
    """Lock (no more decisions, submissions, adjudications) or unlock the study."""
    if not admin.is_admin:
        raise ReviewRefused(403, "only administrators lock the study")
    reason = _clean_comment(reason)
    with write_tx(engine) as conn:
        before = lock_state(conn)
        conn.execute(
            sa.insert(study_lock).values(at=now(), reader_id=admin.id, locked=locked, reason=reason)
        )
        audit(
            conn,
            actor=admin.username,
            action="study.locked" if locked else "study.unlocked",
            entity="study_lock",
            entity_id=None,
            before={"locked": before["locked"]},
            after={"locked": locked, "reason": reason},
        )
