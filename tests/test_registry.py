"""The protocol registry (:mod:`lesionq.steps.registry`): one place for each section's rules."""

from __future__ import annotations

import inspect

import pytest

import lesionq
from lesionq.config import Settings, _freeze
from lesionq.config import load_protocol as read_protocol
from lesionq.errors import ConfigError
from lesionq.steps import SECTIONS, load_protocol, validate_settings
from lesionq.steps.black_holes import BH_SET_BY_STEP, check_black_holes_section
from lesionq.steps.gd import GD_SET_BY_STEP
from lesionq.steps.registry import OTHER_SECTIONS

PROTOCOLS = ("mesems_v1", "mesems_testing")


def _with(settings: Settings, section: str, values: dict) -> Settings:
    data = settings.dump()
    data[section] = {**data.get(section, {}), **values}
    return Settings(settings.name, settings.source, _freeze(data))


@pytest.mark.parametrize("name", PROTOCOLS)
def test_bundled_protocols_hold_only_registered_sections(name: str) -> None:
    settings = load_protocol(name)  # loads and validates
    assert set(settings.sections) <= set(SECTIONS) | set(OTHER_SECTIONS)
    # every registered section is in the bundled protocols: none is dead
    assert set(SECTIONS) <= set(settings.sections)


def test_registry_entries_are_consistent() -> None:
    for name, entry in SECTIONS.items():
        assert entry.name == name
        params = set(inspect.signature(entry.function).parameters)
        # the keys the step sets itself are real parameters of the function ...
        assert set(entry.set_by_step) <= params, (name, set(entry.set_by_step) - params)
        # ... and a handled key is not one (it would be ambiguous), except fixed_mask:
        # a mode string in the protocol, a mask array in the registration functions
        assert not (set(entry.handled) - {"fixed_mask"}) & params, name
        for variant in entry.variants.values():
            assert set(entry.set_by_step) <= set(inspect.signature(variant).parameters), name


def test_step_constants_come_from_the_registry() -> None:
    assert GD_SET_BY_STEP == SECTIONS["gd"].set_by_step
    assert BH_SET_BY_STEP == SECTIONS["black_holes"].set_by_step


def test_public_load_protocol_validates() -> None:
    assert lesionq.load_protocol is load_protocol
    settings = lesionq.load_protocol("mesems_testing")
    assert settings.name == read_protocol("mesems_testing").name


@pytest.mark.parametrize(
    ("section", "values", "match"),
    [
        ("segmentaton", {"seed_z": 4.0}, r"unknown section\(s\) \['segmentaton'\]"),
        ("segmentation", {"seed_zz": 4.0}, "not a parameter of lesionq.core.segmentation"),
        ("segmentation", {"min_volume_mm3": 5.0}, r"\[lesions\] min_volume_mm3"),
        (
            "segmentation",
            {"infratentorial_min_fraction": 0.6},
            r"\[location\] infratentorial_min_fraction",
        ),
        ("gd", {"confident_min": 1.5}, r"\[gd\] confident_min must be a number in \[0, 1\]"),
        ("gd", {"post": 1}, "set by the Gd step itself"),
        ("gd", {"align_post_max_mm": -1.0}, r"\[gd\] align_post_max_mm must be a number >= 0"),
        ("black_holes", {"persistent_min_days": 0}, "persistent_min_days must be an int >= 1"),
        ("template", {"enabled": "yes"}, r"\[template\] enabled must be true or false"),
        ("registration", {"fixed_mask": "skull"}, "fixed_mask must be 'none' or 'brain'"),
        ("longitudinal_registration", {"mode": "bspline"}, "mode must be 'rigid' or 'affine'"),
        ("longitudinal_registration", {"fixed_brain": 1}, "set by the longitudinal registration"),
        ("change", {"connectivity": 6}, "set by the comparison step"),
    ],
)
def test_validate_settings_names_the_protocol_and_the_problem(section, values, match) -> None:
    bad = _with(read_protocol("mesems_testing"), section, values)
    with pytest.raises(ConfigError, match=match) as info:
        validate_settings(bad)
    assert "mesems_testing.toml" in str(info.value)


def test_affine_mode_is_checked_against_estimate_affine() -> None:
    base = read_protocol("mesems_testing")
    # scale_range is not a parameter of estimate_rigid; whether it passes depends on the mode
    rigid = _with(base, "longitudinal_registration", {"mode": "rigid", "scale_range": [0.9, 1.1]})
    with pytest.raises(ConfigError, match="estimate_rigid"):
        validate_settings(rigid)
    entry = SECTIONS["longitudinal_registration"]
    assert entry.function_for({"mode": "affine"}).__name__ == "estimate_affine"
    assert entry.function_for({}).__name__ == "estimate_rigid"


def test_kwargs_leave_handled_keys_out_and_copy_values() -> None:
    section = {"persistent_min_days": 30, "hypo_fraction": 0.3}
    assert check_black_holes_section(section) == {"hypo_fraction": 0.3}
    out = SECTIONS["gd"].kwargs({"confident_min": 0.7})
    assert out == {}


def test_segmentation_shares_the_location_fraction() -> None:
    """The posterior-fossa rule and the lesion table read one infratentorial share."""
    from lesionq.core.location import INFRATENTORIAL_MIN_FRACTION
    from lesionq.steps.visit import location_settings

    assert location_settings(None) == {"infratentorial_min_fraction": INFRATENTORIAL_MIN_FRACTION}
    for name in PROTOCOLS:
        loc = load_protocol(name).section("location")
        got = location_settings(loc)["infratentorial_min_fraction"]
        assert got == loc["infratentorial_min_fraction"]
