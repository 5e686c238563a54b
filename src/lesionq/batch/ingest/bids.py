"""BIDS inputs: an upload that already is a BIDS dataset, validated and copied in.

Holds ``_ingest_bids_upload``: the layout of the uploaded dataset checked
(:func:`lesionq.io.bids.layout_problems`), then each visit's images copied with
scrubbed NIfTI headers and filtered sidecars, and its ``acq_time`` read.
"""

from __future__ import annotations

import gzip
import json
from datetime import datetime
from pathlib import Path

import nibabel as nib

from ...io.bids import CONTRASTS, layout_problems
from ...io.checks import Finding
from ...io.deid import anonymous_nifti, filter_sidecar, scrub_nifti_header
from ...io.dicom import WrittenFile, write_bytes_if_changed
from .plan import VisitIngest


def _ingest_bids_upload(
    site: str, root: Path, bids: Path
) -> tuple[list[VisitIngest], list[Finding], dict[str, dict[str, datetime | None]]]:
    """Copy a BIDS upload in (images with scrubbed headers, filtered sidecars)."""
    visits, problems = layout_problems(root)
    findings = [
        Finding(p.level, p.code, p.path, f"BIDS upload {root.name}: {p.message}", p.fix)
        for p in problems
    ]
    if any(p.level == "error" for p in problems):
        findings.append(
            Finding(
                "error",
                "bids-upload-rejected",
                root,
                f"BIDS upload {root.name}: not copied because of the layout errors above",
                "fix the layout and upload again",
            )
        )
        return [], findings, {}
    out: list[VisitIngest] = []
    times: dict[str, dict[str, datetime | None]] = {}
    for v in visits:
        vf: list[Finding] = []
        written: list[WrittenFile] = []
        session = v.session or "1"
        anat = bids / f"sub-{v.subject}" / f"ses-{session}" / "anat"
        for key, src in v.images().items():
            dest = anat / f"sub-{v.subject}_ses-{session}_{CONTRASTS[key]}.nii.gz"
            try:
                img = nib.load(str(src))
                if not isinstance(img, nib.Nifti1Image):
                    raise ValueError(f"{type(img).__name__} is not NIfTI")
                hdr = img.header.copy()
                cleared = scrub_nifti_header(hdr)
                clean = anonymous_nifti(img)  # also drops extensions; gz with mtime 0
                data = gzip.compress(clean.to_bytes(), compresslevel=6, mtime=0)
            except Exception as exc:  # noqa: BLE001 - any unreadable image becomes a finding
                vf.append(
                    Finding(
                        "error" if key == "flair" else "warning",
                        "bids-image-unreadable",
                        src,
                        f"{src.name}: cannot be read as NIfTI ({type(exc).__name__}: {exc})",
                        "re-export the image",
                    )
                )
                continue
            if cleared:
                vf.append(
                    Finding(
                        "info",
                        "nifti-header-scrubbed",
                        src,
                        f"{src.name}: header text fields {cleared} emptied (de-identification)",
                    )
                )
            written.append(write_bytes_if_changed(dest, data))
            side = src.parent / (src.name.split(".nii")[0] + ".json")
            if side.is_file():
                try:
                    meta = json.loads(side.read_text(encoding="utf-8"))
                except (OSError, json.JSONDecodeError, UnicodeDecodeError):
                    meta = {}
                kept, _ = filter_sidecar(meta)
                text = json.dumps(kept, indent=2, sort_keys=True, ensure_ascii=True) + "\n"
                written.append(
                    write_bytes_if_changed(
                        dest.with_name(dest.name[: -len(".nii.gz")] + ".json"), text.encode()
                    )
                )
        when = None
        if v.acq_time:
            try:
                when = datetime.fromisoformat(v.acq_time.strip())
            except ValueError:
                vf.append(Finding("warning", "acq-time-invalid", v.sessions_tsv, f"{v.acq_time!r}"))
        times.setdefault(v.subject, {})[session] = when
        out.append(
            VisitIngest(
                site=site,
                upload_subject=f"sub-{v.subject}",
                upload_visit=f"ses-{session}",
                subject=v.subject,
                session=session,
                kind="bids",
                findings=tuple(vf),
                written=tuple(written),
            )
        )
    return out, findings, times
