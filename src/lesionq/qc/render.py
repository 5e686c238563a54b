"""QC pictures rendered from arrays with matplotlib (Agg), returned as PNG or SVG bytes.

No file I/O and no global state: figures are :class:`matplotlib.figure.Figure`
objects with their own :class:`~matplotlib.backends.backend_agg.FigureCanvasAgg`
(pyplot is never imported, so no backend is selected and no figure registry grows).
SVG output writes text as ``<text>`` elements (lesion ids stay searchable) by
setting ``svg.fonttype`` inside :func:`matplotlib.rc_context` for the duration of
the save only.

Conventions (see :mod:`lesionq.qc.slices`): inputs are 3-D arrays in the NIfTI
grid of ``affine`` (voxel -> world RAS+ mm); they are reoriented to the closest
canonical RAS order for display. Every panel carries its side letters (``R``/``L``
for axial and coronal panels, ``A``/``P`` for sagittal ones) and every figure
names its display convention in the footer (radiological by default: the
patient's right on the viewer's left). Slice indices count along the canonical
axis of the plane (see :func:`lesionq.qc.slices.canonical_index`).
Pictures carry only what callers pass as titles/footers: pass BIDS labels, never
identifying data.
"""

from __future__ import annotations

import io
import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from matplotlib import rc_context
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import LineCollection
from matplotlib.figure import Figure

from .slices import (
    CONVENTIONS,
    canonical,
    check_axis,
    check_convention,
    choose_slices,
    contour_segments,
    display_slice,
    edge_map,
    even_slices,
    intensity_window,
    label_anchors,
    pixel_aspect,
    side_markers,
    slice_world_mm,
)

__all__ = [
    "Rendered",
    "COLOURS",
    "render_slice_png",
    "render_lesion_mosaic",
    "render_comparison",
    "render_edges",
    "render_plain_mosaic",
]

#: Overlay colours by role.
COLOURS: Mapping[str, str] = {
    "t2": "#ffd400",
    "gd": "#ff4fd8",
    "bh": "#3d9bff",
    "new": "#ff3b30",
    "enlarging": "#ff9f0a",
    "edges": "#00e5ff",
    "highlight": "#39ff14",
}

_FORMATS = ("png", "svg")
_PLANE_AXIS_LETTER = {"axial": "z", "coronal": "y", "sagittal": "x"}
# Text stays <text> in SVG (path effects would turn it into paths): a dark box for contrast.
_BOX = {"boxstyle": "square,pad=0.12", "facecolor": "black", "alpha": 0.55, "linewidth": 0}


@dataclass(frozen=True)
class Rendered:
    """A rendered QC picture.

    Attributes
    ----------
    data : bytes
        PNG or SVG file content.
    fmt : str
        ``"png"`` or ``"svg"``.
    axis : str
        Viewing plane of the panels.
    slices : tuple of int
        Canonical slice index of each panel (comparison figures: one per row).
    lesion_ids : tuple of int
        Ids written next to a contour on at least one panel, ascending.
    uncovered : tuple of int
        Lesion ids the slice choice could not show at a representative slice
        (``max_panels`` reached).
    width_px, height_px : int
        Picture size in pixels (PNG) or in SVG user units at the figure's dpi.
    """

    data: bytes
    fmt: str
    axis: str
    slices: tuple[int, ...]
    lesion_ids: tuple[int, ...] = ()
    uncovered: tuple[int, ...] = ()
    width_px: int = 0
    height_px: int = 0


@dataclass
class _Panel:
    image: np.ndarray
    window: tuple[float, float]
    markers: tuple[str, str]
    caption: str = ""
    heading: str = ""
    labels: np.ndarray | None = None
    edges: np.ndarray | None = None
    ids: tuple[int, ...] = field(default_factory=tuple)


def _check_same_grid(ref: np.ndarray, other: np.ndarray | None, name: str) -> None:
    if other is not None and np.shape(other) != np.shape(ref):
        raise ValueError(
            f"{name}: shape {np.shape(other)} differs from the image's {np.shape(ref)} "
            "(every array must be on the same voxel grid)"
        )


def _crop_box(vol_ras: np.ndarray, axis: str, margin: int = 3) -> tuple[slice, slice, slice]:
    """In-plane bounding box (plus ``margin`` voxels) of the non-zero voxels; full slab axis."""
    ax = check_axis(axis)
    nz = np.asarray(vol_ras) != 0
    box: list[slice] = []
    for a in range(3):
        if a == ax:
            box.append(slice(None))
            continue
        present = np.flatnonzero(np.any(nz, axis=tuple(b for b in range(3) if b != a)))
        if present.size == 0:
            box.append(slice(None))
        else:
            lo = max(int(present[0]) - margin, 0)
            hi = min(int(present[-1]) + margin + 1, nz.shape[a])
            box.append(slice(lo, hi))
    return box[0], box[1], box[2]


def _label_ras(labels: np.ndarray, affine: np.ndarray) -> np.ndarray:
    lab = np.asarray(labels)
    if not np.issubdtype(lab.dtype, np.integer):
        rounded = np.rint(np.nan_to_num(lab.astype(np.float64)))
        lab = rounded.astype(np.int64)
    return canonical(lab, affine)[0]


def _draw_panel(
    fig: Figure,
    rect: Sequence[float],
    panel: _Panel,
    n: int,
    *,
    label_text: Mapping[int, str],
    label_colour: Mapping[int, str],
    default_colour: str,
    highlight: frozenset[int],
    font_px: float,
) -> set[int]:
    """Draw one panel in ``rect`` (figure fractions); returns the ids written on it."""
    ax = fig.add_axes((rect[0], rect[1], rect[2], rect[3]))
    ax.set_axis_off()
    rows, cols = panel.image.shape
    ax.imshow(
        panel.image,
        cmap="gray",
        vmin=panel.window[0],
        vmax=panel.window[1],
        interpolation="nearest",
        origin="upper",
        aspect="auto",
        extent=(-0.5, cols - 0.5, rows - 0.5, -0.5),
    )
    ax.set_xlim(-0.5, cols - 0.5)
    ax.set_ylim(rows - 0.5, -0.5)
    written: set[int] = set()
    if panel.edges is not None and panel.edges.any():
        rgba = np.zeros((*panel.edges.shape, 4), dtype=np.float32)
        edge_rgb = np.array([int(COLOURS["edges"][k : k + 2], 16) / 255 for k in (1, 3, 5)])
        rgba[panel.edges, :3] = edge_rgb
        rgba[panel.edges, 3] = 1.0
        ax.imshow(
            rgba,
            interpolation="nearest",
            origin="upper",
            aspect="auto",
            extent=(-0.5, cols - 0.5, rows - 0.5, -0.5),
        )
    if panel.labels is not None:
        anchors = label_anchors(panel.labels)
        for lid in sorted(anchors):
            if panel.ids and lid not in panel.ids:
                continue
            colour = (
                COLOURS["highlight"] if lid in highlight else label_colour.get(lid, default_colour)
            )
            segs = contour_segments(panel.labels == lid)
            ax.add_collection(
                LineCollection(
                    list(segs),
                    colors=colour,
                    linewidths=2.0 if lid in highlight else 1.1,
                    capstyle="projecting",
                )
            )
            x, y = anchors[lid]
            ha = "left" if x < 0.8 * cols else "right"
            t = ax.text(
                x + 0.3 if ha == "left" else x,
                max(y, 0.0),
                label_text.get(lid, str(lid)),
                color=colour,
                fontsize=font_px * 0.8,
                fontweight="bold",
                ha=ha,
                va="bottom" if y > 2 else "top",
                bbox=_BOX,
                clip_on=True,
            )
            t.set_gid(f"p{n}-lesion-{lid}")
            written.add(lid)
    left, right = panel.markers
    for pos, letter, ha, tag in ((0.02, left, "left", "l"), (0.98, right, "right", "r")):
        t = ax.text(
            pos,
            0.5,
            letter,
            transform=ax.transAxes,
            color="white",
            fontsize=font_px * 0.8,
            fontweight="bold",
            ha=ha,
            va="center",
            bbox=_BOX,
        )
        t.set_gid(f"p{n}-marker-{tag}")
    if panel.caption:
        ax.text(
            0.02,
            0.02,
            panel.caption,
            transform=ax.transAxes,
            color="white",
            fontsize=font_px * 0.7,
            ha="left",
            va="bottom",
            bbox=_BOX,
        )
    if panel.heading:
        ax.text(
            0.5,
            0.98,
            panel.heading,
            transform=ax.transAxes,
            color="white",
            fontsize=font_px * 0.7,
            ha="center",
            va="top",
            bbox=_BOX,
        )
    return written


def _wrap(text: str, max_chars: float) -> list[str]:
    """Split ``text`` into lines of at most ``max_chars`` characters (at spaces when possible).

    >>> _wrap("radiological convention: patient's right (R) on the viewer's left", 30)
    ['radiological convention:', "patient's right (R) on the", "viewer's left"]
    """
    return textwrap.wrap(text, width=max(10, int(max_chars)), break_long_words=True) or [""]


def _compose(
    panels: Sequence[_Panel],
    *,
    ncols: int,
    aspect: float,
    title: str,
    footer: str,
    convention: str,
    fmt: str,
    panel_width_px: int,
    dpi: int,
    label_text: Mapping[int, str] | None = None,
    label_colour: Mapping[int, str] | None = None,
    default_colour: str = COLOURS["t2"],
    highlight: frozenset[int] = frozenset(),
) -> tuple[bytes, set[int], int, int]:
    """Lay panels out on a grid and save; returns (bytes, ids written, width, height)."""
    if fmt not in _FORMATS:
        raise ValueError(f"fmt: expected one of {_FORMATS}, got {fmt!r}")
    if not panels:
        raise ValueError("nothing to draw: no panels")
    rows0, cols0 = panels[0].image.shape
    ncols = max(1, min(int(ncols), len(panels)))
    nrows = -(-len(panels) // ncols)
    pw = float(panel_width_px)
    ph = pw * aspect * rows0 / cols0
    gap = 4.0
    # text scales with the panels (a 300 px panel: 20 px text, lesion ids 16 px, captions
    # 14 px), so a mosaic shown at its own size (e.g. 1220 px in a 1400 px window) stays
    # readable; between 12 and 24 px (a 480 px review slice: 24 px)
    font_px = max(12.0, min(24.0, pw / 15.0))
    width = int(round(ncols * pw + (ncols + 1) * gap))
    # narrow figures wrap their title and footer (the convention must stay readable):
    # about 0.62 font sizes per bold character, 0.45 per footer character
    title_lines = _wrap(title, width / (0.62 * font_px)) if title else []
    footer_text = "  |  ".join(s for s in (CONVENTIONS[convention], footer) if s)
    footer_lines = _wrap(footer_text, width / (0.45 * font_px))
    title_h = (1.0 + 1.2 * len(title_lines)) * font_px if title else gap
    footer_h = (0.8 + 0.95 * len(footer_lines)) * font_px
    height = int(round(title_h + nrows * ph + (nrows - 1) * gap + footer_h))
    fig = Figure(figsize=(width / dpi, height / dpi), dpi=dpi, facecolor="black")
    FigureCanvasAgg(fig)
    font_pt = font_px * 72.0 / dpi
    written: set[int] = set()
    for n, panel in enumerate(panels):
        r, c = divmod(n, ncols)
        x0 = gap + c * (pw + gap)
        y_top = title_h + r * (ph + gap)
        rect = (x0 / width, 1.0 - (y_top + ph) / height, pw / width, ph / height)
        written |= _draw_panel(
            fig,
            rect,
            panel,
            n,
            label_text=label_text or {},
            label_colour=label_colour or {},
            default_colour=default_colour,
            highlight=highlight,
            font_px=font_pt,
        )
    if title:
        fig.text(
            gap / width,
            1.0 - title_h / 2 / height,
            "\n".join(title_lines),
            color="white",
            fontsize=font_pt,
            fontweight="bold",
            ha="left",
            va="center",
        )
    fig.text(
        gap / width,
        footer_h / 2 / height,
        "\n".join(footer_lines),
        color="#dddddd",
        fontsize=font_pt * 0.72,
        ha="left",
        va="center",
    ).set_gid("footer")
    buf = io.BytesIO()
    if fmt == "svg":
        with rc_context({"svg.fonttype": "none", "svg.hashsalt": "lesionq"}):
            fig.savefig(buf, format="svg", dpi=dpi, facecolor="black", metadata={"Date": None})
    else:
        fig.savefig(buf, format="png", dpi=dpi, facecolor="black", metadata={"Software": None})
    return buf.getvalue(), written, width, height


def _caption(affine_ras: np.ndarray, shape: tuple[int, ...], axis: str, index: int) -> str:
    pos = slice_world_mm(affine_ras, shape, axis, index)
    return f"{_PLANE_AXIS_LETTER[axis]} = {pos:.0f} mm"


def render_slice_png(
    image: np.ndarray,
    affine: np.ndarray,
    axis: str,
    index: int,
    labels: np.ndarray | None = None,
    lesion_ids: Sequence[int] | None = None,
    highlight: int | Sequence[int] | None = None,
    convention: str = "radiological",
    *,
    window: tuple[float, float] | None = None,
    panel_width_px: int = 480,
    dpi: int = 100,
) -> bytes:
    """One slice with lesion contours, ids and side letters, as PNG bytes.

    Parameters
    ----------
    image : ndarray, shape (X, Y, Z)
        Intensities in the NIfTI grid of ``affine``.
    affine : ndarray, shape (4, 4)
        Voxel -> world RAS+ mm (shared by ``image`` and ``labels``).
    axis : {"axial", "coronal", "sagittal"}
    index : int
        Slice index along the plane's axis of the canonical RAS grid (convert a
        native voxel with :func:`lesionq.qc.slices.canonical_index`).
    labels : ndarray of int, shape (X, Y, Z), optional
        Lesion label image (0 = background); each lesion's outline is drawn and
        its id written at the outline's top-right corner.
    lesion_ids : sequence of int, optional
        Only these ids are drawn (default: every id on the slice).
    highlight : int or sequence of int, optional
        Ids drawn thicker in the highlight colour.
    convention : {"radiological", "neurological"}
        Left-right display convention (named in the footer).
    window : (float, float), optional
        Display intensity range; default: 0.5-99.5 percentiles of the volume's
        non-zero voxels.
    panel_width_px, dpi : int
        Picture width of the panel in pixels, and dpi.

    Returns
    -------
    bytes
        A PNG file.
    """
    check_axis(axis)
    check_convention(convention)
    _check_same_grid(np.asarray(image), labels, "labels")
    img_ras, aff_ras = canonical(np.asarray(image, dtype=np.float32), affine)
    win = window if window is not None else intensity_window(img_ras)
    lab2d = None
    if labels is not None:
        lab2d = display_slice(_label_ras(labels, affine), axis, index, convention)
    ids = tuple(int(i) for i in lesion_ids) if lesion_ids is not None else ()
    if highlight is None:
        hl: frozenset[int] = frozenset()
    elif isinstance(highlight, int | np.integer):
        hl = frozenset({int(highlight)})
    else:
        hl = frozenset(int(h) for h in highlight)
    panel = _Panel(
        image=display_slice(img_ras, axis, index, convention),
        window=win,
        markers=side_markers(axis, convention),
        caption=_caption(aff_ras, img_ras.shape, axis, index),
        labels=lab2d,
        ids=ids,
    )
    data, _, _, _ = _compose(
        [panel],
        ncols=1,
        aspect=pixel_aspect(aff_ras, axis),
        title="",
        footer="",
        convention=convention,
        fmt="png",
        panel_width_px=panel_width_px,
        dpi=dpi,
        highlight=hl,
    )
    return data


def render_lesion_mosaic(
    image: np.ndarray,
    affine: np.ndarray,
    labels: np.ndarray,
    *,
    title: str = "",
    footer: str = "",
    label_text: Mapping[int, str] | None = None,
    label_colour: Mapping[int, str] | None = None,
    colour: str = COLOURS["t2"],
    axis: str = "axial",
    max_panels: int = 12,
    n_empty: int = 6,
    ncols: int = 4,
    convention: str = "radiological",
    fmt: str = "png",
    panel_width_px: int = 240,
    dpi: int = 100,
) -> Rendered:
    """Mosaic of slices chosen through the lesions, each lesion outlined and labelled.

    Slices come from :func:`lesionq.qc.slices.choose_slices` (largest cross-section
    of each lesion, greedy cover, at most ``max_panels``); every lesion visible on
    a panel is outlined and labelled with its id. Without lesions, ``n_empty``
    evenly spaced slices through the image are shown, each captioned
    "no lesions".

    Parameters
    ----------
    image : ndarray, shape (X, Y, Z)
        Background intensities (FLAIR, post-contrast T1w ...), NIfTI grid.
    affine : ndarray, shape (4, 4)
        Voxel -> world RAS+ mm of ``image`` and ``labels``.
    labels : ndarray of int, shape (X, Y, Z)
        Lesion ids (0 = background), same grid.
    title, footer : str
        Text over and under the panels (BIDS labels only).
    label_text : mapping, optional
        Lesion id -> text written at its outline (default ``str(id)``).
    label_colour : mapping, optional
        Lesion id -> colour (default ``colour``).
    colour : str
        Default outline colour.
    axis, max_panels, n_empty, ncols, convention, fmt, panel_width_px, dpi :
        Plane, panel counts, layout, display convention, ``"png"``/``"svg"``,
        size.

    Returns
    -------
    Rendered
    """
    check_convention(convention)
    check_axis(axis)
    _check_same_grid(np.asarray(image), labels, "labels")
    img_ras, aff_ras = canonical(np.asarray(image, dtype=np.float32), affine)
    lab_ras = _label_ras(labels, affine)
    choice = choose_slices(lab_ras, axis, max_panels=max_panels)
    win = intensity_window(img_ras)
    markers = side_markers(axis, convention)
    full_shape = img_ras.shape
    box = _crop_box(img_ras, axis)
    indices_empty = even_slices(img_ras, axis, n_empty)
    img_ras, lab_ras = img_ras[box], lab_ras[box]
    panels: list[_Panel] = []
    if choice.indices:
        indices = choice.indices
        for s in indices:
            panels.append(
                _Panel(
                    image=display_slice(img_ras, axis, s, convention),
                    window=win,
                    markers=markers,
                    caption=_caption(aff_ras, full_shape, axis, s),
                    labels=display_slice(lab_ras, axis, s, convention),
                )
            )
    else:
        indices = indices_empty
        for s in indices:
            panels.append(
                _Panel(
                    image=display_slice(img_ras, axis, s, convention),
                    window=win,
                    markers=markers,
                    caption=_caption(aff_ras, full_shape, axis, s) + "  (no lesions)",
                )
            )
    data, written, w, h = _compose(
        panels,
        ncols=ncols,
        aspect=pixel_aspect(aff_ras, axis),
        title=title,
        footer=footer,
        convention=convention,
        fmt=fmt,
        panel_width_px=panel_width_px,
        dpi=dpi,
        label_text=label_text,
        label_colour=label_colour,
        default_colour=colour,
    )
    return Rendered(data, fmt, axis, tuple(indices), tuple(sorted(written)), choice.uncovered, w, h)


def render_comparison(
    previous: np.ndarray,
    current: np.ndarray,
    affine: np.ndarray,
    labels: np.ndarray,
    *,
    reference: np.ndarray | None = None,
    headings: tuple[str, str] = ("previous visit (registered)", "this visit"),
    title: str = "",
    footer: str = "",
    label_text: Mapping[int, str] | None = None,
    label_colour: Mapping[int, str] | None = None,
    colour: str = COLOURS["new"],
    axis: str = "axial",
    max_panels: int = 6,
    n_empty: int = 4,
    convention: str = "radiological",
    fmt: str = "png",
    panel_width_px: int = 240,
    dpi: int = 100,
) -> Rendered:
    """Previous | current visit side by side on the same slices, with change outlines.

    Each row is one slice: the previous visit's image (already resampled onto the
    current grid) on the left, the current one on the right, both with the
    outlines and ids of ``labels`` (e.g. new / enlarging lesions of the current
    visit). Two pairs per row of the picture.

    Parameters
    ----------
    previous, current : ndarray, shape (X, Y, Z)
        Intensities on the same grid (``affine``), e.g. the registered previous
        FLAIR and this visit's FLAIR.
    affine : ndarray, shape (4, 4)
        Voxel -> world RAS+ mm.
    labels : ndarray of int, shape (X, Y, Z)
        Change label image (0 = background).
    reference : ndarray, optional
        Volume whose non-zero extent places the evenly spaced slices shown when
        ``labels`` is empty (default ``current``).
    headings : (str, str)
        Captions of the left and right panel of each pair.
    title, footer, label_text, label_colour, colour, axis, max_panels, n_empty,
    convention, fmt, panel_width_px, dpi :
        As for :func:`render_lesion_mosaic` (``max_panels`` counts slices).

    Returns
    -------
    Rendered
    """
    check_convention(convention)
    check_axis(axis)
    cur = np.asarray(current, dtype=np.float32)
    _check_same_grid(cur, previous, "previous")
    _check_same_grid(cur, labels, "labels")
    cur_ras, aff_ras = canonical(cur, affine)
    prev_ras = canonical(np.asarray(previous, dtype=np.float32), affine)[0]
    lab_ras = _label_ras(labels, affine)
    choice = choose_slices(lab_ras, axis, max_panels=max_panels)
    indices = choice.indices
    empty = not indices
    if empty:
        ref = cur_ras if reference is None else canonical(np.asarray(reference), affine)[0]
        indices = even_slices(ref, axis, n_empty)
    wins = (intensity_window(prev_ras), intensity_window(cur_ras))
    full_shape = cur_ras.shape
    box = _crop_box(cur_ras, axis)
    cur_ras, prev_ras, lab_ras = cur_ras[box], prev_ras[box], lab_ras[box]
    markers = side_markers(axis, convention)
    panels: list[_Panel] = []
    for s in indices:
        cap = _caption(aff_ras, full_shape, axis, s) + ("  (no change)" if empty else "")
        lab2d = None if empty else display_slice(lab_ras, axis, s, convention)
        for vol, win, head in zip((prev_ras, cur_ras), wins, headings, strict=True):
            panels.append(
                _Panel(
                    image=display_slice(vol, axis, s, convention),
                    window=win,
                    markers=markers,
                    caption=cap,
                    heading=head,
                    labels=lab2d,
                )
            )
    data, written, w, h = _compose(
        panels,
        ncols=4 if len(panels) > 2 else 2,
        aspect=pixel_aspect(aff_ras, axis),
        title=title,
        footer=footer,
        convention=convention,
        fmt=fmt,
        panel_width_px=panel_width_px,
        dpi=dpi,
        label_text=label_text,
        label_colour=label_colour,
        default_colour=colour,
    )
    return Rendered(data, fmt, axis, tuple(indices), tuple(sorted(written)), choice.uncovered, w, h)


def render_edges(
    base: np.ndarray,
    moving: np.ndarray,
    affine: np.ndarray,
    *,
    reference: np.ndarray | None = None,
    slices: Sequence[int] | None = None,
    n_slices: int = 8,
    title: str = "",
    footer: str = "",
    axis: str = "axial",
    ncols: int = 4,
    convention: str = "radiological",
    fmt: str = "png",
    panel_width_px: int = 240,
    dpi: int = 100,
) -> Rendered:
    """Registration check: edges of ``moving`` drawn over ``base``.

    Parameters
    ----------
    base : ndarray, shape (X, Y, Z)
        Background image (e.g. this visit's FLAIR).
    moving : ndarray, shape (X, Y, Z)
        Image already resampled onto the same grid (e.g. the registered previous
        FLAIR); its Canny edges (:func:`lesionq.qc.slices.edge_map`) are drawn in
        cyan. Good alignment: the edges follow the background's boundaries.
    affine : ndarray, shape (4, 4)
        Voxel -> world RAS+ mm.
    reference : ndarray, optional
        Mask or image whose non-zero extent places the evenly spaced slices
        (default ``base``).
    slices : sequence of int, optional
        Canonical slice indices (default: ``n_slices`` evenly spaced ones).
    title, footer, axis, ncols, convention, fmt, panel_width_px, dpi :
        As for :func:`render_lesion_mosaic`.

    Returns
    -------
    Rendered
    """
    check_convention(convention)
    check_axis(axis)
    b = np.asarray(base, dtype=np.float32)
    _check_same_grid(b, moving, "moving")
    base_ras, aff_ras = canonical(b, affine)
    mov_ras = canonical(np.asarray(moving, dtype=np.float32), affine)[0]
    if slices is None:
        ref = base_ras if reference is None else canonical(np.asarray(reference), affine)[0]
        indices = even_slices(ref, axis, n_slices)
    else:
        indices = tuple(int(s) for s in slices)
    win = intensity_window(base_ras)
    markers = side_markers(axis, convention)
    full_shape = base_ras.shape
    box = _crop_box(base_ras, axis)
    base_ras, mov_ras = base_ras[box], mov_ras[box]
    panels = [
        _Panel(
            image=display_slice(base_ras, axis, s, convention),
            window=win,
            markers=markers,
            caption=_caption(aff_ras, full_shape, axis, s),
            edges=edge_map(display_slice(mov_ras, axis, s, convention)),
        )
        for s in indices
    ]
    data, _, w, h = _compose(
        panels,
        ncols=ncols,
        aspect=pixel_aspect(aff_ras, axis),
        title=title,
        footer=footer,
        convention=convention,
        fmt=fmt,
        panel_width_px=panel_width_px,
        dpi=dpi,
    )
    return Rendered(data, fmt, axis, tuple(indices), (), (), w, h)


def render_plain_mosaic(
    image: np.ndarray,
    affine: np.ndarray,
    slices: Sequence[int],
    *,
    title: str = "",
    footer: str = "",
    axis: str = "axial",
    ncols: int = 4,
    window: tuple[float, float] | None = None,
    crop: np.ndarray | None = None,
    convention: str = "radiological",
    fmt: str = "png",
    panel_width_px: int = 240,
    dpi: int = 100,
) -> Rendered:
    """Mosaic of the given slices without overlays (frames of a flicker view).

    Two calls with the same ``slices``, ``crop`` and layout give pictures of
    identical size and panel positions, so they can be alternated in place.

    Parameters
    ----------
    image : ndarray, shape (X, Y, Z)
    affine : ndarray, shape (4, 4)
    slices : sequence of int
        Canonical slice indices.
    window : (float, float), optional
        Display intensity range (default from the volume's percentiles).
    crop : ndarray, shape (X, Y, Z), optional
        Volume whose non-zero in-plane extent crops the panels (default
        ``image``); pass the same one to every frame of a flicker pair.
    title, footer, axis, ncols, convention, fmt, panel_width_px, dpi :
        As for :func:`render_lesion_mosaic`.

    Returns
    -------
    Rendered
    """
    check_convention(convention)
    check_axis(axis)
    img_ras, aff_ras = canonical(np.asarray(image, dtype=np.float32), affine)
    win = window if window is not None else intensity_window(img_ras)
    markers = side_markers(axis, convention)
    indices = tuple(int(s) for s in slices)
    full_shape = img_ras.shape
    crop_ras = img_ras if crop is None else canonical(np.asarray(crop), affine)[0]
    _check_same_grid(img_ras, crop_ras, "crop")
    img_ras = img_ras[_crop_box(crop_ras, axis)]
    panels = [
        _Panel(
            image=display_slice(img_ras, axis, s, convention),
            window=win,
            markers=markers,
            caption=_caption(aff_ras, full_shape, axis, s),
        )
        for s in indices
    ]
    data, _, w, h = _compose(
        panels,
        ncols=ncols,
        aspect=pixel_aspect(aff_ras, axis),
        title=title,
        footer=footer,
        convention=convention,
        fmt=fmt,
        panel_width_px=panel_width_px,
        dpi=dpi,
    )
    return Rendered(data, fmt, axis, indices, (), (), w, h)
