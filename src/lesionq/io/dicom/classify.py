"""Classification of a DICOM series from its header values.

:func:`classify_series` is a small pure function over
:class:`~lesionq.io.dicom.read.SeriesFeatures` (header values only) driven by the
table :data:`CLASSIFICATION_RULES`: each rule that matches adds points to one
class and a human-readable reason. Decision, in order:

1. *localiser* when ``ImageType`` holds ``LOCALIZER``, the name says
   localiser/scout/survey, the series has several slice orientations
   (3-plane) or fewer than ``min_slices`` slices;
2. otherwise the class with the most points among ``flair``, ``t1``, ``t2``,
   ``other`` wins when it has at least :data:`MIN_SCORE` points and leads the
   runner-up by at least :data:`MIN_MARGIN`; else the series is *unknown*
   and every class with points is a *candidate*;
3. a ``t1`` with contrast evidence (``ContrastBolusAgent``/``Route`` set or a
   post-contrast name) becomes ``t1ce``; contrast evidence together with a
   name that says "pre"/"native" makes it *unknown* (candidates t1, t1ce).

``ImageType`` ``DERIVED`` / ``MPR`` / ``REFORMATTED`` (or an ``mpr`` name)
marks the series as derived (:attr:`~lesionq.io.dicom.read.DicomSeries.derived`);
the class is kept, the orchestrator prefers an original series of the same class
(:mod:`lesionq.batch.ingest`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from .read import SeriesFeatures

__all__ = [
    "SERIES_CLASSES",
    "CLASS_TO_CONTRAST",
    "MIN_SCORE",
    "MIN_MARGIN",
    "MIN_SLICES",
    "CLASSIFICATION_RULES",
    "Rule",
    "Classification",
    "SeriesClass",
    "classify_series",
]

SeriesClass = Literal["flair", "t1", "t1ce", "t2", "localiser", "other", "unknown"]

#: Every class a series can get.
SERIES_CLASSES: tuple[str, ...] = ("flair", "t1", "t1ce", "t2", "localiser", "other", "unknown")

#: Series class -> key of :data:`lesionq.io.bids.CONTRASTS` (classes that are written).
CLASS_TO_CONTRAST: Mapping[str, str] = {"flair": "flair", "t1": "t1", "t1ce": "t1ce", "t2": "t2"}

#: Points the winning class needs.
MIN_SCORE = 3
#: Points by which the winning class must lead the runner-up.
MIN_MARGIN = 2
#: Series with fewer slices than this are localisers.
MIN_SLICES = 10


# --------------------------------------------------------------------------- classification


@dataclass(frozen=True)
class Rule:
    """One classification rule: when ``test`` holds, ``points`` go to ``target``.

    ``target`` is a class (``flair``, ``t1``, ``t2``, ``other``), or ``post`` /
    ``pre`` for contrast evidence, or ``localiser`` (decisive).
    """

    name: str
    target: str
    points: int
    test: Callable[[SeriesFeatures], bool]
    reason: Callable[[SeriesFeatures], str]


def _rx(pattern: str) -> Callable[[SeriesFeatures], bool]:
    rx = re.compile(pattern)
    return lambda f: bool(rx.search(f.name))


_B = r"(?<![a-z0-9])"  # token start (underscores, spaces, dashes separate tokens)
_E = r"(?![a-z0-9])"
_FLAIR_NAME = rf"flair|dark.?fluid|{_B}(?:tirm|df|spc_?fl|space_?flair){_E}"
_has_flair_name = _rx(_FLAIR_NAME)


def _ti(f: SeriesFeatures) -> float:
    return f.inversion_time_ms or 0.0


def _has_ir(f: SeriesFeatures) -> bool:
    return "IR" in f.scanning_sequence or "IR" in f.scan_options or _ti(f) > 0


def _ms(v: float | None) -> str:
    return "n/a" if v is None else f"{v:g}"


def _name_reason(label: str) -> Callable[[SeriesFeatures], str]:
    return lambda f: f"name {f.description or f.protocol!r} suggests {label}"


#: The rule table (see the module docstring for the decision procedure).
CLASSIFICATION_RULES: tuple[Rule, ...] = (
    # localiser (decisive)
    Rule(
        "localiser-image-type",
        "localiser",
        99,
        lambda f: "LOCALIZER" in f.image_type,
        lambda f: "ImageType contains LOCALIZER",
    ),
    Rule(
        "localiser-name",
        "localiser",
        99,
        _rx(rf"{_B}(?:loc|localizer|localiser|scout|survey|aahead|aascout|3.?plane){_E}|localiz"),
        _name_reason("a localiser"),
    ),
    Rule(
        "localiser-planes",
        "localiser",
        99,
        lambda f: f.n_orientations > 1,
        lambda f: f"{f.n_orientations} slice orientations in one series (multi-plane)",
    ),
    Rule(
        "localiser-few-slices",
        "localiser",
        99,
        lambda f: 0 < f.n_slices < MIN_SLICES,
        lambda f: f"{f.n_slices} slices (< {MIN_SLICES})",
    ),
    # names
    Rule("flair-name", "flair", 3, _has_flair_name, _name_reason("FLAIR")),
    Rule(
        "t2-name",
        "t2",
        2,
        lambda f: (
            bool(re.search(rf"{_B}t2(?:w|_?tse|_?fse|_?space)?{_E}(?!\*)", f.name))
            and not _has_flair_name(f)
        ),
        _name_reason("T2"),
    ),
    Rule(
        "t1-name",
        "t1",
        2,
        _rx(rf"{_B}t1w?{_E}|mp.?rage|mp2rage|{_B}(?:spgr|bravo|tfl|vibe|flash|tfe|ffe|fspgr){_E}"),
        _name_reason("T1"),
    ),
    Rule(
        "other-name",
        "other",
        4,
        _rx(
            rf"diff|{_B}(?:dwi|dti|adc|trace|tracew|swi|pd|pdw|asl|pcasl|bold|fmri|rest|tof|"
            rf"mra|mip|minip|fieldmap|perf|dsc|dce|fa|exp|b0|b1000){_E}|t2\*|t2_?star|angio|"
            r"susc|perfusion|phase"
        ),
        _name_reason("a non-structural series (diffusion, perfusion, SWI, angiography...)"),
    ),
    # physics
    Rule(
        "flair-inversion",
        "flair",
        3,
        lambda f: _has_ir(f) and _ti(f) >= 1500,
        lambda f: (
            f"inversion recovery with TI {_ms(f.inversion_time_ms)} ms >= 1500 (fluid nulled)"
        ),
    ),
    Rule(
        "flair-long-te",
        "flair",
        1,
        lambda f: _ti(f) >= 1500 and (f.echo_time_ms or 0) >= 60,
        lambda f: f"long TE {_ms(f.echo_time_ms)} ms with fluid-nulling inversion",
    ),
    Rule(
        "t2-long-tr-te",
        "t2",
        3,
        lambda f: (
            (f.repetition_time_ms or 0) >= 2000
            and (f.echo_time_ms or 0) >= 60
            and _ti(f) < 1500
            and "EP" not in f.scanning_sequence
        ),
        lambda f: (
            f"TR {_ms(f.repetition_time_ms)} ms >= 2000 and TE {_ms(f.echo_time_ms)} ms "
            ">= 60 without fluid nulling (T2 weighting)"
        ),
    ),
    Rule(
        "t1-short-tr-te",
        "t1",
        3,
        lambda f: 0 < (f.repetition_time_ms or 0) < 1000 and 0 < (f.echo_time_ms or 0) < 30,
        lambda f: (
            f"TR {_ms(f.repetition_time_ms)} ms < 1000 and TE {_ms(f.echo_time_ms)} ms < 30 "
            "(T1 weighting)"
        ),
    ),
    Rule(
        "t1-mp-gradient-echo",
        "t1",
        3,
        lambda f: _has_ir(f) and 300 <= _ti(f) < 1400 and 0 < (f.echo_time_ms or 0) < 10,
        lambda f: (
            f"magnetisation-prepared gradient echo (TI {_ms(f.inversion_time_ms)} ms, "
            f"TE {_ms(f.echo_time_ms)} ms)"
        ),
    ),
    Rule(
        "other-epi",
        "other",
        2,
        lambda f: "EP" in f.scanning_sequence,
        lambda f: "echo-planar acquisition (ScanningSequence EP)",
    ),
    Rule(
        "other-image-type",
        "other",
        4,
        lambda f: bool(
            set(f.image_type)
            & {"DIFFUSION", "ADC", "TRACEW", "FA", "PERFUSION", "PHASE", "P", "MIP", "SWI"}
        ),
        lambda f: f"ImageType {'/'.join(f.image_type)} is not a structural magnitude image",
    ),
    Rule(
        "other-modality",
        "other",
        99,
        lambda f: bool(f.modality) and f.modality != "MR",
        lambda f: f"Modality {f.modality} is not MR",
    ),
    # contrast evidence
    Rule(
        "post-contrast-tag",
        "post",
        1,
        lambda f: bool(f.contrast_agent or f.contrast_route),
        lambda f: "ContrastBolusAgent/Route set",
    ),
    Rule(
        "post-contrast-name",
        "post",
        1,
        _rx(
            rf"{_B}(?:post|gd|gad|gado|ce|kontrast|mdc|postcontrast|contrast|postgd){_E}"
            rf"|\+ ?c{_E}|\+ ?gd|post.?gad|post.?contr"
        ),
        _name_reason("post-contrast"),
    ),
    Rule(
        "pre-contrast-name",
        "pre",
        1,
        _rx(rf"{_B}(?:pre|native|nativ|precontrast|pre.?gd|pre.?gad|wo){_E}|w/o"),
        _name_reason("pre-contrast"),
    ),
)

_SCORED = ("flair", "t1", "t2", "other")


@dataclass(frozen=True)
class Classification:
    """Result of :func:`classify_series`.

    Attributes
    ----------
    label : str
        One of :data:`SERIES_CLASSES`.
    reasons : tuple of str
        Every matching rule's reason, then the decision.
    scores : dict
        Points per scored class (``flair``, ``t1``, ``t2``, ``other``).
    candidates : tuple of str
        For ``unknown``: the contrast classes it could be (``flair``, ``t1``,
        ``t1ce``, ``t2``); for a decided label, ``(label,)``.
    derived : bool
        Set by the caller from ``ImageType`` (see :attr:`DicomSeries.derived`).
    """

    label: str
    reasons: tuple[str, ...]
    scores: Mapping[str, int] = field(default_factory=dict)
    candidates: tuple[str, ...] = ()
    derived: bool = False


def classify_series(
    features: SeriesFeatures,
    *,
    rules: Sequence[Rule] = CLASSIFICATION_RULES,
    min_score: int = MIN_SCORE,
    min_margin: int = MIN_MARGIN,
) -> Classification:
    """Classify a series from its header values (pure; see the module docstring).

    Parameters
    ----------
    features : SeriesFeatures
    rules : sequence of Rule
        The rule table (:data:`CLASSIFICATION_RULES` by default).
    min_score, min_margin : int
        Points the winner needs, and its lead over the runner-up.

    Returns
    -------
    Classification

    Examples
    --------
    >>> f = SeriesFeatures("t2_tirm_tra_dark-fluid", scanning_sequence=("SE", "IR"),
    ...                    echo_time_ms=81, repetition_time_ms=9000, inversion_time_ms=2500,
    ...                    n_slices=40)
    >>> c = classify_series(f)
    >>> c.label, c.scores["flair"], c.scores["t2"]
    ('flair', 7, 0)
    >>> classify_series(SeriesFeatures("series 7", n_slices=40)).label
    'unknown'
    """
    reasons: list[str] = []
    scores = dict.fromkeys(_SCORED, 0)
    post = pre = False
    localiser = False
    for rule in rules:
        if not rule.test(features):
            continue
        reasons.append(f"{rule.reason(features)} [{rule.name}: {rule.target} +{rule.points}]")
        if rule.target == "localiser":
            localiser = True
        elif rule.target == "post":
            post = True
        elif rule.target == "pre":
            pre = True
        else:
            scores[rule.target] = scores.get(rule.target, 0) + rule.points
    if localiser:
        return Classification("localiser", tuple(reasons), scores, ())
    ranked = sorted(scores.items(), key=lambda kv: (-kv[1], _SCORED.index(kv[0])))
    (best, top), (_, second) = ranked[0], ranked[1]

    def expand(cls: str) -> tuple[str, ...]:
        if cls != "t1":
            return (cls,)
        return ("t1ce",) if post and not pre else ("t1",) if not post else ("t1", "t1ce")

    if top < min_score or top - second < min_margin:
        cands = tuple(c for cls, pts in ranked if pts > 0 and cls != "other" for c in expand(cls))
        why = (
            f"no class reaches {min_score} points"
            if top < min_score
            else f"{best} leads by {top - second} < {min_margin} points"
        )
        reasons.append(f"undecided: {why} (scores {scores})")
        return Classification("unknown", tuple(reasons), scores, cands)
    label = best
    if best == "t1" and post:
        if pre:
            reasons.append("undecided: contrast evidence and a pre-contrast name")
            return Classification("unknown", tuple(reasons), scores, ("t1", "t1ce"))
        label = "t1ce"
    reasons.append(f"decided: {label} ({top} points, runner-up {second})")
    return Classification(label, tuple(reasons), scores, (label,) if label != "other" else ())
