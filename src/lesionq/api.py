"""The Python surface of lesionq for imaging scientists.

Entry points:

* :func:`segment_t2` segments T2/FLAIR lesions of one visit held in memory
  (nibabel images or paths) and returns images plus a lesion table;
* :func:`compare_visits` finds the new and enlarging T2 lesions of a follow-up
  visit since a baseline visit (per-visit output folders, FLAIR images, or
  in-memory :class:`~lesionq.steps.longitudinal.VisitImages`);
* :func:`run` processes a whole BIDS dataset exactly like ``lesionq run`` and
  returns the per-visit table.

Coordinates: images keep their own voxel grids; every returned image is on the
input FLAIR's grid (same shape and affine); lesion centroids are world RAS+ mm.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import nibabel as nib
import numpy as np
import pandas as pd

from . import steps
from .config import Settings, load_protocol
from .errors import MissingInputError
from .io.checks import check_dataset
from .io.derivatives import OUTPUTS
from .io.nifti import load_array, load_image
from .io.sitk_bridge import read_transform
from .io.tables import VISIT_COLUMNS
from .steps.longitudinal import VisitImages, atlas_wm_prior, register_visit, transform_between
from .steps.longitudinal import compare_visits as compare
from .types import Volume

__all__ = ["T2Result", "segment_t2", "compare_visits", "run", "check"]

ImageLike = nib.Nifti1Image | str | os.PathLike[str]

if TYPE_CHECKING:
    from .steps.longitudinal import Compared


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


@dataclass(frozen=True)
class _VisitSegmentation:
    prepared: Any  # steps.PreparedFLAIR
    segmented: Any  # steps.Segmented
    tabulated: Any  # steps.Tabulated
    priors: Any  # mapping of atlas maps on the FLAIR grid, or None


def _segment_visit(
    fl: Volume,
    t1: Volume | None,
    t2: Volume | None,
    *,
    settings: Settings,
    use_atlas: bool,
    n_threads: int,
) -> _VisitSegmentation:
    """The T2 visit steps of :func:`segment_t2`, in memory.

    The step parameters come from :func:`lesionq.steps.visit_parameters`, as for the
    visit workflow of ``lesionq run`` (a test on the phantoms checks that the two give
    the same mask, probability, labels and lesion table). The Gd+ and black-hole steps
    of the workflow are not run here: :func:`segment_t2` reports T2 lesions only.
    """
    steps.validate_settings(settings)
    p = steps.visit_parameters(settings, use_atlas=use_atlas)
    prep = steps.prepare_flair(fl, bias=p.bias, brain=p.brain, n_threads=n_threads)
    coreg: dict[str, Volume] = {}
    for key, vol in (("t1", t1), ("t2", t2)):
        if vol is not None:
            coreg[key] = steps.coregister_to_flair(
                vol,
                prep.flair,
                prep.brain_mask,
                skull_stripped=prep.skull_stripped,
                bias=p.bias,
                registration=p.registration,
                n_threads=n_threads,
            ).image
    priors = None
    if p.use_atlas:
        priors = steps.atlas_priors(
            prep.flair,
            prep.brain_mask,
            t1=coreg.get("t1"),
            template=p.template,
            n_threads=n_threads,
        ).maps
    seg = steps.segment_t2_volumes(
        prep.flair,
        prep.brain_mask,
        t1=coreg.get("t1"),
        t2=coreg.get("t2"),
        priors=priors,
        segmentation=p.segmentation,
        min_volume_mm3=p.min_volume_mm3,
        location_rules=p.location,
        n_threads=n_threads,
    )
    tab = steps.tabulate_lesions(
        seg.mask,
        flair=prep.flair,
        brain_mask=prep.brain_mask,
        probability=seg.probability,
        location=None if priors is None else priors["location"],
        lesions=p.lesions,
        location_rules=p.location,
        n_threads=n_threads,
    )
    return _VisitSegmentation(prepared=prep, segmented=seg, tabulated=tab, priors=priors)


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
    settings = protocol if isinstance(protocol, Settings) else load_protocol(protocol)
    seg = _segment_visit(
        _volume(flair, "FLAIR"),
        None if t1 is None else _volume(t1, "T1w"),
        None if t2 is None else _volume(t2, "T2w"),
        settings=settings,
        use_atlas=use_atlas,
        n_threads=n_threads,
    )
    prep, tab = seg.prepared, seg.tabulated
    return T2Result(
        mask=_image(seg.segmented.mask, np.uint8),
        probability=_image(seg.segmented.probability, np.float32),
        labels=_image(tab.labels, np.int32),
        brain_mask=_image(prep.brain_mask, np.uint8),
        lesions=tab.table,
        count=tab.count,
        volume_mm3=tab.volume_mm3,
        skull_stripped_input=prep.skull_stripped,
    )


def _visit_from_folder(folder: Path, *, n_threads: int = 1) -> VisitImages:
    """A visit's published outputs (``OUT/sub-<s>/ses-<v>[/anat]``) as VisitImages."""
    anat = folder if folder.name == "anat" else folder / "anat"
    owner = anat.parent
    if owner.name.startswith("ses-") and owner.parent.name.startswith("sub-"):
        subject, session = owner.parent.name[4:], owner.name[4:]
    elif owner.name.startswith("sub-"):
        subject, session = owner.name[4:], None
    else:
        raise MissingInputError(
            f"{folder}: not a lesionq visit output folder (expected OUT/sub-<s>/ses-<v>[/anat] "
            "holding the files of `lesionq run`)"
        )

    def path(key: str) -> Path:
        return anat / OUTPUTS[key].filename(subject, session)

    def read(key: str, kind: str, dtype: type) -> Volume:
        if not path(key).is_file():
            raise MissingInputError(f"{path(key)}: not found (needed to compare visits)")
        arr, aff = load_array(path(key), dtype=dtype)
        return Volume(arr, aff, kind)

    flair = read("flair_preproc", "FLAIR", np.float32)
    wm_prior = None
    if path("xfm_template").is_file():  # the atlas ran for this visit: its white-matter prior
        tx = read_transform(path("xfm_template"))
        wm_prior = atlas_wm_prior(flair, tx, n_threads=n_threads)
    probseg = path("t2_probseg").is_file()
    return VisitImages(
        flair=flair,
        brain_mask=read("brain_mask", "mask", np.uint8),
        lesion_mask=read("t2_mask", "mask", np.uint8),
        probability=read("t2_probseg", "probseg", np.float32) if probseg else None,
        session=session,
        wm_prior=wm_prior,
    )


def _visit_images(
    visit: Any, *, settings: Settings, use_atlas: bool, n_threads: int, what: str
) -> VisitImages:
    if isinstance(visit, VisitImages):
        return visit
    if isinstance(visit, str | os.PathLike) and Path(visit).is_dir():
        return _visit_from_folder(Path(visit), n_threads=n_threads)
    if not isinstance(visit, nib.spatialimages.SpatialImage | str | os.PathLike):
        raise TypeError(
            f"compare_visits: {what} must be VisitImages, a visit output folder, or a FLAIR "
            f"image (nibabel image or NIfTI path); got {type(visit).__name__}"
        )
    seg = _segment_visit(
        _volume(cast(ImageLike, visit), "FLAIR"),
        None,
        None,
        settings=settings,
        use_atlas=use_atlas,
        n_threads=n_threads,
    )
    return VisitImages(
        flair=seg.prepared.flair,
        brain_mask=seg.prepared.brain_mask,
        lesion_mask=seg.segmented.mask,
        probability=seg.segmented.probability,
        session=None,
        wm_prior=None if seg.priors is None else seg.priors["wm"],
    )


def compare_visits(
    baseline: VisitImages | ImageLike,
    followup: VisitImages | ImageLike,
    *,
    protocol: str | os.PathLike[str] | Settings | None = None,
    overrides: Mapping[str, Any] | None = None,
    use_atlas: bool = True,
    n_threads: int = 1,
) -> Compared:
    """New and enlarging T2 lesions of ``followup`` since ``baseline``.

    The follow-up FLAIR is registered to the baseline FLAIR
    (``[longitudinal_registration]``, fixed = baseline), then the two visits are
    compared on the follow-up's grid with the protocol's ``[change]`` and
    ``[lesions]`` rules, exactly as the longitudinal workflow of ``lesionq run``
    does for each follow-up and its baseline.

    Parameters
    ----------
    baseline, followup : VisitImages, folder, nibabel image or path
        Each visit as one of: a
        :class:`~lesionq.steps.longitudinal.VisitImages` (preprocessed FLAIR,
        brain mask, T2 lesion mask, all on the visit's grid); the folder of the
        visit's published outputs (``OUT/sub-<s>/ses-<v>`` or its ``anat``;
        with its atlas transform, the follow-up's white-matter prior is used);
        or a raw FLAIR (nibabel image or NIfTI path), which is segmented first
        as by :func:`segment_t2` (FLAIR only; with ``use_atlas``, its priors).
    protocol : str, path or Settings, optional
        Protocol (default ``mesems_v1``).
    overrides : mapping, optional
        Dotted-key overrides, e.g. ``{"change.seed_z": 5.0}``.
    use_atlas : bool
        For raw FLAIR inputs: use atlas priors in their segmentation.
    n_threads : int
        Threads for the heavy steps.

    Returns
    -------
    lesionq.steps.longitudinal.Compared
        On the follow-up's grid (its FLAIR's shape and affine): ``new_enlarging``
        (uint8 mask), ``change_labels`` (int32, value = ``change_id`` of
        ``table``), ``table`` (one row per new or enlarging lesion),
        ``lesion_statuses`` (follow-up lesion id -> status), ``counts``
        (``new_t2_count``, ``enlarging_t2_count``, ``t2_volume_change_mm3``...),
        ``earlier_on_later`` (the baseline FLAIR on the follow-up grid, for QC).
        Volumes hold an array and its RAS affine
        (:func:`lesionq.io.nifti.save_image` writes one).

    Raises
    ------
    lesionq.errors.RegistrationError
        The follow-up could not be registered to the baseline (quality checks).
    lesionq.errors.MissingInputError
        A visit folder lacks a needed output.

    Examples
    --------
    Two visits of a phantom with known change (5 new lesions and 1 enlarging at
    its second visit), described by its raw FLAIRs and truth masks:

    >>> import numpy as np
    >>> import lesionq
    >>> from lesionq.steps.longitudinal import VisitImages
    >>> from lesionq.testing import make_subject
    >>> from lesionq.types import Volume
    >>> s = make_subject(3, n_visits=2)
    >>> def visit(v):
    ...     def vol(a, kind):
    ...         return Volume(np.asarray(a, np.float32), v.affine, kind)
    ...     return VisitImages(
    ...         vol(v.images["FLAIR"], "FLAIR"), vol(v.brain_mask, "mask"), vol(v.lesion_mask, "mask")
    ...     )
    >>> res = lesionq.compare_visits(
    ...     visit(s.visits[0]), visit(s.visits[1]), protocol="mesems_testing"
    ... )
    >>> res.new_enlarging.shape == s.visits[1].lesion_ids.shape
    True
    >>> res.counts["new_t2_count"], res.counts["enlarging_t2_count"], len(res.table)
    (5, 1, 6)
    """
    settings = protocol if isinstance(protocol, Settings) else load_protocol(protocol)
    if overrides:
        settings = settings.with_overrides(overrides)
    steps.validate_settings(settings)
    base = _visit_images(
        baseline, settings=settings, use_atlas=use_atlas, n_threads=n_threads, what="baseline"
    )
    follow = _visit_images(
        followup, settings=settings, use_atlas=use_atlas, n_threads=n_threads, what="followup"
    )
    reg = register_visit(
        follow,
        base,
        registration=settings.section("longitudinal_registration"),
        n_threads=n_threads,
    )
    return compare(
        base,
        follow,
        transform_between(reg.transform, None),
        change=settings.section("change"),
        lesions=settings.section("lesions"),
        n_threads=n_threads,
    )


def run(
    bids_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    participant_labels: Sequence[str] | None = None,
    protocol: str | os.PathLike[str] | Settings | None = None,
    overrides: Mapping[str, Any] | None = None,
    n_procs: int = 1,
    db_url: str | None = None,
    workers: int = 1,
    scheduler_address: str | None = None,
    force: bool = False,
    report: bool = True,
) -> pd.DataFrame:
    """Process a BIDS dataset like ``lesionq run BIDS_DIR OUT_DIR participant``.

    Only new or changed visits are computed (see :func:`lesionq.batch.runner.run_dataset`).

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
    db_url : str, optional
        Results database URL (default: SQLite ``OUT/lesionq.sqlite``).
    workers : int
        Local dask workers (1: no cluster).
    scheduler_address : str, optional
        An existing dask scheduler.
    force : bool
        Recompute every visit.
    report : bool
        Render the per-subject QC reports.

    Returns
    -------
    pandas.DataFrame
        The ``OUT/visits.tsv`` rows of the visits this call looked at (failed
        visits included, with ``status == "failed"`` and a ``reason``; up-to-date
        visits with their stored results), plus an ``outcome`` column.
    """
    settings = protocol if isinstance(protocol, Settings) else load_protocol(protocol)
    if overrides:
        settings = settings.with_overrides(overrides)
    os.environ.setdefault("NIPYPE_NO_ET", "1")  # before nipype loads: no telemetry, ever
    # loads nipype (the batch's workflows): only here, after NIPYPE_NO_ET is set, so that
    # segment_t2 and compare_visits never import it
    from .batch.runner import run_dataset  # lazy: nipype after NIPYPE_NO_ET

    summary = run_dataset(
        bids_dir,
        out_dir,
        settings=settings,
        participant_labels=participant_labels,
        n_procs=n_procs,
        db_url=db_url,
        workers=workers,
        scheduler_address=scheduler_address,
        force=force,
        report=report,
        command="lesionq.api.run",
    )
    df = pd.DataFrame(list(summary.rows))
    return df[[c for c in (*VISIT_COLUMNS, "outcome") if c in df.columns]]


def check(
    bids_dir: str | os.PathLike[str], participant_labels: Sequence[str] | None = None
) -> list:
    """Run the input check battery (see :mod:`lesionq.io.checks`); returns the findings."""
    return check_dataset(bids_dir, participant_labels=participant_labels)
