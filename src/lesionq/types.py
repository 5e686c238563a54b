"""Small frozen value types shared across layers."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .core.units import voxel_size_from_affine

__all__ = ["Volume"]


@dataclass(frozen=True, eq=False)
class Volume:
    """A 3-D image: voxel array plus its voxel-to-world affine.

    Attributes
    ----------
    array : ndarray, shape (X, Y, Z)
        Voxel data, indexed (i, j, k) as in nibabel.
    affine : ndarray, shape (4, 4)
        Maps voxel indices (i, j, k, 1) to world RAS+ coordinates in mm.
    kind : str
        What the image is (``"FLAIR"``, ``"T1w"``, ``"mask"``, ...); informational.
    """

    array: np.ndarray
    affine: np.ndarray
    kind: str = field(default="")

    def __post_init__(self) -> None:
        arr = np.asarray(self.array)
        aff = np.asarray(self.affine, dtype=float)
        if arr.ndim != 3:
            raise ValueError(f"Volume {self.kind!r}: array must be 3-D, got shape {arr.shape}")
        if aff.shape != (4, 4):
            raise ValueError(f"Volume {self.kind!r}: affine must be 4x4, got {aff.shape}")
        object.__setattr__(self, "array", arr)
        object.__setattr__(self, "affine", aff)

    @property
    def shape(self) -> tuple[int, int, int]:
        """Array shape (X, Y, Z)."""
        return tuple(int(s) for s in self.array.shape)  # type: ignore[return-value]

    @property
    def voxel_size_mm(self) -> tuple[float, float, float]:
        """Voxel edge lengths in mm along array axes (from the affine's column norms)."""
        return voxel_size_from_affine(self.affine)

    def same_grid(self, other: Volume, atol: float = 1e-4) -> bool:
        """True when both volumes have the same shape and (within ``atol`` mm) affine."""
        return self.shape == other.shape and bool(np.allclose(self.affine, other.affine, atol=atol))
