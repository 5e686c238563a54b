#!/usr/bin/env python3
"""Benchmark brain extraction, N4 and registration on the real Ljubljana data.

Runs the default brain-extraction method (and the Otsu method for reference) on
sub-lo01 ses-01 / ses-02 FLAIR (raw, with skull) and sub-cs07 FLAIR (already
skull-stripped), scores the lo01 masks with ``../shared/eval/score.py`` against the
dataset's brain mask (through each session's transform), compares the cs07 mask
and deepbet's forced output on cs07 with the non-zero support, times N4 and the
rigid T1->FLAIR, T2->FLAIR and FLAIR ses-02->ses-01 registrations (the last is
checked against the dataset's transforms) and the MNI template registration, and
rewrites ``benchmarks/results/brain_extraction.md``.

Usage::

    .venv/bin/python benchmarks/bench_brain_extraction.py [--n-threads 1]

Masks go to ``benchmarks/_scratch/brain_extraction/`` (gitignored). Timings are
wall-clock seconds of single runs after a warm-up; on a shared machine they are
noisy, so the load average is recorded with them.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from lesionq.io.nifti import load_array, save_image
from lesionq.io.sitk_bridge import transform_to_ras_matrix
from lesionq.preprocess import brain_mask, correct_bias, deepbet_brain_mask, nonzero_brain_mask
from lesionq.registration import estimate_rigid, register_template

REPO = Path(__file__).resolve().parents[1]
DATA = (REPO / ".." / "shared" / "data" / "ljubljana").resolve()
SCORE = (REPO / ".." / "shared" / "eval" / "score.py").resolve()
SCRATCH = REPO / "benchmarks" / "_scratch" / "brain_extraction"
RESULTS = REPO / "benchmarks" / "results" / "brain_extraction.md"
ATLAS = REPO / "atlases" / "mni152_2009a"
LOAD_AT_START = 0.0


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return float(2 * np.count_nonzero(a & b) / (np.count_nonzero(a) + np.count_nonzero(b)))


def score_lo01(mask_path: Path, ses: str) -> dict:
    truth = DATA / "derivatives" / "truth" / "sub-lo01"
    cmd = [
        sys.executable, str(SCORE), "lesions", str(mask_path),
        str(truth / "sub-lo01_space-common_label-brain_mask.nii.gz"),
        "--xfm", str(truth / ses / "xfm" / f"sub-lo01_{ses}_from-FLAIR_to-common_mode-image_xfm.txt"),
    ]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


class Seconds(float):
    """Wall-clock seconds that print as ``wall (cpu)``: the process CPU time is what an
    idle machine would show with one thread, the wall time what this one showed."""

    cpu: float

    def __format__(self, spec: str) -> str:
        return f"{float(self):{spec}} ({self.cpu:{spec}})"


def timed(fn, *args, **kwargs):
    t0, c0 = time.perf_counter(), time.process_time()
    out = fn(*args, **kwargs)
    sec = Seconds(time.perf_counter() - t0)
    sec.cpu = time.process_time() - c0
    return out, sec


def flair(sub: str, ses: str, mod: str = "FLAIR"):
    return load_array(DATA / sub / ses / "anat" / f"{sub}_{ses}_{mod}.nii.gz")


def transform_error_mm(tx, truth_tx, mask, affine) -> tuple[float, float]:
    ijk = np.argwhere(mask)[::100]
    ras = ijk @ affine[:3, :3].T + affine[:3, 3]
    lps = ras * [-1.0, -1.0, 1.0]
    a = np.array([tx.TransformPoint(tuple(p)) for p in lps])
    b = np.array([truth_tx.TransformPoint(tuple(p)) for p in lps])
    d = np.linalg.norm(a - b, axis=1)
    return float(d.mean()), float(d.max())


def facts_baseline_rigid(fixed_arr, fixed_aff, moving_arr, moving_aff, n_threads: int):
    """The SimpleITK set-up measured in ../shared/FACTS.md (9.5 s there with 2 threads):
    Mattes MI 50 bins, 15 % random sampling, regular-step gradient descent, SimpleITK's
    own pyramid (shrink 4-2-1, smoothing 2-1-0 voxels), Euler angles."""
    from lesionq.io.sitk_bridge import nib_to_sitk

    f = nib_to_sitk(fixed_arr.astype(np.float32), fixed_aff)
    m = nib_to_sitk(moving_arr.astype(np.float32), moving_aff)
    tx = sitk.CenteredTransformInitializer(
        f, m, sitk.Euler3DTransform(), sitk.CenteredTransformInitializerFilter.GEOMETRY
    )
    reg = sitk.ImageRegistrationMethod()
    reg.SetNumberOfThreads(n_threads)
    reg.SetMetricAsMattesMutualInformation(50)
    reg.SetMetricSamplingStrategy(reg.RANDOM)
    reg.SetMetricSamplingPercentage(0.15, 1)
    reg.SetInterpolator(sitk.sitkLinear)
    reg.SetOptimizerAsRegularStepGradientDescent(1.0, 1e-4, 200, 0.5)
    reg.SetOptimizerScalesFromPhysicalShift()
    reg.SetShrinkFactorsPerLevel([4, 2, 1])
    reg.SetSmoothingSigmasPerLevel([2, 1, 0])
    reg.SetInitialTransform(tx, inPlace=True)
    reg.Execute(f, m)
    return tx


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--method", default="deepbet", choices=["deepbet", "otsu"])
    ap.add_argument("--n-threads", type=int, default=1)
    args = ap.parse_args(argv)
    if not (DATA / "dataset_description.json").is_file():
        print(f"real data not found at {DATA}", file=sys.stderr)
        return 2
    nt = args.n_threads
    global LOAD_AT_START
    LOAD_AT_START = os.getloadavg()[0]
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(nt)
    SCRATCH.mkdir(parents=True, exist_ok=True)
    rows, notes = [], []

    # warm-up: model load + first torch call
    x, a = flair("sub-cs07", "ses-01")
    _, t_load = timed(deepbet_brain_mask, x, a, n_threads=nt)
    notes.append(f"deepbet model load + first call (warm-up, on sub-cs07): {t_load:.1f} s")

    # raw scans with skull
    methods = [args.method] + [m for m in ("otsu",) if m != args.method]
    for ses in ("ses-01", "ses-02"):
        x, a = flair("sub-lo01", ses)
        for method in methods:
            res, t = timed(brain_mask, x, a, method=method, n_threads=nt)
            path = SCRATCH / f"sub-lo01_{ses}_FLAIR_{method}_mask.nii.gz"
            save_image(res.mask, a, path, dtype=np.uint8)
            sc = score_lo01(path, ses)
            rows.append(
                (f"sub-lo01 {ses} FLAIR", method, res.method, f"{sc['dice']:.4f}",
                 f"{sc['pred_volume_ml']:.0f} / {sc['truth_volume_ml']:.0f}", f"{t:.1f}")
            )  # fmt: skip

    # skull-stripped input
    x, a = flair("sub-cs07", "ses-01")
    support = nonzero_brain_mask(x, a)
    res, t = timed(brain_mask, x, a, method=args.method, n_threads=nt)
    rows.append(
        ("sub-cs07 ses-01 FLAIR", args.method, res.method, f"{dice(res.mask, support):.4f} (vs non-zero)",
         f"{res.volume_ml:.0f} / {support.sum() / 1000:.0f}", f"{t:.1f}")
    )  # fmt: skip
    forced, t = timed(deepbet_brain_mask, x, a, n_threads=nt)
    rows.append(
        ("sub-cs07 ses-01 FLAIR", "deepbet (forced)", "deepbet", f"{dice(forced, support):.4f} (vs non-zero)",
         f"{forced.sum() / 1000:.0f} / {support.sum() / 1000:.0f}", f"{t:.1f}")
    )  # fmt: skip

    # N4 and registration, sub-lo01 ses-01
    f1, a1 = flair("sub-lo01", "ses-01")
    m1 = brain_mask(f1, a1, method=args.method, n_threads=nt).mask
    reg_rows = []
    _, t = timed(correct_bias, f1, a1, n_threads=nt)
    reg_rows.append(
        ("N4 FLAIR ses-01 (default Otsu mask; shrink_mm 4 -> 6 x 6 x 1)", f"{t:.1f}", "")
    )
    _, t = timed(correct_bias, f1, a1, mask=m1, n_threads=nt)
    reg_rows.append(("N4 FLAIR ses-01 (brain mask)", f"{t:.1f}", ""))
    for mod in ("T1w", "T2w"):
        xm, am = flair("sub-lo01", "ses-01", mod)
        tx, t = timed(estimate_rigid, f1, a1, xm, am, n_threads=nt)
        m = transform_to_ras_matrix(tx)
        angle = np.degrees(np.arccos(np.clip((np.trace(m[:3, :3]) - 1) / 2, -1, 1)))
        mean_mm, _ = transform_error_mm(tx, sitk.Transform(3, sitk.sitkIdentity), m1, a1)
        reg_rows.append(
            (f"rigid {mod} -> FLAIR, ses-01", f"{t:.1f}",
             f"rotation {angle:.2f} deg, mean brain displacement {mean_mm:.2f} mm")
        )  # fmt: skip
    f2, a2 = flair("sub-lo01", "ses-02")
    tx, t = timed(estimate_rigid, f1, a1, f2, a2, n_threads=nt)
    xfm = DATA / "derivatives" / "truth" / "sub-lo01"
    x1 = sitk.ReadTransform(
        str(xfm / "ses-01" / "xfm" / "sub-lo01_ses-01_from-FLAIR_to-common_mode-image_xfm.txt")
    )
    x2 = sitk.ReadTransform(
        str(xfm / "ses-02" / "xfm" / "sub-lo01_ses-02_from-FLAIR_to-common_mode-image_xfm.txt")
    )
    truth = sitk.CompositeTransform([x2, x1.GetInverse()])  # ses-01 points -> ses-02 points
    mean_mm, max_mm = transform_error_mm(tx, truth, m1, a1)
    reg_rows.append(
        ("rigid FLAIR ses-02 -> ses-01", f"{t:.1f}",
         f"vs the dataset's transforms over the brain: mean {mean_mm:.2f} mm, max {max_mm:.2f} mm")
    )  # fmt: skip
    tx, t = timed(facts_baseline_rigid, f1, a1, f2, a2, nt)
    mean_mm, max_mm = transform_error_mm(tx, truth, m1, a1)
    reg_rows.append(
        ("baseline (FACTS.md SimpleITK set-up) FLAIR ses-02 -> ses-01", f"{t:.1f}",
         f"mean {mean_mm:.2f} mm, max {max_mm:.2f} mm")
    )  # fmt: skip
    xm, am = flair("sub-lo01", "ses-01", "T1w")
    _, t = timed(facts_baseline_rigid, f1, a1, xm, am, nt)
    reg_rows.append(("baseline (FACTS.md SimpleITK set-up) T1w -> FLAIR, ses-01", f"{t:.1f}", ""))
    if (ATLAS / "t1w.nii.gz").is_file():
        tp, ta = load_array(ATLAS / "t1w.nii.gz")
        _, t = timed(register_template, tp, ta, f1, a1, m1, n_threads=nt)
        reg_rows.append(
            ("affine MNI152 2009a T1 -> FLAIR ses-01 (register_template)", f"{t:.1f}", "")
        )

    load = os.getloadavg()
    load0 = LOAD_AT_START
    lines = [
        "# Brain extraction, N4 and registration benchmark",
        "",
        f"Written by `benchmarks/bench_brain_extraction.py` on {dt.datetime.now().isoformat(timespec='seconds')}.",
        "",
        f"- machine: `nproc` = {os.cpu_count()}, CPU: {cpu_model()}; 1-min load average "
        f"{load0:.2f} at the start, {load[0]:.2f} at the end (a shared machine: timings are "
        "noisy, inflated when the load exceeds the 2 cores)",
        f"- threads: {nt} (ITK and torch); Python {platform.python_version()}, SimpleITK "
        f"{sitk.Version.VersionString()}",
        "- Dice on sub-lo01: `../shared/eval/score.py lesions MASK "
        "sub-lo01_space-common_label-brain_mask.nii.gz --xfm <session xfm>` (mask on the session's FLAIR grid)",
        "- sub-cs07 has no brain truth: its masks are compared with the non-zero support of the "
        "(already skull-stripped) FLAIR",
        "",
        "## Brain extraction",
        "",
        "| scan | method asked | method used | Dice | volume mL (pred / truth) | time s wall (CPU) |",
        "|---|---|---|---|---|---|",
        *[f"| {' | '.join(r)} |" for r in rows],
        "",
        *[f"- {n}" for n in notes],
        "",
        "## N4 and registration (sub-lo01 ses-01)",
        "",
        "| step | time s wall (CPU) | result |",
        "|---|---|---|",
        *[f"| {' | '.join(r)} |" for r in reg_rows],
        "",
    ]
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text("\n".join(lines), encoding="utf-8")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
