#!/usr/bin/env python3
"""Benchmark the T1 black-hole step (:func:`lesionq.steps.black_holes.segment_black_hole_volumes`).

No development scan has an expert black-hole mask, so the accuracy on real scans
is measured on *synthetic* black holes planted into *real* T1s, and the real
black holes are only described (volume, consistency across visits):

1. **Injected black holes** (:func:`lesionq.testing.inject.plant_lesions`): per scan,
   contrast band and seed, 8 T2 lesions (``random_t2_specs``: volume log-uniform
   10-500 mm3, half irregular, sharp logistic edge) whose T1 is darkened by ``x`` =
   10, 20, 30, 40 or 50 % of the NAWM median (``Contrast(-x, "wm_fraction")``: the
   centre of the lesion reads ``(1 - x)`` x NAWM, the edge blends into the tissue
   with the sub-voxel partial volume of the injection model), placed in white
   matter (atlas WM prior >= 0.8, the whole lesion inside it) at least 3 mm from
   the scan's own expert T2 lesions and 4 mm from each other (where 8 do not fit,
   as in the heavily affected sub-P39, the largest are left out until they do). The T2 lesion labels given to the step are
   the expert lesions plus the planted ones (their truth masks), so the figure is
   the black-hole step's, not the T2 segmentation's. Per planted lesion: its
   black-hole volume (black-hole voxels inside it) against its planted volume,
   and whether any black hole overlaps it. Scans: the real T1s of sub-cs07
   (Ljubljana, 1 mm MNI) and MSLesSeg sub-P14 ses-01 and sub-P39 (1 mm MNI).
2. **Consistency**: the black-hole volume of sub-P14's three visits, inside the
   expert T2 masks and inside lesionq's own T2 segmentation (``[segmentation]``
   of the protocol), with each visit's T1 reference levels.
3. **Speed and determinism**: wall time of the step per call; two runs on sub-cs07
   compared bit for bit.

The inputs of each scan (bias-corrected FLAIR, brain mask, T1 on the FLAIR grid,
atlas priors) are the visit pipeline's own, cached by ``benchmarks/devscans.py``
(protocol ``mesems_v1``); ``[black_holes]`` and ``[lesions]`` come from
``pipelines/mesems_v1.toml``. It rewrites ``benchmarks/results/black_holes.md``.

Usage::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_black_holes.py [--seeds 2] [--results PATH]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

from lesionq.config import load_protocol
from lesionq.core.components import label_lesions
from lesionq.core.units import voxel_size_from_affine, voxel_volume_mm3
from lesionq.errors import ProcessingError
from lesionq.steps.black_holes import BlackHoleResult, segment_black_hole_volumes
from lesionq.testing.inject import plant_lesions, random_t2_specs
from lesionq.types import Volume

sys.path.insert(0, str(Path(__file__).resolve().parent))
import devscans  # noqa: E402  (same folder)
from bench_brain_extraction import cpu_model  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results" / "black_holes.md"
PROTOCOL = "mesems_v1"
BANDS = (0.10, 0.20, 0.30, 0.40, 0.50)
INJECT_SCANS = ("cs07", "P14_1", "P39")
SERIAL_SCANS = ("P14_1", "P14_2", "P14_3")
N_PER_RUN = 8
VOLUME_RANGE_MM3 = (10.0, 500.0)
SIZE_BAR_MM3 = 30.0  # the bar: lesions >= 30 mm3 ...
BAND_BAR = 0.30  # ... at >= 30 % below NAWM ...
ERROR_BAR = 0.20  # ... volume error within +-20 %
GAP_REAL_MM = 3.0  # planted lesions keep this far from the scan's own T2 lesions
GAP_PLANTED_MM = 4.0  # ... and from each other (bounding spheres)


@dataclass
class Scan:
    """Cached pipeline inputs of one dev scan (FLAIR grid)."""

    name: str
    affine: np.ndarray
    t1: np.ndarray
    brain: np.ndarray
    priors: dict[str, np.ndarray]
    t2_labels: np.ndarray  # expert lesions, labelled with the [lesions] rule
    n_t2: int
    flair: np.ndarray
    t2w: np.ndarray | None

    @property
    def voxel_size_mm(self) -> tuple[float, float, float]:
        return voxel_size_from_affine(self.affine)

    def vol(self, arr: np.ndarray, kind: str) -> Volume:
        return Volume(arr, self.affine, kind)


@dataclass
class Planted:
    scan: str
    band: float
    seed: int
    volume_mm3: float
    bh_mm3: float
    detected: bool


def load_scan(name: str, lesions: dict) -> Scan:
    scan = next(s for s in devscans.DEV_SCANS if s.name == name)
    d = devscans.load(scan, PROTOCOL)
    vs = voxel_size_from_affine(d["affine"])
    truth = d["truths"][0]  # type: ignore[index]
    labels, n = label_lesions(
        truth,
        vs,
        min_volume_mm3=float(lesions["min_volume_mm3"]),
        connectivity=int(lesions["connectivity"]),
    )
    return Scan(
        name=name,
        affine=d["affine"],  # type: ignore[arg-type]
        t1=np.asarray(d["t1"], np.float32),
        brain=np.asarray(d["brain"]) > 0,
        priors={k: np.asarray(d[f"prior_{k}"], np.float32) for k in ("wm", "gm", "csf")},
        t2_labels=labels.astype(np.int32),
        n_t2=int(n),
        flair=np.asarray(d["flair"], np.float32),
        t2w=None if d["t2"] is None else np.asarray(d["t2"], np.float32),
    )


def run_step(
    scan: Scan, t1: np.ndarray, t2_labels: np.ndarray, bh: dict, lesions: dict
) -> tuple[BlackHoleResult, float]:
    t0 = time.perf_counter()
    res = segment_black_hole_volumes(
        scan.vol(t1, "T1w"),
        scan.vol(t2_labels.astype(np.int32), "labels"),
        scan.vol(scan.brain.astype(np.uint8), "mask"),
        priors={k: scan.vol(v, k) for k, v in scan.priors.items()},
        black_holes=bh,
        lesions=lesions,
    )
    return res, time.perf_counter() - t0


def inject_band(
    scan: Scan, band: float, seed: int, bh: dict, lesions: dict, times: list[float]
) -> list[Planted]:
    vs = scan.voxel_size_mm
    real = scan.t2_labels > 0
    near_real = ndi.distance_transform_edt(~real, sampling=vs) < GAP_REAL_MM
    wm = scan.brain & (scan.priors["wm"] >= 0.8)
    nawm = scan.brain & (scan.priors["wm"] >= 0.9) & ~near_real
    specs = random_t2_specs(
        N_PER_RUN,
        seed=1000 * seed + int(round(100 * band)),
        volume_mm3=VOLUME_RANGE_MM3,
        t1_fraction=-band,
    )
    while True:  # where they do not all fit (the heavily affected sub-P39), drop the largest
        try:
            inj = plant_lesions(
                {"t1": scan.t1},
                voxel_size_mm=vs,
                specs=specs,
                seed=seed,
                placement_mask=wm & ~near_real,
                reference_mask=nawm,
                min_gap_mm=GAP_PLANTED_MM,
            )
            break
        except ProcessingError:
            if len(specs) <= 1:
                raise
            largest = max(range(len(specs)), key=lambda i: specs[i].requested_volume_mm3)
            specs = specs[:largest] + specs[largest + 1 :]
    planted = inj.labels
    labels = np.where(planted > 0, planted + scan.n_t2, scan.t2_labels).astype(np.int32)
    res, secs = run_step(scan, inj.images["t1"], labels, bh, lesions)
    times.append(secs)
    mask = np.asarray(res.mask.array) > 0
    vv = voxel_volume_mm3(vs)
    out = []
    for les in inj.lesions:
        inside = planted == les.lesion_id
        n_bh = int(np.count_nonzero(mask & inside))
        out.append(
            Planted(
                scan=scan.name,
                band=band,
                seed=seed,
                volume_mm3=les.volume_mm3,
                bh_mm3=n_bh * vv,
                detected=n_bh > 0,
            )
        )
    return out


def _pct(x: float) -> str:
    return f"{100 * x:+.0f} %"


def band_rows(planted: list[Planted], scans: Sequence[str]) -> list[str]:
    rows = []
    for name in (*scans, "all"):
        for band in BANDS:
            for size, sel in (
                ("< 30", lambda p: p.volume_mm3 < SIZE_BAR_MM3),
                (">= 30", lambda p: p.volume_mm3 >= SIZE_BAR_MM3),
            ):
                ps = [
                    p
                    for p in planted
                    if (name == "all" or p.scan == name) and p.band == band and sel(p)
                ]
                if not ps:
                    continue
                err = np.array([(p.bh_mm3 - p.volume_mm3) / p.volume_mm3 for p in ps])
                pooled = sum(p.bh_mm3 for p in ps) / sum(p.volume_mm3 for p in ps) - 1.0
                within = int(np.count_nonzero(np.abs(err) <= ERROR_BAR))
                rows.append(
                    f"| {name} | {int(round(100 * band))} % | {size} | {len(ps)} | "
                    f"{sum(p.detected for p in ps)} | {_pct(float(np.median(err)))} | "
                    f"{_pct(float(err.min()))} .. {_pct(float(err.max()))} | {within} / {len(ps)} | "
                    f"{_pct(pooled)} |"
                )
    return rows


def segment_t2(scan: Scan, segmentation: dict, lesions: dict, location: dict) -> np.ndarray:
    """lesionq's own T2 lesion labels of the scan (the pipeline's steps)."""
    from lesionq import steps

    seg = steps.segment_t2_volumes(
        scan.vol(scan.flair, "FLAIR"),
        scan.vol(scan.brain.astype(np.uint8), "mask"),
        t1=scan.vol(scan.t1, "T1w"),
        t2=None if scan.t2w is None else scan.vol(scan.t2w, "T2w"),
        priors={k: scan.vol(v, k) for k, v in scan.priors.items()},
        segmentation=segmentation,
        min_volume_mm3=float(lesions["min_volume_mm3"]),
        location_rules=location,
    )
    tab = steps.tabulate_lesions(
        seg.mask,
        flair=scan.vol(scan.flair, "FLAIR"),
        brain_mask=scan.vol(scan.brain.astype(np.uint8), "mask"),
        lesions=lesions,
    )
    return np.asarray(tab.labels.array, np.int32)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=2, help="injection seeds per scan and band")
    ap.add_argument("--results", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    if not devscans.available():
        print(f"skipped: the shared dev data is not at {devscans.DATA}", file=sys.stderr)
        return 2
    t_start = time.perf_counter()
    load_avg = os.getloadavg()[0]
    settings = load_protocol(PROTOCOL)
    bh = dict(settings.section("black_holes"))
    lesions = dict(settings.section("lesions"))
    times: list[float] = []

    # 1. injected black holes
    planted: list[Planted] = []
    levels: dict[str, dict] = {}
    scans = {name: load_scan(name, lesions) for name in (*INJECT_SCANS, "P14_2", "P14_3")}
    for name in INJECT_SCANS:
        scan = scans[name]
        base, secs = run_step(scan, scan.t1, scan.t2_labels, bh, lesions)
        times.append(secs)
        levels[name] = dict(base.levels)
        for band in BANDS:
            for seed in range(1, args.seeds + 1):
                planted += inject_band(scan, band, seed, bh, lesions, times)
            last = [p for p in planted if p.scan == name and p.band == band]
            print(
                f"{name} {int(100 * band)} %: {sum(p.detected for p in last)}/{len(last)} "
                f"detected, planted {sum(p.volume_mm3 for p in last):.0f} mm3, "
                f"black holes {sum(p.bh_mm3 for p in last):.0f} mm3",
                flush=True,
            )

    # 2. consistency over sub-P14's visits
    serial = []
    for name in SERIAL_SCANS:
        scan = scans[name]
        expert, secs = run_step(scan, scan.t1, scan.t2_labels, bh, lesions)
        times.append(secs)
        own_labels = segment_t2(
            scan,
            dict(settings.section("segmentation")),
            lesions,
            dict(settings.section("location")),
        )
        own, secs = run_step(scan, scan.t1, own_labels, bh, lesions)
        times.append(secs)
        vv = voxel_volume_mm3(scan.voxel_size_mm)
        serial.append((name, scan, expert, own, np.count_nonzero(own_labels) * vv))
        print(f"{name}: BH {expert.volume_mm3:.0f} (expert T2), {own.volume_mm3:.0f} (own T2)")

    # 3. determinism
    cs = scans["cs07"]
    a, _ = run_step(cs, cs.t1, cs.t2_labels, bh, lesions)
    b, _ = run_step(cs, cs.t1, cs.t2_labels, bh, lesions)
    identical = bool(np.array_equal(a.labels.array, b.labels.array) and a.table.equals(b.table))

    # ------------------------------------------------------------------ the report
    bar = [p for p in planted if p.volume_mm3 >= SIZE_BAR_MM3 and p.band >= BAND_BAR - 1e-9]
    bar_err = np.array([(p.bh_mm3 - p.volume_mm3) / p.volume_mm3 for p in bar])
    bar_ok = int(np.count_nonzero(np.abs(bar_err) <= ERROR_BAR))
    by_scan_bar = []
    for name in INJECT_SCANS:
        e = np.array([(p.bh_mm3 - p.volume_mm3) / p.volume_mm3 for p in bar if p.scan == name])
        by_scan_bar.append(
            f"{name} {int(np.count_nonzero(np.abs(e) <= ERROR_BAR))} / {len(e)} "
            f"(median {_pct(float(np.median(e)))}, worst {_pct(float(e[np.argmax(np.abs(e))]))})"
        )
    total = time.perf_counter() - t_start
    today = dt.date.today().isoformat()
    cmd = f"OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_black_holes.py --seeds {args.seeds}"
    lines = [
        "# T1 black-hole benchmark",
        "",
        f"Generated by `benchmarks/bench_black_holes.py --seeds {args.seeds}` on {today} "
        f"({cpu_model()}, {os.cpu_count()} CPUs, shared; load average at start {load_avg:.1f}); "
        f"total {total / 60:.1f} min.",
        f"Command: `{cmd}`.",
        "",
        "Method: `lesionq.core.black_holes.segment_black_holes` through "
        "`lesionq.steps.black_holes.segment_black_hole_volumes`; `[black_holes]` of "
        f"`pipelines/{PROTOCOL}.toml` ({', '.join(f'{k} = {v}' for k, v in bh.items())}); "
        f"`[lesions] min_volume_mm3` = {lesions['min_volume_mm3']}. Inputs: the visit pipeline's "
        "own (bias-corrected T1 on the FLAIR grid, brain mask, atlas priors; "
        "`benchmarks/devscans.py`).",
        "",
        "**What this measures and what it does not.** No development scan has an expert "
        "black-hole mask: the accuracy figures below are on synthetic T1-dark lesions planted "
        "into real T1s (the injection model of `lesionq.testing.inject`: uniform contrast, a "
        "sharp logistic edge with sub-voxel partial volume, no texture). How well lesionq's black "
        "holes agree with a radiologist's on real lesions is **unmeasured**.",
        "",
        f"Bar (issue 18): volume error within +-{int(100 * ERROR_BAR)} % for planted lesions >= "
        f"{SIZE_BAR_MM3:.0f} mm3 at >= {int(100 * BAND_BAR)} % below NAWM: "
        f"**{bar_ok} / {len(bar)}** lesions within it "
        f"({'met' if bar_ok == len(bar) else 'not met for every lesion'}); per scan: "
        + "; ".join(by_scan_bar)
        + ".",
        "",
        "## Reference levels of each scan (T1 on the FLAIR grid, whole scan)",
        "",
        "The step measures T1 contrast as c = (NAWM - T1) / (NAWM - CSF) (NAWM around each T2 "
        "lesion). A lesion x below NAWM has c = x / (1 - CSF / NAWM): the same injected band "
        "is a different c on each scan. Grey matter (c at the GM median) marks the classic "
        '"isointense to grey matter" level; the seed threshold is '
        f"c >= {bh['hypo_fraction']}.",
        "",
        "| scan | NAWM | CSF | GM | CSF / NAWM | GM: % below NAWM | GM: c | c of 10 / 20 / 30 / "
        "40 / 50 % below NAWM |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for name in (*INJECT_SCANS, "P14_2", "P14_3"):
        lv = levels.get(name)
        if lv is None:
            lv = next(dict(s[2].levels) for s in serial if s[0] == name)
        ratio = lv["csf"] / lv["nawm"]
        cs_ = " / ".join(f"{x / (1 - ratio):.2f}" for x in BANDS)
        lines.append(
            f"| {name} | {lv['nawm']:.1f} | {lv['csf']:.1f} | {lv['gm']:.1f} | {ratio:.2f} | "
            f"{100 * (1 - lv['gm'] / lv['nawm']):.0f} % | {lv['gm_fraction']:.2f} | {cs_} |"
        )
    lines += [
        "",
        "## Injected black holes",
        "",
        f"{args.seeds} seeds x {N_PER_RUN} lesions per scan and band (volume log-uniform "
        f"{VOLUME_RANGE_MM3[0]:.0f}-{VOLUME_RANGE_MM3[1]:.0f} mm3). Volume error = (black-hole "
        "volume inside the planted lesion - planted volume) / planted volume; detected = a "
        "black hole overlaps it; pooled = summed black-hole volume / summed planted volume - 1 "
        "(the error of a visit's total, `bh_volume_mm3`). Bands brighter than a scan's grey "
        "matter are not black holes by the clinical rule: there, detection is the false-positive "
        "rate and the volume error is expected near -100 %.",
        "",
        "| scan | below NAWM | size mm3 | lesions | detected | median volume error | range | "
        "within +-20 % | pooled |",
        "|---|---:|---|---:|---:|---:|---|---:|---:|",
        *band_rows(planted, INJECT_SCANS),
        "",
        "## Real black holes: sub-P14 over its three visits",
        "",
        "Inside the expert T2 masks and inside lesionq's own T2 segmentation "
        f"(`[segmentation]` of `{PROTOCOL}`). T1 levels per visit (whole scan).",
        "",
        "| visit | T2 expert mL | BH in expert T2 mL (count) | BH / T2 | T2 lesionq mL | BH in "
        "lesionq T2 mL (count) | NAWM | CSF | GM at c |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, scan, expert, own, own_t2 in serial:
        vv = voxel_volume_mm3(scan.voxel_size_mm)
        t2_ml = np.count_nonzero(scan.t2_labels) * vv / 1000
        lv = expert.levels
        lines.append(
            f"| {name} | {t2_ml:.1f} | {expert.volume_mm3 / 1000:.2f} ({expert.count}) | "
            f"{expert.volume_mm3 / 1000 / t2_ml:.2f} | {own_t2 / 1000:.1f} | "
            f"{own.volume_mm3 / 1000:.2f} ({own.count}) | {lv['nawm']:.0f} | {lv['csf']:.0f} | "
            f"{lv['gm_fraction']:.2f} |"
        )
    lines += [
        "",
        "The three visits are months apart, so a true change is possible; but the T1s differ "
        "too (ses-03's T1 has another intensity scale and a stronger grey/white contrast: its "
        "grey matter sits further from NAWM), and the black-hole fraction of the same expert "
        "lesions follows that contrast. A fixed threshold on a contrast scale normalised by "
        "NAWM and CSF does not remove a change of T1 weighting between scans: for trial "
        "reads, the T1 protocol must be kept fixed across visits.",
        "",
        "## Speed and determinism",
        "",
        f"Step wall time per call (1 mm MNI grid, 182 x 218 x 182; tissue model on a lattice of "
        f"<= 300 000 brain voxels): median {np.median(times):.2f} s, max {max(times):.2f} s over "
        f"{len(times)} calls (bar: <= 5 s per visit). Two runs on sub-cs07 bit-identical: "
        f"{'yes' if identical else '**no**'}.",
        "",
    ]
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text("\n".join(lines))
    print(f"wrote {args.results} ({total:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
