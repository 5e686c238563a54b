#!/usr/bin/env python3
"""Benchmark the T2/FLAIR lesion segmentation (:func:`lesionq.core.segmentation.segment_lesions`).

What it measures, and where the inputs come from:

1. **sub-cs07** (MNI 1 mm, skull-stripped, N4-corrected; consensus truth of 3
   raters): every combination of optional inputs (T1, T2, atlas priors), each
   mask scored by the independent ``../shared/eval/score.py``, plus lesion-wise
   sensitivity by truth-lesion size band (same definitions as the scorer). The
   priors are the project's atlas registered the way the pipeline does it
   (:func:`lesionq.steps.atlas_priors`, protocol ``mesems_v1``).
2. **Misaligned priors**: the same priors shifted by 3 mm along each axis.
3. **Synthetic lesions** injected into lesion-free white matter of sub-cs07
   and of the raw sub-lo01 ses-01 scan (see :func:`inject_lesions`): detection
   rate and volume ratio by size and contrast, and new false positives.
4. **sub-lo01** ses-01 / ses-02 (raw 0.72 x 0.72 x 4 mm, with skull, bias
   field): the pipeline's own preparation (deepbet brain mask, N4, rigid
   T1/T2 -> FLAIR, atlas priors), lesion count and volume, and whether the
   dataset's change truth (lesions that shrink after ses-01, new/enlarging
   lesions at ses-02) is hit.

It rewrites ``benchmarks/results/segmentation.md``. Masks go to
``benchmarks/_scratch/segmentation/`` (gitignored).

Usage::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_segmentation.py [--skip-lo01] \\
        [--set background_sigma_mm=15.0] [--results benchmarks/_scratch/seg.md]

Timings are single runs on a shared 2-core machine: orders of magnitude only.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage as ndi

from lesionq.config import load_protocol
from lesionq.core.segmentation import SegmentationResult, segment_lesions
from lesionq.core.units import voxel_size_from_affine
from lesionq.io.nifti import load_array, save_image
from lesionq.types import Volume

REPO = Path(__file__).resolve().parents[1]
DATA = (REPO / ".." / "shared" / "data" / "ljubljana").resolve()
SCORE = (REPO / ".." / "shared" / "eval" / "score.py").resolve()
SCRATCH = REPO / "benchmarks" / "_scratch" / "segmentation"
RESULTS = REPO / "benchmarks" / "results" / "segmentation.md"
FULL = np.ones((3, 3, 3), dtype=bool)
SIZE_BANDS = ((3, 10), (10, 30), (30, 100), (100, 10**9))


# --------------------------------------------------------------------------- helpers


def score_file(pred: Path, truth: Path, xfm: Path | None = None) -> dict[str, Any]:
    """Run the independent scorer; returns its JSON."""
    cmd = [sys.executable, str(SCORE), "lesions", str(pred), str(truth)]
    if xfm is not None:
        cmd += ["--xfm", str(xfm)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out)


def components(mask: np.ndarray, min_voxels: int = 3) -> tuple[np.ndarray, int]:
    """26-connected components with fewer than ``min_voxels`` dropped (scorer's rule)."""
    lab, n = ndi.label(mask, FULL)
    if n:
        sizes = np.bincount(lab.ravel())
        small = np.flatnonzero(sizes < min_voxels)
        small = small[small > 0]
        if small.size:
            lab[np.isin(lab, small)] = 0
            lab, n = ndi.label(lab > 0, FULL)
    return lab, n


def sensitivity_by_size(pred: np.ndarray, truth: np.ndarray) -> dict[str, str]:
    """Detected / total truth lesions per size band (voxels), scorer definitions."""
    tl, tn = components(truth)
    pl, _ = components(pred)
    sizes = np.bincount(tl.ravel(), minlength=tn + 1)[1:]
    hit = np.zeros(tn, bool)
    hit[np.unique(tl[(pl > 0) & (tl > 0)]) - 1] = True
    out = {}
    for lo, hi in SIZE_BANDS:
        sel = (sizes >= lo) & (sizes < hi)
        label = f"{lo}-{hi - 1}" if hi < 10**9 else f">={lo}"
        out[label] = f"{int(hit[sel].sum())}/{int(sel.sum())}"
    return out


def template_kwargs(settings) -> dict[str, Any]:
    """``[template]`` protocol keys for :func:`lesionq.steps.atlas_priors` (minus ``enabled``)."""
    return {k: v for k, v in settings.section("template").items() if k != "enabled"}


def run_seg(flair, mask, vs, **kw) -> tuple[SegmentationResult, float]:
    t0 = time.perf_counter()
    res = segment_lesions(flair, mask, vs, **kw)
    return res, time.perf_counter() - t0


def shifted(priors: Mapping[str, np.ndarray], shift_vox: Sequence[float]) -> dict[str, np.ndarray]:
    return {
        k: np.clip(ndi.shift(v, shift_vox, order=1, mode="nearest"), 0, 1).astype(np.float32)
        for k, v in priors.items()
    }


def inject_lesions(
    flair: np.ndarray,
    t1: np.ndarray | None,
    t2: np.ndarray | None,
    candidates: np.ndarray,
    voxel_size_mm: Sequence[float],
    specs: Sequence[tuple[float, float]],
    *,
    flair_sd: float,
    t2_sd: float | None,
    min_separation_mm: float = 15.0,
    seed: int = 0,
    t2_contrast_z: float = 3.0,
    t1_drop: float = 0.12,
    supersample: int = 4,
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None, list[dict[str, Any]]]:
    """Add synthetic ellipsoidal lesions to copies of the images (benchmark helper).

    Each lesion of ``specs`` ``(volume_mm3, flair_contrast_z)`` is an ellipsoid
    (random orientation, semi-axes ratio 1 : 1 : 1-1.6) with a logistic edge
    (10 % of the radius); its centre is drawn from ``candidates`` (bool mask,
    e.g. white matter far from real lesions), at least ``min_separation_mm``
    from the others and 0.75 x its longest semi-axis + 1 mm inside
    ``candidates``. The profile ``w`` in
    [0, 1] is averaged over ``supersample``^3 sub-voxels (partial volume on
    thick slices); the FLAIR gains ``w * contrast * flair_sd``, the T2
    ``w * t2_contrast_z * t2_sd`` and the T1 is multiplied by ``1 - t1_drop * w``.
    The truth of a lesion is ``w >= 0.5``.

    Returns the three images, and one dict per lesion (``truth`` bool mask
    in a bounding box ``slices``, volume, contrast).
    """
    rng = np.random.default_rng(seed)
    vs = np.asarray(voxel_size_mm, float)
    fl = flair.astype(np.float32).copy()
    t1o = None if t1 is None else t1.astype(np.float32).copy()
    t2o = None if t2 is None else t2.astype(np.float32).copy()
    inner = ndi.distance_transform_edt(candidates, sampling=vs)
    placed: list[np.ndarray] = []
    out: list[dict[str, Any]] = []
    for volume, contrast in sorted(specs, reverse=True):  # largest first: room for it
        r = (3.0 * volume / (4.0 * math.pi)) ** (1.0 / 3.0)
        aspect = np.array([1.0, 1.0, rng.uniform(1.0, 1.6)])
        axes = r * aspect / np.prod(aspect) ** (1 / 3)
        ok = np.argwhere(inner > 0.75 * axes.max() + 1.0)
        for _ in range(500):
            c = ok[rng.integers(len(ok))]
            cm = c * vs
            if all(np.linalg.norm(cm - p) >= min_separation_mm for p in placed):
                break
        else:
            raise RuntimeError("inject_lesions: no room for another lesion")
        placed.append(cm)
        q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
        half = np.ceil((axes.max() * 1.6) / vs).astype(int) + 1
        sl = tuple(slice(max(ci - h, 0), ci + h + 1) for ci, h in zip(c, half, strict=True))
        grids = np.meshgrid(*[np.arange(s.start, s.stop) for s in sl], indexing="ij")
        w = np.zeros(grids[0].shape, np.float64)
        offs = (np.arange(supersample) + 0.5) / supersample - 0.5
        for ox in offs:
            for oy in offs:
                for oz in offs:
                    pts = np.stack(
                        [
                            (g + o - ci) * v
                            for g, o, ci, v in zip(grids, (ox, oy, oz), c, vs, strict=True)
                        ],
                        axis=-1,
                    )
                    loc = pts @ q
                    rho = np.sqrt(((loc / axes) ** 2).sum(-1))
                    w += 1.0 / (1.0 + np.exp((rho - 1.0) / 0.1))
        w /= supersample**3
        fl[sl] += (w * contrast * flair_sd).astype(np.float32)
        if t2o is not None and t2_sd is not None:
            t2o[sl] += (w * t2_contrast_z * t2_sd).astype(np.float32)
        if t1o is not None:
            t1o[sl] *= (1.0 - t1_drop * w).astype(np.float32)
        truth = w >= 0.5
        out.append(
            dict(
                slices=sl,
                truth=truth,
                volume_mm3=float(truth.sum() * np.prod(vs)),
                target_mm3=volume,
                contrast_z=contrast,
            )
        )
    return fl, t1o, t2o, out


def evaluate_injection(
    res: SegmentationResult, base: SegmentationResult, lesions: list[dict[str, Any]], vv: float
) -> list[dict[str, Any]]:
    """Per injected lesion: detected, segmented volume / true volume."""
    lab, _ = ndi.label(res.mask, FULL)
    rows = []
    for les in lesions:
        sl, t = les["slices"], les["truth"]
        ids = np.unique(lab[sl][t])
        ids = ids[ids > 0]
        seg = np.isin(lab, ids).sum() * vv if ids.size else 0.0
        rows.append(
            dict(
                target_mm3=les["target_mm3"],
                contrast_z=les["contrast_z"],
                true_mm3=les["volume_mm3"],
                detected=bool(ids.size),
                volume_ratio=seg / les["volume_mm3"] if ids.size else float("nan"),
            )
        )
    return rows


def injection_table(rows: list[dict[str, Any]]) -> list[str]:
    lines = ["| volume mm3 | contrast (NAWM SD) | detected | segmented / true volume (median) |",
             "|---:|---:|---:|---:|"]  # fmt: skip
    keys = sorted({(r["target_mm3"], r["contrast_z"]) for r in rows})
    for v, c in keys:
        sel = [r for r in rows if r["target_mm3"] == v and r["contrast_z"] == c]
        det = [r for r in sel if r["detected"]]
        ratio = np.median([r["volume_ratio"] for r in det]) if det else float("nan")
        lines.append(f"| {v:g} | {c:g} | {len(det)}/{len(sel)} | {ratio:.2f} |")
    return lines


def new_false_positives(res: SegmentationResult, base: SegmentationResult, lesions) -> int:
    """Components of ``res`` that touch neither an injected lesion nor a ``base`` component."""
    lab, n = ndi.label(res.mask, FULL)
    touched = set(np.unique(lab[base.mask]).tolist())
    for les in lesions:
        touched |= set(np.unique(lab[les["slices"]][les["truth"]]).tolist())
    return len(set(range(1, n + 1)) - touched)


# --------------------------------------------------------------------------- parts


def bench_cs07(settings, report: list[str], n_threads: int) -> dict[str, Any]:
    from lesionq.steps import atlas_priors

    anat = DATA / "sub-cs07" / "ses-01" / "anat"
    truth_path = (
        DATA / "derivatives" / "truth" / "sub-cs07" / "ses-01" / "anat"
        / "sub-cs07_ses-01_label-lesion_desc-consensus_mask.nii.gz"
    )  # fmt: skip
    flair, aff = load_array(anat / "sub-cs07_ses-01_FLAIR.nii.gz")
    t1, _ = load_array(anat / "sub-cs07_ses-01_T1w.nii.gz")
    t2, _ = load_array(anat / "sub-cs07_ses-01_T2w.nii.gz")
    truth = load_array(truth_path)[0] > 0
    brain = flair != 0  # skull-stripped input: the non-zero support (as the pipeline does)
    vs = voxel_size_from_affine(aff)
    t0 = time.perf_counter()
    maps = atlas_priors(
        Volume(flair, aff, "FLAIR"), Volume(brain.astype(np.uint8), aff, "mask"),
        t1=Volume(t1, aff, "T1w"), template=template_kwargs(settings),
        n_threads=n_threads,
    )  # fmt: skip
    t_atlas = time.perf_counter() - t0
    priors = {k: np.asarray(maps.maps[k].array, np.float32) for k in ("wm", "gm", "csf")}
    seg_kw = dict(settings.section("segmentation"))
    SCRATCH.mkdir(parents=True, exist_ok=True)

    configs = [
        ("FLAIR+T1+T2+priors (pipeline)", dict(t1=t1, t2=t2, priors=priors)),
        ("FLAIR+T1+priors (no T2)", dict(t1=t1, priors=priors)),
        ("FLAIR+T1+T2, priors=None", dict(t1=t1, t2=t2)),
        ("FLAIR+T2+priors (no T1)", dict(t2=t2, priors=priors)),
        ("FLAIR only", {}),
    ]
    report += [
        "## sub-cs07 (MNI 1 mm, 30 truth lesions >= 3 voxels, 1.3 mL)",
        "",
        f"Priors: project atlas registered to the T1 (affine) in {t_atlas:.0f} s. "
        "Scores from `../shared/eval/score.py lesions`; sensitivity by truth-lesion size "
        "(voxels) with the scorer's definitions.",
        "",
        "| inputs | Dice | lesion F1 | sens | prec | TP/FP | pred mL | sens 3-9 / 10-29 / 30-99 / >=100 | s |",
        "|---|---:|---:|---:|---:|---:|---:|---|---:|",
    ]  # fmt: skip
    results: dict[str, Any] = {}
    first = None
    for name, kw in configs:
        res, sec = run_seg(flair, brain, vs, **kw, **seg_kw)
        path = SCRATCH / f"cs07_{len(results)}.nii.gz"
        save_image(res.mask.astype(np.uint8), aff, path)
        s = score_file(path, truth_path)
        bands = sensitivity_by_size(res.mask, truth)
        results[name] = dict(score=s, bands=bands, seconds=sec)
        first = first or res
        report.append(
            f"| {name} | {s['dice']:.3f} | {s['f1']:.3f} | {s['sensitivity']:.2f} | "
            f"{s['precision']:.2f} | {s['tp']}/{s['fp']} | {s['pred_volume_ml']:.2f} | "
            f"{' / '.join(bands.values())} | {sec:.1f} |"
        )
        print(name, s, bands, f"{sec:.1f}s", flush=True)
    # determinism
    again, _ = run_seg(flair, brain, vs, **configs[0][1], **seg_kw)
    same = bool(
        np.array_equal(again.probability, first.probability)
        and np.array_equal(again.mask, first.mask)
    )
    report += ["", f"Two runs bit-identical (probability and mask): {same}.", ""]

    # misaligned priors
    report += [
        "### Misaligned priors (pipeline inputs, priors shifted)",
        "",
        "| shift (mm) | Dice | lesion F1 | TP/FP |",
        "|---|---:|---:|---:|",
    ]
    for sh in [(0, 0, 0), (3, 0, 0), (0, 3, 0), (0, -3, 0), (0, 0, 3), (2, 2, 2)]:
        res, _ = run_seg(flair, brain, vs, t1=t1, t2=t2, priors=shifted(priors, sh), **seg_kw)
        path = SCRATCH / "cs07_shift.nii.gz"
        save_image(res.mask.astype(np.uint8), aff, path)
        s = score_file(path, truth_path)
        report.append(f"| {sh} | {s['dice']:.3f} | {s['f1']:.3f} | {s['tp']}/{s['fp']} |")
        print("shift", sh, s["dice"], s["f1"], flush=True)
    report.append("")

    # synthetic lesions in lesion-free white matter
    far = ~ndi.binary_dilation(truth, iterations=10)
    wm = (priors["wm"] > 0.5) & far & brain
    base = first
    sd = base.nawm_sd
    t2_sd = float(1.4826 * np.median(np.abs(t2[wm] - np.median(t2[wm]))))
    rows = []
    fps = 0
    n_runs = 0
    for rep in range(2):
        for contrast in (3.0, 4.5, 6.0):
            specs = [(v, contrast) for v in (10.0, 30.0, 100.0, 300.0, 600.0)]
            fl_i, t1_i, t2_i, lesions = inject_lesions(
                flair, t1, t2, wm, vs, specs, flair_sd=sd, t2_sd=t2_sd, seed=rep
            )
            res, _ = run_seg(fl_i, brain, vs, t1=t1_i, t2=t2_i, priors=priors, **seg_kw)
            rows += evaluate_injection(res, base, lesions, float(np.prod(vs)))
            fps += new_false_positives(res, base, lesions)
            n_runs += 1
    report += [
        "### Synthetic lesions injected into sub-cs07 white matter (pipeline inputs)",
        "",
        f"{len(rows)} ellipsoids ({n_runs} runs x 5 sizes), in atlas WM (prior > 0.5) "
        ">= 10 mm from the real lesions, 15 mm apart; FLAIR contrast in NAWM SDs at the "
        "centre, T2 +3 SD, T1 -12 %, logistic edge; "
        f"NAWM SD = {sd:.1f} (FLAIR units). New false positives elsewhere (all runs): {fps}.",
        "",
        *injection_table(rows),
        "",
    ]
    results["injection"] = rows
    return results


def prepare_lo01(settings, ses: str, n_threads: int):
    from lesionq.steps import atlas_priors, coregister_to_flair, prepare_flair

    anat = DATA / "sub-lo01" / ses / "anat"
    fl, aff = load_array(anat / f"sub-lo01_{ses}_FLAIR.nii.gz")
    prep = prepare_flair(
        Volume(fl, aff, "FLAIR"), bias=dict(settings.section("bias")),
        brain=dict(settings.section("brain")), n_threads=n_threads,
    )  # fmt: skip
    reg = dict(settings.section("registration"))
    co = {}
    for key, suffix in (("t1", "T1w"), ("t2", "T2w")):
        arr, a2 = load_array(anat / f"sub-lo01_{ses}_{suffix}.nii.gz")
        co[key] = coregister_to_flair(
            Volume(arr, a2, suffix), prep.flair, prep.brain_mask,
            skull_stripped=prep.skull_stripped, bias=dict(settings.section("bias")),
            registration=reg, n_threads=n_threads,
        ).image  # fmt: skip
    maps = atlas_priors(
        prep.flair, prep.brain_mask, t1=co["t1"], template=template_kwargs(settings),
        n_threads=n_threads,
    )  # fmt: skip
    priors = {k: np.asarray(maps.maps[k].array, np.float32) for k in ("wm", "gm", "csf")}
    return prep, co, priors, aff


def bench_lo01(settings, report: list[str], n_threads: int) -> None:
    import SimpleITK as sitk

    seg_kw = dict(settings.section("segmentation"))
    truth_dir = DATA / "derivatives" / "truth" / "sub-lo01"
    report += [
        "## sub-lo01 raw scans (0.72 x 0.72 x 4 mm, with skull, bias field)",
        "",
        "Pipeline preparation (deepbet brain mask, N4, rigid T1/T2 -> FLAIR, atlas priors). "
        "No truth for the cross-sectional lesions; the change truth tells where lesions "
        "are: components that shrink after ses-01 existed at ses-01, new/enlarging "
        "components exist at ses-02 (the truth marks only the changed part).",
        "",
        "| session | lesions | volume mL | largest (mm3) | change-truth components hit | s |",
        "|---|---:|---:|---|---|---:|",
    ]
    for ses, change in (("ses-01", "shrinking"), ("ses-02", "newenlarging")):
        prep, co, priors, aff = prepare_lo01(settings, ses, n_threads)
        flair = np.asarray(prep.flair.array, np.float32)
        brain = np.asarray(prep.brain_mask.array) > 0
        vs = voxel_size_from_affine(aff)
        res, sec = run_seg(
            flair, brain, vs, t1=np.asarray(co["t1"].array), t2=np.asarray(co["t2"].array),
            priors=priors, **seg_kw,
        )  # fmt: skip
        lab, n = ndi.label(res.mask, FULL)
        vv = float(np.prod(vs))
        sizes = np.sort(np.bincount(lab.ravel())[1:] * vv)[::-1]
        # change truth into the session grid (inverse of the dataset transform)
        ref = sitk.ReadImage(str(DATA / "sub-lo01" / ses / "anat" / f"sub-lo01_{ses}_FLAIR.nii.gz"))
        xfm = sitk.ReadTransform(
            str(truth_dir / ses / "xfm" / f"sub-lo01_{ses}_from-FLAIR_to-common_mode-image_xfm.txt")
        )
        tm = sitk.ReadImage(
            str(truth_dir / f"sub-lo01_space-common_label-lesionchange_desc-{change}_mask.nii.gz"),
            sitk.sitkUInt8,
        )
        t = sitk.GetArrayFromImage(
            sitk.Resample(tm, ref, xfm.GetInverse(), sitk.sitkNearestNeighbor, 0)
        )
        t = np.transpose(t, (2, 1, 0)) > 0
        tl, tn = ndi.label(t, FULL)
        hit = sum(bool(res.mask[tl == i].any()) for i in range(1, tn + 1))
        save_image(res.mask.astype(np.uint8), aff, SCRATCH / f"lo01_{ses}.nii.gz")
        report.append(
            f"| {ses} | {n} | {res.mask.sum() * vv / 1000:.2f} | "
            f"{', '.join(f'{s:.0f}' for s in sizes[:6])} | {hit}/{tn} {change} | {sec:.1f} |"
        )
        print(ses, n, sizes[:6], hit, tn, f"{sec:.1f}s", flush=True)
        if ses == "ses-01":
            # synthetic lesions on the raw anisotropic scan
            zw = res.z_wm
            wm = (priors["wm"] > 0.5) & brain & (zw < 2.0)
            wm &= ~ndi.binary_dilation(res.mask, iterations=5)
            t2a = np.asarray(co["t2"].array, np.float32)
            t2_sd = float(1.4826 * np.median(np.abs(t2a[wm] - np.median(t2a[wm]))))
            rows = []
            fps = 0
            n_runs = 0
            for rep in range(2):
                for contrast in (3.0, 4.5, 6.0):
                    specs = [(v, contrast) for v in (30.0, 100.0, 300.0, 600.0)]
                    fl_i, t1_i, t2_i, lesions = inject_lesions(
                        flair, np.asarray(co["t1"].array), t2a, wm, vs, specs,
                        flair_sd=res.nawm_sd, t2_sd=t2_sd, seed=rep,
                    )  # fmt: skip
                    r2, _ = run_seg(fl_i, brain, vs, t1=t1_i, t2=t2_i, priors=priors, **seg_kw)
                    rows += evaluate_injection(r2, res, lesions, vv)
                    fps += new_false_positives(r2, res, lesions)
                    n_runs += 1
            inj = [
                "",
                "### Synthetic lesions injected into sub-lo01 ses-01 (raw, 4 mm slices)",
                "",
                f"{len(rows)} ellipsoids ({n_runs} runs x 4 sizes), partial volume over the "
                f"slice thickness; NAWM SD = {res.nawm_sd:.1f}. New false positives "
                f"elsewhere (all runs): {fps}.",
                "",
                *injection_table(rows),
            ]
    report += inj + [""]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--skip-lo01", action="store_true")
    ap.add_argument("--n-threads", type=int, default=1)
    ap.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a [segmentation] protocol value (repeatable), e.g. background_sigma_mm=15",
    )
    ap.add_argument("--results", type=Path, default=RESULTS, help="markdown file to (re)write")
    args = ap.parse_args(argv)
    if not (DATA / "dataset_description.json").is_file():
        print(f"real data not found at {DATA}", file=sys.stderr)
        return 2
    settings = load_protocol("mesems_v1")
    overrides = {}
    for item in args.set:
        key, _, value = item.partition("=")
        overrides[f"segmentation.{key}"] = json.loads(value)
    if overrides:
        settings = settings.with_overrides(overrides)
    seg = dict(settings.section("segmentation"))
    load = os.getloadavg()[0]
    report = [
        "# T2/FLAIR lesion segmentation benchmark",
        "",
        f"Generated by `benchmarks/bench_segmentation.py` on {dt.date.today()} "
        f"(load average at start {load:.1f}, {os.cpu_count()} CPUs). Protocol `mesems_v1`, "
        f"`[segmentation]` = `{json.dumps(seg, sort_keys=True)}` (empty = function defaults).",
        "",
        "Baselines on sub-cs07 (FACTS.md): SAMSEG Dice 0.48 / F1 0.45; global FLAIR "
        "threshold Dice <= 0.24. Targets: Dice >= 0.60 and lesion F1 >= 0.60.",
        "",
    ]
    bench_cs07(settings, report, args.n_threads)
    if not args.skip_lo01:
        bench_lo01(settings, report, args.n_threads)
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text("\n".join(report) + "\n")
    print(f"wrote {args.results}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
