"""Protocol settings: loading, freezing, hashing, overrides, binding to functions."""

from __future__ import annotations

import hashlib
import importlib.resources
import json
import pickle
import shutil
from pathlib import Path

import pytest

from lesionq.config import (
    DEFAULT_ATLAS,
    atlas_manifest_info,
    atlases_dir,
    load_protocol,
    pipelines_dir,
)
from lesionq.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]


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
    s = load_protocol("mesems_testing").with_overrides({"segmentation.seed_z": 4.5})
    t = pickle.loads(pickle.dumps(s))
    assert t == s
    assert t.hash() == s.hash()
    assert t.section("segmentation")["seed_z"] == 4.5
    with pytest.raises(TypeError):
        t.section("segmentation")["seed_z"] = 1.0  # type: ignore[index]


# ----------------------------------------------------------------------------- package data


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def _top_level_data() -> dict[str, dict[str, bytes]]:
    """The readable sources: pipelines/*.toml and every atlases/<name>/ with a manifest."""
    out = {"pipelines": {p.name: p.read_bytes() for p in (REPO / "pipelines").glob("*.toml")}}
    for manifest in (REPO / "atlases").glob("*/manifest.json"):
        out[f"atlases/{manifest.parent.name}"] = _files(manifest.parent)
    return out


def test_protocols_and_atlas_are_package_data_equal_to_the_top_level_folders(monkeypatch):
    monkeypatch.delenv("LESIONQ_PIPELINES", raising=False)
    monkeypatch.delenv("LESIONQ_ATLASES", raising=False)
    data = importlib.resources.files("lesionq") / "data"
    assert pipelines_dir() == data / "pipelines"
    assert atlases_dir() == data / "atlases"
    top = _top_level_data()
    assert "pipelines" in top and f"atlases/{DEFAULT_ATLAS}" in top
    packaged = {"pipelines": {p.name: p.read_bytes() for p in pipelines_dir().glob("*.toml")}}
    for folder in atlases_dir().iterdir():
        packaged[f"atlases/{folder.name}"] = _files(folder)
    # byte for byte, and nothing missing on either side (a new atlas needs its link)
    assert packaged.keys() == top.keys()
    for key, files in top.items():
        assert sorted(packaged[key]) == sorted(files), key
        for name, blob in files.items():
            assert packaged[key][name] == blob, f"{key}/{name}"


def test_environment_variables_override_the_package_data(tmp_path, monkeypatch):
    (tmp_path / "mine.toml").write_text('[protocol]\nname = "mine"\n')
    monkeypatch.setenv("LESIONQ_PIPELINES", str(tmp_path))
    monkeypatch.setenv("LESIONQ_ATLASES", str(tmp_path / "atlases"))
    assert pipelines_dir() == tmp_path
    assert load_protocol("mine").name == "mine"
    assert atlases_dir() == tmp_path / "atlases"


def test_the_atlas_manifest_is_part_of_the_settings_hash(tmp_path, monkeypatch):
    monkeypatch.delenv("LESIONQ_ATLASES", raising=False)
    bundled = load_protocol("mesems_testing")
    manifest = atlases_dir() / DEFAULT_ATLAS / "manifest.json"
    assert bundled.atlas_sha256 == hashlib.sha256(manifest.read_bytes()).hexdigest()
    assert atlas_manifest_info() == (str(manifest), bundled.atlas_sha256)

    # the same atlas elsewhere: same hash; another atlas (one manifest value changed): not
    other = tmp_path / "atlases" / DEFAULT_ATLAS
    shutil.copytree(manifest.parent, other)
    monkeypatch.setenv("LESIONQ_ATLASES", str(other.parent))
    assert load_protocol("mesems_testing").hash() == bundled.hash()
    body = json.loads((other / "manifest.json").read_text())
    body["name"] = f"{body.get('name', DEFAULT_ATLAS)} (rebuilt)"
    (other / "manifest.json").write_text(json.dumps(body))
    changed = load_protocol("mesems_testing")
    assert changed.dump() == bundled.dump()
    assert changed.atlas_sha256 != bundled.atlas_sha256
    assert changed.hash() != bundled.hash()
    assert changed.atlas_manifest == str(other / "manifest.json")

    # overrides and pickling (dask ships settings to its workers) keep the atlas
    over = changed.with_overrides({"lesions.min_volume_mm3": 5.0})
    assert over.atlas_sha256 == changed.atlas_sha256
    back = pickle.loads(pickle.dumps(over))
    assert (back.atlas_sha256, back.atlas_manifest) == (over.atlas_sha256, over.atlas_manifest)
    assert back.hash() == over.hash()

    # no atlas at all: no checksum, and a hash of its own
    monkeypatch.setenv("LESIONQ_ATLASES", str(tmp_path / "none"))
    missing = load_protocol("mesems_testing")
    assert missing.atlas_sha256 is None and missing.hash() not in (bundled.hash(), changed.hash())
