"""OUT/index.html and a subject report in headless Chromium: offline, clean console, links work.

Browser and artifacts: the ``chromium``, ``page_watcher`` and ``keep_artifacts``
fixtures of tests/conftest.py (skipped without Chromium unless
``LESIONQ_REQUIRE_BROWSER=1``). Screenshots: ``overview/index.png``,
``overview/sub-syn01_timeline.png`` and ``overview/sub-syn01_t2lesions_full.png`` (the
T2 mosaic enlarged across the window).
"""

from __future__ import annotations

from pathlib import Path

from lesionq.io.tables import read_tsv, write_tsv
from lesionq.qc.overview import write_index
from lesionq.qc.report import write_subject_report
from lesionq.qc.timeline import SERIES

SUBJECT = "syn01"  # the subject of the synthetic_output fixture (tests/qc/conftest.py)
REASON = "preprocess: FLAIR not found"


def test_index_and_report_open_offline_in_chromium(
    synthetic_output: Path, chromium, page_watcher, keep_artifacts, tmp_path: Path
) -> None:
    out = synthetic_output
    visits = read_tsv(out / "visits.tsv")
    visits["reason"] = visits["reason"].astype("object") if "reason" in visits else None
    visits.loc[visits["session_id"] == "ses-03", "reason"] = REASON
    write_tsv(visits, out / "visits.tsv")
    write_subject_report(out, SUBJECT)
    index = write_index(out)
    shots = {
        "index": tmp_path / "index.png",
        "timeline": tmp_path / f"sub-{SUBJECT}_timeline.png",
        "full": tmp_path / f"sub-{SUBJECT}_t2lesions_full.png",
    }
    requests: list[str] = []
    with chromium() as browser:
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        messages, failed = page_watcher(page)
        page.on("request", lambda r: requests.append(r.url))
        page.goto(index.resolve().as_uri(), wait_until="load")
        subjects = page.eval_on_selector_all("tr.subject", "els => els.map(e => e.dataset.subject)")
        tips = page.eval_on_selector_all("span.failed", "els => els.map(e => e.title)")
        sparks = page.eval_on_selector_all("td.spark svg", "els => els.length")
        page.screenshot(path=str(shots["index"]), full_page=True)
        page.click(f"a[href='sub-{SUBJECT}.html']")
        page.wait_for_load_state("load")
        report_url = page.url
        broken = page.eval_on_selector_all(
            "img", "els => els.filter(e => !e.complete || e.naturalWidth === 0).map(e => e.src)"
        )
        points = page.eval_on_selector_all("svg.lq-timeline circle.point", "els => els.length")
        timeline_w = page.eval_on_selector(
            "svg.lq-timeline", "e => e.getBoundingClientRect().width"
        )
        # at 1400 px the T2 mosaic is shown at its own size (its text as drawn, not shrunk)
        shown, natural = page.eval_on_selector(
            "figure[data-figure=t2lesions] img", "e => [e.clientWidth, e.naturalWidth]"
        )
        page.locator("#timeline").screenshot(path=str(shots["timeline"]))
        fig = "section#ses-01 figure[data-figure=t2lesions]"
        hidden = page.is_visible(f"{fig} .zoom img")
        page.click(f"{fig} a.full")
        zoom_url = page.url
        zoomed_w = page.eval_on_selector(f"{fig} .zoom img", "e => e.getBoundingClientRect().width")
        page.screenshot(path=str(shots["full"]))
        page.click(f"{fig} .zoom a.close")
        closed = not page.is_visible(f"{fig} .zoom img")
        page.click(f"{fig} a.full")
        page.click(f"{fig} .zoom a.file")
        page.wait_for_load_state("load")
        full_url = page.url
    keep_artifacts(*shots.values(), folder="overview")
    assert messages == []
    assert failed == []
    assert [u for u in requests if not u.startswith(("file://", "data:"))] == []
    assert subjects == [SUBJECT]
    assert tips == [REASON]
    assert sparks == len(SERIES)
    assert report_url.endswith(f"/sub-{SUBJECT}.html")
    assert broken == []
    assert points == 1 + 1  # gd_count at ses-01 and ses-02 (the fixture has no volumes)
    assert timeline_w > 600
    assert shown >= natural > 0
    assert not hidden and closed
    assert zoom_url.endswith("#zoom-ses-01-t2lesions")
    assert zoomed_w > 0.9 * 1400
    assert full_url.endswith("_desc-t2lesions_flair.svg")
    for shot in shots.values():
        assert shot.stat().st_size > 5_000
