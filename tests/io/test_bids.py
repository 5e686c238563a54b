"""Tests of BIDS layout discovery."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import pytest

from lesionq.errors import InputError
from lesionq.io.bids import (
    CONTRASTS,
    ENTITY_ORDER,
    REQUIRED_CONTRASTS,
    BIDSLayoutError,
    VisitInputs,
    bids_name_problem,
    contrast_of,
    discover,
    layout_problems,
    normalise_participant_label,
    parse_acq_time,
    parse_bids_name,
    parse_entities,
)


def _touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")  # discovery opens no file: empty files suffice
    return path


def _anat(root: Path, sub: str, ses: str | None) -> Path:
    d = root / f"sub-{sub}"
    return (d / f"ses-{ses}" / "anat") if ses is not None else d / "anat"


def test_convention():
    assert dict(CONTRASTS) == {
        "flair": "FLAIR",
        "t1": "T1w",
        "t2": "T2w",
        "t1ce": "ce-gadolinium_T1w",
    }
    assert REQUIRED_CONTRASTS == ("flair",)


def test_discover_sessions_and_contrasts(bids_root):
    a = _anat(bids_root, "cs07", "01")
    flair = _touch(a / "sub-cs07_ses-01_FLAIR.nii.gz")
    t1 = _touch(a / "sub-cs07_ses-01_T1w.nii")
    t1ce = _touch(a / "sub-cs07_ses-01_ce-gadolinium_T1w.nii.gz")
    _touch(a / "sub-cs07_ses-01_FLAIR.json")  # sidecars are not 'extra'
    (visit,) = discover(bids_root)
    assert visit == VisitInputs(
        subject="cs07", session="01", anat_dir=a, flair=flair, t1=t1, t1ce=t1ce
    )
    assert visit.visit_id == "sub-cs07_ses-01"
    assert visit.images() == {"flair": flair, "t1": t1, "t1ce": t1ce}
    assert visit.path("t2") is None
    with pytest.raises(KeyError):
        visit.path("pd")
    with pytest.raises(dataclasses.FrozenInstanceError):
        visit.flair = t1  # type: ignore[misc]


def test_sort_order_is_deterministic_and_natural(bids_root):
    for sub in ("b", "a10", "a2"):
        for ses in ("10", "2", "1"):
            _touch(_anat(bids_root, sub, ses) / f"sub-{sub}_ses-{ses}_FLAIR.nii.gz")
    got = [(v.subject, v.session) for v in discover(bids_root)]
    assert got == [(s, v) for s in ("a2", "a10", "b") for v in ("1", "2", "10")]


def test_session_less_subject_is_one_visit(bids_root):
    flair = _touch(_anat(bids_root, "x1", None) / "sub-x1_FLAIR.nii.gz")
    (visit,) = discover(bids_root)
    assert visit.session is None and visit.flair == flair
    assert visit.visit_id == "sub-x1"
    assert visit.expected_path("t2").name == "sub-x1_T2w.nii.gz"


def test_session_without_anat_folder_is_still_a_visit(bids_root):
    (bids_root / "sub-01" / "ses-01").mkdir(parents=True)
    (visit,) = discover(bids_root)
    assert visit.session == "01" and visit.images() == {}
    assert not visit.anat_dir.exists()


def test_participant_labels_with_or_without_prefix(bids_root):
    for sub in ("01", "02", "03"):
        _touch(_anat(bids_root, sub, "01") / f"sub-{sub}_ses-01_FLAIR.nii.gz")
    assert [v.subject for v in discover(bids_root, ["sub-03", "01", "03"])] == ["01", "03"]
    assert [v.subject for v in discover(bids_root, "sub-02")] == ["02"]


def test_absent_participant_is_an_error(bids_root):
    _touch(_anat(bids_root, "01", "01") / "sub-01_ses-01_FLAIR.nii.gz")
    with pytest.raises(BIDSLayoutError, match=r"'07'.*available: \['01'\]") as info:
        discover(bids_root, ["07"])
    assert info.value.code == "participant-missing"
    assert isinstance(info.value, InputError)


def test_invalid_participant_label():
    with pytest.raises(BIDSLayoutError, match="letters and digits") as info:
        normalise_participant_label("sub-01_ses-01")
    assert info.value.code == "participant-label-invalid"


def test_no_subjects(bids_root):
    with pytest.raises(BIDSLayoutError, match="no sub-<label> folders") as info:
        discover(bids_root)
    assert info.value.code == "no-subjects"


def test_missing_bids_dir(tmp_path):
    with pytest.raises(BIDSLayoutError) as info:
        discover(tmp_path / "nowhere")
    assert info.value.code == "bids-dir-missing"


def test_missing_dataset_description_is_logged_not_raised(bids_root, caplog):
    _touch(_anat(bids_root, "01", "01") / "sub-01_ses-01_FLAIR.nii.gz")
    (bids_root / "dataset_description.json").unlink()
    with caplog.at_level(logging.WARNING, logger="lesionq.io.bids"):
        assert len(discover(bids_root)) == 1
    assert "dataset_description.json" in caplog.text
    _, problems = layout_problems(bids_root)
    assert [(p.level, p.code) for p in problems] == [("error", "no-dataset-description")]


def test_invalid_dataset_description(bids_root):
    (bids_root / "dataset_description.json").write_text("{not json", encoding="utf-8")
    _touch(_anat(bids_root, "01", "01") / "sub-01_ses-01_FLAIR.nii.gz")
    _, problems = layout_problems(bids_root)
    assert [p.code for p in problems] == ["dataset-description-invalid"]


def test_mixed_session_layout(bids_root):
    _touch(_anat(bids_root, "01", "01") / "sub-01_ses-01_FLAIR.nii.gz")
    _touch(_anat(bids_root, "01", None) / "sub-01_FLAIR.nii.gz")
    with pytest.raises(BIDSLayoutError) as info:
        discover(bids_root)
    assert info.value.code == "mixed-session-layout"


def test_sessions_tsv_acq_time(bids_root):
    for ses in ("01", "02", "03"):
        _touch(_anat(bids_root, "01", ses) / f"sub-01_ses-{ses}_FLAIR.nii.gz")
    tsv = bids_root / "sub-01" / "sub-01_sessions.tsv"
    tsv.write_text(
        "session_id\tacq_time\tage\nses-02\t2020-01-02T08:00:00\t40\nses-01\tn/a\t39\n",
        encoding="utf-8",
    )
    v1, v2, v3 = discover(bids_root)
    assert (v1.acq_time, v2.acq_time, v3.acq_time) == (None, "2020-01-02T08:00:00", None)
    assert v2.sessions_tsv == tsv and v2.acq_datetime is not None
    assert v2.acq_datetime.month == 1 and v2.acq_datetime.hour == 8


def test_sessions_tsv_without_session_id_column(bids_root, caplog):
    _touch(_anat(bids_root, "01", "01") / "sub-01_ses-01_FLAIR.nii.gz")
    tsv = bids_root / "sub-01" / "sub-01_sessions.tsv"
    tsv.write_text("session\tacq_time\nses-01\t2020-01-02T08:00:00\n", encoding="utf-8")
    with caplog.at_level(logging.WARNING, logger="lesionq.io.bids"):
        (visit,) = discover(bids_root)
    assert visit.acq_time is None
    assert "session_id" in caplog.text
    _, problems = layout_problems(bids_root)
    assert [(p.level, p.code, p.path) for p in problems] == [
        ("warning", "sessions-tsv-invalid", tsv)
    ]


def test_parse_acq_time_error_names_source(tmp_path):
    with pytest.raises(InputError, match=r"sessions\.tsv.*'March 3rd'"):
        parse_acq_time("March 3rd", source=tmp_path / "sub-01_sessions.tsv")


def test_duplicates_and_extra(bids_root):
    a = _anat(bids_root, "01", "01")
    f1 = _touch(a / "sub-01_ses-01_FLAIR.nii.gz")
    f2 = _touch(a / "sub-01_ses-01_FLAIR.nii")
    t2 = _touch(a / "sub-01_ses-01_T2w.nii.gz")
    t2star = _touch(a / "sub-01_ses-01_T2starw.nii.gz")  # valid BIDS, not a contrast used
    note = _touch(a / "notes.txt")
    _touch(a / ".DS_Store")
    (visit,) = discover(bids_root)
    assert visit.flair is None and visit.t2 == t2
    assert visit.duplicates == (f2, f1)
    assert visit.extra == (note, t2star)
    assert visit.other_runs == ()


def test_runs_of_one_contrast_give_the_highest_run(bids_root):
    a = _anat(bids_root, "01", "01")
    runs = [_touch(a / f"sub-01_ses-01_acq-3D_run-{i}_FLAIR.nii.gz") for i in (1, 2, 10)]
    t1 = [_touch(a / f"sub-01_ses-01_run-{i}_T1w.nii.gz") for i in (1, 2)]
    (visit,) = discover(bids_root)
    assert visit.flair == runs[2]  # run 10, not the last in text order
    assert visit.t1 == t1[1]
    assert visit.other_runs == tuple(sorted([*runs[:2], t1[0]]))
    assert visit.duplicates == () and visit.extra == ()


@pytest.mark.parametrize(
    "names",
    [
        ["sub-01_ses-01_T2w.nii.gz", "sub-01_ses-01_run-2_T2w.nii.gz"],  # run on one only
        ["sub-01_ses-01_run-1_T2w.nii.gz", "sub-01_ses-01_run-01_T2w.nii.gz"],  # same run
        ["sub-01_ses-01_acq-2D_run-1_T2w.nii.gz", "sub-01_ses-01_acq-3D_run-2_T2w.nii.gz"],
        ["sub-01_ses-01_run-1_T2w.nii", "sub-01_ses-01_run-2_T2w.nii.gz"],
    ],
)
def test_files_that_are_not_runs_of_one_acquisition_are_duplicates(bids_root, names):
    a = _anat(bids_root, "01", "01")
    paths = [_touch(a / n) for n in names]
    (visit,) = discover(bids_root)
    assert visit.t2 is None and set(visit.duplicates) == set(paths) and not visit.other_runs


#: Names of the forms the BIDS specification's examples use (anat, func, fmap; 1.9):
#: entities in order, suffix, extension.
SPEC_NAMES = {
    "sub-01_ses-02_acq-highres_ce-gadolinium_rec-norm_run-1_T1w.nii.gz": (
        {"sub": "01", "ses": "02", "acq": "highres", "ce": "gadolinium", "rec": "norm", "run": "1"},
        "T1w",
        ".nii.gz",
    ),
    "sub-01_T1w.nii": ({"sub": "01"}, "T1w", ".nii"),
    "sub-control01_ses-01_task-rest_acq-fullbrain_run-1_bold.nii.gz": (
        {"sub": "control01", "ses": "01", "task": "rest", "acq": "fullbrain", "run": "1"},
        "bold",
        ".nii.gz",
    ),
    "sub-01_ses-01_dir-AP_run-2_epi.nii.gz": (
        {"sub": "01", "ses": "01", "dir": "AP", "run": "2"},
        "epi",
        ".nii.gz",
    ),
    "sub-01_inv-1_part-mag_MP2RAGE.nii.gz": (
        {"sub": "01", "inv": "1", "part": "mag"},
        "MP2RAGE",
        ".nii.gz",
    ),
    "sub-01_ses-01_task-rest_echo-2_part-phase_bold.nii": (
        {"sub": "01", "ses": "01", "task": "rest", "echo": "2", "part": "phase"},
        "bold",
        ".nii",
    ),
    "sub-01_acq-MPRAGE_rec-norm_run-01_T1w.nii.gz": (
        {"sub": "01", "acq": "MPRAGE", "rec": "norm", "run": "01"},
        "T1w",
        ".nii.gz",
    ),
}


@pytest.mark.parametrize("name", sorted(SPEC_NAMES))
def test_parse_bids_name_on_examples_of_the_specification(name):
    entities, suffix, ext = SPEC_NAMES[name]
    parsed = parse_bids_name(Path("/data/sub-01/anat") / name)
    assert parsed is not None, bids_name_problem(name)
    assert list(parsed.entities.items()) == list(entities.items())
    assert (parsed.suffix, parsed.extension) == (suffix, ext)
    assert bids_name_problem(name) is None


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("sub-01_run-1_acq-highres_T1w.nii.gz", "acq- comes after run-"),
        ("sub-01_ses-01_ce-gadolinium_acq-x_T1w.nii.gz", "acq- comes after ce-"),
        ("ses-01_sub-01_T1w.nii.gz", "comes after"),
        ("acq-x_T1w.nii.gz", "first entity is not sub-"),
        ("sub-01_run-1_run-2_T1w.nii.gz", "appears twice"),
        ("sub-01_foo-bar_T1w.nii.gz", "unknown entity 'foo'"),
        ("sub-01_run-a_T1w.nii.gz", "index"),
        ("sub-01_acq-3_D_T1w.nii.gz", "not an entity"),
        ("sub-0_1_T1w.nii.gz", "not an entity"),
        ("sub-01_acq-3-D_T1w.nii.gz", "label"),
        ("sub-01_T1w.mgz", "extension"),
        ("sub-01_T1w.nii.gz.bak", "extension"),
        ("T1w.nii.gz", "no entities"),
        ("sub-01_T1-w.nii.gz", "suffix"),
    ],
)
def test_parse_bids_name_refuses_non_bids_names_and_says_why(name, why):
    assert parse_bids_name(name) is None
    assert why in bids_name_problem(name)


def test_entity_order_is_the_specifications():
    core = ["sub", "ses", "task", "acq", "ce", "rec", "dir", "run", "echo", "part"]
    assert [k for k in ENTITY_ORDER if k in core] == core
    assert ENTITY_ORDER[0] == "sub" and ENTITY_ORDER[-1] == "desc"


@pytest.mark.parametrize(
    ("name", "contrast"),
    [
        ("sub-01_ses-01_FLAIR.nii.gz", "flair"),
        ("sub-01_ses-01_acq-3D_rec-norm_run-2_FLAIR.nii", "flair"),
        ("sub-01_T1w.nii.gz", "t1"),
        ("sub-01_ses-01_ce-gadolinium_T1w.nii.gz", "t1ce"),
        ("sub-01_ses-01_acq-highres_ce-Gd_rec-norm_run-1_T1w.nii.gz", "t1ce"),
        ("sub-01_T2w.nii.gz", "t2"),
        ("sub-01_ce-gadolinium_FLAIR.nii.gz", None),  # a post-contrast FLAIR is not the FLAIR
        ("sub-01_echo-2_T2w.nii.gz", None),
        ("sub-01_part-phase_T1w.nii.gz", None),
        ("sub-01_task-rest_T1w.nii.gz", None),
        ("sub-01_T2starw.nii.gz", None),
        ("sub-01_flair.nii.gz", None),
        ("sub-01_run-1_acq-3D_FLAIR.nii.gz", None),
    ],
)
def test_contrast_of(name, contrast):
    assert contrast_of(name) == contrast


def test_entity_mismatch_is_kept_for_the_checks(bids_root):
    a = _anat(bids_root, "01", "02")
    wrong = _touch(a / "sub-01_ses-01_FLAIR.nii.gz")
    (visit,) = discover(bids_root)
    assert visit.flair == wrong  # assigned by contrast; checks report entity-mismatch


def test_parse_entities():
    assert parse_entities("sub-01_FLAIR.nii") == {"sub": "01", "rest": "FLAIR", "ext": ".nii"}
    assert parse_entities("sub-01_ses-1_ce-gadolinium_T1w.nii.gz")["rest"] == "ce-gadolinium_T1w"
    assert parse_entities("FLAIR.nii.gz") is None
    assert parse_entities("sub-01_ses-01_FLAIR.mgz") is None


@pytest.mark.slow
def test_real_dataset_layout(shared_data):
    visits = discover(shared_data)
    assert [(v.subject, v.session) for v in visits] == [
        ("cs07", "01"),
        ("lo01", "01"),
        ("lo01", "02"),
        ("lo12", "01"),
        ("lo12", "02"),
    ]
    cs07, *longitudinal = visits
    assert set(cs07.images()) == {"flair", "t1", "t2", "t1ce"}
    assert all(set(v.images()) == {"flair", "t1", "t2"} for v in longitudinal)
    assert all(not v.extra and not v.duplicates for v in visits)
    _, problems = layout_problems(shared_data)
    assert problems == []
