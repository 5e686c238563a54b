"""Protocol settings: loading, freezing, hashing, overrides, binding to functions."""

from __future__ import annotations

import pytest

from lesionq.config import load_protocol, pipelines_dir
from lesionq.errors import ConfigError


def _write(tmp_path, text):
    p = tmp_path / "proto.toml"
    p.write_text(text)
    return p


def test_every_bundled_protocol_loads():
    names = sorted(p.stem for p in pipelines_dir().glob("*.toml"))
    assert "mesems_v1" in names and "mesems_testing" in names
    for name in names:
        s = load_protocol(name)
        assert s.name == name
        assert len(s.hash()) == 64


def test_settings_are_frozen_and_hash_tracks_content(tmp_path):
    s = load_protocol(_write(tmp_path, '[protocol]\nname="x"\n[lesions]\nmin_volume_mm3=3.0\n'))
    with pytest.raises(TypeError):
        s.section("lesions")["min_volume_mm3"] = 5.0  # type: ignore[index]
    s2 = s.with_overrides({"lesions.min_volume_mm3": 5.0})
    assert s2.section("lesions")["min_volume_mm3"] == 5.0
    assert s.section("lesions")["min_volume_mm3"] == 3.0
    assert s.hash() != s2.hash()
    assert s.hash() == load_protocol(tmp_path / "proto.toml").hash()


@pytest.mark.parametrize(
    "override",
    [{"lesions.nope": 1.0}, {"nosection.x": 1}, {"lesions": 1}, {"lesions.min_volume_mm3": "big"}],
)
def test_bad_overrides_are_errors(tmp_path, override):
    s = load_protocol(_write(tmp_path, '[protocol]\nname="x"\n[lesions]\nmin_volume_mm3=3.0\n'))
    with pytest.raises(ConfigError):
        s.with_overrides(override)


def test_kwargs_for_rejects_unknown_keys_naming_file(tmp_path):
    path = _write(tmp_path, '[protocol]\nname="x"\n[seg]\nthreshold=0.5\nsigma_mm=[1,2]\ntypo=1\n')
    s = load_protocol(path)

    def f(*, threshold=0.4, sigma_mm=(1.0,)):
        return threshold, sigma_mm

    with pytest.raises(ConfigError, match="typo") as info:
        s.kwargs_for("seg", f)
    assert str(path.name) in str(info.value)
    kwargs = s.kwargs_for("seg", f, exclude=("typo",))
    assert kwargs == {"threshold": 0.5, "sigma_mm": (1, 2)}


@pytest.mark.parametrize(
    "text",
    ["not toml = = ", "[lesions]\nx=1\n", '[protocol]\nname=""\n'],
)
def test_invalid_protocols(tmp_path, text):
    with pytest.raises(ConfigError):
        load_protocol(_write(tmp_path, text))


def test_unknown_protocol_name_lists_available():
    with pytest.raises(ConfigError, match="mesems_v1"):
        load_protocol("does_not_exist")


def test_settings_pickle_round_trip_keeps_hash_and_immutability():
    import pickle

    s = load_protocol("mesems_testing").with_overrides({"segmentation.seed_z": 4.5})
    t = pickle.loads(pickle.dumps(s))
    assert t == s
    assert t.hash() == s.hash()
    assert t.section("segmentation")["seed_z"] == 4.5
    with pytest.raises(TypeError):
        t.section("segmentation")["seed_z"] = 1.0  # type: ignore[index]
