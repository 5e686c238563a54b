"""The protocol registry: each protocol section, the function it parameterises, and its keys.

A protocol (``pipelines/*.toml``, :func:`lesionq.config.load_protocol`) is a set of
sections; each section holds keyword arguments of one function of the core or of
the SimpleITK layers. This module is the one place that says, per section:

* the function (:attr:`ProtocolSection.function`; ``[longitudinal_registration]``
  picks :func:`~lesionq.registration.rigid.estimate_affine` instead when its
  ``mode`` is ``"affine"``);
* the keys the *step* reads itself (:attr:`ProtocolSection.handled`, each with its
  value check), which are not parameters of the function;
* the parameters of the function that the step sets itself
  (:attr:`ProtocolSection.set_by_step`: images, geometry, atlas maps, rules that
  belong to another section) and that a protocol must therefore never set.

:func:`validate_settings` checks a whole protocol against it and
:func:`load_protocol` loads and checks one; the steps (:mod:`lesionq.steps.gd`,
:mod:`lesionq.steps.black_holes`) take their keyword arguments from
:meth:`ProtocolSection.kwargs`, so the check and the use cannot disagree.
"""

from __future__ import annotations

import inspect
import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..config import Settings, keyword_value
from ..config import load_protocol as read_protocol
from ..core.black_holes import segment_black_holes
from ..core.change import detect_change
from ..core.components import label_lesions
from ..core.endpoints import schedule_from_protocol
from ..core.enhancement import segment_enhancing
from ..core.location import classify_locations
from ..core.segmentation import segment_lesions
from ..errors import ConfigError
from ..preprocess.bias import correct_bias
from ..preprocess.brain import brain_mask
from ..registration.rigid import estimate_affine, estimate_rigid, register_template

__all__ = [
    "OTHER_SECTIONS",
    "ProtocolSection",
    "SECTIONS",
    "load_protocol",
    "persistent_min_days",
    "validate_settings",
]


# ------------------------------------------------------------------ value checks


def _fraction(section: str, key: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
        raise ConfigError(f"[{section}] {key} must be a number in [0, 1], got {value!r}")


def _flag(section: str, key: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise ConfigError(f"[{section}] {key} must be true or false, got {value!r}")


def _one_of(*allowed: str) -> Callable[[str, str, Any], None]:
    def check(section: str, key: str, value: Any) -> None:
        if value not in allowed:
            shown = " or ".join(repr(a) for a in allowed)
            raise ConfigError(f"[{section}] {key} must be {shown}, got {value!r}")

    return check


def _millimetres(section: str, key: str, value: Any) -> None:
    ok = isinstance(value, int | float) and not isinstance(value, bool)
    if not (ok and math.isfinite(value) and value >= 0):
        raise ConfigError(f"[{section}] {key} must be a number >= 0 (mm), got {value!r}")


def _days(section: str, key: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"[{section}] {key} must be an int >= 1, got {value!r}")


# ------------------------------------------------------------------ the registry


@dataclass(frozen=True)
class ProtocolSection:
    """One protocol section and the function it parameterises.

    Attributes
    ----------
    name : str
        Section name (``[name]`` in the TOML).
    function : callable
        The function whose keyword arguments the section holds.
    handled : mapping
        Keys the step reads itself (not parameters of ``function``) -> their
        value check ``check(section, key, value)`` (raises ConfigError).
    set_by_step : tuple of str
        Parameters of ``function`` that the step sets itself; never section keys.
    step : str
        The step's name in messages (``"the Gd step"``).
    why : str
        What the step sets, for the message when a protocol sets one of them.
    variants : mapping
        ``mode`` value -> function used instead of ``function`` (the section's
        ``mode`` key must then be handled).
    """

    name: str
    function: Callable[..., Any]
    handled: Mapping[str, Callable[[str, str, Any], None]] = field(default_factory=dict)
    set_by_step: tuple[str, ...] = ()
    step: str = "the step"
    why: str = "images and geometry"
    variants: Mapping[str, Callable[..., Any]] = field(default_factory=dict)

    def function_for(self, section: Mapping[str, Any]) -> Callable[..., Any]:
        """The function the section's values parameterise (its ``mode`` variant, if any)."""
        if self.variants:
            return self.variants.get(section.get("mode", ""), self.function)
        return self.function

    def kwargs(self, section: Mapping[str, Any], source: str = "") -> dict[str, Any]:
        """Check a section's values and return the function's keyword arguments.

        Parameters
        ----------
        section : mapping
            The section's key -> value (e.g. ``settings.section("gd")``).
        source : str, optional
            Protocol file named in messages.

        Returns
        -------
        dict
            Keyword arguments for :meth:`function_for` (handled keys left out; lists
            become tuples; values deep-copied, so the caller may change them).

        Raises
        ------
        lesionq.errors.ConfigError
            A handled key with a bad value, a key the step sets itself, or a key that
            is not a parameter of the function.
        """
        where = f"protocol {source}: " if source else ""
        func = self.function_for(section)
        params = inspect.signature(func).parameters
        out: dict[str, Any] = {}
        for key, value in section.items():
            if key in self.handled:
                try:
                    self.handled[key](self.name, key, value)
                except ConfigError as exc:
                    raise ConfigError(f"{where}{exc}") from None
                continue
            if key in self.set_by_step:
                raise ConfigError(
                    f"{where}[{self.name}] {key} is set by {self.step} itself ({self.why}), "
                    f"not a [{self.name}] key"
                )
            if key not in params:
                known = sorted(k for k in params if k not in self.set_by_step) + sorted(
                    self.handled
                )
                raise ConfigError(
                    f"{where}[{self.name}] {key} is not a parameter of "
                    f"{func.__module__}.{func.__qualname__} (known: {known})"
                )
            out[key] = keyword_value(value)
        return out


_REGISTRATION_MASK = _one_of("none", "brain")

#: Section name -> :class:`ProtocolSection`: every section a protocol may hold besides
#: the trial schedule (``[protocol]``, ``[schedule]``, ``[periods]``, ``[endpoints]``, read by
#: :func:`lesionq.core.endpoints.schedule_from_protocol`) and ``[checks]``
#: (:class:`lesionq.io.checks.CheckLimits`).
SECTIONS: Mapping[str, ProtocolSection] = {
    s.name: s
    for s in (
        ProtocolSection("bias", correct_bias),
        ProtocolSection("brain", brain_mask),
        ProtocolSection(
            "registration",
            estimate_rigid,
            handled={"trust_same_grid": _flag, "fixed_mask": _REGISTRATION_MASK},
        ),
        ProtocolSection("template", register_template, handled={"enabled": _flag}),
        ProtocolSection(
            "segmentation",
            segment_lesions,
            set_by_step=("min_volume_mm3", "infratentorial_min_fraction", "n_threads"),
            step="the segmentation step",
            why="the minimum lesion volume is [lesions] min_volume_mm3, the infratentorial "
            "share is [location] infratentorial_min_fraction; threads come from the node's "
            "budget",
        ),
        ProtocolSection("lesions", label_lesions),
        ProtocolSection("location", classify_locations),
        ProtocolSection(
            "gd",
            segment_enhancing,
            handled={"confident_min": _fraction, "align_post_max_mm": _millimetres},
            set_by_step=(
                "post",
                "brain_mask",
                "voxel_size_mm",
                "pre",
                "flair",
                "priors",
                "location_map",
                "affine",
                "location_rules",
                "min_volume_mm3",
            ),
            step="the Gd step",
            why="images, geometry, atlas maps; the minimum lesion volume is [lesions] "
            "min_volume_mm3",
        ),
        ProtocolSection(
            "black_holes",
            segment_black_holes,
            handled={"persistent_min_days": _days},
            set_by_step=(
                "t1",
                "t2_labels",
                "brain_mask",
                "voxel_size_mm",
                "enhancing",
                "priors",
                "min_volume_mm3",
                "connectivity",
            ),
            step="the black-hole step",
            why="images, geometry, the Gd+ mask, atlas maps; the minimum volume and "
            "connectivity are [lesions] keys",
        ),
        ProtocolSection(
            "longitudinal_registration",
            estimate_rigid,
            handled={"mode": _one_of("rigid", "affine"), "fixed_mask": _REGISTRATION_MASK},
            set_by_step=("fixed_brain", "moving_brain"),
            step="the longitudinal registration step",
            why="the brain masks of the two visits",
            variants={"rigid": estimate_rigid, "affine": estimate_affine},
        ),
        ProtocolSection(
            "change",
            detect_change,
            set_by_step=(
                "later",
                "earlier",
                "later_brain",
                "earlier_brain",
                "later_lesions",
                "earlier_lesions",
                "voxel_size_mm",
                "earlier_voxel_size_mm",
                "wm_prior",
                "min_volume_mm3",
                "connectivity",
            ),
            step="the comparison step",
            why="images, geometry, the atlas prior; the minimum lesion volume and "
            "connectivity are [lesions] keys",
        ),
    )
}


#: Sections that are not in :data:`SECTIONS` but may appear in a protocol: its identity,
#: the trial schedule (:func:`lesionq.core.endpoints.schedule_from_protocol`) and the
#: input-check limits (:class:`lesionq.io.checks.CheckLimits`).
OTHER_SECTIONS: tuple[str, ...] = ("protocol", "schedule", "periods", "endpoints", "checks")


def persistent_min_days(section: Mapping[str, Any]) -> int:
    """``[black_holes] persistent_min_days``: days between the visits of a persistent black hole.

    Parameters
    ----------
    section : mapping
        The protocol's ``[black_holes]`` section.

    Returns
    -------
    int
        Days (>= 1); 182 (6 months) when the key is absent.

    Raises
    ------
    lesionq.errors.ConfigError
        Not an integer >= 1.
    """
    value = section.get("persistent_min_days", 182)
    _days("black_holes", "persistent_min_days", value)
    return int(value)


def validate_settings(settings: Settings) -> None:
    """Check every section of a protocol against :data:`SECTIONS` and the trial schedule.

    Parameters
    ----------
    settings : lesionq.config.Settings
        A loaded protocol (with overrides applied, if any).

    Raises
    ------
    lesionq.errors.ConfigError
        A section that is neither in :data:`SECTIONS` nor in :data:`OTHER_SECTIONS`
        (a misspelt section would otherwise be ignored without a word), a key that
        is not a parameter of its section's function (typo, removed setting), a key that the step sets itself, a handled key with a bad value
        (e.g. ``[longitudinal_registration] mode`` neither ``"rigid"`` nor
        ``"affine"``), or an inconsistent trial schedule (``[schedule]``,
        ``[periods]``, ``[endpoints]``). The message names the protocol file.
    """
    unknown = sorted(set(settings.sections) - set(SECTIONS) - set(OTHER_SECTIONS))
    if unknown:
        raise ConfigError(
            f"protocol {settings.source}: unknown section(s) {unknown} (known: "
            f"{sorted(set(SECTIONS) | set(OTHER_SECTIONS))})"
        )
    if "schedule" in settings.sections:
        schedule_from_protocol(settings.sections, source=settings.source)
    for name, entry in SECTIONS.items():
        entry.kwargs(settings.section(name), settings.source)


def load_protocol(name_or_path: str | os.PathLike[str] | None = None) -> Settings:
    """Load a pipeline protocol and check it (:func:`validate_settings`).

    Parameters
    ----------
    name_or_path : str or path-like, optional
        As :func:`lesionq.config.load_protocol` (a bundled protocol's name such as
        ``"mesems_v1"``, or a TOML file); the default protocol when None.

    Returns
    -------
    lesionq.config.Settings

    Raises
    ------
    lesionq.errors.ConfigError
        The protocol cannot be found or parsed, or it fails :func:`validate_settings`.
    """
    settings = read_protocol(name_or_path)
    validate_settings(settings)
    return settings
