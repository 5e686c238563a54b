#!/usr/bin/env python3
"""The annotated real dev scans of ``../shared/data`` and their prepared pipeline inputs.

One list of the cross-sectional T2-lesion dev scans (every scan of every source
that has an expert lesion mask), and a cache of what the visit pipeline feeds
the segmentation step for each: bias-corrected FLAIR, brain mask, T1w/T2w
rigidly registered onto the FLAIR grid and the atlas priors, computed with the
pipeline's own step functions (:mod:`lesionq.steps`) and the named protocol.
The benchmark and the training script read this cache, so a change of the
segmentation method is measured on exactly the inputs ``lesionq run`` gives it.

Nothing here copies the shared data: the cache lives in
``benchmarks/_scratch/dev/`` (gitignored) and is rebuilt when absent.

Usage::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/devscans.py [--protocol mesems_v1]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHARED = (REPO / ".." / "shared").resolve()
DATA = SHARED / "data"
CACHE = REPO / "benchmarks" / "_scratch" / "dev"


@dataclass(frozen=True)
class DevScan:
    """One annotated dev scan.

    Attributes
    ----------
    name : str
        ``<subject>_<session>``, unique over the dev set.
    source : str
        Dataset folder under ``../shared/data`` (``ljubljana``, ``mslesseg``, ``isbi2015``).
    subject : str
        BIDS subject label (without ``sub-``); the unit of leave-one-subject-out.
    session : str
        BIDS session label (without ``ses-``).
    truths : tuple of str
        Truth mask file names (one per rater) relative to the dataset root.
    """

    name: str
    source: str
    subject: str
    session: str
    truths: tuple[str, ...]

    @property
    def anat(self) -> Path:
        """Folder of the scan's images."""
        return DATA / self.source / f"sub-{self.subject}" / f"ses-{self.session}" / "anat"

    def image(self, suffix: str) -> Path | None:
        """Path of one contrast (``FLAIR``, ``T1w``, ``T2w``), None when absent."""
        p = self.anat / f"sub-{self.subject}_ses-{self.session}_{suffix}.nii.gz"
        return p if p.is_file() else None

    def truth_paths(self) -> list[Path]:
        """Absolute paths of the truth masks."""
        return [DATA / self.source / t for t in self.truths]


def _truth(source: str, sub: str, ses: str, desc: str) -> str:
    return (
        f"derivatives/truth/sub-{sub}/ses-{ses}/anat/sub-{sub}_ses-{ses}_label-lesion_desc-{desc}"
        "_mask.nii.gz"
    )


#: Every annotated cross-sectional dev scan (7 scans, 5 subjects, 3 sources).
DEV_SCANS: tuple[DevScan, ...] = (
    DevScan("cs07", "ljubljana", "cs07", "01", (_truth("ljubljana", "cs07", "01", "consensus"),)),
    DevScan("P14_1", "mslesseg", "P14", "01", (_truth("mslesseg", "P14", "01", "expert"),)),
    DevScan("P14_2", "mslesseg", "P14", "02", (_truth("mslesseg", "P14", "02", "expert"),)),
    DevScan("P14_3", "mslesseg", "P14", "03", (_truth("mslesseg", "P14", "03", "expert"),)),
    DevScan("P39", "mslesseg", "P39", "01", (_truth("mslesseg", "P39", "01", "expert"),)),
    DevScan(
        "tr01",
        "isbi2015",
        "training01",
        "01",
        tuple(_truth("isbi2015", "training01", "01", f"rater{r}") for r in (1, 2)),
    ),
    DevScan(
        "tr02",
        "isbi2015",
        "training02",
        "01",
        tuple(_truth("isbi2015", "training02", "01", f"rater{r}") for r in (1, 2)),
    ),
)


def available() -> bool:
    """Whether ``../shared/data`` is there (CI and the developers' machines; not a fresh clone)."""
    return all(s.image("FLAIR") is not None for s in DEV_SCANS)


def _protocol_key(protocol: str) -> str:
    from lesionq.config import load_protocol

    s = load_protocol(protocol)
    keep = {k: s.dump()[k] for k in ("bias", "brain", "registration", "template")}
    return hashlib.sha256(json.dumps(keep, sort_keys=True).encode()).hexdigest()[:12]


def prepare(scan: DevScan, protocol: str = "mesems_v1", n_threads: int = 2) -> Path:
    """Run the pipeline's preparation steps on one scan, once; return its cache folder.

    The folder holds ``flair.nii.gz``, ``brain.nii.gz``, ``t1.nii.gz`` / ``t2.nii.gz``
    (when the scan has them, on the FLAIR grid), ``prior_{wm,gm,csf}.nii.gz`` and
    ``truth<k>.nii.gz`` (the rater masks resampled onto the FLAIR grid, nearest
    neighbour by world coordinates, for features and training only; scoring
    always uses the scorer on the original truth grid).
    """
    import SimpleITK as sitk

    from lesionq.config import load_protocol
    from lesionq.io.nifti import load_array, save_image
    from lesionq.io.sitk_bridge import nib_to_sitk, sitk_to_nib
    from lesionq.steps import atlas_priors, coregister_to_flair, prepare_flair
    from lesionq.types import Volume

    out = CACHE / _protocol_key(protocol) / scan.name
    if (out / "done.json").is_file():
        return out
    out.mkdir(parents=True, exist_ok=True)
    s = load_protocol(protocol)
    t0 = time.perf_counter()
    fl_arr, fl_aff = load_array(scan.image("FLAIR"))
    prep = prepare_flair(
        Volume(fl_arr, fl_aff, "FLAIR"),
        bias=s.section("bias"),
        brain=s.section("brain"),
        n_threads=n_threads,
    )
    save_image(prep.flair.array, fl_aff, out / "flair.nii.gz")
    save_image(prep.brain_mask.array, fl_aff, out / "brain.nii.gz", dtype=np.uint8)
    t1v = None
    for key, suffix in (("t1", "T1w"), ("t2", "T2w")):
        p = scan.image(suffix)
        if p is None:
            continue
        arr, aff = load_array(p)
        co = coregister_to_flair(
            Volume(arr, aff, suffix),
            prep.flair,
            prep.brain_mask,
            skull_stripped=prep.skull_stripped,
            bias=s.section("bias"),
            registration=s.section("registration"),
            n_threads=n_threads,
        )
        save_image(co.image.array, fl_aff, out / f"{key}.nii.gz")
        if key == "t1":
            t1v = co.image
    template = dict(s.section("template"))
    template.pop("enabled", None)
    pri = atlas_priors(prep.flair, prep.brain_mask, t1=t1v, template=template, n_threads=n_threads)
    for key in ("wm", "gm", "csf"):
        save_image(pri.maps[key].array, fl_aff, out / f"prior_{key}.nii.gz")
    save_image(pri.maps["location"].array, fl_aff, out / "location.nii.gz", dtype=np.uint8)
    ref = nib_to_sitk(prep.flair.array, fl_aff)
    for k, tp in enumerate(scan.truth_paths(), start=1):
        tr = sitk.ReadImage(str(tp))
        res = sitk.Resample(tr, ref, sitk.Transform(), sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)
        arr, _ = sitk_to_nib(res)
        save_image(arr, fl_aff, out / f"truth{k}.nii.gz", dtype=np.uint8)
    (out / "done.json").write_text(
        json.dumps({"protocol": protocol, "seconds": time.perf_counter() - t0}) + "\n"
    )
    return out


def load(scan: DevScan, protocol: str = "mesems_v1") -> dict[str, np.ndarray | None]:
    """The cached inputs of one scan as arrays (keys as the file stems; ``affine`` too)."""
    from lesionq.io.nifti import load_array

    folder = prepare(scan, protocol)
    out: dict[str, np.ndarray | None] = {}
    for stem in ("flair", "brain", "t1", "t2", "prior_wm", "prior_gm", "prior_csf", "location"):
        p = folder / f"{stem}.nii.gz"
        if p.is_file():
            arr, aff = load_array(p)
            out[stem] = arr
            out["affine"] = aff
        else:
            out[stem] = None
    out["truths"] = [  # type: ignore[assignment]
        load_array(folder / f"truth{k}.nii.gz")[0] > 0 for k in range(1, len(scan.truths) + 1)
    ]
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--protocol", default="mesems_v1")
    ap.add_argument("--n-threads", type=int, default=2)
    a = ap.parse_args()
    if not available():
        print(f"skipped: the shared dev data is not at {DATA}")
        return 0
    for scan in DEV_SCANS:
        t0 = time.perf_counter()
        folder = prepare(scan, a.protocol, a.n_threads)
        print(f"{scan.name}: {folder} ({time.perf_counter() - t0:.1f} s)", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
