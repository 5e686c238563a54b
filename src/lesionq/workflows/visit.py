"""The per-visit nipype workflow: FLAIR (+ optional T1w, T2w, ce-T1w) -> T2 lesions.

Graph (nodes present only for the contrasts the visit has)::

    inputnode ─ prep_flair ─┬─ coreg_t1 ─┐
                            ├─ coreg_t2 ─┤
                            ├─ coreg_t1ce│─ segment_gd (with [gd]) ─────────┬─ outputnode
                            ├─ atlas ────┤ (template registration -> priors) │
                            └────────────┴─ segment_t2 ─ tabulate ─┬─ outputnode
                                                                   └─ segment_bh (with a T1w
                                                                      and [black_holes]) ─ outputnode

With a Gd+ or black-hole node, ``merge_tables`` joins the T2, Gd+ and black-hole tables
into the visit's one ``lesions`` table (T2 rows first); without, ``lesions`` is the T2
table. The ``outputnode`` is a :class:`~lesionq.interfaces.outputs.CollectOutputs`, a
node nipype runs, so the batch reads the workflow's results from it
(:func:`~lesionq.interfaces.outputs.collected_outputs`).

No numerics and no global configuration here: every parameter is an explicit
keyword of :func:`init_visit_wf`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from nipype.interfaces.utility import IdentityInterface
from nipype.pipeline import engine as pe

from ..interfaces.outputs import CollectOutputs, MergeLesionTables
from ..interfaces.visit import (
    AtlasPriors,
    CoregisterToFLAIR,
    PrepareFLAIR,
    SegmentBlackHoles,
    SegmentGd,
    SegmentT2,
    TabulateLesions,
)

__all__ = ["init_visit_wf", "VISIT_OUTPUTS", "COREG_CONTRASTS"]

#: Optional contrast key -> (BIDS-ish contrast name, output key prefix).
COREG_CONTRASTS: Mapping[str, str] = {"t1": "T1w", "t2": "T2w", "t1ce": "ce-gadolinium_T1w"}

#: Fields of the workflow's outputnode.
VISIT_OUTPUTS = (
    "flair_preproc",
    "brain_mask",
    "skull_stripped",
    "t1_coreg",
    "t2_coreg",
    "t1ce_coreg",
    "xfm_t1",
    "xfm_t2",
    "xfm_t1ce",
    "xfm_template",
    "t2_probseg",
    "t2_mask",
    "t2_labels",
    "lesions",
    "t2_lesions",
    "t2_count",
    "t2_volume_mm3",
    "brain_volume_mm3",
    "gd_mask",
    "gd_labels",
    "gd_lesions",
    "gd_count",
    "gd_count_confident",
    "gd_volume_mm3",
    "gd_inputs",
    "gd_post_shift_mm",
    "bh_mask",
    "bh_labels",
    "bh_lesions",
    "bh_count",
    "bh_volume_mm3",
    "bh_levels",
)


def init_visit_wf(
    *,
    contrasts: tuple[str, ...] = (),
    bias: Mapping[str, Any],
    brain: Mapping[str, Any],
    registration: Mapping[str, Any],
    template: Mapping[str, Any],
    segmentation: Mapping[str, Any],
    lesions: Mapping[str, Any],
    location: Mapping[str, Any],
    gd: Mapping[str, Any] | None = None,
    black_holes: Mapping[str, Any] | None = None,
    use_atlas: bool = True,
    atlas_dir: str | None = None,
    n_threads: int = 1,
    name: str = "visit_wf",
) -> pe.Workflow:
    """Build the visit workflow.

    Parameters
    ----------
    contrasts : tuple of str
        Optional contrasts present for this visit, among ``"t1"``, ``"t2"``,
        ``"t1ce"`` (FLAIR is always required). Each gets a co-registration node.
    bias, brain, registration, template, segmentation, lesions, location : mapping
        The protocol sections of the same names (see ``pipelines/*.toml``);
        ``lesions["min_volume_mm3"]`` is required (it also bounds the mask).
    gd : mapping, optional
        The protocol's ``[gd]`` section. With it and a ``"t1ce"`` contrast, a
        Gd+ segmentation node runs on the co-registered post-contrast T1 (and the
        pre-contrast T1 when ``"t1"`` is present).
    black_holes : mapping, optional
        The protocol's ``[black_holes]`` section. With it and a ``"t1"`` contrast, a
        black-hole node runs on the co-registered T1 and the T2 lesion labels
        (excluding the Gd+ mask when the Gd node runs).
    use_atlas : bool
        Register the atlas template and feed its priors and location map to
        segmentation and the lesion table. Without it, lesions get location
        ``n/a`` and segmentation runs without priors.
    atlas_dir : str, optional
        Atlas folder; default the bundled ``atlases/``.
    n_threads : int
        Threads handed to each heavy node (nodes run one at a time).
    name : str
        Workflow name.

    Returns
    -------
    nipype.pipeline.engine.Workflow
        inputnode fields: ``flair`` and the names in ``contrasts``;
        outputnode fields: :data:`VISIT_OUTPUTS`.
    """
    unknown = set(contrasts) - set(COREG_CONTRASTS)
    if unknown:
        raise ValueError(
            f"init_visit_wf: unknown contrasts {sorted(unknown)}; known: {sorted(COREG_CONTRASTS)}"
        )
    if n_threads < 1:
        raise ValueError(f"init_visit_wf: n_threads must be >= 1, got {n_threads}")
    wf = pe.Workflow(name=name)
    inputnode = pe.Node(IdentityInterface(fields=["flair", *contrasts]), name="inputnode")
    outputnode = pe.Node(CollectOutputs(fields=list(VISIT_OUTPUTS)), name="outputnode")

    prep = pe.Node(
        PrepareFLAIR(bias=dict(bias), brain=dict(brain), n_threads=n_threads),
        name="prep_flair",
        n_procs=n_threads,
        mem_gb=2.0,
    )
    wf.connect(
        [
            (inputnode, prep, [("flair", "flair")]),
            (
                prep,
                outputnode,
                [
                    ("flair_preproc", "flair_preproc"),
                    ("brain_mask", "brain_mask"),
                    ("skull_stripped", "skull_stripped"),
                ],
            ),
        ]
    )

    seg = pe.Node(
        SegmentT2(
            segmentation=dict(segmentation),
            min_volume_mm3=float(lesions["min_volume_mm3"]),
            location_rules=dict(location),
            n_threads=n_threads,
        ),
        name="segment_t2",
        n_procs=n_threads,
        mem_gb=2.0,
    )
    tab = pe.Node(
        TabulateLesions(lesions=dict(lesions), location_rules=dict(location), n_threads=n_threads),
        name="tabulate",
        n_procs=n_threads,
        mem_gb=1.0,
    )
    wf.connect(
        [
            (prep, seg, [("flair_preproc", "flair_preproc"), ("brain_mask", "brain_mask")]),
            (prep, tab, [("flair_preproc", "flair_preproc"), ("brain_mask", "brain_mask")]),
            (seg, tab, [("mask", "mask"), ("probseg", "probseg")]),
            (seg, outputnode, [("probseg", "t2_probseg"), ("mask", "t2_mask")]),
            (
                tab,
                outputnode,
                [
                    ("labels", "t2_labels"),
                    ("table", "t2_lesions"),
                    ("t2_count", "t2_count"),
                    ("t2_volume_mm3", "t2_volume_mm3"),
                    ("brain_volume_mm3", "brain_volume_mm3"),
                ],
            ),
        ]
    )

    coreg_nodes = {}
    for key in contrasts:
        node = pe.Node(
            CoregisterToFLAIR(
                contrast=COREG_CONTRASTS[key],
                bias=dict(bias),
                registration=dict(registration),
                n_threads=n_threads,
            ),
            name=f"coreg_{key}",
            n_procs=n_threads,
            mem_gb=1.0,
        )
        coreg_nodes[key] = node
        wf.connect(
            [
                (inputnode, node, [(key, "moving")]),
                (
                    prep,
                    node,
                    [
                        ("flair_preproc", "flair_preproc"),
                        ("brain_mask", "brain_mask"),
                        ("skull_stripped", "skull_stripped"),
                    ],
                ),
                (node, outputnode, [("out_file", f"{key}_coreg"), ("xfm", f"xfm_{key}")]),
            ]
        )
    if "t1" in coreg_nodes:
        wf.connect(coreg_nodes["t1"], "out_file", seg, "t1")
    if "t2" in coreg_nodes:
        wf.connect(coreg_nodes["t2"], "out_file", seg, "t2")

    gd_node = None
    if gd is not None and "t1ce" in coreg_nodes:
        gd_node = pe.Node(
            SegmentGd(
                gd=dict(gd),
                min_volume_mm3=float(lesions["min_volume_mm3"]),
                location_rules=dict(location),
                n_threads=n_threads,
            ),
            name="segment_gd",
            n_procs=n_threads,
            mem_gb=2.0,
        )
        wf.connect(
            [
                (coreg_nodes["t1ce"], gd_node, [("out_file", "t1ce")]),
                (prep, gd_node, [("flair_preproc", "flair_preproc"), ("brain_mask", "brain_mask")]),
                (
                    gd_node,
                    outputnode,
                    [
                        ("mask", "gd_mask"),
                        ("labels", "gd_labels"),
                        ("table", "gd_lesions"),
                        ("gd_count", "gd_count"),
                        ("gd_count_confident", "gd_count_confident"),
                        ("gd_volume_mm3", "gd_volume_mm3"),
                        ("gd_inputs", "gd_inputs"),
                        ("gd_post_shift_mm", "gd_post_shift_mm"),
                    ],
                ),
            ]
        )
        if "t1" in coreg_nodes:
            wf.connect(coreg_nodes["t1"], "out_file", gd_node, "t1")

    bh_node = None
    if black_holes is not None and "t1" in coreg_nodes:
        bh_node = pe.Node(
            SegmentBlackHoles(black_holes=dict(black_holes), lesions=dict(lesions)),
            name="segment_bh",
            mem_gb=1.5,
        )
        wf.connect(
            [
                (coreg_nodes["t1"], bh_node, [("out_file", "t1")]),
                (prep, bh_node, [("brain_mask", "brain_mask")]),
                (tab, bh_node, [("labels", "t2_labels"), ("table", "t2_table")]),
                (
                    bh_node,
                    outputnode,
                    [
                        ("mask", "bh_mask"),
                        ("labels", "bh_labels"),
                        ("table", "bh_lesions"),
                        ("bh_count", "bh_count"),
                        ("bh_volume_mm3", "bh_volume_mm3"),
                        ("levels", "bh_levels"),
                    ],
                ),
            ]
        )
        if gd_node is not None:
            wf.connect(gd_node, "mask", bh_node, "gd_mask")

    # the visit's one lesion table: T2 rows, then Gd+ rows, then black holes
    if gd_node is None and bh_node is None:
        wf.connect(tab, "table", outputnode, "lesions")
    else:
        merge = pe.Node(MergeLesionTables(), name="merge_tables", mem_gb=0.2)
        wf.connect(
            [(tab, merge, [("table", "t2_table")]), (merge, outputnode, [("out_file", "lesions")])]
        )
        if gd_node is not None:
            wf.connect(gd_node, "table", merge, "gd_table")
        if bh_node is not None:
            wf.connect(bh_node, "table", merge, "bh_table")

    if use_atlas:
        atlas = pe.Node(
            AtlasPriors(template=dict(template), n_threads=n_threads, atlas_dir=atlas_dir or ""),
            name="atlas",
            n_procs=n_threads,
            mem_gb=1.5,
        )
        wf.connect(
            [
                (prep, atlas, [("flair_preproc", "flair_preproc"), ("brain_mask", "brain_mask")]),
                (
                    atlas,
                    seg,
                    [("wm", "wm"), ("gm", "gm"), ("csf", "csf"), ("location", "location")],
                ),
                (atlas, tab, [("location", "location")]),
                (atlas, outputnode, [("xfm", "xfm_template")]),
            ]
        )
        if "t1" in coreg_nodes:
            wf.connect(coreg_nodes["t1"], "out_file", atlas, "t1")
        priors = [("wm", "wm"), ("gm", "gm"), ("csf", "csf"), ("location", "location")]
        if gd_node is not None:
            wf.connect([(atlas, gd_node, priors)])
        if bh_node is not None:
            wf.connect([(atlas, bh_node, priors)])
    return wf
