"""lesionq.preprocess: SimpleITK preprocessing on arrays + RAS affines.

Bias-field correction (:mod:`.bias`), brain extraction (:mod:`.brain`) and the
internal RAS reorientation some tools need (:mod:`.reorient`). Every output stays on
the grid of its input.
"""

from .bias import correct_bias, n4_shrink_factors
from .brain import (
    METHODS,
    BrainMask,
    brain_mask,
    deepbet_brain_mask,
    is_skull_stripped,
    nonzero_brain_mask,
    otsu_brain_mask,
    skull_stripped_stats,
)
from .reorient import axcodes, from_closest_ras, to_closest_ras

__all__ = [
    "correct_bias",
    "n4_shrink_factors",
    "METHODS",
    "BrainMask",
    "brain_mask",
    "deepbet_brain_mask",
    "is_skull_stripped",
    "nonzero_brain_mask",
    "otsu_brain_mask",
    "skull_stripped_stats",
    "axcodes",
    "from_closest_ras",
    "to_closest_ras",
]
