"""End-to-end in headless Chromium (Debian ``chromium`` driven by Playwright).

reader1 logs in, opens a visit, scrolls the slice viewer, rejects one lesion, sees
its count change, submits, logs out; reader2 disagrees and submits; the
adjudicator decides; the reviewed count shows on the page, in
:func:`reviewed_counts` and in the merged ``visits.tsv`` export. No console errors.
Screenshots go to ``tmp_path`` and, when ``LESIONQ_TEST_ARTIFACTS`` is set, there.
Skipped when ``/usr/bin/chromium`` is missing, unless ``LESIONQ_REQUIRE_BROWSER=1``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from review_helpers import PASSWORDS, ReviewEnv, build, serve


@pytest.fixture
def served(tmp_path: Path, chromium) -> Iterator[tuple[str, ReviewEnv]]:  # noqa: ANN001
    """The review app on a synthetic study, served by uvicorn on 127.0.0.1:<free port>.

    Depends on ``chromium`` so that a missing browser skips before the server starts.
    """
    env = build(f"sqlite:///{tmp_path / 'lesionq.sqlite'}", tmp_path / "out")
    with serve(env) as url:
        yield url, env


def _viewer_diagnostic(text: str) -> bool:
    """A warning of the WebGL viewer, not of the app: NiiVue's own notes (``niivue-warn``)
    and the software GL's performance notes (``GL Driver Message``, SwiftShader)."""
    return text.startswith("niivue-") or "GL Driver Message" in text


def test_read_disagree_adjudicate_in_chromium(
    served,
    chromium,
    keep_artifacts,
    tmp_path: Path,  # noqa: ANN001
) -> None:

    from lesionq.batch.tables import export
    from lesionq.io.tables import read_tsv
    from lesionq.review import reviewed_counts

    base, env = served
    vid = env.visit_ids["sub-01"]
    shots = tmp_path / "screenshots"
    shots.mkdir()
    problems: list[str] = []

    def watch(page, who: str) -> None:  # noqa: ANN001
        page.on(
            "console",
            lambda m: (
                problems.append(f"{who} console {m.type}: {m.text}")
                if m.type == "error" or (m.type == "warning" and not _viewer_diagnostic(m.text))
                else None
            ),
        )
        page.on("pageerror", lambda e: problems.append(f"{who} page error: {e}"))

    def shot(page, name: str) -> None:  # noqa: ANN001
        page.screenshot(path=str(shots / f"{name}.png"), full_page=True)

    def log_in(page, who: str) -> None:  # noqa: ANN001
        page.goto(f"{base}/visits/{vid}")  # anonymous: sent to the login page
        assert page.url == f"{base}/login"
        page.fill("#username", who)
        page.fill("#password", PASSWORDS[who])
        page.click("#login")
        page.wait_for_url(f"{base}/")
        assert page.text_content("#whoami").startswith(who)

    def decide(page, lesion: str, choice: str, button: str = "Save") -> None:  # noqa: ANN001
        """Choose and save; the page saves in place (fetch, no reload) and updates the row."""
        row = page.locator(f"#lesion-{lesion}")
        row.locator("select[name=choice]").select_option(choice)
        row.get_by_role("button", name=button).click()
        key = lesion.replace("-", ":", 1)
        page.wait_for_function(
            "k => (document.getElementById('nv-status') || {}).textContent.startsWith('saved: ' + k)",
            arg=key,
        )

    def log_out(page) -> None:  # noqa: ANN001
        page.click("#logout")
        page.wait_for_url(f"{base}/login")

    with chromium() as browser:
        # ---------------------------------------------------------- reader1
        ctx = browser.new_context(viewport={"width": 1280, "height": 1000})
        page = ctx.new_page()
        watch(page, "reader1")
        log_in(page, "reader1")
        shot(page, "01_worklist")
        page.click(f'#visit-{vid} a[href="/visits/{vid}"]')
        page.wait_for_url(f"{base}/visits/{vid}")
        assert page.text_content("#provisional-t2-count") == "3"
        # scroll the slice viewer: the picture follows the slider
        page.locator("#slice-index").fill("4")
        page.wait_for_function(
            "() => { const i = document.getElementById('slice-img');"
            " return i.src.endsWith('index=4') && i.complete && i.naturalWidth > 0; }"
        )
        assert page.text_content("#slice-label") == "5 / 6"
        shot(page, "02_visit_reader1")
        volume_before = page.text_content("#provisional-t2-volume")
        decide(page, "T2-3", "reject")
        assert page.text_content("#provisional-t2-count") == "2"
        # the volume cell follows the in-place save, as the server writes it on a reload
        volume_after = page.text_content("#provisional-t2-volume")
        assert volume_after != volume_before
        page.reload()
        assert page.text_content("#provisional-t2-volume") == volume_after
        assert page.text_content("#auto-t2-count") == "3"
        assert "reject" in page.text_content("#lesion-T2-3 .decision")
        shot(page, "03_rejected")
        with page.expect_navigation():
            page.click("#submit-review")
        # the confirmation step lists the lesions never opened (reader1 opened none)
        assert page.locator("#unviewed tbody tr").count() == 4
        with page.expect_navigation():
            page.click("#confirm-submit")
        assert page.is_visible("#submitted-note")
        log_out(page)
        # the session is over: the visit page sends back to the login page
        page.goto(f"{base}/visits/{vid}")
        assert page.url == f"{base}/login"
        ctx.close()

        # ---------------------------------------------------------- reader2 disagrees
        ctx = browser.new_context(viewport={"width": 1280, "height": 1000})
        page = ctx.new_page()
        watch(page, "reader2")
        log_in(page, "reader2")
        page.goto(f"{base}/visits/{vid}")
        # reader2 does not see reader1's decision
        assert "accept (default)" in page.text_content("#lesion-T2-3 .decision")
        assert page.text_content("#provisional-t2-count") == "3"
        with page.expect_navigation():
            page.click("#submit-review")
        with page.expect_navigation():
            page.click("#confirm-submit")
        shot(page, "04_reader2_submitted")
        log_out(page)
        ctx.close()

        # ---------------------------------------------------------- adjudicator
        ctx = browser.new_context(viewport={"width": 1280, "height": 1000})
        page = ctx.new_page()
        watch(page, "adj")
        log_in(page, "adj")
        page.select_option("select[name=status]", "awaiting_adjudication")
        with page.expect_navigation():
            page.click("#filters button")
        assert page.locator("#worklist tbody tr").count() == 1
        page.click(f'a[href="/adjudicate/{vid}"]')
        page.wait_for_url(f"{base}/adjudicate/{vid}")
        assert page.locator("#adjudication tr.disagree").count() == 1
        shot(page, "05_adjudication")
        decide(page, "T2-3", "reject", button="Decide")
        assert page.text_content("#lesion-T2-3 .adjudicated") == "reject"
        assert page.text_content("#reviewed-t2-count") == "2"
        reviewed_volume = page.text_content("#reviewed-t2-volume")
        assert reviewed_volume != "n/a"
        assert page.text_content("#review-status") == "final"
        page.goto(f"{base}/?status=final")
        assert page.text_content(f"#visit-{vid} .t2-reviewed") == "2"
        shot(page, "06_final_worklist")
        log_out(page)
        ctx.close()

    # the adjudicated count flows into the reviewed table and the merged visits export
    counts = reviewed_counts(env.db).set_index("participant_id")
    assert counts.loc["sub-01", "review_status"] == "final"
    assert counts.loc["sub-01", "t2_count_reviewed"] == 2
    # the app rewrote OUT/visits.tsv when the visit became final; `lesionq export` agrees
    dest = tmp_path / "visits_reviewed.tsv"
    export(env.db, dest, table="visits")
    for table in (env.out / "visits.tsv", dest):
        back = read_tsv(table).set_index("participant_id")
        assert int(back.loc["sub-01", "t2_count"]) == 3, table
        assert int(back.loc["sub-01", "t2_count_reviewed"]) == 2, table
        assert back.loc["sub-01", "review_status"] == "final", table
    actions = list(env.db.audit_log()["action"])
    assert actions.count("reader.login") == 3 and actions.count("reader.logout") == 3
    assert "adjudication.recorded" in actions and "review.final" in actions

    keep_artifacts(*sorted(shots.glob("*.png")), folder="review_browser")
    assert sorted(p.name for p in shots.glob("*.png")) == [
        "01_worklist.png",
        "02_visit_reader1.png",
        "03_rejected.png",
        "04_reader2_submitted.png",
        "05_adjudication.png",
        "06_final_worklist.png",
    ]
    assert problems == []
