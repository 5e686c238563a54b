"""Fixtures for io tests: tiny deterministic NIfTI files and BIDS trees in tmp_path."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from lesionq.io.bids import CONTRASTS, VisitInputs

#: Shape of the synthetic images (>= the battery's 8 voxels per axis).
SHAPE = (20, 22, 16)


def _head(shape: Sequence[int] = SHAPE, seed: int = 0) -> np.ndarray:
    """Float32 'head': an ellipsoid of ~100 with seeded noise, 0 outside."""
    rng = np.random.default_rng(seed)
    grid = np.indices(shape, dtype=float)
    centre = (np.asarray(shape, dtype=float) - 1) / 2
    radii = np.asarray(shape, dtype=float) * 0.4
    r2 = sum(((g - c) / r) ** 2 for g, c, r in zip(grid, centre, radii, strict=True))
    data = np.where(r2 <= 1.0, 100.0 + rng.normal(0.0, 5.0, shape), 0.0)
    return data.astype(np.float32)


def _write(
    path: str | Path,
    data: np.ndarray | None = None,
    affine: np.ndarray | None = None,
    *,
    qform_code: int = 1,
    sform_code: int = 1,
    qform: np.ndarray | None = None,
    sform: np.ndarray | None = None,
) -> Path:
    """Write a NIfTI-1 with explicit qform/sform codes (bypasses lesionq's writer)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = _head() if data is None else np.asarray(data)
    affine = np.diag([1.0, 1.0, 1.0, 1.0]) if affine is None else np.asarray(affine, float)
    img = nib.Nifti1Image(data, affine)
    img.header.set_xyzt_units("mm", "sec")
    img.set_qform(affine if qform is None else qform, code=qform_code)
    img.set_sform(affine if sform is None else sform, code=sform_code)
    nib.save(img, str(path))
    return path


@pytest.fixture
def head_data() -> Callable[..., np.ndarray]:
    """``head_data(shape=SHAPE, seed=0)``: a deterministic head-like float32 volume."""
    return _head


@pytest.fixture
def write_nifti() -> Callable[..., Path]:
    """``write_nifti(path, data=None, affine=None, *, qform_code, sform_code, qform, sform)``."""
    return _write


@pytest.fixture
def bids_root(tmp_path: Path) -> Path:
    """An empty BIDS dataset root (with ``dataset_description.json``)."""
    root = tmp_path / "bids"
    root.mkdir()
    (root / "dataset_description.json").write_text(
        json.dumps({"Name": "test", "BIDSVersion": "1.9.0"}), encoding="utf-8"
    )
    return root


@pytest.fixture
def make_visit(bids_root: Path) -> Callable[..., VisitInputs]:
    """``make_visit(subject="01", session="01", contrasts=("flair", "t1"), **overrides)``.

    Writes one good image per contrast (same grid, identity affine) and returns
    the :class:`VisitInputs` for it; ``overrides`` maps a contrast key to a
    callable ``f(path) -> None`` that writes that file instead (to plant a
    bad input).
    """

    def _make(
        subject: str = "01",
        session: str | None = "01",
        contrasts: Sequence[str] = ("flair", "t1"),
        **overrides: Callable[[Path], object],
    ) -> VisitInputs:
        anat = bids_root / f"sub-{subject}"
        if session is not None:
            anat = anat / f"ses-{session}"
        anat = anat / "anat"
        anat.mkdir(parents=True, exist_ok=True)
        visit_id = f"sub-{subject}" + (f"_ses-{session}" if session is not None else "")
        paths: dict[str, Path] = {}
        for i, key in enumerate(contrasts):
            p = anat / f"{visit_id}_{CONTRASTS[key]}.nii.gz"
            if key in overrides:
                overrides[key](p)
            else:
                _write(p, _head(seed=i))
            paths[key] = p
        return VisitInputs(subject=subject, session=session, anat_dir=anat, **paths)

    return _make


#: uid of ``nobody`` (Debian): who root becomes in :func:`no_access`.
NOBODY_UID = 65534


@pytest.fixture
def no_access() -> Callable[[Path], contextlib.AbstractContextManager[None]]:
    """``with no_access(path):`` this process may neither read nor write ``path``.

    Permission bits do not stop root, which is who the tests run as here: for
    root, the process's effective uid becomes nobody's for the block, and
    pytest's temporary folders (root's, mode 700) are then out of its reach (a
    real ``EACCES``, as a user without access meets it). For another user,
    ``path`` gets mode 000 (a folder: 500, listable but not writable) for the block.
    """

    @contextlib.contextmanager
    def block(path: Path) -> Iterator[None]:
        if os.geteuid() == 0:
            os.seteuid(NOBODY_UID)
            try:
                yield
            finally:
                os.seteuid(0)
            return
        mode = path.stat().st_mode
        path.chmod(0o500 if path.is_dir() else 0o000)
        try:
            yield
        finally:
            path.chmod(mode)

    return block
