"""The run-time atlas: loading with checksum verification.

The atlas lives in ``atlases/<name>/`` (:data:`DEFAULT_ATLAS`, ``mni152_2009a``,
found through :func:`lesionq.config.atlases_dir`, i.e. ``$LESIONQ_ATLASES`` or
the package data, which is the repository's ``atlases/``), built by
``atlases/build_atlas.py``. Its ``manifest.json`` lists every file with its
sha256; :func:`load_atlas` checks each file against it before use and fails
loudly on any difference; the manifest's own sha256 is part of the settings hash
(:attr:`lesionq.config.Settings.atlas_sha256`). Nothing is ever downloaded.

Storage conventions (see ``atlases/README.md``)
-----------------------------------------------
All maps share one 1 mm grid (RAS+, MNI152NLin2009aSym world mm) and are stored
as uint8:

* ``t1w``: T1 template, value / 255 = intensity relative to the template max.
* ``brain_mask``: 0 / 1.
* ``gm``, ``wm``, ``csf``: value / 255 = tissue probability
  (GM + WM + CSF = 255 inside the brain mask).
* ``location``: labels of :data:`lesionq.core.location.LOCATION_LABELS`
  (1 lateral ventricles, 2 infratentorial, 3 cortex, 4 deep grey matter).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np

from ..config import DEFAULT_ATLAS, atlases_dir
from ..core.location import LOCATION_LABELS
from ..errors import CorruptFileError, GeometryError, InputError, MissingInputError
from .nifti import load_image, sha256_file

__all__ = ["DEFAULT_ATLAS", "ATLAS_ROLES", "Atlas", "load_atlas", "verify_atlas"]

log = logging.getLogger(__name__)

#: Manifest roles every atlas must provide, and their on-disk dtypes.
ATLAS_ROLES: dict[str, str] = {
    "t1w": "uint8",
    "brain_mask": "uint8",
    "gm_probseg": "uint8",
    "wm_probseg": "uint8",
    "csf_probseg": "uint8",
    "location_dseg": "uint8",
}

_REBUILD = "restore it from git or rebuild with `python atlases/build_atlas.py`"


def _readonly(a: np.ndarray) -> np.ndarray:
    a = np.ascontiguousarray(a)
    a.flags.writeable = False
    return a


@dataclass(frozen=True, eq=False)
class Atlas:
    """A loaded, verified run-time atlas (all arrays read-only, one shared grid).

    Attributes
    ----------
    name : str
    path : Path
        Folder holding ``manifest.json``.
    affine : ndarray, shape (4, 4)
        Voxel (i, j, k) to MNI152 world RAS+ mm.
    t1w : ndarray of uint8, shape (X, Y, Z)
        T1 template; ``/ 255`` = intensity relative to its maximum.
    brain_mask : ndarray of bool, shape (X, Y, Z)
    gm, wm, csf : ndarray of uint8, shape (X, Y, Z)
        Tissue probability x 255 (see :meth:`probability`).
    location : ndarray of uint8, shape (X, Y, Z)
        Location labels (:data:`lesionq.core.location.LOCATION_LABELS`).
    location_labels : Mapping[int, str]
    manifest : Mapping[str, Any]
        The parsed ``manifest.json`` (read-only view).
    """

    name: str
    path: Path
    affine: np.ndarray
    t1w: np.ndarray
    brain_mask: np.ndarray
    gm: np.ndarray
    wm: np.ndarray
    csf: np.ndarray
    location: np.ndarray
    location_labels: Mapping[int, str]
    manifest: Mapping[str, Any]

    @property
    def shape(self) -> tuple[int, int, int]:
        """Grid shape (X, Y, Z)."""
        s = self.t1w.shape
        return (int(s[0]), int(s[1]), int(s[2]))

    @property
    def voxel_size_mm(self) -> tuple[float, float, float]:
        """Voxel edge lengths in mm (column norms of the affine)."""
        n = np.sqrt((self.affine[:3, :3] ** 2).sum(axis=0))
        return (float(n[0]), float(n[1]), float(n[2]))

    def probability(self, tissue: str) -> np.ndarray:
        """Tissue probability map as float32 in [0, 1].

        Parameters
        ----------
        tissue : {"gm", "wm", "csf"}

        Returns
        -------
        ndarray of float32, shape (X, Y, Z)
        """
        maps = {"gm": self.gm, "wm": self.wm, "csf": self.csf}
        if tissue not in maps:
            raise InputError(f"tissue must be one of {sorted(maps)}, got {tissue!r}")
        return maps[tissue].astype(np.float32) / np.float32(255.0)

    def t1w_scaled(self) -> np.ndarray:
        """T1 template as float32 in [0, 1] (0 outside the brain)."""
        return self.t1w.astype(np.float32) / np.float32(255.0)

    def region(self, name: str) -> np.ndarray:
        """Boolean mask of one location label, by name (e.g. ``"lateral_ventricles"``)."""
        by_name = {v: k for k, v in self.location_labels.items()}
        if name not in by_name:
            raise InputError(f"region must be one of {sorted(by_name)}, got {name!r}")
        return self.location == by_name[name]


def _manifest_path(path: str | os.PathLike[str] | None) -> Path:
    if path is None:
        folder = atlases_dir() / DEFAULT_ATLAS
    else:
        folder = Path(path)
        if folder.name == "manifest.json":
            folder = folder.parent
    return folder / "manifest.json"


def _read_manifest(mpath: Path) -> dict[str, Any]:
    if not mpath.is_file():
        raise MissingInputError(f"{mpath}: atlas manifest not found; {_REBUILD}")
    try:
        manifest = json.loads(mpath.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CorruptFileError(
            f"{mpath}: cannot parse the atlas manifest ({exc}); {_REBUILD}"
        ) from exc
    files = manifest.get("files") if isinstance(manifest, dict) else None
    if not isinstance(files, list):
        raise CorruptFileError(f"{mpath}: manifest has no 'files' list; {_REBUILD}")
    for i, entry in enumerate(files):
        for key in ("name", "role", "sha256", "shape", "dtype"):
            if not isinstance(entry, dict) or key not in entry:
                raise CorruptFileError(f"{mpath}: files[{i}] lacks '{key}'; {_REBUILD}")
    roles = {e["role"] for e in files}
    missing = sorted(set(ATLAS_ROLES) - roles)
    if missing:
        raise CorruptFileError(f"{mpath}: manifest lists no file for roles {missing}; {_REBUILD}")
    return manifest


def verify_atlas(path: str | os.PathLike[str] | None = None) -> dict[str, str]:
    """Check every atlas file against the sha256 in its manifest.

    Parameters
    ----------
    path : path-like, optional
        Atlas folder (or its ``manifest.json``); defaults to
        ``atlases_dir() / "mni152_2009a"``.

    Returns
    -------
    dict of str to str
        File name -> verified sha256.

    Raises
    ------
    MissingInputError
        The manifest or a listed file is missing.
    CorruptFileError
        The manifest is unreadable, or a file's sha256 differs from the manifest.
    """
    mpath = _manifest_path(path)
    manifest = _read_manifest(mpath)
    out: dict[str, str] = {}
    for entry in manifest["files"]:
        f = mpath.parent / entry["name"]
        if not f.is_file():
            raise MissingInputError(f"{f}: atlas file listed in {mpath} is missing; {_REBUILD}")
        digest = sha256_file(f)
        if digest != entry["sha256"]:
            raise CorruptFileError(
                f"{f}: sha256 {digest} differs from the manifest's {entry['sha256']} "
                f"(rule: every atlas file must match {mpath}); {_REBUILD}"
            )
        out[entry["name"]] = digest
    return out


def load_atlas(path: str | os.PathLike[str] | None = None, *, verify: bool = True) -> Atlas:
    """Load the run-time atlas, verifying every file's sha256 first.

    Parameters
    ----------
    path : path-like, optional
        Atlas folder (or its ``manifest.json``); defaults to
        ``atlases_dir() / "mni152_2009a"``.
    verify : bool
        Check sha256 sums (default). Turn off only in tight loops that already
        verified the same folder.

    Returns
    -------
    Atlas

    Raises
    ------
    MissingInputError
        Manifest or file missing.
    CorruptFileError
        Checksum mismatch, unreadable file, or a shape / dtype / label table
        that differs from the manifest or from this lesionq version.
    GeometryError
        The files do not share one grid.
    """
    mpath = _manifest_path(path)
    manifest = _read_manifest(mpath)
    if verify:
        verify_atlas(mpath)
    by_role = {e["role"]: e for e in manifest["files"]}

    labels_raw = by_role["location_dseg"].get("labels", manifest.get("location_labels"))
    try:
        labels = {int(k): str(v) for k, v in dict(labels_raw).items()}
    except (TypeError, ValueError) as exc:
        raise CorruptFileError(f"{mpath}: bad location label table {labels_raw!r}") from exc
    if labels != LOCATION_LABELS:
        raise CorruptFileError(
            f"{mpath}: location labels {labels} differ from this lesionq version's "
            f"{LOCATION_LABELS}; rebuild the atlas with `python atlases/build_atlas.py`"
        )

    arrays: dict[str, np.ndarray] = {}
    affine: np.ndarray | None = None
    for role, dtype in ATLAS_ROLES.items():
        entry = by_role[role]
        f = mpath.parent / entry["name"]
        img = load_image(f)
        data = np.asanyarray(img.dataobj)
        if (
            list(data.shape) != list(entry["shape"])
            or str(data.dtype) != entry["dtype"]
            or (str(data.dtype) != dtype)
        ):
            raise CorruptFileError(
                f"{f}: shape {data.shape} / dtype {data.dtype} differ from the manifest "
                f"({entry['shape']} / {entry['dtype']}; expected dtype {dtype}); {_REBUILD}"
            )
        aff = np.asarray(img.affine, dtype=float)
        if affine is None:
            affine = aff
        elif data.shape != arrays["t1w"].shape or not np.allclose(aff, affine, atol=1e-6):
            raise GeometryError(
                f"{f}: grid differs from {by_role['t1w']['name']} in {mpath.parent}"
            )
        arrays[role] = data
    if affine is None:  # pragma: no cover - ATLAS_ROLES is never empty
        raise CorruptFileError(f"{mpath}: no atlas images loaded")
    atlas = Atlas(
        name=str(manifest.get("name", mpath.parent.name)),
        path=mpath.parent,
        affine=_readonly(affine),
        t1w=_readonly(arrays["t1w"]),
        brain_mask=_readonly(arrays["brain_mask"] > 0),
        gm=_readonly(arrays["gm_probseg"]),
        wm=_readonly(arrays["wm_probseg"]),
        csf=_readonly(arrays["csf_probseg"]),
        location=_readonly(arrays["location_dseg"]),
        location_labels=MappingProxyType(labels),
        manifest=MappingProxyType(manifest),
    )
    log.debug("loaded atlas %s from %s (verify=%s)", atlas.name, atlas.path, verify)
    return atlas
