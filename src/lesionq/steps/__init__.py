"""The steps layer: in-memory processing steps, shared by the nipype interfaces and the API.

Each step takes :class:`~lesionq.types.Volume` objects (arrays + RAS affines) and
protocol sections, composes the pure core with the SimpleITK layers (preprocess,
registration) and returns frozen results. Images are neither read nor written here
(:mod:`lesionq.interfaces` adds that; :mod:`lesionq.api` calls the steps directly).

Modules
-------
:mod:`~lesionq.steps.visit`
    The T2/FLAIR steps of one visit: prepare the FLAIR, co-register the other
    contrasts, atlas priors, segment and tabulate the T2 lesions.
:mod:`~lesionq.steps.gd`
    Gadolinium-enhancing lesions of one visit.
:mod:`~lesionq.steps.black_holes`
    T1 black holes of one visit.
:mod:`~lesionq.steps.longitudinal`
    Register a subject's visits, compare two visits, track lesions.
:mod:`~lesionq.steps.registry`
    The protocol registry: section -> function, the keys each step handles and the
    keys it sets itself; :func:`validate_settings` and :func:`load_protocol` (load
    and check).

The T2/FLAIR steps and the registry's entry points are re-exported here
(``from lesionq.steps import segment_t2_volumes, validate_settings``).
"""

from __future__ import annotations

from .registry import SECTIONS, ProtocolSection, load_protocol, validate_settings
from .visit import (
    LESION_TABLE_COLUMNS,
    AtlasMaps,
    Coregistered,
    PreparedFLAIR,
    Segmented,
    Tabulated,
    VisitParameters,
    atlas_priors,
    coregister_to_flair,
    prepare_flair,
    segment_t2_volumes,
    tabulate_lesions,
    visit_parameters,
)

__all__ = [
    "LESION_TABLE_COLUMNS",
    "SECTIONS",
    "AtlasMaps",
    "Coregistered",
    "PreparedFLAIR",
    "ProtocolSection",
    "Segmented",
    "Tabulated",
    "atlas_priors",
    "coregister_to_flair",
    "load_protocol",
    "prepare_flair",
    "segment_t2_volumes",
    "tabulate_lesions",
    "validate_settings",
    "VisitParameters",
    "visit_parameters",
]
