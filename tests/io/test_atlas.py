"""Tests for the run-time atlas (atlases/mni152_2009a) and lesionq.io.atlas."""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from lesionq.core.location import LOCATION_LABELS
from lesionq.errors import CorruptFileError, MissingInputError
from lesionq.io.atlas import ATLAS_ROLES, Atlas, load_atlas, verify_atlas
from lesionq.io.nifti import sha256_file

REPO = Path(__file__).resolve().parents[2]
ATLAS_DIR = REPO / "atlases" / "mni152_2009a"


@pytest.fixture(scope="module")
def atlas() -> Atlas:
    return load_atlas()


@pytest.fixture
def atlas_copy(tmp_path: Path) -> Path:
    dest = tmp_path / "mni152_2009a"
    shutil.copytree(ATLAS_DIR, dest)
    return dest


def _world(atlas: Atlas, mask: np.ndarray) -> np.ndarray:
    ijk = np.argwhere(mask).astype(float)
    return ijk @ atlas.affine[:3, :3].T + atlas.affine[:3, 3]


# ----------------------------------------------------------------------------- manifest


def test_manifest_describes_every_file():
    manifest = json.loads((ATLAS_DIR / "manifest.json").read_text())
    roles = {e["role"] for e in manifest["files"]}
    assert roles == set(ATLAS_ROLES)
    for e in manifest["files"]:
        for key in (
            "name",
            "description",
            "source",
            "licence",
            "sha256",
            "shape",
            "voxel_size_mm",
            "dtype",
            "scaling",
        ):
            assert key in e, (e["name"], key)
        assert e["source"]["package"] == "nilearn" and e["source"]["package_version"]
        assert any("Fonov" in c and "NeuroImage" in c for c in e["source"]["citation"])
        assert "Louis Collins" in e["licence"]["text"]
        assert "Permission to use, copy, modify, and distribute" in e["licence"]["text"]
        assert e["shape"] == [197, 233, 189] and e["voxel_size_mm"] == [1.0, 1.0, 1.0]
        assert e["dtype"] == "uint8"
        assert sha256_file(ATLAS_DIR / e["name"]) == e["sha256"]
    assert "Louis Collins" in (ATLAS_DIR / "LICENSE.txt").read_text()
    total = sum((ATLAS_DIR / e["name"]).stat().st_size for e in manifest["files"])
    assert total < 8_000_000  # small enough to live in git


def test_verify_atlas_default():
    got = verify_atlas()
    assert len(got) == len(ATLAS_ROLES)


# ----------------------------------------------------------------------------- contents


def test_loaded_arrays(atlas):
    assert atlas.shape == (197, 233, 189)
    assert atlas.voxel_size_mm == (1.0, 1.0, 1.0)
    assert dict(atlas.location_labels) == LOCATION_LABELS
    for arr in (atlas.t1w, atlas.brain_mask, atlas.gm, atlas.location, atlas.affine):
        assert not arr.flags.writeable
    # MNI origin lies inside the grid and inside the brain
    ijk = np.round(np.linalg.inv(atlas.affine) @ [0, 0, 0, 1]).astype(int)[:3]
    assert atlas.brain_mask[tuple(ijk)]
    np.testing.assert_array_equal(atlas.brain_mask, atlas.t1w > 0)


def test_tissue_probabilities_sum_to_one_in_brain(atlas):
    total = atlas.gm.astype(int) + atlas.wm.astype(int) + atlas.csf.astype(int)
    assert np.all(total[atlas.brain_mask] == 255)
    assert not atlas.csf[~atlas.brain_mask].any()
    p = atlas.probability("gm")
    assert p.dtype == np.float32 and 0.0 <= p.min() and p.max() <= 1.0


def test_regions_plausible(atlas):
    vv = 1e-3  # mL per 1 mm voxel
    vent = atlas.region("lateral_ventricles")
    infra = atlas.region("infratentorial")
    cortex = atlas.region("cortex")
    deep = atlas.region("deep_grey_matter")
    assert 7 <= vent.sum() * vv <= 40  # young adult lateral ventricles: ~7-40 mL
    assert 150 <= infra.sum() * vv <= 350  # cerebellum + brainstem
    assert 300 <= cortex.sum() * vv <= 1000
    assert 30 <= deep.sum() * vv <= 120
    assert not (vent & ~atlas.brain_mask).any() and not (infra & ~atlas.brain_mask).any()
    vxyz, ixyz = _world(atlas, vent), _world(atlas, infra)
    # ventricles: both hemispheres, central
    assert (vxyz[:, 0] < -2).sum() > 1000 and (vxyz[:, 0] > 2).sum() > 1000
    assert abs(vxyz[:, 0].mean()) < 2 and np.abs(vxyz.mean(axis=0)[1:]).max() < 25
    # infratentorial below the ventricles and posterior-inferior
    assert np.median(ixyz[:, 2]) < vxyz[:, 2].min()
    assert ixyz[:, 2].mean() < -20 and ixyz[:, 1].mean() < -40
    # ventricles are CSF, cortex is grey
    assert atlas.csf[vent].mean() > 200
    assert atlas.gm[cortex].mean() > atlas.wm[cortex].mean()


# ----------------------------------------------------------------------------- failures


def test_checksum_mismatch_is_loud(atlas_copy):
    f = atlas_copy / "location_dseg.nii.gz"
    data = bytearray(f.read_bytes())
    data[-10] ^= 0xFF
    f.write_bytes(bytes(data))
    with pytest.raises(CorruptFileError, match=r"location_dseg\.nii\.gz: sha256 .* differs"):
        load_atlas(atlas_copy)
    with pytest.raises(CorruptFileError, match="build_atlas.py"):
        verify_atlas(atlas_copy / "manifest.json")


def test_missing_file_and_manifest(atlas_copy):
    (atlas_copy / "wm_probseg.nii.gz").unlink()
    with pytest.raises(MissingInputError, match="wm_probseg.nii.gz"):
        load_atlas(atlas_copy)
    (atlas_copy / "manifest.json").unlink()
    with pytest.raises(MissingInputError, match="manifest"):
        load_atlas(atlas_copy)


def test_bad_manifest(atlas_copy):
    (atlas_copy / "manifest.json").write_text("{not json")
    with pytest.raises(CorruptFileError, match="cannot parse"):
        load_atlas(atlas_copy)
    (atlas_copy / "manifest.json").write_text(json.dumps({"files": []}))
    with pytest.raises(CorruptFileError, match="roles"):
        load_atlas(atlas_copy)


def test_label_table_must_match_code(atlas_copy):
    mpath = atlas_copy / "manifest.json"
    manifest = json.loads(mpath.read_text())
    for e in manifest["files"]:
        if e["role"] == "location_dseg":
            e["labels"]["3"] = "grey_matter"
    mpath.write_text(json.dumps(manifest))
    with pytest.raises(CorruptFileError, match="location labels"):
        load_atlas(atlas_copy)


def test_env_override(atlas_copy, monkeypatch):
    monkeypatch.setenv("LESIONQ_ATLASES", str(atlas_copy.parent))
    assert load_atlas(verify=False).path == atlas_copy


# ----------------------------------------------------------------------------- builder


def _builder():
    spec = importlib.util.spec_from_file_location(
        "build_atlas", REPO / "atlases" / "build_atlas.py"
    )
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_builder_labels_match_core():
    assert _builder().LOCATION_LABELS == LOCATION_LABELS


@pytest.mark.slow
def test_builder_is_deterministic():
    pytest.importorskip("nilearn")
    proc = subprocess.run(
        [sys.executable, str(REPO / "atlases" / "build_atlas.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
