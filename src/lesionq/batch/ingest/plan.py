"""The ingest plan: what an upload holds and what will be written from it.

Holds the records of an ingest (:class:`SeriesRecord`, :class:`VisitIngest`,
:class:`IngestReport` and their JSON/text forms), the subject map
(:func:`read_subject_map`), and the planning of an upload: the walk of
``UPLOAD/<site>/<subject>/<visit>/`` into DICOM visit jobs (``_VisitJob``) with
their subject/session labels, and the BIDS datasets found in it (``_plan``).
"""

from __future__ import annotations

import csv
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..._version import __version__
from ...errors import InputError
from ...io.bids import CONTRASTS, normalise_participant_label
from ...io.checks import Finding, format_findings, has_errors
from ...io.dicom import WrittenFile

_NON_LABEL = re.compile(r"[^0-9a-zA-Z]")

ChoiceKey = tuple[str, str, str]


# --------------------------------------------------------------------------- records


@dataclass(frozen=True)
class SeriesRecord:
    """One series of a visit, as reported (no identifiers, UID hashed).

    Attributes
    ----------
    series_number : int or None
    description : str
        ``SeriesDescription`` redacted (see :func:`lesionq.io.deid.redact`).
    series_hash : str
        :func:`lesionq.io.deid.hash_uid` of the ``SeriesInstanceUID``.
    n_files, n_slices : int
    label : str
        Class from :func:`lesionq.io.dicom.classify_series`.
    candidates : tuple of str
        Contrasts an ``unknown`` series could be.
    derived : bool
    reasons : tuple of str
        Redacted reasons of the classification.
    status : str
        ``chosen``, ``localiser``, ``other``, ``duplicate``, ``ambiguous``,
        ``not-preferred`` (derived with an original present), ``unclassified``,
        ``corrupt``, ``conversion-failed``.
    contrast : str or None
        Key of :data:`~lesionq.io.bids.CONTRASTS` it was written as.
    duplicate_of : int or None
        Series number of the series it duplicates.
    """

    series_number: int | None
    description: str
    series_hash: str
    n_files: int
    n_slices: int
    label: str
    candidates: tuple[str, ...]
    derived: bool
    reasons: tuple[str, ...]
    status: str
    contrast: str | None = None
    duplicate_of: int | None = None

    @property
    def chosen(self) -> bool:
        """True when the series was written."""
        return self.status == "chosen"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return {
            "series_number": self.series_number,
            "description": self.description,
            "series_hash": self.series_hash,
            "n_files": self.n_files,
            "n_slices": self.n_slices,
            "class": self.label,
            "candidates": list(self.candidates),
            "derived": self.derived,
            "status": self.status,
            "contrast": self.contrast,
            "duplicate_of": self.duplicate_of,
            "reasons": list(self.reasons),
        }


@dataclass(frozen=True)
class VisitIngest:
    """Outcome of one visit of the upload.

    ``subject``/``session`` are the BIDS labels (``None`` when no valid label
    could be made); ``acq_time`` is the *shifted* ISO date-time written to
    ``sessions.tsv``.
    """

    site: str
    upload_subject: str
    upload_visit: str
    subject: str | None
    session: str | None
    kind: str = "dicom"
    series: tuple[SeriesRecord, ...] = ()
    findings: tuple[Finding, ...] = ()
    written: tuple[WrittenFile, ...] = ()
    acq_time: str | None = None
    conversion_s: float = 0.0

    @property
    def visit_id(self) -> str:
        """``sub-<s>_ses-<v>``, or the upload path when there are no labels."""
        if self.subject is None or self.session is None:
            return f"{self.upload_subject}/{self.upload_visit}"
        return f"sub-{self.subject}_ses-{self.session}"

    @property
    def ok(self) -> bool:
        """No error finding for this visit."""
        return not has_errors(self.findings)

    @property
    def contrasts(self) -> dict[str, str]:
        """``{contrast key: BIDS file name}`` of the images written (or unchanged)."""
        out = {}
        for f in self.written:
            for key, suffix in CONTRASTS.items():
                if f.path.name.endswith(f"_{suffix}.nii.gz"):
                    out[key] = f.path.name
        return out


@dataclass(frozen=True)
class IngestReport:
    """Outcome of :func:`ingest_upload`.

    Attributes
    ----------
    upload_dir, bids_dir : Path
    visits : tuple of VisitIngest
    findings : tuple of Finding
        Every finding: upload-level ones first, then each visit's.
    written : tuple of WrittenFile
        Every file written or found unchanged (images, sidecars, tables, report).
    converter : str or None
        ``dcm2niix vX`` when DICOM was converted.
    elapsed_s : float
        Wall time of the ingest, s.
    """

    upload_dir: Path
    bids_dir: Path
    visits: tuple[VisitIngest, ...] = ()
    findings: tuple[Finding, ...] = ()
    written: tuple[WrittenFile, ...] = ()
    converter: str | None = None
    elapsed_s: float = 0.0
    report_files: tuple[Path, ...] = field(default=())

    @property
    def ok(self) -> bool:
        """No error finding anywhere (warnings allowed)."""
        return not has_errors(self.findings)

    def counts(self) -> dict[str, int]:
        """Files per action (``created``, ``replaced``, ``unchanged``)."""
        out = {"created": 0, "replaced": 0, "unchanged": 0}
        for f in self.written:
            out[f.action] += 1
        return out

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (paths relative to the upload / BIDS root; no real dates)."""
        return {
            "lesionq_version": __version__,
            "converter": self.converter,
            "upload": self.upload_dir.name,
            "ok": self.ok,
            "files": self.counts(),
            "findings": [_finding_dict(f, self.upload_dir, self.bids_dir) for f in self.findings],
            "visits": [
                {
                    "site": v.site,
                    "upload_subject": v.upload_subject,
                    "upload_visit": v.upload_visit,
                    "participant_id": None if v.subject is None else f"sub-{v.subject}",
                    "session_id": None if v.session is None else f"ses-{v.session}",
                    "kind": v.kind,
                    "ok": v.ok,
                    "acq_time": v.acq_time,
                    "contrasts": v.contrasts,
                    "series": [s.to_dict() for s in v.series],
                    "written": [
                        {
                            "path": _rel(w.path, self.bids_dir),
                            "action": w.action,
                            "sha256": w.sha256,
                        }
                        for w in v.written
                    ],
                }
                for v in self.visits
            ],
        }

    def to_text(self) -> str:
        """Human-readable report for the command line."""
        lines = [
            f"lesionq ingest: {self.upload_dir} -> {self.bids_dir}"
            + (f" ({self.converter})" if self.converter else "")
        ]
        for v in self.visits:
            head = f"{v.visit_id}  (site {v.site}, upload {v.upload_subject}/{v.upload_visit}"
            head += f", acq_time {v.acq_time})" if v.acq_time else ")"
            lines.append("")
            lines.append(head)
            if v.series:
                lines.append(f"  {'#':>4}  {'class':<9} {'status':<17} {'contrast':<8} description")
                for s in v.series:
                    num = "?" if s.series_number is None else str(s.series_number)
                    cls = s.label + ("*" if s.derived else "")
                    lines.append(
                        f"  {num:>4}  {cls:<9} {s.status:<17} {s.contrast or '-':<8} "
                        f"{s.description!r}"
                    )
            for f in v.findings:
                lines.append(f"  {f.level.upper():<8} {f.code}  {f.message}")
                if f.fix:
                    lines.append(f"  {'':<8} fix: {f.fix}")
        top = [f for f in self.findings if not any(f in v.findings for v in self.visits)]
        if top:
            lines.append("")
            lines.append("upload:")
            lines.extend("  " + ln for ln in format_findings(top).splitlines()[:-1])
        c = self.counts()
        lines.append("")
        lines.append(
            f"{len(self.visits)} visits; files: {c['created']} created, {c['replaced']} replaced, "
            f"{c['unchanged']} unchanged; {format_findings(self.findings).splitlines()[-1]} "
            f"({self.elapsed_s:.1f} s)"
        )
        lines.append("* = derived/reformatted series")
        return "\n".join(lines)


def _rel(path: Path | None, *roots: Path) -> str | None:
    if path is None:
        return None
    for root in roots:
        try:
            return str(Path(path).relative_to(root))
        except ValueError:
            continue
    return Path(path).name


def _finding_dict(f: Finding, *roots: Path) -> dict[str, Any]:
    msg = f.message
    for root in roots:
        msg = msg.replace(f"{root}{os.sep}", "")
    return {
        "level": f.level,
        "code": f.code,
        "path": _rel(f.path, *roots),
        "message": msg,
        "fix": f.fix,
    }


# --------------------------------------------------------------------------- helpers


def read_subject_map(path: str | os.PathLike[str]) -> dict[str, str]:
    """Read a subject map TSV: columns ``upload_name`` and ``participant_id``.

    ``participant_id`` may carry the ``sub-`` prefix. Returns ``{upload name: label}``.

    Raises
    ------
    InputError
        Missing file or columns, an invalid label, or a repeated upload name.
    """
    p = Path(path)
    try:
        with open(p, encoding="utf-8", newline="") as fh:
            rows = list(csv.DictReader(fh, delimiter="\t"))
    except OSError as exc:
        raise InputError(f"{p}: cannot read the subject map ({exc})") from exc
    if not rows or not {"upload_name", "participant_id"} <= set(rows[0]):
        raise InputError(
            f"{p}: subject map needs the columns 'upload_name' and 'participant_id' "
            f"(got {sorted(rows[0]) if rows else 'no rows'})"
        )
    out: dict[str, str] = {}
    for i, row in enumerate(rows, start=2):
        name = (row["upload_name"] or "").strip()
        if name in out:
            raise InputError(f"{p}: line {i}: upload_name {name!r} appears twice")
        try:
            out[name] = normalise_participant_label((row["participant_id"] or "").strip())
        except InputError as exc:
            raise InputError(f"{p}: line {i}: {exc}") from exc
    return out


def _label(name: str) -> str:
    return _NON_LABEL.sub("", name)


def _dirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _stray_files(folder: Path, where: str) -> list[Finding]:
    files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    if not files:
        return []
    return [
        Finding(
            "info",
            "stray-file",
            folder,
            f"{folder}: {len(files)} file(s) at the {where} level ignored "
            f"(rule: UPLOAD/<site>/<subject>/<visit>/...; e.g. {files[0].name})",
            "",
        )
    ]


# --------------------------------------------------------------------------- planning


@dataclass
class _VisitJob:
    site: str
    upload_subject: str
    upload_visit: str
    folder: Path
    subject: str
    session: str


def _plan(
    upload: Path, subject_map: Mapping[str, str]
) -> tuple[list[_VisitJob], list[tuple[str, Path]], list[Finding]]:
    jobs: list[_VisitJob] = []
    bids_roots: list[tuple[str, Path]] = []
    findings: list[Finding] = []
    if (upload / "dataset_description.json").is_file():
        return [], [("n/a", upload)], []
    findings.extend(_stray_files(upload, "upload"))
    seen: dict[str, tuple[str, str]] = {}
    for site_dir in _dirs(upload):
        site = site_dir.name
        if (site_dir / "dataset_description.json").is_file():
            bids_roots.append((site, site_dir))
            continue
        findings.extend(_stray_files(site_dir, "site"))
        for subj_dir in _dirs(site_dir):
            name = subj_dir.name
            raw = subject_map.get(name, _label(name))
            try:
                label = normalise_participant_label(raw)
            except InputError:
                findings.append(
                    Finding(
                        "error",
                        "subject-label-invalid",
                        subj_dir,
                        f"{site}/{name}: no BIDS label can be made from {raw!r} "
                        "(rule: letters and digits only)",
                        "rename the folder or map it with subject_map",
                    )
                )
                continue
            if label in seen:
                findings.append(
                    Finding(
                        "error",
                        "subject-label-collision",
                        subj_dir,
                        f"{site}/{name}: label sub-{label} already used by "
                        f"{seen[label][0]}/{seen[label][1]}; not ingested",
                        "give the subjects distinct names or map them with subject_map",
                    )
                )
                continue
            seen[label] = (site, name)
            findings.extend(_stray_files(subj_dir, "subject"))
            sessions: dict[str, str] = {}
            for visit_dir in _dirs(subj_dir):
                ses = _label(visit_dir.name)
                if not ses or ses in sessions:
                    why = "is empty" if not ses else f"repeats {sessions[ses]!r}"
                    findings.append(
                        Finding(
                            "error",
                            "session-label-invalid",
                            visit_dir,
                            f"{site}/{name}/{visit_dir.name}: session label {ses!r} {why}; "
                            "not ingested",
                            "rename the visit folder (letters and digits)",
                        )
                    )
                    continue
                sessions[ses] = visit_dir.name
                jobs.append(_VisitJob(site, name, visit_dir.name, visit_dir, label, ses))
    return jobs, bids_roots, findings
