#!/usr/bin/env python3
"""Review-app server times on the bundled sample data: pages, slices, viewer volumes.

Runs ``lesionq run`` on ``sample_data/bids`` (mesems_testing protocol) into a
temporary folder, adds a reader, then requests through the app in-process
(Starlette ``TestClient``, no network) and times each request on the server side
of the client call: the worklist, every visit page, a PNG slice per visit and
every viewer volume of every visit (``/visits/{id}/volume/{name}.nii.gz``), each
``--repeat`` times; the median and the maximum are reported. Issue 17's bars:
pages under 100 ms, a slice or volume under 300 ms.

Writes ``benchmarks/results/review.md`` (rewritten on every run).

    python benchmarks/bench_review.py [--repeat 5] [--out DIR]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from bench_brain_extraction import cpu_model  # same folder: on sys.path when run as a script

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "sample_data" / "bids"
RESULTS = REPO / "benchmarks" / "results" / "review.md"
_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
_PASSWORD = "bench-review-password-1"


def _run(out: Path) -> float:
    t0 = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "lesionq.cli.main", "run", str(SAMPLE), str(out), "participant",
         "--pipeline", "mesems_testing", "--n-procs", "2"],
        check=True, stdout=subprocess.DEVNULL,
        env={**os.environ, "NIPYPE_NO_ET": "1", "OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    return time.perf_counter() - t0


def _timed(client, url: str, repeat: int) -> tuple[list[float], int, int]:
    times, status, size = [], 0, 0
    for _ in range(repeat):
        t0 = time.perf_counter()
        r = client.get(url)
        times.append(time.perf_counter() - t0)
        status, size = r.status_code, len(r.content)
    return times, status, size


def measure(out: Path, repeat: int) -> list[dict]:
    """Time the app's routes on a finished run of the sample data."""
    import sqlalchemy as sa
    from fastapi.testclient import TestClient

    from lesionq.review import auth, create_app
    from lesionq.review.images import VIEWER_VOLUMES
    from lesionq.store import ResultsDB

    url = f"sqlite:///{out / 'lesionq.sqlite'}"
    db = ResultsDB.open(url)
    auth.add_reader(db.engine, "bench", "reader", _PASSWORD, actor="bench")
    with db.engine.begin() as conn:
        ids = [int(v) for (v,) in conn.execute(sa.text("SELECT id FROM visits ORDER BY id"))]
    db.close()
    app = create_app(url, out, readers_required=2)
    rows = []
    with TestClient(app) as c:
        page = c.get("/login")
        token = _CSRF.search(page.text).group(1)
        r = c.post("/login", data={"username": "bench", "password": _PASSWORD, "csrf_token": token},
                   follow_redirects=False)  # fmt: skip
        assert r.status_code == 303, r.status_code
        rows.append(("page", "/ (worklist)", *_timed(c, "/", repeat)))
        for vid in ids:
            rows.append(("page", f"/visits/{vid}", *_timed(c, f"/visits/{vid}", repeat)))
            rows.append(("slice", f"/visits/{vid}/slice (axial, middle)",
                         *_timed(c, f"/visits/{vid}/slice?axis=axial&index=24", repeat)))  # fmt: skip
            for name in VIEWER_VOLUMES:
                t, status, size = _timed(c, f"/visits/{vid}/volume/{name}.nii.gz", repeat)
                if status == 200:  # a name the visit has (e.g. no t1gd without contrast)
                    rows.append(("volume", f"/visits/{vid}/volume/{name}.nii.gz", t, status, size))
    return [
        {
            "kind": k,
            "route": u,
            "median_ms": 1000 * float(np.median(t)),
            "max_ms": 1000 * max(t),
            "status": s,
            "bytes": n,
        }  # fmt: skip
        for k, u, t, s, n in rows
    ]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--out", type=Path, default=None, help="keep the run here (default: temp)")
    args = ap.parse_args()
    started = dt.datetime.now().isoformat(timespec="seconds")
    load0 = os.getloadavg()
    out = args.out or Path(tempfile.mkdtemp(prefix="lesionq-bench-review-"))
    shutil.rmtree(out, ignore_errors=True)
    wall = _run(out)
    rows = measure(out, args.repeat)
    load1 = os.getloadavg()
    bars = {"page": 100.0, "slice": 300.0, "volume": 300.0}
    lines = [
        "# Review app: server times on the sample data",
        "",
        f"Written by `benchmarks/bench_review.py --repeat {args.repeat}` on {started}.",
        "",
        f"- machine: {os.cpu_count()} cores, {cpu_model()}, Python {platform.python_version()}; "
        f"load average {load0[0]:.2f} at the start, {load1[0]:.2f} at the end (shared machine)",
        f"- `lesionq run sample_data/bids` (mesems_testing): {wall:.0f} s; then each route "
        f"requested {args.repeat} times in-process (Starlette TestClient, one logged-in reader)",
        "- bars (issue 17): pages < 100 ms, a slice or a viewer volume < 300 ms",
        "",
        "| kind | route | median ms | max ms | status | bytes | bar met |",
        "|---|---|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        ok = r["status"] == 200 and r["median_ms"] < bars[r["kind"]]
        lines.append(
            f"| {r['kind']} | `{r['route']}` | {r['median_ms']:.1f} | {r['max_ms']:.1f} | "
            f"{r['status']} | {r['bytes']} | {'yes' if ok else '**no**'} |"
        )
    for kind in bars:
        sel = [r["median_ms"] for r in rows if r["kind"] == kind]
        if sel:
            lines.append(f"\n- {kind}: worst median {max(sel):.1f} ms over {len(sel)} routes")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(RESULTS.read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
