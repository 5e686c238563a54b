"""Per-subject HTML report of lesionq.qc.report on a synthetic output folder."""

from __future__ import annotations

from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote

import pytest

from lesionq.errors import MissingInputError
from lesionq.io.derivatives import output_path
from lesionq.io.tables import read_tsv
from lesionq.qc.report import FIGURES, figure_path, write_subject_report

SUBJECT = "syn01"  # the subject of the synthetic_output fixture (tests/qc/conftest.py)


class _Collect(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.links: list[str] = []
        self.rows: list[tuple[str, str, str]] = []  # (session, label, lesion_id)
        self.figures: list[dict[str, str]] = []
        self.scripts = 0
        self._session = ""

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "script":
            self.scripts += 1
        if tag == "section" and "data-session" in a:
            self._session = a["data-session"]
        for key in ("href", "src"):
            if key in a:
                self.links.append(a[key])
        if tag == "tr" and "data-lesion-id" in a:
            self.rows.append((self._session, a["data-label"], a["data-lesion-id"]))
        if tag == "figure" and "data-figure" in a:
            self.figures.append({**a, "session": self._session})


def _parse(path: Path) -> _Collect:
    c = _Collect()
    c.feed(path.read_text(encoding="utf-8"))
    c.close()
    return c


def test_report_lists_every_lesion_and_links_resolve(synthetic_output: Path) -> None:
    out = synthetic_output
    page = write_subject_report(out, SUBJECT)
    assert page == out / f"sub-{SUBJECT}.html"
    doc = _parse(page)
    assert doc.scripts == 0
    for session in ("01", "02"):
        table = read_tsv(output_path(out, SUBJECT, session, "lesions"))
        expected = {(session, str(r.label), str(r.lesion_id)) for r in table.itertuples()}
        assert {row for row in doc.rows if row[0] == session} == expected
        t2_ids = {str(r.lesion_id) for r in table.itertuples() if r.label == "T2"}
        fig = next(
            f for f in doc.figures if f["session"] == session and f["data-figure"] == "t2lesions"
        )
        assert set(fig["data-lesion-ids"].split()) == t2_ids
    gd = next(f for f in doc.figures if f["data-figure"] == "gdlesions")
    assert gd["session"] == "01" and gd["data-lesion-ids"] == "1"
    ne = next(f for f in doc.figures if f["data-figure"] == "newenlarging")
    assert ne["session"] == "02" and ne["data-lesion-ids"] == "4"
    assert any(f["data-figure"] == "registration" for f in doc.figures)
    assert doc.links
    for link in doc.links:
        if link.startswith(("#", "data:")):
            continue
        assert "://" not in link and not link.startswith("/"), link
        assert (out / unquote(link)).is_file(), link
    for key in ("t2lesions", "newenlarging"):
        for ext in FIGURES[key].formats:
            assert figure_path(out, SUBJECT, "02", key, ext).is_file()
    text = page.read_text(encoding="utf-8")
    assert "2020-01-0" not in text  # acquisition dates stay off the page
    assert "ses-03" in text and "no published outputs" in text
    assert "radiological convention" in text


def test_missing_and_broken_inputs_become_notes(synthetic_output: Path) -> None:
    out = synthetic_output
    output_path(out, SUBJECT, "02", "previous_flair").unlink()
    output_path(out, SUBJECT, "01", "t1ce_coreg").write_bytes(b"not a nifti")
    page = write_subject_report(out, SUBJECT, convention="neurological")
    text = page.read_text(encoding="utf-8")
    assert "no registered previous FLAIR" in text
    assert "Gd+ lesions over post-contrast T1w: failed" in text
    doc = _parse(page)
    keys = {(f["session"], f["data-figure"]) for f in doc.figures}
    assert ("01", "gdlesions") not in keys and ("02", "newenlarging") not in keys
    assert ("01", "t2lesions") in keys and ("02", "t2lesions") in keys
    assert "neurological convention" in text


def test_missing_out_dir_or_subject_raises(tmp_path: Path, synthetic_output: Path) -> None:
    with pytest.raises(MissingInputError, match="output folder"):
        write_subject_report(tmp_path / "nope", SUBJECT)
    with pytest.raises(MissingInputError, match="sub-other"):
        write_subject_report(synthetic_output, "sub-other")
    with pytest.raises(ValueError, match="convention"):
        write_subject_report(synthetic_output, SUBJECT, convention="sideways")
