"""Thin nipype interfaces of the longitudinal workflow: files -> io -> steps -> io -> files.

Each interface loads its inputs with :mod:`lesionq.io`, calls one function of
:mod:`lesionq.steps.longitudinal` and saves the results; no numerics here.
Transforms follow the ITK convention of every lesionq ``xfm`` file: a visit's
transform maps *reference* LPS points to that visit's LPS points (fixed =
reference). An undefined transform input means "this visit is the reference"
(the identity).

A registration that fails its quality checks (:class:`~lesionq.errors.RegistrationError`)
does not crash :class:`RegisterVisit`: its ``status`` output says
``registration_failed: <reason>`` and the visit is left out downstream
(:class:`SelectRegistered` passes the last well-registered visit on as the next
visit's *previous*; :class:`CompareVisits` skips it; :class:`TrackLesions`
leaves it out). Any other error fails the node.
"""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk
from nipype.interfaces.base import (
    BaseInterfaceInputSpec,
    File,
    InputMultiObject,
    SimpleInterface,
    TraitedSpec,
    isdefined,
    traits,
)

from ..core.activity import combined_unique_active
from ..errors import RegistrationError
from ..io.nifti import load_array, save_image
from ..io.sitk_bridge import read_transform, write_transform
from ..io.tables import write_tsv
from ..steps import longitudinal as longitudinal_steps  # register/compare: looked up per call
from ..steps.longitudinal import VisitImages, atlas_wm_prior, track_visits, transform_between
from ..types import Volume

__all__ = [
    "STATUS_OK",
    "REGISTRATION_FAILED",
    "RegisterVisit",
    "SelectRegistered",
    "CompareVisits",
    "TrackLesions",
    "CombinedUniqueActive",
    "load_visit_images",
]

LOGGER = logging.getLogger(__name__)

#: ``status`` of a visit whose registration (and comparison) succeeded.
STATUS_OK = "ok"
#: Prefix of the ``status`` of a visit whose registration failed its checks.
REGISTRATION_FAILED = "registration_failed"


def _load(path: str, kind: str, dtype: type = np.float32) -> Volume:
    arr, aff = load_array(path, dtype=dtype)
    return Volume(arr, aff, kind)


def _opt(value: Any) -> Any:
    return value if isdefined(value) and value not in (None, "") else None


def _out(runtime: Any, name: str) -> str:
    return str(Path(runtime.cwd) / name)


def load_visit_images(
    flair: str,
    brain_mask: str,
    lesion_mask: str,
    probability: str | None = None,
    session: str | None = None,
) -> Any:
    """Read a visit's published per-visit files into :class:`~lesionq.steps.longitudinal.VisitImages`.

    Parameters
    ----------
    flair, brain_mask, lesion_mask : str
        Preprocessed FLAIR (read as float32), brain mask and T2 lesion mask (uint8),
        all on the visit's FLAIR grid.
    probability : str, optional
        Lesion probability map (float32).
    session : str, optional
        Session label (for messages).
    """
    return VisitImages(
        flair=_load(flair, "FLAIR"),
        brain_mask=_load(brain_mask, "mask", dtype=np.uint8),
        lesion_mask=_load(lesion_mask, "mask", dtype=np.uint8),
        probability=_load(probability, "probseg") if probability else None,
        session=session or None,
    )


def _identity() -> Any:
    return sitk.Transform(3, sitk.sitkIdentity)


class _ThreadsInputSpec(BaseInterfaceInputSpec):
    n_threads = traits.Int(1, usedefault=True, desc="threads for this step (handed down)")


# ------------------------------------------------------------------------ registration
class _RegisterInputSpec(_ThreadsInputSpec):
    flair = File(exists=True, mandatory=True, desc="the visit's preprocessed FLAIR")
    brain_mask = File(exists=True, mandatory=True)
    t2_mask = File(exists=True, mandatory=True)
    session = traits.Str(mandatory=True, desc="the visit's session label")
    reference_flair = File(exists=True, mandatory=True, desc="the reference's preprocessed FLAIR")
    reference_brain_mask = File(exists=True, mandatory=True)
    reference_t2_mask = File(exists=True, mandatory=True)
    reference_session = traits.Str(mandatory=True)
    registration = traits.Dict(usedefault=True, desc="[longitudinal_registration] section")


class _RegisterOutputSpec(TraitedSpec):
    status = traits.Str(desc="'ok' or 'registration_failed: <reason>'")
    xfm = File(exists=True, desc="ITK transform, reference points -> visit points (if ok)")
    flair_in_reference = File(exists=True, desc="visit FLAIR on the reference grid (if ok)")


class RegisterVisit(SimpleInterface):
    """Register a follow-up visit's FLAIR to the reference visit's FLAIR."""

    input_spec = _RegisterInputSpec
    output_spec = _RegisterOutputSpec

    def _run_interface(self, runtime: Any) -> Any:
        i = self.inputs
        visit = load_visit_images(i.flair, i.brain_mask, i.t2_mask, session=i.session)
        ref = load_visit_images(
            i.reference_flair,
            i.reference_brain_mask,
            i.reference_t2_mask,
            session=i.reference_session,
        )
        try:
            res = longitudinal_steps.register_visit(
                visit, ref, registration=dict(i.registration), n_threads=i.n_threads
            )
        except RegistrationError as exc:
            LOGGER.warning("ses-%s -> ses-%s: %s", i.session, i.reference_session, exc)
            self._results["status"] = f"{REGISTRATION_FAILED}: {exc}"
            return runtime
        self._results["status"] = STATUS_OK
        self._results["xfm"] = str(write_transform(res.transform, _out(runtime, "xfm.txt")))
        vol = res.flair_in_reference
        self._results["flair_in_reference"] = str(
            save_image(
                vol.array, vol.affine, _out(runtime, "flair_in_reference.nii.gz"), dtype=np.float32
            )
        )
        return runtime


# --------------------------------------------------------------- last registered visit
class _SelectInputSpec(BaseInterfaceInputSpec):
    session = traits.Str(mandatory=True, desc="this visit's session label")
    status = traits.Str(mandatory=True, desc="this visit's registration status")
    flair = File(exists=True, mandatory=True)
    brain_mask = File(exists=True, mandatory=True)
    t2_mask = File(exists=True, mandatory=True)
    probseg = File(exists=True)
    xfm = File(exists=True, desc="this visit's reference -> visit transform (if registered)")
    fallback_session = traits.Str(mandatory=True, desc="the last registered visit before it")
    fallback_flair = File(exists=True, mandatory=True)
    fallback_brain_mask = File(exists=True, mandatory=True)
    fallback_t2_mask = File(exists=True, mandatory=True)
    fallback_probseg = File(exists=True)
    fallback_xfm = File(exists=True, desc="undefined when the fallback is the reference")


class _SelectOutputSpec(TraitedSpec):
    session = traits.Str()
    flair = File(exists=True)
    brain_mask = File(exists=True)
    t2_mask = File(exists=True)
    probseg = File(exists=True)
    xfm = File(exists=True, desc="undefined when the selected visit is the reference")


class SelectRegistered(SimpleInterface):
    """Pass on this visit if its registration succeeded, else the last registered one.

    The next visit is compared with what this node passes on: a visit whose
    registration failed is never anyone's *previous* visit.
    """

    input_spec = _SelectInputSpec
    output_spec = _SelectOutputSpec

    def _run_interface(self, runtime: Any) -> Any:
        i = self.inputs
        use_self = i.status == STATUS_OK
        prefix = "" if use_self else "fallback_"
        for key in ("session", "flair", "brain_mask", "t2_mask", "probseg", "xfm"):
            value = _opt(getattr(i, prefix + key))
            if value is not None:
                self._results[key] = value
        if not use_self:
            LOGGER.info(
                "ses-%s is not registered: the next visit compares with ses-%s",
                i.session,
                i.fallback_session,
            )
        return runtime


# ------------------------------------------------------------------------- comparison
class _CompareInputSpec(_ThreadsInputSpec):
    later_session = traits.Str(mandatory=True)
    later_status = traits.Str(STATUS_OK, usedefault=True, desc="registration status of later")
    later_flair = File(exists=True, mandatory=True)
    later_brain_mask = File(exists=True, mandatory=True)
    later_t2_mask = File(exists=True, mandatory=True)
    later_probseg = File(exists=True)
    later_xfm = File(exists=True, desc="reference -> later transform (undefined: reference)")
    later_xfm_template = File(
        exists=True,
        desc="later FLAIR -> atlas template transform (its white-matter prior is used if given)",
    )
    atlas_dir = traits.Str("", usedefault=True, desc="atlas folder ('' = the bundled one)")
    earlier_session = traits.Str(mandatory=True)
    earlier_flair = File(exists=True, mandatory=True)
    earlier_brain_mask = File(exists=True, mandatory=True)
    earlier_t2_mask = File(exists=True, mandatory=True)
    earlier_probseg = File(exists=True)
    earlier_xfm = File(exists=True, desc="reference -> earlier transform (undefined: reference)")
    change = traits.Dict(usedefault=True, desc="[change] protocol section")
    lesions = traits.Dict(mandatory=True, desc="[lesions] protocol section")


class _CompareOutputSpec(TraitedSpec):
    status = traits.Str(desc="'ok', or the later visit's registration status (not compared)")
    earlier_session = traits.Str(desc="the session compared with")
    new_enlarging = File(exists=True, desc="uint8 new + enlarging mask, later grid")
    change_labels = File(exists=True, desc="int32 change labels (change_id), later grid")
    earlier_on_later = File(exists=True, desc="earlier FLAIR on the later grid (QC)")
    table = File(exists=True, desc="change table TSV (CHANGE_TABLE_COLUMNS)")
    lesion_statuses = File(exists=True, desc="JSON: later lesion_id -> status")
    counts = traits.Dict(desc="new_t2_count, enlarging_t2_count, t2_volume_change_mm3, ...")


class CompareVisits(SimpleInterface):
    """New and enlarging lesions of a later visit since an earlier one (later grid)."""

    input_spec = _CompareInputSpec
    output_spec = _CompareOutputSpec

    def _run_interface(self, runtime: Any) -> Any:
        i = self.inputs
        self._results["earlier_session"] = i.earlier_session
        if i.later_status != STATUS_OK:
            self._results["status"] = i.later_status
            return runtime
        later = load_visit_images(
            i.later_flair,
            i.later_brain_mask,
            i.later_t2_mask,
            _opt(i.later_probseg),
            session=i.later_session,
        )
        if _opt(i.later_xfm_template):
            later = replace(
                later,
                wm_prior=atlas_wm_prior(
                    later.flair,
                    read_transform(i.later_xfm_template),
                    atlas_dir=_opt(i.atlas_dir),
                    n_threads=i.n_threads,
                ),
            )
        earlier = load_visit_images(
            i.earlier_flair,
            i.earlier_brain_mask,
            i.earlier_t2_mask,
            _opt(i.earlier_probseg),
            session=i.earlier_session,
        )
        later_tx = read_transform(i.later_xfm) if _opt(i.later_xfm) else _identity()
        earlier_tx = read_transform(i.earlier_xfm) if _opt(i.earlier_xfm) else _identity()
        res = longitudinal_steps.compare_visits(
            earlier,
            later,
            transform_between(later_tx, earlier_tx),
            change=dict(i.change),
            lesions=dict(i.lesions),
            n_threads=i.n_threads,
        )
        for key, vol, dtype in (
            ("new_enlarging", res.new_enlarging, np.uint8),
            ("change_labels", res.change_labels, np.int32),
            ("earlier_on_later", res.earlier_on_later, np.float32),
        ):
            self._results[key] = str(
                save_image(vol.array, vol.affine, _out(runtime, f"{key}.nii.gz"), dtype=dtype)
            )
        self._results["table"] = str(write_tsv(res.table, _out(runtime, "change.tsv")))
        statuses = {str(int(k)): str(v) for k, v in sorted(res.lesion_statuses.items())}
        path = Path(_out(runtime, "lesion_statuses.json"))
        path.write_text(json.dumps(statuses, indent=1) + "\n", encoding="utf-8")
        self._results["lesion_statuses"] = str(path)
        self._results["counts"] = {k: _plain(v) for k, v in res.counts.items()}
        self._results["status"] = STATUS_OK
        return runtime


def _plain(value: Any) -> Any:
    """numpy scalars -> Python scalars (nipype results are pickled and JSON-dumped)."""
    if isinstance(value, np.generic):
        return value.item()
    return value


# --------------------------------------------------------------------------- tracking
class _TrackInputSpec(_ThreadsInputSpec):
    sessions = traits.List(traits.Str, mandatory=True, desc="session labels, time order")
    labels = InputMultiObject(File(exists=True), mandatory=True, desc="dseg per session")
    statuses = traits.List(
        traits.Str, [], usedefault=True, desc="registration status of sessions[1:]"
    )
    transforms = InputMultiObject(
        File(exists=True),
        desc="reference -> visit transforms of the registered sessions among sessions[1:], "
        "in order (failed registrations have none)",
    )
    reference = File(exists=True, mandatory=True, desc="an image on the reference grid")


class _TrackOutputSpec(TraitedSpec):
    tracks = File(exists=True, desc="JSON: session -> {lesion_id: track_id}")


class TrackLesions(SimpleInterface):
    """Stable lesion ids across the registered visits (the reference included)."""

    input_spec = _TrackInputSpec
    output_spec = _TrackOutputSpec

    def _run_interface(self, runtime: Any) -> Any:
        i = self.inputs
        sessions = list(i.sessions)
        labels = list(i.labels)
        statuses = list(i.statuses)
        transforms = list(i.transforms) if isdefined(i.transforms) else []
        if len(labels) != len(sessions) or len(statuses) != len(sessions) - 1:
            raise ValueError(
                f"TrackLesions: {len(sessions)} sessions need as many label images "
                f"(got {len(labels)}) and {len(sessions) - 1} statuses (got {len(statuses)})"
            )
        ok = [s == STATUS_OK for s in statuses]
        if sum(ok) != len(transforms):
            raise ValueError(
                f"TrackLesions: {sum(ok)} registered follow-ups but {len(transforms)} transforms"
            )
        kept = [sessions[0]] + [s for s, good in zip(sessions[1:], ok, strict=True) if good]
        kept_labels = [labels[0]] + [lab for lab, good in zip(labels[1:], ok, strict=True) if good]
        vols = [_load(p, "labels", dtype=np.int32) for p in kept_labels]
        txs: list[Any] = [None] + [read_transform(t) for t in transforms]
        ref_arr, ref_aff = load_array(i.reference, dtype=np.float32)
        maps = track_visits(vols, txs, Volume(ref_arr, ref_aff, "reference"), n_threads=i.n_threads)
        body = {
            ses: {str(int(k)): int(v) for k, v in sorted(m.items())}
            for ses, m in zip(kept, maps, strict=True)
        }
        path = Path(_out(runtime, "tracks.json"))
        path.write_text(json.dumps(body, indent=1) + "\n", encoding="utf-8")
        self._results["tracks"] = str(path)
        return runtime


class _ActiveInputSpec(BaseInterfaceInputSpec):
    gd_labels = File(exists=True, desc="the follow-up's Gd+ lesion labels (undefined: no Gd+)")
    change_labels = File(
        exists=True, desc="new/enlarging T2 labels vs the previous visit (undefined: not compared)"
    )


class _ActiveOutputSpec(TraitedSpec):
    cua_count = traits.Int(desc="combined unique active lesions (undefined without both inputs)")


class CombinedUniqueActive(SimpleInterface):
    """CUA count of a follow-up: its Gd+ lesions and its new/enlarging T2 lesions, each once.

    :func:`lesionq.core.activity.combined_unique_active` on the visit's Gd+ labels and
    the change labels of its comparison with the previous visit (both on the follow-up's
    FLAIR grid). Without a Gd+ result or a comparison the count stays undefined (n/a).
    """

    input_spec = _ActiveInputSpec
    output_spec = _ActiveOutputSpec

    def _run_interface(self, runtime: Any) -> Any:
        i = self.inputs
        if isdefined(i.gd_labels) and isdefined(i.change_labels):
            gd, _ = load_array(i.gd_labels, dtype=np.int32)
            ne, _ = load_array(i.change_labels, dtype=np.int32)
            self._results["cua_count"] = int(combined_unique_active(gd, ne).cua_count)
        return runtime
