"""Write synthetic multi-series DICOM uploads (pydicom) from numpy volumes.

A test of the DICOM ingest needs real DICOM files: this module writes one
series per call as single-frame *MR Image Storage* files (Part 10, explicit VR
little endian, 128-byte preamble + ``DICM``) with the geometry tags a converter
needs (``ImagePositionPatient``, ``ImageOrientationPatient``, ``PixelSpacing``,
``SliceThickness``, ``SpacingBetweenSlices``), the acquisition tags the series
classifier reads, and *identifying* tags filled with distinctive values
(:class:`DicomIdentity`) so a test can prove none of them survives ingest.

Geometry convention: the volume is indexed ``volume[i, j, k]`` and ``affine``
maps ``(i, j, k)`` to world RAS+ mm (as in NIfTI). Slice ``k`` is one file;
its pixel ``(row r, column c)`` is ``volume[c, r, k]`` (columns run along ``i``,
rows along ``j``). DICOM patient coordinates are LPS, so
``ImagePositionPatient`` of slice ``k`` is ``diag(-1, -1, 1) @ (affine @ (0, 0, k, 1))[:3]``.

Everything is deterministic: UIDs come from :func:`pydicom.uid.generate_uid`
with fixed entropy sources (the ``uid_seed`` and the series number).

>>> import numpy as np, tempfile
>>> vol = np.arange(8 * 8 * 3, dtype=np.int16).reshape(8, 8, 3)
>>> spec = SeriesSpec(vol, np.diag([1.0, 1.0, 2.0, 1.0]), series_number=3, **PRESETS["t2"])
>>> with tempfile.TemporaryDirectory() as d:
...     files = write_series(spec, d)
...     len(files)
3
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    EnhancedMRImageStorage,
    ExplicitVRLittleEndian,
    MRImageStorage,
    generate_uid,
)

from ..errors import InputError

__all__ = [
    "DicomIdentity",
    "SeriesSpec",
    "PRESETS",
    "write_series",
    "write_enhanced_series",
    "write_localiser",
    "lps_geometry",
    "source_indices",
]

#: Acquisition parameters of typical clinical series (Siemens-like names), by kind.
#: Keys are keyword arguments of :class:`SeriesSpec`.
PRESETS: Mapping[str, Mapping[str, Any]] = {
    "flair": {
        "description": "t2_tirm_tra_dark-fluid",
        "scanning_sequence": ("SE", "IR"),
        "sequence_variant": ("SK", "SP", "MP"),
        "scan_options": ("IR",),
        "echo_time_ms": 81.0,
        "repetition_time_ms": 9000.0,
        "inversion_time_ms": 2500.0,
        "flip_angle_deg": 150.0,
        "acquisition_type": "2D",
    },
    "t1": {
        "description": "t1_mprage_sag_p2_iso",
        "scanning_sequence": ("GR", "IR"),
        "sequence_variant": ("SK", "SP", "MP"),
        "scan_options": ("IR",),
        "echo_time_ms": 2.3,
        "repetition_time_ms": 2300.0,
        "inversion_time_ms": 900.0,
        "flip_angle_deg": 8.0,
        "acquisition_type": "3D",
    },
    "t1ce": {
        "description": "t1_se_tra_post",
        "scanning_sequence": ("SE",),
        "sequence_variant": ("SK", "SP"),
        "scan_options": (),
        "echo_time_ms": 12.0,
        "repetition_time_ms": 550.0,
        "flip_angle_deg": 90.0,
        "acquisition_type": "2D",
        "contrast_agent": "GADOVIST 10 ML",
        "contrast_route": "IV",
    },
    "t2": {
        "description": "t2_tse_tra",
        "scanning_sequence": ("SE",),
        "sequence_variant": ("SK", "SP"),
        "scan_options": (),
        "echo_time_ms": 98.0,
        "repetition_time_ms": 5000.0,
        "flip_angle_deg": 150.0,
        "acquisition_type": "2D",
    },
    "dwi": {
        "description": "ep2d_diff_3scan_trace_b1000",
        "scanning_sequence": ("EP",),
        "sequence_variant": ("SK", "SP"),
        "scan_options": ("FS",),
        "echo_time_ms": 89.0,
        "repetition_time_ms": 6000.0,
        "flip_angle_deg": 90.0,
        "acquisition_type": "2D",
        "image_type": ("ORIGINAL", "PRIMARY", "DIFFUSION", "TRACEW", "ND"),
    },
}


@dataclass(frozen=True)
class DicomIdentity:
    """Identifying header values written into every file of a synthetic upload.

    The defaults are distinctive strings that cannot occur by chance in an
    output, so a test can search every written byte for them. Dates are DICOM
    ``YYYYMMDD`` strings, times ``HHMMSS``.
    """

    patient_name: str = "DOEXQ^JANEZ"
    patient_id: str = "PIDQ94731"
    patient_birth_date: str = "19610203"
    patient_sex: str = "F"
    patient_age: str = "058Y"
    patient_weight_kg: float = 71.5
    patient_address: str = "ADDRQ 12 LJUBLJANA"
    institution_name: str = "HOSPQ SAINT ELSEWHERE"
    institution_address: str = "INSTADDRQ 1 MAIN ST"
    referring_physician: str = "REFQ^GREGORY"
    performing_physician: str = "PERFQ^LISA"
    operators_name: str = "OPERQ^TECH"
    station_name: str = "STATQ01"
    device_serial_number: str = "SERIALQ4455"
    accession_number: str = "ACCQ778899"
    study_id: str = "STUDYQ42"
    study_description: str = "STUDYDESCQ BRAIN MS"
    study_date: str = "20190301"
    study_time: str = "093012"
    other_patient_ids: str = "OTHERIDQ55"

    def strings(self) -> tuple[str, ...]:
        """The identifying text values (PatientName split at ``^`` too), for greps."""
        out: list[str] = []
        for name in (
            "patient_name",
            "patient_id",
            "patient_birth_date",
            "patient_address",
            "institution_name",
            "institution_address",
            "referring_physician",
            "performing_physician",
            "operators_name",
            "station_name",
            "device_serial_number",
            "accession_number",
            "study_id",
            "study_description",
            "study_date",
            "other_patient_ids",
        ):
            value = str(getattr(self, name))
            out.append(value)
            out.extend(p for p in value.split("^") if len(p) >= 3)
        return tuple(dict.fromkeys(out))


@dataclass(frozen=True)
class SeriesSpec:
    """One MR series to write.

    Parameters
    ----------
    volume : ndarray, shape (X, Y, Z)
        Integral values in the int16 range (written as signed 16-bit pixels).
    affine : ndarray, shape (4, 4)
        Voxel ``(i, j, k)`` -> world RAS+ mm; columns must be orthogonal (no shear).
    series_number : int
    description : str
        ``SeriesDescription``; ``ProtocolName`` is the same unless ``protocol_name``.
    echo_time_ms, repetition_time_ms : float
    inversion_time_ms : float or None
    flip_angle_deg : float
    scanning_sequence, sequence_variant, scan_options : tuple of str
        DICOM multi-values (``SE``, ``IR``, ``GR``, ``EP``...).
    acquisition_type : {"2D", "3D"}
        ``MRAcquisitionType``.
    image_type : tuple of str
        ``ImageType`` (``DERIVED``/``MPR``/``LOCALIZER`` change the classification).
    contrast_agent, contrast_route : str or None
        ``ContrastBolusAgent`` / ``ContrastBolusRoute``.
    acquisition_time : str
        ``HHMMSS`` of the series (its date is the identity's ``study_date``
        unless ``acquisition_date``).
    acquisition_date : str or None
    series_uid : str or None
        ``SeriesInstanceUID``; derived from ``uid_seed`` and the series number
        when None (pass the same value twice to write a repeated series).
    """

    volume: np.ndarray
    affine: np.ndarray
    series_number: int
    description: str
    echo_time_ms: float = 10.0
    repetition_time_ms: float = 500.0
    inversion_time_ms: float | None = None
    flip_angle_deg: float = 90.0
    scanning_sequence: tuple[str, ...] = ("SE",)
    sequence_variant: tuple[str, ...] = ("NONE",)
    scan_options: tuple[str, ...] = ()
    acquisition_type: str = "2D"
    image_type: tuple[str, ...] = ("ORIGINAL", "PRIMARY", "M", "ND")
    contrast_agent: str | None = None
    contrast_route: str | None = None
    protocol_name: str | None = None
    acquisition_time: str = "093500"
    acquisition_date: str | None = None
    series_uid: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)


def lps_geometry(affine: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """DICOM geometry of a RAS+ voxel->world affine.

    Returns
    -------
    orientation : ndarray, shape (6,)
        ``ImageOrientationPatient``: LPS unit vectors of the ``i`` (row direction,
        along which the column index grows) and ``j`` axes.
    spacing : ndarray, shape (3,)
        ``(|a_i|, |a_j|, |a_k|)`` in mm; ``PixelSpacing`` is ``(|a_j|, |a_i|)``.
    origin_lps : ndarray, shape (3,)
        LPS position of voxel ``(0, 0, 0)`` in mm.

    Examples
    --------
    >>> o, s, p = lps_geometry(np.diag([2.0, 3.0, 4.0, 1.0]))
    >>> o.tolist(), s.tolist(), p.tolist()
    ([-1.0, 0.0, 0.0, 0.0, -1.0, 0.0], [2.0, 3.0, 4.0], [0.0, 0.0, 0.0])
    """
    a = np.asarray(affine, dtype=float)
    flip = np.diag([-1.0, -1.0, 1.0])
    cols = flip @ a[:3, :3]
    spacing = np.linalg.norm(cols, axis=0)
    if np.any(spacing <= 0):
        raise InputError(f"affine has a zero-length axis (spacing {spacing.tolist()})")
    unit = cols / spacing
    gram = unit.T @ unit
    if not np.allclose(gram, np.eye(3), atol=1e-6):
        raise InputError("affine axes are not orthogonal (rule: DICOM slices need no shear)")
    return np.concatenate([unit[:, 0], unit[:, 1]]), spacing, flip @ a[:3, 3]


def source_indices(
    image_affine: np.ndarray, image_shape: Sequence[int], source_affine: np.ndarray
) -> tuple[np.ndarray, float]:
    """Where each voxel centre of a converted image falls on the grid it was written from.

    Parameters
    ----------
    image_affine, source_affine : ndarray, shape (4, 4)
        Voxel -> world RAS+ mm of the converted image and of the source volume.
    image_shape : sequence of 3 int

    Returns
    -------
    ijk : ndarray of int, shape (3, N)
        Nearest source voxel of every image voxel (C order of ``image_shape``).
    max_offset : float
        Largest distance, in source voxels along any axis, of an image voxel centre
        from its nearest source voxel centre (0 for a lossless conversion).
    """
    ijk = np.indices(tuple(image_shape)).reshape(3, -1)
    src = (np.linalg.inv(source_affine) @ image_affine @ np.vstack([ijk, np.ones(ijk.shape[1])]))[
        :3
    ]
    nearest = np.rint(src)
    return nearest.astype(int), float(np.abs(src - nearest).max())


def _ds(value: float) -> str:
    """DICOM DS string (<= 16 characters)."""
    text = f"{value:.10g}"
    return text if len(text) <= 16 else f"{value:.6e}"


def _base_dataset(identity: DicomIdentity, study_uid: str, frame_uid: str) -> Dataset:
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = MRImageStorage
    ds.Modality = "MR"
    ds.StudyInstanceUID = study_uid
    ds.FrameOfReferenceUID = frame_uid
    ds.PatientName = identity.patient_name
    ds.PatientID = identity.patient_id
    ds.PatientBirthDate = identity.patient_birth_date
    ds.PatientSex = identity.patient_sex
    ds.PatientAge = identity.patient_age
    ds.PatientWeight = _ds(identity.patient_weight_kg)
    ds.PatientAddress = identity.patient_address
    ds.OtherPatientIDs = identity.other_patient_ids
    ds.InstitutionName = identity.institution_name
    ds.InstitutionAddress = identity.institution_address
    ds.ReferringPhysicianName = identity.referring_physician
    ds.PerformingPhysicianName = identity.performing_physician
    ds.OperatorsName = identity.operators_name
    ds.StationName = identity.station_name
    ds.DeviceSerialNumber = identity.device_serial_number
    ds.AccessionNumber = identity.accession_number
    ds.StudyID = identity.study_id
    ds.StudyDescription = identity.study_description
    ds.StudyDate = identity.study_date
    ds.StudyTime = identity.study_time
    ds.Manufacturer = "SIEMENS"
    ds.ManufacturerModelName = "Skyra"
    ds.MagneticFieldStrength = "3"
    ds.SoftwareVersions = "syngo MR E11"
    ds.PatientPosition = "HFS"
    ds.BodyPartExamined = "BRAIN"
    return ds


def _pixels(spec: SeriesSpec) -> np.ndarray:
    """The series volume as int16, checked (3-D, integral values in range)."""
    vol = np.asarray(spec.volume)
    if vol.ndim != 3:
        raise InputError(f"series {spec.series_number}: volume must be 3-D, got {vol.shape}")
    pix = np.rint(vol).astype(np.int16)
    if not np.array_equal(pix, vol):
        raise InputError(f"series {spec.series_number}: values must be integral int16")
    return pix


def _uids(spec: SeriesSpec, uid_seed: str) -> tuple[str, str, str]:
    """Study, frame-of-reference and series UIDs (the same seed gives the same study)."""
    series_uid = spec.series_uid or generate_uid(
        entropy_srcs=[uid_seed, "series", str(spec.series_number)]
    )
    return (
        generate_uid(entropy_srcs=[uid_seed, "study"]),
        generate_uid(entropy_srcs=[uid_seed, "frame"]),
        series_uid,
    )


def write_series(
    spec: SeriesSpec,
    out_dir: str | os.PathLike[str],
    identity: DicomIdentity | None = None,
    *,
    uid_seed: str = "lesionq-test",
    file_names: Sequence[str] | None = None,
) -> list[Path]:
    """Write one series, one file per slice, into ``out_dir``.

    Parameters
    ----------
    spec : SeriesSpec
    out_dir : path-like
        Created when absent.
    identity : DicomIdentity, optional
        Identifying values (the defaults when None).
    uid_seed : str
        Entropy source of the Study/Series/SOP/FrameOfReference UIDs: the same
        seed gives the same study (one visit = one seed).
    file_names : sequence of str, optional
        One name per slice (any names; no extension needed); ``IM_<series>_<k>.dcm``
        by default.

    Returns
    -------
    list of Path
        The files, in slice order.

    Raises
    ------
    InputError
        Volume not 3-D or not integral in the int16 range; sheared affine;
        wrong number of file names.
    """
    identity = DicomIdentity() if identity is None else identity
    pix = _pixels(spec)
    nx, ny, nz = pix.shape
    names = (
        [f"IM_{spec.series_number:04d}_{k:04d}.dcm" for k in range(nz)]
        if file_names is None
        else list(file_names)
    )
    if len(names) != nz:
        raise InputError(f"series {spec.series_number}: {len(names)} file names for {nz} slices")
    orient, spacing, origin = lps_geometry(spec.affine)
    lps_aff = np.diag([-1.0, -1.0, 1.0, 1.0]) @ np.asarray(spec.affine, dtype=float)
    normal = np.cross(orient[:3], orient[3:])
    study_uid, frame_uid, series_uid = _uids(spec, uid_seed)
    date = spec.acquisition_date or identity.study_date
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for k in range(nz):
        ds = _base_dataset(identity, study_uid, frame_uid)
        sop_uid = generate_uid(entropy_srcs=[series_uid, "sop", str(k), names[k]])
        ds.SOPInstanceUID = sop_uid
        ds.SeriesInstanceUID = series_uid
        ds.SeriesNumber = spec.series_number
        ds.AcquisitionNumber = 1
        ds.InstanceNumber = k + 1
        ds.SeriesDescription = spec.description
        ds.ProtocolName = spec.protocol_name or spec.description
        ds.ImageType = list(spec.image_type)
        ds.ScanningSequence = list(spec.scanning_sequence) or ["RM"]
        ds.SequenceVariant = list(spec.sequence_variant) or ["NONE"]
        if spec.scan_options:
            ds.ScanOptions = list(spec.scan_options)
        ds.MRAcquisitionType = spec.acquisition_type
        ds.EchoTime = _ds(spec.echo_time_ms)
        ds.RepetitionTime = _ds(spec.repetition_time_ms)
        if spec.inversion_time_ms is not None:
            ds.InversionTime = _ds(spec.inversion_time_ms)
        ds.FlipAngle = _ds(spec.flip_angle_deg)
        ds.EchoTrainLength = 1
        if spec.contrast_agent is not None:
            ds.ContrastBolusAgent = spec.contrast_agent
        if spec.contrast_route is not None:
            ds.ContrastBolusRoute = spec.contrast_route
        ds.SeriesDate = date
        ds.SeriesTime = spec.acquisition_time
        ds.AcquisitionDate = date
        ds.AcquisitionTime = spec.acquisition_time
        ds.ContentDate = date
        ds.ContentTime = spec.acquisition_time
        pos = (lps_aff @ np.array([0.0, 0.0, float(k), 1.0]))[:3]
        ds.ImagePositionPatient = [_ds(v) for v in pos]
        ds.ImageOrientationPatient = [_ds(v) for v in orient]
        ds.SliceLocation = _ds(float(pos @ normal))
        ds.PixelSpacing = [_ds(spacing[1]), _ds(spacing[0])]
        ds.SliceThickness = _ds(spacing[2])
        ds.SpacingBetweenSlices = _ds(spacing[2])
        ds.Rows = ny
        ds.Columns = nx
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated = 16
        ds.BitsStored = 16
        ds.HighBit = 15
        ds.PixelRepresentation = 1
        plane = np.ascontiguousarray(pix[:, :, k].T)
        ds.PixelData = plane.astype("<i2").tobytes()
        for key, value in spec.extra.items():
            setattr(ds, key, value)
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = MRImageStorage
        meta.MediaStorageSOPInstanceUID = sop_uid
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.file_meta = meta
        path = out / names[k]
        path.parent.mkdir(parents=True, exist_ok=True)
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def _item(**values: Any) -> Dataset:
    item = Dataset()
    for key, value in values.items():
        setattr(item, key, value)
    return item


def write_enhanced_series(
    spec: SeriesSpec,
    out_dir: str | os.PathLike[str],
    identity: DicomIdentity | None = None,
    *,
    uid_seed: str = "lesionq-test",
    file_name: str | None = None,
) -> Path:
    """Write one series as a single Enhanced MR Image (multi-frame) file.

    As modern scanners export it: no classic ``EchoTime``/``RepetitionTime``/
    ``InversionTime``/``ScanningSequence``/``ImagePositionPatient`` at the top
    level; times, orientation and pixel spacing in the shared functional groups,
    each frame's position in its per-frame group, ``EchoPulseSequence`` and
    ``InversionRecovery`` instead of the sequence codes. Frame ``k`` is slice
    ``k`` of ``spec.volume`` (same geometry as :func:`write_series`).

    Returns
    -------
    Path
        The file (``IM_<series>_enhanced.dcm`` by default).
    """
    identity = DicomIdentity() if identity is None else identity
    pix = _pixels(spec)
    nx, ny, nz = pix.shape
    orient, spacing, _ = lps_geometry(spec.affine)
    lps_aff = np.diag([-1.0, -1.0, 1.0, 1.0]) @ np.asarray(spec.affine, dtype=float)
    study_uid, frame_uid, series_uid = _uids(spec, uid_seed)
    sop_uid = generate_uid(entropy_srcs=[series_uid, "sop", "enhanced"])
    date = spec.acquisition_date or identity.study_date
    ds = _base_dataset(identity, study_uid, frame_uid)
    ds.SOPClassUID = EnhancedMRImageStorage
    ds.SOPInstanceUID = sop_uid
    ds.SeriesInstanceUID = series_uid
    ds.SeriesNumber = spec.series_number
    ds.InstanceNumber = 1
    ds.SeriesDescription = spec.description
    ds.ProtocolName = spec.protocol_name or spec.description
    ds.ImageType = list(spec.image_type)
    ds.MRAcquisitionType = spec.acquisition_type
    seq = set(spec.scanning_sequence)
    ds.EchoPulseSequence = "BOTH" if {"SE", "GR"} <= seq else "GRADIENT" if "GR" in seq else "SPIN"
    ds.InversionRecovery = "YES" if "IR" in seq else "NO"
    ds.EchoPlanarPulseSequence = "YES" if "EP" in seq else "NO"
    ds.AcquisitionDateTime = f"{date}{spec.acquisition_time}"
    ds.ContentDate = date
    ds.ContentTime = spec.acquisition_time
    ds.SeriesDate = date
    ds.SeriesTime = spec.acquisition_time
    ds.NumberOfFrames = nz
    ds.Rows = ny
    ds.Columns = nx
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1
    modifier = _item(InversionRecovery="YES" if "IR" in seq else "NO")
    if spec.inversion_time_ms is not None:
        modifier.InversionTimes = [float(spec.inversion_time_ms)]
    shared = _item(
        PixelMeasuresSequence=[
            _item(
                PixelSpacing=[_ds(spacing[1]), _ds(spacing[0])],
                SliceThickness=_ds(spacing[2]),
                SpacingBetweenSlices=_ds(spacing[2]),
            )
        ],
        PlaneOrientationSequence=[_item(ImageOrientationPatient=[_ds(v) for v in orient])],
        MRTimingAndRelatedParametersSequence=[
            _item(
                RepetitionTime=float(spec.repetition_time_ms),
                FlipAngle=float(spec.flip_angle_deg),
                EchoTrainLength=1,
            )
        ],
        MREchoSequence=[_item(EffectiveEchoTime=float(spec.echo_time_ms))],
        MRModifierSequence=[modifier],
        PixelValueTransformationSequence=[
            _item(RescaleIntercept="0", RescaleSlope="1", RescaleType="US")
        ],
    )
    if spec.contrast_agent is not None:
        ds.ContrastBolusAgentSequence = [
            _item(
                CodeValue="C-B0300", CodingSchemeDesignator="SRT", CodeMeaning=spec.contrast_agent
            )  # fmt: skip
        ]
        shared.ContrastBolusUsageSequence = [
            _item(ContrastBolusAgentNumber=1, ContrastBolusAgentAdministered="YES")
        ]
    ds.SharedFunctionalGroupsSequence = [shared]
    frames = []
    for k in range(nz):
        pos = (lps_aff @ np.array([0.0, 0.0, float(k), 1.0]))[:3]
        frames.append(
            _item(
                PlanePositionSequence=[_item(ImagePositionPatient=[_ds(v) for v in pos])],
                FrameContentSequence=[
                    _item(
                        FrameAcquisitionDateTime=f"{date}{spec.acquisition_time}",
                        StackID="1",
                        InStackPositionNumber=k + 1,
                        DimensionIndexValues=[1, k + 1],
                    )
                ],
            )
        )
    ds.PerFrameFunctionalGroupsSequence = frames
    dim_uid = generate_uid(entropy_srcs=[series_uid, "dimensions"])
    ds.DimensionOrganizationSequence = [_item(DimensionOrganizationUID=dim_uid)]
    ds.DimensionIndexSequence = [
        _item(
            DimensionOrganizationUID=dim_uid,
            DimensionIndexPointer=0x00209056,
            FunctionalGroupPointer=0x00209111,
        ),  # fmt: skip  (StackID, FrameContent)
        _item(
            DimensionOrganizationUID=dim_uid,
            DimensionIndexPointer=0x00209057,
            FunctionalGroupPointer=0x00209111,
        ),  # fmt: skip  (InStackPositionNumber)
    ]
    ds.PixelData = np.ascontiguousarray(pix.transpose(2, 1, 0)).astype("<i2").tobytes()
    for key, value in spec.extra.items():
        setattr(ds, key, value)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = EnhancedMRImageStorage
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / (file_name or f"IM_{spec.series_number:04d}_enhanced.dcm")
    ds.save_as(path, enforce_file_format=True)
    return path


def write_localiser(
    out_dir: str | os.PathLike[str],
    identity: DicomIdentity | None = None,
    *,
    series_number: int = 1,
    size: int = 32,
    pixel_mm: float = 8.0,
    uid_seed: str = "lesionq-test",
    description: str = "localizer",
) -> list[Path]:
    """Write a 3-plane localiser (one sagittal, one coronal, one axial slice).

    The three slices share one ``SeriesInstanceUID``, carry ``ImageType``
    ``ORIGINAL\\PRIMARY\\LOCALIZER`` and differ in ``ImageOrientationPatient``,
    as scanner localisers do.
    """
    yy, xx = np.mgrid[:size, :size]
    disc = (((xx - size / 2) ** 2 + (yy - size / 2) ** 2) < (size / 3) ** 2) * 300
    half = size * pixel_mm / 2
    # voxel (i, j) -> RAS for the three planes; k is a dummy axis of 1 slice
    planes = {
        "ax": np.array(
            [[pixel_mm, 0, 0, -half], [0, pixel_mm, 0, -half], [0, 0, 5, 0], [0, 0, 0, 1]]
        ),
        "cor": np.array(
            [[pixel_mm, 0, 0, -half], [0, 0, 5, 0], [0, pixel_mm, 0, -half], [0, 0, 0, 1]]
        ),
        "sag": np.array(
            [[0, 0, 5, 0], [pixel_mm, 0, 0, -half], [0, pixel_mm, 0, -half], [0, 0, 0, 1]]
        ),
    }
    uid = generate_uid(entropy_srcs=[uid_seed, "series", str(series_number)])
    paths: list[Path] = []
    for n, (name, aff) in enumerate(planes.items()):
        spec = SeriesSpec(
            volume=disc.T[:, :, None].astype(np.int16),
            affine=aff.astype(float),
            series_number=series_number,
            description=description,
            scanning_sequence=("GR",),
            sequence_variant=("SP",),
            echo_time_ms=4.0,
            repetition_time_ms=8.6,
            flip_angle_deg=20.0,
            image_type=("ORIGINAL", "PRIMARY", "LOCALIZER"),
            series_uid=uid,
            acquisition_time="093100",
        )
        written = write_series(
            replace(spec, extra={"InstanceNumber": n + 1}),
            out_dir,
            identity,
            uid_seed=uid_seed,
            file_names=[f"LOC_{series_number:04d}_{name}.dcm"],
        )
        paths.extend(written)
    return paths
