"""BIDS layout discovery: the one place that knows how input files are named.

lesionq reads raw anatomical images laid out as a BIDS dataset::

    BIDS_DIR/
      dataset_description.json
      sub-<s>/
        sub-<s>_sessions.tsv            (optional: session_id, acq_time)
        ses-<v>/anat/sub-<s>_ses-<v>_FLAIR.nii.gz               (required)
        ses-<v>/anat/sub-<s>_ses-<v>_T1w.nii.gz                 (optional)
        ses-<v>/anat/sub-<s>_ses-<v>_T2w.nii.gz                 (optional)
        ses-<v>/anat/sub-<s>_ses-<v>_ce-gadolinium_T1w.nii.gz   (optional)

``.nii`` and ``.nii.gz`` are both accepted. A subject without ``ses-*`` folders
(``sub-<s>/anat/sub-<s>_FLAIR.nii.gz``) is a single visit whose ``session`` is
``None``.

File names are parsed by :func:`parse_bids_name` (BIDS entities in the order of
the specification's entity table, a suffix, an extension). A file is assigned
to a contrast by its suffix (``FLAIR``, ``T1w``, ``T2w``; a ``T1w`` with a
``ce-<agent>`` entity is the post-contrast T1w) when its other entities are
among ``acq-``, ``ce-``, ``rec-`` and ``run-`` (:func:`contrast_of`). When
several files claim one contrast and differ only in their ``run-<index>``, the
highest run is used (a repeat after a failed acquisition; the others are kept in
``VisitInputs.other_runs`` and reported by the checks, ``several-runs``); any
other clash leaves the contrast unassigned (``duplicate-contrast``). Whether the
``sub-``/``ses-`` entities match the folders is *not* decided here but reported
by :mod:`lesionq.io.checks` (``entity-mismatch``), so that one ``lesionq check``
run lists every problem of a dataset at once.

:func:`discover` only lists files; it opens no image. Problems of the layout
itself (no subjects, an absent participant, a folder that mixes session and
session-less layouts) raise :class:`BIDSLayoutError`; :func:`layout_problems`
returns them as data for the check battery.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from types import MappingProxyType
from typing import Literal, NamedTuple

from ..errors import InputError

__all__ = [
    "CONTRASTS",
    "REQUIRED_CONTRASTS",
    "NIFTI_EXTENSIONS",
    "VisitInputs",
    "LayoutProblem",
    "BIDSLayoutError",
    "discover",
    "layout_problems",
    "natural_key",
    "normalise_participant_label",
    "parse_acq_time",
    "participant_sites",
    "parse_entities",
    "ENTITY_ORDER",
    "CONTRAST_ENTITIES",
    "BIDSName",
    "parse_bids_name",
    "bids_name_problem",
    "contrast_of",
]

logger = logging.getLogger(__name__)

#: Short key -> the part of a BIDS file name after ``sub-<s>[_ses-<v>]_``.
#: Order is the order in which contrasts are listed and checked.
CONTRASTS: Mapping[str, str] = MappingProxyType(
    {
        "flair": "FLAIR",
        "t1": "T1w",
        "t2": "T2w",
        "t1ce": "ce-gadolinium_T1w",
    }
)

#: Contrasts without which a visit cannot be processed.
REQUIRED_CONTRASTS: tuple[str, ...] = ("flair",)

#: Accepted image file extensions (longest first).
NIFTI_EXTENSIONS: tuple[str, ...] = (".nii.gz", ".nii")

#: BIDS entity keys in the order they must appear in a file name (the BIDS
#: specification's entity table, ``rules/entities.yaml`` of its schema).
ENTITY_ORDER: tuple[str, ...] = (
    "sub",
    "tpl",
    "ses",
    "cohort",
    "sample",
    "task",
    "tracksys",
    "acq",
    "nuc",
    "voi",
    "ce",
    "trc",
    "stain",
    "rec",
    "dir",
    "run",
    "mod",
    "echo",
    "flip",
    "inv",
    "mt",
    "part",
    "proc",
    "hemi",
    "space",
    "split",
    "recording",
    "chunk",
    "atlas",
    "seg",
    "scale",
    "res",
    "den",
    "label",
    "prov",
    "desc",
)

#: Entities whose value is an index (digits) rather than a label.
_INDEX_ENTITIES = frozenset({"run", "echo", "flip", "inv", "split", "chunk"})

#: Entities an input image may carry besides ``sub``/``ses`` and still be used:
#: ``acq`` (acquisition variant), ``ce`` (contrast agent: makes a T1w the
#: post-contrast T1w), ``rec`` (reconstruction), ``run`` (repeat index).
CONTRAST_ENTITIES: frozenset[str] = frozenset({"sub", "ses", "acq", "ce", "rec", "run"})

_LABEL = re.compile(r"^[0-9a-zA-Z]+$")
_INDEX = re.compile(r"^[0-9]+$")
_SUFFIX = re.compile(r"^[0-9a-zA-Z]+$")
_NAME = re.compile(
    r"^sub-(?P<sub>[0-9a-zA-Z]+)(?:_ses-(?P<ses>[0-9a-zA-Z]+))?_(?P<rest>.+?)(?P<ext>\.nii(?:\.gz)?)$"
)
_RANK = {key: i for i, key in enumerate(ENTITY_ORDER)}
#: Suffix -> contrast key (without a ``ce-`` entity; a T1w with one is ``t1ce``).
_BY_SUFFIX = {"FLAIR": "flair", "T1w": "t1", "T2w": "t2"}


def natural_key(text: str) -> list[str | int]:
    """Sort key that orders ``ses-2`` before ``ses-10`` (digit runs compare as numbers).

    Parameters
    ----------
    text : str
        A label or file name.

    Returns
    -------
    list of str and int
        Alternating text and integer parts; deterministic.
    """
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", text)]


@dataclass(frozen=True)
class VisitInputs:
    """The raw input files of one visit (one subject, one session).

    Attributes
    ----------
    subject : str
        Subject label without ``sub-`` (e.g. ``"cs07"``).
    session : str or None
        Session label without ``ses-`` (e.g. ``"01"``); ``None`` when the subject
        has no ``ses-*`` folders (a single-visit layout).
    anat_dir : Path
        The ``anat`` folder of the visit (it may not exist: then every contrast
        is ``None`` and the check battery reports the missing FLAIR).
    flair, t1, t2, t1ce : Path or None
        The image of each contrast (see :data:`CONTRASTS`); ``None`` when absent
        or when several files claim the contrast (those are in ``duplicates``).
    duplicates : tuple of Path
        Files of contrasts claimed by more than one file that are not runs of
        one acquisition (e.g. ``FLAIR.nii`` and ``FLAIR.nii.gz``, or two
        ``acq-`` labels); sorted. No file is used for such a contrast.
    extra : tuple of Path
        Files in ``anat_dir`` that are not a recognised contrast (``.json``
        sidecars and hidden files excluded); sorted.
    acq_time : str or None
        ``acq_time`` of this session in ``sub-<s>_sessions.tsv``, verbatim
        (``None`` when there is no file, row or value); see :func:`parse_acq_time`.
    sessions_tsv : Path or None
        The subject's sessions file, when it exists.
    other_runs : tuple of Path
        Files left out because a higher ``run-<index>`` of the same contrast
        (same other entities) is used; sorted.
    """

    subject: str
    session: str | None
    anat_dir: Path
    flair: Path | None = None
    t1: Path | None = None
    t2: Path | None = None
    t1ce: Path | None = None
    duplicates: tuple[Path, ...] = ()
    extra: tuple[Path, ...] = ()
    acq_time: str | None = None
    sessions_tsv: Path | None = None
    other_runs: tuple[Path, ...] = ()

    @property
    def visit_id(self) -> str:
        """``"sub-<s>_ses-<v>"``, or ``"sub-<s>"`` for a session-less subject."""
        base = f"sub-{self.subject}"
        return base if self.session is None else f"{base}_ses-{self.session}"

    def path(self, contrast: str) -> Path | None:
        """Image path of ``contrast`` (a key of :data:`CONTRASTS`) or None."""
        if contrast not in CONTRASTS:
            raise KeyError(f"unknown contrast {contrast!r}; known: {list(CONTRASTS)}")
        return getattr(self, contrast)

    def images(self) -> dict[str, Path]:
        """Present contrasts, ``{key: path}``, in :data:`CONTRASTS` order."""
        return {k: p for k in CONTRASTS if (p := getattr(self, k)) is not None}

    def expected_path(self, contrast: str) -> Path:
        """Where the ``.nii.gz`` of ``contrast`` is expected under the convention.

        Examples
        --------
        >>> v = VisitInputs("cs07", "01", Path("/d/sub-cs07/ses-01/anat"))
        >>> v.expected_path("t1ce").name
        'sub-cs07_ses-01_ce-gadolinium_T1w.nii.gz'
        """
        return self.anat_dir / f"{self.visit_id}_{CONTRASTS[contrast]}.nii.gz"

    @property
    def acq_datetime(self) -> datetime | None:
        """``acq_time`` parsed (see :func:`parse_acq_time`); ``None`` when absent."""
        if self.acq_time is None:
            return None
        return parse_acq_time(self.acq_time, source=self.sessions_tsv)


class LayoutProblem(NamedTuple):
    """A problem with the dataset layout, as data (turned into a Finding by checks)."""

    level: Literal["error", "warning", "info"]
    code: str
    path: Path | None
    message: str
    fix: str


class BIDSLayoutError(InputError):
    """The BIDS layout cannot be used (no subjects, absent participant...).

    Attributes
    ----------
    problems : tuple of LayoutProblem
        Every error-level problem found (the message lists them all).
    code : str
        Code of the first problem.
    """

    def __init__(self, problems: Iterable[LayoutProblem]):
        self.problems = tuple(problems)
        self.code = self.problems[0].code if self.problems else "layout-error"
        super().__init__("; ".join(f"{p.message} (fix: {p.fix})" for p in self.problems))


def participant_sites(bids_dir: str | os.PathLike[str]) -> dict[str, str]:
    """``participant_id`` -> ``site`` from the dataset's ``participants.tsv``.

    Empty when the file or its ``site`` column is absent (sites are optional;
    ``lesionq ingest`` writes them). Other columns are never read (a
    ``participants.tsv`` may hold a treatment arm or demographics: lesionq keeps
    its readers blind to them).
    """
    path = Path(bids_dir) / "participants.tsv"
    if not path.is_file():
        return {}
    with open(path, encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh, delimiter="\t"))
    return {
        r["participant_id"]: r["site"]
        for r in rows
        if r.get("participant_id") and r.get("site") and r["site"] != "n/a"
    }


def normalise_participant_label(label: str) -> str:
    """Strip an optional ``sub-`` prefix and validate the label.

    Raises
    ------
    BIDSLayoutError
        The label is not alphanumeric (BIDS labels are ``[0-9a-zA-Z]+``).

    Examples
    --------
    >>> normalise_participant_label("sub-cs07"), normalise_participant_label("cs07")
    ('cs07', 'cs07')
    """
    text = str(label).strip()
    bare = text[4:] if text.startswith("sub-") else text
    if not _LABEL.match(bare):
        raise BIDSLayoutError(
            [
                LayoutProblem(
                    "error",
                    "participant-label-invalid",
                    None,
                    f"participant label {label!r} is not a BIDS label "
                    "(rule: letters and digits only, optionally prefixed with 'sub-')",
                    "pass labels like 'cs07' or 'sub-cs07'",
                )
            ]
        )
    return bare


def parse_acq_time(value: str, *, source: Path | None = None) -> datetime:
    """Parse a BIDS ``acq_time`` (ISO 8601, e.g. ``2019-03-01T09:30:00``).

    Raises
    ------
    InputError
        The value is not an ISO 8601 date-time; the message names ``source``.

    Examples
    --------
    >>> parse_acq_time("2019-03-01T09:30:00").year
    2019
    """
    try:
        return datetime.fromisoformat(value.strip())
    except ValueError as exc:
        where = f"{source}: " if source is not None else ""
        raise InputError(
            f"{where}acq_time {value!r} is not an ISO 8601 date-time "
            "(rule: BIDS acq_time, e.g. 2019-03-01T09:30:00)"
        ) from exc


def parse_entities(path: str | os.PathLike[str]) -> dict[str, str] | None:
    """Split a BIDS image name into ``sub``, ``ses`` (may be absent), ``rest``, ``ext``.

    Returns None when the name is not ``sub-<s>[_ses-<v>]_<rest>.nii[.gz]``.

    Examples
    --------
    >>> parse_entities("sub-lo01_ses-02_T2w.nii.gz")
    {'sub': 'lo01', 'ses': '02', 'rest': 'T2w', 'ext': '.nii.gz'}
    """
    m = _NAME.match(Path(path).name)
    if m is None:
        return None
    return {k: v for k, v in m.groupdict().items() if v is not None}


@dataclass(frozen=True)
class BIDSName:
    """A BIDS image file name split into its parts (see :func:`parse_bids_name`).

    Attributes
    ----------
    entities : mapping of str to str
        Entity key -> value, in the order of the name (which is
        :data:`ENTITY_ORDER` order), e.g. ``{"sub": "01", "run": "2"}``.
    suffix : str
        The part before the extension, e.g. ``"FLAIR"``.
    extension : str
        ``".nii"`` or ``".nii.gz"``.
    """

    entities: Mapping[str, str]
    suffix: str
    extension: str

    @property
    def run(self) -> int | None:
        """The ``run-<index>`` as an integer, or None without a run entity."""
        value = self.entities.get("run")
        return None if value is None else int(value)

    def without(self, *keys: str) -> tuple[tuple[str, str], ...]:
        """The entities except ``keys``, plus suffix and extension, as a hashable key."""
        kept = tuple((k, v) for k, v in self.entities.items() if k not in keys)
        return (*kept, ("_suffix", self.suffix), ("_extension", self.extension))


def _parse_bids_name(name: str) -> BIDSName | str:
    """A :class:`BIDSName`, or the reason (str) why ``name`` is not a BIDS image name."""
    ext = next((e for e in NIFTI_EXTENSIONS if name.endswith(e)), None)
    if ext is None:
        return f"extension is not one of {list(NIFTI_EXTENSIONS)}"
    parts = name[: -len(ext)].split("_")
    suffix = parts.pop()
    if not parts:
        return "no entities (a BIDS name starts with sub-<label>_)"
    if not _SUFFIX.match(suffix):
        return f"suffix {suffix!r} is not alphanumeric (e.g. FLAIR, T1w)"
    entities: dict[str, str] = {}
    for part in parts:
        key, dash, value = part.partition("-")
        if not dash or not key:
            return f"{part!r} is not an entity key-value pair (key-value)"
        if key not in _RANK:
            return f"unknown entity {key!r} (BIDS entities: {', '.join(ENTITY_ORDER)})"
        if key in entities:
            return f"entity {key!r} appears twice"
        pattern = _INDEX if key in _INDEX_ENTITIES else _LABEL
        if not pattern.match(value):
            what = "an index (digits)" if key in _INDEX_ENTITIES else "a label (letters, digits)"
            return f"value {value!r} of {key}- is not {what}"
        if entities and _RANK[key] < _RANK[next(reversed(entities))]:
            return (
                f"entity {key}- comes after {next(reversed(entities))}- "
                f"(rule: BIDS order {', '.join(ENTITY_ORDER[:16])}, ...)"
            )
        entities[key] = value
    if next(iter(entities)) != "sub":
        return "the first entity is not sub-<label>"
    return BIDSName(MappingProxyType(entities), suffix, ext)


def parse_bids_name(path: str | os.PathLike[str]) -> BIDSName | None:
    """Parse a BIDS image file name into entities, suffix and extension.

    The name must be ``sub-<label>[_<key>-<value>...]_<suffix><extension>`` with
    known BIDS entity keys (:data:`ENTITY_ORDER`), each at most once and in the
    specification's order, labels of letters and digits (indices such as
    ``run`` of digits), an alphanumeric suffix and a ``.nii`` / ``.nii.gz``
    extension. :func:`bids_name_problem` says why a name is refused.

    Parameters
    ----------
    path : path-like
        A file path or name (only the name is parsed).

    Returns
    -------
    BIDSName or None
        None when the name is not such a BIDS image name.

    Examples
    --------
    >>> n = parse_bids_name("sub-01_ses-02_acq-highres_ce-gadolinium_rec-norm_run-1_T1w.nii.gz")
    >>> dict(n.entities), n.suffix, n.extension, n.run
    ({'sub': '01', 'ses': '02', 'acq': 'highres', 'ce': 'gadolinium', 'rec': 'norm', \
'run': '1'}, 'T1w', '.nii.gz', 1)
    >>> parse_bids_name("sub-01_run-1_acq-highres_T1w.nii.gz") is None  # out of order
    True
    """
    parsed = _parse_bids_name(Path(path).name)
    return parsed if isinstance(parsed, BIDSName) else None


def bids_name_problem(path: str | os.PathLike[str]) -> str | None:
    """Why the name of ``path`` is not a BIDS image name (None when it is one).

    Examples
    --------
    >>> bids_name_problem("sub-01_run-1_acq-highres_T1w.nii.gz")
    'entity acq- comes after run- (rule: BIDS order sub, tpl, ses, cohort, sample, task, \
tracksys, acq, nuc, voi, ce, trc, stain, rec, dir, run, ...)'
    """
    parsed = _parse_bids_name(Path(path).name)
    return parsed if isinstance(parsed, str) else None


def contrast_of(name: BIDSName | str | os.PathLike[str]) -> str | None:
    """The contrast key (of :data:`CONTRASTS`) an image file stands for, or None.

    ``FLAIR``, ``T1w`` and ``T2w`` suffixes are the FLAIR, T1w and T2w; a
    ``T1w`` with a ``ce-<agent>`` entity (any agent label) is the post-contrast
    T1w (``t1ce``); a ``FLAIR`` or ``T2w`` with ``ce-`` is not used. Only the
    entities of :data:`CONTRAST_ENTITIES` are allowed (a ``part-phase`` or
    ``echo-2`` image is not the scan lesionq needs).

    Parameters
    ----------
    name : BIDSName or path-like
        A parsed name, or a file path or name to parse.

    Returns
    -------
    str or None
        ``"flair"``, ``"t1"``, ``"t2"`` or ``"t1ce"``; None for a file lesionq
        does not use (or a name that is not BIDS).

    Examples
    --------
    >>> contrast_of("sub-01_ses-01_acq-3D_run-2_FLAIR.nii.gz")
    'flair'
    >>> contrast_of("sub-01_ce-gadolinium_T1w.nii"), contrast_of("sub-01_ce-Gd_FLAIR.nii")
    ('t1ce', None)
    >>> contrast_of("sub-01_echo-2_T2w.nii.gz") is None
    True
    """
    parsed = name if isinstance(name, BIDSName) else parse_bids_name(name)
    if parsed is None or not set(parsed.entities) <= CONTRAST_ENTITIES:
        return None
    key = _BY_SUFFIX.get(parsed.suffix)
    if "ce" in parsed.entities:
        return "t1ce" if key == "t1" else None
    return key


def _read_sessions_tsv(path: Path, problems: list[LayoutProblem]) -> dict[str, str | None]:
    """``{session label: acq_time or None}`` from a ``sessions.tsv`` (problems appended)."""
    try:
        with open(path, encoding="utf-8", newline="") as fh:
            rows = list(csv.DictReader(fh, delimiter="\t"))
            fields = rows[0].keys() if rows else []
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        problems.append(
            LayoutProblem(
                "warning",
                "sessions-tsv-invalid",
                path,
                f"{path}: cannot be read as a tab-separated table ({exc}); acq_time ignored",
                "write a UTF-8 TSV with a header row 'session_id<TAB>acq_time'",
            )
        )
        return {}
    if rows and "session_id" not in fields:
        problems.append(
            LayoutProblem(
                "warning",
                "sessions-tsv-invalid",
                path,
                f"{path}: has no 'session_id' column (columns: {sorted(fields)}); acq_time ignored",
                "add a 'session_id' column with values like 'ses-01'",
            )
        )
        return {}
    out: dict[str, str | None] = {}
    for row in rows:
        sid = (row.get("session_id") or "").strip()
        label = sid[4:] if sid.startswith("ses-") else sid
        value = (row.get("acq_time") or "").strip()
        out[label] = None if value in ("", "n/a") else value
    return out


def _listed(p: Path) -> bool:
    """Whether a folder entry is looked at: not hidden, not a sidecar, not a plain folder.

    A folder named like an image (``..._FLAIR.nii.gz/``) is listed, so the checks
    report it (``not-regular-file``) instead of calling the FLAIR missing; so are
    broken links and link loops (e.g. git-annex content not fetched).
    """
    if p.name.startswith(".") or p.name.endswith(".json"):
        return False
    try:
        is_dir = p.is_dir()
    except OSError:  # not even stat-able (permission): the checks report it
        return True
    return not is_dir or p.name.endswith(NIFTI_EXTENSIONS)


def _choose_run(candidates: list[tuple[Path, BIDSName]]) -> Path | None:
    """The file of the highest run when ``candidates`` differ only in ``run-<index>``."""
    runs = [name.run for _, name in candidates]
    if any(r is None for r in runs) or len(set(runs)) != len(runs):
        return None
    if len({name.without("run") for _, name in candidates}) != 1:
        return None
    return max(candidates, key=lambda c: c[1].run or 0)[0]


def _scan_anat(
    anat_dir: Path,
) -> tuple[dict[str, Path], tuple[Path, ...], tuple[Path, ...], tuple[Path, ...]]:
    """Assign the files of an ``anat`` folder to contrasts.

    Returns ``(contrasts, duplicates, extra, other_runs)``. Broken symlinks (e.g.
    git-annex content not fetched) are listed like files, so the checks can
    report them. Several files of one contrast that differ only in their run
    index give the highest run (the others go to ``other_runs``); any other clash
    gives no file and lists them all in ``duplicates``.
    """
    claims: dict[str, list[tuple[Path, BIDSName]]] = {}
    extra: list[Path] = []
    if anat_dir.is_dir():
        for p in sorted(anat_dir.iterdir(), key=lambda q: natural_key(q.name)):
            if not _listed(p):
                continue
            name = parse_bids_name(p)
            key = contrast_of(name) if name is not None else None
            if key is None or name is None:
                extra.append(p)
            else:
                claims.setdefault(key, []).append((p, name))
    contrasts: dict[str, Path] = {}
    duplicates: list[Path] = []
    other_runs: list[Path] = []
    for key in CONTRASTS:
        found = claims.get(key, [])
        if len(found) == 1:
            contrasts[key] = found[0][0]
        elif found:
            chosen = _choose_run(found)
            if chosen is None:
                duplicates += [p for p, _ in found]
            else:
                contrasts[key] = chosen
                other_runs += [p for p, _ in found if p != chosen]
    return contrasts, tuple(duplicates), tuple(extra), tuple(sorted(other_runs))


def _subject_visits(
    bids_dir: Path, subject: str, problems: list[LayoutProblem]
) -> list[VisitInputs]:
    sub_dir = bids_dir / f"sub-{subject}"
    tsv = sub_dir / f"sub-{subject}_sessions.tsv"
    acq = _read_sessions_tsv(tsv, problems) if tsv.is_file() else {}
    ses_dirs = sorted(
        (d for d in sub_dir.iterdir() if d.is_dir() and d.name.startswith("ses-")),
        key=lambda d: natural_key(d.name),
    )
    if ses_dirs and (sub_dir / "anat").is_dir():
        problems.append(
            LayoutProblem(
                "error",
                "mixed-session-layout",
                sub_dir,
                f"{sub_dir}: has both ses-* folders and a session-less 'anat' folder "
                "(rule: a subject uses sessions everywhere or nowhere)",
                f"move {sub_dir / 'anat'} into a ses-<label> folder and rename its files",
            )
        )
    layout: list[tuple[str | None, Path]] = [(d.name[4:], d / "anat") for d in ses_dirs]
    if not ses_dirs:
        layout = [(None, sub_dir / "anat")]
    visits = []
    for session, anat in layout:
        contrasts, dups, extra, other_runs = _scan_anat(anat)
        visits.append(
            VisitInputs(
                subject=subject,
                session=session,
                anat_dir=anat,
                duplicates=dups,
                extra=extra,
                other_runs=other_runs,
                acq_time=acq.get(session) if session is not None else None,
                sessions_tsv=tsv if tsv.is_file() else None,
                **contrasts,
            )
        )
    return visits


def layout_problems(
    bids_dir: str | os.PathLike[str], participant_labels: Iterable[str] | None = None
) -> tuple[list[VisitInputs], list[LayoutProblem]]:
    """Discover visits and collect every layout problem instead of raising.

    Same arguments as :func:`discover`. Returns ``(visits, problems)``; visits
    of the participants that were found are returned even when others are absent.
    Problems (codes): ``bids-dir-missing``, ``no-dataset-description``,
    ``dataset-description-invalid`` (errors), ``dataset-description-incomplete``
    (warning), ``participant-label-invalid``, ``participant-missing``,
    ``no-subjects``, ``mixed-session-layout`` (errors), ``sessions-tsv-invalid``
    (warning).
    """
    root = Path(bids_dir)
    problems: list[LayoutProblem] = []
    if not root.is_dir():
        problems.append(
            LayoutProblem(
                "error",
                "bids-dir-missing",
                root,
                f"{root}: BIDS folder does not exist or is not a folder",
                "pass the folder that holds dataset_description.json and the sub-* folders",
            )
        )
        return [], problems
    desc = root / "dataset_description.json"
    if not desc.is_file():
        problems.append(
            LayoutProblem(
                "error",
                "no-dataset-description",
                desc,
                f"{desc}: missing (rule: a BIDS dataset root holds dataset_description.json; "
                "its absence usually means the wrong folder was given)",
                "pass the dataset root, or create dataset_description.json with "
                '{"Name": ..., "BIDSVersion": "1.9.0"}',
            )
        )
    else:
        try:
            content = json.loads(desc.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            content = None
            problems.append(
                LayoutProblem(
                    "error",
                    "dataset-description-invalid",
                    desc,
                    f"{desc}: is not valid JSON ({exc})",
                    "fix the JSON syntax (a validator such as `python -m json.tool` shows where)",
                )
            )
        if content is not None:
            missing = [
                k
                for k in ("Name", "BIDSVersion")
                if not isinstance(content, dict) or k not in content
            ]
            if missing:
                problems.append(
                    LayoutProblem(
                        "warning",
                        "dataset-description-incomplete",
                        desc,
                        f"{desc}: lacks required BIDS key(s) {missing}",
                        "add Name and BIDSVersion",
                    )
                )

    available = sorted(
        (d.name[4:] for d in root.iterdir() if d.is_dir() and d.name.startswith("sub-")),
        key=natural_key,
    )
    if participant_labels is None:
        wanted = available
        if not available:
            problems.append(
                LayoutProblem(
                    "error",
                    "no-subjects",
                    root,
                    f"{root}: contains no sub-<label> folders",
                    "pass the BIDS dataset root (the folder holding the sub-* folders)",
                )
            )
    else:
        labels: list[str] = []
        for raw in (
            [participant_labels] if isinstance(participant_labels, str) else participant_labels
        ):
            try:
                labels.append(normalise_participant_label(raw))
            except BIDSLayoutError as exc:
                problems.extend(exc.problems)
        wanted = sorted(set(labels), key=natural_key)
        for label in wanted:
            if label not in available:
                problems.append(
                    LayoutProblem(
                        "error",
                        "participant-missing",
                        root / f"sub-{label}",
                        f"{root / f'sub-{label}'}: requested participant {label!r} is not in "
                        f"the dataset (available: {available})",
                        "check the --participant-label value against the sub-* folders",
                    )
                )
        wanted = [w for w in wanted if w in available]
    visits: list[VisitInputs] = []
    for subject in wanted:
        visits.extend(_subject_visits(root, subject, problems))
    return visits, problems


def discover(
    bids_dir: str | os.PathLike[str], participant_labels: Iterable[str] | None = None
) -> list[VisitInputs]:
    """List the visits of a BIDS dataset with their input files.

    Parameters
    ----------
    bids_dir : path-like
        BIDS dataset root (holds ``dataset_description.json`` and ``sub-*``).
    participant_labels : iterable of str, optional
        Subjects to include, with or without ``sub-`` (``"cs07"`` or
        ``"sub-cs07"``); a single string is one label. All subjects when None.

    Returns
    -------
    list of VisitInputs
        Sorted by subject then session (natural order: ``ses-2`` before
        ``ses-10``). Every ``ses-*`` folder is a visit, even one without an
        ``anat`` folder or a FLAIR (the checks report that); a subject without
        ``ses-*`` folders is one visit with ``session=None``. Visits are *not*
        ordered by ``acq_time`` here.

    Raises
    ------
    BIDSLayoutError
        Error-level layout problems (see :func:`layout_problems`): missing
        folder, no subjects, a requested participant absent, an invalid label,
        a subject mixing session and session-less layouts. A missing
        ``dataset_description.json`` is only logged here (so a loose folder can
        be listed from Python); :func:`lesionq.io.checks.check_dataset` reports
        it as an error.
    """
    visits, problems = layout_problems(bids_dir, participant_labels)
    errors = [p for p in problems if p.level == "error" and p.code != "no-dataset-description"]
    if errors:
        raise BIDSLayoutError(errors)
    for p in problems:
        if p.level != "info":
            logger.warning("%s (%s)", p.message, p.code)
    return visits
