"""Round trips of the nibabel (RAS) <-> SimpleITK (LPS) bridge."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from lesionq.errors import CorruptFileError, GeometryError, InputError, MissingInputError
from lesionq.io.sitk_bridge import (
    affine_to_sitk_geometry,
    nib_to_sitk,
    ras_matrix_to_transform,
    read_transform,
    reference_image,
    sitk_geometry_to_affine,
    sitk_to_nib,
    transform_to_ras_matrix,
    write_transform,
)


def _rotation(ax: float, ay: float, az: float) -> np.ndarray:
    cx, sx, cy, sy, cz, sz = np.cos(ax), np.sin(ax), np.cos(ay), np.sin(ay), np.cos(az), np.sin(az)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rz @ ry @ rx


def _affine(rot: np.ndarray, zooms, trans) -> np.ndarray:
    a = np.eye(4)
    a[:3, :3] = rot @ np.diag(zooms)
    a[:3, 3] = trans
    return a


AFFINES = {
    "ras_iso": _affine(np.eye(3), (1.0, 1.0, 1.0), (-90.0, -126.0, -72.0)),
    "las_mni": np.array([[-1.0, 0, 0, 90], [0, 1, 0, -126], [0, 0, 1, -72], [0, 0, 0, 1]]),
    "lps_aniso": _affine(np.diag([-1.0, -1.0, 1.0]), (0.72, 0.72, 4.0), (119.2, 99.0, -78.4)),
    "oblique_aniso": _affine(_rotation(0.1, -0.25, 0.4), (0.72, 0.8, 3.5), (10.0, -20.0, 5.0)),
    "oblique_permuted": _affine(
        _rotation(0.3, 0.2, -0.1) @ np.array([[0.0, 0, 1], [1, 0, 0], [0, 1, 0]]),
        (0.5, 1.2, 2.0),
        (-3.0, 7.0, 11.0),
    ),
    "sheared": np.array([[1.0, 0.2, 0, 1], [0, 1.1, 0, 2], [0.05, 0, 2.0, 3], [0, 0, 0, 1]]),
}


@pytest.fixture
def volume() -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.normal(size=(7, 5, 4)).astype(np.float32)


@pytest.mark.parametrize("name", sorted(AFFINES))
def test_round_trip_array_and_affine(name: str, volume: np.ndarray) -> None:
    affine = AFFINES[name]
    img = nib_to_sitk(volume, affine)
    assert img.GetSize() == volume.shape
    arr, aff = sitk_to_nib(img)
    assert arr.shape == volume.shape
    assert arr.dtype == volume.dtype
    np.testing.assert_array_equal(arr, volume)
    np.testing.assert_allclose(aff, affine, atol=1e-10)
    # voxel (i, j, k) is the same voxel on both sides
    assert img[6, 1, 3] == pytest.approx(float(volume[6, 1, 3]))


@pytest.mark.parametrize("name", sorted(AFFINES))
def test_physical_point_maps_to_same_voxel(name: str, volume: np.ndarray) -> None:
    affine = AFFINES[name]
    img = nib_to_sitk(volume, affine)
    rng = np.random.default_rng(1)
    for _ in range(5):
        ijk = rng.uniform(0, 3, size=3)
        ras = affine[:3, :3] @ ijk + affine[:3, 3]
        lps = (-ras[0], -ras[1], ras[2])
        cont = np.array(img.TransformPhysicalPointToContinuousIndex(lps))
        np.testing.assert_allclose(cont, ijk, atol=1e-9)
        back = np.array(img.TransformContinuousIndexToPhysicalPoint(tuple(ijk)))
        np.testing.assert_allclose(back, lps, atol=1e-9)


def test_matches_itk_reader_on_nifti_file(tmp_path) -> None:
    """The bridge agrees with SimpleITK's own NIfTI reader on an oblique LPS file."""
    affine = AFFINES["oblique_aniso"]
    data = np.arange(7 * 5 * 4, dtype=np.int16).reshape(7, 5, 4)
    img = nib.Nifti1Image(data, affine)
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    path = tmp_path / "x.nii.gz"
    nib.save(img, str(path))
    itk = sitk.ReadImage(str(path))
    arr, aff = sitk_to_nib(itk)
    np.testing.assert_array_equal(arr, data)
    np.testing.assert_allclose(aff, affine, atol=1e-5)  # header float32 precision
    mine = nib_to_sitk(data, affine)
    np.testing.assert_allclose(mine.GetDirection(), itk.GetDirection(), atol=1e-6)
    np.testing.assert_allclose(mine.GetOrigin(), itk.GetOrigin(), atol=1e-4)


def test_bool_becomes_uint8_and_others_kept() -> None:
    mask = np.zeros((3, 4, 5), bool)
    mask[1, 2, 3] = True
    img = nib_to_sitk(mask, np.eye(4))
    assert img.GetPixelID() == sitk.sitkUInt8
    arr, _ = sitk_to_nib(img)
    assert arr[1, 2, 3] == 1 and arr.sum() == 1
    for dtype in (np.uint16, np.int32, np.float64):
        arr, _ = sitk_to_nib(nib_to_sitk(np.ones((2, 2, 2), dtype), np.eye(4)))
        assert arr.dtype == dtype


def test_geometry_helpers_inverse() -> None:
    affine = AFFINES["oblique_permuted"]
    origin, spacing, direction = affine_to_sitk_geometry(affine)
    np.testing.assert_allclose(spacing, (0.5, 1.2, 2.0))
    np.testing.assert_allclose(sitk_geometry_to_affine(origin, spacing, direction), affine)


@pytest.mark.parametrize(
    "bad",
    [
        np.eye(3),
        np.diag([1.0, 0.0, 1.0, 1.0]),
        np.full((4, 4), np.nan),
        np.array([[1.0, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 1, 1]]),
    ],
)
def test_bad_affine_rejected(bad: np.ndarray) -> None:
    with pytest.raises(GeometryError):
        nib_to_sitk(np.zeros((2, 2, 2)), bad)


def test_non_3d_rejected() -> None:
    with pytest.raises(InputError, match="3-D"):
        nib_to_sitk(np.zeros((2, 2)), np.eye(4))


def test_reference_image_geometry() -> None:
    ref = reference_image((7, 5, 4), AFFINES["oblique_aniso"])
    _, aff = sitk_to_nib(ref)
    np.testing.assert_allclose(aff, AFFINES["oblique_aniso"], atol=1e-10)


def test_transform_ras_matrix_round_trip_and_resample_agrees() -> None:
    """A RAS matrix -> ITK transform -> resampling moves intensities where RAS says."""
    shift_ras = np.eye(4)
    shift_ras[:3, 3] = (2.0, 0.0, 0.0)  # fixed point x -> moving point x + 2 mm (to the right)
    tx = ras_matrix_to_transform(shift_ras)
    np.testing.assert_allclose(transform_to_ras_matrix(tx), shift_ras, atol=1e-12)

    affine = AFFINES["las_mni"]  # i grows to the left
    vol = np.zeros((20, 6, 6), np.float32)
    vol[10, 3, 3] = 1.0
    moving = nib_to_sitk(vol, affine)
    out = sitk.Resample(moving, moving, tx, sitk.sitkNearestNeighbor, 0.0)
    arr, _ = sitk_to_nib(out)
    # output voxel v samples moving at RAS(v) + 2 mm (right) = 2 voxels further in -i
    assert np.argwhere(arr == 1.0).tolist() == [[12, 3, 3]]


def test_transform_matrix_of_euler() -> None:
    tx = sitk.Euler3DTransform((1.0, 2.0, 3.0), 0.1, -0.2, 0.3, (4.0, -5.0, 6.0))
    m = transform_to_ras_matrix(tx)
    p_ras = np.array([10.0, -20.0, 30.0])
    q_lps = np.array(tx.TransformPoint((-p_ras[0], -p_ras[1], p_ras[2])))
    np.testing.assert_allclose(m[:3, :3] @ p_ras + m[:3, 3], q_lps * [-1, -1, 1], atol=1e-9)
    with pytest.raises(InputError, match="not linear"):
        transform_to_ras_matrix(sitk.DisplacementFieldTransform(3))


def test_transform_file_round_trip(tmp_path) -> None:
    tx = sitk.Euler3DTransform((1.0, 2.0, 3.0), 0.1, -0.2, 0.3, (4.0, -5.0, 6.0))
    path = write_transform(tx, tmp_path / "sub-x_from-T1w_to-FLAIR_mode-image_xfm.txt")
    assert path.read_text().startswith("#Insight Transform File")
    assert not list(tmp_path.glob(".*part*"))
    back = read_transform(path)
    np.testing.assert_allclose(
        transform_to_ras_matrix(back), transform_to_ras_matrix(tx), atol=1e-9
    )


def test_read_transform_errors(tmp_path) -> None:
    with pytest.raises(MissingInputError):
        read_transform(tmp_path / "nope.txt")
    bad = tmp_path / "bad.txt"
    bad.write_text("not a transform\n")
    with pytest.raises(CorruptFileError):
        read_transform(bad)
