"""Build-only tests of the visit workflow over its options."""

from __future__ import annotations

import itertools

import pytest

from lesionq.workflows.visit import VISIT_OUTPUTS, init_visit_wf

SECTIONS = dict(
    bias={},
    brain={},
    registration={},
    template={},
    segmentation={},
    lesions={"min_volume_mm3": 3.0},
    location={},
)


@pytest.mark.parametrize(
    ("contrasts", "use_atlas"),
    [
        (c, a)
        for n in range(4)
        for c in itertools.combinations(("t1", "t2", "t1ce"), n)
        for a in (True, False)
    ],
)
def test_graph_has_one_coreg_node_per_contrast(contrasts, use_atlas):
    wf = init_visit_wf(contrasts=contrasts, use_atlas=use_atlas, n_threads=2, **SECTIONS)
    names = set(wf.list_node_names())
    assert {"inputnode", "outputnode", "prep_flair", "segment_t2", "tabulate"} <= names
    assert {f"coreg_{c}" for c in contrasts} == {n for n in names if n.startswith("coreg_")}
    assert ("atlas" in names) == use_atlas
    assert set(VISIT_OUTPUTS) <= set(wf.get_node("outputnode").inputs.copyable_trait_names())
    seg = wf.get_node("segment_t2")
    assert seg.n_procs == 2
    # T1/T2 feed the segmentation only when present
    preds = {p.name for p in wf._graph.predecessors(seg)}
    assert ("coreg_t1" in preds) == ("t1" in contrasts)
    assert ("coreg_t2" in preds) == ("t2" in contrasts)
    assert "coreg_t1ce" not in preds


def test_bad_options_are_rejected():
    with pytest.raises(ValueError, match="unknown contrasts"):
        init_visit_wf(contrasts=("dwi",), **SECTIONS)
    with pytest.raises(ValueError, match="n_threads"):
        init_visit_wf(n_threads=0, **SECTIONS)


@pytest.mark.parametrize(
    "contrasts", [c for n in range(4) for c in itertools.combinations(("t1", "t2", "t1ce"), n)]
)
def test_black_hole_node_runs_only_with_a_t1(contrasts):
    """segment_bh: with [black_holes] and a pre-contrast T1; fed the T2 labels, the T1, the
    atlas priors and (with a post-contrast T1 and [gd]) the Gd+ mask."""
    wf = init_visit_wf(contrasts=contrasts, gd={}, black_holes={"hypo_fraction": 0.35}, **SECTIONS)
    names = set(wf.list_node_names())
    assert ("segment_bh" in names) == ("t1" in contrasts)
    if "segment_bh" not in names:
        return
    bh = wf.get_node("segment_bh")
    assert bh.inputs.black_holes == {"hypo_fraction": 0.35}
    assert bh.inputs.lesions == {"min_volume_mm3": 3.0}
    preds = {p.name for p in wf._graph.predecessors(bh)}
    assert {"coreg_t1", "tabulate", "prep_flair", "atlas"} <= preds
    assert ("segment_gd" in preds) == ("t1ce" in contrasts)
    succ = {s.name for s in wf._graph.successors(bh)}
    assert succ == {"outputnode"}


def test_no_black_hole_node_without_the_protocol_section():
    wf = init_visit_wf(contrasts=("t1", "t1ce"), gd={}, **SECTIONS)
    assert "segment_bh" not in set(wf.list_node_names())
    # the Gd+ node reports its confident count
    edges = wf._graph.get_edge_data(wf.get_node("segment_gd"), wf.get_node("outputnode"))
    assert ("gd_count_confident", "gd_count_confident") in edges["connect"]
