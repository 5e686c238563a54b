"""lesionq.registration: SimpleITK estimation (volumes in, transform out), resampling."""

from .rigid import (
    apply_translation,
    estimate_affine,
    estimate_rigid,
    estimate_translation,
    level_shrink_factors,
    load_transform,
    register_template,
    resample_to,
    save_transform,
)

__all__ = [
    "apply_translation",
    "estimate_affine",
    "estimate_rigid",
    "estimate_translation",
    "level_shrink_factors",
    "load_transform",
    "register_template",
    "resample_to",
    "save_transform",
]
