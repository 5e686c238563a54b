"""QC pictures and per-subject HTML reports.

:mod:`lesionq.qc.slices` (pure arrays: orientation, slice choice, contours, edges),
:mod:`lesionq.qc.render` (matplotlib Agg, no pyplot: PNG/SVG bytes),
:mod:`lesionq.qc.timeline` (pure: hand-written SVG timelines and sparklines of the
per-visit measures), :mod:`lesionq.qc.report` (reads a run's outputs, writes pictures
and the subject's HTML page) and :mod:`lesionq.qc.overview` (the trial overview
``OUT/index.html``).
Importing this package changes no global state (no matplotlib backend is selected).
"""

from __future__ import annotations

from .overview import index_path, write_index
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
from .timeline import Timeline, build_timeline, sparkline_svg, timeline_svg

__all__ = [
    "FIGURES",
    "Rendered",
    "SliceChoice",
    "Timeline",
    "build_timeline",
    "canonical",
    "canonical_index",
    "choose_slices",
    "figure_path",
    "index_path",
    "render_comparison",
    "render_edges",
    "render_lesion_mosaic",
    "render_plain_mosaic",
    "render_slice_png",
    "report_path",
    "sparkline_svg",
    "timeline_svg",
    "write_index",
    "write_subject_report",
]
