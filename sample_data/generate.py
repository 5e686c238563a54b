#!/usr/bin/env python3
"""Regenerate the bundled synthetic sample dataset (sample_data/bids) deterministically.

    python sample_data/generate.py [--out sample_data/bids] [--seed 20261125] [--check]

Two phantom subjects with three visits each (weeks 0, 4, 12), made by
``lesionq.testing.make_subject`` with seeds SEED and SEED + 1, written by
``lesionq.testing.write_bids``. ``sub-phantom01`` has every contrast at every
visit; ``sub-phantom02`` misses contrasts as real uploads do (all four at
ses-01, no T2w at ses-02, FLAIR only at ses-03). The truth of both is complete.

The output is rebuilt from scratch in a temporary folder next to ``--out`` and
then swapped in, so no stale file survives. Rerunning gives identical bytes.

``--check`` writes nothing: it regenerates into a temporary folder and compares
with ``--out`` (text files byte for byte, images voxel for voxel after
decompression), printing the differences; exit status 1 when they differ.
"""

from __future__ import annotations

import argparse
import filecmp
import gzip
import shutil
import sys
import tempfile
import time
from pathlib import Path

from lesionq.testing import CONTRASTS, make_subject, write_bids

HERE = Path(__file__).resolve().parent
DEFAULT_OUT = HERE / "bids"
DEFAULT_SEED = 20261125
SUBJECTS = ("phantom01", "phantom02")


def contrasts(subject: str, session: str) -> tuple[str, ...]:
    """Contrasts present per visit in the sample dataset."""
    if subject == "phantom02":
        return {"01": CONTRASTS, "02": ("FLAIR", "T1w", "ce-gadolinium_T1w"), "03": ("FLAIR",)}[
            session
        ]
    return CONTRASTS


def generate(out: Path, seed: int) -> list[Path]:
    """Write the sample dataset to ``out`` (replaced as a whole); returns the files."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        subjects = [make_subject(seed + i, label=label) for i, label in enumerate(SUBJECTS)]
        files = write_bids(subjects, tmp, contrasts=contrasts)
        for f in [tmp, *tmp.rglob("*")]:
            f.chmod(0o755 if f.is_dir() else 0o644)
        if out.exists():
            old = out.with_name(out.name + ".old")
            shutil.rmtree(old, ignore_errors=True)
            out.rename(old)
            tmp.rename(out)
            shutil.rmtree(old)
        else:
            tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return [out / f.relative_to(tmp) for f in files]


def compare(a: Path, b: Path) -> list[str]:
    """Differences between two dataset folders (images compared after decompression)."""
    fa = {p.relative_to(a) for p in a.rglob("*") if p.is_file()}
    fb = {p.relative_to(b) for p in b.rglob("*") if p.is_file()}
    diffs = [f"only in {a}: {p}" for p in sorted(fa - fb)] + [
        f"only in {b}: {p}" for p in sorted(fb - fa)
    ]
    for p in sorted(fa & fb):
        if p.name.endswith(".gz"):
            same = gzip.decompress((a / p).read_bytes()) == gzip.decompress((b / p).read_bytes())
        else:
            same = filecmp.cmp(a / p, b / p, shallow=False)
        if not same:
            diffs.append(f"differs: {p}")
    return diffs


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, help="dataset root (default: %(default)s)"
    )
    ap.add_argument(
        "--seed", type=int, default=DEFAULT_SEED, help="base seed (default: %(default)s)"
    )
    ap.add_argument(
        "--check", action="store_true", help="compare a regeneration with --out, write nothing"
    )
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    if args.check:
        with tempfile.TemporaryDirectory() as d:
            fresh = Path(d) / "bids"
            generate(fresh, args.seed)
            diffs = compare(args.out, fresh)
        for line in diffs:
            print(line)
        print(
            f"{'DIFFERENT' if diffs else 'identical'}: {args.out} ({time.perf_counter() - t0:.1f} s)"
        )
        return 1 if diffs else 0
    files = generate(args.out, args.seed)
    size = sum(f.stat().st_size for f in files)
    print(
        f"wrote {len(files)} files, {size / 1e6:.2f} MB, to {args.out} in {time.perf_counter() - t0:.1f} s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
