"""Trial overview page OUT/index.html (lesionq.qc.overview) and the report's timeline/pictures."""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote

import numpy as np
import pandas as pd
import pytest

from lesionq.config import load_protocol
from lesionq.io.endpoints import write_endpoints
from lesionq.io.tables import read_tsv, write_tsv
from lesionq.qc import overview
from lesionq.qc.overview import load_schedule, refresh_index, write_index
from lesionq.qc.render import render_lesion_mosaic
from lesionq.qc.report import write_subject_report
from lesionq.qc.timeline import SERIES

SUBJECT = "syn01"  # the subject of the synthetic_output fixture (tests/qc/conftest.py)
REASON = 'preprocess: FLAIR "missing" <ses-03>'


class _Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.links: list[str] = []
        self.subjects: list[str] = []
        self.failed: list[tuple[str, str]] = []  # (subject, title)
        self.review: dict[str, str] = {}
        self.scripts = 0
        self.svgs = 0
        self.zoom_links: list[str] = []  # href of each a.full
        self.zooms: dict[str, list[str]] = {}  # id of each div.zoom -> img src in it
        self.figure_imgs: list[str] = []  # src of the pictures shown in the page
        self.timeline = 0
        self._subject = ""
        self._in: str | None = None
        self._zoom: str | None = None
        self._depth = 0  # <div> nesting inside the current div.zoom

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "script":
            self.scripts += 1
        if tag == "svg":
            self.svgs += 1
            if "lq-timeline" in a.get("class", ""):
                self.timeline += 1
        if tag == "a" and a.get("class") == "full":
            self.zoom_links.append(a["href"])
        if tag == "div" and self._zoom:
            self._depth += 1
        if tag == "div" and a.get("class") == "zoom":
            self._zoom, self._depth = a["id"], 1
            self.zooms[self._zoom] = []
        if tag == "img":
            if self._zoom:
                self.zooms[self._zoom].append(a["src"])
            else:
                self.figure_imgs.append(a["src"])
        for key in ("href", "src"):
            if key in a and tag in ("a", "img", "link"):
                self.links.append(a[key])
        if tag == "tr" and "data-subject" in a:
            self._subject = a["data-subject"]
            self.subjects.append(self._subject)
        if tag == "span" and a.get("class") == "failed":
            self.failed.append((self._subject, a["title"]))
        if tag == "td" and a.get("class") == "review":
            self._in = "review"

    def handle_endtag(self, tag: str) -> None:
        if tag == "div" and self._zoom:
            self._depth -= 1
            if self._depth == 0:
                self._zoom = None
        if tag == "td":
            self._in = None

    def handle_data(self, data: str) -> None:
        if self._in == "review" and data.strip():
            self.review[self._subject] = self.review.get(self._subject, "") + data.strip()


def _parse(path: Path) -> _Page:
    p = _Page()
    p.feed(path.read_text(encoding="utf-8"))
    p.close()
    return p


def _trial(out: Path) -> Path:
    """Add a failure reason and review states to syn01, and a subject without outputs."""
    visits = read_tsv(out / "visits.tsv")
    visits["reason"] = visits["reason"].astype("object") if "reason" in visits else pd.NA
    visits.loc[visits["session_id"] == "ses-03", "reason"] = REASON
    visits["review_status"] = ["final", "in_review", pd.NA]
    extra = pd.DataFrame(
        [
            {"participant_id": "sub-syn02", "session_id": "ses-01", "status": "ok", "t2_count": 2},
            {
                "participant_id": "sub-syn02",
                "session_id": "ses-02",
                "status": "failed",
                "reason": "registration failed",
            },
        ]
    )
    write_tsv(pd.concat([visits, extra], ignore_index=True), out / "visits.tsv")
    return out


def _resolve(out: Path, href: str) -> Path:
    return out / unquote(href.split("#", 1)[0])


def test_index_lists_every_subject_with_failures_review_and_links(synthetic_output: Path) -> None:
    out = _trial(synthetic_output)
    write_subject_report(out, SUBJECT)
    (out / "sub-syn03").mkdir()  # outputs folder only (e.g. a run still going)
    page = write_index(out)
    assert page == out / "index.html"
    doc = _parse(page)
    assert doc.subjects == ["syn01", "syn02", "syn03"]
    assert doc.scripts == 0
    assert "sub-syn01.html" in doc.links
    for href in doc.links:
        assert not href.startswith(("http:", "https:", "//")), href
        if not href.startswith(("#", "data:")):
            assert _resolve(out, href).is_file(), href
    assert doc.failed == [("syn01", REASON), ("syn02", "registration failed")]
    assert doc.review["syn01"].startswith("1 of 2 visits final, 1 in review")
    assert doc.review["syn02"] == "not reviewed"
    html = page.read_text(encoding="utf-8")
    assert 'sub-syn02 <span class="none">(no report)</span>' in html
    assert doc.svgs == 2 * len(SERIES)  # sparklines of the subjects in visits.tsv
    assert "2020-01" not in html  # no acquisition dates on the page


def test_index_rewrite_is_atomic(synthetic_output: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = synthetic_output
    first = write_index(out)
    before = first.read_bytes()
    replaced: list[tuple[str, str]] = []
    real_replace = os.replace

    def spy(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
        replaced.append((str(src), str(dst)))
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", spy)
    write_index(out)
    assert len(replaced) == 1
    tmp, dst = map(Path, replaced[0])
    assert dst == out / "index.html" and tmp.parent == out and tmp != dst
    monkeypatch.setattr(os, "replace", real_replace)

    def broken(context: object) -> str:
        raise RuntimeError("template exploded")

    monkeypatch.setattr(overview, "_render", broken)
    with pytest.raises(RuntimeError):
        write_index(out)
    assert first.read_bytes() == before
    assert sorted(p.name for p in out.iterdir() if p.name.startswith(".index")) == []
    assert refresh_index(out) is None  # logged, never raised
    assert refresh_index(out / "missing") is None


def test_schedule_from_settings_or_endpoints_sidecar(synthetic_output: Path) -> None:
    out = synthetic_output
    settings = load_protocol("mesems_testing")
    assert load_schedule(out) is None
    visits = read_tsv(out / "visits.tsv")
    visits["acq_time"] = ["2021-03-01", "2021-03-29", "2021-05-24"]  # weeks 0, 4, 12
    write_tsv(visits, out / "visits.tsv")
    write_endpoints(out, visits, settings)
    from_file = load_schedule(out)
    from_settings = load_schedule(out, settings)
    assert from_file.weeks == from_settings.weeks == (0, 4, 12, 24, 28, 36, 48)
    assert from_file.periods == from_settings.periods
    page = write_subject_report(out, SUBJECT)
    html = page.read_text(encoding="utf-8")
    start = html.index("<svg", html.index('id="timeline"'))
    root = ET.fromstring(html[start : html.index("</svg>", start) + len("</svg>")])
    ns = {"s": "http://www.w3.org/2000/svg"}
    weeks = {  # the fixture's visits.tsv has gd_count (1, 0), no volumes
        (c.get("data-session"), c.get("data-week"))
        for c in root.findall(".//s:circle[@data-series='gd']", ns)
    }
    assert weeks == {("ses-01", "0"), ("ses-02", "4")}
    failed = root.findall(".//s:g[@class='failed-visit']", ns)
    assert [(g.get("data-session"), g.get("data-week")) for g in failed] == [("ses-03", "12")]
    assert {r.get("data-period") for r in root.findall(".//s:rect[@class='period']", ns)} == {
        "first_treatment",
        "after_crossover",
    }


def test_report_has_timeline_and_pictures_open_full_size(synthetic_output: Path) -> None:
    out = synthetic_output
    page = write_subject_report(out, SUBJECT)
    doc = _parse(page)
    assert doc.timeline == 1
    # each picture (and flicker pair) links to an enlarged view of the same files
    assert len(doc.zoom_links) == len(doc.zooms) >= 5
    assert [h.removeprefix("#") for h in doc.zoom_links] == list(doc.zooms)
    assert sorted(s for srcs in doc.zooms.values() for s in srcs) == sorted(doc.figure_imgs)
    for href in doc.links:
        if not href.startswith(("#", "data:")):
            assert _resolve(out, href).is_file(), href


def test_mosaic_text_readable_at_its_size() -> None:
    """Text of a 4-column, 300 px-panel mosaic is at least 12 CSS px when shown at its width."""
    rng = np.random.default_rng(1)
    img = rng.normal(100, 5, (60, 60, 20)).astype(np.float32)
    lab = np.zeros(img.shape, np.int32)
    for n in range(8):
        lab[5 + 6 * n : 8 + 6 * n, 20:23, 2 + 2 * n] = n + 1
    r = render_lesion_mosaic(
        img,
        np.diag([1.0, 1.0, 3.0, 1.0]),
        lab,
        title="t",
        footer="f",
        fmt="svg",
        panel_width_px=300,
    )
    root = ET.fromstring(r.data)
    view_w = float(root.get("viewBox").split()[2])
    scale = r.width_px / view_w  # CSS px per SVG user unit at the picture's own width
    sizes = []
    for el in root.iter():
        style = el.get("style") or ""
        for part in style.split(";"):
            if part.strip().startswith("font-size"):
                sizes.append(float(part.split(":")[1].strip().removesuffix("px")) * scale)
    assert r.width_px > 1200 and len(sizes) >= 8 + 8 * 2  # ids, side letters, captions
    assert min(sizes) >= 12.0
