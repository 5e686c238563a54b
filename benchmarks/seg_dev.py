"""Real-data section of the segmentation benchmark: every annotated dev scan, three sources.

Called by ``bench_segmentation.py``; kept apart from its synthetic scenarios, which
test geometry, volumes and determinism and are never evidence of accuracy on real
scans.

For each scan of :data:`devscans.DEV_SCANS` the segmentation runs on the inputs the
visit pipeline gives it (:mod:`devscans` caches them with the pipeline's own steps),
with the protocol's ``[segmentation]`` settings. The figures that count are the
independent scorer's (``../shared/eval/score.py lesions``, command line, the mask
saved on the FLAIR grid against each rater's original mask); where a scan has two
raters its figure is the mean over them, and the rater-vs-rater agreement stands
beside it as the human bar.

**Leave-one-subject-out.** The six settings changed since 0.1.0 were
chosen while looking at these scans, so the benchmark also reports them as if they
had been fitted: over the grid of old and new values (``LOSO_GRID``, 64 settings), for
each held-out subject the setting with the best mean of Dice and F1 on the *other*
subjects' scans is chosen, and the held-out subject's scans are scored with it.
``infratentorial_min_mm3`` only removes components from the final mask
(:func:`lesionq.core.segmentation.drop_small_infratentorial`), so the grid segments
once per setting of the other keys and applies that filter for each of its values.
"""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from devscans import DEV_SCANS, SHARED, DevScan, available, load

from lesionq.core.location import INFRATENTORIAL_MIN_FRACTION
from lesionq.core.segmentation import drop_small_infratentorial, segment_lesions
from lesionq.core.units import voxel_size_from_affine
from lesionq.io.nifti import save_image

SCORE = SHARED / "eval" / "score.py"

#: Parameters changed since 0.1.0 and their values (0.1.0's first, then the values tried
#: since, the current one last): the LOSO grid.
LOSO_GRID: dict[str, tuple[Any, ...]] = {
    "background_sigma_mm": (0.0, 10.0),
    "t2_min_z": (1.5, 0.0),
    "wm_prior_min": (0.0, 0.3),
    "shell_lesion": (False, True),
    "atlas_brain_min": (0.0, 0.5),
    "infratentorial_min_mm3": (0.0, 20.0),
}


def score_cli(pred: Path, truth: Path) -> dict[str, Any]:
    """``score.py lesions PRED TRUTH`` as a subprocess (how the project is judged)."""
    cmd = [sys.executable, str(SCORE), "lesions", str(pred), str(truth)]
    return json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)


def _segment(d: Mapping[str, Any], seg_kw: Mapping[str, Any], n_threads: int = 1):
    vs = voxel_size_from_affine(d["affine"])
    pri = {
        "wm": d["prior_wm"],
        "gm": d["prior_gm"],
        "csf": d["prior_csf"],
        "location": d["location"],
    }
    t0 = time.perf_counter()
    res = segment_lesions(
        d["flair"], d["brain"] > 0, vs, t1=d["t1"], t2=d["t2"], priors=pri,
        n_threads=n_threads, **seg_kw,
    )  # fmt: skip
    return res, time.perf_counter() - t0


def _fast_scores(
    mask: np.ndarray, truths: Sequence[np.ndarray], scorer: Any
) -> tuple[float, float]:
    """Mean (Dice, F1) over raters on the FLAIR grid (the LOSO search; same rules as score.py)."""
    dice, f1 = [], []
    for t in truths:
        den = mask.sum() + t.sum()
        dice.append(2.0 * (mask & t).sum() / den if den else 1.0)
        f1.append(scorer.lesionwise(mask, t, 3)["f1"])
    return float(np.mean(dice)), float(np.mean(f1))


def _row(name: str, s: Mapping[str, float]) -> str:
    return (
        f"| {name} | {s['dice']:.3f} | {s['f1']:.3f} | {s['sensitivity']:.2f} | "
        f"{s['precision']:.2f} | {s['truth_lesions']:.0f} | {s['pred_lesions']:.0f} | "
        f"{s['truth_ml']:.2f} | {s['pred_ml']:.2f} | {s['vol_err_pct']:+.0f} % | "
        f"{s.get('s1', float('nan')):.1f} | {s.get('s2', float('nan')):.1f} |"
    )


HEAD = [
    "| scan | Dice | lesion F1 | sens | prec | truth lesions | pred lesions | truth mL "
    "| pred mL | vol. error | seg. s (1 thread) | seg. s (2 threads) |",
    "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
]


def _mean_over(scores: Sequence[Mapping[str, float]]) -> dict[str, float]:
    keys = ("dice", "f1", "sensitivity", "precision", "truth_lesions", "pred_lesions")
    out = {k: float(np.mean([s[k] for s in scores])) for k in keys}
    out["truth_ml"] = float(np.mean([s["truth_volume_ml"] for s in scores]))
    out["pred_ml"] = float(scores[0]["pred_volume_ml"])
    out["vol_err_pct"] = 100.0 * (out["pred_ml"] - out["truth_ml"]) / out["truth_ml"]
    return out


def bench_dev_scans(
    seg_kw: Mapping[str, Any],
    scratch: Path,
    report: list[str],
    *,
    scorer: Any,
    loso: bool = True,
    evaluate: Any = None,
    tables: Any = None,
) -> dict[str, dict[str, float]]:
    """Append the real-data section to ``report``; return the per-scan figures.

    ``evaluate`` and ``tables`` are the benchmark's own size-band tally and table
    functions (:func:`bench_segmentation.evaluate`, :func:`bench_segmentation.tables`).
    """
    if not available():
        report += ["## Real dev scans", "", "Skipped: `../shared/data` is absent.", ""]
        return {}
    scratch.mkdir(parents=True, exist_ok=True)
    per_scan: dict[str, dict[str, float]] = {}
    rater_rows: list[str] = []
    band_rows: list[tuple[str, Any]] = []
    cache: dict[str, dict[str, Any]] = {}
    for scan in DEV_SCANS:
        d = load(scan)
        cache[scan.name] = d
        res, s1 = _segment(d, seg_kw, 1)
        res2, s2 = _segment(d, seg_kw, 2)
        if not np.array_equal(res.probability, res2.probability):
            raise RuntimeError(f"{scan.name}: 1 and 2 threads differ")
        pred = scratch / f"{scan.name}_mask.nii.gz"
        save_image(res.mask.astype(np.uint8), d["affine"], pred)
        scores = [score_cli(pred, t) for t in scan.truth_paths()]
        m = _mean_over(scores)
        m["s1"], m["s2"] = s1, s2
        per_scan[scan.name] = m
        print(f"{scan.name}: Dice {m['dice']:.3f} F1 {m['f1']:.3f} ({s1:.1f} s)", flush=True)
        if len(scores) > 1:
            for k, s in enumerate(scores, start=1):
                rater_rows.append(
                    f"| {scan.name} vs rater {k} | {s['dice']:.3f} | {s['f1']:.3f} | "
                    f"{s['sensitivity']:.2f} | {s['precision']:.2f} |"
                )
            agree = score_cli(scan.truth_paths()[0], scan.truth_paths()[1])
            rater_rows.append(
                f"| {scan.name}: rater 1 vs rater 2 (human bar) | {agree['dice']:.3f} | "
                f"{agree['f1']:.3f} | {agree['sensitivity']:.2f} | {agree['precision']:.2f} |"
            )
        if evaluate is not None:
            vs = voxel_size_from_affine(d["affine"])
            band_rows.append((f"{scan.name} (rater 1)", evaluate(res.mask, d["truths"][0], vs)))
    names = list(per_scan)
    mean = {k: float(np.mean([per_scan[n][k] for n in names])) for k in per_scan[names[0]]}
    worst_dice = min(names, key=lambda n: per_scan[n]["dice"])
    worst_f1 = min(names, key=lambda n: per_scan[n]["f1"])
    report += [
        "## Real dev scans (the figures that count)",
        "",
        "Every annotated cross-sectional dev scan of `../shared/data` (Ljubljana sub-cs07, "
        "MSLesSeg sub-P14 x 3 visits and sub-P39, ISBI-2015 training01/02 raw 2D FLAIR "
        "only), on the inputs the visit pipeline gives the segmentation step "
        "(`benchmarks/devscans.py`: deepbet or the stripped support, N4 for raw scans, "
        "rigid T1w/T2w -> FLAIR, atlas priors). Scored by `../shared/eval/score.py lesions` "
        "(command line) against each rater's mask; two-rater scans: mean over raters. "
        "`seg. s` is the wall time of `segment_lesions` at 1 and 2 threads (identical "
        "outputs checked).",
        "",
        *HEAD,
        *[_row(n, per_scan[n]) for n in names],
        _row("**mean (7 scans)**", mean),
        f"| **worst Dice** | {per_scan[worst_dice]['dice']:.3f} ({worst_dice}) | | | | | | | "
        "| | | |",
        f"| **worst F1** | | {per_scan[worst_f1]['f1']:.3f} ({worst_f1}) | | | | | | | | | |",
        "",
        "Raw FLAIR-only scans against each rater, and the raters against each other:",
        "",
        "| comparison | Dice | lesion F1 | sens | prec |",
        "|---|---:|---:|---:|---:|",
        *rater_rows,
        "",
    ]
    p14 = [n for n in names if n.startswith("P14")]
    if p14:
        report += [
            "Serial consistency, sub-P14 (expert trajectory 24.8 -> 29.7 -> 24.5 mL):",
            "",
            "| visit | expert mL | lesionq mL | error mL | error % |",
            "|---|---:|---:|---:|---:|",
            *[
                f"| {n} | {per_scan[n]['truth_ml']:.1f} | {per_scan[n]['pred_ml']:.1f} | "
                f"{per_scan[n]['pred_ml'] - per_scan[n]['truth_ml']:+.1f} | "
                f"{per_scan[n]['vol_err_pct']:+.0f} % |"
                for n in p14
            ],
            "",
        ]
    if band_rows and tables is not None:
        report += ["By size band, each scan against its first rater:", "", *tables(band_rows)]
    if loso:
        report += loso_section(cache, seg_kw, scorer)
    return per_scan


def loso_section(
    cache: Mapping[str, Mapping[str, Any]], seg_kw: Mapping[str, Any], scorer: Any
) -> list[str]:
    """Leave-one-subject-out choice over :data:`LOSO_GRID` (see the module docstring)."""
    keys = list(LOSO_GRID)
    grid = [dict(zip(keys, vals, strict=True)) for vals in itertools.product(*LOSO_GRID.values())]
    perf: dict[tuple[int, str], tuple[float, float]] = {}
    last: dict[str, tuple[str, np.ndarray]] = {}  # scan -> (unfiltered setting, its mask)
    for gi, g in enumerate(grid):
        kw = {**seg_kw, **g, "infratentorial_min_mm3": 0.0}
        key = json.dumps(kw, sort_keys=True)
        for scan in DEV_SCANS:
            d = cache[scan.name]
            if scan.name not in last or last[scan.name][0] != key:
                last[scan.name] = (key, _segment(d, kw, 1)[0].mask)
            mask = drop_small_infratentorial(
                last[scan.name][1],
                d["location"],
                voxel_size_from_affine(d["affine"]),
                g.get("infratentorial_min_mm3", seg_kw.get("infratentorial_min_mm3", 0.0)),
                seg_kw.get("infratentorial_min_fraction", INFRATENTORIAL_MIN_FRACTION),
            )
            perf[gi, scan.name] = _fast_scores(mask, d["truths"], scorer)
        print(f"LOSO grid {gi + 1}/{len(grid)}: {g}", flush=True)
    subjects = sorted({s.subject for s in DEV_SCANS})
    rows, held = [], {}
    for sub in subjects:
        train = [s.name for s in DEV_SCANS if s.subject != sub]
        test = [s.name for s in DEV_SCANS if s.subject == sub]
        best = max(
            range(len(grid)),
            key=lambda gi: np.mean([sum(perf[gi, n]) / 2.0 for n in train]),
        )
        for n in test:
            held[n] = perf[best, n]
            rows.append(
                f"| {n} | {json.dumps(grid[best], sort_keys=True)} | {perf[best, n][0]:.3f} | "
                f"{perf[best, n][1]:.3f} |"
            )
    md = np.mean([v[0] for v in held.values()])
    mf = np.mean([v[1] for v in held.values()])
    all_rows = [
        f"| {json.dumps(g, sort_keys=True)} | "
        + f"{np.mean([perf[gi, s.name][0] for s in DEV_SCANS]):.3f} | "
        + f"{np.mean([perf[gi, s.name][1] for s in DEV_SCANS]):.3f} | "
        + f"{min(perf[gi, s.name][0] for s in DEV_SCANS):.3f} |"
        for gi, g in enumerate(grid)
    ]
    return [
        "### Leave-one-subject-out",
        "",
        "The settings changed in this version were chosen looking at these scans. Here "
        f"they are treated as fitted: over the grid {json.dumps(LOSO_GRID)} (0.1.0's value "
        "first, this version's last), each subject's scans are scored with the setting that is "
        "best (mean of Dice and F1) on the other four subjects. Dice and F1 here are "
        "computed on the FLAIR grid with the scorer's rules (the same numbers as the "
        "command line where the truth is on that grid, which it is for every dev scan).",
        "",
        "| held-out scan | setting chosen on the other subjects | Dice | lesion F1 |",
        "|---|---|---:|---:|",
        *rows,
        f"| **mean** | | {md:.3f} | {mf:.3f} |",
        "",
        "Every grid point on all 7 scans (mean Dice, mean F1, worst Dice):",
        "",
        "| setting | mean Dice | mean F1 | worst Dice |",
        "|---|---:|---:|---:|",
        *all_rows,
        "",
    ]


def scan_by_name(name: str) -> DevScan:
    """The dev scan called ``name``."""
    return next(s for s in DEV_SCANS if s.name == name)
