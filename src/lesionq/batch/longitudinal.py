"""Run one subject's longitudinal workflow over its published visits and publish the results.

Called by :func:`lesionq.batch.runner.run_dataset` after every visit of a subject
has run cross-sectionally. Only visits whose cross-sectional run succeeded take
part. Their time order is the ``acq_time`` of ``sub-<s>_sessions.tsv`` when
every one of them has one, else the natural order of the session labels; the
first is the reference (baseline).

Per visit, the longitudinal outputs (:data:`lesionq.io.derivatives.LONGITUDINAL_OUTPUTS`)
and the extended ``lesions.tsv`` are published with
:func:`~lesionq.io.derivatives.publish_visit_update`: the visit folder is swapped
in one go, its cross-sectional files carried over unchanged. Everything is
computed (workflow, then staging of every file) before the first visit is
updated, so an error in the longitudinal step leaves every visit as the
cross-sectional run published it.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from nipype import config as nipype_cfg
from nipype import logging as nipype_logging
from nipype.interfaces.base import isdefined

from ..config import Settings
from ..core.black_holes import persistent_black_holes
from ..errors import InputError, LesionQError, MissingInputError
from ..interfaces.longitudinal import STATUS_OK
from ..interfaces.outputs import collected_outputs
from ..io.bids import VisitInputs, natural_key
from ..io.derivatives import (
    LONGITUDINAL_OUTPUTS,
    SUBJECT_OUTPUTS,
    output_path,
    provenance,
    publish_visit_update,
    sidecar_path,
    subject_output_path,
    write_sidecar,
)
from ..io.nifti import atomic_path, load_array, save_image
from ..io.tables import LESION_LONGITUDINAL_COLUMNS, TRACK_TABLE_COLUMNS, read_tsv, write_tsv
from ..registration.rigid import load_transform, resample_to
from ..steps.black_holes import persistent_min_days
from ..steps.longitudinal import CHANGE_TABLE_COLUMNS, track_visits, transform_between
from ..types import Volume
from ..workflows.longitudinal import init_longitudinal_wf
from .visit import failure_reason, nipype_config

__all__ = [
    "order_visits",
    "run_longitudinal",
    "run_subject_longitudinal",
    "remove_subject_outputs",
    "longitudinal_problem",
    "BASELINE_STATUS",
]

LOGGER = logging.getLogger(__name__)

#: ``longitudinal_status`` (visits.tsv) and lesion ``status`` of the reference visit.
BASELINE_STATUS = "baseline"

#: Cross-sectional outputs the longitudinal step reads, by workflow input stem.
_INPUTS = {
    "flair": "flair_preproc",
    "brain_mask": "brain_mask",
    "t2_mask": "t2_mask",
    "probseg": "t2_probseg",
    "labels": "t2_labels",
}

#: Published longitudinal output key -> workflow outputnode field stem (follow-ups).
_FILES = {
    "newenlarging_mask": "newenlarging",
    "newenlarging_labels": "change_labels",
    "newenlarging_table": "change_table",
    "newenlarging_baseline_mask": "newenlarging_baseline",
    "newenlarging_baseline_labels": "change_labels_baseline",
    "newenlarging_baseline_table": "change_table_baseline",
    "xfm_reference": "xfm",
    "flair_in_reference": "flair_in_reference",
    "previous_flair": "previous_flair",
}

#: Status priority when several lesions of one visit share a track.
_PRIORITY = ("new", "enlarging", "shrinking", "stable", BASELINE_STATUS)


def order_visits(visits: Sequence[VisitInputs]) -> list[VisitInputs]:
    """A subject's visits in time order.

    By ``acq_time`` (``sub-<s>_sessions.tsv``) when every visit has one, ties
    broken by session label; otherwise by session label in natural order
    (``ses-2`` before ``ses-10``), with a warning when only some have one.

    Raises
    ------
    lesionq.errors.InputError
        An ``acq_time`` is not ISO 8601, or the values mix time zones; the
        message names the sessions file.
    """
    visits = list(visits)

    def by_label(v: VisitInputs) -> list[str | int]:
        return natural_key(v.session or "")

    if len(visits) < 2:
        return visits
    have = [v.acq_time is not None for v in visits]
    if not all(have):
        if any(have):
            LOGGER.warning(
                "sub-%s: acq_time missing for %s in %s; visits ordered by session label",
                visits[0].subject,
                [f"ses-{v.session}" for v, h in zip(visits, have, strict=True) if not h],
                visits[0].sessions_tsv,
            )
        return sorted(visits, key=by_label)
    times = [v.acq_datetime for v in visits]
    aware = {t.tzinfo is not None for t in times if t is not None}
    if len(aware) > 1:
        raise InputError(
            f"{visits[0].sessions_tsv}: acq_time values mix time zones with local times "
            "(rule: all with an offset or none)"
        )
    order = sorted(range(len(visits)), key=lambda i: (times[i], by_label(visits[i])))
    return [visits[i] for i in order]


def remove_subject_outputs(out_dir: str | os.PathLike[str], subject: str) -> None:
    """Remove the subject-level longitudinal tables (stale once the step fails)."""
    for key in SUBJECT_OUTPUTS:
        path = subject_output_path(out_dir, subject, key)
        for p in (path, sidecar_path(path)):
            p.unlink(missing_ok=True)


def _inputs_of(out: Path, visit: VisitInputs) -> dict[str, str]:
    files = {}
    for stem, key in _INPUTS.items():
        p = output_path(out, visit.subject, visit.session, key)
        if not p.is_file():
            raise MissingInputError(f"{p}: published output missing (needed by longitudinal)")
        files[stem] = str(p)
    # optional: the atlas transform (absent when the protocol disables the atlas) and the
    # Gd+ labels (absent without a post-contrast T1w or a [gd] section)
    for key in ("xfm_template", "gd_labels"):
        p = output_path(out, visit.subject, visit.session, key)
        if p.is_file():
            files[key] = str(p)
    return files


def _run_workflow(
    ordered: Sequence[VisitInputs],
    inputs: Mapping[str, Mapping[str, str]],
    *,
    settings: Settings,
    n_procs: int,
    work: Path,
) -> dict[str, Any]:
    os.environ.setdefault("NIPYPE_NO_ET", "1")
    sessions = [str(v.session) for v in ordered]
    wf = init_longitudinal_wf(
        sessions=sessions,
        registration=settings.section("longitudinal_registration"),
        change=settings.section("change"),
        lesions=settings.section("lesions"),
        n_threads=n_procs,
        name=f"sub_{ordered[0].subject}_longitudinal",
    )
    wf.base_dir = str(work)
    wf.config = nipype_config(work / "crash")
    nipype_cfg.set("execution", "check_version", "false")
    for key, value in wf.config["logging"].items():
        nipype_cfg.set("logging", key, str(value).lower() if isinstance(value, bool) else value)
    nipype_logging.update_logging(nipype_cfg)
    inputnode = wf.get_node("inputnode")
    for ses in sessions:
        for stem, path in inputs[ses].items():
            setattr(inputnode.inputs, f"{stem}_{ses}", path)
    graph = wf.run(plugin="Linear")
    return collected_outputs(graph)


def _tracks_single(inputs: Mapping[str, str], n_procs: int) -> dict[int, int]:
    """Track ids of a lone reference visit (no workflow needed)."""
    arr, aff = load_array(inputs["labels"], dtype=np.int32)
    labels = Volume(arr, aff, "labels")
    return track_visits([labels], [None], labels, n_threads=n_procs)[0]


def _counts(outs: Mapping[str, Any], ses: str) -> dict[str, Any]:
    """visits.tsv counts of a compared follow-up (vs previous and vs baseline)."""
    out: dict[str, Any] = {}
    for suffix, field in (("", "counts"), ("_vs_baseline", "counts_baseline")):
        counts = outs[f"{field}_{ses}"]
        out[f"new_t2_count{suffix}"] = int(counts["new_t2_count"])
        out[f"enlarging_t2_count{suffix}"] = int(counts["enlarging_t2_count"])
        vol = "t2_volume_change_mm3" if not suffix else "t2_volume_change_vs_baseline_mm3"
        out[vol] = round(float(counts["t2_volume_change_mm3"]), 3)
    return out


def _read_json(path: str) -> dict[int, Any]:
    body = json.loads(Path(path).read_text(encoding="utf-8"))
    return {int(k): v for k, v in body.items()}


def _empty_change(stage: Path, like: str) -> dict[str, Path]:
    """Empty change mask / labels / table on the grid of ``like`` (the reference)."""
    arr, aff = load_array(like, dtype=np.uint8)
    zeros = np.zeros(arr.shape, np.uint8)
    files = {
        "newenlarging_mask": save_image(zeros, aff, stage / "newenlarging.nii.gz", dtype=np.uint8),
        "newenlarging_labels": save_image(
            zeros.astype(np.int32), aff, stage / "change_labels.nii.gz", dtype=np.int32
        ),
        "newenlarging_table": write_tsv(
            pd.DataFrame(columns=list(CHANGE_TABLE_COLUMNS)), stage / "change.tsv"
        ),
    }
    files["newenlarging_baseline_mask"] = files["newenlarging_mask"]
    files["newenlarging_baseline_labels"] = files["newenlarging_labels"]
    files["newenlarging_baseline_table"] = files["newenlarging_table"]
    return files


def _lesion_table(
    src: Path,
    dest: Path,
    tracks: Mapping[int, int] | None,
    status: Mapping[int, str] | None,
    status_baseline: Mapping[int, str] | None,
) -> pd.DataFrame:
    """The visit's ``lesions.tsv`` with :data:`LESION_LONGITUDINAL_COLUMNS` (re)set.

    Only the T2 rows (``label == "T2"``) are tracked; Gd+ rows keep ``n/a``. The
    returned frame holds the T2 rows (what the tracks table is built from).
    """
    df = read_tsv(src)
    df = df[[c for c in df.columns if c not in LESION_LONGITUDINAL_COLUMNS]].copy()
    is_t2 = (df["label"] == "T2").to_numpy() if "label" in df else np.ones(len(df), bool)
    ids = df["lesion_id"].astype(int)

    def lookup(mapping: Mapping[int, Any] | None) -> list[Any]:
        return [
            None if (mapping is None or not t2) else mapping.get(i)
            for i, t2 in zip(ids, is_t2, strict=True)
        ]

    df["track_id"] = pd.array(lookup(tracks), dtype="Int64")
    for col, mapping in (("status", status), ("status_vs_baseline", status_baseline)):
        df[col] = pd.array(lookup(mapping), dtype=object)
    write_tsv(df, dest)
    return df[is_t2].reset_index(drop=True)


def _track_rows(
    per_visit: Sequence[tuple[str | None, int, pd.DataFrame, Mapping[int, int]]],
) -> pd.DataFrame:
    """Rows of ``sub-<s>_desc-tracks_lesions.tsv`` (see README "Longitudinal outputs")."""
    seen_at: dict[int, int] = {}
    at_baseline: set[int] = set()
    rows: list[dict[str, Any]] = []
    for n, (session, index, table, tracks) in enumerate(per_visit):
        lesions_of: dict[int, list[int]] = {}
        for lid, tid in tracks.items():
            lesions_of.setdefault(int(tid), []).append(int(lid))
        if n == 0:
            at_baseline = set(lesions_of)
        by_id = table.set_index("lesion_id")
        for tid in sorted(set(seen_at) | set(lesions_of)):
            row: dict[str, Any] = {"track_id": tid, "session_id": session, "visit_index": index}
            lids = sorted(lesions_of.get(tid, []))
            if not lids:
                row.update(
                    status="resolved",
                    status_vs_baseline="resolved" if tid in at_baseline else None,
                    lesion_ids=None,
                    n_lesions=0,
                    volume_mm3=0.0,
                )
            else:
                sub = by_id.loc[lids]
                vol = sub["volume_mm3"].astype(float)
                total = float(vol.sum())
                row.update(
                    status=_pick(sub["status"]),
                    status_vs_baseline=_pick(sub["status_vs_baseline"]),
                    lesion_ids=",".join(str(i) for i in lids),
                    n_lesions=len(lids),
                    volume_mm3=round(total, 3),
                )
                for ax in ("x", "y", "z"):
                    c = sub[f"centroid_{ax}_mm"].astype(float)
                    w = vol if total > 0 else pd.Series(1.0, index=vol.index)
                    row[f"centroid_{ax}_mm"] = round(float((c * w).sum() / w.sum()), 2)
            rows.append(row)
            seen_at.setdefault(tid, index)
    df = pd.DataFrame(rows, columns=list(TRACK_TABLE_COLUMNS))
    df = df.sort_values(["track_id", "visit_index"], kind="stable").reset_index(drop=True)
    for col in ("track_id", "visit_index", "n_lesions"):
        df[col] = df[col].astype("Int64")
    return df


def _pick(values: pd.Series) -> str | None:
    """One status for a track with several lesions at a visit (the most active one)."""
    present = [v for v in values if isinstance(v, str)]
    if not present:
        return None
    return min(present, key=lambda s: _PRIORITY.index(s) if s in _PRIORITY else len(_PRIORITY))


def _persistent_black_holes(
    out: Path,
    ordered: Sequence[VisitInputs],
    outs: Mapping[str, Any],
    min_days: int,
) -> dict[str, float | None]:
    """``bh_volume_persistent_mm3`` of each visit (session label -> mm3, None = n/a).

    A visit's black holes are persistent when they overlap a black hole of an
    earlier visit acquired at least ``min_days`` before
    (:func:`lesionq.core.black_holes.persistent_black_holes`); the earlier masks
    come onto the visit's grid through the subject's registrations (nearest
    neighbour). n/a: the visit has no black-hole result or no date, or no earlier
    registered visit with a black-hole result is old enough.
    """
    subject = ordered[0].subject
    usable: dict[str, Any] = {}  # session -> (date, reference->visit transform or None)
    for index, v in enumerate(ordered):
        ses = str(v.session)
        if index and str(outs.get(f"registration_status_{ses}")) != STATUS_OK:
            continue
        if not output_path(out, subject, v.session, "bh_labels").is_file():
            continue
        tx = load_transform(outs[f"xfm_{ses}"]) if index else None
        usable[ses] = (v.acq_datetime, tx)
    result: dict[str, float | None] = {str(v.session): None for v in ordered}
    for ses, (when, tx) in usable.items():
        if when is None:
            continue
        earlier = [
            s for s, (w, _) in usable.items() if w is not None and (when - w).days >= min_days
        ]
        if not earlier:
            continue
        labels, aff = load_array(output_path(out, subject, ses, "bh_labels"), dtype=np.int32)
        prior = np.zeros(labels.shape, bool)
        for s in earlier:
            mask, m_aff = load_array(output_path(out, subject, s, "bh_mask"), dtype=np.uint8)
            # this visit's points -> the earlier visit's points, through the reference
            between = transform_between(tx, usable[s][1])
            prior |= (
                resample_to(mask, m_aff, labels.shape, aff, between, interpolation="nearest") > 0
            )
        vs = Volume(labels, aff, "bh_labels").voxel_size_mm
        result[ses] = round(persistent_black_holes(labels, prior, vs)[1], 3)
    return result


def run_subject_longitudinal(
    visits: Sequence[VisitInputs],
    out_dir: str | os.PathLike[str],
    *,
    settings: Settings,
    n_procs: int = 1,
    work_dir: str | os.PathLike[str],
) -> dict[str | None, dict[str, Any]]:
    """Register, compare and track one subject's visits; publish the results.

    Parameters
    ----------
    visits : sequence of VisitInputs
        The subject's visits whose cross-sectional outputs are published (any order).
    out_dir : path-like
        Derivatives folder.
    settings : Settings
        Effective protocol settings (``[longitudinal_registration]``, ``[change]``,
        ``[lesions]``).
    n_procs : int
        Thread budget of each heavy node.
    work_dir : path-like
        Scratch folder (a ``sub_<s>_longitudinal`` folder is made in it).

    Returns
    -------
    dict
        Session label -> the visit's :data:`lesionq.io.tables.LONGITUDINAL_VISIT_COLUMNS`.

    Raises
    ------
    Exception
        Whatever fails (the caller isolates it); nothing is published then.
    """
    if not visits:
        return {}
    subjects = {v.subject for v in visits}
    if len(subjects) != 1:
        raise ValueError(f"run_subject_longitudinal: visits of several subjects {sorted(subjects)}")
    if len(visits) > 1 and any(v.session is None for v in visits):
        raise InputError(f"sub-{visits[0].subject}: several visits but one has no session label")
    out = Path(out_dir)
    ordered = order_visits(visits)
    subject = ordered[0].subject
    ref = ordered[0]
    sessions = [v.session for v in ordered]
    inputs = {str(v.session): _inputs_of(out, v) for v in ordered}
    work = Path(work_dir) / f"sub_{subject}_longitudinal"
    work.mkdir(parents=True, exist_ok=True)

    if len(ordered) > 1:
        outs = _run_workflow(ordered, inputs, settings=settings, n_procs=n_procs, work=work)
        tracks_all = {k: {int(a): b for a, b in v.items()} for k, v in _load_tracks(outs).items()}
    else:
        outs = {}
        tracks_all = {str(ref.session): _tracks_single(inputs[str(ref.session)], n_procs)}

    ref_label = None if ref.session is None else str(ref.session)
    ref_id = None if ref.session is None else f"ses-{ref.session}"
    raw = {str(v.session): v for v in ordered}
    staged: list[tuple[VisitInputs, dict[str, Path], dict[str, dict[str, Any]], dict]] = []
    rows: dict[str | None, dict[str, Any]] = {}
    track_input: list[tuple[str | None, int, pd.DataFrame, Mapping[int, int]]] = []
    for index, visit in enumerate(ordered):
        ses = str(visit.session)
        stage = work / "publish" / f"ses-{ses}"
        stage.mkdir(parents=True, exist_ok=True)
        lesions_src = output_path(out, subject, visit.session, "lesions")
        row: dict[str, Any] = {"reference_session_id": ref_id, "previous_session_id": None}
        files: dict[str, Path] = {}
        extra: dict[str, dict[str, Any]] = {}
        roles = {"FLAIR": visit.flair, "reference_FLAIR": ref.flair}
        if index == 0:
            files.update(_empty_change(stage, inputs[ses]["t2_mask"]))
            n_les = read_tsv(lesions_src)["lesion_id"].astype(int)
            base = {int(i): BASELINE_STATUS for i in n_les}
            table = _lesion_table(lesions_src, stage / "lesions.tsv", tracks_all[ses], base, base)
            row["longitudinal_status"] = BASELINE_STATUS
            track_input.append((ref_id, index, table, tracks_all[ses]))
        else:
            status = str(outs[f"registration_status_{ses}"])
            if status != STATUS_OK:
                table = _lesion_table(lesions_src, stage / "lesions.tsv", None, None, None)
                row["longitudinal_status"] = status
            else:
                prev = str(outs[f"previous_session_{ses}"])
                roles["previous_FLAIR"] = raw[prev].flair
                row["previous_session_id"] = f"ses-{prev}"
                row.update(longitudinal_status=STATUS_OK, **_counts(outs, ses))
                cua = outs.get(f"cua_count_{ses}")
                row["cua_count"] = int(cua) if isdefined(cua) and cua is not None else None
                files.update({key: Path(outs[f"{field}_{ses}"]) for key, field in _FILES.items()})
                extra["newenlarging_mask"] = {
                    "NewLesionCount": row["new_t2_count"],
                    "EnlargingLesionCount": row["enlarging_t2_count"],
                }
                extra["newenlarging_baseline_mask"] = {
                    "NewLesionCount": row["new_t2_count_vs_baseline"],
                    "EnlargingLesionCount": row["enlarging_t2_count_vs_baseline"],
                }
                table = _lesion_table(
                    lesions_src,
                    stage / "lesions.tsv",
                    tracks_all[ses],
                    _read_json(outs[f"lesion_statuses_{ses}"]),
                    _read_json(outs[f"lesion_statuses_baseline_{ses}"]),
                )
                track_input.append((f"ses-{ses}", index, table, tracks_all[ses]))
        files["lesions"] = stage / "lesions.tsv"
        common = {
            "ReferenceSession": ref_id,
            "PreviousSession": row["previous_session_id"],
            "LongitudinalStatus": row["longitudinal_status"],
        }
        prov = provenance(settings, {r: p for r, p in roles.items() if p is not None})
        for key in files:
            extra[key] = {**common, **extra.get(key, {})}
        extra["lesions"]["inputs"] = {
            **_sidecar_inputs(lesions_src),
            **prov["inputs"],
        }
        staged.append((visit, files, extra, prov))
        rows[visit.session] = row

    persistent = _persistent_black_holes(
        out, ordered, outs, persistent_min_days(settings.section("black_holes"))
    )
    for visit in ordered:
        rows[visit.session]["bh_volume_persistent_mm3"] = persistent[str(visit.session)]
    tracks_table = _track_rows(track_input)
    tracks_stage = write_tsv(tracks_table, work / "publish" / "tracks.tsv")
    # everything is computed and staged: publish visit by visit (each one atomic)
    for visit, files, extra, prov in staged:
        publish_visit_update(
            out,
            subject,
            visit.session,
            files,
            prov=prov,
            extra=extra,
            reference=ref_label,
            drop=LONGITUDINAL_OUTPUTS,
        )
    _publish_tracks(
        tracks_stage, subject_output_path(out, subject, "tracks"), settings, ordered, ref_id
    )
    LOGGER.info("sub-%s: longitudinal over %s", subject, [f"ses-{s}" for s in sessions])
    return rows


def _sidecar_inputs(path: Path) -> dict[str, Any]:
    """``inputs`` of an output's existing sidecar ({} when absent or unreadable)."""
    side = sidecar_path(path)
    try:
        body = json.loads(side.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    inputs = body.get("inputs")
    return dict(inputs) if isinstance(inputs, dict) else {}


def _publish_tracks(
    staged: Path,
    dest: Path,
    settings: Settings,
    ordered: Sequence[VisitInputs],
    ref_id: str | None,
) -> None:
    prov = provenance(
        settings,
        {f"FLAIR_{v.session}" if v.session else "FLAIR": v.flair for v in ordered if v.flair},
    )
    with atomic_path(dest) as tmp:
        shutil.copyfile(staged, tmp)
    write_sidecar(
        dest,
        prov=prov,
        description=SUBJECT_OUTPUTS["tracks"].description,
        extra={"ReferenceSession": ref_id},
    )


def _load_tracks(outs: Mapping[str, Any]) -> dict[str, dict[str, int]]:
    body = json.loads(Path(outs["tracks"]).read_text(encoding="utf-8"))
    return {str(k): dict(v) for k, v in body.items()}


def longitudinal_problem(row: Mapping[str, Any]) -> bool:
    """Whether a ``visits.tsv`` row is ok cross-sectionally but has no longitudinal result.

    Parameters
    ----------
    row : mapping
        A ``visits.tsv`` row (``status``, ``longitudinal_status``).

    Returns
    -------
    bool
        True when ``status`` is ``ok`` and ``longitudinal_status`` is ``failed: ...``
        (the subject's step raised) or ``registration_failed: ...`` (this visit
        could not be registered).

    Examples
    --------
    >>> longitudinal_problem({"status": "ok", "longitudinal_status": "failed: boom"})
    True
    >>> longitudinal_problem({"status": "ok", "longitudinal_status": "new"})
    False
    """
    status = row.get("longitudinal_status")
    return (
        row.get("status") == "ok"
        and isinstance(status, str)
        and status.startswith(("failed", "registration_failed"))
    )


def run_longitudinal(
    visits: Sequence[VisitInputs],
    rows: Sequence[dict[str, Any]],
    out_dir: str | os.PathLike[str],
    *,
    settings: Settings,
    n_procs: int = 1,
    work_dir: str | os.PathLike[str],
) -> None:
    """Run one subject's longitudinal step and fill its rows in place; never raises.

    Parameters
    ----------
    visits, rows : sequence
        The subject's visits and their ``visits.tsv`` rows (same order), as
        returned by :func:`lesionq.batch.visit.run_visit`; only visits with
        ``status == "ok"`` take part.
    out_dir, settings, n_procs, work_dir :
        As for :func:`lesionq.batch.visit.run_visit` (``work_dir`` is required).

    Notes
    -----
    On any error every taking-part row gets ``longitudinal_status`` =
    ``"failed: <reason>"`` and the subject-level tracks table is removed; the
    cross-sectional outputs are untouched (nothing is published before the whole
    step has been computed).
    """
    ok = [(v, r) for v, r in zip(visits, rows, strict=True) if r.get("status") == "ok"]
    if not ok:
        return
    subject = ok[0][0].subject
    try:
        updates = run_subject_longitudinal(
            [v for v, _ in ok], out_dir, settings=settings, n_procs=n_procs, work_dir=work_dir
        )
    except Exception as exc:  # the cross-sectional results stand whatever happens here
        LOGGER.error(
            "sub-%s: longitudinal step failed: %s",
            subject,
            exc,
            exc_info=not isinstance(exc, LesionQError),
        )
        reason = failure_reason(exc)
        for _, row in ok:
            row["longitudinal_status"] = f"failed: {reason}"
        try:
            remove_subject_outputs(out_dir, subject)
        except OSError as rm_exc:  # pragma: no cover - reported, not fatal
            LOGGER.error("sub-%s: could not remove stale tracks table: %s", subject, rm_exc)
        return
    for visit, row in ok:
        row.update(updates.get(visit.session, {}))
