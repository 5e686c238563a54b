"""The longitudinal workflow: graph over its options, and its plumbing interfaces.

Build-only tests check the nodes and connections for 1 to 4 sessions; the
interface tests run the selection and tracking nodes on tiny images.
"""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
from nipype.interfaces.base import isdefined

from lesionq.interfaces.longitudinal import (
    REGISTRATION_FAILED,
    STATUS_OK,
    CombinedUniqueActive,
    RegisterVisit,
    SelectRegistered,
    TrackLesions,
)
from lesionq.io.nifti import save_image
from lesionq.io.sitk_bridge import write_transform
from lesionq.workflows.longitudinal import (
    FOLLOWUP_OUTPUTS,
    VISIT_INPUTS,
    init_longitudinal_wf,
    longitudinal_input_fields,
    longitudinal_output_fields,
)

SECTIONS = dict(registration={"mode": "rigid"}, change={}, lesions={"min_volume_mm3": 3.0})


def _preds(wf, name):
    return {p.name for p in wf._graph.predecessors(wf.get_node(name))}


def _edges(wf, src, dst):
    data = wf._graph.get_edge_data(wf.get_node(src), wf.get_node(dst))
    return set(data["connect"]) if data else set()


@pytest.mark.parametrize(
    "sessions", [["01"], ["01", "02"], ["01", "02", "03"], ["b", "a10", "a2", "c"]]
)
def test_graph_has_the_nodes_of_each_follow_up(sessions):
    wf = init_longitudinal_wf(sessions=sessions, n_threads=2, **SECTIONS)
    names = set(wf.list_node_names())
    ref, follow = sessions[0], sessions[1:]
    expected = {"inputnode", "outputnode", "track", "merge_labels"}
    expected |= {f"register_ses{s}" for s in follow}
    expected |= {f"compare_ses{s}_previous" for s in follow}
    expected |= {f"cua_ses{s}" for s in follow}
    expected |= {f"compare_ses{s}_baseline" for s in follow[1:]}
    expected |= {f"last_registered_ses{s}" for s in follow[:-1]}
    if follow:
        expected |= {"merge_status", "merge_xfms"}
    assert names == expected
    assert f"register_ses{ref}" not in names  # the reference is never registered
    inputs = set(wf.get_node("inputnode").inputs.copyable_trait_names())
    assert set(longitudinal_input_fields(sessions)) <= inputs
    assert len(longitudinal_input_fields(sessions)) == len(VISIT_INPUTS) * len(sessions)
    outputs = set(wf.get_node("outputnode").inputs.copyable_trait_names())
    assert set(longitudinal_output_fields(sessions)) <= outputs
    assert len(longitudinal_output_fields(sessions)) == len(FOLLOWUP_OUTPUTS) * len(follow) + 1
    for s in follow:
        assert wf.get_node(f"register_ses{s}").n_procs == 2
        assert wf.get_node(f"compare_ses{s}_previous").n_procs == 2
        # CUA: the visit's Gd+ labels and its change labels vs the *previous* visit
        cua = wf.get_node(f"cua_ses{s}")
        assert _edges(wf, f"compare_ses{s}_previous", f"cua_ses{s}") == {
            ("change_labels", "change_labels")
        }
        assert _edges(wf, "inputnode", f"cua_ses{s}") == {(f"gd_labels_{s}", "gd_labels")}
        assert cua.name == f"cua_ses{s}"


def test_follow_ups_compare_with_the_last_registered_and_the_reference():
    wf = init_longitudinal_wf(sessions=["01", "02", "03", "04"], **SECTIONS)
    # the first follow-up compares with the reference directly
    assert ("flair_01", "earlier_flair") in _edges(wf, "inputnode", "compare_ses02_previous")
    assert wf.get_node("compare_ses02_previous").inputs.earlier_session == "01"
    # later ones with whatever the selection chain passes on
    assert _preds(wf, "compare_ses03_previous") >= {"last_registered_ses02", "register_ses03"}
    assert ("session", "earlier_session") in _edges(
        wf, "last_registered_ses02", "compare_ses03_previous"
    )
    assert ("xfm", "earlier_xfm") in _edges(wf, "last_registered_ses03", "compare_ses04_previous")
    # the chain: ses03's fallback is the selection made at ses02
    assert ("session", "fallback_session") in _edges(
        wf, "last_registered_ses02", "last_registered_ses03"
    )
    assert ("status", "status") in _edges(wf, "register_ses03", "last_registered_ses03")
    # the baseline comparisons take the reference from the inputnode
    assert ("flair_01", "earlier_flair") in _edges(wf, "inputnode", "compare_ses04_baseline")
    assert ("status", "later_status") in _edges(wf, "register_ses04", "compare_ses04_baseline")
    # every follow-up is registered to the reference
    for s in ("02", "03", "04"):
        assert ("flair_01", "reference_flair") in _edges(wf, "inputnode", f"register_ses{s}")
        assert (f"flair_{s}", "flair") in _edges(wf, "inputnode", f"register_ses{s}")
    # the later visit's atlas transform (white-matter prior) reaches its comparisons
    assert ("xfm_template_03", "later_xfm_template") in _edges(
        wf, "inputnode", "compare_ses03_baseline"
    )
    assert ("xfm_template_02", "later_xfm_template") in _edges(
        wf, "inputnode", "compare_ses02_previous"
    )
    # the first follow-up's comparison also feeds the baseline outputs
    assert ("counts", "counts_baseline_02") in _edges(wf, "compare_ses02_previous", "outputnode")
    assert ("counts", "counts_baseline_03") in _edges(wf, "compare_ses03_baseline", "outputnode")


def test_bad_options_are_rejected():
    with pytest.raises(ValueError, match="at least one"):
        init_longitudinal_wf(sessions=[], **SECTIONS)
    with pytest.raises(ValueError, match="letters and digits"):
        init_longitudinal_wf(sessions=["01", "0-2"], **SECTIONS)
    with pytest.raises(ValueError, match="duplicate"):
        init_longitudinal_wf(sessions=["01", "01"], **SECTIONS)
    with pytest.raises(ValueError, match="n_threads"):
        init_longitudinal_wf(sessions=["01"], n_threads=0, **SECTIONS)


# ------------------------------------------------------------------------ interfaces


@pytest.fixture
def files(tmp_path):
    """Tiny images: ``files(name, array)`` saves one on a 1 mm grid."""

    def make(name, array, dtype=np.float32):
        return str(save_image(np.asarray(array), np.eye(4), tmp_path / name, dtype=dtype))

    return make


def test_select_registered_passes_on_itself_or_the_fallback(files, tmp_path):
    img = np.ones((4, 4, 4), np.float32)
    mine = {k: files(f"{k}.nii.gz", img) for k in ("flair", "brain_mask", "t2_mask", "probseg")}
    theirs = {k: files(f"fb_{k}.nii.gz", img) for k in mine}
    import SimpleITK as sitk

    xfm = str(write_transform(sitk.Euler3DTransform(), tmp_path / "x.txt"))
    common = dict(session="03", fallback_session="01", xfm=xfm, **mine)
    common.update({f"fallback_{k}": v for k, v in theirs.items()})
    ok = SelectRegistered(status=STATUS_OK, **common).run(cwd=str(tmp_path)).outputs
    assert ok.session == "03" and ok.flair == mine["flair"] and ok.xfm == xfm
    bad = SelectRegistered(status=f"{REGISTRATION_FAILED}: x", **common)
    out = bad.run(cwd=str(tmp_path)).outputs
    assert out.session == "01" and out.flair == theirs["flair"]
    from nipype.interfaces.base import isdefined

    assert not isdefined(out.xfm)  # the reference: identity


def test_register_visit_reports_a_failed_registration(files, tmp_path, monkeypatch):
    import lesionq.steps.longitudinal as sl
    from lesionq.errors import RegistrationError

    def fail(*args, **kwargs):
        raise RegistrationError("rotation 40 deg above 30 deg")

    monkeypatch.setattr(sl, "register_visit", fail)
    img = np.ones((4, 4, 4), np.float32)
    f = {k: files(f"{k}.nii.gz", img) for k in ("flair", "brain_mask", "t2_mask")}
    node = RegisterVisit(
        session="02",
        reference_session="01",
        **f,
        **{f"reference_{k}": v for k, v in f.items()},
    )
    out = node.run(cwd=str(tmp_path)).outputs
    assert out.status == f"{REGISTRATION_FAILED}: rotation 40 deg above 30 deg"
    from nipype.interfaces.base import isdefined

    assert not isdefined(out.xfm) and not isdefined(out.flair_in_reference)

    def crash(*args, **kwargs):
        raise ValueError("not a registration problem")

    monkeypatch.setattr(sl, "register_visit", crash)
    with pytest.raises(ValueError, match="not a registration problem"):
        node.run(cwd=str(tmp_path))


def test_track_lesions_skips_unregistered_visits(files, tmp_path):
    import SimpleITK as sitk

    a = np.zeros((12, 12, 12), np.int32)
    a[2:5, 2:5, 2:5] = 1
    a[7:10, 7:10, 7:10] = 2
    b = np.zeros_like(a)
    b[7:10, 7:10, 7:10] = 1  # lesion 2 of the first visit, now labelled 1
    c = np.zeros_like(a)
    c[2:5, 2:5, 2:5] = 1
    labels = [files(f"l{i}.nii.gz", x, np.int32) for i, x in enumerate((a, b, c))]
    xfm = str(write_transform(sitk.Euler3DTransform(), tmp_path / "id.txt"))
    node = TrackLesions(
        sessions=["01", "02", "03"],
        labels=labels,
        statuses=[f"{REGISTRATION_FAILED}: x", STATUS_OK],
        transforms=[xfm],
        reference=labels[0],
    )
    out = node.run(cwd=str(tmp_path)).outputs
    tracks = json.loads(open(out.tracks).read())
    assert set(tracks) == {"01", "03"}
    assert tracks["01"] == {"1": 1, "2": 2}
    assert tracks["03"] == {"1": 1}
    with pytest.raises(ValueError, match="transforms"):
        TrackLesions(
            sessions=["01", "02"],
            labels=labels[:2],
            statuses=[STATUS_OK],
            transforms=[],
            reference=labels[0],
        ).run(cwd=str(tmp_path))


def test_cua_node_counts_each_physical_lesion_once_and_is_na_without_inputs(tmp_path):
    gd = np.zeros((12, 12, 12), np.int32)
    ne = np.zeros_like(gd)
    gd[2:4, 2:4, 2:4] = 1  # enhancing and new: one lesion
    ne[3:5, 3:5, 3:5] = 1
    gd[8:10, 8:10, 8:10] = 2  # enhancing only
    ne[2:4, 8:10, 8:10] = 2  # new only
    paths = {}
    for name, arr in (("gd", gd), ("ne", ne)):
        paths[name] = str(tmp_path / f"{name}.nii.gz")
        nib.save(nib.Nifti1Image(arr, np.eye(4)), paths[name])
    res = CombinedUniqueActive(gd_labels=paths["gd"], change_labels=paths["ne"]).run(
        cwd=str(tmp_path)
    )
    assert res.outputs.cua_count == 3
    alone = CombinedUniqueActive(change_labels=paths["ne"]).run(cwd=str(tmp_path))
    assert not isdefined(alone.outputs.cua_count)  # no Gd+ result: n/a, never 0
