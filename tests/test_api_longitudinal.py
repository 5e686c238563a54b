"""``lesionq.compare_visits``: in-memory visits, published visit folders, bad inputs."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import lesionq
from lesionq.config import load_protocol
from lesionq.errors import MissingInputError
from lesionq.io.derivatives import provenance, publish_visit
from lesionq.io.nifti import save_image
from lesionq.steps.longitudinal import CHANGE_TABLE_COLUMNS, Compared, VisitImages
from lesionq.testing import make_subject
from lesionq.types import Volume


@pytest.fixture(scope="module")
def phantom():
    return make_subject(5, label="p", n_visits=2)


def _visit(v) -> VisitImages:
    def vol(a, kind):
        return Volume(np.asarray(a, np.float32), v.affine, kind)

    return VisitImages(
        vol(v.images["FLAIR"], "FLAIR"),
        vol(v.brain_mask, "mask"),
        vol(v.lesion_mask, "mask"),
        session=v.session,
    )


def _publish(out, v, tmp):
    """Publish a phantom visit's FLAIR and truth masks like `lesionq run` would."""
    settings = load_protocol("mesems_testing")
    files = {
        "flair_preproc": save_image(
            v.images["FLAIR"], v.affine, tmp / f"f{v.session}.nii.gz", dtype=np.float32
        ),
        "brain_mask": save_image(
            v.brain_mask, v.affine, tmp / f"b{v.session}.nii.gz", dtype=np.uint8
        ),
        "t2_mask": save_image(
            v.lesion_mask, v.affine, tmp / f"m{v.session}.nii.gz", dtype=np.uint8
        ),
    }
    publish_visit(out, "p", v.session, files, prov=provenance(settings, {}))
    return out / "sub-p" / f"ses-{v.session}"


@pytest.fixture(scope="module")
def in_memory(phantom):
    base, follow = (_visit(v) for v in phantom.visits)
    return lesionq.compare_visits(base, follow, protocol="mesems_testing")


def test_compare_visits_is_exported_lazily():
    import lesionq.api

    assert "compare_visits" in lesionq.__all__
    assert lesionq.compare_visits is lesionq.api.compare_visits


def test_in_memory_visits_give_the_change_on_the_follow_up_grid(phantom, in_memory):
    res = in_memory
    follow = phantom.visits[1]
    assert isinstance(res, Compared)
    assert res.new_enlarging.shape == follow.lesion_ids.shape
    np.testing.assert_allclose(res.new_enlarging.affine, follow.affine)
    assert list(res.table.columns) == list(CHANGE_TABLE_COLUMNS)
    assert len(res.table) == res.counts["new_t2_count"] + res.counts["enlarging_t2_count"]
    # every planted new lesion is in the change mask
    planted = [les.lesion_id for les in phantom.lesions if les.status[1] == "new"]
    assert planted
    for lid in planted:
        assert res.new_enlarging.array[follow.lesion_ids == lid].any(), lid


def test_published_folders_give_the_same_result(phantom, in_memory, tmp_path):
    out = tmp_path / "out"
    base_dir = _publish(out, phantom.visits[0], tmp_path)
    follow_dir = _publish(out, phantom.visits[1], tmp_path)
    res = lesionq.compare_visits(base_dir, follow_dir / "anat", protocol="mesems_testing")
    np.testing.assert_array_equal(res.change_labels.array, in_memory.change_labels.array)
    # the files store the affine in float32: registration (and so the evidence)
    # differ in the last digits; the decisions do not
    exact = [c for c in CHANGE_TABLE_COLUMNS if c != "evidence_mean"]
    pd.testing.assert_frame_equal(res.table[exact], in_memory.table[exact])
    np.testing.assert_allclose(
        res.table["evidence_mean"], in_memory.table["evidence_mean"], atol=0.02
    )
    assert res.counts == in_memory.counts


def test_overrides_reach_the_steps(phantom):
    base, follow = (_visit(v) for v in phantom.visits)
    with pytest.raises(lesionq.errors.ConfigError, match="no such setting"):
        lesionq.compare_visits(
            base, follow, protocol="mesems_testing", overrides={"change.no_such_key": 1}
        )


def test_bad_inputs_are_named(phantom, tmp_path):
    base = _visit(phantom.visits[0])
    with pytest.raises(TypeError, match="followup must be VisitImages"):
        lesionq.compare_visits(base, 42, protocol="mesems_testing")
    with pytest.raises(MissingInputError, match="not a lesionq visit output folder"):
        lesionq.compare_visits(base, tmp_path, protocol="mesems_testing")
    empty = tmp_path / "sub-x" / "ses-01" / "anat"
    empty.mkdir(parents=True)
    with pytest.raises(MissingInputError, match="sub-x_ses-01_desc-preproc_FLAIR.nii.gz"):
        lesionq.compare_visits(base, empty.parent, protocol="mesems_testing")


@pytest.mark.parametrize(
    ("section", "change", "match"),
    [
        ("change", {"min_volume_mm3": 3.0}, r"\[change\] min_volume_mm3 is set by"),
        ("change", {"wm_prior": 0.5}, "set by the comparison step"),
        ("change", {"no_such_rule": 1}, "not a parameter of"),
        ("longitudinal_registration", {"mode": "bspline"}, "mode must be 'rigid' or 'affine'"),
        ("longitudinal_registration", {"scale_range": [0.8, 1.2]}, "not a parameter of"),
    ],
)
def test_longitudinal_protocol_sections_are_checked(phantom, section, change, match):
    from lesionq.config import Settings, _freeze

    base, follow = (_visit(v) for v in phantom.visits)
    settings = load_protocol("mesems_testing")
    data = settings.dump()
    data[section] = {**data.get(section, {}), **change}
    bad = Settings(settings.name, settings.source, _freeze(data))
    with pytest.raises(lesionq.errors.ConfigError, match=match):
        lesionq.compare_visits(base, follow, protocol=bad)


def test_affine_mode_takes_affine_parameters():
    from lesionq.config import Settings, _freeze
    from lesionq.steps import validate_settings

    settings = load_protocol("mesems_testing")
    data = settings.dump()
    data["longitudinal_registration"].update(mode="affine", scale_range=[0.8, 1.2])
    validate_settings(Settings(settings.name, settings.source, _freeze(data)))
