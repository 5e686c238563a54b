"""The NiiVue viewer in headless Chromium: two readers and an adjudicator, keyboard only.

reader1 accepts and rejects lesions with ``j``/``k``/``a``/``r``, moves the cursor
onto a lesion the software missed (Shift+arrows), grows it (``g``), saves it
(``s``), flickers against the previous visit (``f``), submits and goes on to the
next visit of their queue (``q``); reader2 reads with ``n``/``a``/``r``; the
adjudicator decides the two disagreements (one of them the added lesion) with
``n``/``r``/``a``. The final counts include the added lesion, on the page, in
:func:`reviewed_counts` and in ``visits.tsv``. Then the visit is locked: the
adjudicator's still-open page saves another decision by keyboard and is refused
(HTTP 409, shown in the viewer's status line); the adjudicator amends the added
lesion on the amendment page with a reason, which makes review version 2 with the
changed count (page, :func:`reviewed_counts`, ``visits.tsv``), audited with that
reason, and ``lesionq audit verify`` exits 0. NiiVue renders with WebGL2
(SwiftShader in headless Chromium); no request leaves 127.0.0.1; no page error.
Screenshots go to ``tmp_path`` and, with ``LESIONQ_TEST_ARTIFACTS``, there.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
from review_helpers import PASSWORDS, ReviewEnv, add_missed_lesion, build, serve


@pytest.fixture
def served(tmp_path: Path, chromium) -> Iterator[tuple[str, ReviewEnv]]:  # noqa: ANN001
    """The review app on the synthetic study plus a missed lesion, on 127.0.0.1."""
    env = build(f"sqlite:///{tmp_path / 'lesionq.sqlite'}", tmp_path / "out")
    add_missed_lesion(env.out)
    with serve(env) as url:
        yield url, env


def _real_failures(failed: list[str]) -> list[str]:
    """Failed requests, less NiiVue's own cancels: it stops reading a volume's response
    once it has the bytes it needs (``net::ERR_ABORTED`` on a ``/volume/`` URL, or on the
    ``/grow.nii.gz`` preview of a region grown from a seed)."""
    return [
        f
        for f in failed
        if not (("/volume/" in f or "/grow.nii.gz?" in f) and f.endswith("net::ERR_ABORTED"))
    ]


#: Chromium's console line for the one refused (409) save the locked-read flow provokes.
REFUSED_409 = "error: Failed to load resource: the server responded with a status of 409 (Conflict)"


def test_viewer_loads_offline_with_webgl(
    served,
    chromium,
    page_watcher,
    keep_artifacts,
    tmp_path: Path,  # noqa: ANN001
) -> None:
    """The visit page's NiiVue viewer renders (WebGL2), saves a decision in place (no
    reload) and every request stays on 127.0.0.1."""
    base, env = served
    vid = env.visit_ids["sub-01"]
    outside: list[str] = []
    with chromium() as browser:
        page = browser.new_page(viewport={"width": 1400, "height": 1100})
        messages, failed = page_watcher(page)
        page.on(
            "request", lambda r: None if r.url.startswith(base + "/") else outside.append(r.url)
        )
        page.goto(f"{base}/login")
        page.fill("#username", "reader1")
        page.fill("#password", PASSWORDS["reader1"])
        page.press("#password", "Enter")
        page.wait_for_url(f"{base}/")
        page.goto(f"{base}/visits/{vid}")
        page.wait_for_function(
            "() => window.lesionqViewer && (window.lesionqViewer.ready"
            " || window.lesionqViewer.errors.length)",
            timeout=30000,
        )
        assert page.evaluate("() => window.lesionqViewer.errors") == []
        assert page.evaluate("() => !!document.getElementById('nv-canvas').getContext('webgl2')")
        url = page.url
        page.keyboard.press("j")
        page.keyboard.press("r")
        page.wait_for_function(
            "() => document.getElementById('nv-status').textContent.startsWith('saved: Gd:1')"
        )
        assert page.url == url  # saved in place
        # the planes centre on the lesion, and the previous visit's pane follows
        here, previous = page.evaluate("() => window.lesionqViewer.crosshairs()")
        assert here == pytest.approx(previous, abs=1e-3)
        assert here == pytest.approx([8.5, 8.5, 6.0], abs=1.01)  # Gd lesion 1's centroid
        assert page.text_content("#provisional-gd-count") == "0"
        shot = tmp_path / "viewer.png"
        page.screenshot(path=str(shot), full_page=True)
    assert outside == [], outside
    assert _real_failures(failed) == [], failed
    assert not [m for m in messages if m.startswith(("error", "pageerror"))], messages
    keep_artifacts(shot, folder="review_viewer")


@pytest.mark.slow
def test_keyboard_reading_with_an_added_lesion(
    served,
    chromium,
    page_watcher,
    keep_artifacts,
    capsys,
    tmp_path: Path,  # noqa: ANN001
) -> None:
    """The whole flow of issue 17 in Chromium: two readers and an adjudicator read by
    keyboard, one lesion added; the final counts include it. Then final means final:
    the adjudicator's keyboard save is refused (409, shown on the page); an amendment
    through the amendment page, with a reason, makes review version 2 with the changed
    count, is audited with its reason, and ``lesionq audit verify`` passes."""
    from lesionq.batch.tables import visits_table
    from lesionq.cli.main import main as cli_main
    from lesionq.review import reviewed_counts

    base, env = served
    vid, vid2 = env.visit_ids["sub-01"], env.visit_ids["sub-02"]
    shots = tmp_path / "screenshots"
    shots.mkdir()
    outside: list[str] = []
    watched: list[tuple[list[str], list[str]]] = []

    def open_page(browser):  # noqa: ANN001, ANN202
        ctx = browser.new_context(viewport={"width": 1400, "height": 1100})
        page = ctx.new_page()
        watched.append(page_watcher(page))
        page.on(
            "request",
            lambda r: None if r.url.startswith(base + "/") else outside.append(r.url),
        )
        return ctx, page

    def shot(page, name: str) -> None:  # noqa: ANN001
        page.screenshot(path=str(shots / f"{name}.png"), full_page=True)

    def log_in(page, who: str) -> None:  # noqa: ANN001
        page.goto(f"{base}/login")
        page.fill("#username", who)
        page.fill("#password", PASSWORDS[who])
        page.press("#password", "Enter")
        page.wait_for_url(f"{base}/")

    def viewer_ready(page) -> None:  # noqa: ANN001
        page.wait_for_function(
            "() => window.lesionqViewer && (window.lesionqViewer.ready"
            " || window.lesionqViewer.errors.length)",
            timeout=30000,
        )
        assert page.evaluate("() => window.lesionqViewer.errors") == []

    def key(page, k: str, saved: str | None = None) -> None:  # noqa: ANN001
        page.keyboard.press(k)
        if saved is not None:
            page.wait_for_function(
                "s => document.getElementById('nv-status').textContent.startsWith(s)",
                arg=f"saved: {saved}",
            )

    def submit(page) -> None:  # noqa: ANN001
        page.focus("#submit-review")
        with page.expect_navigation():
            page.keyboard.press("Enter")
        page.focus("#confirm-submit")
        with page.expect_navigation():
            page.keyboard.press("Enter")
        assert page.is_visible("#submitted-note")

    with chromium() as browser:
        # ---------------------------------------------------------- reader1
        ctx, page = open_page(browser)
        log_in(page, "reader1")
        page.goto(f"{base}/visits/{vid}")
        viewer_ready(page)
        assert page.evaluate("() => !!document.getElementById('nv-canvas').getContext('webgl2')"), (
            "no WebGL2 in this Chromium"
        )
        shot(page, "01_viewer_reader1")
        key(page, "j", None)  # Gd:1 (listed first)
        assert page.get_attribute("#lesion-Gd-1", "aria-current") == "true"
        key(page, "a", "Gd:1 accept")
        key(page, "j")
        key(page, "a", "T2:1 accept")
        key(page, "j")
        key(page, "r", "T2:2 reject")
        key(page, "j")
        key(page, "r", "T2:3 reject")
        assert page.text_content("#provisional-t2-count") == "1"
        assert "reject" in page.text_content("#lesion-T2-3 .decision")
        key(page, "l", "T2:3 relabel:artefact")  # l relabels, l again: the next label
        key(page, "l", "T2:3 relabel:not MS")
        key(page, "r", "T2:3 reject")
        # the missed lesion lies 10 voxels right of and 1 above T2 lesion 1
        key(page, "k")
        key(page, "k")
        assert page.get_attribute("#lesion-T2-1", "aria-current") == "true"
        for _ in range(10):
            key(page, "Shift+ArrowRight")
        key(page, "Shift+ArrowUp")
        key(page, "g")
        page.wait_for_function(
            "() => /8 voxels/.test(document.getElementById('grow-summary').textContent)"
        )
        shot(page, "02_grown_preview")
        with page.expect_navigation():
            key(page, "s")
        viewer_ready(page)
        assert page.is_visible("#lesion-A-1")
        assert page.text_content("#provisional-t2-count") == "2"  # T2:1 + A1
        key(page, "f")  # flicker against the previous visit
        assert page.get_attribute("#flicker", "aria-pressed") == "true"
        page.wait_for_function(
            "() => /previous/.test(document.getElementById('flicker-label').textContent)"
        )
        shot(page, "03_added_and_flicker")
        key(page, "f")
        submit(page)
        viewer_ready(page)
        with page.expect_navigation():
            key(page, "q")  # next visit in my queue
        assert page.url == f"{base}/visits/{vid2}"
        ctx.close()

        # ---------------------------------------------------------- reader2
        ctx, page = open_page(browser)
        log_in(page, "reader2")
        page.goto(f"{base}/visits/{vid}")
        viewer_ready(page)
        assert page.locator("#lesion-A-1").count() == 0  # blinded
        key(page, "n")
        key(page, "a", "Gd:1 accept")
        key(page, "n")
        key(page, "a", "T2:1 accept")
        key(page, "n")
        key(page, "r", "T2:2 reject")
        key(page, "n")
        key(page, "a", "T2:3 accept")  # disagrees with reader1
        key(page, "n")
        assert "no undecided" in page.text_content("#nv-status")
        submit(page)
        ctx.close()

        # ---------------------------------------------------------- adjudicator
        ctx, page = open_page(browser)
        log_in(page, "adj")
        page.goto(f"{base}/adjudicate/{vid}")
        viewer_ready(page)
        assert page.locator("#added-lesions tr.disagree").count() == 1
        key(page, "n")
        assert page.get_attribute("#lesion-T2-3", "aria-current") == "true"
        key(page, "r", "T2:3 reject")
        key(page, "n")
        assert page.get_attribute("#lesion-A-1", "aria-current") == "true"
        shot(page, "04_adjudicate_added")
        key(page, "a", "A:1 accept")
        assert page.text_content("#review-status") == "final"
        assert page.text_content("#reviewed-t2-count") == "2"
        shot(page, "05_final")
        # the final counts include the added lesion (before any amendment)
        counts = reviewed_counts(env.db).set_index("participant_id")
        assert counts.loc["sub-01", "t2_count_reviewed"] == 2
        assert counts.loc["sub-01", "t2_volume_reviewed_mm3"] == pytest.approx(16.0 + 16.0)
        assert counts.loc["sub-01", "review_version"] == 1
        row = visits_table(env.db).set_index("participant_id").loc["sub-01"]
        assert int(row["t2_count_reviewed"]) == 2

        # ------------------------------------------------------ final means final
        # this page was loaded before the visit was final, so it still offers decisions:
        # the keyboard save (JSON) of another decision is refused with 409, shown on the page
        with page.expect_response(
            lambda r: r.url == f"{base}/api/adjudicate/{vid}" and r.request.method == "POST"
        ) as refusal:
            key(page, "r")  # A:1 reject
        assert refusal.value.status == 409
        assert "is final" in refusal.value.json()["error"]
        page.wait_for_function(
            "() => document.getElementById('nv-status').textContent.startsWith('not saved:')"
        )
        status_text = page.text_content("#nv-status")
        assert "is final" in status_text and "amendment" in status_text, status_text
        # the refusal is styled and announced as an error, not plain grey status text
        assert page.get_attribute("#nv-status", "class") == "err"
        assert page.get_attribute("#nv-status", "role") == "alert"
        assert page.evaluate("() => window.lesionqViewer.errors") == [
            status_text.removeprefix("not saved: ")
        ]
        assert page.text_content("#lesion-A-1 .adjudicated") == "accept"  # unchanged
        assert page.text_content("#reviewed-t2-count") == "2"
        shot(page, "06_refused_409")
        page.goto(f"{base}/adjudicate/{vid}")
        assert re.search(r"accept", page.text_content("#lesion-A-1 .adjudicated"))
        assert page.is_visible("#final-note")
        assert page.locator("form.adjudicate").count() == 0  # no decision offered any more

        # the adjudicator amends the added lesion through the amendment page, with a reason
        with page.expect_navigation():
            page.click("#amend-link")
        assert page.url == f"{base}/visits/{vid}/amend"
        assert page.text_content("#review-version") == "1"
        assert page.text_content("#lesion-A-1 .final") == "accept"
        form = page.locator("#lesion-A-1 form.amend")
        form.locator("select[name=choice]").select_option("reject")
        assert not form.evaluate("f => f.checkValidity()")  # no reason: the browser refuses
        reason = "on re-reading: a vessel in cross-section, not a lesion"
        form.locator("input[name=reason]").fill(reason)
        shot(page, "07_amend_page")
        with page.expect_navigation():
            form.locator("button[type=submit]").click()
        assert page.url == f"{base}/visits/{vid}/amend?msg=amended"
        assert page.text_content("#review-version") == "2"
        assert page.text_content("#lesion-A-1 .final") == "reject"
        assert page.text_content("#reviewed-t2-count") == "1"
        amended = page.locator("#amendments tr.amendment")
        assert amended.count() == 1
        assert reason in amended.text_content() and "adj" in amended.text_content()
        shot(page, "08_amended")
        page.goto(f"{base}/adjudicate/{vid}")
        assert "review version 2" in page.text_content("#final-note")
        ctx.close()

    # the amendment: a new version with the changed count, in the read model and exports
    counts = reviewed_counts(env.db).set_index("participant_id")
    assert counts.loc["sub-01", "review_status"] == "final"
    assert counts.loc["sub-01", "review_version"] == 2
    assert counts.loc["sub-01", "t2_count_reviewed"] == 1
    assert counts.loc["sub-01", "t2_volume_reviewed_mm3"] == pytest.approx(16.0)
    row = visits_table(env.db).set_index("participant_id").loc["sub-01"]
    assert (int(row["t2_count_reviewed"]), int(row["review_version"])) == (1, 2)
    exported = pd.read_csv(env.out / "visits.tsv", sep="\t").set_index("participant_id")
    assert int(exported.loc["sub-01", "review_version"]) == 2  # OUT/visits.tsv rewritten
    assert int(exported.loc["sub-01", "t2_count_reviewed"]) == 1
    # the audit log: the amendment with its reason, the refused save (409, client address)
    log = env.db.audit_log()
    amendment = log[log["action"] == "amendment.recorded"]
    assert len(amendment) == 1
    entry = amendment.iloc[0]
    assert entry["actor"] == "adj" and entry["client"] == "127.0.0.1"
    assert entry["after"]["reason"] == reason
    assert (entry["before"]["version"], entry["after"]["version"]) == (1, 2)
    assert (entry["before"]["decision"], entry["after"]["decision"]) == ("accept", "reject")
    assert entry["before"]["reviewed"]["t2_count_reviewed"] == 2
    assert entry["after"]["reviewed"]["t2_count_reviewed"] == 1
    refused = [
        (r["actor"], r["client"], r["after"]["status"], r["after"]["path"])
        for _, r in log[log["action"] == "request.refused"].iterrows()
    ]
    assert ("adj", "127.0.0.1", 409, f"/api/adjudicate/{vid}") in refused, refused
    # the hash chain holds, through the command line
    capsys.readouterr()
    assert cli_main(["audit", "verify", "--db", env.url]) == 0
    assert "lesionq audit verify: OK" in capsys.readouterr().out

    assert outside == [], outside  # no request left 127.0.0.1
    for messages, failed in watched:
        assert _real_failures(failed) == [], failed
        errors = [m for m in messages if m.startswith(("error", "pageerror"))]
        if REFUSED_409 in errors:  # the adjudicator's page: the one refused save, no other
            errors.remove(REFUSED_409)
        assert errors == [], messages
    assert sum(m == REFUSED_409 for messages, _ in watched for m in messages) == 1
    keep_artifacts(*sorted(shots.glob("*.png")), folder="review_viewer")
    assert len(list(shots.glob("*.png"))) == 8
