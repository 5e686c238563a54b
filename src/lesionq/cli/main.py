"""Command line: ``lesionq run | check | version``.

BIDS-app style::

    lesionq run BIDS_DIR OUT_DIR participant [--participant-label L ...]
                [--pipeline NAME_OR_TOML] [--n-procs N] [--set section.key=value ...]
    lesionq check BIDS_DIR [--participant-label L ...]

This is the only module that configures logging.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

__all__ = ["build_parser", "main", "entry"]


def _parse_override(text: str) -> tuple[str, object]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"--set expects section.key=value, got {text!r}")
    key, raw = text.split("=", 1)
    try:
        value: object = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    return key.strip(), value


def build_parser() -> argparse.ArgumentParser:
    """Build the argument parser (exposed for documentation and tests)."""
    from .. import __version__

    parser = argparse.ArgumentParser(
        prog="lesionq",
        description="MS lesion quantification for clinical trials (T2/FLAIR lesions per visit).",
    )
    parser.add_argument("--version", action="version", version=f"lesionq {__version__}")
    parser.add_argument(
        "-v", "--verbose", action="count", default=0, help="more log output (-v info, -vv debug)"
    )
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="process a BIDS dataset (BIDS-app style)")
    run.add_argument("bids_dir", type=Path, help="input BIDS dataset")
    run.add_argument("out_dir", type=Path, help="output folder (BIDS derivatives)")
    run.add_argument(
        "analysis_level",
        choices=["participant"],
        help="BIDS-app analysis level (only 'participant')",
    )
    run.add_argument(
        "--participant-label",
        "--participant_label",
        nargs="+",
        default=None,
        metavar="L",
        help="subjects to process, with or without 'sub-' (default: all)",
    )
    run.add_argument(
        "--pipeline",
        default=None,
        metavar="NAME_OR_TOML",
        help="protocol name in pipelines/ or a TOML path (default: mesems_v1)",
    )
    run.add_argument(
        "--n-procs",
        "--n_procs",
        type=int,
        default=None,
        metavar="N",
        help="threads for one visit's heavy steps (default: all cores)",
    )
    run.add_argument(
        "--work-dir",
        type=Path,
        default=None,
        help="scratch folder for intermediate files (default: OUT_DIR/.lesionq-work)",
    )
    run.add_argument(
        "--set",
        dest="overrides",
        action="append",
        type=_parse_override,
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override one protocol setting (JSON value), e.g. segmentation.threshold=0.4",
    )

    chk = sub.add_parser("check", help="run the input check battery on a BIDS dataset")
    chk.add_argument("bids_dir", type=Path)
    chk.add_argument(
        "--participant-label", "--participant_label", nargs="+", default=None, metavar="L"
    )
    return parser


def _configure_logging(verbosity: int) -> None:
    level = logging.WARNING if verbosity <= 0 else logging.INFO if verbosity == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if verbosity < 2:
        for noisy in ("nipype", "nipype.workflow", "nipype.interface", "nipype.utils"):
            logging.getLogger(noisy).setLevel(logging.WARNING)


def _cmd_check(args: argparse.Namespace) -> int:
    from ..io.checks import check_dataset, format_findings, has_errors

    findings = check_dataset(args.bids_dir, participant_labels=args.participant_label)
    print(format_findings(findings))
    return 1 if has_errors(findings) else 0


def _cmd_run(args: argparse.Namespace) -> int:
    from ..batch.runner import run_dataset
    from ..config import load_protocol

    settings = load_protocol(args.pipeline)
    if args.overrides:
        settings = settings.with_overrides(dict(args.overrides))
    n_procs = args.n_procs if args.n_procs is not None else (os.cpu_count() or 1)
    if n_procs < 1:
        print(f"lesionq: --n-procs must be >= 1, got {n_procs}", file=sys.stderr)
        return 2
    summary = run_dataset(
        args.bids_dir,
        args.out_dir,
        settings=settings,
        participant_labels=args.participant_label,
        n_procs=n_procs,
        work_dir=args.work_dir,
        progress=lambda msg: print(msg, flush=True),
    )
    print(summary.describe())
    return 0 if summary.all_ok else 1


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the process exit code.

    Exit codes: 0 all visits succeeded (``run``) / no error findings (``check``);
    1 some visit failed / error findings; 2 usage or configuration error.
    """
    from ..errors import LesionQError

    parser = build_parser()
    args = parser.parse_args(argv)
    _configure_logging(args.verbose)
    os.environ.setdefault("NIPYPE_NO_ET", "1")
    try:
        if args.command == "check":
            return _cmd_check(args)
        if args.command == "run":
            return _cmd_run(args)
    except LesionQError as exc:
        print(f"lesionq: error: {exc}", file=sys.stderr)
        return 2
    parser.error(f"unknown command {args.command!r}")
    return 2


def entry() -> None:
    """Console-script entry point."""
    raise SystemExit(main())


if __name__ == "__main__":  # pragma: no cover
    entry()
