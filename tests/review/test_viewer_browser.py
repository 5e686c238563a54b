"""The NiiVue viewer in headless Chromium: two readers and an adjudicator, keyboard only.

reader1 accepts and rejects lesions with ``j``/``k``/``a``/``r``, moves the cursor
onto a lesion the software missed (Shift+arrows), grows it (``g``), saves it
(``s``), flickers against the previous visit (``f``), submits and goes on to the
next visit of their queue (``q``); reader2 reads with ``n``/``a``/``r``; the
adjudicator decides the two disagreements (one of them the added lesion) with
``n``/``r``/``a``. The final counts include the added lesion, on the page, in
:func:`reviewed_counts` and in ``visits.tsv``. NiiVue renders with WebGL2
(SwiftShader in headless Chromium); no request leaves 127.0.0.1; no page error.
Screenshots go to ``tmp_path`` and, with ``LESIONQ_TEST_ARTIFACTS``, there.
"""

from __future__ import annotations

import re
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from review_helpers import PASSWORDS, ReviewEnv, add_missed_lesion, build


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def served(tmp_path: Path, chromium) -> Iterator[tuple[str, ReviewEnv]]:  # noqa: ANN001
    """The review app on the synthetic study plus a missed lesion, on 127.0.0.1."""
    import uvicorn

    from lesionq.review import create_app

    env = build(f"sqlite:///{tmp_path / 'lesionq.sqlite'}", tmp_path / "out")
    add_missed_lesion(env.out)
    app = create_app(env.url, env.out, readers_required=2)
    port = _free_port()
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
        yield f"http://127.0.0.1:{port}", env
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        env.db.close()


def _real_failures(failed: list[str]) -> list[str]:
    """Failed requests, less NiiVue's own cancels: it stops reading a volume's response
    once it has the bytes it needs (``net::ERR_ABORTED`` on a ``/volume/`` URL)."""
    return [f for f in failed if not ("/volume/" in f and f.endswith("net::ERR_ABORTED"))]


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
    tmp_path: Path,  # noqa: ANN001
) -> None:
    from lesionq.batch.tables import visits_table
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
        page.goto(f"{base}/adjudicate/{vid}")
        assert re.search(r"accept", page.text_content("#lesion-A-1 .adjudicated"))
        ctx.close()

    counts = reviewed_counts(env.db).set_index("participant_id")
    assert counts.loc["sub-01", "t2_count_reviewed"] == 2
    assert counts.loc["sub-01", "t2_volume_reviewed_mm3"] == pytest.approx(16.0 + 16.0)
    row = visits_table(env.db).set_index("participant_id").loc["sub-01"]
    assert int(row["t2_count_reviewed"]) == 2
    assert outside == [], outside
    for messages, failed in watched:
        assert _real_failures(failed) == [], failed
        assert not [m for m in messages if m.startswith(("error", "pageerror"))], messages
    keep_artifacts(*sorted(shots.glob("*.png")), folder="review_viewer")
    assert len(list(shots.glob("*.png"))) == 5
