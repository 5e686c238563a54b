"""Writing the BIDS output: tables, dataset description, ingest report; the entry point.

Holds :func:`ingest_upload` (plan, DICOM visits, BIDS uploads, then the
dataset-level files) and the writers of the dataset-level files:
``sub-<s>/sub-<s>_sessions.tsv`` with the date shift and its key
(:data:`DATE_SHIFT_KEY`), ``participants.tsv``, ``dataset_description.json``
and the ingest report in :data:`REPORT_DIR` (``ingest_report.json``,
``ingest_series.tsv``). Every file goes through
:func:`lesionq.io.dicom.write_bytes_if_changed` (atomic, written only when its
bytes change).
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import time
from collections.abc import Iterable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

from ..._version import __version__
from ...errors import MissingInputError
from ...io.bids import natural_key
from ...io.checks import Finding
from ...io.deid import apply_date_shift, date_shift_days, redact
from ...io.dicom import WrittenFile, dcm2niix_version, find_dcm2niix, write_bytes_if_changed
from .bids import _ingest_bids_upload
from .dicom import _ingest_dicom_visit
from .plan import ChoiceKey, IngestReport, VisitIngest, _plan

logger = logging.getLogger(__name__)

#: Folder (relative to the BIDS root) of the ingest report.
REPORT_DIR = Path("sourcedata") / "lesionq-ingest"


def _tsv(rows: Iterable[Mapping[str, Any]], columns: list[str]) -> bytes:
    buf = io.StringIO()
    w = csv.DictWriter(buf, columns, delimiter="\t", lineterminator="\n", extrasaction="ignore")
    w.writeheader()
    for r in rows:
        w.writerow({c: ("n/a" if r.get(c) in (None, "") else r[c]) for c in columns})
    return buf.getvalue().encode("utf-8")


def _read_tsv(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        return []
    with open(path, encoding="utf-8", newline="") as fh:
        return [dict(r) for r in csv.DictReader(fh, delimiter="\t")]


#: Per-subject date shifts (whole days), so later uploads of a subject share its anchor.
#: This is the key that turns shifted dates back into real ones: it stays with the upload
#: at the reading centre; lesionq never copies it into its outputs or the database.
DATE_SHIFT_KEY = REPORT_DIR / "date_shift_key.tsv"


def _write_sessions(
    bids: Path, subject: str, real: Mapping[str, datetime | None]
) -> tuple[list[WrittenFile], dict[str, str | None], list[Finding]]:
    path = bids / f"sub-{subject}" / f"sub-{subject}_sessions.tsv"
    key_path = bids / DATE_SHIFT_KEY
    keys = {r["participant_id"]: r for r in _read_tsv(key_path)} if key_path.is_file() else {}
    stored = keys.get(f"sub-{subject}", {}).get("shift_days")
    findings = []
    written: list[WrittenFile] = []
    if stored not in (None, ""):
        days: int | None = int(stored)  # a later upload: the subject's anchor is kept
    else:
        days = date_shift_days(real)
        if days is not None:
            keys[f"sub-{subject}"] = {"participant_id": f"sub-{subject}", "shift_days": str(days)}
            ordered_keys = [keys[k] for k in sorted(keys)]
            written.append(
                write_bytes_if_changed(
                    key_path, _tsv(ordered_keys, ["participant_id", "shift_days"])
                )
            )
    shifted = apply_date_shift(real, days) if days is not None else dict(real)
    iso = {k: (None if v is None else v.isoformat(timespec="seconds")) for k, v in shifted.items()}
    rows: dict[str, dict[str, Any]] = {r.get("session_id", ""): r for r in _read_tsv(path)}
    earlier = sorted(k for k in rows if k[4:] not in real and rows[k].get("acq_time"))
    if earlier and stored in (None, ""):
        findings.append(
            Finding(
                "warning",
                "date-shift-partial",
                path,
                f"sub-{subject}: sessions {earlier} were ingested without a stored date shift "
                f"({DATE_SHIFT_KEY.as_posix()} has no row for this subject); this upload's dates "
                "are anchored on its own earliest visit, so intervals to the earlier sessions are "
                "not reliable",
                "re-ingest every visit of the subject together",
            )
        )
    for ses, value in iso.items():
        rows[f"ses-{ses}"] = {
            **rows.get(f"ses-{ses}", {}),
            "session_id": f"ses-{ses}",
            "acq_time": value,
        }
    ordered = sorted(
        rows.values(),
        key=lambda r: natural_key(r["session_id"]),
    )
    written.append(write_bytes_if_changed(path, _tsv(ordered, ["session_id", "acq_time"])))
    return written, iso, findings


def _write_participants(bids: Path, sites: Mapping[str, str]) -> WrittenFile:
    path = bids / "participants.tsv"
    existing = _read_tsv(path)
    columns = ["participant_id", "site"]
    for r in existing:
        columns += [c for c in r if c not in columns]
    rows = {r["participant_id"]: r for r in existing if r.get("participant_id")}
    for subject, site in sites.items():
        pid = f"sub-{subject}"
        rows[pid] = {**rows.get(pid, {}), "participant_id": pid, "site": site}
    return write_bytes_if_changed(path, _tsv([rows[k] for k in sorted(rows)], columns))


def _write_description(bids: Path, converter: str | None) -> WrittenFile | None:
    path = bids / "dataset_description.json"
    if path.is_file():
        return None
    generated = [{"Name": "lesionq ingest", "Version": __version__}]
    if converter:
        generated.append({"Name": "dcm2niix", "Version": converter.split()[-1]})
    desc = {
        "Name": "lesionq ingest",
        "BIDSVersion": "1.9.0",
        "DatasetType": "raw",
        "GeneratedBy": generated,
    }
    return write_bytes_if_changed(path, (json.dumps(desc, indent=2) + "\n").encode())


def ingest_upload(
    upload_dir: str | os.PathLike[str],
    bids_dir: str | os.PathLike[str],
    *,
    subject_map: Mapping[str, str] | None = None,
    choices: Mapping[ChoiceKey, int] | None = None,
    converter_timeout_s: float = 300.0,
) -> IngestReport:
    """Convert an upload folder into (or update) a BIDS dataset.

    Parameters
    ----------
    upload_dir : path-like
        ``UPLOAD/<site>/<subject>/<visit>/**`` of DICOM files, and/or
        ``UPLOAD/<site>/`` BIDS datasets (or ``UPLOAD`` itself a BIDS dataset).
    bids_dir : path-like
        Destination BIDS root (created when absent; existing content is kept
        and updated).
    subject_map : mapping, optional
        Upload subject folder name -> participant label (see
        :func:`read_subject_map`); folders not in it use their name reduced to
        ``[0-9a-zA-Z]``.
    choices : mapping, optional
        ``{(subject, visit, contrast): series_number}`` resolving ambiguities;
        subject/visit as upload folder names or labels, contrast a key of
        :data:`~lesionq.io.bids.CONTRASTS`.
    converter_timeout_s : float
        Limit on one dcm2niix run, s.

    Returns
    -------
    IngestReport
        ``.ok`` is False when any visit has an error finding (e.g. no usable or
        an ambiguous FLAIR); other visits are ingested regardless. The report is
        also written to ``bids_dir/sourcedata/lesionq-ingest/``.

    Raises
    ------
    MissingInputError
        ``upload_dir`` does not exist.
    ProcessingError
        The upload holds DICOM visits and dcm2niix is not installed.
    """
    t0 = time.perf_counter()
    upload = Path(upload_dir).resolve()
    bids = Path(bids_dir).resolve()
    if not upload.is_dir():
        raise MissingInputError(f"{upload}: upload folder not found (rule: upload_dir is a folder)")
    choices = dict(choices or {})
    jobs, bids_roots, findings = _plan(upload, dict(subject_map or {}))
    converter = None
    if jobs:
        converter = dcm2niix_version(str(find_dcm2niix()))
    visits: list[VisitIngest] = []
    written: list[WrittenFile] = []
    real_times: dict[str, dict[str, datetime | None]] = {}
    sites: dict[str, str] = {}
    all_ids: set[str] = set()
    for job in jobs:
        logger.info("ingest %s/%s/%s", job.site, job.upload_subject, job.upload_visit)
        visit, when, ids = _ingest_dicom_visit(job, upload, bids, choices, converter_timeout_s)
        visits.append(visit)
        written.extend(visit.written)
        all_ids |= ids
        real_times.setdefault(job.subject, {})[job.session] = when
        sites[job.subject] = job.site
    for site, root in bids_roots:
        bvisits, bfind, btimes = _ingest_bids_upload(site, root, bids)
        findings.extend(bfind)
        visits.extend(bvisits)
        for v in bvisits:
            written.extend(v.written)
            if v.subject is not None:
                sites.setdefault(v.subject, site)
        for subj, t in btimes.items():
            real_times.setdefault(subj, {}).update(t)
    shifted: dict[tuple[str, str], str | None] = {}
    for subject, times in real_times.items():
        wf, iso, sfind = _write_sessions(bids, subject, times)
        written.extend(wf)
        findings.extend(sfind)
        for ses, value in iso.items():
            shifted[(subject, ses)] = value
    visits = [
        v
        if v.subject is None
        else VisitIngest(**{**v.__dict__, "acq_time": shifted.get((v.subject, v.session or ""))})
        for v in visits
    ]
    if sites:
        written.append(_write_participants(bids, sites))
    if visits:
        desc = _write_description(bids, converter)
        if desc is not None:
            written.append(desc)
    all_findings = tuple(findings) + tuple(f for v in visits for f in v.findings)
    report = IngestReport(
        upload_dir=upload,
        bids_dir=bids,
        visits=tuple(visits),
        findings=all_findings,
        written=tuple(written),
        converter=converter,
        elapsed_s=time.perf_counter() - t0,
    )
    report_files = _write_report(report, all_ids)
    return IngestReport(
        **{**report.__dict__, "report_files": report_files, "elapsed_s": time.perf_counter() - t0}
    )


def _write_report(report: IngestReport, ids: Iterable[str]) -> tuple[Path, ...]:
    """``ingest_report.json`` and ``ingest_series.tsv`` (identifiers redacted again)."""
    ids = list(ids)
    out = report.bids_dir / REPORT_DIR
    data = report.to_dict()
    text = redact(
        json.dumps(data, indent=2, sort_keys=True, ensure_ascii=True), ids, date_tokens=False
    )
    rows = [
        {
            "site": v["site"],
            "participant_id": v["participant_id"],
            "session_id": v["session_id"],
            "upload_subject": v["upload_subject"],
            "upload_visit": v["upload_visit"],
            **{
                k: s[k]
                for k in (
                    "series_number",
                    "series_hash",
                    "description",
                    "n_files",
                    "n_slices",
                    "class",
                    "derived",
                    "status",
                    "contrast",
                )
            },
            "reasons": " | ".join(s["reasons"]),
        }
        for v in data["visits"]
        for s in v["series"]
    ]
    cols = [
        "site",
        "participant_id",
        "session_id",
        "upload_subject",
        "upload_visit",
        "series_number",
        "series_hash",
        "description",
        "n_files",
        "n_slices",
        "class",
        "derived",
        "status",
        "contrast",
        "reasons",
    ]
    tsv = redact(_tsv(rows, cols).decode("utf-8"), ids, date_tokens=False)
    a = write_bytes_if_changed(out / "ingest_report.json", (text + "\n").encode("utf-8"))
    b = write_bytes_if_changed(out / "ingest_series.tsv", tsv.encode("utf-8"))
    return (a.path, b.path)
