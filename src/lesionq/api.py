"""The Python surface of lesionq for imaging scientists.

Two entry points:

* :func:`segment_t2` segments T2/FLAIR lesions of one visit held in memory
  (nibabel images or paths) and returns images plus a lesion table;
* :func:`run` processes a whole BIDS dataset exactly like ``lesionq run`` and
  returns the per-visit table.

Coordinates: images keep their own voxel grids; every returned image is on the
input FLAIR's grid (same shape and affine); lesion centroids are world RAS+ mm.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import nibabel as nib
import numpy as np
import pandas as pd

from .config import Settings, load_protocol
from .types import Volume

__all__ = ["T2Result", "segment_t2", "run", "check"]

ImageLike = nib.Nifti1Image | str | os.PathLike[str]


@dataclass(frozen=True)
class T2Result:
    """Result of :func:`segment_t2` (all images on the input FLAIR grid).

    Attributes
    ----------
    mask : nibabel.Nifti1Image
        uint8 lesion mask (1 = lesion).
    probability : nibabel.Nifti1Image
        float32 lesion probability in [0, 1].
    labels : nibabel.Nifti1Image
        int32 lesion labels; voxel value = ``lesion_id`` of :attr:`lesions`.
    brain_mask : nibabel.Nifti1Image
        uint8 brain mask.
    lesions : pandas.DataFrame
        One row per lesion (columns: :data:`lesionq.steps.LESION_TABLE_COLUMNS`).
    count : int
        Number of lesions.
    volume_mm3 : float
        Total lesion volume in mm3.
    skull_stripped_input : bool
        Whether the FLAIR was recognised as already skull-stripped.
    """

    mask: nib.Nifti1Image
    probability: nib.Nifti1Image
    labels: nib.Nifti1Image
    brain_mask: nib.Nifti1Image
    lesions: pd.DataFrame
    count: int
    volume_mm3: float
    skull_stripped_input: bool


def _volume(img: ImageLike, kind: str) -> Volume:
    from .io.nifti import load_image

    if not isinstance(img, nib.spatialimages.SpatialImage):
        img = load_image(img)
    arr = np.asanyarray(img.dataobj)
    if arr.ndim == 4 and arr.shape[3] == 1:
        arr = arr[..., 0]
    return Volume(np.asarray(arr, dtype=np.float32), np.asarray(img.affine, float), kind)


def _image(vol: Volume, dtype: type) -> nib.Nifti1Image:
    img = nib.Nifti1Image(np.asarray(vol.array).astype(dtype), vol.affine)
    img.set_sform(vol.affine, code=1)
    img.set_qform(vol.affine, code=1)
    return img


def segment_t2(
    flair: ImageLike,
    t1: ImageLike | None = None,
    t2: ImageLike | None = None,
    *,
    protocol: str | os.PathLike[str] | Settings | None = None,
    use_atlas: bool = True,
    n_threads: int = 1,
) -> T2Result:
    """Segment T2/FLAIR hyperintense lesions of one visit.

    Runs the same steps as the visit workflow (bias correction, brain
    extraction or detection of a skull-stripped input, rigid co-registration
    of T1w / T2w to the FLAIR, atlas priors, segmentation, lesion table), in
    memory, without nipype.

    Parameters
    ----------
    flair : nibabel image or path
        FLAIR of the visit (3-D). Required.
    t1, t2 : nibabel image or path, optional
        T1w / T2w of the same visit, on any grid (they are registered to the FLAIR).
    protocol : str, path or Settings, optional
        Protocol name (``"mesems_v1"``), TOML path or loaded settings.
    use_atlas : bool
        Use atlas priors and location classes (affine template registration, a few s).
    n_threads : int
        Threads for the heavy steps.

    Returns
    -------
    T2Result

    Examples
    --------
    A synthetic phantom visit with known lesions (FLAIR only, no atlas):

    >>> import nibabel as nib
    >>> import lesionq
    >>> from lesionq.testing.phantoms import make_subject
    >>> visit = make_subject(7, n_visits=1).visits[0]
    >>> flair = nib.Nifti1Image(visit.images["FLAIR"], visit.affine)
    >>> res = lesionq.segment_t2(flair, protocol="mesems_testing", use_atlas=False)
    >>> import numpy as np
    >>> res.mask.shape == flair.shape and np.allclose(res.mask.affine, flair.affine)
    True
    >>> res.count == len(res.lesions) and res.count > 0
    True
    """
    from . import steps

    settings = protocol if isinstance(protocol, Settings) else load_protocol(protocol)
    steps.validate_settings(settings)
    fl = _volume(flair, "FLAIR")
    prep = steps.prepare_flair(
        fl, bias=settings.section("bias"), brain=settings.section("brain"), n_threads=n_threads
    )
    coreg: dict[str, Volume] = {}
    for key, img, kind in (("t1", t1, "T1w"), ("t2", t2, "T2w")):
        if img is not None:
            coreg[key] = steps.coregister_to_flair(
                _volume(img, kind),
                prep.flair,
                prep.brain_mask,
                skull_stripped=prep.skull_stripped,
                bias=settings.section("bias"),
                registration=settings.section("registration"),
                n_threads=n_threads,
            ).image
    template = dict(settings.section("template"))
    priors = None
    if use_atlas and template.pop("enabled", True):
        priors = steps.atlas_priors(
            prep.flair, prep.brain_mask, t1=coreg.get("t1"), template=template, n_threads=n_threads
        ).maps
    seg = steps.segment_t2_volumes(
        prep.flair,
        prep.brain_mask,
        t1=coreg.get("t1"),
        t2=coreg.get("t2"),
        priors=priors,
        segmentation=settings.section("segmentation"),
        min_volume_mm3=settings.section("lesions")["min_volume_mm3"],
        n_threads=n_threads,
    )
    tab = steps.tabulate_lesions(
        seg.mask,
        flair=prep.flair,
        brain_mask=prep.brain_mask,
        probability=seg.probability,
        location=None if priors is None else priors["location"],
        lesions=settings.section("lesions"),
        location_rules=settings.section("location"),
        n_threads=n_threads,
    )
    return T2Result(
        mask=_image(seg.mask, np.uint8),
        probability=_image(seg.probability, np.float32),
        labels=_image(tab.labels, np.int32),
        brain_mask=_image(prep.brain_mask, np.uint8),
        lesions=tab.table,
        count=tab.count,
        volume_mm3=tab.volume_mm3,
        skull_stripped_input=prep.skull_stripped,
    )


def run(
    bids_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    participant_labels: Sequence[str] | None = None,
    protocol: str | os.PathLike[str] | Settings | None = None,
    overrides: Mapping[str, Any] | None = None,
    n_procs: int = 1,
) -> pd.DataFrame:
    """Process a BIDS dataset like ``lesionq run BIDS_DIR OUT_DIR participant``.

    Parameters
    ----------
    bids_dir, out_dir : path-like
        Input BIDS dataset; output derivatives folder.
    participant_labels : sequence of str, optional
        Subjects to process (default all).
    protocol : str, path or Settings, optional
        Protocol (default ``mesems_v1``).
    overrides : mapping, optional
        Dotted-key overrides, e.g. ``{"segmentation.threshold": 0.4}``.
    n_procs : int
        Thread budget per visit.

    Returns
    -------
    pandas.DataFrame
        The rows of ``OUT/visits.tsv`` for the visits processed by this call
        (failed visits included, with ``status == "failed"`` and a ``reason``).
    """
    from .batch.runner import run_dataset
    from .io.tables import VISIT_COLUMNS

    settings = protocol if isinstance(protocol, Settings) else load_protocol(protocol)
    if overrides:
        settings = settings.with_overrides(overrides)
    summary = run_dataset(
        bids_dir, out_dir, settings=settings, participant_labels=participant_labels, n_procs=n_procs
    )
    df = pd.DataFrame(list(summary.rows))
    return df[[c for c in VISIT_COLUMNS if c in df.columns]]


def check(
    bids_dir: str | os.PathLike[str], participant_labels: Sequence[str] | None = None
) -> list:
    """Run the input check battery (see :mod:`lesionq.io.checks`); returns the findings."""
    from .io.checks import check_dataset

    return check_dataset(bids_dir, participant_labels=participant_labels)
