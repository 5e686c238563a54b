#!/usr/bin/env python3
"""Whole-visit benchmark on the real Ljubljana scans: accuracy, wall time, peak memory.

Runs ``lesionq run`` (default protocol unless --pipeline) on each subject of
``../shared/data/ljubljana`` in a fresh process, then scores with the project's
independent scorer ``../shared/eval/score.py``:

* sub-cs07: T2 lesion mask vs the 3-rater consensus (voxel Dice, lesion-wise F1...);
* sub-lo01: brain mask of each session vs the dataset's brain mask (Dice), through
  the session's transform.

It also times reading the inputs alone, for the ratio reading : processing.
Writes ``benchmarks/results/pipeline.md`` (rewritten on every run).

    python benchmarks/bench_pipeline.py [--pipeline mesems_v1] [--n-procs 2]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_brain_extraction import cpu_model  # same folder: on sys.path when run as a script

REPO = Path(__file__).resolve().parents[1]
SHARED = (REPO / ".." / "shared").resolve()
DATA = SHARED / "data" / "ljubljana"
SCORE = SHARED / "eval" / "score.py"
RESULTS = REPO / "benchmarks" / "results" / "pipeline.md"

_RUNNER = (
    "import resource, sys\n"
    "from lesionq.cli.main import main\n"
    "rc = main(sys.argv[1:])\n"
    "print('MAXRSS_KB', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, flush=True)\n"
    "raise SystemExit(rc)\n"
)


def _score(*args: str) -> dict:
    out = subprocess.run(
        [sys.executable, str(SCORE), *args], check=True, capture_output=True, text=True
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def _read_time(subject: str) -> dict[str, float]:
    from lesionq.io.bids import discover
    from lesionq.io.nifti import load_image

    times = {}
    for visit in discover(DATA, participant_labels=[subject]):
        t0 = time.perf_counter()
        for path in visit.images().values():
            load_image(path)
        times[visit.session or ""] = time.perf_counter() - t0
    return times


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pipeline", default="mesems_v1")
    ap.add_argument("--n-procs", type=int, default=2)
    ap.add_argument("--out", type=Path, default=None, help="keep outputs here (default: temp)")
    args = ap.parse_args()
    if not (DATA / "dataset_description.json").is_file():
        print(f"real data not found at {DATA}; nothing to benchmark", file=sys.stderr)
        return 2
    out_root = args.out or Path(tempfile.mkdtemp(prefix="lesionq-bench-"))
    env = {**os.environ, "NIPYPE_NO_ET": "1", "OMP_NUM_THREADS": "1"}
    rows = []
    for subject in ("cs07", "lo01"):
        out = out_root / f"sub-{subject}"
        t0 = time.perf_counter()
        proc = subprocess.run(
            [
                sys.executable,
                "-c",
                _RUNNER,
                "run",
                str(DATA),
                str(out),
                "participant",
                "--participant-label",
                subject,
                "--pipeline",
                args.pipeline,
                "--n-procs",
                str(args.n_procs),
            ],
            capture_output=True,
            text=True,
            env=env,
        )
        wall = time.perf_counter() - t0
        rss_kb = next(
            (int(ln.split()[1]) for ln in proc.stdout.splitlines() if ln.startswith("MAXRSS_KB")),
            -1,
        )
        if proc.returncode != 0:
            print(proc.stdout[-3000:], proc.stderr[-3000:], file=sys.stderr)
        from lesionq.io.tables import read_tsv

        visits = read_tsv(out / "visits.tsv")
        reads = _read_time(subject)
        for _, v in visits.iterrows():
            ses = str(v["session_id"]).removeprefix("ses-")
            row = {
                "visit": f"sub-{subject} ses-{ses}",
                "status": v["status"],
                "duration_s": float(v["duration_s"]),
                "read_s": reads.get(ses, float("nan")),
                "t2_count": v["t2_count"],
                "t2_volume_mm3": v["t2_volume_mm3"],
                "contrasts": v["contrasts_used"],
                "subject_wall_s": wall,
                "subject_peak_rss_gb": rss_kb / 1024**2,
            }
            anat = out / f"sub-{subject}" / f"ses-{ses}" / "anat"
            prefix = f"sub-{subject}_ses-{ses}"
            if subject == "cs07" and v["status"] == "ok":
                truth = (
                    DATA / "derivatives/truth/sub-cs07/ses-01/anat/"
                    "sub-cs07_ses-01_label-lesion_desc-consensus_mask.nii.gz"
                )
                row["lesions"] = _score(
                    "lesions", str(anat / f"{prefix}_label-T2lesion_mask.nii.gz"), str(truth)
                )
            if subject == "lo01" and v["status"] == "ok":
                truth = (
                    DATA
                    / "derivatives/truth/sub-lo01/sub-lo01_space-common_label-brain_mask.nii.gz"
                )
                xfm = (
                    DATA / f"derivatives/truth/sub-lo01/ses-{ses}/xfm/"
                    f"sub-lo01_ses-{ses}_from-FLAIR_to-common_mode-image_xfm.txt"
                )
                row["brain"] = _score(
                    "lesions",
                    str(anat / f"{prefix}_desc-brain_mask.nii.gz"),
                    str(truth),
                    "--xfm",
                    str(xfm),
                )
            rows.append(row)
    write_results(rows, args)
    print(RESULTS.read_text())
    return 0 if all(r["status"] == "ok" for r in rows) else 1


def _fmt(x: object, nd: int = 3) -> str:
    try:
        return f"{float(x):.{nd}f}"  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return str(x)


def write_results(rows: list[dict], args: argparse.Namespace) -> None:
    """Rewrite ``benchmarks/results/pipeline.md`` from this run's rows."""
    import lesionq

    load = os.getloadavg()
    lines = [
        "# Whole-visit benchmark on the real Ljubljana scans",
        "",
        f"Written by `benchmarks/bench_pipeline.py --pipeline {args.pipeline} --n-procs "
        f"{args.n_procs}` on {dt.datetime.now().isoformat(timespec='seconds')}, "
        f"lesionq {lesionq.__version__}.",
        "",
        f"- machine: {os.cpu_count()} cores, {cpu_model()}, Python {platform.python_version()}; "
        f"load average at the end {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f} "
        "(shared machine: timings are noisy)",
        "- each subject runs in a fresh process (`lesionq run ... --participant-label S`); "
        "peak RSS is that process's maximum; visit time is `duration_s` of visits.tsv "
        "(checks + workflow + publication); first visit includes the deepbet model load",
        "",
        "## Speed and memory",
        "",
        "| visit | status | contrasts | visit time s | reading inputs s | ratio | subject peak RSS GB |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        ratio = r["duration_s"] / r["read_s"] if r["read_s"] else float("nan")
        lines.append(
            f"| {r['visit']} | {r['status']} | {r['contrasts']} | {_fmt(r['duration_s'], 1)} "
            f"| {_fmt(r['read_s'], 2)} | {_fmt(ratio, 0)} | {_fmt(r['subject_peak_rss_gb'], 2)} |"
        )
    lines += [
        "",
        "## T2 lesions on sub-cs07 (`score.py lesions` vs the consensus)",
        "",
        "| visit | Dice | lesion F1 | sensitivity | precision | lesions pred / truth | volume mL pred / truth |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        s = r.get("lesions")
        if s:
            lines.append(
                f"| {r['visit']} | {_fmt(s.get('dice'))} | {_fmt(s.get('f1'))} | "
                f"{_fmt(s.get('sensitivity'))} | {_fmt(s.get('precision'))} | "
                f"{s.get('pred_lesions')} / {s.get('truth_lesions')} | "
                f"{_fmt(s.get('pred_volume_ml'), 2)} / {_fmt(s.get('truth_volume_ml'), 2)} |"
            )
    lines += [
        "",
        "## Brain extraction on sub-lo01 (`score.py lesions --xfm` vs the dataset brain mask)",
        "",
        "| visit | Dice | volume mL pred / truth |",
        "|---|---|---|",
    ]
    for r in rows:
        s = r.get("brain")
        if s:
            lines.append(
                f"| {r['visit']} | {_fmt(s.get('dice'), 4)} | "
                f"{_fmt(s.get('pred_volume_ml'), 0)} / {_fmt(s.get('truth_volume_ml'), 0)} |"
            )
    lines += ["", "Raw scorer output:", "", "```"]
    for r in rows:
        for key in ("lesions", "brain"):
            if key in r:
                lines.append(f"{r['visit']} {key}: {json.dumps(r[key])}")
    lines += ["```", ""]
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text("\n".join(lines))


if __name__ == "__main__":
    raise SystemExit(main())
