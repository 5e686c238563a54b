"""End to end on the bundled sample data: CLI run, outputs, truth, determinism.

These run the real pipeline (testing protocol: Otsu brain extraction, cheap N4 and
registration) on the synthetic phantoms, so they cover the whole path on a fresh
clone where ../shared is absent.
"""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

import lesionq
from lesionq.cli.main import main
from lesionq.io.tables import VISIT_COLUMNS, read_tsv
from lesionq.steps import LESION_TABLE_COLUMNS

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "sample_data" / "bids"
TRUTH = SAMPLE / "derivatives" / "truth"


@pytest.fixture(scope="module")
def sample_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("e2e") / "out"
    code = main(
        [
            "run",
            str(SAMPLE),
            str(out),
            "participant",
            "--participant-label",
            "phantom02",
            "--pipeline",
            "mesems_testing",
            "--n-procs",
            "2",
        ]
    )
    return code, out


def test_cli_run_succeeds_and_writes_the_contract(sample_run):
    code, out = sample_run
    assert code == 0
    desc = json.loads((out / "dataset_description.json").read_text())
    assert desc["DatasetType"] == "derivative"
    visits = read_tsv(out / "visits.tsv")
    assert list(visits.columns[: len(VISIT_COLUMNS)]) == list(VISIT_COLUMNS)
    assert list(visits["session_id"]) == ["ses-01", "ses-02", "ses-03"]
    assert (visits["status"] == "ok").all()
    # phantom02 misses contrasts at later visits: the pipeline uses what is there
    assert list(visits["contrasts_used"]) == [
        "FLAIR+T1w+T2w+ce-gadolinium_T1w",
        "FLAIR+T1w+ce-gadolinium_T1w",
        "FLAIR",
    ]
    assert not list(out.rglob("*.part*")) and not list(out.rglob(".anat.*"))


@pytest.mark.parametrize("ses", ["01", "02", "03"])
def test_outputs_on_flair_grid_with_sidecars(sample_run, ses):
    _, out = sample_run
    flair = nib.load(
        str(SAMPLE / f"sub-phantom02/ses-{ses}/anat/sub-phantom02_ses-{ses}_FLAIR.nii.gz")
    )
    anat = out / f"sub-phantom02/ses-{ses}/anat"
    prefix = f"sub-phantom02_ses-{ses}"
    for name in (
        "label-T2lesion_mask",
        "label-T2lesion_probseg",
        "label-T2lesion_dseg",
        "desc-brain_mask",
        "desc-preproc_FLAIR",
    ):
        img = nib.load(str(anat / f"{prefix}_{name}.nii.gz"))
        assert img.shape == flair.shape, name
        np.testing.assert_allclose(img.affine, flair.affine, atol=1e-4)
        side = json.loads((anat / f"{prefix}_{name}.json").read_text())
        assert side["settings_sha256"] and side["inputs"]["FLAIR"]["sha256"]
    lesions = pd.read_csv(anat / f"{prefix}_lesions.tsv", sep="\t")
    # the longitudinal step appends track_id, status, status_vs_baseline
    assert list(lesions.columns[: len(LESION_TABLE_COLUMNS)]) == list(LESION_TABLE_COLUMNS)
    labels = np.asarray(nib.load(str(anat / f"{prefix}_label-T2lesion_dseg.nii.gz")).dataobj)
    t2_rows = lesions[lesions["label"] == "T2"]
    assert sorted(np.unique(labels[labels > 0]).tolist()) == sorted(t2_rows["lesion_id"].tolist())
    mask = np.asarray(nib.load(str(anat / f"{prefix}_label-T2lesion_mask.nii.gz")).dataobj)
    np.testing.assert_array_equal(mask > 0, labels > 0)
    assert set(lesions["location"].dropna()) <= {
        "periventricular",
        "juxtacortical",
        "infratentorial",
        "deep_white_matter",
    }


def test_counts_close_to_phantom_truth(sample_run):
    """Lesion-wise: most planted lesions found, few inventions (honest, loose bound)."""
    _, out = sample_run
    found, planted, false_pos = 0, 0, 0
    for ses in ("01", "02", "03"):
        truth = np.asarray(
            nib.load(
                str(
                    TRUTH
                    / f"sub-phantom02/ses-{ses}/anat/sub-phantom02_ses-{ses}_desc-lesionid_dseg.nii.gz"
                )
            ).dataobj
        )
        labels = np.asarray(
            nib.load(
                str(
                    out
                    / f"sub-phantom02/ses-{ses}/anat/sub-phantom02_ses-{ses}_label-T2lesion_dseg.nii.gz"
                )
            ).dataobj
        )
        ids = np.unique(truth[truth > 0])
        planted += ids.size
        found += int(np.unique(truth[(labels > 0) & (truth > 0)]).size)
        pred_ids = np.unique(labels[labels > 0])
        false_pos += int(np.setdiff1d(pred_ids, np.unique(labels[(labels > 0) & (truth > 0)])).size)
    assert found / planted >= 0.7, f"found {found} of {planted} planted lesions"
    assert false_pos <= 3, f"{false_pos} lesions invented over 3 visits"


def test_the_in_memory_api_does_not_load_nipype():
    """`import lesionq.api` (segment_t2, compare_visits) loads no nipype: in an interactive
    session nipype's import would check for updates over the network unless NIPYPE_NO_ET
    is set, which only lesionq.run and the CLI do (offline, no telemetry)."""
    import subprocess
    import sys

    code = (
        "import os, sys; os.environ.pop('NIPYPE_NO_ET', None); import lesionq.api; "
        "print(sorted(m for m in ('nipype', 'dask.distributed') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_segment_t2_is_bit_identical_across_runs():
    d = SAMPLE / "sub-phantom01/ses-02/anat/sub-phantom01_ses-02_"
    kwargs = dict(t1=f"{d}T1w.nii.gz", t2=f"{d}T2w.nii.gz", protocol="mesems_testing", n_threads=2)
    a = lesionq.segment_t2(f"{d}FLAIR.nii.gz", **kwargs)
    b = lesionq.segment_t2(f"{d}FLAIR.nii.gz", **kwargs)
    np.testing.assert_array_equal(np.asarray(a.mask.dataobj), np.asarray(b.mask.dataobj))
    np.testing.assert_array_equal(
        np.asarray(a.probability.dataobj), np.asarray(b.probability.dataobj)
    )
    pd.testing.assert_frame_equal(a.lesions, b.lesions)
    assert a.count > 0


def test_segment_t2_and_lesionq_run_give_the_same_t2_lesions(sample_run):
    """The API and the batch run share the visit steps: same mask, probability and T2 table."""
    _, out = sample_run
    for ses in ("01", "02"):
        d = SAMPLE / f"sub-phantom02/ses-{ses}/anat/sub-phantom02_ses-{ses}_"
        extra = {k: f"{d}{k.upper()}w.nii.gz" for k in ("t1", "t2")}
        extra = {k: v for k, v in extra.items() if Path(v).is_file()}
        api = lesionq.segment_t2(f"{d}FLAIR.nii.gz", protocol="mesems_testing", **extra)
        anat = out / f"sub-phantom02/ses-{ses}/anat/sub-phantom02_ses-{ses}_"
        for name, img in (
            ("label-T2lesion_mask", api.mask),
            ("label-T2lesion_probseg", api.probability),
            ("label-T2lesion_dseg", api.labels),
            ("desc-brain_mask", api.brain_mask),
        ):
            published = nib.load(f"{anat}{name}.nii.gz")
            np.testing.assert_array_equal(
                np.asarray(published.dataobj), np.asarray(img.dataobj), err_msg=f"ses-{ses} {name}"
            )
        table = pd.read_csv(f"{anat}lesions.tsv", sep="\t")
        t2 = table[table["label"] == "T2"][list(LESION_TABLE_COLUMNS)].reset_index(drop=True)
        pd.testing.assert_frame_equal(
            t2, api.lesions[list(LESION_TABLE_COLUMNS)].reset_index(drop=True), check_dtype=False
        )
        assert api.count == len(t2)


def test_endpoints_table_sums_the_visits(sample_run):
    """endpoints.tsv: one row per period; cumulative counts = sums over the period's visits."""
    _, out = sample_run
    visits = read_tsv(out / "visits.tsv")
    ends = read_tsv(out / "endpoints.tsv")
    assert list(ends["period"]) == ["first_treatment", "after_crossover"]
    first = ends.iloc[0]
    # the sample sessions are weeks 0, 4, 12 (sessions.tsv acq_time): week 24 is missing
    assert first["n_visits_observed"] == 2 and str(first["missing_weeks"]) == "24"
    follow = visits[visits["session_id"] != "ses-01"]
    assert first["new_t2_count_cumulative"] == follow["new_t2_count"].sum()
    assert not bool(first["complete"])
    assert json.loads((out / "endpoints.json").read_text())


def test_gd_lesions_and_cua_published(sample_run):
    """Gd+ lesions where a post-contrast T1 exists (rows in lesions.tsv = the Gd dseg);
    n/a where it does not; CUA at follow-ups with both a Gd+ and a change result."""
    _, out = sample_run
    visits = read_tsv(out / "visits.tsv").set_index("session_id")
    truth = read_tsv(TRUTH / "sub-phantom02" / "sub-phantom02_visits.tsv").set_index("session_id")
    # ses-01 and ses-02 have a ce-T1w, ses-03 a FLAIR only
    assert visits.loc["ses-01", "gd_count"] == truth.loc["ses-01", "n_enhancing"]
    assert visits.loc["ses-02", "gd_count"] >= truth.loc["ses-02", "n_enhancing"]
    assert pd.isna(visits.loc["ses-03", "gd_count"])
    assert visits.loc["ses-01", "gd_inputs"] == "post+pre"
    for ses in ("01", "02"):
        anat = out / "sub-phantom02" / f"ses-{ses}" / "anat"
        prefix = f"sub-phantom02_ses-{ses}"
        lesions = pd.read_csv(anat / f"{prefix}_lesions.tsv", sep="\t")
        gd_rows = lesions[lesions["label"] == "Gd"]
        gd = np.asarray(nib.load(str(anat / f"{prefix}_label-Gdlesion_dseg.nii.gz")).dataobj)
        assert sorted(np.unique(gd[gd > 0]).tolist()) == sorted(gd_rows["lesion_id"].tolist())
        assert len(gd_rows) == visits.loc[f"ses-{ses}", "gd_count"]
        side = json.loads((anat / f"{prefix}_label-Gdlesion_mask.json").read_text())
        # the phantom's post- and pre-contrast T1 are aligned: nothing to move
        assert side["PostContrastShift_mm"] == [0.0, 0.0, 0.0]
    assert pd.isna(visits.loc["ses-01", "cua_count"])  # baseline: no earlier scan
    # CUA counts each physical lesion once: never more than Gd+ plus new/enlarging;
    # here the two planted new lesions enhance, so it is strictly fewer
    follow = visits.loc["ses-02"]
    new_enl = follow["new_t2_count"] + follow["enlarging_t2_count"]
    assert 0 < follow["cua_count"] < follow["gd_count"] + new_enl


def test_black_holes_against_phantom_truth(sample_run):
    """T1 black holes: within 20 % of the planted black-hole volume at every visit with a
    T1w, n/a (never 0) without one; the T1hypo rows are the T1hypo dseg, each inside the
    T2 lesion it names; gd_count_confident next to gd_count."""
    _, out = sample_run
    visits = read_tsv(out / "visits.tsv").set_index("session_id")
    truth = read_tsv(TRUTH / "sub-phantom02" / "sub-phantom02_visits.tsv").set_index("session_id")
    for ses in ("01", "02"):  # with a T1w
        row = visits.loc[f"ses-{ses}"]
        want = truth.loc[f"ses-{ses}", "bh_volume_mm3"]
        assert abs(row["bh_volume_mm3"] - want) <= 0.2 * want, (ses, row["bh_volume_mm3"], want)
        assert pd.isna(row["bh_volume_persistent_mm3"])
        assert 0 <= row["gd_count_confident"] <= row["gd_count"]
        anat = out / "sub-phantom02" / f"ses-{ses}" / "anat"
        prefix = f"sub-phantom02_ses-{ses}"
        bh = np.asarray(nib.load(str(anat / f"{prefix}_label-T1hypo_dseg.nii.gz")).dataobj)
        mask = np.asarray(nib.load(str(anat / f"{prefix}_label-T1hypo_mask.nii.gz")).dataobj)
        np.testing.assert_array_equal(mask > 0, bh > 0)
        side = json.loads((anat / f"{prefix}_label-T1hypo_mask.json").read_text())
        assert side["LesionCount"] == row["bh_count"] and side["inputs"]["T1w"]["sha256"]
        assert 0 < side["GreyMatterContrast"] < 1
        t2 = np.asarray(nib.load(str(anat / f"{prefix}_label-T2lesion_dseg.nii.gz")).dataobj)
        lesions = read_tsv(anat / f"{prefix}_lesions.tsv")
        rows = lesions[lesions["label"] == "T1hypo"]
        assert len(rows) == row["bh_count"] > 0
        assert sorted(np.unique(bh[bh > 0]).tolist()) == sorted(rows["lesion_id"].tolist())
        for r in rows.itertuples():
            assert (t2[bh == r.lesion_id] == r.t2_lesion_id).all()
            assert r.t1_contrast_mean >= 0.2
        vv = float(
            np.prod(nib.load(str(anat / f"{prefix}_label-T1hypo_mask.nii.gz")).header.get_zooms())
        )
        assert np.count_nonzero(mask) * vv == pytest.approx(row["bh_volume_mm3"])
    # ses-03 has a FLAIR only: not measured, n/a and no files
    row = visits.loc["ses-03"]
    for col in ("bh_count", "bh_volume_mm3", "bh_volume_persistent_mm3", "gd_count_confident"):
        assert pd.isna(row[col]), col
    assert not list((out / "sub-phantom02" / "ses-03" / "anat").glob("*T1hypo*"))
    ends = read_tsv(out / "endpoints.tsv").set_index("period")
    assert (
        ends.loc["first_treatment", "bh_volume_mm3_start"] == visits.loc["ses-01", "bh_volume_mm3"]
    )


def test_qc_report_of_the_sample_subject_opens_clean_in_chromium(
    sample_run, chromium, page_watcher, keep_artifacts, tmp_path
):
    """The report `lesionq run` wrote for sub-phantom02 loads from disk with a clean console."""
    _, out = sample_run
    report = out / "sub-phantom02.html"
    assert report.is_file()
    with chromium() as browser:
        page = browser.new_page(viewport={"width": 1280, "height": 1000})
        messages, failed = page_watcher(page)
        page.goto(report.resolve().as_uri(), wait_until="load")
        broken = page.eval_on_selector_all(
            "img", "els => els.filter(e => !e.complete || e.naturalWidth === 0).map(e => e.src)"
        )
        n_images = page.locator("img").count()
        rows = page.eval_on_selector_all(
            "section.visit tr.lesion",
            "els => els.map(e => [e.closest('section').dataset.session,"
            " e.dataset.label, e.dataset.lesionId])",
        )
        shot = tmp_path / "sub-phantom02_report.png"
        page.screenshot(path=str(shot), full_page=True)
    keep_artifacts(shot)
    assert messages == [] and failed == [] and broken == []
    assert n_images >= 6  # T2, Gd+ and black-hole mosaics, change, registration, flicker
    for ses in ("01", "02", "03"):
        table = read_tsv(out / f"sub-phantom02/ses-{ses}/anat/sub-phantom02_ses-{ses}_lesions.tsv")
        want = {(ses, str(r.label), str(r.lesion_id)) for r in table.itertuples()}
        assert {tuple(r) for r in rows if r[0] == ses} == want, ses


def test_run_writes_the_overview_and_the_timeline_on_schedule_weeks(sample_run):
    """The run ends with OUT/index.html; the report's timeline puts visits at weeks 0, 4, 12."""
    import re

    _, out = sample_run
    index = (out / "index.html").read_text(encoding="utf-8")
    assert 'data-subject="phantom02"' in index and 'href="sub-phantom02.html"' in index
    assert "first_treatment" in index  # the protocol's periods shade the sparklines
    report = (out / "sub-phantom02.html").read_text(encoding="utf-8")
    assert 'class="lq-timeline"' in report
    weeks = re.findall(
        r'<circle class="point" data-series="t2_volume" data-session="(ses-\d+)" data-week="([\d.]+)"',
        report,
    )
    assert weeks == [("ses-01", "0"), ("ses-02", "4"), ("ses-03", "12")]
