"""A small synthetic lesionq output folder for the QC report tests (built with io writers)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from lesionq.io.derivatives import output_path, subject_output_path
from lesionq.io.nifti import save_image
from lesionq.io.tables import update_visits_table, write_tsv

SUBJECT = "syn01"
SHAPE = (40, 48, 20)
#: LAS grid (like the sample data): i runs towards the patient's left.
AFFINE = np.array([[-2.0, 0, 0, 40.0], [0, 2.0, 0, -48.0], [0, 0, 3.0, -30.0], [0, 0, 0, 1.0]])
LESIONS_T2 = {1: (10, 20, 8), 2: (28, 30, 8), 3: (20, 14, 13)}  # id -> cube corner (i, j, k)
NEW_LESION = (4, (15, 34, 11))


def _head(rng: np.random.Generator) -> np.ndarray:
    i, j, k = np.indices(SHAPE, dtype=float)
    inside = ((i - 19.5) / 17) ** 2 + ((j - 23.5) / 21) ** 2 + ((k - 9.5) / 9) ** 2 <= 1
    img = np.where(inside, 100.0, 0.0) + rng.normal(0, 3, SHAPE) * inside
    return img.astype(np.float32)


def _cube(labels: np.ndarray, value: int, corner: tuple[int, int, int], size: int = 3) -> None:
    i, j, k = corner
    labels[i : i + size, j : j + size, k : k + 2] = value


def _lesion_table(labels: np.ndarray, label: str) -> pd.DataFrame:
    rows = []
    for lid in sorted(int(v) for v in np.unique(labels) if v):
        idx = np.argwhere(labels == lid)
        xyz = AFFINE @ np.append(idx.mean(axis=0), 1.0)
        rows.append(
            {
                "lesion_id": lid,
                "label": label,
                "volume_mm3": float(len(idx) * 12.0),
                "n_voxels": len(idx),
                "centroid_x_mm": round(xyz[0], 2),
                "centroid_y_mm": round(xyz[1], 2),
                "centroid_z_mm": round(xyz[2], 2),
                "location": "deep_white_matter",
            }
        )
    return pd.DataFrame(rows)


def build_output(out: Path, *, with_gd: bool = True) -> Path:
    """Two visits of one subject: ses-01 (T2 + Gd+), ses-02 (T2, one new lesion, previous)."""
    rng = np.random.default_rng(0)
    flairs = {}
    visit_rows = []
    for session in ("01", "02"):
        flair = _head(rng)
        t2 = np.zeros(SHAPE, np.int32)
        for lid, corner in LESIONS_T2.items():
            _cube(t2, lid, corner)
        if session == "02":
            _cube(t2, NEW_LESION[0], NEW_LESION[1])
        flair[t2 > 0] = 180.0
        flairs[session] = flair

        def save(key: str, arr: np.ndarray, session: str = session) -> None:
            dest = output_path(out, SUBJECT, session, key, reference="01")
            dest.parent.mkdir(parents=True, exist_ok=True)
            save_image(arr, AFFINE, dest)

        save("flair_preproc", flair)
        save("brain_mask", (flair > 50).astype(np.uint8))
        save("t2_labels", t2)
        save("t2_mask", (t2 > 0).astype(np.uint8))
        table = _lesion_table(t2, "T2")
        gd_count = 0
        if with_gd and session == "01":
            gd = np.zeros(SHAPE, np.int32)
            _cube(gd, 1, LESIONS_T2[2])
            t1ce = _head(rng) * 0.8
            t1ce[gd > 0] = 150.0
            save("t1ce_coreg", t1ce)
            save("gd_labels", gd)
            save("gd_mask", (gd > 0).astype(np.uint8))
            table = pd.concat([table, _lesion_table(gd, "Gd")], ignore_index=True)
            gd_count = 1
        if session == "02":
            save("previous_flair", flairs["01"])
            change = np.zeros(SHAPE, np.int32)
            _cube(change, 1, NEW_LESION[1])
            save("newenlarging_labels", change)
            change_table = pd.DataFrame(
                [
                    {
                        "change_id": 1,
                        "status": "new",
                        "volume_mm3": 216.0,
                        "previous_volume_mm3": 0.0,
                        "grown_volume_mm3": 216.0,
                        "lesion_ids": str(NEW_LESION[0]),
                    }
                ]
            )
            write_tsv(change_table, output_path(out, SUBJECT, session, "newenlarging_table"))
        write_tsv(table, output_path(out, SUBJECT, session, "lesions"))
        visit_rows.append(
            {
                "participant_id": f"sub-{SUBJECT}",
                "session_id": f"ses-{session}",
                "acq_time": "2020-01-0" + session[-1],
                "status": "ok",
                "t2_count": int((table["label"] == "T2").sum()),
                "gd_count": gd_count,
                "reference_session_id": "ses-01",
            }
        )
    visit_rows.append(
        {"participant_id": f"sub-{SUBJECT}", "session_id": "ses-03", "status": "failed"}
    )
    update_visits_table(out / "visits.tsv", visit_rows)
    tracks = subject_output_path(out, SUBJECT, "tracks")
    write_tsv(pd.DataFrame({"track_id": [1], "session_id": ["ses-01"]}), tracks)
    return out


@pytest.fixture
def synthetic_output(tmp_path: Path) -> Path:
    """Path of a fresh synthetic output folder (subject ``syn01``)."""
    return build_output(tmp_path / "out")
