"""Per-subject QC report: figures from a run's published outputs, and one HTML page.

Layout (``OUT`` is the derivatives folder of ``lesionq run``)::

    OUT/sub-<s>.html                                   the report (relative links only)
    OUT/sub-<s>/figures/sub-<s>_ses-<v>_desc-<...>_<suffix>.png|svg   its pictures

File names of the pictures are defined once, in :data:`FIGURES`. The page needs no
network and no JavaScript (the flicker view is a CSS animation); it opens from disk.

Per visit (whatever exists; missing inputs are skipped with a note on the page):

* ``t2lesions``: T2 lesion outlines and ``lesion_id`` over the preprocessed FLAIR;
* ``gdlesions``: Gd+ lesion outlines and ids over the post-contrast T1w (on the
  FLAIR grid);
* ``blackholes``: T1 black-hole outlines and ids (label ``T1hypo``) over the
  pre-contrast T1w (on the FLAIR grid);
* ``newenlarging``: registered previous FLAIR | this FLAIR on the same slices, new
  (red) and enlarging (orange) lesion outlines labelled with this visit's T2
  ``lesion_id`` (column ``lesion_ids`` of the change table);
* ``registration``: edges of the registered previous FLAIR over this FLAIR, plus
  two flicker frames (``flickerprevious`` / ``flickercurrent``).

Per subject, above the visits: a timeline of T2 lesion volume (mL), new +
enlarging, Gd+ and CUA counts per visit on the study schedule's weeks, with the
protocol's periods shaded and failed visits marked (an inline SVG of
:mod:`lesionq.qc.timeline`). Clicking a picture shows it across the whole window (CSS
``:target``, no JavaScript), with a link to open its file.

Pictures and page carry BIDS labels only (no acquisition dates, no participant
attributes such as a treatment arm). Display convention: radiological by default,
stated on every picture.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2
import numpy as np
import pandas as pd
from markupsafe import Markup

from .._version import __version__
from ..errors import MissingInputError
from ..io.derivatives import VISITS_TSV, output_path, subject_output_path, visit_prefix
from ..io.endpoints import load_schedule
from ..io.nifti import atomic_path, atomic_write_text, load_array
from ..io.tables import read_tsv
from . import render
from . import timeline as tl
from .slices import CONVENTIONS, canonical, check_convention, even_slices, intensity_window

__all__ = [
    "FigureSpec",
    "FIGURES",
    "figure_path",
    "report_path",
    "write_subject_report",
]

LOGGER = logging.getLogger(__name__)


@dataclass(frozen=True)
class FigureSpec:
    """One kind of per-visit QC picture.

    Attributes
    ----------
    entities : str
        BIDS-like entities after ``sub-<s>_ses-<v>_`` (e.g. ``"desc-t2lesions"``).
    suffix : str
        Lower-case suffix naming the background image (e.g. ``"flair"``).
    formats : tuple of str
        Extensions written, the first one shown in the page.
    title : str
        Heading in the report.
    """

    entities: str
    suffix: str
    formats: tuple[str, ...]
    title: str

    def filename(self, subject: str, session: str | None, ext: str) -> str:
        """``sub-<s>[_ses-<v>]_<entities>_<suffix>.<ext>``.

        Examples
        --------
        >>> FIGURES["t2lesions"].filename("01", "02", "png")
        'sub-01_ses-02_desc-t2lesions_flair.png'
        """
        return f"{visit_prefix(subject, session)}_{self.entities}_{self.suffix}.{ext}"


#: Every QC picture, by key: the one place for their file names.
FIGURES: Mapping[str, FigureSpec] = {
    "t2lesions": FigureSpec("desc-t2lesions", "flair", ("svg", "png"), "T2 lesions over FLAIR"),
    "gdlesions": FigureSpec(
        "ce-gadolinium_desc-gdlesions", "t1w", ("svg", "png"), "Gd+ lesions over post-contrast T1w"
    ),
    "blackholes": FigureSpec(
        "desc-blackholes", "t1w", ("svg", "png"), "T1 black holes over pre-contrast T1w"
    ),
    "newenlarging": FigureSpec(
        "desc-newenlarging", "flair", ("svg", "png"), "New and enlarging T2 lesions"
    ),
    "registration": FigureSpec(
        "desc-registration", "flair", ("png",), "Registration of the previous visit"
    ),
    "flickerprevious": FigureSpec(
        "desc-flickerprevious", "flair", ("png",), "Flicker frame: previous visit"
    ),
    "flickercurrent": FigureSpec(
        "desc-flickercurrent", "flair", ("png",), "Flicker frame: this visit"
    ),
}


def _strip(value: str, prefix: str) -> str:
    return value[len(prefix) :] if value.startswith(prefix) else value


def figure_path(
    out_dir: str | os.PathLike[str], subject: str, session: str | None, key: str, ext: str
) -> Path:
    """``OUT/sub-<s>/figures/<name>`` of picture ``key`` (of :data:`FIGURES`).

    Examples
    --------
    >>> figure_path("OUT", "a", "01", "registration", "png").as_posix()
    'OUT/sub-a/figures/sub-a_ses-01_desc-registration_flair.png'
    """
    return (
        Path(out_dir) / f"sub-{subject}" / "figures" / FIGURES[key].filename(subject, session, ext)
    )


def report_path(out_dir: str | os.PathLike[str], subject: str) -> Path:
    """``OUT/sub-<s>.html``."""
    return Path(out_dir) / f"sub-{_strip(subject, 'sub-')}.html"


# ----------------------------------------------------------------------------- page model


@dataclass
class _Figure:
    key: str
    title: str
    src: str = ""
    links: list[tuple[str, str]] = field(default_factory=list)
    label: str = ""
    lesion_ids: tuple[int, ...] = ()
    caption: str = ""
    width: int = 0
    height: int = 0
    frames: tuple[str, str] | None = None


@dataclass
class _Visit:
    session: str | None
    anchor: str
    heading: str
    figures: list[_Figure] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    lesion_columns: list[str] = field(default_factory=list)
    lesion_rows: list[dict[str, Any]] = field(default_factory=list)
    change_columns: list[str] = field(default_factory=list)
    change_rows: list[dict[str, Any]] = field(default_factory=list)
    links: list[tuple[str, str]] = field(default_factory=list)


_LESION_COLUMNS = (
    "lesion_id",
    "label",
    "volume_mm3",
    "location",
    "centroid_x_mm",
    "centroid_y_mm",
    "centroid_z_mm",
    "track_id",
    "status",
    "status_vs_baseline",
    "enhancement_peak",
    "ring",
    "confidence",
    "t2_lesion_id",
    "t1_contrast_mean",
)
_CHANGE_COLUMNS = (
    "change_id",
    "status",
    "lesion_ids",
    "volume_mm3",
    "previous_volume_mm3",
    "grown_volume_mm3",
)
_VISIT_COLUMNS = (
    "session_id",
    "status",
    "reason",
    "t2_count",
    "t2_volume_mm3",
    "new_t2_count",
    "enlarging_t2_count",
    "gd_count",
    "gd_count_confident",
    "gd_volume_mm3",
    "bh_count",
    "bh_volume_mm3",
    "brain_volume_mm3",
    "contrasts_used",
    "longitudinal_status",
)


def _cell(value: Any) -> str:
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return "n/a"
    if isinstance(value, float | np.floating):
        return f"{float(value):.6g}"
    return str(value)


def _rows(df: pd.DataFrame, columns: Sequence[str]) -> tuple[list[str], list[dict[str, Any]]]:
    cols = [c for c in columns if c in df.columns]
    rows = [{c: _cell(r[c]) for c in cols} for _, r in df.iterrows()]
    return cols, rows


def _rel(path: Path, out_dir: Path) -> str:
    return path.relative_to(out_dir).as_posix()


# ----------------------------------------------------------------------------- figures


class _Skip(Exception):
    """A figure cannot be drawn for an expected reason (e.g. a missing input)."""


def _need(path: Path, what: str) -> Path:
    if not path.is_file():
        raise _Skip(f"{what} not found ({path.name})")
    return path


def _ids(df: pd.DataFrame | None, label: str) -> set[int]:
    if df is None or "lesion_id" not in df.columns:
        return set()
    sel = df["label"] == label if "label" in df.columns else np.ones(len(df), bool)
    return {int(v) for v in df.loc[sel, "lesion_id"].dropna()}


def _save(
    rendered: render.Rendered, out_dir: Path, subject: str, session: str | None, key: str
) -> Path:
    dest = figure_path(out_dir, subject, session, key, rendered.fmt)
    dest.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(dest) as tmp:
        tmp.write_bytes(rendered.data)
    return dest


def _publish(
    make: Any,
    fig: _Figure,
    out_dir: Path,
    subject: str,
    session: str | None,
) -> render.Rendered:
    """Render every format of ``fig.key`` with ``make(fmt)``; fill ``fig``; return the first."""
    first = None
    for fmt in FIGURES[fig.key].formats:
        rendered = make(fmt)
        dest = _save(rendered, out_dir, subject, session, fig.key)
        rel = _rel(dest, out_dir)
        if first is None:
            first = rendered
            fig.src = rel
            fig.width, fig.height = rendered.width_px, rendered.height_px
        fig.links.append((fmt.upper(), rel))
    if first is None:
        raise ValueError(f"FIGURES[{fig.key!r}] lists no format")
    return first


def _check_ids(
    fig: _Figure, notes: list[str], drawn: set[int], expected: set[int], what: str
) -> None:
    missing = sorted(expected - drawn)
    extra = sorted(drawn - expected)
    if missing:
        notes.append(f"{fig.title}: {what} ids {missing} of the lesion table are not drawn")
    if extra:
        notes.append(f"{fig.title}: {what} ids {extra} in the label image are not in the table")


def _visit_figures(
    out_dir: Path,
    subject: str,
    session: str | None,
    reference: str | None,
    lesions: pd.DataFrame | None,
    visit: _Visit,
    *,
    convention: str,
    max_panels: int,
) -> None:
    """Build every figure of one visit; problems become notes, never exceptions."""

    def path(key: str) -> Path:
        return output_path(out_dir, subject, session, key, reference=reference)

    label = f"sub-{subject}" + (f" ses-{session}" if session else "")
    footer = f"{label}  |  lesionq {__version__}"
    cache: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    def load(key: str, what: str, dtype: type = np.float32) -> tuple[np.ndarray, np.ndarray]:
        if key not in cache:
            cache[key] = load_array(_need(path(key), what), dtype)
        return cache[key]

    def attempt(fig: _Figure, build: Any) -> None:
        try:
            build(fig)
            visit.figures.append(fig)
        except _Skip as exc:
            visit.notes.append(f"{fig.title}: skipped, {exc}")
        except Exception as exc:  # a report problem never stops the rest of the report
            LOGGER.warning("QC %s %s: %s failed: %s", label, fig.key, fig.title, exc)
            visit.notes.append(f"{fig.title}: failed ({type(exc).__name__}: {exc})")

    def same_grid(*arrays: tuple[np.ndarray, np.ndarray]) -> None:
        a0 = arrays[0]
        for a in arrays[1:]:
            if a[0].shape != a0[0].shape or not np.allclose(a[1], a0[1], atol=1e-3):
                raise _Skip("images are not on the same voxel grid")

    def t2(fig: _Figure) -> None:
        flair = load("flair_preproc", "preprocessed FLAIR")
        lab = load("t2_labels", "T2 lesion label image (dseg)", np.int32)
        same_grid(flair, lab)
        first = _publish(
            lambda fmt: render.render_lesion_mosaic(
                flair[0],
                flair[1],
                lab[0],
                title=f"{label}: T2 lesions (lesion_id) over FLAIR",
                footer=footer,
                colour=render.COLOURS["t2"],
                max_panels=max_panels,
                convention=convention,
                fmt=fmt,
                panel_width_px=300,
            ),
            fig,
            out_dir,
            subject,
            session,
        )
        fig.label, fig.lesion_ids = "T2", first.lesion_ids
        present = {int(v) for v in np.unique(lab[0]) if v != 0}
        _check_ids(fig, visit.notes, present, _ids(lesions, "T2"), "T2 lesion")
        if first.uncovered:
            visit.notes.append(
                f"{fig.title}: lesions {list(first.uncovered)} not shown at their largest "
                f"cross-section (more than {max_panels} panels needed)"
            )

    def label_mosaic(
        fig: _Figure,
        *,
        image: tuple[str, str],
        labels: tuple[str, str],
        mask: str,
        skip: str,
        title: str,
        colour: str,
        table_label: str,
        noun: str,
    ) -> None:
        """A lesion-label mosaic over one image: (key, description) of the image and labels."""
        if not path(labels[0]).is_file() and not path(mask).is_file():
            raise _Skip(skip)
        img = load(*image)
        lab = load(*labels, np.int32)
        same_grid(img, lab)
        first = _publish(
            lambda fmt: render.render_lesion_mosaic(
                img[0],
                img[1],
                lab[0],
                title=f"{label}: {title}",
                footer=footer,
                colour=render.COLOURS[colour],
                max_panels=max_panels,
                convention=convention,
                fmt=fmt,
                panel_width_px=300,
            ),
            fig,
            out_dir,
            subject,
            session,
        )
        fig.label, fig.lesion_ids = table_label, first.lesion_ids
        present = {int(v) for v in np.unique(lab[0]) if v != 0}
        _check_ids(fig, visit.notes, present, _ids(lesions, table_label), noun)

    def gd(fig: _Figure) -> None:
        label_mosaic(
            fig,
            image=("t1ce_coreg", "post-contrast T1w on the FLAIR grid"),
            labels=("gd_labels", "Gd+ lesion label image (dseg)"),
            mask="gd_mask",
            skip="no Gd+ outputs for this visit (no post-contrast T1w or step off)",
            title="Gd+ lesions (lesion_id, label Gd) over post-contrast T1w",
            colour="gd",
            table_label="Gd",
            noun="Gd+ lesion",
        )

    def blackholes(fig: _Figure) -> None:
        label_mosaic(
            fig,
            image=("t1_coreg", "pre-contrast T1w on the FLAIR grid"),
            labels=("bh_labels", "black-hole label image (dseg)"),
            mask="bh_mask",
            skip="no black-hole outputs for this visit (no pre-contrast T1w or step off)",
            title="T1 black holes (lesion_id, label T1hypo) over pre-contrast T1w",
            colour="bh",
            table_label="T1hypo",
            noun="black hole",
        )

    def newenlarging(fig: _Figure) -> None:
        if not path("previous_flair").is_file():
            raise _Skip("no registered previous FLAIR (reference visit, or no longitudinal step)")
        prev = load("previous_flair", "registered previous FLAIR")
        flair = load("flair_preproc", "preprocessed FLAIR")
        change = load("newenlarging_labels", "new/enlarging label image (dseg)", np.int32)
        same_grid(flair, prev, change)
        table_path = _need(path("newenlarging_table"), "new/enlarging lesion table")
        table = read_tsv(table_path)
        text: dict[int, str] = {}
        colours: dict[int, str] = {}
        for _, row in table.iterrows():
            cid = int(row["change_id"])
            ids = _cell(row.get("lesion_ids"))
            text[cid] = ids.replace(";", ",").replace(" ", "") if ids != "n/a" else f"c{cid}"
            colours[cid] = render.COLOURS.get(str(row.get("status")), render.COLOURS["new"])
        first = _publish(
            lambda fmt: render.render_comparison(
                prev[0],
                flair[0],
                flair[1],
                change[0],
                title=f"{label}: new (red) / enlarging (orange) T2 lesions, lesion_id of this visit",
                footer=footer,
                label_text=text,
                label_colour=colours,
                max_panels=max_panels // 2 or 1,
                convention=convention,
                fmt=fmt,
            ),
            fig,
            out_dir,
            subject,
            session,
        )
        fig.label = "T2"
        drawn_ids: set[int] = set()
        for cid in first.lesion_ids:
            for part in text.get(cid, "").split(","):
                if part.strip().isdigit():
                    drawn_ids.add(int(part))
        fig.lesion_ids = tuple(sorted(drawn_ids))
        cols, rows = _rows(table, _CHANGE_COLUMNS)
        visit.change_columns, visit.change_rows = cols, rows
        present = {int(v) for v in np.unique(change[0]) if v != 0}
        missing = sorted(set(text) - present)
        if missing:
            visit.notes.append(f"{fig.title}: change ids {missing} have no voxels")
        if first.uncovered:
            visit.notes.append(f"{fig.title}: change ids {list(first.uncovered)} not shown")

    def registration(fig: _Figure) -> None:
        if not path("previous_flair").is_file():
            raise _Skip("no registered previous FLAIR (reference visit, or no longitudinal step)")
        prev = load("previous_flair", "registered previous FLAIR")
        flair = load("flair_preproc", "preprocessed FLAIR")
        same_grid(flair, prev)
        brain = path("brain_mask")
        ref = load_array(brain, np.uint8)[0] if brain.is_file() else flair[0]
        ref_ras = canonical(ref, flair[1])[0]
        slices = even_slices(ref_ras, "axial", 8)
        _publish(
            lambda fmt: render.render_edges(
                flair[0],
                prev[0],
                flair[1],
                slices=slices,
                title=f"{label}: edges of the registered previous FLAIR (cyan) over this FLAIR",
                footer=footer,
                convention=convention,
                fmt=fmt,
            ),
            fig,
            out_dir,
            subject,
            session,
        )
        # flicker frames: same slices, layout and window kind, no overlays
        frames = []
        for key, vol, name in (
            ("flickerprevious", prev, "previous visit (registered)"),
            ("flickercurrent", flair, "this visit"),
        ):
            win = intensity_window(vol[0], ref)
            rendered = render.render_plain_mosaic(
                vol[0],
                vol[1],
                slices,
                title=f"{label}: flicker, {name}",
                footer=footer,
                window=win,
                crop=flair[0],
                convention=convention,
            )
            frames.append(_rel(_save(rendered, out_dir, subject, session, key), out_dir))
        fig.frames = (frames[0], frames[1])

    for key, build in (
        ("t2lesions", t2),
        ("gdlesions", gd),
        ("blackholes", blackholes),
        ("newenlarging", newenlarging),
        ("registration", registration),
    ):
        attempt(_Figure(key, FIGURES[key].title), build)


# ----------------------------------------------------------------------------- report


def _sessions(out_dir: Path, subject: str, visits: pd.DataFrame | None) -> list[str | None]:
    sub_dir = out_dir / f"sub-{subject}"
    found: set[str | None] = set()
    for d in sub_dir.glob("ses-*"):
        if d.is_dir():
            found.add(d.name[4:])
    if (sub_dir / "anat").is_dir():
        found.add(None)
    if visits is not None and "session_id" in visits.columns:
        for s in visits["session_id"]:
            found.add(None if pd.isna(s) else _strip(str(s), "ses-"))
    return sorted(found, key=lambda s: "" if s is None else s)


def _reference_of(out_dir: Path, subject: str, session: str | None, visits: Any) -> str | None:
    """Reference session label (without ``ses-``) of the visit, from visits.tsv or the files."""
    if visits is not None and "reference_session_id" in visits.columns:
        sel = visits["session_id"].map(lambda s: _strip(str(s), "ses-")) == str(session)
        vals = visits.loc[sel, "reference_session_id"].dropna()
        if len(vals):
            return _strip(str(vals.iloc[0]), "ses-")
    anat = output_path(out_dir, subject, session, "lesions").parent
    for f in sorted(anat.glob("*_space-ses*_desc-preproc_FLAIR.nii.gz")):
        return f.name.split("_space-ses", 1)[1].split("_", 1)[0]
    return None


def _render_page(context: Mapping[str, Any]) -> str:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("lesionq.qc", "templates"),
        autoescape=jinja2.select_autoescape(["html", "j2"]),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
    )
    return env.get_template("report.html.j2").render(**context)


def write_subject_report(
    out_dir: str | os.PathLike[str],
    subject: str,
    *,
    convention: str = "radiological",
    max_panels: int = 12,
    settings: Any = None,
) -> Path:
    """Build the QC pictures of every published visit of a subject and its HTML report.

    Parameters
    ----------
    out_dir : path-like
        Derivatives folder of a run (holds ``visits.tsv`` and ``sub-<s>/``).
    subject : str
        Subject label, with or without ``sub-``.
    convention : {"radiological", "neurological"}
        Left-right display convention of every picture (stated on each).
    max_panels : int
        Most slices per lesion mosaic (half of it per new/enlarging figure).
    settings : lesionq.config.Settings, optional
        Protocol settings of the run: their ``[schedule]`` and ``[periods]`` place
        the timeline's visits on the study weeks (default: the schedule recorded
        in ``OUT/endpoints.json``, else weeks since the first visit).

    Returns
    -------
    pathlib.Path
        ``OUT/sub-<s>.html``. Pictures go under ``OUT/sub-<s>/figures/`` with the
        names of :data:`FIGURES`.

    Raises
    ------
    lesionq.errors.MissingInputError
        ``out_dir`` or ``OUT/sub-<s>`` does not exist.
    ValueError
        Unknown ``convention`` or ``max_panels`` < 1.

    Notes
    -----
    A missing or unreadable input of a picture never raises: the picture is
    skipped and the reason is written on the page (and logged as a warning when
    it is not an expected absence).
    """
    out = Path(out_dir)
    subject = _strip(str(subject), "sub-")
    check_convention(convention)
    if int(max_panels) < 1:
        raise ValueError(f"max_panels: expected >= 1, got {max_panels}")
    if not out.is_dir():
        raise MissingInputError(f"{out}: output folder not found (out_dir)")
    if not (out / f"sub-{subject}").is_dir():
        raise MissingInputError(f"{out / f'sub-{subject}'}: no outputs for subject {subject!r}")
    notes: list[str] = []
    visits = None
    visits_path = out / VISITS_TSV
    visit_cols: list[str] = []
    visit_rows: list[dict[str, Any]] = []
    if visits_path.is_file():
        try:
            table = read_tsv(visits_path)
            pid = table["participant_id"].map(lambda s: _strip(str(s), "sub-"))
            visits = table[pid == subject]
            visit_cols, visit_rows = _rows(visits, _VISIT_COLUMNS)
        except Exception as exc:
            notes.append(f"{VISITS_TSV}: unreadable ({type(exc).__name__}: {exc})")
    else:
        notes.append(f"{VISITS_TSV} not found: no per-visit counts")
    page_visits: list[_Visit] = []
    for session in _sessions(out, subject, visits):
        ses_label = f"ses-{session}" if session else "(no session)"
        visit = _Visit(session, f"ses-{session}" if session else "nosession", ses_label)
        lesions_file = output_path(out, subject, session, "lesions")
        lesions = None
        if lesions_file.parent.is_dir():
            if lesions_file.is_file():
                try:
                    lesions = read_tsv(lesions_file)
                    visit.lesion_columns, visit.lesion_rows = _rows(lesions, _LESION_COLUMNS)
                except Exception as exc:
                    visit.notes.append(f"{lesions_file.name}: unreadable ({exc})")
                visit.links.append(("lesion table (TSV)", _rel(lesions_file, out)))
            else:
                visit.notes.append(f"lesion table not found ({lesions_file.name})")
            reference = _reference_of(out, subject, session, visits)
            _visit_figures(
                out,
                subject,
                session,
                reference,
                lesions,
                visit,
                convention=convention,
                max_panels=int(max_panels),
            )
        else:
            visit.notes.append("no published outputs for this visit (see visits.tsv status)")
        page_visits.append(visit)
    timeline_svg = ""
    if visits is not None and len(visits):
        try:
            timeline = tl.build_timeline(visits, load_schedule(out, settings))
            timeline_svg = Markup(
                tl.timeline_svg(timeline, title=f"sub-{subject}: MRI measures per visit")
            )
        except Exception as exc:  # a report problem never stops the rest of the report
            LOGGER.warning("QC sub-%s: timeline failed: %s", subject, exc)
            notes.append(f"timeline: failed ({type(exc).__name__}: {exc})")
    links = []
    tracks = subject_output_path(out, subject, "tracks")
    if tracks.is_file():
        links.append(("lesion tracks (TSV)", _rel(tracks, out)))
    if visits_path.is_file():
        links.append(("visits.tsv (all subjects)", VISITS_TSV))
    context = {
        "subject": subject,
        "version": __version__,
        "convention_text": CONVENTIONS[convention],
        "visit_columns": visit_cols,
        "visit_rows": visit_rows,
        "visits": page_visits,
        "timeline": timeline_svg,
        "notes": notes,
        "links": links,
        "colours": render.COLOURS,
    }
    dest = report_path(out, subject)
    atomic_write_text(dest, _render_page(context))
    LOGGER.info("QC report of sub-%s: %s", subject, dest)
    return dest
