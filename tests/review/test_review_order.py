"""Review order of a visit's lesions (Gd+ by confidence, lowest first), black holes."""

from __future__ import annotations

import re

import numpy as np
from review_helpers import SHAPE, _lesion, _save, login, record, visit_row, write_visit

from lesionq.io.derivatives import output_path
from lesionq.review import state as rs
from lesionq.review.decisions import LesionKey, review_sort_key


def _recompute_sub01(env) -> None:  # noqa: ANN001
    """A new current result of sub-01: three Gd+ lesions (confidence 0.9, 0.2, none),
    the three T2 lesions and a black hole (label T1hypo) with its images."""
    run = env.db.start_run(
        lesionq_version="0.1.0",
        protocol="mesems_v1",
        settings_sha256="c" * 64,
        settings={},
        command="rerun",
    )
    rows = [r for r in write_visit(env.out, "01", "01", gd=True) if r["label"] == "T2"]
    g = np.zeros(SHAPE, np.int32)
    g[8:10, 8:10, 3] = 1
    g[2:4, 2:4, 1] = 2
    g[12, 12:14, 4] = 3
    _save(output_path(env.out, "01", "01", "gd_labels"), g)
    for lid, conf in ((1, 0.9), (2, 0.2), (3, None)):
        row = _lesion(lid, "Gd", g == lid)
        if conf is not None:
            row["confidence"] = conf
        rows.append(row)
    bh = np.zeros(SHAPE, np.int32)
    bh[2:4, 2:4, 2] = 1
    _save(output_path(env.out, "01", "01", "bh_labels"), bh)
    _save(output_path(env.out, "01", "01", "t1_coreg"), np.full(SHAPE, 100.0, np.float32))
    rows.append({**_lesion(1, "T1hypo", bh == 1), "t2_lesion_id": 1, "t1_contrast_mean": 0.6})
    record(env.db, run, visit_row("sub-01", "ses-01", rows, True), rows, inputs="c" * 64)


def test_sort_key_puts_doubtful_gd_lesions_first() -> None:
    keys = [LesionKey("T2", 2), LesionKey("Gd", 3), LesionKey("T2", 1), LesionKey("Gd", 1)]
    conf = {LesionKey("Gd", 3): 0.7, LesionKey("Gd", 1): float("nan")}
    order = sorted(keys, key=lambda k: review_sort_key(k, conf.get(k)))
    assert order == [LesionKey("Gd", 3), LesionKey("Gd", 1), LesionKey("T2", 1), LesionKey("T2", 2)]


def test_state_lists_gd_by_confidence_and_leaves_black_holes_out(env) -> None:  # noqa: ANN001
    _recompute_sub01(env)
    with env.db.engine.connect() as conn:
        st = rs.load_state(conn, env.visit_ids["sub-01"], 2)
    got = [(les.key.label, les.key.lesion_id, les.confidence) for les in st.visit.lesions]
    assert got == [
        ("Gd", 2, 0.2),
        ("Gd", 1, 0.9),
        ("Gd", 3, None),
        ("T2", 1, None),
        ("T2", 2, None),
        ("T2", 3, None),
    ]
    # black holes are parts of T2 lesions: not reviewed, not counted
    assert all(les.key.label != "T1hypo" for les in st.visit.lesions)
    assert set(st.outcome.final) <= {les.key for les in st.visit.lesions}


def test_visit_page_order_confidence_column_and_bh_overlay(clients, env_sqlite) -> None:  # noqa: ANN001
    env = env_sqlite
    _recompute_sub01(env)
    vid = env.visit_ids["sub-01"]
    c = clients()
    login(c, "reader1")
    page = c.get(f"/visits/{vid}")
    assert page.status_code == 200
    rows = re.findall(r'<tr id="lesion-(\w+)-(\d+)"', page.text)
    assert rows == [("Gd", "2"), ("Gd", "1"), ("Gd", "3"), ("T2", "1"), ("T2", "2"), ("T2", "3")]
    assert "Confidence" in page.text and ">0.20<" in page.text and ">0.90<" in page.text
    assert 'option value="bh"' in page.text
    r = c.get(f"/visits/{vid}/slice", params={"overlay": "bh", "index": 2})
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    # sub-02 has no pre-contrast T1 outputs: no black-hole overlay offered
    assert 'option value="bh"' not in c.get(f"/visits/{env.visit_ids['sub-02']}").text
