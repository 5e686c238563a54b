"""Pure rules of the lesion review: final decision per lesion, review status, reviewed counts.

The review app (:mod:`lesionq.review`, which re-exports these names from
:mod:`lesionq.review.decisions`) applies them as readers decide; the review read
model (:mod:`lesionq.store.reviewed`) applies them to compute the reviewed counts
that ``visits.tsv``, the endpoints and ``lesionq status`` show.

Rules
-----
* The lesions to review are the rows of the visit's *current* result with a
  reviewed label (:data:`REVIEWED_LABELS`: T2 and Gd+; T1 black holes, parts of
  T2 lesions, are not reviewed), identified by ``(label, lesion_id)`` within that
  result, listed in :func:`review_sort_key` order: the Gd+ lesions first, least
  confident first, then the T2 lesions by id. A recomputed visit (a
  new current result) starts a new review; decisions on older results stay in the
  history and no longer count.
* A reader decides per lesion: ``accept`` (a lesion of its label), ``reject`` (not
  a lesion) or ``relabel`` with a ``new_label`` from :data:`RELABELS` (e.g. a Gd+
  lesion that is a vessel). Only ``accept`` counts: ``relabel`` means "not counted
  as a lesion of its label". A lesion the reader did not touch counts as accepted
  (the automatic result stands); at submission these defaults are written as
  explicit ``accept`` decisions.
* ``readers_required`` (1 or 2, default 2) readers submit each visit result
  independently (they do not see each other's decisions). Once they have
  submitted, a lesion on which their decisions are identical (same decision and
  same ``new_label``) is final; a lesion on which they differ is a disagreement,
  final once an adjudicator (who was not one of its readers) has decided it. An
  adjudication on a lesion without disagreement has no effect.
* Review status of a visit: ``not_started`` (nobody has decided or submitted),
  ``in_review`` (readers still reading, or disagreements not yet adjudicated),
  ``final`` (the required readers submitted and every lesion is final). The finer
  :attr:`VisitOutcome.stage` tells ``reading`` from ``awaiting_adjudication``.
* Reviewed counts of a final visit: ``t2_count_reviewed`` / ``gd_count_reviewed``
  = the number of T2 / Gd lesions finally accepted, ``*_volume_reviewed_mm3`` =
  the sum of their ``volume_mm3`` (rounded to 0.001 mm3). Before a visit is
  final they are missing. New / enlarging counts are not reviewed (they stay
  automatic: they count change components, not the visit's lesions).
* Final means final: once final, a visit accepts no more decisions, submissions
  or adjudications (HTTP 409). An *amendment* by an adjudicator who did not read
  the visit, or an administrator, replaces one lesion's final decision, with a
  mandatory reason; the visit's review ``version`` is 1 when it first becomes
  final and goes up by one per amendment (:func:`lesionq.review.state.amend`).

Examples
--------
>>> a, b = LesionKey("T2", 1), LesionKey("T2", 2)
>>> r1 = {a: Decision("reject")}
>>> r2 = {}
>>> out = resolve_visit([a, b], [r1, r2], {}, readers_required=2)
>>> out.status, out.stage, out.pending
('in_review', 'awaiting_adjudication', (LesionKey(label='T2', lesion_id=1),))
>>> out = resolve_visit([a, b], [r1, r2], {a: Decision("reject")}, readers_required=2)
>>> out.status, count_lesions({a: 10.0, b: 5.0}, out.final)["t2_count"]
('final', 1)
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from ..errors import InputError

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

#: Per-lesion decisions.
DECISIONS: tuple[str, ...] = ("accept", "reject", "relabel")
#: Fixed vocabulary of ``new_label`` per lesion label (``lesions.tsv`` ``label``).
RELABELS: Mapping[str, tuple[str, ...]] = {
    "T2": ("artefact", "not MS", "perivascular space", "vessel"),
    "Gd": ("vessel", "artefact", "choroid plexus", "non-enhancing"),
}
#: Lesion labels that have reviewed counts, with their count-column prefix.
COUNTED_LABELS: Mapping[str, str] = {"T2": "t2", "Gd": "gd"}
#: ``lesions.tsv`` labels a reader reviews (the black holes, ``T1hypo``, are not).
REVIEWED_LABELS: tuple[str, ...] = tuple(RELABELS)
#: ``review_status`` values.
REVIEW_STATUSES: tuple[str, ...] = ("not_started", "in_review", "final")
#: Finer stages shown on the worklist.
STAGES: tuple[str, ...] = ("not_started", "reading", "awaiting_adjudication", "final")
#: Allowed values of ``readers_required``.
READERS_REQUIRED_CHOICES: tuple[int, ...] = (1, 2)


@dataclass(frozen=True, order=True)
class LesionKey:
    """A lesion of a visit result: its ``lesions.tsv`` ``label`` and ``lesion_id``."""

    label: str
    lesion_id: int


@dataclass(frozen=True)
class Decision:
    """One decision on a lesion: ``decision`` in :data:`DECISIONS`, ``new_label`` for relabel."""

    decision: str
    new_label: str | None = None

    @property
    def counted(self) -> bool:
        """True when the lesion counts as a lesion of its label (``accept``)."""
        return self.decision == "accept"

    @property
    def choice(self) -> str:
        """``"accept"``, ``"reject"`` or ``"relabel:<new_label>"`` (the form value)."""
        return f"relabel:{self.new_label}" if self.decision == "relabel" else self.decision


#: The default decision of a lesion nobody touched.
ACCEPT = Decision("accept")


def check_decision(label: str, decision: str, new_label: str | None) -> Decision:
    """Validate a decision on a lesion of ``label``; return it as a :class:`Decision`.

    Raises
    ------
    InputError
        Unknown decision, a relabel without (or with an unknown) ``new_label``, or a
        ``new_label`` given with accept / reject.

    Examples
    --------
    >>> check_decision("Gd", "relabel", "vessel")
    Decision(decision='relabel', new_label='vessel')
    """
    if decision not in DECISIONS:
        raise InputError(f"review: decision must be one of {DECISIONS}, got {decision!r}")
    if decision == "relabel":
        allowed = RELABELS.get(label, ())
        if new_label not in allowed:
            raise InputError(
                f"review: relabel of a {label!r} lesion needs new_label in {allowed}, "
                f"got {new_label!r}"
            )
        return Decision("relabel", new_label)
    if new_label:
        raise InputError(f"review: new_label {new_label!r} given with decision {decision!r}")
    return Decision(decision)


def parse_choice(label: str, choice: str) -> Decision:
    """Decision from a form value ``accept`` | ``reject`` | ``relabel:<new_label>``.

    Examples
    --------
    >>> parse_choice("T2", "relabel:artefact").new_label
    'artefact'
    """
    decision, _, new_label = str(choice).partition(":")
    return check_decision(label, decision, new_label or None)


@dataclass(frozen=True)
class VisitOutcome:
    """Review state of one visit result.

    Attributes
    ----------
    status : str
        One of :data:`REVIEW_STATUSES`.
    stage : str
        One of :data:`STAGES`.
    final : mapping of LesionKey to Decision
        The final decision of each lesion that has one (all of them when ``final``).
    disagreements : tuple of LesionKey
        Lesions on which the submitted readers differ (adjudicated or not).
    pending : tuple of LesionKey
        Disagreements not adjudicated yet.
    n_submitted : int
        Readers who submitted (at most ``readers_required`` are taken into account).
    """

    status: str
    stage: str
    final: Mapping[LesionKey, Decision] = field(default_factory=dict)
    disagreements: tuple[LesionKey, ...] = ()
    pending: tuple[LesionKey, ...] = ()
    n_submitted: int = 0


def resolve_visit(
    lesions: Iterable[LesionKey],
    submitted: Sequence[Mapping[LesionKey, Decision]],
    adjudicated: Mapping[LesionKey, Decision],
    *,
    readers_required: int = 2,
    started: bool = False,
) -> VisitOutcome:
    """Apply the review rules (module docstring) to one visit result.

    Parameters
    ----------
    lesions : iterable of LesionKey
        Every lesion of the visit result.
    submitted : sequence of mappings
        The decisions of each reader who submitted, in submission order; a lesion
        missing from a reader's mapping counts as :data:`ACCEPT`. Only the first
        ``readers_required`` readers are used.
    adjudicated : mapping
        The adjudicator's current decision per lesion.
    readers_required : {1, 2}
    started : bool
        Whether any reader has recorded a decision (tells ``not_started`` from
        ``reading`` before the first submission).

    Returns
    -------
    VisitOutcome
    """
    if readers_required not in READERS_REQUIRED_CHOICES:
        raise InputError(
            f"review: readers_required must be one of {READERS_REQUIRED_CHOICES}, "
            f"got {readers_required!r}"
        )
    keys = sorted(set(lesions))
    used = list(submitted)[:readers_required]
    if len(used) < readers_required:
        begun = started or bool(used)
        return VisitOutcome(
            status="in_review" if begun else "not_started",
            stage="reading" if begun else "not_started",
            n_submitted=len(used),
        )
    final: dict[LesionKey, Decision] = {}
    disagreements: list[LesionKey] = []
    pending: list[LesionKey] = []
    for key in keys:
        votes = {reader.get(key, ACCEPT) for reader in used}
        if len(votes) == 1:
            final[key] = next(iter(votes))
            continue
        disagreements.append(key)
        if key in adjudicated:
            final[key] = adjudicated[key]
        else:
            pending.append(key)
    done = not pending
    return VisitOutcome(
        status="final" if done else "in_review",
        stage="final" if done else "awaiting_adjudication",
        final=final,
        disagreements=tuple(disagreements),
        pending=tuple(pending),
        n_submitted=len(used),
    )


def count_lesions(
    volumes_mm3: Mapping[LesionKey, float | None],
    decisions: Mapping[LesionKey, Decision],
    *,
    default: Decision | None = ACCEPT,
) -> dict[str, int | float]:
    """Counts and volumes of the accepted lesions, per counted label.

    Parameters
    ----------
    volumes_mm3 : mapping of LesionKey to float
        Every lesion of the visit result and its volume in mm3 (None counts as 0).
    decisions : mapping of LesionKey to Decision
    default : Decision or None
        Decision of a lesion missing from ``decisions`` (default :data:`ACCEPT`;
        None: such a lesion is not counted).

    Returns
    -------
    dict
        ``t2_count``, ``t2_volume_mm3``, ``gd_count``, ``gd_volume_mm3`` (volumes
        rounded to 0.001 mm3).

    Examples
    --------
    >>> k = LesionKey("Gd", 1)
    >>> count_lesions({k: 2.5}, {k: Decision("relabel", "vessel")})
    {'t2_count': 0, 't2_volume_mm3': 0.0, 'gd_count': 0, 'gd_volume_mm3': 0.0}
    """
    out: dict[str, int | float] = {}
    for prefix in COUNTED_LABELS.values():
        out[f"{prefix}_count"] = 0
        out[f"{prefix}_volume_mm3"] = 0.0
    for key, volume in volumes_mm3.items():
        col = COUNTED_LABELS.get(key.label)
        if col is None:
            continue
        d = decisions.get(key, default)
        if d is None or not d.counted:
            continue
        out[f"{col}_count"] = int(out[f"{col}_count"]) + 1
        out[f"{col}_volume_mm3"] = float(out[f"{col}_volume_mm3"]) + float(volume or 0.0)
    for prefix in COUNTED_LABELS.values():
        out[f"{prefix}_volume_mm3"] = round(float(out[f"{prefix}_volume_mm3"]), 3)
    return out


def review_sort_key(key: LesionKey, confidence: float | None = None) -> tuple[int, float, int]:
    """Order in which a visit's lesions are listed for review.

    Gd+ lesions come first, sorted by their ``confidence`` (``lesions.tsv``,
    :func:`lesionq.core.enhancement.gd_confidence`), lowest first, so that
    readers look at the doubtful ones first (a missing confidence sorts last);
    then the T2 lesions (and any other label) by ``lesion_id``.

    Examples
    --------
    >>> keys = {LesionKey("T2", 1): None, LesionKey("Gd", 1): 0.9, LesionKey("Gd", 2): 0.2}
    >>> sorted(keys, key=lambda k: review_sort_key(k, keys[k]))  # doctest: +NORMALIZE_WHITESPACE
    [LesionKey(label='Gd', lesion_id=2), LesionKey(label='Gd', lesion_id=1),
     LesionKey(label='T2', lesion_id=1)]
    """
    if key.label == "Gd":
        c = float("inf") if confidence is None or confidence != confidence else float(confidence)
        return (0, c, key.lesion_id)
    return (1, 0.0, key.lesion_id)
