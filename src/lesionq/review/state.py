"""Reading and writing the review: visits, decisions, submissions, adjudications, lock.

Every write is one transaction that also appends its audit-log row(s) (actor =
the reader's username, with ``before`` and ``after``); the acting reader always
comes from the caller's session, never from request data. See
:mod:`lesionq.review.decisions` for the rules.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

import pandas as pd
import sqlalchemy as sa

from ..errors import LesionQError
from ..store import ResultsDB
from ..store.models import Lesion, Subject, Visit, VisitResult
from .added import AddedLesion, count_with_added, load_added, resolve_added
from .auth import Reader
from .dbutil import audit, inserted_id, now, read_tx, write_tx
from .decisions import (
    COUNTED_LABELS,
    READERS_REQUIRED_CHOICES,
    REVIEWED_LABELS,
    Decision,
    LesionKey,
    VisitOutcome,
    check_decision,
    resolve_visit,
    review_sort_key,
)
from .models import (
    adjudications,
    amendments,
    lesion_decisions,
    lesion_views,
    readers,
    review_settings,
    study_lock,
)
from .models import visit_reviews as visit_reviews_t

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

#: ``readers_required`` when the database has no setting yet.
DEFAULT_READERS_REQUIRED = 2
#: Columns of :func:`reviewed_counts` after the keys.
REVIEWED_COLUMNS: tuple[str, ...] = (
    "review_status",
    "t2_count_reviewed",
    "t2_volume_reviewed_mm3",
    "gd_count_reviewed",
    "gd_volume_reviewed_mm3",
    "review_version",
)
#: Longest accepted comment or amendment reason (characters); longer ones are refused.
MAX_COMMENT_CHARS = 2000
_AUTO_COLUMNS: tuple[str, ...] = (
    "t2_count",
    "t2_volume_mm3",
    "gd_count",
    "gd_volume_mm3",
    "new_t2_count",
    "enlarging_t2_count",
)


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


@dataclass(frozen=True)
class Amendment:
    """A change of a final visit's decision on one lesion, creating review ``version``."""

    id: int
    key: LesionKey
    actor_id: int
    username: str
    decision: Decision
    reason: str
    version: int
    created_at: datetime


@dataclass(frozen=True)
class LesionRow:
    """One lesion of a visit result (blinded: no free-form columns).

    ``confidence`` is the Gd+ lesion's confidence (0..1, ``lesions.tsv``); None for
    T2 lesions and results without it.
    """

    key: LesionKey
    volume_mm3: float | None
    n_voxels: int | None
    location: str | None
    status: str | None
    centroid_mm: tuple[float, float, float] | None
    confidence: float | None = None


def _confidence(extra: Any) -> float | None:
    """The ``confidence`` of a lesion's ``extra`` JSON, or None."""
    if isinstance(extra, str):
        try:
            extra = json.loads(extra)
        except ValueError:
            return None
    if not isinstance(extra, Mapping):
        return None
    v = extra.get("confidence")
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
        return None
    return float(v)


@dataclass(frozen=True)
class VisitInfo:
    """A visit and its current result (BIDS labels, site, stored acquisition time, counts)."""

    visit_id: int
    participant_id: str
    session_id: str | None
    site: str | None
    acq_time: str | None
    result_id: int
    result_status: str
    automatic: Mapping[str, Any]
    lesions: tuple[LesionRow, ...]

    @property
    def volumes(self) -> dict[LesionKey, float | None]:
        """Volume (mm3) of every lesion."""
        return {les.key: les.volume_mm3 for les in self.lesions}

    @property
    def title(self) -> str:
        """``sub-01 ses-01``."""
        return f"{self.participant_id} {self.session_id or ''}".strip()


@dataclass(frozen=True)
class DecisionRow:
    """A current (not superseded) decision of a reader or adjudicator."""

    id: int
    key: LesionKey
    actor_id: int
    username: str
    decision: Decision
    comment: str | None
    by_default: bool
    created_at: datetime

    def as_dict(self) -> dict[str, Any]:
        """JSON-safe summary for the audit log."""
        return {
            "id": self.id,
            "label": self.key.label,
            "lesion_id": self.key.lesion_id,
            "decision": self.decision.decision,
            "new_label": self.decision.new_label,
            "comment": self.comment,
        }


@dataclass(frozen=True)
class Submission:
    """A reader's submission of a visit result."""

    reader_id: int
    username: str
    submitted_at: datetime
    counts: Mapping[str, Any]


@dataclass(frozen=True)
class ReviewState:
    """Everything known about the review of one visit's current result."""

    visit: VisitInfo
    decisions: Mapping[int, Mapping[LesionKey, DecisionRow]]
    submissions: tuple[Submission, ...]
    adjudications: Mapping[LesionKey, DecisionRow]
    outcome: VisitOutcome
    readers_required: int = field(default=DEFAULT_READERS_REQUIRED)
    #: Lesions readers added (:mod:`lesionq.review.added`), every reader's, by id.
    added: tuple[AddedLesion, ...] = ()
    #: Agreed duplicate added lesion -> the added lesion it counts as.
    added_merged: Mapping[LesionKey, LesionKey] = field(default_factory=dict)
    #: Amendments of the final review, oldest first (already applied to ``outcome.final``).
    amendments: tuple[Amendment, ...] = ()
    #: The lesions each reader (by id) has opened at least once.
    views: Mapping[int, frozenset[LesionKey]] = field(default_factory=dict)

    @property
    def version(self) -> int | None:
        """Review version of a final visit (1, then 2, 3, ... per amendment); None before."""
        return 1 + len(self.amendments) if self.outcome.status == "final" else None

    def unviewed(self, reader_id: int) -> tuple[LesionKey, ...]:
        """The visit's lesions (review order) the reader has never opened."""
        seen = self.views.get(reader_id, frozenset())
        return tuple(les.key for les in self.visit.lesions if les.key not in seen)

    def added_by(self, reader_id: int) -> tuple[AddedLesion, ...]:
        """The lesions ``reader_id`` added."""
        return tuple(a for a in self.added if a.reader_id == reader_id)

    def own(self, reader_id: int) -> dict[LesionKey, Decision]:
        """A reader's current decisions."""
        return {k: d.decision for k, d in self.decisions.get(reader_id, {}).items()}

    def submitted_by(self, reader_id: int) -> Submission | None:
        """The reader's submission, if any."""
        return next((s for s in self.submissions if s.reader_id == reader_id), None)

    def provisional(self, reader_id: int) -> dict[str, int | float]:
        """The reader's counts: untouched lesions accepted."""
        return count_with_added(self.visit.volumes, self.own(reader_id), self.added_by(reader_id))

    @property
    def reviewed(self) -> dict[str, Any]:
        """Reviewed counts (``*_reviewed``), missing (None) until the visit is final.

        A label whose automatic count is missing (e.g. no Gd+ inputs) stays missing.
        """
        out: dict[str, Any] = {"review_status": self.outcome.status}
        counts = (
            count_with_added(self.visit.volumes, self.outcome.final, self.added, default=None)
            if self.outcome.status == "final"
            else None
        )
        for prefix in COUNTED_LABELS.values():
            auto_missing = self.visit.automatic.get(f"{prefix}_count") is None
            c = None if counts is None or auto_missing else counts[f"{prefix}_count"]
            v = None if counts is None or auto_missing else counts[f"{prefix}_volume_mm3"]
            out[f"{prefix}_count_reviewed"] = c
            out[f"{prefix}_volume_reviewed_mm3"] = v
        out["review_version"] = self.version
        return out


# ----------------------------------------------------------------------------- reads


def _current(table: sa.Table) -> sa.ColumnElement[bool]:
    newer = table.alias(f"{table.name}_newer")
    return ~sa.exists().where(newer.c.supersedes == table.c.id)


def _decision_row(r: Mapping[Any, Any], actor_col: str) -> DecisionRow:
    return DecisionRow(
        id=int(r["id"]),
        key=LesionKey(r["label"], int(r["lesion_id"])),
        actor_id=int(r[actor_col]),
        username=r["username"],
        decision=Decision(r["decision"], r["new_label"]),
        comment=r["comment"],
        by_default=bool(r["by_default"]),
        created_at=r["created_at"],
    )


def load_states(
    conn: sa.Connection,
    readers_required: int,
    *,
    visit_id: int | None = None,
    site: str | None = None,
    include_failed: bool = False,
) -> list[ReviewState]:
    """Review state of every visit's current result (or of one visit), by participant, session.

    Visits whose current result failed are left out unless ``include_failed``.
    """
    q = (
        sa.select(
            Visit.id.label("visit_id"),
            Subject.participant_id,
            Subject.site,
            Visit.session_id,
            Visit.session_key,
            Visit.acq_time,
            VisitResult.id.label("result_id"),
            VisitResult.status,
            *(getattr(VisitResult, c) for c in _AUTO_COLUMNS),
        )
        .join(Visit, Visit.id == VisitResult.visit_id)
        .join(Subject, Subject.id == Visit.subject_id)
        .where(VisitResult.is_current.is_(True))
        .order_by(Subject.participant_id, Visit.session_key)
    )
    if visit_id is not None:
        q = q.where(Visit.id == visit_id)
    if site is not None:
        q = q.where(Subject.site == site)
    if not include_failed:
        q = q.where(VisitResult.status == "ok")
    visits = conn.execute(q).mappings().all()
    if not visits:
        return []
    ids = [int(v["result_id"]) for v in visits]

    def in_results(col: Any) -> sa.ColumnElement[bool]:
        return col.in_(ids) if len(ids) <= 500 else sa.true()

    lesions: dict[int, list[LesionRow]] = {}
    lq = (
        sa.select(Lesion.__table__)
        .where(in_results(Lesion.visit_result_id), Lesion.label.in_(REVIEWED_LABELS))
        .order_by(Lesion.visit_result_id, Lesion.label, Lesion.lesion_id)
    )
    for r in conn.execute(lq).mappings():
        xyz = (r["centroid_x_mm"], r["centroid_y_mm"], r["centroid_z_mm"])
        lesions.setdefault(int(r["visit_result_id"]), []).append(
            LesionRow(
                key=LesionKey(str(r["label"]), int(r["lesion_id"])),
                volume_mm3=r["volume_mm3"],
                n_voxels=r["n_voxels"],
                location=r["location"],
                status=r["status"],
                centroid_mm=None
                if any(c is None for c in xyz)
                else (float(xyz[0]), float(xyz[1]), float(xyz[2])),
                confidence=_confidence(r["extra"]) if str(r["label"]) == "Gd" else None,
            )
        )
    for rows in lesions.values():
        rows.sort(key=lambda les: review_sort_key(les.key, les.confidence))
    decisions: dict[int, dict[int, dict[LesionKey, DecisionRow]]] = {}
    dq = (
        sa.select(lesion_decisions, readers.c.username)
        .join(readers, readers.c.id == lesion_decisions.c.reader_id)
        .where(in_results(lesion_decisions.c.visit_result_id), _current(lesion_decisions))
    )
    for r in conn.execute(dq).mappings():
        d = _decision_row(r, "reader_id")
        decisions.setdefault(int(r["visit_result_id"]), {}).setdefault(d.actor_id, {})[d.key] = d
    adjud: dict[int, dict[LesionKey, DecisionRow]] = {}
    aq = (
        sa.select(adjudications, readers.c.username)
        .join(readers, readers.c.id == adjudications.c.adjudicator_id)
        .where(in_results(adjudications.c.visit_result_id), _current(adjudications))
    )
    for r in conn.execute(aq).mappings():
        d = _decision_row(r, "adjudicator_id")
        adjud.setdefault(int(r["visit_result_id"]), {})[d.key] = d
    subs: dict[int, list[Submission]] = {}
    sq = (
        sa.select(visit_reviews_t, readers.c.username)
        .join(readers, readers.c.id == visit_reviews_t.c.reader_id)
        .where(in_results(visit_reviews_t.c.visit_result_id))
        .order_by(visit_reviews_t.c.submitted_at, visit_reviews_t.c.id)
    )
    for r in conn.execute(sq).mappings():
        subs.setdefault(int(r["visit_result_id"]), []).append(
            Submission(
                reader_id=int(r["reader_id"]),
                username=r["username"],
                submitted_at=r["submitted_at"],
                counts={
                    k: r[k] for k in ("t2_count", "t2_volume_mm3", "gd_count", "gd_volume_mm3")
                },
            )
        )
    added = load_added(conn, ids)
    amended: dict[int, list[Amendment]] = {}
    mq = (
        sa.select(amendments, readers.c.username)
        .join(readers, readers.c.id == amendments.c.actor_id)
        .where(in_results(amendments.c.visit_result_id))
        .order_by(amendments.c.version)
    )
    for r in conn.execute(mq).mappings():
        amended.setdefault(int(r["visit_result_id"]), []).append(
            Amendment(
                id=int(r["id"]),
                key=LesionKey(r["label"], int(r["lesion_id"])),
                actor_id=int(r["actor_id"]),
                username=r["username"],
                decision=Decision(r["decision"], r["new_label"]),
                reason=r["reason"],
                version=int(r["version"]),
                created_at=r["created_at"],
            )
        )
    views: dict[int, dict[int, set[LesionKey]]] = {}
    vq = sa.select(
        lesion_views.c.visit_result_id,
        lesion_views.c.reader_id,
        lesion_views.c.label,
        lesion_views.c.lesion_id,
    ).where(in_results(lesion_views.c.visit_result_id))
    for r in conn.execute(vq).mappings():
        views.setdefault(int(r["visit_result_id"]), {}).setdefault(int(r["reader_id"]), set()).add(
            LesionKey(r["label"], int(r["lesion_id"]))
        )
    out = []
    for v in visits:
        rid = int(v["result_id"])
        info = VisitInfo(
            visit_id=int(v["visit_id"]),
            participant_id=v["participant_id"],
            session_id=v["session_id"],
            site=v["site"],
            acq_time=v["acq_time"],
            result_id=rid,
            result_status=v["status"],
            automatic={c: v[c] for c in _AUTO_COLUMNS},
            lesions=tuple(lesions.get(rid, [])),
        )
        dec = decisions.get(rid, {})
        sub = tuple(subs.get(rid, []))
        adj = adjud.get(rid, {})
        submitted_maps = [{k: d.decision for k, d in dec.get(s.reader_id, {}).items()} for s in sub]
        outcome = resolve_visit(
            [les.key for les in info.lesions],
            submitted_maps,
            {k: d.decision for k, d in adj.items()},
            readers_required=readers_required,
            started=bool(dec) or bool(added.get(rid)),
        )
        extra = resolve_added(
            added.get(rid, ()),
            [s.reader_id for s in sub],
            {k: d.decision for k, d in adj.items()},
            readers_required=readers_required,
        )
        if extra.disagreements or extra.final:
            pending = outcome.pending + extra.pending
            outcome = VisitOutcome(
                status="in_review" if pending else outcome.status,
                stage="awaiting_adjudication" if pending else outcome.stage,
                final={**outcome.final, **extra.final},
                disagreements=outcome.disagreements + extra.disagreements,
                pending=pending,
                n_submitted=outcome.n_submitted,
            )
        amends = tuple(amended.get(rid, ())) if outcome.status == "final" else ()
        if amends:  # the newest amendment of a lesion is its final decision
            outcome = replace(
                outcome, final={**outcome.final, **{a.key: a.decision for a in amends}}
            )
        out.append(
            ReviewState(
                visit=info,
                decisions=dec,
                submissions=sub,
                adjudications=adj,
                outcome=outcome,
                readers_required=readers_required,
                added=tuple(added.get(rid, ())),
                added_merged=extra.merged,
                amendments=amends,
                views={k: frozenset(v) for k, v in views.get(rid, {}).items()},
            )
        )
    return out


def load_state(conn: sa.Connection, visit_id: int, readers_required: int) -> ReviewState | None:
    """Review state of one visit (None when it has no current result)."""
    states = load_states(conn, readers_required, visit_id=visit_id, include_failed=True)
    return states[0] if states else None


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


def stored_readers_required(conn: sa.Connection) -> int | None:
    """The ``readers_required`` rule stored in the database (None when never set)."""
    v = conn.execute(
        sa.select(review_settings.c.readers_required).order_by(review_settings.c.id.desc()).limit(1)
    ).scalar()
    return None if v is None else int(v)


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


# ----------------------------------------------------------------------------- export


def reviewed_counts(db: ResultsDB, *, readers_required: int | None = None) -> pd.DataFrame:
    """Reviewed counts of every visit whose current result is 'ok'.

    Parameters
    ----------
    db : ResultsDB
    readers_required : {1, 2}, optional
        Default: the rule stored by the review app (2 when never set).

    Returns
    -------
    pandas.DataFrame
        ``participant_id``, ``session_id``, ``review_status`` (``not_started`` |
        ``in_review`` | ``final``), ``t2_count_reviewed`` (Int64),
        ``t2_volume_reviewed_mm3`` (float64), ``gd_count_reviewed`` (Int64),
        ``gd_volume_reviewed_mm3`` (float64), ``review_version`` (Int64: 1 when
        final, +1 per amendment); counts and version missing until ``final``,
        sorted as ``visits.tsv``.
    """
    with read_tx(db.engine) as conn:
        n = readers_required or stored_readers_required(conn) or DEFAULT_READERS_REQUIRED
        states = load_states(conn, n)
    rows = [
        {"participant_id": s.visit.participant_id, "session_id": s.visit.session_id, **s.reviewed}
        for s in states
    ]
    df = pd.DataFrame(rows, columns=["participant_id", "session_id", *REVIEWED_COLUMNS])
    for c in ("t2_count_reviewed", "gd_count_reviewed", "review_version"):
        df[c] = df[c].astype("Int64")
    for c in ("t2_volume_reviewed_mm3", "gd_volume_reviewed_mm3"):
        df[c] = df[c].astype("float64")
    return df.reset_index(drop=True)


def merge_reviewed_counts(visits: pd.DataFrame, reviewed: pd.DataFrame) -> pd.DataFrame:
    """``visits`` (a ``visits.tsv`` table) with the reviewed columns added after its own.

    Rows keep the order of ``visits``; visits without a review row (failed ones)
    get ``review_status`` ``n/a``-missing and missing counts. A missing
    ``session_id`` matches a missing ``session_id``.
    """
    key = "__lesionq_session_key"
    left = visits.assign(
        **{key: visits["session_id"].astype(object).where(visits["session_id"].notna(), "")}
    )
    right = reviewed.assign(
        **{key: reviewed["session_id"].astype(object).where(reviewed["session_id"].notna(), "")}
    ).drop(columns=["session_id"])
    out = left.merge(right, on=["participant_id", key], how="left", sort=False)
    return out.drop(columns=[key])
