"""One visit: check its inputs, build, run and publish its workflow.

:func:`run_visit` is the failure-isolated step a subject job calls (a bad visit
becomes a ``failed`` row, never an exception); :func:`run_visit_workflow` builds,
runs and publishes the nipype workflow.
"""

from __future__ import annotations

import logging
import os
import re
import time
from pathlib import Path
from typing import Any

from .._version import __version__
from ..config import Settings
from ..errors import LesionQError
from ..io.bids import VisitInputs
from ..io.checks import check_visit
from ..io.derivatives import provenance, publish_visit
from ..steps.visit import visit_parameters

__all__ = ["run_visit", "run_visit_workflow", "nipype_config", "failure_reason"]

LOGGER = logging.getLogger(__name__)

#: Output keys published for every visit (others only when their contrast exists).
_ALWAYS = ("t2_mask", "t2_probseg", "t2_labels", "brain_mask", "flair_preproc", "lesions")
_OPTIONAL = (
    "t1_coreg",
    "t2_coreg",
    "t1ce_coreg",
    "xfm_t1",
    "xfm_t2",
    "xfm_t1ce",
    "xfm_template",
    "gd_mask",
    "gd_labels",
    "bh_mask",
    "bh_labels",
)

#: Input roles as written into sidecars.
_ROLES = {"flair": "FLAIR", "t1": "T1w", "t2": "T2w", "t1ce": "ce-gadolinium_T1w"}


def nipype_config(crash_dir: Path) -> dict[str, dict[str, Any]]:
    """nipype execution settings: no network, crash files in ``crash_dir``, quiet."""
    return {
        "execution": {
            "crashdump_dir": str(crash_dir),
            "crashfile_format": "txt",
            "stop_on_first_crash": True,
            "remove_unnecessary_outputs": False,
            "hash_method": "content",
            "poll_sleep_duration": 0.01,
            "check_version": False,
        },
        "monitoring": {"enabled": False},
        "logging": {
            "workflow_level": "WARNING",
            "interface_level": "WARNING",
            "utils_level": "WARNING",
            "log_to_file": False,
        },
    }


def _base_row(visit: VisitInputs, settings: Settings) -> dict[str, Any]:
    return {
        "participant_id": f"sub-{visit.subject}",
        "session_id": f"ses-{visit.session}" if visit.session is not None else None,
        "acq_time": visit.acq_time,
        "protocol": settings.name,
        "settings_sha256": settings.hash(),
        "lesionq_version": __version__,
    }


_EXC_LINE = re.compile(r"^\s*(?:[\w]+\.)*(?P<name>\w+(?:Error|Exception)):\s*(?P<msg>.+)$")


def failure_reason(exc: BaseException) -> str:
    """One-line reason for ``visits.tsv`` from the exception that failed a step.

    nipype wraps a node's exception in ``NodeExecutionError`` whose message
    holds the node's traceback; the original exception (its last line) is what a
    reader needs, e.g. ``MissingInputError: .../FLAIR.nii.gz: file not found``.

    Parameters
    ----------
    exc : BaseException
        What a visit's or a subject's step raised.

    Returns
    -------
    str
        ``"<ExceptionClass>: <first line>"``; for a nipype node error, the
        original exception's class and message plus ``(node <name>)``.

    Examples
    --------
    >>> failure_reason(ValueError("T2 mask is empty"))
    'ValueError: T2 mask is empty'
    """
    lines = [ln for ln in str(exc).strip().splitlines() if ln.strip()]
    if type(exc).__name__ == "NodeExecutionError":
        for line in reversed(lines):
            m = _EXC_LINE.match(line)
            if m:
                node = lines[0].rstrip(".").split()[-1] if lines else "?"
                return f"{m['name']}: {m['msg'].strip()} (node {node})"
    first = lines[0] if lines else ""
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


def run_visit(
    visit: VisitInputs,
    out_dir: str | os.PathLike[str],
    *,
    settings: Settings,
    n_procs: int = 1,
    work_dir: str | os.PathLike[str] | None = None,
) -> dict[str, Any]:
    """Check, process and publish one visit; never raises for a bad visit.

    Parameters
    ----------
    visit : VisitInputs
        The visit's input files.
    out_dir : path-like
        Derivatives folder.
    settings : Settings
        Effective protocol settings.
    n_procs : int
        Thread budget for the visit's heavy steps.
    work_dir : path-like, optional
        Scratch folder (default ``out_dir/.lesionq-work``).

    Returns
    -------
    dict
        The visit's ``visits.tsv`` row (``status`` is ``"ok"`` or ``"failed"``).
    """
    row = _base_row(visit, settings)
    t0 = time.perf_counter()
    try:
        findings = check_visit(visit)
        errors = [f for f in findings if f.level == "error"]
        for f in findings:
            if f.level == "warning":
                LOGGER.warning("%s", f.message)
        if errors:
            raise _InputRejected("; ".join(f.message for f in errors))
        work = Path(work_dir) if work_dir is not None else Path(out_dir) / ".lesionq-work"
        result = run_visit_workflow(
            visit, out_dir, settings=settings, n_procs=n_procs, work_dir=work
        )
        row.update(result)
        row["status"] = "ok"
        row["reason"] = None
    except (LesionQError, _InputRejected, Exception) as exc:  # one visit never stops the batch
        LOGGER.error(
            "visit %s %s failed: %s",
            row["participant_id"],
            row["session_id"],
            exc,
            exc_info=not isinstance(exc, LesionQError | _InputRejected),
        )
        row["status"] = "failed"
        row["reason"] = str(exc) if isinstance(exc, _InputRejected) else failure_reason(exc)
    row["duration_s"] = round(time.perf_counter() - t0, 2)
    return row


class _InputRejected(Exception):
    """The check battery found errors in a visit's inputs (message: the findings)."""


def run_visit_workflow(
    visit: VisitInputs,
    out_dir: str | os.PathLike[str],
    *,
    settings: Settings,
    n_procs: int,
    work_dir: str | os.PathLike[str],
) -> dict[str, Any]:
    """Run :func:`~lesionq.workflows.visit.init_visit_wf` for one visit and publish it.

    Returns
    -------
    dict
        ``visits.tsv`` fields measured for the visit (counts, volumes, contrasts
        used, whether the input was already skull-stripped).
    """
    os.environ.setdefault("NIPYPE_NO_ET", "1")
    # nipype loads only here, after NIPYPE_NO_ET is set (no update check over the network)
    from nipype import config as nipype_cfg  # lazy: nipype after NIPYPE_NO_ET
    from nipype import logging as nipype_logging  # lazy: nipype after NIPYPE_NO_ET

    from ..interfaces.outputs import collected_outputs  # lazy: nipype after NIPYPE_NO_ET
    from ..workflows.visit import init_visit_wf  # lazy: nipype after NIPYPE_NO_ET

    files = visit.images()
    contrasts = tuple(k for k in ("t1", "t2", "t1ce") if k in files)
    tag = f"sub_{visit.subject}" + (f"_ses_{visit.session}" if visit.session else "")
    work = Path(work_dir) / tag
    work.mkdir(parents=True, exist_ok=True)
    wf = init_visit_wf(
        contrasts=contrasts,
        **visit_parameters(settings).workflow_kwargs(),
        n_threads=n_procs,
        name=tag,
    )
    wf.base_dir = str(work)
    wf.config = nipype_config(work / "crash")
    nipype_cfg.set("execution", "check_version", "false")
    for key, value in wf.config["logging"].items():
        nipype_cfg.set("logging", key, str(value).lower() if isinstance(value, bool) else value)
    nipype_logging.update_logging(nipype_cfg)
    inputnode = wf.get_node("inputnode")
    inputnode.inputs.flair = str(files["flair"])
    for key in contrasts:
        setattr(inputnode.inputs, key, str(files[key]))
    graph = wf.run(plugin="Linear")
    outs = collected_outputs(graph)

    publish = {k: outs[k] for k in _ALWAYS}
    publish.update({k: outs[k] for k in _OPTIONAL if _defined(outs.get(k))})
    has_gd = _defined(outs.get("gd_lesions"))
    has_bh = _defined(outs.get("bh_lesions"))
    prov = provenance(settings, {_ROLES[k]: files[k] for k in ("flair", *contrasts)})
    publish_visit(
        out_dir,
        visit.subject,
        visit.session,
        publish,
        prov=prov,
        extra={
            "t2_mask": {
                "LesionCount": int(outs["t2_count"]),
                "LesionVolume_mm3": float(outs["t2_volume_mm3"]),
            },
            **(
                {
                    "gd_mask": {
                        "LesionCount": int(outs["gd_count"]),
                        "LesionVolume_mm3": float(outs["gd_volume_mm3"]),
                        "InputsUsed": str(outs["gd_inputs"]),
                        # translation (mm, FLAIR-grid array axes) by which the
                        # post-contrast T1 was moved onto the pre-contrast T1
                        "PostContrastShift_mm": [float(v) for v in outs["gd_post_shift_mm"]],
                    }
                }
                if has_gd
                else {}
            ),
            **({"bh_mask": _bh_sidecar(outs, settings)} if has_bh else {}),
        },
    )
    return {
        "gd_count": int(outs["gd_count"]) if has_gd else None,
        "gd_count_confident": int(outs["gd_count_confident"]) if has_gd else None,
        "gd_volume_mm3": round(float(outs["gd_volume_mm3"]), 3) if has_gd else None,
        "gd_inputs": str(outs["gd_inputs"]) if has_gd else None,
        "bh_count": int(outs["bh_count"]) if has_bh else None,
        "bh_volume_mm3": round(float(outs["bh_volume_mm3"]), 3) if has_bh else None,
        # persistent black holes need the earlier visits: set by the longitudinal step
        "bh_volume_persistent_mm3": None,
        "t2_count": int(outs["t2_count"]),
        "t2_volume_mm3": round(float(outs["t2_volume_mm3"]), 3),
        "brain_volume_mm3": round(float(outs["brain_volume_mm3"]), 1),
        "contrasts_used": "+".join(_ROLES[k] for k in ("flair", *contrasts)),
        "skull_stripped_input": bool(outs["skull_stripped"]),
    }


def _bh_sidecar(outs: dict[str, Any], settings: Settings) -> dict[str, Any]:
    """Sidecar fields of the black-hole mask: counts, reference levels, the rule."""
    levels = dict(outs.get("bh_levels") or {})
    bh = settings.section("black_holes")
    return {
        "LesionCount": int(outs["bh_count"]),
        "LesionVolume_mm3": float(outs["bh_volume_mm3"]),
        "T1ReferenceLevels": {
            "NAWM": levels.get("nawm"),
            "CSF": levels.get("csf"),
            "GreyMatter": levels.get("gm"),
        },
        "GreyMatterContrast": levels.get("gm_fraction"),
        "HypointensityRule": (
            "T2-lesion voxels with T1 contrast c = (NAWM - T1) / (NAWM - CSF) >= "
            f"{bh.get('hypo_fraction')} (NAWM around each T2 lesion), grown to "
            f"{bh.get('edge_level')} x their mean contrast within {bh.get('rim_voxels')} voxel(s); "
            "Gd+ voxels excluded"
        ),
        "ExcludedEnhancing_mm3": levels.get("excluded_enhancing_mm3"),
        "PersistentBlackHoles": (
            "bh_volume_persistent_mm3 of visits.tsv, set by the subject's longitudinal step: "
            f"black holes also black holes at a visit >= {bh.get('persistent_min_days', 182)} "
            "days earlier"
        ),
    }


def _defined(value: Any) -> bool:
    from nipype.interfaces.base import isdefined  # lazy: nipype after NIPYPE_NO_ET

    return value is not None and isdefined(value)
