"""The longitudinal nipype workflow of one subject: register, compare and track its visits.

Spaces
------
The subject's *reference* is its first visit in time order (the baseline): its
grid is never interpolated, and trial endpoints count against it and against
the previous visit. Every follow-up's preprocessed FLAIR is registered to the
reference FLAIR (``register_ses<v>``, fixed = reference); the transform maps
reference points (LPS mm) to the visit's points, as every lesionq ``xfm`` file
does. Two visits are compared on the *later* visit's grid, through the map
later -> reference -> earlier (:func:`lesionq.steps.longitudinal.transform_between`),
so each visit's change masks lie on its own FLAIR grid. Tracking resamples every
visit's lesion labels onto the reference grid.

Graph, for sessions ``A`` (reference), ``B``, ``C``, ``D`` in time order::

    inputnode ─┬─ register_sesB ─┬─ compare_sesB_previous (B vs A, also B vs baseline) ─ cua_sesB
               │                 └─ last_registered_sesB ─┐  (B, or A if B failed)
               ├─ register_sesC ─┬─ compare_sesC_previous ◄┘  (C vs last registered)
               │                 ├─ compare_sesC_baseline     (C vs A)
               │                 └─ last_registered_sesC ─┐
               ├─ register_sesD ─┬─ compare_sesD_previous ◄┘
               │                 └─ compare_sesD_baseline
               └─ merge_labels / merge_status / merge_xfms ── track ── outputnode

``cua_ses<v>`` counts the follow-up's combined unique active lesions (its Gd+ lesions,
input ``gd_labels_<v>``, and its new/enlarging T2 lesions since the previous visit,
each physical lesion once); ``cua_count_<v>`` stays undefined without a Gd+ result or
a comparison.

A follow-up whose registration fails its checks gets ``registration_status_<v>
= "registration_failed: <reason>"``: it is not compared, not tracked, and never
used as the previous visit of the next one (``last_registered_<v>`` passes on
the last well-registered visit instead). No numerics here: every parameter is an
explicit keyword of :func:`init_longitudinal_wf`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from nipype.interfaces.utility import IdentityInterface, Merge
from nipype.pipeline import engine as pe

from ..interfaces.longitudinal import (
    CombinedUniqueActive,
    CompareVisits,
    RegisterVisit,
    SelectRegistered,
    TrackLesions,
)
from ..interfaces.outputs import CollectOutputs

__all__ = [
    "init_longitudinal_wf",
    "longitudinal_input_fields",
    "longitudinal_output_fields",
    "VISIT_INPUTS",
    "FOLLOWUP_OUTPUTS",
]

#: Per-visit inputnode fields (suffixed ``_<session>``): published per-visit files
#: (``xfm_template`` is optional: without it the comparison has no white-matter prior).
VISIT_INPUTS: tuple[str, ...] = (
    "flair",
    "brain_mask",
    "t2_mask",
    "probseg",
    "labels",
    "xfm_template",
    "gd_labels",
)

#: Per-follow-up outputnode fields (suffixed ``_<session>``).
FOLLOWUP_OUTPUTS: tuple[str, ...] = (
    "registration_status",
    "xfm",
    "flair_in_reference",
    "previous_session",
    "newenlarging",
    "change_labels",
    "change_table",
    "previous_flair",
    "lesion_statuses",
    "counts",
    "newenlarging_baseline",
    "change_labels_baseline",
    "change_table_baseline",
    "lesion_statuses_baseline",
    "counts_baseline",
    "cua_count",
)

_LABEL = re.compile(r"^[0-9a-zA-Z]+$")

# CompareVisits outputs -> outputnode field stems (previous and baseline comparisons)
_PREVIOUS = {
    "earlier_session": "previous_session",
    "new_enlarging": "newenlarging",
    "change_labels": "change_labels",
    "table": "change_table",
    "earlier_on_later": "previous_flair",
    "lesion_statuses": "lesion_statuses",
    "counts": "counts",
}
_BASELINE = {
    "new_enlarging": "newenlarging_baseline",
    "change_labels": "change_labels_baseline",
    "table": "change_table_baseline",
    "lesion_statuses": "lesion_statuses_baseline",
    "counts": "counts_baseline",
}
_FILES = ("flair", "brain_mask", "t2_mask", "probseg")


def longitudinal_input_fields(sessions: Sequence[str]) -> list[str]:
    """inputnode fields of :func:`init_longitudinal_wf` for ``sessions``."""
    return [f"{key}_{s}" for s in sessions for key in VISIT_INPUTS]


def longitudinal_output_fields(sessions: Sequence[str]) -> list[str]:
    """outputnode fields of :func:`init_longitudinal_wf` for ``sessions``."""
    return [f"{key}_{s}" for s in sessions[1:] for key in FOLLOWUP_OUTPUTS] + ["tracks"]


def init_longitudinal_wf(
    *,
    sessions: Sequence[str],
    registration: Mapping[str, Any],
    change: Mapping[str, Any],
    lesions: Mapping[str, Any],
    atlas_dir: str | None = None,
    n_threads: int = 1,
    name: str = "longitudinal_wf",
) -> pe.Workflow:
    """Build the longitudinal workflow of one subject.

    Parameters
    ----------
    sessions : sequence of str
        Session labels (without ``ses-``) of the visits to analyse, in time
        order; the first is the reference (baseline). At least one; labels are
        letters and digits (BIDS) and unique.
    registration : mapping
        The protocol's ``[longitudinal_registration]`` section.
    change : mapping
        The protocol's ``[change]`` section.
    lesions : mapping
        The protocol's ``[lesions]`` section.
    atlas_dir : str, optional
        Atlas folder for the white-matter prior of the later visit of each
        comparison (default: the bundled one); used for visits whose
        ``xfm_template_<v>`` is given.
    n_threads : int
        Threads handed to each heavy node (nodes run one at a time).
    name : str
        Workflow name.

    Returns
    -------
    nipype.pipeline.engine.Workflow
        inputnode fields :func:`longitudinal_input_fields` (``flair_<v>``: the
        visit's preprocessed FLAIR; ``brain_mask_<v>``; ``t2_mask_<v>``;
        ``probseg_<v>``; ``labels_<v>``: the T2 lesion ``dseg``; optional
        ``xfm_template_<v>``: the visit's FLAIR -> atlas template transform); outputnode
        fields :func:`longitudinal_output_fields`: per follow-up ``<v>``,
        ``registration_status_<v>`` (``"ok"`` or ``"registration_failed: ..."``),
        ``xfm_<v>`` (reference -> visit), ``flair_in_reference_<v>``, the
        comparison with the previous registered visit (``previous_session_<v>``,
        ``newenlarging_<v>``, ``change_labels_<v>``, ``change_table_<v>``,
        ``previous_flair_<v>``, ``lesion_statuses_<v>`` JSON, ``counts_<v>``)
        and with the reference (the same with ``_baseline``); and ``tracks``
        (JSON ``{session: {lesion_id: track_id}}`` over the reference and the
        registered follow-ups). Outputs of a follow-up whose registration failed
        stay undefined.
    """
    sessions = [str(s) for s in sessions]
    if not sessions:
        raise ValueError("init_longitudinal_wf: sessions must name at least one visit")
    bad = [s for s in sessions if not _LABEL.match(s)]
    if bad:
        raise ValueError(
            f"init_longitudinal_wf: session labels must be letters and digits, got {bad}"
        )
    if len(set(sessions)) != len(sessions):
        raise ValueError(f"init_longitudinal_wf: duplicate session labels in {sessions}")
    if n_threads < 1:
        raise ValueError(f"init_longitudinal_wf: n_threads must be >= 1, got {n_threads}")

    wf = pe.Workflow(name=name)
    inputnode = pe.Node(
        IdentityInterface(fields=longitudinal_input_fields(sessions)), name="inputnode"
    )
    outputnode = pe.Node(
        CollectOutputs(fields=longitudinal_output_fields(sessions)), name="outputnode"
    )
    ref = sessions[0]
    follow = sessions[1:]

    def visit_files(node: pe.Node, ses: str, prefix: str) -> None:
        wf.connect([(inputnode, node, [(f"{k}_{ses}", f"{prefix}{k}") for k in _FILES])])

    registers: dict[str, pe.Node] = {}
    for ses in follow:
        reg = pe.Node(
            RegisterVisit(
                session=ses,
                reference_session=ref,
                registration=dict(registration),
                n_threads=n_threads,
            ),
            name=f"register_ses{ses}",
            n_procs=n_threads,
            mem_gb=1.0,
        )
        wf.connect(
            [
                (
                    inputnode,
                    reg,
                    [
                        (f"flair_{ses}", "flair"),
                        (f"brain_mask_{ses}", "brain_mask"),
                        (f"t2_mask_{ses}", "t2_mask"),
                        (f"flair_{ref}", "reference_flair"),
                        (f"brain_mask_{ref}", "reference_brain_mask"),
                        (f"t2_mask_{ref}", "reference_t2_mask"),
                    ],
                ),
                (
                    reg,
                    outputnode,
                    [
                        ("status", f"registration_status_{ses}"),
                        ("xfm", f"xfm_{ses}"),
                        ("flair_in_reference", f"flair_in_reference_{ses}"),
                    ],
                ),
            ]
        )
        registers[ses] = reg

    def compare_node(ses: str, kind: str) -> pe.Node:
        node = pe.Node(
            CompareVisits(
                later_session=ses,
                change=dict(change),
                lesions=dict(lesions),
                atlas_dir=atlas_dir or "",
                n_threads=n_threads,
            ),
            name=f"compare_ses{ses}_{kind}",
            n_procs=n_threads,
            mem_gb=1.5,
        )
        visit_files(node, ses, "later_")
        wf.connect(inputnode, f"xfm_template_{ses}", node, "later_xfm_template")
        wf.connect(registers[ses], "status", node, "later_status")
        wf.connect(registers[ses], "xfm", node, "later_xfm")
        return node

    # the last well-registered visit before each follow-up (None: the reference)
    last: pe.Node | None = None
    for idx, ses in enumerate(follow):
        prev = compare_node(ses, "previous")
        if last is None:
            prev.inputs.earlier_session = ref
            visit_files(prev, ref, "earlier_")
        else:
            wf.connect(
                [
                    (
                        last,
                        prev,
                        [("session", "earlier_session"), ("xfm", "earlier_xfm")]
                        + [(k, f"earlier_{k}") for k in _FILES],
                    )
                ]
            )
        wf.connect([(prev, outputnode, [(src, f"{dst}_{ses}") for src, dst in _PREVIOUS.items()])])
        # combined unique activity: the follow-up's Gd+ lesions and its new/enlarging T2
        # lesions since the previous visit, each physical lesion once
        cua = pe.Node(CombinedUniqueActive(), name=f"cua_ses{ses}", mem_gb=0.5)
        wf.connect(
            [
                (inputnode, cua, [(f"gd_labels_{ses}", "gd_labels")]),
                (prev, cua, [("change_labels", "change_labels")]),
                (cua, outputnode, [("cua_count", f"cua_count_{ses}")]),
            ]
        )
        if idx == 0:
            # the only earlier visit is the reference: one comparison serves both
            base = prev
        else:
            base = compare_node(ses, "baseline")
            base.inputs.earlier_session = ref
            visit_files(base, ref, "earlier_")
        wf.connect([(base, outputnode, [(src, f"{dst}_{ses}") for src, dst in _BASELINE.items()])])
        if idx < len(follow) - 1:
            sel = pe.Node(SelectRegistered(session=ses), name=f"last_registered_ses{ses}")
            visit_files(sel, ses, "")
            wf.connect(registers[ses], "status", sel, "status")
            wf.connect(registers[ses], "xfm", sel, "xfm")
            if last is None:
                sel.inputs.fallback_session = ref
                visit_files(sel, ref, "fallback_")
            else:
                wf.connect(
                    [
                        (
                            last,
                            sel,
                            [("session", "fallback_session"), ("xfm", "fallback_xfm")]
                            + [(k, f"fallback_{k}") for k in _FILES],
                        )
                    ]
                )
            last = sel

    track = pe.Node(
        TrackLesions(sessions=sessions, n_threads=n_threads),
        name="track",
        n_procs=n_threads,
        mem_gb=1.0,
    )
    merge_labels = pe.Node(Merge(len(sessions)), name="merge_labels")
    for n, ses in enumerate(sessions, start=1):
        wf.connect(inputnode, f"labels_{ses}", merge_labels, f"in{n}")
    wf.connect(
        [
            (merge_labels, track, [("out", "labels")]),
            (inputnode, track, [(f"flair_{ref}", "reference")]),
            (track, outputnode, [("tracks", "tracks")]),
        ]
    )
    if follow:
        merge_status = pe.Node(Merge(len(follow)), name="merge_status")
        # undefined transforms (failed registrations) are dropped by Merge: the
        # track node pairs the remaining ones with the 'ok' statuses, in order
        merge_xfms = pe.Node(Merge(len(follow)), name="merge_xfms")
        for n, ses in enumerate(follow, start=1):
            wf.connect(registers[ses], "status", merge_status, f"in{n}")
            wf.connect(registers[ses], "xfm", merge_xfms, f"in{n}")
        wf.connect(
            [
                (merge_status, track, [("out", "statuses")]),
                (merge_xfms, track, [("out", "transforms")]),
            ]
        )
    return wf
