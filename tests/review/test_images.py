"""Slice viewer and QC pictures: rendering, clamping, and no path traversal."""

from __future__ import annotations

import os

import numpy as np
import pytest
from review_helpers import PNG_1PX, login

from lesionq.qc import figure_path
from lesionq.review.images import canonical_slice_of


def test_slice_png_and_clamping(clients, env_sqlite) -> None:  # noqa: ANN001
    c = clients()
    login(c, "reader1")
    vid = env_sqlite.visit_ids["sub-01"]
    r = c.get(f"/visits/{vid}/slice", params={"axis": "axial", "index": 3, "highlight": 2})
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    assert r.content[:8] == b"\x89PNG\r\n\x1a\n"
    assert (r.headers["x-slice-index"], r.headers["x-slice-count"]) == ("3", "6")
    hi = c.get(f"/visits/{vid}/slice", params={"axis": "axial", "index": 999})
    lo = c.get(f"/visits/{vid}/slice", params={"axis": "axial", "index": -5})
    assert hi.headers["x-slice-index"] == "5" and lo.headers["x-slice-index"] == "0"
    assert (
        c.get(f"/visits/{vid}/slice", params={"axis": "coronal"}).headers["x-slice-count"] == "16"
    )
    gd = c.get(f"/visits/{vid}/slice", params={"overlay": "gd", "index": 3})
    assert gd.status_code == 200
    assert c.get(f"/visits/{vid}/slice", params={"axis": "oblique"}).status_code == 400
    assert c.get(f"/visits/{vid}/slice", params={"overlay": "../x"}).status_code == 400
    assert c.get(f"/visits/{vid}/slice", params={"index": "1; rm"}).status_code == 422
    # sub-02 has no Gd+ images
    vid2 = env_sqlite.visit_ids["sub-02"]
    assert c.get(f"/visits/{vid2}/slice", params={"overlay": "gd"}).status_code == 404
    assert c.get("/visits/999/slice").status_code == 404


def test_change_and_previous_overlays(clients, env_sqlite) -> None:  # noqa: ANN001
    """New/enlarging outlines on this visit's FLAIR and on the previous visit's; offered
    only where the longitudinal outputs exist; no lesion-id highlight on change ids."""
    c = clients()
    login(c, "reader1")
    vid = env_sqlite.visit_ids["sub-01"]
    page = c.get(f"/visits/{vid}", params={"overlay": "change", "lesion": "T2:2"}).text
    assert '<option value="change" selected>' in page and '<option value="previous">' in page
    assert "highlight=" not in page  # T2 lesion 2 is not change id 2
    cur = c.get(f"/visits/{vid}/slice", params={"overlay": "change", "index": 3})
    prev = c.get(f"/visits/{vid}/slice", params={"overlay": "previous", "index": 3})
    t2 = c.get(f"/visits/{vid}/slice", params={"overlay": "t2", "index": 3})
    assert cur.status_code == prev.status_code == 200
    assert len({cur.content, prev.content, t2.content}) == 3  # three different pictures
    vid2 = env_sqlite.visit_ids["sub-02"]
    assert c.get(f"/visits/{vid2}/slice", params={"overlay": "change"}).status_code == 404
    assert c.get(f"/visits/{vid2}/slice", params={"overlay": "previous"}).status_code == 404
    assert 'value="change"' not in c.get(f"/visits/{vid2}").text


def test_visit_page_starts_at_the_highlighted_lesion(clients, env_sqlite) -> None:  # noqa: ANN001
    c = clients()
    login(c, "reader1")
    vid = env_sqlite.visit_ids["sub-01"]
    page = c.get(f"/visits/{vid}", params={"lesion": "T2:3"}).text
    # lesion 3 lies in slice k=4 (z = 8 mm)
    assert 'id="slice-index" min="0" max="5" value="4"' in page
    assert "highlight=3" in page
    page = c.get(f"/visits/{vid}").text  # default: the largest lesion (T2 1, k = 1..2 -> 2)
    assert 'value="2"' in page


def test_canonical_slice_of_flipped_axis() -> None:
    aff = np.diag([-1.0, 1.0, 2.0, 1.0])
    aff[0, 3] = 15.0
    assert canonical_slice_of(aff, (16, 16, 6), (15.0, 0.0, 0.0), "sagittal") == 15
    assert canonical_slice_of(aff, (16, 16, 6), (0.0, 0.0, 0.0), "sagittal") == 0
    assert canonical_slice_of(aff, (16, 16, 6), (0.0, 0.0, 99.0), "axial") == 5


def test_figure_is_served_only_by_exact_name(clients, env_sqlite) -> None:  # noqa: ANN001
    c = clients()
    login(c, "reader1")
    vid1, vid2 = env_sqlite.visit_ids["sub-01"], env_sqlite.visit_ids["sub-02"]
    name = figure_path(env_sqlite.out, "01", "01", "t2lesions", "png").name
    ok = c.get(f"/figures/{vid1}/{name}")
    assert (
        ok.status_code == 200
        and ok.content == PNG_1PX
        and ok.headers["content-type"] == "image/png"
    )
    page = c.get(f"/visits/{vid1}").text
    assert f'src="/figures/{vid1}/{name}"' in page
    # the same file through another visit is refused
    assert c.get(f"/figures/{vid2}/{name}").status_code == 404


TRAVERSALS = [
    "..%2F..%2Fetc%2Fpasswd",
    "..%2F..%2F..%2F..%2F..%2Fetc%2Fpasswd",
    "%2Fetc%2Fpasswd",
    "..%252F..%252Fetc%252Fpasswd",
    "....%2F%2F....%2F%2Fetc%2Fpasswd",
    "..%5C..%5Cetc%5Cpasswd",
    "lesionq.sqlite",
    "..%2F..%2Flesionq.sqlite",
    "sub-01_ses-01_desc-t2lesions_flair.png%00.txt",
]


@pytest.mark.parametrize("raw", TRAVERSALS)
def test_path_traversal_on_figures_is_refused(clients, env_sqlite, raw) -> None:  # noqa: ANN001
    c = clients()
    login(c, "reader1")
    vid = env_sqlite.visit_ids["sub-01"]
    r = c.get(f"/figures/{vid}/{raw}")
    assert r.status_code == 404, raw
    assert b"root:" not in r.content and b"SQLite" not in r.content


def test_path_traversal_in_the_url_path_is_refused(clients, env_sqlite) -> None:  # noqa: ANN001
    c = clients()
    login(c, "reader1")
    vid = env_sqlite.visit_ids["sub-01"]
    for url in (
        f"/figures/{vid}/../../etc/passwd",
        f"/figures/{vid}//etc/passwd",
        "/figures/..%2F1/x.png",
        f"/visits/{vid}/slice/../../../etc/passwd",
        "/figures/-1/x.png",
    ):
        r = c.get(url)
        assert r.status_code in (404, 422), url
        assert b"root:" not in r.content


def test_symlink_out_of_the_output_folder_is_refused(clients, env_sqlite, tmp_path) -> None:  # noqa: ANN001
    secret = tmp_path / "secret.png"
    secret.write_bytes(b"\x89PNG secret")
    fig = figure_path(env_sqlite.out, "01", "01", "gdlesions", "png")
    os.symlink(secret, fig)
    c = clients()
    login(c, "reader1")
    vid = env_sqlite.visit_ids["sub-01"]
    assert c.get(f"/figures/{vid}/{fig.name}").status_code == 404
    assert fig.name not in c.get(f"/visits/{vid}").text
