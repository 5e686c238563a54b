"""DICOM uploads: one visit folder scanned, its series classified and converted.

Holds the ingest of one DICOM visit of the plan (``_ingest_dicom_visit``): the
folder scanned for DICOM files, the headers grouped into series and classified
(``_triage``), localisers, other and duplicate series dropped
(``_usable_series``), one series chosen per contrast or the ambiguity reported
(``_choose_contrasts``), the chosen series converted with dcm2niix into the BIDS
dataset (``_write_contrasts``) and the visit's start time read
(``_session_start``).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from ..._version import __version__
from ...errors import CorruptFileError, ProcessingError
from ...io.bids import CONTRASTS
from ...io.checks import Finding, Level
from ...io.deid import redact
from ...io.dicom import (
    CLASS_TO_CONTRAST,
    Classification,
    DicomHeader,
    DicomSeries,
    WrittenFile,
    classify_series,
    convert_series,
    group_series,
    is_dicom_file,
    pixel_digest,
    read_header,
)
from .plan import ChoiceKey, SeriesRecord, VisitIngest, _rel, _VisitJob


def _describe(s: DicomSeries, ids: Iterable[str]) -> str:
    num = "?" if s.series_number is None else s.series_number
    return f"#{num} {redact(s.description, ids)!r}"


def _choice_for(
    choices: Mapping[ChoiceKey, int], job: _VisitJob, key: str
) -> tuple[bool, int | None]:
    for subj in (job.upload_subject, job.subject, f"sub-{job.subject}"):
        for ses in (job.upload_visit, job.session, f"ses-{job.session}"):
            if (subj, ses, key) in choices:
                return True, int(choices[(subj, ses, key)])
    return False, None


def _scan_files(job: _VisitJob, upload: Path) -> tuple[list[DicomHeader], list[Finding]]:
    headers: list[DicomHeader] = []
    findings: list[Finding] = []
    skipped: list[Path] = []
    for p in sorted(job.folder.rglob("*")):
        if not p.is_file() or any(part.startswith(".") for part in p.relative_to(job.folder).parts):
            continue
        rel = p.relative_to(upload)
        if p.name.upper() == "DICOMDIR":
            skipped.append(p)
            continue
        if not is_dicom_file(p):
            if p.name.endswith((".nii", ".nii.gz")):
                findings.append(
                    Finding(
                        "warning",
                        "nifti-outside-bids",
                        p,
                        f"{rel}: NIfTI file in a DICOM visit folder not ingested "
                        "(rule: NIfTI uploads must be a BIDS dataset with dataset_description.json)",
                        "upload NIfTI files as a BIDS dataset, or upload the DICOM series",
                    )
                )
            else:
                skipped.append(p)
            continue
        try:
            headers.append(read_header(p))
        except CorruptFileError as exc:
            findings.append(
                Finding(
                    "warning",
                    "dicom-unreadable",
                    p,
                    str(exc).replace(str(p), str(rel)),
                    "re-export this file from the PACS; the rest of the visit is ingested",
                )
            )
    if skipped:
        names = ", ".join(str(q.relative_to(upload)) for q in skipped[:3])
        findings.append(
            Finding(
                "info",
                "non-dicom-file",
                skipped[0],
                f"{len(skipped)} non-DICOM file(s) ignored (rule: DICOM files start with a "
                f"128-byte preamble and 'DICM'; e.g. {names})",
                "",
            )
        )
    return headers, findings


@dataclass
class _DicomVisit:
    """One DICOM visit being ingested: its series, their classes and records, the findings."""

    job: _VisitJob
    upload: Path
    vid: str
    ids: frozenset[str]
    series: list[DicomSeries]
    classes: dict[str, Classification]
    records: dict[str, dict[str, Any]]
    findings: list[Finding]


def _triage(job: _VisitJob, upload: Path) -> _DicomVisit:
    """Read the headers of a visit folder, group them into series and classify each."""
    vid = f"sub-{job.subject}_ses-{job.session}"
    headers, findings = _scan_files(job, upload)
    series = group_series(headers)
    ids: frozenset[str] = (
        frozenset().union(*(s.identifiers for s in series)) if series else frozenset()
    )
    records: dict[str, dict[str, Any]] = {}
    classes = {}
    for s in series:
        c = classify_series(s.features())
        classes[s.uid] = c
        records[s.uid] = {
            "series_number": s.series_number,
            "description": redact(s.description, ids),
            "series_hash": s.uid_hash,
            "n_files": len(s.headers),
            "n_slices": s.n_slices,
            "label": c.label,
            "candidates": c.candidates if c.label == "unknown" else (),
            "derived": s.derived,
            "reasons": tuple(redact(r, ids) for r in c.reasons),
            "status": "",
        }
        if s.repeated_files:
            findings.append(
                Finding(
                    "info",
                    "duplicate-file",
                    s.repeated_files[0],
                    f"{vid}: series {_describe(s, ids)}: {len(s.repeated_files)} file(s) repeat "
                    "images already read (same SOPInstanceUID); used once",
                    "",
                )
            )
    return _DicomVisit(job, upload, vid, ids, series, classes, records, findings)


def _usable_series(v: _DicomVisit) -> list[DicomSeries]:
    """The series that may become a contrast: no localisers, others, corrupt or duplicates."""
    vid, ids, upload, records, classes, findings = (
        v.vid, v.ids, v.upload, v.records, v.classes, v.findings
    )  # fmt: skip
    usable: list[DicomSeries] = []
    digests: dict[str, DicomSeries] = {}
    for s in v.series:
        c = classes[s.uid]
        rec = records[s.uid]
        if c.label == "localiser":
            rec["status"] = "localiser"
            findings.append(
                Finding(
                    "info",
                    "localiser-dropped",
                    s.files[0],
                    f"{vid}: series {_describe(s, ids)} is a localiser ({rec['reasons'][0]}); dropped",
                )
            )
            continue
        if c.label == "other":
            rec["status"] = "other"
            findings.append(
                Finding(
                    "info",
                    "other-series",
                    s.files[0],
                    f"{vid}: series {_describe(s, ids)} is not a FLAIR/T1/T2 series "
                    f"({rec['reasons'][0]}); not ingested",
                )
            )
            continue
        try:
            digest = pixel_digest(s)
        except CorruptFileError as exc:
            rec["status"] = "corrupt"
            findings.append(
                Finding(
                    "warning",
                    "series-corrupt",
                    s.files[0],
                    f"{vid}: series {_describe(s, ids)} ({c.label}) not used: "
                    + str(exc).replace(f"{upload}{os.sep}", ""),
                    "re-export the series from the PACS",
                )
            )
            continue
        if digest in digests:
            first = digests[digest]
            rec["status"] = "duplicate"
            rec["duplicate_of"] = first.series_number
            findings.append(
                Finding(
                    "info",
                    "duplicate-series",
                    s.files[0],
                    f"{vid}: series {_describe(s, ids)} has the same pixel data as series "
                    f"{_describe(first, ids)}; collapsed into it",
                )
            )
            continue
        digests[digest] = s
        usable.append(s)

    return usable


def _choose_contrasts(
    v: _DicomVisit, usable: list[DicomSeries], choices: Mapping[ChoiceKey, int]
) -> dict[str, tuple[DicomSeries, str]]:
    """One series per contrast (explicit choice, else unambiguous classification), with why."""
    job, vid, ids, records, classes, findings, series = (
        v.job, v.vid, v.ids, v.records, v.classes, v.findings, v.series
    )  # fmt: skip
    chosen: dict[str, tuple[DicomSeries, str]] = {}
    for key in CONTRASTS:
        suffix = CONTRASTS[key]
        level: Level = "error" if key == "flair" else "warning"
        explicit, number = _choice_for(choices, job, key)
        if explicit:
            picks = [s for s in usable if s.series_number == number]
            if len(picks) != 1:
                findings.append(
                    Finding(
                        "error",
                        "choice-invalid",
                        job.folder,
                        f"{vid}: choice {key}=series {number} matches {len(picks)} usable series "
                        f"(usable: {[s.series_number for s in usable]})",
                        "choose the series number of one usable series of this visit",
                    )
                )
                continue
            chosen[key] = (picks[0], "explicit choice")
            findings.append(
                Finding(
                    "info",
                    "choice-applied",
                    picks[0].files[0],
                    f"{vid}: {suffix} taken from series {_describe(picks[0], ids)} "
                    f"by explicit choice (classified {classes[picks[0].uid].label})",
                )
            )
            continue
        cands = [s for s in usable if CLASS_TO_CONTRAST.get(classes[s.uid].label) == key]
        unknown = [
            s
            for s in usable
            if classes[s.uid].label == "unknown" and key in classes[s.uid].candidates
        ]
        originals = [s for s in cands if not s.derived]
        pool = originals or cands
        if unknown or len(pool) > 1:
            listed = [f"{_describe(s, ids)} ({classes[s.uid].label})" for s in pool] + [
                f"{_describe(s, ids)} (unclassified; could be "
                f"{'/'.join(classes[s.uid].candidates)})"
                for s in unknown
            ]
            for s in pool + unknown:
                records[s.uid]["status"] = "ambiguous"
            nums = [s.series_number for s in pool + unknown]
            findings.append(
                Finding(
                    level,
                    "ambiguous-series",
                    job.folder,
                    f"{vid}: {len(listed)} series could be the {suffix}: {', '.join(listed)}; "
                    f"the {suffix} is not written (rule: one series per contrast, no guessing)",
                    f"choose one: choices={{({job.upload_subject!r}, {job.upload_visit!r}, "
                    f"{key!r}): <series number, one of {nums}>}}",
                )
            )
            continue
        if pool:
            s = pool[0]
            chosen[key] = (s, "classification")
            for d in cands:
                if d.derived and originals:
                    records[d.uid]["status"] = "not-preferred"
                    findings.append(
                        Finding(
                            "info",
                            "derived-not-preferred",
                            d.files[0],
                            f"{vid}: derived/reformatted series {_describe(d, ids)} not used; "
                            f"the original series {_describe(s, ids)} is",
                        )
                    )
            if s.derived:
                findings.append(
                    Finding(
                        "warning",
                        "derived-only",
                        s.files[0],
                        f"{vid}: the {suffix} comes from the derived/reformatted series "
                        f"{_describe(s, ids)} (no original series of this class)",
                        "upload the original acquisition if it exists",
                    )
                )
        elif key == "flair":
            findings.append(
                Finding(
                    "error",
                    "missing-flair",
                    job.folder,
                    f"{vid}: no usable FLAIR series in the upload (rule: every visit needs a "
                    f"FLAIR; series: {[records[s.uid]['series_number'] for s in series]})",
                    "upload the FLAIR series of this visit, or choose one with choices=",
                )
            )
    for s in usable:
        rec = records[s.uid]
        if not rec["status"]:
            if classes[s.uid].label == "unknown":
                rec["status"] = "unclassified"
                findings.append(
                    Finding(
                        "warning",
                        "unclassified-series",
                        s.files[0],
                        f"{vid}: series {_describe(s, ids)} cannot be classified "
                        f"({rec['reasons'][-1]}); not ingested",
                        "choose it explicitly with choices= if it is a FLAIR/T1/T2",
                    )
                )
            else:
                rec["status"] = "ambiguous" if not rec["status"] else rec["status"]

    return chosen


def _write_contrasts(
    v: _DicomVisit, chosen: dict[str, tuple[DicomSeries, str]], bids: Path, timeout_s: float
) -> list[WrittenFile]:
    """Convert the chosen series into the BIDS dataset; flag replaced and stale files."""
    job, vid, ids, upload, records, classes, findings = (
        v.job, v.vid, v.ids, v.upload, v.records, v.classes, v.findings
    )  # fmt: skip
    anat = bids / f"sub-{job.subject}" / f"ses-{job.session}" / "anat"
    written: list[WrittenFile] = []
    for key, (s, how) in chosen.items():
        rec = records[s.uid]
        dest = anat / f"sub-{job.subject}_ses-{job.session}_{CONTRASTS[key]}.nii.gz"
        extra = {
            "LesionqIngest": {
                "LesionqVersion": __version__,
                "SourceSeriesHash": s.uid_hash,
                "SourceFiles": len(s.headers),
                "Classification": classes[s.uid].label,
                "ChosenBy": how,
                "Reasons": list(rec["reasons"]),
            }
        }
        try:
            res = convert_series(s, dest, identifiers=ids, sidecar_extra=extra, timeout_s=timeout_s)
        except ProcessingError as exc:
            rec["status"] = "conversion-failed"
            findings.append(
                Finding(
                    "error" if key == "flair" else "warning",
                    "conversion-failed",
                    s.files[0],
                    f"{vid}: {redact(str(exc), ids)}".replace(f"{upload}{os.sep}", ""),
                    "check the series in a DICOM viewer; re-export it",
                )
            )
            continue
        rec["status"] = "chosen"
        rec["contrast"] = key
        written.extend([res.image, res.sidecar])
        for w in (res.image, res.sidecar):
            if w.action == "replaced":
                findings.append(
                    Finding(
                        "warning",
                        "file-replaced",
                        w.path,
                        f"{_rel(w.path, bids)}: replaced with different content from this upload "
                        f"(series {_describe(s, ids)})",
                        "results computed from the old file are out of date: re-run the visit",
                    )
                )
    for key, suffix in CONTRASTS.items():
        stale = anat / f"sub-{job.subject}_ses-{job.session}_{suffix}.nii.gz"
        if key not in chosen and stale.is_file() and not any(w.path == stale for w in written):
            findings.append(
                Finding(
                    "warning",
                    "stale-file",
                    stale,
                    f"{_rel(stale, bids)}: kept from an earlier ingest, but this upload did not "
                    f"write the {suffix} of {vid}",
                    "delete the file if it should not be used",
                )
            )
    return written


def _session_start(v: _DicomVisit) -> datetime | None:
    """When the visit started: StudyDate/StudyTime, else the earliest acquisition."""
    series = v.series
    # the session starts at StudyDate/StudyTime; the earliest acquisition when that is absent
    starts = [s.study_started for s in series if s.study_started is not None]
    starts = starts or [s.acquired for s in series if s.acquired is not None]
    when = min(starts) if starts else None
    if when is None and series:
        v.findings.append(
            Finding(
                "warning",
                "no-acq-time",
                v.job.folder,
                f"{v.vid}: no StudyDate/AcquisitionDate in any header; acq_time is n/a",
                "the schedule cannot place this visit; fix the export",
            )
        )
    return when


def _ingest_dicom_visit(
    job: _VisitJob,
    upload: Path,
    bids: Path,
    choices: Mapping[ChoiceKey, int],
    timeout_s: float,
) -> tuple[VisitIngest, datetime | None, frozenset[str]]:
    v = _triage(job, upload)
    chosen = _choose_contrasts(v, _usable_series(v), choices)
    t0 = time.perf_counter()
    written = _write_contrasts(v, chosen, bids, timeout_s)
    conversion_s = time.perf_counter() - t0
    when = _session_start(v)
    series, records, findings, ids = v.series, v.records, v.findings, v.ids
    visit = VisitIngest(
        site=job.site,
        upload_subject=job.upload_subject,
        upload_visit=job.upload_visit,
        subject=job.subject,
        session=job.session,
        kind="dicom",
        series=tuple(SeriesRecord(**{k: v for k, v in records[s.uid].items()}) for s in series),
        findings=tuple(findings),
        written=tuple(written),
        conversion_s=conversion_s,
    )
    return visit, when, ids
