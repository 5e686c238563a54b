"""Build-only tests of the visit workflow over its options, and of its output nodes."""

from __future__ import annotations

import itertools

import pandas as pd
import pytest
from nipype.interfaces.base import isdefined
from nipype.interfaces.utility import IdentityInterface
from nipype.pipeline import engine as pe

from lesionq.interfaces.outputs import CollectOutputs, collected_outputs, merge_lesion_tables
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
    assert succ == {"outputnode", "merge_tables"}


@pytest.mark.parametrize(
    ("contrasts", "merged"),
    [((), False), (("t2",), False), (("t1",), True), (("t1ce",), True), (("t1", "t1ce"), True)],
)
def test_the_lesion_table_is_merged_in_the_graph(contrasts, merged):
    """outputnode.lesions is the visit's one table: the T2 table alone, or merge_tables fed
    by the T2, Gd+ and black-hole tables of the nodes that exist."""
    wf = init_visit_wf(contrasts=contrasts, gd={}, black_holes={}, **SECTIONS)
    out = wf.get_node("outputnode")
    feeders = {
        p.name: data["connect"]
        for p, _, data in wf._graph.in_edges(out, data=True)
        if ("out_file", "lesions") in data["connect"] or ("table", "lesions") in data["connect"]
    }
    assert set(feeders) == ({"merge_tables"} if merged else {"tabulate"})
    if merged:
        merge = wf.get_node("merge_tables")
        into = {dst for _, _, d in wf._graph.in_edges(merge, data=True) for _, dst in d["connect"]}
        expected = {"t2_table"}
        expected |= {"gd_table"} if "t1ce" in contrasts else set()
        expected |= {"bh_table"} if "t1" in contrasts else set()
        assert into == expected


def test_no_black_hole_node_without_the_protocol_section():
    wf = init_visit_wf(contrasts=("t1", "t1ce"), gd={}, **SECTIONS)
    assert "segment_bh" not in set(wf.list_node_names())
    # the Gd+ node reports its confident count
    edges = wf._graph.get_edge_data(wf.get_node("segment_gd"), wf.get_node("outputnode"))
    assert ("gd_count_confident", "gd_count_confident") in edges["connect"]


def test_merge_lesion_tables_keeps_t2_first_and_unites_columns(tmp_path):
    t2 = pd.DataFrame({"lesion_id": [1, 2], "label": ["T2", "T2"], "volume_mm3": [5.0, 9.0]})
    gd = pd.DataFrame({"lesion_id": [1], "label": ["Gd"], "confidence": [0.8]})
    bh = pd.DataFrame(columns=["lesion_id", "label", "t1_contrast_mean"])  # no black holes
    paths = []
    for name, df in (("t2", t2), ("gd", gd), ("bh", bh)):
        paths.append(tmp_path / f"{name}.tsv")
        df.to_csv(paths[-1], sep="\t", index=False)
    out = merge_lesion_tables(paths[0], paths[1:], tmp_path / "lesions.tsv")
    merged = pd.read_csv(out, sep="\t")
    assert list(merged["label"]) == ["T2", "T2", "Gd"]
    assert list(merged.columns) == [
        "lesion_id", "label", "volume_mm3", "confidence", "t1_contrast_mean",
    ]  # fmt: skip
    assert merged["confidence"].isna().tolist() == [True, True, False]


def test_collect_outputs_is_run_and_read_back(tmp_path):
    """The outputnode is executed (an IdentityInterface would be dropped from the graph)."""
    wf = pe.Workflow(name="w", base_dir=str(tmp_path))
    src = pe.Node(IdentityInterface(fields=["a"]), name="src")
    src.inputs.a = 7
    out = pe.Node(CollectOutputs(fields=["a", "b"]), name="outputnode")
    wf.connect(src, "a", out, "a")
    graph = wf.run(plugin="Linear")
    values = collected_outputs(graph)
    assert values["a"] == 7
    assert not isdefined(values["b"])
    with pytest.raises(KeyError, match="nope"):
        collected_outputs(graph, "nope")
