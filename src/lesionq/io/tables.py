"""Tabular outputs (TSV) written atomically: ``visits.tsv``, per-visit ``lesions.tsv``, tracks."""

from __future__ import annotations

import io
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from .nifti import atomic_write_text

__all__ = [
    "VISIT_COLUMNS",
    "LONGITUDINAL_VISIT_COLUMNS",
    "LESION_LONGITUDINAL_COLUMNS",
    "TRACK_TABLE_COLUMNS",
    "VISIT_KEY",
    "write_tsv",
    "read_tsv",
    "update_visits_table",
]

#: Columns of ``OUT/visits.tsv`` in order (see README "Outputs").
VISIT_COLUMNS: tuple[str, ...] = (
    "participant_id",
    "session_id",
    "acq_time",
    "status",
    "reason",
    "t2_count",
    "t2_volume_mm3",
    "brain_volume_mm3",
    "contrasts_used",
    "skull_stripped_input",
    "new_t2_count",
    "enlarging_t2_count",
    "t2_volume_change_mm3",
    "new_t2_count_vs_baseline",
    "enlarging_t2_count_vs_baseline",
    "t2_volume_change_vs_baseline_mm3",
    "previous_session_id",
    "reference_session_id",
    "longitudinal_status",
    "gd_count",
    "gd_count_confident",
    "gd_volume_mm3",
    "gd_inputs",
    "cua_count",
    "bh_count",
    "bh_volume_mm3",
    "bh_volume_persistent_mm3",
    "protocol",
    "settings_sha256",
    "lesionq_version",
    "duration_s",
)

#: Columns of ``visits.tsv`` filled by the longitudinal step (``n/a`` until it has run).
LONGITUDINAL_VISIT_COLUMNS: tuple[str, ...] = (
    "new_t2_count",
    "enlarging_t2_count",
    "t2_volume_change_mm3",
    "new_t2_count_vs_baseline",
    "enlarging_t2_count_vs_baseline",
    "t2_volume_change_vs_baseline_mm3",
    "previous_session_id",
    "reference_session_id",
    "longitudinal_status",
    "cua_count",
    "bh_volume_persistent_mm3",
)

#: Column dtypes of ``visits.tsv`` (nullable, so failed visits keep integer counts).
VISIT_DTYPES: dict[str, str] = {
    "t2_count": "Int64",
    "skull_stripped_input": "boolean",
    "new_t2_count": "Int64",
    "enlarging_t2_count": "Int64",
    "new_t2_count_vs_baseline": "Int64",
    "enlarging_t2_count_vs_baseline": "Int64",
    "t2_volume_change_mm3": "Float64",
    "t2_volume_change_vs_baseline_mm3": "Float64",
    "gd_count": "Int64",
    "gd_count_confident": "Int64",
    "gd_volume_mm3": "Float64",
    "cua_count": "Int64",
    "bh_count": "Int64",
    "bh_volume_mm3": "Float64",
    "bh_volume_persistent_mm3": "Float64",
}

#: Columns the longitudinal step appends to each visit's ``lesions.tsv``.
LESION_LONGITUDINAL_COLUMNS: tuple[str, ...] = ("track_id", "status", "status_vs_baseline")

#: Columns of the subject-level ``sub-<s>_desc-tracks_lesions.tsv``.
TRACK_TABLE_COLUMNS: tuple[str, ...] = (
    "track_id",
    "session_id",
    "visit_index",
    "status",
    "status_vs_baseline",
    "lesion_ids",
    "n_lesions",
    "volume_mm3",
    "centroid_x_mm",
    "centroid_y_mm",
    "centroid_z_mm",
)

#: Columns identifying one visit.
VISIT_KEY: tuple[str, str] = ("participant_id", "session_id")


def write_tsv(df: pd.DataFrame, dest: str | os.PathLike[str]) -> Path:
    """Write a DataFrame as TSV atomically ("n/a" for missing values, BIDS style)."""
    buf = io.StringIO()
    df.to_csv(buf, sep="\t", index=False, na_rep="n/a", lineterminator="\n")
    return atomic_write_text(dest, buf.getvalue())


def read_tsv(path: str | os.PathLike[str]) -> pd.DataFrame:
    """Read a TSV written by :func:`write_tsv` ("n/a" read as missing).

    Floats are parsed exactly (``round_trip``), so a table read and written back
    keeps its digits (the longitudinal step rewrites ``lesions.tsv`` this way).
    """
    return pd.read_csv(
        path,
        sep="\t",
        na_values=["n/a"],
        keep_default_na=False,
        float_precision="round_trip",
        dtype={"participant_id": str, "session_id": str},
    )


def update_visits_table(
    dest: str | os.PathLike[str],
    rows: Iterable[Mapping[str, Any]],
    *,
    columns: Sequence[str] = VISIT_COLUMNS,
) -> pd.DataFrame:
    """Merge visit rows into ``visits.tsv``: rows of the same visit are replaced.

    Rows of visits not in ``rows`` (processed by an earlier run) are kept.
    The table is sorted by participant and session and written atomically.

    Returns
    -------
    pandas.DataFrame
        The table as written.
    """
    new = pd.DataFrame(list(rows))
    for col in columns:
        if col not in new.columns:
            new[col] = pd.NA
    dest = Path(dest)
    if dest.is_file():
        old = read_tsv(dest)
        if not new.empty:
            keys = set(zip(new["participant_id"], new["session_id"].fillna("n/a"), strict=True))
            keep = [
                (p, s if isinstance(s, str) else "n/a") not in keys
                for p, s in zip(old["participant_id"], old["session_id"], strict=True)
            ]
            old = old[keep]
        merged = pd.concat([old, new], ignore_index=True) if not old.empty else new
    else:
        merged = new
    for col, dtype in VISIT_DTYPES.items():
        if col in merged.columns:
            merged[col] = merged[col].astype(dtype)
    extra = [c for c in merged.columns if c not in columns]
    merged = merged[list(columns) + extra]
    merged = merged.sort_values(list(VISIT_KEY), kind="stable", na_position="first")
    merged = merged.reset_index(drop=True)
    write_tsv(merged, dest)
    return merged
