"""Shared builders of the results-database tests (rows, lesions, scans, runs).

A plain module (not conftest) so that worker processes started with ``spawn``
can import it too.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from lesionq.store import ResultsDB

T0 = datetime(2026, 1, 5, 9, 30, tzinfo=UTC)


def visit_row(participant: str = "sub-01", session: str | None = "ses-01", **over: Any) -> dict:
    """A complete ``visits.tsv`` row of an 'ok' visit (before the longitudinal step)."""
    row: dict[str, Any] = {
        "participant_id": participant,
        "session_id": session,
        "acq_time": "2026-01-05T09:00:00",
        "status": "ok",
        "reason": None,
        "t2_count": 3,
        "t2_volume_mm3": 1234.5,
        "brain_volume_mm3": 1_150_000.0,
        "contrasts_used": "FLAIR+T1w",
        "skull_stripped_input": False,
        "new_t2_count": None,
        "enlarging_t2_count": None,
        "t2_volume_change_mm3": None,
        "new_t2_count_vs_baseline": None,
        "enlarging_t2_count_vs_baseline": None,
        "t2_volume_change_vs_baseline_mm3": None,
        "previous_session_id": None,
        "reference_session_id": None,
        "longitudinal_status": None,
        "gd_count": 1,
        "gd_count_confident": 1,
        "gd_volume_mm3": 55.25,
        "gd_inputs": "post+pre",
        "cua_count": None,
        "bh_count": 2,
        "bh_volume_mm3": 80.5,
        "bh_volume_persistent_mm3": None,
        "protocol": "mesems_v1",
        "settings_sha256": "a" * 64,
        "lesionq_version": "0.1.0",
        "duration_s": 12.5,
    }
    row.update(over)
    return row


def lesion_rows(n: int = 3) -> list[dict]:
    """``lesions.tsv`` rows: ``n`` T2 lesions then one Gd lesion (extra columns included)."""
    rows: list[dict[str, Any]] = [
        {
            "lesion_id": i + 1,
            "label": "T2",
            "volume_mm3": 10.0 * (i + 1),
            "n_voxels": 5 * (i + 1),
            "centroid_x_mm": 1.5 * i,
            "centroid_y_mm": -2.0,
            "centroid_z_mm": 30.25,
            "location": "periventricular",
            "flair_mean": 1.8,
            "flair_max": 2.5,
            "probability_mean": 0.9,
            "bbox_i_min": i,
        }
        for i in range(n)
    ]
    rows.append(
        {
            "lesion_id": 1,
            "label": "Gd",
            "volume_mm3": 55.25,
            "n_voxels": 20,
            "centroid_x_mm": 4.0,
            "centroid_y_mm": 5.0,
            "centroid_z_mm": 6.0,
            "location": "juxtacortical",
            "enhancement_peak": 0.7,
            "ring": False,
            "inputs": "post+pre",
        }
    )
    return rows


def scan_rows() -> list[dict]:
    """Two input scans of a visit."""
    return [
        {
            "contrast": "flair",
            "path": "sub-01/ses-01/anat/sub-01_ses-01_FLAIR.nii.gz",
            "sha256": "f" * 64,
            "size_bytes": 123456,
        },
        {
            "contrast": "t1",
            "path": "sub-01/ses-01/anat/sub-01_ses-01_T1w.nii.gz",
            "sha256": "1" * 64,
            "size_bytes": 234567,
        },
    ]


def start_run(db: ResultsDB, **over: Any) -> int:
    """Start a run with fixed provenance."""
    kw: dict[str, Any] = {
        "lesionq_version": "0.1.0",
        "protocol": "mesems_v1",
        "settings_sha256": "a" * 64,
        "settings": {"segmentation": {"threshold": 0.5}},
        "command": "lesionq run bids out participant",
    }
    kw.update(over)
    return db.start_run(**kw)


def record(
    db: ResultsDB,
    run_id: int,
    row: dict | None = None,
    *,
    inputs: str = "i" * 64,
    lesions: list[dict] | None = None,
) -> int:
    """record_visit with the fixtures above."""
    return db.record_visit(
        run_id,
        row if row is not None else visit_row(),
        inputs_sha256=inputs,
        scans=scan_rows(),
        lesions=lesion_rows() if lesions is None else lesions,
        error_class=None,
        started_at=T0,
        finished_at=T0 + timedelta(seconds=12.5),
    )
