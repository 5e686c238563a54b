"""The QC report opens from disk in headless Chromium: clean console, ids = lesions.tsv.

Browser and artifacts: the ``chromium`` and ``keep_artifacts`` fixtures of
tests/conftest.py (skipped without Chromium unless ``LESIONQ_REQUIRE_BROWSER=1``).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from lesionq.io.derivatives import output_path
from lesionq.io.tables import read_tsv
from lesionq.qc.report import write_subject_report

SUBJECT = "syn01"  # the subject of the synthetic_output fixture (tests/qc/conftest.py)


@pytest.mark.slow
def test_report_opens_clean_in_chromium(
    synthetic_output: Path, chromium, page_watcher, keep_artifacts, tmp_path: Path
) -> None:
    page_path = write_subject_report(synthetic_output, SUBJECT)
    with chromium() as browser:
        page = browser.new_page(viewport={"width": 1280, "height": 1000})
        messages, failed = page_watcher(page)
        page.goto(page_path.resolve().as_uri(), wait_until="load")
        broken = page.eval_on_selector_all(
            "img", "els => els.filter(e => !e.complete || e.naturalWidth === 0).map(e => e.src)"
        )
        rows = page.eval_on_selector_all(
            "section.visit tr.lesion",
            "els => els.map(e => [e.closest('section').dataset.session,"
            " e.dataset.label, e.dataset.lesionId])",
        )
        drawn = page.eval_on_selector_all(
            "figure[data-figure=t2lesions]",
            "els => els.map(e => [e.closest('section').dataset.session, e.dataset.lesionIds])",
        )
        shot = tmp_path / f"sub-{SUBJECT}_report.png"
        page.screenshot(path=str(shot), full_page=True)
    keep_artifacts(shot)
    assert messages == []
    assert failed == []
    assert broken == []
    assert shot.stat().st_size > 10_000
    for session in ("01", "02"):
        table = read_tsv(output_path(synthetic_output, SUBJECT, session, "lesions"))
        expected = {(session, str(r.label), str(r.lesion_id)) for r in table.itertuples()}
        assert {tuple(r) for r in rows if r[0] == session} == expected
        t2 = {str(r.lesion_id) for r in table.itertuples() if r.label == "T2"}
        assert [set(ids.split()) for s, ids in drawn if s == session] == [t2]
