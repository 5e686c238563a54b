"""Builders of the review-app tests: a synthetic output folder + results database.

Two visits (``sub-01 ses-01`` at site ``LJU``, ``sub-02 ses-01`` at site ``ZAG``),
each with a tiny preprocessed FLAIR, post-contrast T1w, T2 and Gd+ label images
at their derivatives paths, and ``lesions.tsv`` rows matching the labels:
sub-01 has T2 lesions 1-3 (8, 4 and 2 voxels of 1 x 1 x 2 mm) and Gd lesion 1; sub-02 has
T2 lesion 1 only and no Gd+ inputs. A QC picture exists for sub-01 only.
"""

from __future__ import annotations

import contextlib
import re
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import sqlalchemy as sa

from lesionq.io.derivatives import output_path
from lesionq.qc import figure_path
from lesionq.review import auth
from lesionq.store import ResultsDB
from lesionq.store.models import Subject

T0 = datetime(2026, 1, 5, 9, 30, tzinfo=UTC)
PASSWORDS = {
    "reader1": "reader1-password",
    "reader2": "reader2-password",
    "adj": "adjudicator-password",
    "admin": "administrator-password",
}
ROLES = {"reader1": "reader", "reader2": "reader", "adj": "adjudicator", "admin": "admin"}
AFFINE = np.diag([1.0, 1.0, 2.0, 1.0])
SHAPE = (16, 16, 6)
#: A 1x1 transparent PNG (a stand-in QC picture).
PNG_1PX = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6300010000050001"
    "0d0a2db40000000049454e44ae426082"
)


@dataclass
class ReviewEnv:
    """What the fixture built."""

    url: str
    out: Path
    db: ResultsDB
    visit_ids: dict[str, int]


def _save(path: Path, data: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data, AFFINE), str(path))


def _lesion(lid: int, label: str, voxels: np.ndarray) -> dict[str, Any]:
    ijk = np.argwhere(voxels)
    c = ijk.mean(axis=0)
    xyz = nib.affines.apply_affine(AFFINE, c)
    return {
        "lesion_id": lid,
        "label": label,
        "volume_mm3": float(len(ijk) * 2.0),
        "n_voxels": int(len(ijk)),
        "centroid_x_mm": float(xyz[0]),
        "centroid_y_mm": float(xyz[1]),
        "centroid_z_mm": float(xyz[2]),
        "location": "periventricular",
        "treatment_arm": "A",  # must never appear in a page (blinding)
    }


def write_visit(out: Path, sub: str, ses: str, *, gd: bool) -> list[dict[str, Any]]:
    """Images of one visit; returns its ``lesions.tsv`` rows."""
    rng = np.random.default_rng(0)
    flair = (100 + 10 * rng.standard_normal(SHAPE)).astype(np.float32)
    t2 = np.zeros(SHAPE, np.int32)
    t2[2:4, 2:4, 1:3] = 1  # 8 voxels
    t2[8:10, 8:10, 3] = 2  # 4 voxels
    t2[12, 12:14, 4] = 3  # 2 voxels
    if sub == "02":
        t2[t2 > 1] = 0
    flair[t2 > 0] += 80
    _save(output_path(out, sub, ses, "flair_preproc"), flair)
    _save(output_path(out, sub, ses, "t2_labels"), t2)
    rows = [_lesion(i, "T2", t2 == i) for i in range(1, int(t2.max()) + 1)]
    if sub == "01":  # longitudinal outputs: lesion 2 is new since the previous visit
        change = np.where(t2 == 2, 1, 0).astype(np.int32)
        _save(output_path(out, sub, ses, "newenlarging_labels"), change)
        _save(output_path(out, sub, ses, "previous_flair"), np.where(t2 == 2, 100.0, flair))
    if gd:
        g = np.zeros(SHAPE, np.int32)
        g[8:10, 8:10, 3] = 1
        _save(output_path(out, sub, ses, "gd_labels"), g)
        _save(output_path(out, sub, ses, "t1ce_coreg"), flair.copy())
        rows.append(_lesion(1, "Gd", g == 1))
    return rows


def visit_row(participant: str, session: str, lesions: list[dict[str, Any]], gd: bool) -> dict:
    t2 = [r for r in lesions if r["label"] == "T2"]
    g = [r for r in lesions if r["label"] == "Gd"]
    return {
        "participant_id": participant,
        "session_id": session,
        "acq_time": "2026-01-05T09:00:00",
        "status": "ok",
        "t2_count": len(t2),
        "t2_volume_mm3": sum(r["volume_mm3"] for r in t2),
        "gd_count": len(g) if gd else None,
        "gd_volume_mm3": sum(r["volume_mm3"] for r in g) if gd else None,
        "protocol": "mesems_v1",
        "settings_sha256": "a" * 64,
        "lesionq_version": "0.1.0",
    }


def record(db: ResultsDB, run_id: int, row: dict, lesions: list[dict], inputs: str) -> int:
    return db.record_visit(
        run_id,
        row,
        inputs_sha256=inputs,
        scans=[],
        lesions=lesions,
        error_class=None,
        started_at=T0,
        finished_at=T0 + timedelta(seconds=1),
    )


def build(url: str, out: Path, *, readers: bool = True) -> ReviewEnv:
    """Write the two visits, record them, set sites, add the four accounts."""
    out.mkdir(parents=True, exist_ok=True)
    db = ResultsDB.open(url)
    run = db.start_run(
        lesionq_version="0.1.0",
        protocol="mesems_v1",
        settings_sha256="a" * 64,
        settings={},
        command="lesionq run bids out participant",
    )
    for sub, gd in (("01", True), ("02", False)):
        les = write_visit(out, sub, "01", gd=gd)
        record(db, run, visit_row(f"sub-{sub}", "ses-01", les, gd), les, inputs=sub * 32)
    db.finish_run(run, status="finished", n_ok=2, n_failed=0, n_skipped=0)
    fig = figure_path(out, "01", "01", "t2lesions", "png")
    fig.parent.mkdir(parents=True, exist_ok=True)
    fig.write_bytes(PNG_1PX)
    with db.engine.begin() as conn:
        for pid, site in (("sub-01", "LJU"), ("sub-02", "ZAG")):
            conn.execute(sa.update(Subject).where(Subject.participant_id == pid).values(site=site))
        rows = conn.execute(
            sa.text(
                "SELECT s.participant_id, v.id FROM visits v JOIN subjects s ON s.id = v.subject_id"
            )
        ).all()
        ids = {str(p): int(v) for p, v in rows}
    if readers:
        for name, role in ROLES.items():
            auth.add_reader(db.engine, name, role, PASSWORDS[name], actor="test")
    return ReviewEnv(url=url, out=out, db=db, visit_ids=ids)


_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def csrf_of(html: str) -> str:
    """The first CSRF token in a page."""
    m = _CSRF.search(html)
    if m is None:
        raise AssertionError("no csrf_token in the page")
    return m.group(1)


def post_login(client: Any, username: str, password: str | None = None) -> Any:
    """Fill the login form (fresh CSRF token) and post it; returns the response (no redirect)."""
    page = client.get("/login")
    return client.post(
        "/login",
        data={
            "username": username,
            "password": PASSWORDS[username] if password is None else password,
            "csrf_token": csrf_of(page.text),
        },
        follow_redirects=False,
    )


def login(client: Any, username: str, password: str | None = None) -> str:
    """Log ``client`` in; returns the session's CSRF token."""
    r = post_login(client, username, password)
    if r.status_code != 303:
        raise AssertionError(f"login of {username} failed: {r.status_code} {r.text[:200]}")
    home = client.get("/")
    return csrf_of(home.text)


def result_id(env: ReviewEnv, participant: str) -> int:
    cur = env.db.current_result(participant, "ses-01")
    assert cur is not None
    return int(cur["id"])


#: Voxels (index ranges on the 16 x 16 x 6 grid) of the lesion :func:`add_missed_lesion`
#: puts on a FLAIR with no label: 2 x 2 x 2 voxels of 1 x 1 x 2 mm (16 mm3).
MISSED = (slice(12, 14), slice(3, 5), slice(1, 3))


def add_missed_lesion(out: Path, sub: str = "01") -> tuple[float, float, float]:
    """Brighten :data:`MISSED` on a visit's FLAIR (a lesion the software missed); its centre (mm)."""
    path = output_path(out, sub, "01", "flair_preproc")
    img = nib.load(str(path))
    data = np.asarray(img.dataobj, dtype=np.float32).copy()
    data[MISSED] += 80
    _save(path, data)
    centre = [(s.start + s.stop - 1) / 2 for s in MISSED]
    x, y, z = nib.affines.apply_affine(AFFINE, centre)
    return float(x), float(y), float(z)


@contextlib.contextmanager
def serve(env: ReviewEnv) -> Iterator[str]:
    """The review app of ``env`` served by uvicorn on 127.0.0.1:<free port>; yields its URL.

    The server stops and the environment's database closes on exit.
    """
    import uvicorn

    from lesionq.review import create_app

    app = create_app(env.url, env.out, readers_required=2)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        env.db.close()
