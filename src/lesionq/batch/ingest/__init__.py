"""Ingest an upload (DICOM or BIDS) into the BIDS layout lesionq reads.

Upload layout::

    UPLOAD/<site>/<subject>/<visit>/**/*     DICOM files, any names, any nesting, any order
    UPLOAD/<site>/  (or UPLOAD/ itself)       already a BIDS dataset (dataset_description.json)

Labels
    The subject label is the subject folder name reduced to ``[0-9a-zA-Z]``
    (trial subject codes are pseudonyms), or ``subject_map[folder name]``; the
    session label is the visit folder name reduced the same way. DICOM
    ``PatientName`` / ``PatientID`` are never used. The site goes to
    ``participants.tsv`` (``participant_id``, ``site``); birth date, age and sex
    are not written anywhere.

DICOM visits
    Files are recognised by their ``DICM`` preamble; headers are grouped into
    series (:func:`lesionq.io.dicom.group_series`), classified from headers only
    (:func:`lesionq.io.dicom.classify_series`), localisers and non-structural
    series dropped, exact duplicates (same pixel data) collapsed. For each
    contrast of :data:`lesionq.io.bids.CONTRASTS` exactly one series must be a
    candidate: two original series of the same class, or an unclassifiable
    series that could be that contrast, is an *ambiguity*: the contrast is not
    written and a finding (``error`` for the FLAIR, ``warning`` otherwise) names
    the series; ``choices={(subject, visit, contrast): series_number}`` resolves
    it (subject/visit as upload folder names or labels; contrast a key of
    ``CONTRASTS``: ``flair``, ``t1``, ``t2``, ``t1ce``). A derived/reformatted
    series is used only when no original of its class exists.

Outputs (all de-identified, see :mod:`lesionq.io.deid`)
    ``sub-<s>/ses-<v>/anat/sub-<s>_ses-<v>_<suffix>.nii.gz`` + ``.json`` (whitelisted
    fields + ``LesionqIngest`` provenance), ``sub-<s>/sub-<s>_sessions.tsv``
    (``acq_time`` shifted per subject so that the earliest visit is on
    1900-01-01, times of day kept, intervals exact), ``participants.tsv``,
    ``dataset_description.json`` (when absent), and the ingest report in
    ``sourcedata/lesionq-ingest/`` (``ingest_report.json``, ``ingest_series.tsv``;
    BIDS tools ignore ``sourcedata``): series numbers, redacted descriptions,
    classes, reasons and hashed UIDs, no absolute paths and no real dates.
    Every file is written atomically and only when its bytes change, so a
    re-ingest of the same upload is a no-op; a changed upload replaces files
    and says so (``file-replaced``).

Date shift: the shift of a subject (whole days) is computed from its first
upload and kept in ``sourcedata/lesionq-ingest/date_shift_key.tsv``, so a
later upload of a follow-up visit lands at the right interval from baseline.
That file is the key back to real dates: it stays with the uploads at the
reading centre; lesionq never copies it into its outputs or the database.
Sessions ingested before any key existed are reported (``date-shift-partial``).

Submodules
    :mod:`~lesionq.batch.ingest.plan`
        The plan: the records (:class:`SeriesRecord`, :class:`VisitIngest`,
        :class:`IngestReport`), the subject map (:func:`read_subject_map`), the
        subject/session labels and the walk of the upload into visits.
    :mod:`~lesionq.batch.ingest.dicom`
        DICOM visits: files scanned, series grouped, classified, chosen per
        contrast and converted into the BIDS dataset.
    :mod:`~lesionq.batch.ingest.bids`
        BIDS uploads: layout checked, images and sidecars copied in de-identified.
    :mod:`~lesionq.batch.ingest.write`
        :func:`ingest_upload` and the dataset-level files it writes
        (``sessions.tsv`` and the date shift key :data:`DATE_SHIFT_KEY`,
        ``participants.tsv``, ``dataset_description.json``, the report in
        :data:`REPORT_DIR`).
"""

from __future__ import annotations

from .plan import IngestReport, SeriesRecord, VisitIngest, read_subject_map
from .write import DATE_SHIFT_KEY, REPORT_DIR, ingest_upload

__all__ = [
    "REPORT_DIR",
    "DATE_SHIFT_KEY",
    "SeriesRecord",
    "VisitIngest",
    "IngestReport",
    "ingest_upload",
    "read_subject_map",
]
