"""QC pictures and per-subject HTML reports.

:mod:`lesionq.qc.slices` (pure arrays: orientation, slice choice, contours, edges),
:mod:`lesionq.qc.render` (matplotlib Agg, no pyplot: PNG/SVG bytes) and
:mod:`lesionq.qc.report` (reads a run's outputs, writes pictures and the HTML page).
Importing this package changes no global state (no matplotlib backend is selected).
"""

from __future__ import annotations

from .render import (
    Rendered,
    render_comparison,
    render_edges,
    render_lesion_mosaic,
    render_plain_mosaic,
    render_slice_png,
)
from .report import FIGURES, figure_path, report_path, write_subject_report
from .slices import SliceChoice, canonical, canonical_index, choose_slices

__all__ = [
    "FIGURES",
    "Rendered",
    "SliceChoice",
    "canonical",
    "canonical_index",
    "choose_slices",
    "figure_path",
    "render_comparison",
    "render_edges",
    "render_lesion_mosaic",
    "render_plain_mosaic",
    "render_slice_png",
    "report_path",
    "write_subject_report",
]
