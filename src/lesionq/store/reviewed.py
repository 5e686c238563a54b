"""The review read model: each visit's review state and its reviewed counts, from the database.

The radiologists' review is written by the review web app (:mod:`lesionq.review`)
into the results database (tables :mod:`lesionq.store.review_tables`). This module
reads it back, applying the review rules (:mod:`lesionq.store.review_rules`, and
:mod:`lesionq.store.review_added` for the lesions readers added), so that the
batch layer (``visits.tsv``, the endpoints, ``lesionq status``), the exports and the
review app itself see one and the same reviewed result:

* :func:`load_states` / :func:`load_state`: the :class:`ReviewState` of every visit's
  current result (or of one visit): lesions, decisions, submissions,
  adjudications, added lesions, amendments, views, and the resolved
  :class:`~lesionq.store.review_rules.VisitOutcome`;
* :func:`reviewed_counts`: per visit, ``review_status``, the reviewed counts and
  volumes (missing until the review is final) and ``review_version``;
* :func:`merge_reviewed_counts`: those columns joined onto a ``visits.tsv`` table;
* :func:`added_lesions_table`: every lesion a reader added, with its review status
  (:func:`added_status`): ``OUT/added_lesions.tsv`` and ``lesionq export --table added``.

Nothing here writes; :mod:`lesionq.review.state` (which re-exports these names)
holds the writes.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

import pandas as pd
import sqlalchemy as sa

from .db import ResultsDB
from .models import Lesion, Subject, Visit, VisitResult
from .review_added import AddedLesion, count_with_added, load_added, resolve_added
from .review_rules import (
    COUNTED_LABELS,
    REVIEWED_LABELS,
    Decision,
    LesionKey,
    VisitOutcome,
    resolve_visit,
    review_sort_key,
)
from .review_tables import (
    adjudications,
    amendments,
    lesion_decisions,
    lesion_views,
    readers,
    review_settings,
)
from .review_tables import visit_reviews as visit_reviews_t

__all__ = [
    "DEFAULT_READERS_REQUIRED",
    "REVIEWED_COLUMNS",
    "AUTOMATIC_COLUMNS",
    "Amendment",
    "LesionRow",
    "VisitInfo",
    "DecisionRow",
    "Submission",
    "ReviewState",
    "load_states",
    "load_state",
    "stored_readers_required",
    "reviewed_counts",
    "merge_reviewed_counts",
    "ADDED_COLUMNS",
    "added_status",
    "added_lesions_table",
]

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
#: The automatic per-visit counts a review state carries (``VisitInfo.automatic``).
AUTOMATIC_COLUMNS: tuple[str, ...] = (
    "t2_count",
    "t2_volume_mm3",
    "gd_count",
    "gd_volume_mm3",
    "new_t2_count",
    "enlarging_t2_count",
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

    Parameters
    ----------
    conn : sqlalchemy.Connection
        A connection to the results database (in a transaction, for one snapshot).
    readers_required : {1, 2}
        The review rule the outcomes are resolved with
        (:func:`~lesionq.store.review_rules.resolve_visit`).
    visit_id : int, optional
        Only this visit.
    site : str, optional
        Only the visits of this site.
    include_failed : bool
        Include the visits whose current result failed (left out by default).

    Returns
    -------
    list of ReviewState
        Sorted by ``participant_id`` and session; empty when no visit matches.
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
            *(getattr(VisitResult, c) for c in AUTOMATIC_COLUMNS),
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
            automatic={c: v[c] for c in AUTOMATIC_COLUMNS},
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
    """Review state of one visit, its current result failed or not.

    Parameters
    ----------
    conn : sqlalchemy.Connection
    visit_id : int
    readers_required : {1, 2}

    Returns
    -------
    ReviewState or None
        None when the visit has no current result.
    """
    states = load_states(conn, readers_required, visit_id=visit_id, include_failed=True)
    return states[0] if states else None


def stored_readers_required(conn: sa.Connection) -> int | None:
    """The ``readers_required`` rule the review app stored in the database.

    Parameters
    ----------
    conn : sqlalchemy.Connection

    Returns
    -------
    int or None
        The newest stored rule (1 or 2); None when never set.
    """
    v = conn.execute(
        sa.select(review_settings.c.readers_required).order_by(review_settings.c.id.desc()).limit(1)
    ).scalar()
    return None if v is None else int(v)


# ----------------------------------------------------------------------------- reviewed counts


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
    with db.engine.connect() as conn, conn.begin():  # one consistent snapshot
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

    Parameters
    ----------
    visits : pandas.DataFrame
        A ``visits.tsv`` table (``participant_id``, ``session_id``, ...).
    reviewed : pandas.DataFrame
        :func:`reviewed_counts` of the same database.

    Returns
    -------
    pandas.DataFrame
        Rows in the order of ``visits``; visits without a review row (failed ones)
        get a missing ``review_status`` and missing counts. A missing
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


# ----------------------------------------------------------------------------- added lesions

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
    """Every added lesion of the visits' current results (columns :data:`ADDED_COLUMNS`).

    Parameters
    ----------
    db : ResultsDB
    readers_required : {1, 2}, optional
        Default: the rule stored by the review app (2 when never set).

    Returns
    -------
    pandas.DataFrame
        One row per added lesion, its status from :func:`added_status`.
    """
    with db.engine.connect() as conn, conn.begin():  # one consistent snapshot
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
