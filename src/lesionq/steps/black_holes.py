"""In-memory T1 black-hole step of one visit.

Like :mod:`lesionq.steps.gd`, :func:`segment_black_hole_volumes` takes
:class:`~lesionq.types.Volume` objects already on the visit's FLAIR grid (the
pre-contrast T1 co-registered and bias-corrected by
:func:`lesionq.steps.coregister_to_flair`, the T2 lesion labels of
:func:`lesionq.steps.tabulate_lesions`, the Gd+ mask of
:func:`lesionq.steps.gd.segment_gd_volumes` when the visit has a post-contrast
T1, the atlas maps of :func:`lesionq.steps.atlas_priors`) and the protocol's
``[black_holes]`` section, runs :func:`lesionq.core.black_holes.segment_black_holes`
and returns frozen results: the black-hole mask (``label-T1hypo_mask``), ids
(``label-T1hypo_dseg``), the ``T1hypo`` rows of the lesion table and the
reference levels. Nothing is read or written here.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from ..core.black_holes import BlackHoleSegmentation, segment_black_holes
from ..types import Volume
from .registry import SECTIONS, persistent_min_days
from .visit import LESION_ROW_COLUMNS, on_grid

__all__ = [
    "BH_LABEL",
    "BH_TABLE_COLUMNS",
    "BH_SET_BY_STEP",
    "BlackHoleResult",
    "check_black_holes_section",
    "persistent_min_days",
    "BH_LONGITUDINAL_KEYS",
    "segment_black_hole_volumes",
]

LOGGER = logging.getLogger(__name__)

#: ``label`` of the black-hole rows of ``lesions.tsv``.
BH_LABEL = "T1hypo"

#: Columns of the black-hole rows of the lesion table (one row per black hole).
BH_TABLE_COLUMNS: tuple[str, ...] = (
    *LESION_ROW_COLUMNS,
    "t2_lesion_id",
    "t1_contrast_mean",
    "t1_contrast_max",
    "t1_reference",
)

#: Parameters of :func:`~lesionq.core.black_holes.segment_black_holes` that this step
#: sets itself (images, geometry, the Gd+ mask, atlas maps, the ``[lesions]`` rule):
#: never keys of the ``[black_holes]`` protocol section (from the protocol registry,
#: :data:`lesionq.steps.registry.SECTIONS`).
BH_SET_BY_STEP: tuple[str, ...] = SECTIONS["black_holes"].set_by_step


@dataclass(frozen=True)
class BlackHoleResult:
    """T1 black holes of one visit, on the FLAIR grid.

    Attributes
    ----------
    mask : Volume
        uint8 black-hole mask, kind ``"mask"``.
    labels : Volume
        int32 black-hole ids ``1..n`` (0 = background), kind ``"labels"``; the ids
        of :attr:`table`.
    table : pandas.DataFrame
        One row per black hole, columns :data:`BH_TABLE_COLUMNS`: ``label`` is
        ``"T1hypo"``; ``centroid_*_mm`` world RAS+ mm; ``location`` the McDonald
        class of the T2 lesion it lies in (``n/a`` without one); ``t2_lesion_id``
        that T2 lesion's ``lesion_id``; ``t1_contrast_mean`` / ``t1_contrast_max``
        the T1 contrast over its voxels as a fraction of the NAWM -> CSF distance
        (0 = normal-appearing white matter, 1 = CSF); ``t1_reference``
        ``"local"`` (the NAWM around its T2 lesion) or ``"global"``.
    count : int
        Number of black holes (``bh_count``).
    volume_mm3 : float
        Total black-hole volume, mm3 (``bh_volume_mm3``).
    levels : dict
        Reference levels for the sidecar: ``nawm``, ``csf``, ``gm`` (T1 units),
        ``gm_fraction`` (grey matter on the contrast scale), ``excluded_enhancing_mm3``.
    seconds : float
        Wall time of the core function.
    """

    mask: Volume
    labels: Volume
    table: pd.DataFrame
    count: int = 0
    volume_mm3: float = 0.0
    levels: Mapping[str, float] = field(default_factory=dict)
    seconds: float = 0.0


#: Keys of the ``[black_holes]`` section read by the subject's longitudinal step, not by
#: ``segment_black_holes``: ``persistent_min_days`` (days, an earlier visit at least this long
#: before makes a black hole persistent; see :func:`persistent_min_days`).
BH_LONGITUDINAL_KEYS: tuple[str, ...] = tuple(SECTIONS["black_holes"].handled)


def check_black_holes_section(section: Mapping[str, Any]) -> dict[str, Any]:
    """Keyword arguments of ``segment_black_holes`` from the ``[black_holes]`` section.

    The longitudinal keys (:data:`BH_LONGITUDINAL_KEYS`) are checked and left out
    (:meth:`lesionq.steps.registry.ProtocolSection.kwargs`).

    Raises
    ------
    lesionq.errors.ConfigError
        A key that the step sets itself, or that is not a parameter of
        :func:`lesionq.core.black_holes.segment_black_holes`, or a bad
        ``persistent_min_days``.
    """
    return SECTIONS["black_holes"].kwargs(section)


def _on_grid(name: str, vol: Volume, ref: Volume) -> np.ndarray:
    return on_grid(name, vol, ref, "the FLAIR grid of the T2 lesion labels")


def _table(
    res: BlackHoleSegmentation, affine: np.ndarray, t2_table: pd.DataFrame | None
) -> pd.DataFrame:
    n = len(res.lesions)
    cen = np.array([b.centroid_vox for b in res.lesions], dtype=float).reshape(n, 3)
    ras = (affine[:3, :3] @ cen.T).T + affine[:3, 3] if n else np.zeros((0, 3))
    where: dict[int, Any] = {}
    if t2_table is not None and {"lesion_id", "location"} <= set(t2_table.columns):
        t2_rows = t2_table
        if "label" in t2_table.columns:
            t2_rows = t2_table[t2_table["label"] == "T2"]
        where = dict(zip(t2_rows["lesion_id"].astype(int), t2_rows["location"], strict=True))
    table = pd.DataFrame(
        {
            "lesion_id": np.array([b.lesion_id for b in res.lesions], dtype=np.int64),
            "label": pd.Series([BH_LABEL] * n, dtype=object),
            "volume_mm3": [b.volume_mm3 for b in res.lesions],
            "n_voxels": np.array([b.n_voxels for b in res.lesions], dtype=np.int64),
            "centroid_x_mm": ras[:, 0],
            "centroid_y_mm": ras[:, 1],
            "centroid_z_mm": ras[:, 2],
            "location": pd.Series([where.get(b.t2_lesion_id) for b in res.lesions], dtype=object),
            "t2_lesion_id": np.array([b.t2_lesion_id for b in res.lesions], dtype=np.int64),
            "t1_contrast_mean": [b.contrast_mean for b in res.lesions],
            "t1_contrast_max": [b.contrast_max for b in res.lesions],
            "t1_reference": pd.Series(
                ["local" if b.reference_local else "global" for b in res.lesions], dtype=object
            ),
        }
    )
    return table[list(BH_TABLE_COLUMNS)].round(
        {
            "volume_mm3": 3,
            "centroid_x_mm": 2,
            "centroid_y_mm": 2,
            "centroid_z_mm": 2,
            "t1_contrast_mean": 4,
            "t1_contrast_max": 4,
        }
    )


def segment_black_hole_volumes(
    t1: Volume,
    t2_labels: Volume,
    brain_mask: Volume,
    *,
    enhancing: Volume | None = None,
    priors: Mapping[str, Volume] | None = None,
    t2_table: pd.DataFrame | None = None,
    black_holes: Mapping[str, Any],
    lesions: Mapping[str, Any],
) -> BlackHoleResult:
    """Black-hole mask, ids and table of one visit (FLAIR grid).

    Parameters
    ----------
    t1 : Volume
        Pre-contrast T1 resampled onto the FLAIR grid and bias-corrected.
    t2_labels : Volume
        The visit's T2 lesion labels (``label-T2lesion_dseg``); defines the grid.
    brain_mask : Volume
        Brain mask on the FLAIR grid (non-zero = brain).
    enhancing : Volume, optional
        The visit's Gd+ lesion mask (non-zero = enhancing); None without a
        post-contrast T1.
    priors : mapping of str to Volume, optional
        Atlas maps of :func:`lesionq.steps.atlas_priors` (``"wm"``, ``"gm"``,
        ``"csf"`` are used); None: the tissue model runs without priors.
    t2_table : pandas.DataFrame, optional
        The T2 rows of the lesion table, for the ``location`` of each black hole.
    black_holes : mapping
        The protocol's ``[black_holes]`` section (keywords of
        :func:`lesionq.core.black_holes.segment_black_holes` minus
        :data:`BH_SET_BY_STEP`).
    lesions : mapping
        The protocol's ``[lesions]`` section: ``min_volume_mm3`` (inclusive) and
        ``connectivity``, the rule of every lesion mask and table.

    Returns
    -------
    BlackHoleResult

    Raises
    ------
    lesionq.errors.ConfigError
        A bad ``[black_holes]`` key.
    lesionq.errors.GeometryError
        An input not on the grid of ``t2_labels``.
    lesionq.errors.InputError, lesionq.errors.ProcessingError
        From :func:`~lesionq.core.black_holes.segment_black_holes`.
    """
    kwargs = check_black_holes_section(black_holes)
    ref = t2_labels
    t1a = _on_grid("t1 (pre-contrast T1)", t1, ref).astype(np.float32, copy=False)
    mask = _on_grid("brain_mask", brain_mask, ref) > 0
    enh = None if enhancing is None else _on_grid("enhancing (Gd+ mask)", enhancing, ref) > 0
    prior_arrays = None
    if priors is not None:
        prior_arrays = {
            k: _on_grid(f"priors[{k!r}]", v, ref).astype(np.float32, copy=False)
            for k, v in priors.items()
            if k in ("wm", "gm", "csf")
        }
    res = segment_black_holes(
        t1a,
        np.asarray(t2_labels.array).astype(np.int32, copy=False),
        mask,
        t2_labels.voxel_size_mm,
        enhancing=enh,
        priors=prior_arrays,
        min_volume_mm3=float(lesions["min_volume_mm3"]),
        connectivity=int(lesions.get("connectivity", 26)),
        **kwargs,
    )
    LOGGER.info(
        "black holes: %d, %.1f mm3 (NAWM %.4g, CSF %.4g, grey matter at %.2f; %.1f s)",
        res.n_lesions, res.volume_mm3, res.nawm, res.csf, res.gm_fraction, res.seconds,
    )  # fmt: skip
    return BlackHoleResult(
        mask=Volume(res.mask.astype(np.uint8), ref.affine, "mask"),
        labels=Volume(res.labels.astype(np.int32), ref.affine, "labels"),
        table=_table(res, ref.affine, t2_table),
        count=res.n_lesions,
        volume_mm3=res.volume_mm3,
        levels={
            "nawm": res.nawm,
            "csf": res.csf,
            "gm": res.gm,
            "gm_fraction": res.gm_fraction,
            "excluded_enhancing_mm3": res.excluded_enhancing_mm3,
        },
        seconds=res.seconds,
    )
