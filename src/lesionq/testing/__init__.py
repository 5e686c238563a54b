"""Public test helpers: synthetic phantoms with known truth and a BIDS writer.

>>> from lesionq.testing import make_subject, write_bids
>>> subject = make_subject(7, n_visits=2)          # doctest: +SKIP
>>> write_bids([subject], "/tmp/phantom_bids")     # doctest: +SKIP
"""

from __future__ import annotations

from .bids import itk_transform_text, write_bids, write_bids_skeleton, write_nifti
from .phantoms import (
    CONTRASTS,
    LESION_STATUSES,
    TISSUE_LABELS,
    BlockPhantom,
    LesionTruth,
    PhantomSubject,
    PhantomVisit,
    RigidMotion,
    default_weeks,
    make_block_phantom,
    make_subject,
    render_lesion_labels,
)

__all__ = [
    "CONTRASTS",
    "LESION_STATUSES",
    "TISSUE_LABELS",
    "BlockPhantom",
    "LesionTruth",
    "PhantomSubject",
    "PhantomVisit",
    "RigidMotion",
    "default_weeks",
    "make_block_phantom",
    "make_subject",
    "render_lesion_labels",
    "write_bids",
    "write_bids_skeleton",
    "write_nifti",
    "itk_transform_text",
]
