"""nipype interfaces that end a workflow: its collected outputs, and the one lesion table.

* :class:`CollectOutputs` is a workflow's ``outputnode``. It passes its inputs
  through like nipype's ``IdentityInterface``, but it is a node nipype *runs*
  (nipype removes identity nodes from the graph it executes), so the values a
  workflow produced are read from that node's result after ``wf.run()``
  (:func:`collected_outputs`), with no access to nipype's private graph.
* :class:`MergeLesionTables` writes the visit's one ``lesions.tsv``: the T2 rows,
  then the Gd+ rows, then the black-hole rows (columns: their union, T2's first).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd
from nipype.interfaces.base import (
    BaseInterfaceInputSpec,
    DynamicTraitedSpec,
    File,
    SimpleInterface,
    TraitedSpec,
    isdefined,
)
from nipype.interfaces.io import IOBase, add_traits

from ..io.tables import read_tsv, write_tsv

__all__ = ["CollectOutputs", "MergeLesionTables", "collected_outputs", "merge_lesion_tables"]


class CollectOutputs(IOBase):
    """A workflow's outputs: named fields passed through by a node that nipype runs.

    Parameters
    ----------
    fields : sequence of str
        Field names (inputs and outputs of the same names). A field left
        unconnected stays undefined.
    """

    input_spec = DynamicTraitedSpec
    output_spec = DynamicTraitedSpec

    def __init__(self, fields: Sequence[str], **inputs: Any) -> None:
        super().__init__(**inputs)
        if not fields:
            raise ValueError("CollectOutputs needs at least one field")
        self._fields = list(fields)
        add_traits(self.inputs, self._fields)
        self.inputs.trait_set(**inputs)

    def _add_output_traits(self, base: Any) -> Any:
        return add_traits(base, self._fields)

    def _list_outputs(self) -> dict[str, Any]:
        outputs = self._outputs().get()
        for key in self._fields:
            value = getattr(self.inputs, key)
            if isdefined(value):
                outputs[key] = value
        return outputs


def collected_outputs(graph: Any, node_name: str = "outputnode") -> dict[str, Any]:
    """The values a run workflow's :class:`CollectOutputs` node passed through.

    Parameters
    ----------
    graph : networkx.DiGraph
        The executed graph that ``Workflow.run()`` returns.
    node_name : str
        Name of the workflow's :class:`CollectOutputs` node.

    Returns
    -------
    dict
        Field -> value (nipype's ``Undefined`` for a field nothing fed).

    Raises
    ------
    KeyError
        The graph has no node of that name (it was not a :class:`CollectOutputs`).
    """
    for node in graph.nodes():
        if node.name == node_name:
            return dict(node.result.outputs.get())
    raise KeyError(f"the executed workflow has no node {node_name!r}")


def merge_lesion_tables(t2_table: str | Path, others: Sequence[str | Path], out: Path) -> Path:
    """``lesions.tsv``: the T2 rows, then the rows of ``others`` (columns: the union, T2 first).

    Parameters
    ----------
    t2_table : path
        The T2 lesion table (its columns come first).
    others : sequence of path
        Further tables (Gd+, black holes), appended in this order.
    out : path
        Where to write the merged table.

    Returns
    -------
    pathlib.Path
        ``out``.
    """
    merged = read_tsv(t2_table)
    cols = list(merged.columns)
    for path in others:
        extra = read_tsv(path)
        cols += [c for c in extra.columns if c not in cols]
        if len(extra):
            merged = pd.concat([merged, extra], ignore_index=True, sort=False)
    for col in cols:
        if col not in merged:
            merged[col] = pd.NA
    return write_tsv(merged[cols], out)


class _MergeInputSpec(BaseInterfaceInputSpec):
    t2_table = File(exists=True, mandatory=True, desc="T2 lesion table (lesions.tsv rows 'T2')")
    gd_table = File(exists=True, desc="Gd+ lesion table (rows 'Gd')")
    bh_table = File(exists=True, desc="black-hole table (rows 'T1hypo')")


class _MergeOutputSpec(TraitedSpec):
    out_file = File(exists=True, desc="the visit's lesions.tsv")


class MergeLesionTables(SimpleInterface):
    """The visit's one lesion table: T2 rows, then Gd+ rows, then black holes."""

    input_spec = _MergeInputSpec
    output_spec = _MergeOutputSpec

    def _run_interface(self, runtime: Any) -> Any:
        others = [path for path in (self.inputs.gd_table, self.inputs.bh_table) if isdefined(path)]
        out = merge_lesion_tables(
            self.inputs.t2_table, others, Path(runtime.cwd) / "lesions_merged.tsv"
        )
        self._results["out_file"] = str(out)
        return runtime
