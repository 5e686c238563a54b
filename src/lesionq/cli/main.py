"""Command line: ``lesionq run | check | ingest | export``.

BIDS-app style::

    lesionq run BIDS_DIR OUT_DIR participant [--participant-label L ...]
                [--pipeline NAME_OR_TOML] [--n-procs N] [--set section.key=value ...]
                [--db URL] [--workers N | --scheduler-address ADDR] [--resume]
                [--force] [--retry-failed] [--no-report]
    lesionq run UPLOAD_DIR OUT_DIR participant --dicom INGEST_DIR ...   (ingest, then run)
    lesionq check BIDS_DIR [--participant-label L ...]
    lesionq ingest UPLOAD_DIR BIDS_DIR [--subject-map TSV]
    lesionq export --db URL DEST [--table endpoints|visits|lesions|...|added]
                   [--format tsv|csv|parquet]
    lesionq review --db URL --out OUT_DIR [--host H] [--port P] [--readers-required 1|2]
    lesionq reader add|disable|enable|password|list --db URL [--username U] [--role R]
    lesionq audit verify --db URL      (the audit log's hash chain: exit 0 intact, 1 not)

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
from typing import Any

from .._version import __version__
from ..config import load_protocol
from ..errors import LesionQError, MissingInputError
from ..io.bids import discover, natural_key, normalise_participant_label

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


def _parse_choice(text: str) -> tuple[tuple[str, str, str], int]:
    try:
        key, number = text.rsplit("=", 1)
        subject, visit, contrast = key.split("/")
        return (subject, visit, contrast), int(number)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--choose expects SUBJECT/VISIT/CONTRAST=SERIES_NUMBER, got {text!r}"
        ) from None


def _add_participant_label(parser: argparse.ArgumentParser, what: str) -> None:
    """``--participant-label L [L ...]``; repeated flags add up (``action="extend"``)."""
    parser.add_argument(
        "--participant-label",
        "--participant_label",
        dest="participant_label",
        action="extend",
        nargs="+",
        default=None,
        metavar="L",
        help=f"{what}, with or without 'sub-'; repeat the flag or list several "
        "(default: all); a label that matches no subject is an error",
    )


def _unknown_participants(bids_dir: Path, labels: Sequence[str] | None) -> str | None:
    """Error message naming the ``--participant-label`` values that match no subject.

    None when every label matches a ``sub-*`` folder of ``bids_dir`` (or no label
    was given, or ``bids_dir`` is not a folder: the layout checks report that).
    An invalid label raises :class:`~lesionq.io.bids.BIDSLayoutError`.
    """
    if not labels or not bids_dir.is_dir():
        return None
    subjects = sorted(
        (d.name[4:] for d in bids_dir.iterdir() if d.is_dir() and d.name.startswith("sub-")),
        key=natural_key,
    )
    wanted = dict.fromkeys(normalise_participant_label(label) for label in labels)
    missing = [label for label in wanted if label not in subjects]
    if not missing:
        return None
    return (
        f"--participant-label: no subject {', '.join(repr(m) for m in missing)} in {bids_dir} "
        f"(rule: a label names a sub-<label> folder; subjects there: "
        f"{', '.join(subjects) or 'none'})"
    )


def build_parser() -> argparse.ArgumentParser:
    """Build the argument parser (exposed for documentation and tests)."""
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
    _add_participant_label(run, "subjects to process")
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

    run.add_argument(
        "--dicom",
        default=None,
        type=Path,
        metavar="INGEST_DIR",
        help="BIDS_DIR is a DICOM upload folder (<site>/<subject>/<visit>/...): ingest it "
        "into the BIDS dataset INGEST_DIR first (see 'lesionq ingest'), then process that; "
        "INGEST_DIR holds the date-shift key, so it must lie outside OUT_DIR",
    )
    run.add_argument(
        "--db",
        default=None,
        metavar="URL",
        help="results database (SQLAlchemy URL, e.g. postgresql+psycopg://user@host/db); "
        "default: a SQLite file OUT_DIR/lesionq.sqlite",
    )
    run.add_argument(
        "--workers",
        type=int,
        default=None,
        metavar="N",
        help="local dask workers, one subject each at a time (default: sized to the "
        "machine's cores and memory; 1 = no cluster)",
    )
    run.add_argument(
        "--scheduler-address",
        default=None,
        metavar="ADDR",
        help="use an existing dask scheduler (e.g. tcp://10.0.0.5:8786, one started by "
        "dask-jobqueue) instead of a local cluster",
    )
    run.add_argument(
        "--resume",
        action="store_true",
        help="continue the last interrupted run (finished visits are never repeated)",
    )
    run.add_argument("--force", action="store_true", help="recompute every visit")
    run.add_argument(
        "--retry-failed",
        action="store_true",
        help="recompute visits that failed before even when their inputs did not change",
    )
    run.add_argument(
        "--no-report", action="store_true", help="do not render the per-subject QC reports"
    )

    chk = sub.add_parser("check", help="run the input check battery on a BIDS dataset")
    chk.add_argument("bids_dir", type=Path)
    _add_participant_label(chk, "subjects to check")

    ing = sub.add_parser("ingest", help="convert DICOM uploads into a BIDS dataset")
    ing.add_argument("upload_dir", type=Path, help="upload folder: <site>/<subject>/<visit>/...")
    ing.add_argument("bids_dir", type=Path, help="BIDS dataset to create or update")
    ing.add_argument(
        "--subject-map",
        type=Path,
        default=None,
        metavar="TSV",
        help="TSV with columns upload_name and participant_id (pseudonyms)",
    )
    ing.add_argument(
        "--choose",
        dest="choices",
        action="append",
        type=_parse_choice,
        default=[],
        metavar="SUBJECT/VISIT/CONTRAST=SERIES",
        help="resolve an ambiguity reported by a previous ingest, e.g. S-01/V1/flair=9 "
        "(contrast: flair, t1, t2, t1ce; series: the DICOM series number)",
    )

    from ..review.cli import add_review_parsers  # lazy: CLI start-up (SQLAlchemy, pandas)

    add_review_parsers(sub)

    st = sub.add_parser(
        "status",
        help="summarise a results database: runs, failed visits and why, review progress",
        description="Exit code 0 when no current visit result failed, 1 otherwise.",
    )
    st.add_argument(
        "--db", required=True, metavar="URL", help="results database URL or SQLite path"
    )

    exp = sub.add_parser("export", help="write a table of the results database")
    exp.add_argument("dest", type=Path, help="output file (.tsv, .csv or .parquet)")
    exp.add_argument(
        "--db", required=True, metavar="URL", help="results database URL or SQLite path"
    )
    exp.add_argument(
        "--table",
        choices=[  # EXPORT_TABLES
            "endpoints",
            "visits",
            "lesions",
            "runs",
            "ledger",
            "audit",
            "added",
        ],
        default="endpoints",
        help="which table (default: the trial endpoint table); runs, ledger and audit are "
        "the audit trail (every run, its per-visit outcomes, the audit log); added: the "
        "lesions readers added in the review, with their review status",
    )
    exp.add_argument(
        "--format",
        dest="fmt",
        choices=["tsv", "csv", "parquet"],
        default=None,
        help="default: from DEST's suffix",
    )
    return parser


#: Libraries whose INFO lines are chatter on a terminal (dask.distributed's connections,
#: nannies and worker deaths; nipype's nodes): at WARNING unless ``-v``.
QUIET_LOGGERS = (
    "distributed",
    "dask",
    "nipype",
    "nipype.workflow",
    "nipype.interface",
    "nipype.utils",
)


def _configure_logging(verbosity: int) -> None:
    """Configure logging for one command: WARNING, ``-v`` INFO, ``-vv`` DEBUG.

    The libraries of :data:`QUIET_LOGGERS` follow that level (they set INFO on
    themselves when imported, so their chatter would show without ``-v``).
    dask.distributed sets its loggers' levels from dask's configuration
    (``logging.distributed``) when it is imported, which happens later (lazily)
    here and anew in every dask worker process: that setting is passed through
    the environment (``DASK_LOGGING__DISTRIBUTED``, inherited by the workers) and,
    when dask is already imported, through :func:`dask.config.set` as well.
    """
    level = logging.WARNING if verbosity <= 0 else logging.INFO if verbosity == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    name = logging.getLevelName(level).lower()
    os.environ["DASK_LOGGING__DISTRIBUTED"] = name
    if "dask.config" in sys.modules:
        sys.modules["dask.config"].set({"logging.distributed": name})
    for noisy in QUIET_LOGGERS:
        logging.getLogger(noisy).setLevel(level)


def _cmd_check(args: argparse.Namespace) -> int:
    from ..io.checks import (  # lazy: CLI start-up (nibabel, scipy, pydicom)
        check_dataset,
        format_findings,
        has_errors,
    )

    unknown = _unknown_participants(args.bids_dir, args.participant_label)
    if unknown:
        print(f"lesionq: error: {unknown}", file=sys.stderr)
        return 2
    findings = check_dataset(args.bids_dir, participant_labels=args.participant_label)
    print(format_findings(findings))
    return 1 if has_errors(findings) else 0


def _cmd_run(args: argparse.Namespace) -> int:
    from ..batch.executor import default_workers  # lazy: CLI start-up (dask.distributed)
    from ..batch.runner import run_dataset  # lazy: CLI start-up; nipype after NIPYPE_NO_ET
    from ..io.derivatives import ensure_writable_dir  # lazy: CLI start-up (nibabel, scipy, pydicom)

    settings = load_protocol(args.pipeline)
    if args.overrides:
        settings = settings.with_overrides(dict(args.overrides))
    if args.n_procs is not None and args.n_procs < 1:
        print(f"lesionq: --n-procs must be >= 1, got {args.n_procs}", file=sys.stderr)
        return 2
    if args.workers is not None and args.workers < 1:
        print(f"lesionq: --workers must be >= 1, got {args.workers}", file=sys.stderr)
        return 2
    bids_dir = args.bids_dir
    if args.dicom is not None:
        ingest_dir, out_dir = args.dicom.resolve(), args.out_dir.resolve()
        if ingest_dir == out_dir or out_dir in ingest_dir.parents:
            print(
                f"lesionq: --dicom {args.dicom}: the ingested dataset holds the key to the real "
                f"dates, so it must lie outside the output folder {args.out_dir}",
                file=sys.stderr,
            )
            return 2
        bids_dir = ingest_dir
        # before the ingest (minutes), not after it: the outputs must have somewhere to go
        ensure_writable_dir(args.out_dir, what="output folder (OUT_DIR)")
        report = _ingest(args.bids_dir, bids_dir, None, [])
        if not report.visits:
            return 1
    unknown = _unknown_participants(bids_dir, args.participant_label)
    if unknown:
        print(f"lesionq: error: {unknown}", file=sys.stderr)
        return 2
    workers = args.workers
    if workers is None:
        subjects = {
            v.subject for v in discover(bids_dir, participant_labels=args.participant_label)
        }
        workers = 1 if args.scheduler_address else default_workers(len(subjects))
    kwargs = dict(
        settings=settings,
        participant_labels=args.participant_label,
        n_procs=args.n_procs,
        work_dir=args.work_dir,
        db_url=_db_url(args.db) if args.db else None,
        workers=workers,
        scheduler_address=args.scheduler_address,
        resume=args.resume,
        force=args.force,
        retry_failed=args.retry_failed,
        report=not args.no_report,
        command=" ".join(["lesionq", *sys.argv[1:]]) if sys.argv else "lesionq run",
    )
    if sys.stdout.isatty():
        from .progress import RichProgress  # lazy: CLI start-up (rich)

        with RichProgress() as bar:
            summary = run_dataset(
                bids_dir, args.out_dir, progress=bar.line, on_event=bar.event, **kwargs
            )
    else:
        summary = run_dataset(
            bids_dir, args.out_dir, progress=lambda msg: print(msg, flush=True), **kwargs
        )
    print(summary.describe())
    return 0 if summary.all_ok else 1


def _ingest(
    upload: Path,
    bids_dir: Path,
    subject_map: Path | None,
    choices: Sequence[tuple[tuple[str, str, str], int]],
) -> Any:
    from ..batch.ingest import (  # lazy: CLI start-up (pydicom, nibabel)
        ingest_upload,
        read_subject_map,
    )

    mapping = read_subject_map(subject_map) if subject_map is not None else None
    report = ingest_upload(upload, bids_dir, subject_map=mapping, choices=dict(choices) or None)
    print(report.to_text())
    return report


def _cmd_ingest(args: argparse.Namespace) -> int:
    report = _ingest(args.upload_dir, args.bids_dir, args.subject_map, args.choices)
    return 0 if report.ok else 1


def _db_url(text: str) -> str:
    """A SQLAlchemy URL, or a file path taken as a SQLite database."""
    return text if "://" in text else f"sqlite:///{Path(text).resolve()}"


def _open_existing_db(text: str) -> Any:
    """Open the results database of ``--db``; a missing SQLite file is an error."""
    from ..store import ResultsDB  # lazy: CLI start-up (SQLAlchemy, pandas)

    url = _db_url(text)
    if url.startswith("sqlite:///") and not Path(url.removeprefix("sqlite:///")).is_file():
        raise MissingInputError(f"--db {text}: no such SQLite results database")
    return ResultsDB.open(url)


def _cmd_status(args: argparse.Namespace) -> int:
    from ..batch.status import (  # lazy: CLI start-up (SQLAlchemy, pandas)
        dataset_status,
        format_status,
    )

    db = _open_existing_db(args.db)
    try:
        status = dataset_status(db)
        print(format_status(status, db.url_display))
    finally:
        db.close()
    return 0 if status.ok else 1


def _cmd_export(args: argparse.Namespace) -> int:
    from ..batch.tables import export  # lazy: CLI start-up (SQLAlchemy, pandas, matplotlib)

    db = _open_existing_db(args.db)
    try:
        path = export(db, args.dest, table=args.table, fmt=args.fmt)
    finally:
        db.close()
    print(f"lesionq: {args.table} table written to {path}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the process exit code.

    Exit codes: 0 all visits succeeded (``run``) / no error findings (``check``);
    1 some visit failed / error findings; 2 usage or configuration error.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    _configure_logging(args.verbose)
    os.environ.setdefault("NIPYPE_NO_ET", "1")
    try:
        if args.command == "check":
            return _cmd_check(args)
        if args.command == "run":
            return _cmd_run(args)
        if args.command == "ingest":
            return _cmd_ingest(args)
        if args.command == "export":
            return _cmd_export(args)
        if args.command == "status":
            return _cmd_status(args)
        if args.command in ("review", "reader", "audit"):
            from ..review.cli import run_review_command  # lazy: CLI start-up (SQLAlchemy)

            return run_review_command(args)
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
