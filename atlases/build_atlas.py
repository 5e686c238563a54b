#!/usr/bin/env python
"""Build lesionq's run-time atlas ``atlases/mni152_2009a/`` from offline material.

Source: the ICBM 2009a nonlinear symmetric MNI152 template (1 mm, 197x233x189)
as redistributed inside the nilearn package (``nilearn/datasets/data/``):
the skull-stripped T1 and the grey- and white-matter probability maps, stored
by nilearn as uint8 0..255. Nothing is downloaded.

Usage (from the repository root)::

    .venv/bin/python atlases/build_atlas.py            # (re)write atlases/mni152_2009a/
    .venv/bin/python atlases/build_atlas.py --check    # rebuild in a temp dir, compare sha256
    .venv/bin/python atlases/build_atlas.py --qc /tmp/atlas_qc.png   # also draw a QC figure

The build is deterministic: the same nilearn files give byte-identical
outputs (gzip written with mtime 0, fixed headers, no timestamps in the
manifest). Every rule and threshold is in :data:`PARAMS` and copied into
``manifest.json``; ``atlases/README.md`` explains them.

Outputs (all on the source grid, RAS+, 1 mm, sform/qform code 4 = MNI152)
--------------------------------------------------------------------------
``t1w.nii.gz``            uint8, the nilearn T1 values unchanged (0..255, brain only)
``brain_mask.nii.gz``     uint8 0/1: T1 > 0 (the ICBM 2009a brain mask nilearn applied)
``gm_probseg.nii.gz``     uint8, P(GM) * 255 (nilearn values unchanged)
``wm_probseg.nii.gz``     uint8, P(WM) * 255 (nilearn values unchanged)
``csf_probseg.nii.gz``    uint8, (255 - GM - WM) inside the brain mask, 0 outside (derived)
``location_dseg.nii.gz``  uint8 labels: 0 other, 1 lateral ventricles, 2 infratentorial,
                          3 cortex, 4 deep grey matter (derived, rules below)
``LICENSE.txt``, ``manifest.json``
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import os
import sys
import tempfile
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage as ndi

HERE = Path(__file__).resolve().parent
DEFAULT_OUT = HERE / "mni152_2009a"

SOURCE_FILES = {
    "t1": "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz",
    "gm": "mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz",
    "wm": "mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz",
}
ORIGINAL_FILES = {
    "t1": "mni_icbm152_t1_tal_nlin_sym_09a.nii (masked with mni_icbm152_t1_tal_nlin_sym_09a_mask.nii)",
    "gm": "mni_icbm152_gm_tal_nlin_sym_09a.nii",
    "wm": "mni_icbm152_wm_tal_nlin_sym_09a.nii",
}
ORIGINAL_URL = "https://www.bic.mni.mcgill.ca/~vfonov/icbm/2009/mni_icbm152_nlin_sym_09a_nifti.zip"
HOMEPAGE = "https://www.bic.mni.mcgill.ca/ServicesAtlases/ICBM152NLin2009"

CITATIONS = [
    "Fonov VS, Evans AC, Botteron K, Almli CR, McKinstry RC, Collins DL. Unbiased average "
    "age-appropriate atlases for pediatric studies. NeuroImage 2011;54(1):313-327. "
    "doi:10.1016/j.neuroimage.2010.07.033",
    "Fonov VS, Evans AC, McKinstry RC, Almli CR, Collins DL. Unbiased nonlinear average "
    "age-appropriate brain templates from birth to adulthood. NeuroImage 2009;47(Suppl 1):S102. "
    "doi:10.1016/S1053-8119(09)70884-5",
    "Collins DL, Zijdenbos AP, Baare WFC, Evans AC. ANIMAL+INSECT: improved cortical structure "
    "segmentation. IPMI 1999, LNCS 1613:210-223.",
]

LICENCE_NAME = "ICBM 2009a template licence (MNI / McConnell Brain Imaging Centre, permissive)"
LICENCE_TEXT = (
    "Copyright (C) 1993-2009 Louis Collins, McConnell Brain Imaging Centre, Montreal "
    "Neurological Institute, McGill University. Permission to use, copy, modify, and "
    "distribute this software and its documentation for any purpose and without fee is "
    "hereby granted, provided that the above copyright notice appear in all copies. The "
    "authors and McGill University make no representations about the suitability of this "
    'software for any purpose. It is provided "as is" without express or implied warranty. '
    "The authors are not responsible for any data loss, equipment damage, property loss, or "
    "injury to subjects or patients resulting from the use or misuse of this software package."
)

#: Location-map values (must match lesionq.core.location.LOCATION_LABELS).
LOCATION_LABELS = {
    0: "other",
    1: "lateral_ventricles",
    2: "infratentorial",
    3: "cortex",
    4: "deep_grey_matter",
}

#: Every rule of the derived maps. Coordinates are MNI152 2009a world mm (RAS+).
#: Intensities are on the T1's uint8 0..255 scale; probabilities on 0..255.
PARAMS: dict = {
    "brain_mask": {"rule": "t1 > 0"},
    "csf": {"rule": "brain_mask * clip(255 - gm - wm, 0, 255)"},
    "ventricles": {
        "dark_t1_below": 100,
        "box_mm": {"x_abs_max": 40, "y": [-80, 45], "z": [-30, 40]},
        "exclude_midline_x_abs_below_mm": 1,
        "seeds_mm": [[-6, 0, 20], [6, 0, 20]],
        "connectivity": 6,
        "sane_volume_ml": [5, 40],
    },
    "infratentorial": {
        "tentorium_prior_knots_y_mm": [-110, -90, -75, -60, -45, -30],
        "tentorium_prior_z0_mm": [-22, -20, -10, -3, -5, -8],
        "tentorium_prior_slope_per_abs_x": [0.0, 0.05, 0.3, 0.45, 0.55, 0.55],
        "tentorium_search_halfwidth_mm": 6,
        "tentorium_t1_smoothing_sigma_mm": 1.0,
        "tentorium_surface_median_mm": 9,
        "tentorium_surface_mean_mm": 5,
        "cerebellum_y_max_mm": -30,
        "brainstem_box_mm": {"x_abs_max": 18, "y": [-42, 0]},
        "brainstem_top_plane": "z <= min(-2 - 0.875 * (y + 30), -4)",
        "brainstem_tissue_t1_min": 130,
        "brainstem_seed_y_mm": -25,
        "seed_mm": [0, -25, -30],
        "sane_volume_ml": [150, 350],
    },
    "cortex": {
        "grey_dominant": "gm >= wm and gm >= csf, inside brain mask, not infratentorial",
        "exterior_dark_t1_below": 150,
        "exterior_blocked": "ventricles dilated 2 voxels, third-ventricle box |x|<=5, y in [-32, 8], z in [-14, 22]",
        "max_distance_to_exterior_mm": 4.0,
        "rule": "grey_dominant and not deep_grey_matter",
        "sane_volume_ml": [300, 900],
    },
    "deep_grey_matter": {
        "rule": "6-connected components of grey_dominant voxels farther than "
        "max_distance_to_exterior_mm from exterior CSF that hold a seed, inside box_mm",
        "seeds_mm": [
            [-12, -18, 8],
            [12, -18, 8],
            [-25, 2, 2],
            [25, 2, 2],
            [-13, 12, 10],
            [13, 12, 10],
        ],
        "box_mm": {"x_abs_max": 34, "y": [-42, 32], "z": [-12, 30]},
        "sane_volume_ml": [40, 120],
    },
    "label_priority": "ventricles(1) > infratentorial(2) > cortex(3) > deep_grey_matter(4) > other(0)",
}


# ----------------------------------------------------------------------------- helpers


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_path(path: Path) -> str:
    return sha256_bytes(path.read_bytes())


def nilearn_data_dir() -> tuple[Path, str]:
    import nilearn

    d = Path(nilearn.__file__).resolve().parent / "datasets" / "data"
    missing = [f for f in SOURCE_FILES.values() if not (d / f).is_file()]
    if missing:
        raise SystemExit(f"nilearn {nilearn.__version__} at {d} lacks {missing}")
    return d, nilearn.__version__


def world_grids(affine: np.ndarray, shape: tuple[int, int, int]) -> tuple[np.ndarray, ...]:
    """x, y, z world coordinates (mm) of every voxel, float32 (X, Y, Z) each."""
    ijk = np.indices(shape, dtype=np.float32).reshape(3, -1)
    xyz = affine[:3, :3].astype(np.float32) @ ijk + affine[:3, 3:4].astype(np.float32)
    return tuple(xyz[a].reshape(shape) for a in range(3))


def world_to_voxel(affine: np.ndarray, point_mm) -> tuple[int, int, int]:
    ijk = np.linalg.inv(affine) @ np.r_[np.asarray(point_mm, float), 1.0]
    return tuple(int(round(v)) for v in ijk[:3])


def check_range(name: str, value: float, bounds) -> None:
    lo, hi = bounds
    if not lo <= value <= hi:
        raise SystemExit(f"sanity check failed: {name} = {value:.1f} outside [{lo}, {hi}]")


# ----------------------------------------------------------------------------- regions


def lateral_ventricles(t1, brain, x, y, z, affine) -> np.ndarray:
    """Dark (CSF-like) T1 voxels in a central box, connected to seeds in each lateral ventricle."""
    p = PARAMS["ventricles"]
    box = (
        (np.abs(x) <= p["box_mm"]["x_abs_max"])
        & (y >= p["box_mm"]["y"][0])
        & (y <= p["box_mm"]["y"][1])
        & (z >= p["box_mm"]["z"][0])
        & (z <= p["box_mm"]["z"][1])
    )
    cand = (
        brain & (t1 < p["dark_t1_below"]) & box & (np.abs(x) >= p["exclude_midline_x_abs_below_mm"])
    )
    lab, _ = ndi.label(cand)  # 6-connectivity
    out = np.zeros(t1.shape, dtype=bool)
    for seed in p["seeds_mm"]:
        ijk = world_to_voxel(affine, seed)
        lid = lab[ijk]
        if lid == 0:
            raise SystemExit(f"ventricle seed {seed} mm (voxel {ijk}) is not dark (t1={t1[ijk]})")
        out |= lab == lid
    # a component touching the box faces has leaked out of the ventricles
    inner = ndi.binary_erosion(box)
    if (out & ~inner).any():
        raise SystemExit(
            "ventricle region leaks to the edge of its search box; check the threshold"
        )
    check_range("lateral ventricle volume (mL)", out.sum() / 1000.0, p["sane_volume_ml"])
    return out


def tentorium_surface(t1, brain, affine) -> np.ndarray:
    """z (mm) of the tentorium for every (x, y) column: prior plane model refined to the darkest T1."""
    p = PARAMS["infratentorial"]
    nx, ny, nz = t1.shape
    xs = affine[0, 0] * np.arange(nx) + affine[0, 3]
    ys = affine[1, 1] * np.arange(ny) + affine[1, 3]
    c = np.interp(ys, p["tentorium_prior_knots_y_mm"], p["tentorium_prior_z0_mm"])
    s = np.interp(ys, p["tentorium_prior_knots_y_mm"], p["tentorium_prior_slope_per_abs_x"])
    z0 = c[None, :] - s[None, :] * np.abs(xs)[:, None]  # (X, Y) mm
    k0 = np.rint((z0 - affine[2, 3]) / affine[2, 2]).astype(int)
    sm = ndi.gaussian_filter(t1.astype(np.float32), p["tentorium_t1_smoothing_sigma_mm"])
    hw = int(p["tentorium_search_halfwidth_mm"])
    offs = np.arange(-hw, hw + 1)
    kk = np.clip(k0[:, :, None] + offs[None, None, :], 0, nz - 1)
    ii = np.arange(nx)[:, None, None]
    jj = np.arange(ny)[None, :, None]
    vals = np.where(brain[ii, jj, kk], sm[ii, jj, kk], np.inf)
    best = np.argmin(vals, axis=2)
    # refine only where the cerebellum can be (y <= cerebellum_y_max) and >= 3 brain voxels
    ok = (np.isfinite(vals).sum(axis=2) >= 3) & (ys <= p["cerebellum_y_max_mm"])[None, :]
    kt = np.where(ok, np.take_along_axis(kk, best[:, :, None], axis=2)[:, :, 0], k0)
    zt = affine[2, 2] * kt + affine[2, 3]
    zt = ndi.median_filter(zt.astype(np.float64), size=int(p["tentorium_surface_median_mm"]))
    zt = ndi.uniform_filter(zt, size=int(p["tentorium_surface_mean_mm"]))
    return zt


def infratentorial(t1, brain, x, y, z, affine) -> np.ndarray:
    """Cerebellum (below the tentorium) + brainstem (below the diencephalon)."""
    p = PARAMS["infratentorial"]
    zt = tentorium_surface(t1, brain, affine)
    below = brain & (z < zt[:, :, None]) & (y <= p["cerebellum_y_max_mm"])

    box = p["brainstem_box_mm"]
    top = np.minimum(-2.0 - 0.875 * (y + 30.0), -4.0)
    win = (
        brain
        & (np.abs(x) <= box["x_abs_max"])
        & (y >= box["y"][0])
        & (y <= box["y"][1])
        & (z <= top)
    )
    tissue = win & (t1 >= p["brainstem_tissue_t1_min"])
    i_mid = world_to_voxel(affine, (0, 0, 0))[0]
    j_seed = world_to_voxel(affine, (0, p["brainstem_seed_y_mm"], 0))[1]
    stem = np.zeros(t1.shape, dtype=bool)
    for k in range(t1.shape[2]):
        sl = tissue[:, :, k]
        if not sl.any():
            continue
        lab, _ = ndi.label(sl)
        col = lab[i_mid, :]
        js = np.flatnonzero(col)
        if js.size == 0:
            continue
        jbest = js[np.argmin(np.abs(js - j_seed))]  # midline tissue nearest y = seed
        stem[:, :, k] = lab == col[jbest]
    region = below | stem
    lab, _ = ndi.label(region)
    seed = world_to_voxel(affine, p["seed_mm"])
    if lab[seed] == 0:
        raise SystemExit(f"infratentorial seed {p['seed_mm']} mm is outside the region")
    out = ndi.binary_fill_holes(lab == lab[seed]) & brain
    check_range("infratentorial volume (mL)", out.sum() / 1000.0, p["sane_volume_ml"])
    return out


def cortex_and_deep_gm(t1, gm, wm, csf, brain, infra, vent, x, y, z, affine):
    """Split supratentorial grey-dominant voxels into deep grey matter and cortex.

    Exterior CSF = background plus dark T1 voxels connected to it (sulci, fissures,
    cisterns), blocked from the ventricles. Grey voxels farther than
    ``max_distance_to_exterior_mm`` from it form components; those holding a
    deep-nucleus seed are deep grey matter, all other grey voxels are cortex.
    """
    p = PARAMS["cortex"]
    grey = brain & (gm >= wm) & (gm >= csf) & ~infra
    third = (np.abs(x) <= 5) & (y >= -32) & (y <= 8) & (z >= -14) & (z <= 22)
    block = ndi.binary_dilation(vent, iterations=2) | third
    dark = brain & (t1 < p["exterior_dark_t1_below"]) & ~block
    if brain[0, 0, 0]:
        raise SystemExit("corner voxel (0, 0, 0) is inside the brain; cannot seed the exterior")
    lab, _ = ndi.label(dark | ~brain)
    exterior = lab == lab[0, 0, 0]
    dist = ndi.distance_transform_edt(~exterior)  # 1 mm isotropic grid
    # grey matter far from exterior CSF: deep nuclei plus the fundi of deep sulci;
    # deep grey matter = its components that hold a basal-ganglia / thalamus seed
    far = grey & (dist > p["max_distance_to_exterior_mm"])
    lab, _ = ndi.label(far)  # 6-connectivity: fewer thin bridges to sulcal fundi
    ids = set()
    for seed in PARAMS["deep_grey_matter"]["seeds_mm"]:
        lid = lab[world_to_voxel(affine, seed)]
        if lid == 0:
            raise SystemExit(
                f"deep grey matter seed {seed} mm is not in far-from-exterior grey matter"
            )
        ids.add(int(lid))
    bx = PARAMS["deep_grey_matter"]["box_mm"]
    in_box = (
        (np.abs(x) <= bx["x_abs_max"])
        & (y >= bx["y"][0])
        & (y <= bx["y"][1])
        & (z >= bx["z"][0])
        & (z <= bx["z"][1])
    )
    deep = np.isin(lab, sorted(ids)) & in_box  # medial temporal grey stays cortex
    cortex = grey & ~deep
    check_range("cortex volume (mL)", cortex.sum() / 1000.0, p["sane_volume_ml"])
    # exterior CSF leaking into the ventricles would turn caudate and thalamus into "cortex"
    check_range(
        "deep grey matter volume (mL)",
        deep.sum() / 1000.0,
        PARAMS["deep_grey_matter"]["sane_volume_ml"],
    )
    return cortex, deep


# ----------------------------------------------------------------------------- writing


def nifti_bytes(
    arr: np.ndarray, affine: np.ndarray, descrip: str, intent: str | None = None
) -> bytes:
    """Deterministic .nii.gz bytes (gzip mtime 0, sform = qform = affine, code 4 MNI)."""
    img = nib.Nifti1Image(np.asarray(arr), affine)
    img.set_data_dtype(arr.dtype)
    img.set_sform(affine, code=4)
    img.set_qform(affine, code=4)
    img.header.set_xyzt_units("mm")
    img.header["descrip"] = descrip[:79].encode("ascii")
    if intent is not None:
        img.header.set_intent(intent)
    img.header["scl_slope"] = np.nan
    img.header["scl_inter"] = np.nan
    return gzip.compress(img.to_bytes(), compresslevel=9, mtime=0)


def write_atomic(dest: Path, data: bytes) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def build(out_dir: Path, qc_png: Path | None = None) -> dict:
    data_dir, nilearn_version = nilearn_data_dir()
    imgs = {k: nib.load(str(data_dir / f)) for k, f in SOURCE_FILES.items()}
    affine = np.asarray(imgs["t1"].affine, dtype=float)
    shape = imgs["t1"].shape
    for k, im in imgs.items():
        if im.shape != shape or not np.allclose(im.affine, affine):
            raise SystemExit(f"source {SOURCE_FILES[k]}: grid differs from the T1")
    t1, gm, wm = (np.asarray(imgs[k].dataobj).astype(np.uint8) for k in ("t1", "gm", "wm"))
    src_sha = {SOURCE_FILES[k]: sha256_path(data_dir / f) for k, f in SOURCE_FILES.items()}

    x, y, z = world_grids(affine, shape)
    brain = t1 > 0
    if (ndi.binary_fill_holes(brain) & ~brain).any():
        raise SystemExit("brain mask (t1 > 0) has holes; the source changed")
    csf = np.where(brain, np.clip(255 - gm.astype(np.int16) - wm.astype(np.int16), 0, 255), 0)
    csf = csf.astype(np.uint8)

    t1f = t1.astype(np.float32)
    vent = lateral_ventricles(t1f, brain, x, y, z, affine)
    infra = infratentorial(t1f, brain, x, y, z, affine)
    cortex, deep = cortex_and_deep_gm(t1f, gm, wm, csf, brain, infra, vent, x, y, z, affine)
    vz = z[vent]
    iz = z[infra]
    if not np.median(iz) < vz.min():
        raise SystemExit("infratentorial region is not below the lateral ventricles")

    loc = np.zeros(shape, dtype=np.uint8)
    loc[deep] = 4
    loc[cortex] = 3
    loc[infra] = 2
    loc[vent] = 1

    maps = {
        "t1w": (t1, "T1-weighted template (uint8 0..255, brain only)", None),
        "brain_mask": (brain.astype(np.uint8), "brain mask (t1 > 0)", None),
        "gm_probseg": (gm, "grey-matter probability x 255", None),
        "wm_probseg": (wm, "white-matter probability x 255", None),
        "csf_probseg": (csf, "CSF probability x 255 (255-GM-WM in mask)", None),
        "location_dseg": (loc, "lesion location labels (see manifest)", "label"),
    }
    describe = {
        "t1w": (
            "T1-weighted ICBM 2009a symmetric template, skull-stripped; nilearn's uint8 "
            "values unchanged.",
            "value / 255 = T1 intensity relative to the template maximum; 0 = outside the brain",
        ),
        "brain_mask": (
            "Brain mask: the voxels where the template T1 is non-zero (the ICBM 2009a "
            "brain mask nilearn applied; includes sulcal and ventricular CSF).",
            "0 = outside, 1 = brain",
        ),
        "gm_probseg": (
            "Grey-matter probability map of the ICBM 2009a symmetric template; nilearn's "
            "uint8 values unchanged.",
            "value / 255 = P(grey matter)",
        ),
        "wm_probseg": (
            "White-matter probability map of the ICBM 2009a symmetric template; nilearn's "
            "uint8 values unchanged.",
            "value / 255 = P(white matter)",
        ),
        "csf_probseg": (
            "CSF probability, derived: 255 - GM - WM inside the brain mask, 0 outside "
            "(nilearn ships no CSF map; GM + WM never exceed 255).",
            "value / 255 = P(CSF); GM + WM + CSF = 255 inside the brain mask",
        ),
        "location_dseg": (
            "Lesion location label map for the McDonald location classes, derived "
            "from the T1 and tissue maps by the rules in 'parameters' "
            "(see atlases/README.md).",
            "integer labels: " + ", ".join(f"{k} = {v}" for k, v in LOCATION_LABELS.items()),
        ),
    }
    sources_of = {
        "t1w": ["t1"],
        "brain_mask": ["t1"],
        "gm_probseg": ["gm"],
        "wm_probseg": ["wm"],
        "csf_probseg": ["t1", "gm", "wm"],
        "location_dseg": ["t1", "gm", "wm"],
    }
    vox = [float(v) for v in np.sqrt((affine[:3, :3] ** 2).sum(axis=0))]
    files = []
    blobs = {}
    for role, (arr, descrip, intent) in maps.items():
        name = f"{role}.nii.gz"
        blob = nifti_bytes(np.ascontiguousarray(arr), affine, descrip, intent)
        blobs[name] = blob
        desc, scaling = describe[role]
        entry = {
            "name": name,
            "role": role,
            "description": desc,
            "source": {
                "package": "nilearn",
                "package_version": nilearn_version,
                "files": [SOURCE_FILES[k] for k in sources_of[role]],
                "files_sha256": {
                    SOURCE_FILES[k]: src_sha[SOURCE_FILES[k]] for k in sources_of[role]
                },
                "original_files": [ORIGINAL_FILES[k] for k in sources_of[role]],
                "original_url": ORIGINAL_URL,
                "template": "ICBM 2009a Nonlinear Symmetric (MNI152NLin2009aSym)",
                "citation": CITATIONS,
                "derived_by": "atlases/build_atlas.py"
                if role in ("brain_mask", "csf_probseg", "location_dseg")
                else "copied (re-encoded, values unchanged)",
            },
            "licence": {"name": LICENCE_NAME, "text": LICENCE_TEXT},
            "sha256": sha256_bytes(blob),
            "bytes": len(blob),
            "shape": [int(s) for s in arr.shape],
            "voxel_size_mm": vox,
            "dtype": str(arr.dtype),
            "scaling": scaling,
            "affine": affine.tolist(),
        }
        if role == "location_dseg":
            entry["labels"] = {str(k): v for k, v in LOCATION_LABELS.items()}
            entry["label_volumes_ml"] = {
                LOCATION_LABELS[k]: round(float((loc == k).sum()) / 1000.0, 3)
                for k in LOCATION_LABELS
                if k
            }
        files.append(entry)

    manifest = {
        "name": "mni152_2009a",
        "format_version": 1,
        "space": "MNI152NLin2009aSym",
        "description": "Run-time atlas of lesionq: ICBM 2009a nonlinear symmetric MNI152 template "
        "(1 mm), tissue probabilities and a lesion-location label map.",
        "homepage": HOMEPAGE,
        "citation": CITATIONS,
        "licence": {"name": LICENCE_NAME, "text": LICENCE_TEXT, "file": "LICENSE.txt"},
        "generator": {
            "script": "atlases/build_atlas.py",
            "nilearn_version": nilearn_version,
            "numpy_version": np.__version__,
            "scipy_version": __import__("scipy").__version__,
            "nibabel_version": nib.__version__,
        },
        "parameters": PARAMS,
        "location_labels": {str(k): v for k, v in LOCATION_LABELS.items()},
        "files": files,
        "total_bytes": int(sum(len(b) for b in blobs.values())),
    }
    licence_txt = (
        "The files in this folder derive from the ICBM 2009a Nonlinear Symmetric MNI152\n"
        "template (" + HOMEPAGE + "),\nas redistributed in the nilearn package, "
        "and are distributed under its licence:\n\n"
        + LICENCE_TEXT
        + "\n\nPlease cite:\n"
        + "\n".join(f"- {c}" for c in CITATIONS)
        + "\n"
    )
    for name, blob in blobs.items():
        write_atomic(out_dir / name, blob)
    write_atomic(out_dir / "LICENSE.txt", licence_txt.encode("utf-8"))
    write_atomic(
        out_dir / "manifest.json",
        (json.dumps(manifest, indent=2, sort_keys=False) + "\n").encode("utf-8"),
    )
    if qc_png is not None:
        draw_qc(t1, loc, affine, qc_png)
    return manifest


def draw_qc(t1: np.ndarray, loc: np.ndarray, affine: np.ndarray, dest: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = np.array([[0, 0, 0], [1, 0.1, 0.1], [0.1, 0.5, 1], [0.1, 0.9, 0.2], [1, 0.8, 0]])

    def panel(ax, bg, lab, title):
        g = bg.astype(float) / 255.0
        rgb = np.stack([g] * 3, axis=-1)
        m = lab > 0
        rgb[m] = 0.55 * rgb[m] + 0.45 * colours[lab[m]]
        ax.imshow(np.transpose(rgb, (1, 0, 2)), origin="lower", interpolation="nearest")
        ax.set_title(title)
        ax.axis("off")

    i0, j0, k0 = world_to_voxel(affine, (0, 0, 0))
    fig, axes = plt.subplots(3, 5, figsize=(20, 13))
    for c, zz in enumerate((-40, -20, 0, 10, 25)):
        k = k0 + zz
        panel(axes[0, c], t1[:, :, k], loc[:, :, k], f"axial z={zz}")
    for c, yy in enumerate((-70, -45, -25, 0, 20)):
        j = j0 + yy
        panel(axes[1, c], t1[:, j, :], loc[:, j, :], f"coronal y={yy}")
    for c, xx in enumerate((-40, -20, -8, 0, 25)):
        i = i0 + xx
        panel(axes[2, c], t1[i, :, :], loc[i, :, :], f"sagittal x={xx}")
    fig.suptitle("location_dseg: red ventricles, blue infratentorial, green cortex, yellow deep GM")
    fig.tight_layout()
    dest.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(dest, dpi=60)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output folder")
    ap.add_argument("--qc", type=Path, default=None, help="also write a QC PNG here")
    ap.add_argument(
        "--check",
        action="store_true",
        help="rebuild into a temporary folder and compare with --out; exit 1 on any difference",
    )
    args = ap.parse_args(argv)
    if args.check:
        with tempfile.TemporaryDirectory() as tmp:
            manifest = build(Path(tmp), args.qc)
            diffs = []
            for entry in manifest["files"]:
                have = args.out / entry["name"]
                if not have.is_file() or sha256_path(have) != entry["sha256"]:
                    diffs.append(entry["name"])
            for extra in ("manifest.json", "LICENSE.txt"):
                have = args.out / extra
                if not have.is_file() or have.read_bytes() != (Path(tmp) / extra).read_bytes():
                    diffs.append(extra)
        if diffs:
            print(f"differs from a fresh build: {diffs}", file=sys.stderr)
            return 1
        print(f"{args.out}: identical to a fresh build")
        return 0
    manifest = build(args.out, args.qc)
    for entry in manifest["files"]:
        print(
            f"{entry['name']:24s} {entry['bytes'] / 1e6:6.2f} MB  {entry['dtype']:6s} {entry['sha256'][:16]}"
        )
    print(
        f"total {manifest['total_bytes'] / 1e6:.2f} MB; location volumes (mL): "
        f"{manifest['files'][-1]['label_volumes_ml']}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
