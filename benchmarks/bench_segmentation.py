#!/usr/bin/env python3
"""Benchmark the T2/FLAIR lesion segmentation (:func:`lesionq.core.segmentation.segment_lesions`).

Sections:

0. **Real dev scans** (:mod:`seg_dev`): every annotated cross-sectional scan of
   the three sources in ``../shared/data`` (7 scans, 5 subjects), one row per
   scan with the mean and the worst case, the independent scorer's figures,
   each rater of the two-rater ISBI scans and their agreement, sub-P14's serial
   volumes, size bands, and a leave-one-subject-out choice of the settings this
   version changed. **These are the accuracy figures.** Everything below is
   synthetic or sub-cs07-only and tests geometry, known volumes and
   determinism; it is not evidence of accuracy on unseen real scans.

Synthetic and single-scan scenarios (every one scored with the same definitions, below):

1. **sub-cs07 real** (MNI 1 mm, skull-stripped, N4-corrected; consensus truth of
   3 raters), with the pipeline's inputs (FLAIR + T1 + T2 + atlas priors
   registered as :func:`lesionq.steps.atlas_priors` does, protocol
   ``mesems_v1``); in the full run also every subset of the optional inputs,
   priors shifted by 2-3 mm, and a determinism check.
2. **Injected small / medium / large** lesions (:mod:`lesionq.testing.inject`:
   ellipsoids and irregular shapes, FLAIR +3-6 NAWM SD, T2 the same, T1 -12 %)
   in the white matter of sub-cs07 and of the raw sub-lo01 ses-01 scan
   (0.72 x 0.72 x 4 mm; pipeline preparation: deepbet, N4, rigid T1/T2 ->
   FLAIR, atlas priors), far from the scan's own lesions.
3. **Heavy load**: confluent periventricular lesions grown from the ventricle
   walls of sub-cs07 (:func:`lesionq.testing.inject.confluent_periventricular_specs`,
   ~20, 30, 40 and 50 mL, two seeds each) plus 25 scattered lesions of 5-300 mm3.
4. **sub-lo01 real** ses-01 / ses-02 (full run): lesion count and volume, and
   how many components of the dataset's change truth the masks touch.

Scoring (the definitions of ``../shared/eval/score.py``, whose ``components``
and ``lesionwise`` functions are imported by path; a private identical copy
is used, and said so in the results, when that file is absent): lesions are
26-connected components, truth and predicted components under 3 voxels are
dropped; a truth lesion is detected when a predicted voxel overlaps it; a
predicted lesion is a true positive when it overlaps a truth voxel; voxel Dice
over the grid. Size bands by volume in mm3: <10, 10-100, >100 (100 in the
middle band); **sensitivity per band by the truth lesion's volume, precision
per band by the predicted lesion's volume**, band F1 = 2SP/(S+P) of the two.
For injected scenarios the truth is the injected lesions only, and the scan's
own lesions are an *ignore region* (sub-cs07: consensus truth, sub-lo01: no
truth, so the lesions found on the un-injected scan; both with the
un-injected scan's detections, dilated 2 voxels): predicted components that
overlap it and no injected lesion are not counted, and its voxels are left
out of Dice and volumes. Runs of one scenario are pooled (counts and voxels
summed).

It rewrites ``benchmarks/results/segmentation.md``; masks go to
``benchmarks/_scratch/segmentation/`` (gitignored).

Usage::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_segmentation.py [--quick] \\
        [--real-only] [--no-loso] [--skip-lo01] [--set background_sigma_mm=15.0] \\
        [--results benchmarks/_scratch/seg.md]

``--real-only``: section 0 alone (about 12 min with the LOSO grid, 2 min without).

``--quick``: pipeline inputs only on sub-cs07, one run per injected scenario,
one heavy load (30 mL), no ses-02. Timings are single runs on a shared 2-core
machine: orders of magnitude only.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.util
import json
import os
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
from scipy import ndimage as ndi

from lesionq.config import load_protocol
from lesionq.core.segmentation import SegmentationResult, segment_lesions
from lesionq.core.units import voxel_size_from_affine, voxel_volume_mm3
from lesionq.errors import ProcessingError
from lesionq.io.nifti import load_array, save_image
from lesionq.steps.visit import location_settings
from lesionq.testing.inject import (
    Injection,
    confluent_periventricular_specs,
    plant_lesions,
    random_t2_specs,
    reference_statistics,
)
from lesionq.types import Volume

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_brain_extraction import cpu_model  # noqa: E402  (same folder)
from seg_dev import bench_dev_scans  # noqa: E402  (same folder)

REPO = Path(__file__).resolve().parents[1]
DATA = (REPO / ".." / "shared" / "data" / "ljubljana").resolve()
SCORE = (REPO / ".." / "shared" / "eval" / "score.py").resolve()
SCRATCH = REPO / "benchmarks" / "_scratch" / "segmentation"
RESULTS = REPO / "benchmarks" / "results" / "segmentation.md"
FULL = np.ones((3, 3, 3), dtype=bool)
MIN_VOXELS = 3
#: injected runs the injector could not place (reported in the results, never silently)
SKIPPED: list[str] = []
BANDS = (("<10", 0.0, 10.0), ("10-100", 10.0, 100.0 + 1e-9), (">100", 100.0 + 1e-9, np.inf))
# injected scenarios: (name, volume range mm3, lesions per run)
SIZE_SCENARIOS = (
    ("small", (4.0, 10.0), 20),
    ("medium", (10.0, 100.0), 15),
    ("large", (100.0, 1000.0), 8),
)


# --------------------------------------------------------------------------- scoring


def _load_scorer() -> tuple[ModuleType | None, str]:
    if not SCORE.is_file():
        return None, f"`{SCORE}` absent: the benchmark's identical copy of its rules"
    spec = importlib.util.spec_from_file_location("lesionq_bench_score", SCORE)
    mod = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(mod)  # type: ignore[union-attr]
    return mod, "`../shared/eval/score.py` (`components`, `lesionwise`, imported by path)"


SCORER, SCORER_NOTE = _load_scorer()


def components(mask: np.ndarray, min_voxels: int = MIN_VOXELS) -> tuple[np.ndarray, int]:
    """26-connected components, those under ``min_voxels`` dropped (score.py's rule)."""
    if SCORER is not None:
        return SCORER.components(mask, min_voxels)
    lab, n = ndi.label(mask, FULL)
    if n:
        sizes = np.bincount(lab.ravel())
        small = np.flatnonzero(sizes < min_voxels)
        small = small[small > 0]
        if small.size:
            lab[np.isin(lab, small)] = 0
            lab, n = ndi.label(lab > 0, FULL)
    return lab, n


def score_file(pred: Path, truth: Path) -> dict[str, Any]:
    """The independent scorer's JSON (command line, as the project is judged)."""
    cmd = [sys.executable, str(SCORE), "lesions", str(pred), str(truth)]
    return json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)


@dataclass
class Tally:
    """Pooled counts of one scenario (sums over its runs)."""

    runs: int = 0
    inter: int = 0
    pred_vox: int = 0
    truth_vox: int = 0
    vv: float = 1.0
    truth_n: dict[str, int] = field(default_factory=lambda: dict.fromkeys([b[0] for b in BANDS], 0))
    truth_hit: dict[str, int] = field(
        default_factory=lambda: dict.fromkeys([b[0] for b in BANDS], 0)
    )
    pred_n: dict[str, int] = field(default_factory=lambda: dict.fromkeys([b[0] for b in BANDS], 0))
    pred_tp: dict[str, int] = field(default_factory=lambda: dict.fromkeys([b[0] for b in BANDS], 0))
    seconds: list[float] = field(default_factory=list)

    def add(self, other: Tally) -> None:
        self.runs += other.runs
        self.inter += other.inter
        self.pred_vox += other.pred_vox
        self.truth_vox += other.truth_vox
        self.vv = other.vv
        for d, o in ((self.truth_n, other.truth_n), (self.truth_hit, other.truth_hit),
                     (self.pred_n, other.pred_n), (self.pred_tp, other.pred_tp)):  # fmt: skip
            for k in d:
                d[k] += o[k]
        self.seconds += other.seconds

    # figures
    @property
    def dice(self) -> float:
        den = self.pred_vox + self.truth_vox
        return 2 * self.inter / den if den else 1.0

    def sens(self, band: str | None = None) -> tuple[int, int]:
        if band is None:
            return sum(self.truth_hit.values()), sum(self.truth_n.values())
        return self.truth_hit[band], self.truth_n[band]

    def prec(self, band: str | None = None) -> tuple[int, int]:
        if band is None:
            return sum(self.pred_tp.values()), sum(self.pred_n.values())
        return self.pred_tp[band], self.pred_n[band]

    def f1(self, band: str | None = None) -> float:
        s, p = _ratio(*self.sens(band)), _ratio(*self.prec(band))
        return 2 * s * p / (s + p) if np.isfinite(s) and np.isfinite(p) and s + p > 0 else 0.0

    @property
    def truth_ml(self) -> float:
        return self.truth_vox * self.vv / 1000.0

    @property
    def pred_ml(self) -> float:
        return self.pred_vox * self.vv / 1000.0


def _ratio(a: int, b: int) -> float:
    return a / b if b else float("nan")


def _band(volume_mm3: np.ndarray) -> list[str]:
    out = []
    for v in volume_mm3:
        out.append(next(name for name, lo, hi in BANDS if lo <= v < hi))
    return out


def without_ignored(pred: np.ndarray, truth: np.ndarray, ignore: np.ndarray | None) -> np.ndarray:
    """The prediction minus components on the ignore region only, and minus its voxels."""
    pred = pred.copy()
    if ignore is None:
        return pred
    lab, n = ndi.label(pred, FULL)
    if n:
        on_truth = np.zeros(n + 1, bool)
        on_truth[np.unique(lab[truth & (lab > 0)])] = True
        on_ignore = np.zeros(n + 1, bool)
        on_ignore[np.unique(lab[ignore & (lab > 0)])] = True
        drop = on_ignore & ~on_truth
        drop[0] = False
        pred[drop[lab]] = False
    return pred & ~(ignore & ~truth)


def evaluate(
    pred: np.ndarray,
    truth: np.ndarray,
    voxel_size_mm: Sequence[float],
    *,
    ignore: np.ndarray | None = None,
    seconds: float = 0.0,
) -> Tally:
    """Score one mask (definitions in the module docstring)."""
    vv = voxel_volume_mm3(voxel_size_mm)
    pred = without_ignored(pred, truth, ignore)
    tl, tn = components(truth)
    pl, pn = components(pred)
    both = (tl > 0) & (pl > 0)
    t_hit = np.zeros(tn + 1, bool)
    t_hit[np.unique(tl[both])] = True
    p_hit = np.zeros(pn + 1, bool)
    p_hit[np.unique(pl[both])] = True
    t_vol = np.bincount(tl.ravel(), minlength=tn + 1)[1:] * vv
    p_vol = np.bincount(pl.ravel(), minlength=pn + 1)[1:] * vv
    tally = Tally(runs=1, vv=vv, seconds=[seconds])
    tally.inter = int((pred & truth).sum())
    tally.pred_vox = int(pred.sum())
    tally.truth_vox = int(truth.sum())
    for b, hit in zip(_band(t_vol), t_hit[1:], strict=True):
        tally.truth_n[b] += 1
        tally.truth_hit[b] += int(hit)
    for b, hit in zip(_band(p_vol), p_hit[1:], strict=True):
        tally.pred_n[b] += 1
        tally.pred_tp[b] += int(hit)
    if SCORER is not None:  # the pooled-free figures must equal score.py's own
        ref = SCORER.lesionwise(pred, truth, MIN_VOXELS)
        s, p = tally.sens(), tally.prec()
        if (ref["tp"], ref["truth_lesions"], ref["pred_lesions"]) != (s[0], s[1], p[1]) or (
            pn and round(_ratio(*p), 4) != ref["precision"]
        ):
            raise RuntimeError(f"benchmark counts differ from score.py: {ref} vs {s} {p}")
    return tally


# --------------------------------------------------------------------------- tables

SUMMARY_HEAD = [
    "| scenario | runs | truth lesions | Dice | sens | prec | F1 | truth mL | pred mL "
    "| vol. error mL (%) | seg. s / visit |",
    "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
]
BAND_HEAD = [
    "| scenario | sens <10 | prec <10 | F1 <10 | sens 10-100 | prec 10-100 | F1 10-100 "
    "| sens >100 | prec >100 | F1 >100 |",
    "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
]


def _frac(a: int, b: int) -> str:
    return f"{a / b:.2f} ({a}/{b})" if b else "- (0/0)"


def summary_row(name: str, t: Tally) -> str:
    s, p = t.sens(), t.prec()
    err = t.pred_ml - t.truth_ml
    pct = 100 * err / t.truth_ml if t.truth_ml else float("nan")
    return (
        f"| {name} | {t.runs} | {s[1]} | {t.dice:.3f} | {_frac(*s)} | {_frac(*p)} | "
        f"{t.f1():.3f} | {t.truth_ml:.2f} | {t.pred_ml:.2f} | {err:+.2f} ({pct:+.0f} %) | "
        f"{np.mean(t.seconds):.1f} |"
    )


def band_row(name: str, t: Tally) -> str:
    cells = []
    for b, _, _ in BANDS:
        s, p = t.sens(b), t.prec(b)
        f1 = f"{t.f1(b):.2f}" if s[1] and p[1] else "-"
        cells += [_frac(*s), _frac(*p), f1]
    return f"| {name} | " + " | ".join(cells) + " |"


def tables(rows: Sequence[tuple[str, Tally]]) -> list[str]:
    return [
        *SUMMARY_HEAD,
        *[summary_row(n, t) for n, t in rows],
        "",
        "By size band (mm3; sensitivity by truth-lesion volume, precision by predicted-lesion "
        "volume):",
        "",
        *BAND_HEAD,
        *[band_row(n, t) for n, t in rows],
        "",
    ]


# --------------------------------------------------------------------------- helpers


def template_kwargs(settings) -> dict[str, Any]:
    """``[template]`` protocol keys for :func:`lesionq.steps.atlas_priors` (minus ``enabled``)."""
    return {k: v for k, v in settings.section("template").items() if k != "enabled"}


def run_seg(flair, mask, vs, **kw) -> tuple[SegmentationResult, float]:
    t0 = time.perf_counter()
    res = segment_lesions(flair, mask, vs, **kw)
    return res, time.perf_counter() - t0


def shifted(priors: Mapping[str, np.ndarray], shift_vox: Sequence[float]) -> dict[str, np.ndarray]:
    """The priors moved by ``shift_vox`` voxels (the location map by nearest neighbour)."""
    return {
        k: (
            ndi.shift(v, shift_vox, order=0, mode="nearest")
            if k == "location"
            else np.clip(ndi.shift(v, shift_vox, order=1, mode="nearest"), 0, 1).astype(np.float32)
        )
        for k, v in priors.items()
    }


@dataclass
class Subject:
    """One scan ready for segmentation, and what the injected scenarios need."""

    name: str
    images: dict[str, np.ndarray]  # flair, t1, t2 on the FLAIR grid
    brain: np.ndarray
    priors: dict[str, np.ndarray]
    location: np.ndarray
    vs: tuple[float, float, float]
    base: SegmentationResult  # un-injected scan, pipeline inputs
    ignore: np.ndarray  # the scan's own lesions (see module docstring)

    def segment(self, images: Mapping[str, np.ndarray], seg_kw) -> tuple[SegmentationResult, float]:
        return run_seg(
            images["flair"], self.brain, self.vs, t1=images["t1"], t2=images["t2"],
            priors=self.priors, **seg_kw,
        )  # fmt: skip

    @property
    def white_matter(self) -> np.ndarray:
        """Lesion-free white matter: atlas WM > 0.5, not bright, 5 mm from the ignore region."""
        far = ndi.distance_transform_edt(~self.ignore, sampling=self.vs) > 5.0
        return (self.priors["wm"] > 0.5) & self.brain & (self.base.z_wm < 2.0) & far


def _ignore(own: np.ndarray, base: SegmentationResult) -> np.ndarray:
    return ndi.binary_dilation(own | base.mask, FULL, iterations=2)


def inject_run(
    subj: Subject, specs, seed: int, seg_kw
) -> tuple[Injection, SegmentationResult, float]:
    """Plant ``specs`` in the subject's lesion-free white matter and segment."""
    wm = subj.white_matter
    inj = plant_lesions(
        subj.images, voxel_size_mm=subj.vs, specs=specs, seed=seed, placement_mask=wm,
        reference_mask=wm, min_gap_mm=5.0, inset_fraction=0.6,
    )  # fmt: skip
    res, sec = subj.segment(inj.images, seg_kw)
    return inj, res, sec


CONTRAST_BINS = ((3.0, 4.0), (4.0, 5.0), (5.0, 6.0 + 1e-9))


def detection_by_contrast(
    pred: np.ndarray,
    inj: Injection,
    flair_sd: Sequence[float],
    ignore: np.ndarray,
    counts: dict[str, list[int]],
) -> None:
    """Per injected lesion of >= 3 voxels: detected (a predicted voxel on it), by FLAIR contrast."""
    kept = without_ignored(pred, inj.truth, ignore)
    for les, c in zip(inj.lesions, flair_sd, strict=True):
        if les.n_voxels < MIN_VOXELS:
            continue
        key = next(f"{lo:g}-{min(hi, 6):g}" for lo, hi in CONTRAST_BINS if lo <= c < hi)
        counts.setdefault(key, [0, 0])
        counts[key][0] += int(kept[les.slices][inj.labels[les.slices] == les.lesion_id].any())
        counts[key][1] += 1


def size_scenarios(
    subj: Subject, seg_kw, n_runs: int, by_contrast: dict[str, dict[str, list[int]]]
) -> list[tuple[str, Tally]]:
    rows = []
    for name, vol, n in SIZE_SCENARIOS:
        tally = Tally()
        label = f"{subj.name} injected {name} ({vol[0]:g}-{vol[1]:g} mm3)"
        for rep in range(n_runs):
            specs = random_t2_specs(n, seed=100 * rep + n, volume_mm3=vol, flair_sd=(3.0, 6.0))
            try:
                inj, res, sec = inject_run(subj, specs, rep, seg_kw)
            except ProcessingError as exc:  # the injector found no room: say so, go on
                SKIPPED.append(f"{label}, run {rep + 1}: {exc}")
                print(f"skipped {label} run {rep}: {exc}", flush=True)
                continue
            tally.add(evaluate(res.mask, inj.truth, subj.vs, ignore=subj.ignore, seconds=sec))
            detection_by_contrast(
                res.mask, inj, [sp.contrast["flair"].value for sp in specs], subj.ignore,
                by_contrast.setdefault(label, {}),
            )  # fmt: skip
            print(subj.name, name, rep, summary_row(name, tally), flush=True)
        rows.append((label, tally))
    return rows


def contrast_table(by_contrast: Mapping[str, Mapping[str, list[int]]]) -> list[str]:
    keys = [f"{lo:g}-{min(hi, 6):g}" for lo, hi in CONTRAST_BINS]
    lines = [
        "Detection of the injected lesions (>= 3 voxels) by FLAIR contrast at the centre "
        "(NAWM SD), all runs:",
        "",
        "| scenario | " + " | ".join(f"FLAIR +{k} SD" for k in keys) + " |",
        "|---|" + "---:|" * len(keys),
    ]
    for name, counts in by_contrast.items():
        lines.append(
            f"| {name} | " + " | ".join(_frac(*counts.get(k, [0, 0])) for k in keys) + " |"
        )
    return [*lines, ""]


# --------------------------------------------------------------------------- sub-cs07


def load_cs07(settings, seg_kw, n_threads: int):
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
        t1=Volume(t1, aff, "T1w"), template=template_kwargs(settings), n_threads=n_threads,
    )  # fmt: skip
    t_atlas = time.perf_counter() - t0
    priors = {k: np.asarray(maps.maps[k].array, np.float32) for k in ("wm", "gm", "csf")}
    priors["location"] = np.asarray(maps.maps["location"].array)  # as the visit step passes it
    images = {
        "flair": flair.astype(np.float32),
        "t1": t1.astype(np.float32),
        "t2": t2.astype(np.float32),
    }
    base, sec = run_seg(flair, brain, vs, t1=t1, t2=t2, priors=priors, **seg_kw)
    subj = Subject(
        "sub-cs07", images, brain, priors, np.asarray(maps.maps["location"].array), vs, base,
        _ignore(truth, base),
    )  # fmt: skip
    return subj, truth, truth_path, aff, t_atlas, sec


def bench_cs07_real(subj, truth, truth_path, aff, seg_kw, sec, quick, report) -> Tally:
    SCRATCH.mkdir(parents=True, exist_ok=True)
    path = SCRATCH / "cs07_pipeline.nii.gz"
    save_image(subj.base.mask.astype(np.uint8), aff, path)
    tally = evaluate(subj.base.mask, truth, subj.vs, seconds=sec)
    s = score_file(path, truth_path) if SCORER is not None else None
    rows = [("sub-cs07 real (pipeline inputs)", tally)]
    if not quick:
        im = subj.images
        configs = [
            ("FLAIR+T1+priors (no T2)", dict(t1=im["t1"], priors=subj.priors)),
            ("FLAIR+T1+T2, priors=None", dict(t1=im["t1"], t2=im["t2"])),
            ("FLAIR+T2+priors (no T1)", dict(t2=im["t2"], priors=subj.priors)),
            (
                "FLAIR+priors (no T1, no T2: the pipeline on a FLAIR-only visit)",
                dict(priors=subj.priors),
            ),  # fmt: skip
            ("FLAIR only, no priors", {}),
        ]
        for name, kw in configs:
            res, sec2 = run_seg(im["flair"], subj.brain, subj.vs, **kw, **seg_kw)
            rows.append(
                (f"sub-cs07 real, {name}", evaluate(res.mask, truth, subj.vs, seconds=sec2))
            )
            print(rows[-1][0], summary_row("", rows[-1][1]), flush=True)
        for sh in [(3, 0, 0), (0, -3, 0), (2, 2, 2)]:
            res, sec2 = run_seg(
                im["flair"], subj.brain, subj.vs, t1=im["t1"], t2=im["t2"],
                priors=shifted(subj.priors, sh), **seg_kw,
            )  # fmt: skip
            rows.append(
                (
                    f"sub-cs07 real, priors shifted {sh} mm",
                    evaluate(res.mask, truth, subj.vs, seconds=sec2),
                )
            )
            print(rows[-1][0], summary_row("", rows[-1][1]), flush=True)
    report += [
        "## sub-cs07, real lesions (consensus truth)",
        "",
        "MNI 1 mm, skull-stripped, N4-corrected; atlas priors registered to the T1 (affine).",
    ]
    if s is not None:
        report.append(
            f"Independent check, `score.py lesions` on the saved pipeline mask: Dice "
            f"{s['dice']:.3f}, F1 {s['f1']:.3f}, sens {s['sensitivity']:.2f}, prec "
            f"{s['precision']:.2f}, TP/FP {s['tp']}/{s['fp']}, pred {s['pred_volume_ml']:.2f} mL "
            f"(truth {s['truth_volume_ml']:.2f} mL)."
        )
    report += ["", *tables(rows)]
    if not quick:
        again, _ = subj.segment(subj.images, seg_kw)
        same = bool(
            np.array_equal(again.probability, subj.base.probability)
            and np.array_equal(again.mask, subj.base.mask)
        )
        report += [f"Two runs bit-identical (probability and mask): {same}.", ""]
    return tally


def heavy_load(subj: Subject, seg_kw, targets: Sequence[tuple[float, int]], report) -> list:
    """Confluent periventricular + scattered lesions injected into sub-cs07."""
    vs = subj.vs
    z = subj.base.z_wm
    # the subject's lateral ventricles: FLAIR-dark voxels within 8 mm of the atlas label
    near = ndi.distance_transform_edt(subj.location != 1, sampling=vs) <= 8.0
    vent = subj.brain & (z < -2.5) & near
    lab, n = ndi.label(vent, FULL)
    sizes = np.bincount(lab.ravel())
    keep = np.flatnonzero(sizes * voxel_volume_mm3(vs) >= 500.0)
    vent = np.isin(lab, keep[keep > 0])
    tissue = subj.brain & ~vent & ~subj.ignore & (z > -2.5)  # not CSF-dark, not real lesions
    dist_v = ndi.distance_transform_edt(~vent, sampling=vs)
    wm = subj.white_matter
    ref = reference_statistics(subj.images, wm)
    rows = []
    notes = []
    lost_rows = []
    for target_ml, seed in targets:
        t0 = time.perf_counter()
        conf = confluent_periventricular_specs(
            vent, tissue, vs, target_volume_mm3=1000.0 * target_ml, seed=seed,
            seed_mask=subj.priors["wm"] > 0.3, radius_mm=(3.0, 6.0), max_lesions=2000,
        )  # fmt: skip
        # two passes: the confluent load, then scattered lesions >= 5 mm away from it
        first = plant_lesions(
            subj.images, voxel_size_mm=vs, specs=conf, seed=seed, reference_stats=ref,
            tissue_mask=tissue,
        )  # fmt: skip
        scat = random_t2_specs(25, seed=seed + 7, volume_mm3=(5.0, 300.0), flair_sd=(3.0, 6.0))
        away = ndi.distance_transform_edt(~first.truth, sampling=vs) > 5.0
        second = plant_lesions(
            first.images, voxel_size_mm=vs, specs=scat, seed=seed, reference_stats=ref,
            placement_mask=wm & (dist_v > 10.0) & away, min_gap_mm=5.0,
        )  # fmt: skip
        truth = first.truth | second.truth
        t_plant = time.perf_counter() - t0
        res, sec = subj.segment(second.images, seg_kw)
        tally = evaluate(res.mask, truth, vs, ignore=subj.ignore, seconds=sec)
        name = f"sub-cs07 heavy ~{target_ml:g} mL confluent + 25 scattered (seed {seed})"
        rows.append((name, tally))
        print(summary_row(name, tally), f"plant {t_plant:.0f} s", flush=True)
        # the confluent component, and the decisions on the largest candidates
        tl, tn = components(truth)
        tsz = np.bincount(tl.ravel())[1:]
        big = tl == int(np.argmax(tsz)) + 1
        cands = sorted(res.candidates, key=lambda c: -c.n_voxels)
        seg_big = (res.mask & big).sum() / big.sum()
        vv = voxel_volume_mm3(vs)
        lost = [c for c in cands if c.volume_mm3 >= 1000.0 and not c.accepted]
        lost_rows.append((name, tally, lost, cands[0]))
        notes.append(
            f"- {name}: {len(conf)} periventricular lesions planted ({t_plant:.0f} s), "
            f"{tn} truth components; largest "
            f"truth component {big.sum() * vv / 1000:.1f} mL ({100 * seg_big:.0f} % of it "
            f"segmented), reaching {dist_v[big].min():.1f} mm from the ventricles. "
            f"NAWM median / SD {res.nawm_median:.1f} / {res.nawm_sd:.2f} (un-injected "
            f"{subj.base.nawm_median:.1f} / {subj.base.nawm_sd:.2f}). Largest candidates: "
            + "; ".join(
                f"{c.volume_mm3 / 1000:.1f} mL {c.reason} (peak z {c.peak_z:.1f}, T2 z "
                f"{c.t2_z:.2f}, WM shell {c.wm_shell_fraction:.2f}, CSF-adjacent "
                f"{c.csf_adjacent_fraction:.2f})"
                for c in cands[:3]
            )
            + "."
        )
    report += [
        "## Heavy load: confluent periventricular lesions in sub-cs07",
        "",
        "Lateral ventricles of the subject: FLAIR z < -2.5 within 8 mm of the atlas "
        f"ventricle label ({vent.sum() * voxel_volume_mm3(vs) / 1000:.1f} mL). Elongated "
        "ellipsoids (equivalent radius 3-6 mm, long/short 1.3-2.2, long axis along the wall "
        "normal, FLAIR and T2 +4-7 SD, T1 -12 %) grown from clustered wall seeds "
        "(atlas WM > 0.3) until their "
        "union reaches the target, clipped to brain tissue that is neither ventricle nor "
        "the real lesions; plus 25 scattered lesions (5-300 mm3, +3-6 SD) >= 10 mm "
        "from the ventricles. Truth = injected lesions; the real lesions are the ignore region.",
        "",
        *tables(rows),
        "Candidate cores of >= 1 mL rejected (the lesion-level rules of `segment_lesions`), "
        "and the largest candidate's margins to the location rule (`wm_shell_min` = "
        f"{seg_kw['wm_shell_min']}) and T2 rule (`t2_min_z` = {seg_kw['t2_min_z']}):",
        "",
        "| scenario | volume error | rejected cores >= 1 mL | largest core: mL, decision, "
        "WM shell, T2 z |",
        "|---|---:|---|---|",
        *[
            f"| {n} | {100 * (t.pred_ml - t.truth_ml) / t.truth_ml:+.0f} % | "
            + (", ".join(f"{c.volume_mm3 / 1000:.1f} mL {c.reason}" for c in lost) or "none")
            + f" | {big.volume_mm3 / 1000:.1f}, {big.reason}, {big.wm_shell_fraction:.2f}, "
            f"{big.t2_z:.2f} |"
            for n, t, lost, big in lost_rows
        ],
        "",
        f"{sum(bool(x[2]) for x in lost_rows)} of {len(lost_rows)} heavy loads lose a "
        ">= 1 mL confluent core to a lesion-level rule.",
        "",
        *notes,
        "",
    ]
    return rows


# --------------------------------------------------------------------------- sub-lo01


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
    priors["location"] = np.asarray(maps.maps["location"].array)  # as the visit step passes it
    images = {
        "flair": np.asarray(prep.flair.array, np.float32),
        "t1": np.asarray(co["t1"].array, np.float32),
        "t2": np.asarray(co["t2"].array, np.float32),
    }
    brain = np.asarray(prep.brain_mask.array) > 0
    return images, brain, priors, np.asarray(maps.maps["location"].array), aff


def change_truth_hits(mask: np.ndarray, ses: str, change: str) -> tuple[int, int]:
    import SimpleITK as sitk

    truth_dir = DATA / "derivatives" / "truth" / "sub-lo01"
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
    tl, tn = ndi.label(np.transpose(t, (2, 1, 0)) > 0, FULL)
    return sum(bool(mask[tl == i].any()) for i in range(1, tn + 1)), tn


def bench_lo01(
    settings, seg_kw, n_threads: int, n_runs: int, quick: bool, report, by_contrast
) -> list:
    lines = [
        "## sub-lo01 raw scans (0.72 x 0.72 x 4 mm, with skull, bias field)",
        "",
        "Pipeline preparation (deepbet brain mask, N4, rigid T1/T2 -> FLAIR, atlas priors). "
        "No cross-sectional truth; the change truth tells where lesions are: components that "
        "shrink after ses-01 existed at ses-01, new/enlarging components exist at ses-02 (the "
        "truth marks only the changed part).",
        "",
        "| session | lesions | volume mL | largest (mm3) | change-truth components hit | seg. s |",
        "|---|---:|---:|---|---|---:|",
    ]
    rows = []
    sessions = (
        (("ses-01", "shrinking"),)
        if quick
        else (("ses-01", "shrinking"), ("ses-02", "newenlarging"))
    )
    for ses, change in sessions:
        images, brain, priors, location, aff = prepare_lo01(settings, ses, n_threads)
        vs = voxel_size_from_affine(aff)
        res, sec = run_seg(
            images["flair"], brain, vs, t1=images["t1"], t2=images["t2"], priors=priors, **seg_kw
        )
        lab, n = ndi.label(res.mask, FULL)
        vv = voxel_volume_mm3(vs)
        sizes = np.sort(np.bincount(lab.ravel())[1:] * vv)[::-1]
        hit, tn = change_truth_hits(res.mask, ses, change)
        SCRATCH.mkdir(parents=True, exist_ok=True)
        save_image(res.mask.astype(np.uint8), aff, SCRATCH / f"lo01_{ses}.nii.gz")
        lines.append(
            f"| {ses} | {n} | {res.mask.sum() * vv / 1000:.2f} | "
            f"{', '.join(f'{s:.0f}' for s in sizes[:6])} | {hit}/{tn} {change} | {sec:.1f} |"
        )
        print(lines[-1], flush=True)
        if ses == "ses-01":
            subj = Subject(
                "sub-lo01 ses-01", images, brain, priors, location, vs, res,
                _ignore(np.zeros_like(brain), res),
            )  # fmt: skip
            rows = size_scenarios(subj, seg_kw, n_runs, by_contrast)
    report += [*lines, ""]
    return rows


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer runs (see the module docstring)")
    ap.add_argument("--skip-lo01", action="store_true")
    ap.add_argument("--real-only", action="store_true", help="the real dev scans only")
    ap.add_argument("--no-loso", action="store_true", help="skip the leave-one-subject-out grid")
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
    seg_kw = dict(settings.section("segmentation"))
    seg_kw["min_volume_mm3"] = float(settings.section("lesions")["min_volume_mm3"])
    seg_kw.update(location_settings(settings.section("location")))
    n_runs = 1 if args.quick else 2
    load = os.getloadavg()[0]
    t_start = time.perf_counter()
    report = [
        "# T2/FLAIR lesion segmentation benchmark",
        "",
        f"Generated by `benchmarks/bench_segmentation.py{' --quick' if args.quick else ''}` on "
        f"{dt.date.today()} ({os.cpu_count()} CPUs, {cpu_model()}, load average at start "
        f"{load:.1f}). Protocol `mesems_v1`, `[segmentation]` = "
        f"`{json.dumps(dict(settings.section('segmentation')), sort_keys=True)}`, "
        f"`[lesions] min_volume_mm3` = {seg_kw['min_volume_mm3']:g}.",
        "",
        f"Command: `OMP_NUM_THREADS=1 python benchmarks/bench_segmentation.py"
        f"{' --quick' if args.quick else ''}{' --real-only' if args.real_only else ''}"
        f"{' --no-loso' if args.no_loso else ''}`.",
        "",
        "Bars (issue 13), on the dev scans: mean Dice >= 0.75, mean lesion F1 >= 0.65, no scan "
        "below Dice 0.55; segmentation <= 20 s per visit. lesionq 0.1.0 on the same scans: "
        "mean Dice 0.71, F1 0.39. SAMSEG (FACTS.md): sub-cs07 Dice 0.48 / F1 0.45, "
        "training01 0.53 / 0.39.",
        "",
    ]
    bench_dev_scans(
        seg_kw, SCRATCH / "dev", report, scorer=SCORER, loso=not args.no_loso,
        evaluate=evaluate, tables=tables,
    )  # fmt: skip
    if args.real_only:
        report.append(f"Benchmark wall time {time.perf_counter() - t_start:.0f} s.")
        args.results.parent.mkdir(parents=True, exist_ok=True)
        args.results.write_text("\n".join(report) + "\n")
        print(f"wrote {args.results}")
        return 0
    report += [
        "## Synthetic and single-scan scenarios (geometry, volumes, determinism)",
        "",
        "Not evidence of accuracy on unseen real scans: injected lesions are built from our "
        "own model of a lesion (in 0.1.0 they gave Dice 0.80-0.88 for heavy loads while "
        "real heavy loads were missed).",
        "",
        "### Definitions",
        "",
        f"Lesion matching: {SCORER_NOTE}. Lesions are 26-connected components; components "
        "under 3 voxels (truth and prediction) are dropped; a truth lesion is detected when a "
        "predicted voxel overlaps it; a predicted lesion is a true positive when it overlaps "
        "a truth voxel; Dice over voxels. Size bands by component volume in mm3: <10, 10-100 "
        "(100 included), >100. **Sensitivity of a band: truth lesions of that volume; "
        "precision of a band: predicted lesions of that volume**; band F1 = 2SP/(S+P). "
        "Cells read `ratio (hits/lesions)`. Volume error = predicted - truth volume. "
        "Injected scenarios: truth = the injected lesions only; the scan's own lesions "
        "(sub-cs07: consensus truth; sub-lo01: the un-injected scan's detections) together "
        "with the un-injected scan's detections, dilated 2 voxels, form an ignore region: "
        "predicted components overlapping it and no injected lesion are not counted, and "
        "its voxels are left out of Dice and volumes. Injected lesions "
        "(`lesionq.testing.inject`): ellipsoids and irregular shapes (half each), "
        "log-uniform volumes in the stated range, FLAIR +3-6 NAWM SD (uniform), T2 the "
        "same number of T2 NAWM SDs (sub-cs07's real lesions: peak z median 3.9 FLAIR, 4.2 T2), "
        "T1 -12 % of WM, logistic edge (10 % of the radius), partial volume by sub-voxel "
        "averaging, centres in lesion-free WM (atlas WM > 0.5, FLAIR < NAWM + 2 SD, >= 5 mm "
        "from the ignore region) at least 0.6 x the lesion's bounding radius inside it, "
        ">= 5 mm between lesions (bounding spheres). Runs of one scenario are pooled "
        "(counts and voxels "
        "summed); `seg. s / visit` is the mean wall time of `segment_lesions`.",
        "",
    ]
    subj, truth, truth_path, aff, t_atlas, sec = load_cs07(settings, seg_kw, args.n_threads)
    print(f"cs07 loaded, atlas {t_atlas:.0f} s, seg {sec:.1f} s", flush=True)
    bench_cs07_real(subj, truth, truth_path, aff, seg_kw, sec, args.quick, report)
    by_contrast: dict[str, dict[str, list[int]]] = {}
    inj_rows = size_scenarios(subj, seg_kw, n_runs, by_contrast)
    # heavy loads: targets 20-50 mL, seeds 1-8 (fixed design; quick: one of them)
    targets = [(30.0, 2)] if args.quick else [(20.0 + 10.0 * (k % 4), k + 1) for k in range(8)]
    heavy_rows = heavy_load(subj, seg_kw, targets, report)
    lo_report: list[str] = []
    if not args.skip_lo01:
        inj_rows += bench_lo01(
            settings, seg_kw, args.n_threads, n_runs, args.quick, lo_report, by_contrast
        )
    report += [
        "## Injected lesions (small / medium / large), lesion-free white matter",
        "",
        *tables(inj_rows),
        *contrast_table(by_contrast),
        *lo_report,
        "## All scenarios at a glance",
        "",
        *tables(
            [
                (
                    "sub-cs07 real (pipeline inputs)",
                    evaluate(subj.base.mask, truth, subj.vs, seconds=sec),
                )
            ]
            + inj_rows
            + heavy_rows
        ),
        *(
            ["Injected runs skipped (the injector found no room for the lesions):", ""]
            + [f"- {m}" for m in SKIPPED]
            + [""]
            if SKIPPED
            else []
        ),
        f"Benchmark wall time {time.perf_counter() - t_start:.0f} s.",
    ]
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text("\n".join(report) + "\n")
    print(f"wrote {args.results}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
