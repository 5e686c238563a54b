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
``None``. Files are assigned to a contrast by the part of the name after the
``sub-``/``ses-`` entities; whether those entities match the folders is *not*
decided here but reported by :mod:`lesionq.io.checks` (``entity-mismatch``), so
that one ``lesionq check`` run lists every problem of a dataset at once.

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

_LABEL = re.compile(r"^[0-9a-zA-Z]+$")
_NAME = re.compile(
    r"^sub-(?P<sub>[0-9a-zA-Z]+)(?:_ses-(?P<ses>[0-9a-zA-Z]+))?_(?P<rest>.+?)(?P<ext>\.nii(?:\.gz)?)$"
)
_BY_NAME = {v: k for k, v in CONTRASTS.items()}


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
        Files of contrasts claimed by more than one file (e.g. ``FLAIR.nii`` and
        ``FLAIR.nii.gz``); sorted.
    extra : tuple of Path
        Files in ``anat_dir`` that are not a recognised contrast (``.json``
        sidecars and hidden files excluded); sorted.
    acq_time : str or None
        ``acq_time`` of this session in ``sub-<s>_sessions.tsv``, verbatim
        (``None`` when there is no file, row or value); see :func:`parse_acq_time`.
    sessions_tsv : Path or None
        The subject's sessions file, when it exists.
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
    import csv

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


def _scan_anat(anat_dir: Path) -> tuple[dict[str, Path], tuple[Path, ...], tuple[Path, ...]]:
    """Assign the files of an ``anat`` folder to contrasts.

    Returns ``(contrasts, duplicates, extra)``. Broken symlinks (e.g. git-annex
    content not fetched) are listed like files, so the checks can report them.
    """
    claims: dict[str, list[Path]] = {}
    extra: list[Path] = []
    if anat_dir.is_dir():
        for p in sorted(anat_dir.iterdir(), key=lambda q: natural_key(q.name)):
            if p.name.startswith(".") or p.is_dir() or p.name.endswith(".json"):
                continue
            ent = parse_entities(p)
            key = _BY_NAME.get(ent["rest"]) if ent is not None else None
            if key is None:
                extra.append(p)
            else:
                claims.setdefault(key, []).append(p)
    contrasts = {k: v[0] for k, v in claims.items() if len(v) == 1}
    duplicates = tuple(p for k in CONTRASTS for p in claims.get(k, []) if len(claims[k]) > 1)
    return contrasts, duplicates, tuple(extra)


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
        contrasts, dups, extra = _scan_anat(anat)
        visits.append(
            VisitInputs(
                subject=subject,
                session=session,
                anat_dir=anat,
                duplicates=dups,
                extra=extra,
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
