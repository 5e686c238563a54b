"""The QC report opens from disk in headless Chromium: clean console, ids = lesions.tsv.

Needs Debian's ``/usr/bin/chromium`` and the ``playwright`` Python package (no
``playwright install``: the system browser is used). Skipped with a reason when
either is absent, unless ``LESIONQ_REQUIRE_BROWSER=1``. The screenshot goes to the
test's tmp path, and to ``$LESIONQ_TEST_ARTIFACTS`` (or ``test-artifacts/`` when
that variable is set to ``1``) when the variable is set.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from lesionq.io.derivatives import output_path
from lesionq.io.tables import read_tsv
from lesionq.qc.report import write_subject_report

SUBJECT = "syn01"  # the subject of the synthetic_output fixture (tests/qc/conftest.py)

CHROMIUM = Path("/usr/bin/chromium")
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def _require(reason: str) -> None:
    if os.environ.get("LESIONQ_REQUIRE_BROWSER") == "1":
        pytest.fail(f"LESIONQ_REQUIRE_BROWSER=1 but {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def sync_playwright():
    if not CHROMIUM.is_file():
        _require(f"{CHROMIUM} not found (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _require("the playwright Python package is not installed")
    return sync_playwright


def _artifact_dir(repo_root: Path) -> Path | None:
    value = os.environ.get("LESIONQ_TEST_ARTIFACTS")
    if not value:
        return None
    return repo_root / "test-artifacts" if value == "1" else Path(value)


@pytest.mark.slow
def test_report_opens_clean_in_chromium(
    synthetic_output: Path, sync_playwright, tmp_path: Path, repo_root: Path
) -> None:
    page_path = write_subject_report(synthetic_output, SUBJECT)
    messages: list[str] = []
    failed: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            page.on("console", lambda m: messages.append(f"{m.type}: {m.text}"))
            page.on("pageerror", lambda e: messages.append(f"pageerror: {e}"))
            page.on("requestfailed", lambda r: failed.append(f"{r.url} {r.failure}"))
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
        finally:
            browser.close()
    dest = _artifact_dir(repo_root)
    if dest is not None:
        dest.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, dest / shot.name)
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
