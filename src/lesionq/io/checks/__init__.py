"""Input check battery: small checks that return findings, run once at the boundary.

In the style of nibabel's ``batteryrunners``: every check is a small function
that looks at one thing and returns a list of :class:`Finding`; the battery is a
plain tuple of those functions (:data:`IMAGE_CHECKS`, :data:`VISIT_CHECKS`) so a
test can run a single check. Nothing is repaired here.

Submodules
----------
:mod:`~lesionq.io.checks.read`
    The findings model (:class:`Finding`, :data:`Level`, :func:`has_errors`,
    :func:`raise_on_errors`, :func:`format_findings`), :class:`LoadedImage`, and
    reading one file safely (:func:`read_image`, :func:`file_problem`: the
    ``Files`` codes below).
:mod:`~lesionq.io.checks.image`
    Checks on one image (:data:`IMAGE_CHECKS`, :func:`run_image_checks`, the
    ``Images`` codes below) and their thresholds (:class:`CheckLimits`).
:mod:`~lesionq.io.checks.visit`
    Checks across the contrasts of one visit (:data:`VISIT_CHECKS`, the
    ``Visits`` codes below) and the entry points :func:`check_visit` and
    :func:`check_dataset`.

Every public name is re-exported here; import from ``lesionq.io.checks``.

Levels
------
``error``
    The visit cannot be processed; the pipeline fails that visit with the
    finding's message (see :func:`raise_on_errors`).
``warning``
    Printed; processing goes on, but results may be affected.
``info``
    Facts worth a line in a QC report (orientation, a second grid...).

Finding codes (stable; tests and reports rely on them)
------------------------------------------------------
Layout (from :func:`lesionq.io.bids.layout_problems`): ``bids-dir-missing``,
``no-dataset-description``, ``dataset-description-invalid``,
``dataset-description-incomplete``, ``no-subjects``, ``participant-missing``,
``participant-label-invalid``, ``mixed-session-layout``, ``sessions-tsv-invalid``.

Files: ``file-missing``, ``symlink-loop``, ``permission-denied``,
``not-regular-file``, ``file-unreadable``, ``not-nifti``, ``truncated``,
``corrupt-gzip``, ``corrupt-data``.

Images: ``not-3d``, ``header-fixed``, ``dtype-unsupported``, ``shape-tiny``, ``no-orientation``,
``affine-nonfinite``, ``affine-singular``, ``affine-shear``,
``voxel-size-invalid``, ``voxel-size-implausible``, ``thick-slices``,
``anisotropic-voxels``, ``qform-sform-mismatch``, ``orientation``, ``oblique``,
``nan-values``, ``inf-values``, ``empty-image``, ``constant-image``,
``few-intensity-levels``.

Visits: ``missing-flair``, ``duplicate-contrast``, ``several-runs``,
``entity-mismatch``, ``unrecognised-image``, ``unrecognised-file``,
``acq-time-invalid``, ``different-grid``, ``fov-partial``, ``fov-mismatch``.
"""

from __future__ import annotations

from .image import (
    IMAGE_CHECKS,
    CheckLimits,
    check_affine,
    check_dimensions,
    check_dtype,
    check_finite,
    check_header_fixes,
    check_intensities,
    check_orientation,
    check_orientation_codes,
    check_qform_sform,
    check_shape,
    check_voxel_size,
    run_image_checks,
)
from .read import (
    Finding,
    Level,
    LoadedImage,
    file_problem,
    format_findings,
    has_errors,
    raise_on_errors,
    read_image,
)
from .visit import (
    VISIT_CHECKS,
    check_acq_time,
    check_dataset,
    check_duplicates,
    check_entities,
    check_grids,
    check_required_contrasts,
    check_runs,
    check_unrecognised,
    check_visit,
)

__all__ = [
    "Finding",
    "Level",
    "CheckLimits",
    "LoadedImage",
    "read_image",
    "file_problem",
    "run_image_checks",
    "IMAGE_CHECKS",
    "VISIT_CHECKS",
    "check_visit",
    "check_dataset",
    "has_errors",
    "raise_on_errors",
    "format_findings",
    # single checks
    "check_dimensions",
    "check_header_fixes",
    "check_dtype",
    "check_shape",
    "check_orientation_codes",
    "check_affine",
    "check_voxel_size",
    "check_qform_sform",
    "check_orientation",
    "check_finite",
    "check_intensities",
    "check_required_contrasts",
    "check_duplicates",
    "check_runs",
    "check_entities",
    "check_unrecognised",
    "check_acq_time",
    "check_grids",
]
