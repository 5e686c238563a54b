"""Thin nipype interfaces of the visit workflow: files -> io -> steps -> io -> files.

No numerics here: each interface loads its inputs with :mod:`lesionq.io`, calls
one function of :mod:`lesionq.steps` and saves the results. Parameters arrive as
plain dicts (a protocol section), so nipype's input hashing covers them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from nipype.interfaces.base import (
    BaseInterfaceInputSpec,
    File,
    SimpleInterface,
    TraitedSpec,
    isdefined,
    traits,
)

from ..io.nifti import load_array, save_image
from ..io.sitk_bridge import write_transform
from ..io.tables import read_tsv, write_tsv
from ..steps import (
    atlas_priors,
    coregister_to_flair,
    prepare_flair,
    segment_t2_volumes,
    tabulate_lesions,
)
from ..steps.black_holes import segment_black_hole_volumes
from ..steps.gd import segment_gd_volumes
from ..types import Volume

__all__ = [
    "PrepareFLAIR",
    "CoregisterToFLAIR",
    "AtlasPriors",
    "SegmentT2",
    "TabulateLesions",
    "SegmentGd",
    "SegmentBlackHoles",
]

PRIOR_KEYS = ("wm", "gm", "csf", "location")


def _load(path: str, kind: str, dtype: type = np.float32) -> Volume:
    arr, aff = load_array(path, dtype=dtype)
    return Volume(arr, aff, kind)


def _opt(value: Any) -> Any:
    return value if isdefined(value) and value is not None else None


def _load_priors(inputs: Any) -> dict[str, Volume] | None:
    """The atlas maps wired into a node (``wm``, ``gm``, ``csf``, ``location``), or None."""
    if not _opt(inputs.wm):
        return None
    return {
        k: _load(getattr(inputs, k), k, dtype=np.uint8 if k == "location" else np.float32)
        for k in PRIOR_KEYS
    }


def _out(runtime: Any, name: str) -> str:
    return str(Path(runtime.cwd) / name)


class _ThreadsInputSpec(BaseInterfaceInputSpec):
    n_threads = traits.Int(1, usedefault=True, desc="threads for this step (handed down)")


# --------------------------------------------------------------------------- FLAIR
class _PrepareFLAIRInputSpec(_ThreadsInputSpec):
    flair = File(exists=True, mandatory=True, desc="raw FLAIR (NIfTI)")
    bias = traits.Dict(desc="[bias] protocol section")
    brain = traits.Dict(desc="[brain] protocol section")


class _PrepareFLAIROutputSpec(TraitedSpec):
    flair_preproc = File(exists=True, desc="bias-corrected FLAIR on the input grid")
    brain_mask = File(exists=True, desc="brain mask on the FLAIR grid")
    skull_stripped = traits.Bool(desc="the input was already skull-stripped")


class PrepareFLAIR(SimpleInterface):
    """Bias correction and brain extraction of the session's FLAIR."""

    input_spec = _PrepareFLAIRInputSpec
    output_spec = _PrepareFLAIROutputSpec

    def _run_interface(self, runtime: Any) -> Any:
        flair = _load(self.inputs.flair, "FLAIR")
        res = prepare_flair(
            flair,
            bias=dict(self.inputs.bias),
            brain=dict(self.inputs.brain),
            n_threads=self.inputs.n_threads,
        )
        self._results["flair_preproc"] = str(
            save_image(
                res.flair.array,
                res.flair.affine,
                _out(runtime, "flair_preproc.nii.gz"),
                dtype=np.float32,
            )
        )
        self._results["brain_mask"] = str(
            save_image(
                res.brain_mask.array,
                res.brain_mask.affine,
                _out(runtime, "brain_mask.nii.gz"),
                dtype=np.uint8,
            )
        )
        self._results["skull_stripped"] = bool(res.skull_stripped)
        return runtime


# --------------------------------------------------------------------- co-registration
class _CoregInputSpec(_ThreadsInputSpec):
    moving = File(exists=True, mandatory=True, desc="raw contrast to bring onto the FLAIR grid")
    flair_preproc = File(exists=True, mandatory=True)
    brain_mask = File(exists=True, mandatory=True)
    skull_stripped = traits.Bool(False, usedefault=True)
    contrast = traits.Str(mandatory=True, desc="contrast name, e.g. 'T1w'")
    bias = traits.Dict()
    registration = traits.Dict(desc="[registration] protocol section")


class _CoregOutputSpec(TraitedSpec):
    out_file = File(exists=True, desc="bias-corrected contrast resampled onto the FLAIR grid")
    xfm = File(exists=True, desc="ITK transform file, FLAIR points -> contrast points")


class CoregisterToFLAIR(SimpleInterface):
    """Rigid co-registration of one contrast to the session's FLAIR (SimpleITK)."""

    input_spec = _CoregInputSpec
    output_spec = _CoregOutputSpec

    def _run_interface(self, runtime: Any) -> Any:
        moving = _load(self.inputs.moving, self.inputs.contrast)
        flair = _load(self.inputs.flair_preproc, "FLAIR")
        mask = _load(self.inputs.brain_mask, "mask", dtype=np.uint8)
        res = coregister_to_flair(
            moving,
            flair,
            mask,
            skull_stripped=self.inputs.skull_stripped,
            bias=dict(self.inputs.bias),
            registration=dict(self.inputs.registration),
            n_threads=self.inputs.n_threads,
        )
        self._results["out_file"] = str(
            save_image(
                res.image.array, res.image.affine, _out(runtime, "coreg.nii.gz"), dtype=np.float32
            )
        )
        self._results["xfm"] = str(write_transform(res.transform, _out(runtime, "xfm.txt")))
        return runtime


# --------------------------------------------------------------------------- atlas
class _AtlasInputSpec(_ThreadsInputSpec):
    flair_preproc = File(exists=True, mandatory=True)
    brain_mask = File(exists=True, mandatory=True)
    t1 = File(exists=True, desc="T1w on the FLAIR grid (preferred for template registration)")
    atlas_dir = traits.Str(desc="atlas folder (default: the bundled one)")
    template = traits.Dict(desc="[template] protocol section")


class _AtlasOutputSpec(TraitedSpec):
    wm = File(exists=True)
    gm = File(exists=True)
    csf = File(exists=True)
    location = File(exists=True, desc="location label map on the FLAIR grid")
    xfm = File(exists=True, desc="ITK affine, FLAIR points -> template points")


class AtlasPriors(SimpleInterface):
    """Affine registration of the atlas template; priors resampled onto the FLAIR grid."""

    input_spec = _AtlasInputSpec
    output_spec = _AtlasOutputSpec

    def _run_interface(self, runtime: Any) -> Any:
        flair = _load(self.inputs.flair_preproc, "FLAIR")
        mask = _load(self.inputs.brain_mask, "mask", dtype=np.uint8)
        t1 = _load(self.inputs.t1, "T1w") if _opt(self.inputs.t1) else None
        res = atlas_priors(
            flair,
            mask,
            t1=t1,
            atlas_dir=_opt(self.inputs.atlas_dir) or None,
            template=dict(self.inputs.template),
            n_threads=self.inputs.n_threads,
        )
        for key in PRIOR_KEYS:
            vol = res.maps[key]
            dtype = np.uint8 if key == "location" else np.float32
            self._results[key] = str(
                save_image(vol.array, vol.affine, _out(runtime, f"prior_{key}.nii.gz"), dtype=dtype)
            )
        self._results["xfm"] = str(write_transform(res.transform, _out(runtime, "xfm.txt")))
        return runtime


# --------------------------------------------------------------------- segmentation
class _SegmentInputSpec(_ThreadsInputSpec):
    flair_preproc = File(exists=True, mandatory=True)
    brain_mask = File(exists=True, mandatory=True)
    t1 = File(exists=True)
    t2 = File(exists=True)
    wm = File(exists=True)
    gm = File(exists=True)
    csf = File(exists=True)
    location = File(exists=True)
    segmentation = traits.Dict(desc="[segmentation] protocol section")
    min_volume_mm3 = traits.Float(mandatory=True, desc="[lesions] min_volume_mm3 (inclusive)")
    location_rules = traits.Dict(desc="[location] protocol section")


class _SegmentOutputSpec(TraitedSpec):
    probseg = File(exists=True)
    mask = File(exists=True)


class SegmentT2(SimpleInterface):
    """T2/FLAIR lesion probability and mask on the FLAIR grid."""

    input_spec = _SegmentInputSpec
    output_spec = _SegmentOutputSpec

    def _run_interface(self, runtime: Any) -> Any:
        flair = _load(self.inputs.flair_preproc, "FLAIR")
        mask = _load(self.inputs.brain_mask, "mask", dtype=np.uint8)
        t1 = _load(self.inputs.t1, "T1w") if _opt(self.inputs.t1) else None
        t2 = _load(self.inputs.t2, "T2w") if _opt(self.inputs.t2) else None
        priors = _load_priors(self.inputs)
        res = segment_t2_volumes(
            flair,
            mask,
            t1=t1,
            t2=t2,
            priors=priors,
            segmentation=dict(self.inputs.segmentation),
            min_volume_mm3=self.inputs.min_volume_mm3,
            location_rules=dict(self.inputs.location_rules),
            n_threads=self.inputs.n_threads,
        )
        self._results["probseg"] = str(
            save_image(
                res.probability.array,
                res.probability.affine,
                _out(runtime, "probseg.nii.gz"),
                dtype=np.float32,
            )
        )
        self._results["mask"] = str(
            save_image(
                res.mask.array, res.mask.affine, _out(runtime, "mask.nii.gz"), dtype=np.uint8
            )
        )
        return runtime


# ------------------------------------------------------------------------- lesions
class _TabulateInputSpec(_ThreadsInputSpec):
    mask = File(exists=True, mandatory=True)
    flair_preproc = File(exists=True, mandatory=True)
    brain_mask = File(exists=True, mandatory=True)
    probseg = File(exists=True)
    location = File(exists=True)
    lesions = traits.Dict(desc="[lesions] protocol section")
    location_rules = traits.Dict(desc="[location] protocol section")


class _TabulateOutputSpec(TraitedSpec):
    labels = File(exists=True, desc="lesion label image, values = lesion_id")
    table = File(exists=True, desc="lesions TSV")
    t2_count = traits.Int()
    t2_volume_mm3 = traits.Float()
    brain_volume_mm3 = traits.Float()


class TabulateLesions(SimpleInterface):
    """Connected components, per-lesion measures and location classes."""

    input_spec = _TabulateInputSpec
    output_spec = _TabulateOutputSpec

    def _run_interface(self, runtime: Any) -> Any:
        mask = _load(self.inputs.mask, "mask", dtype=np.uint8)
        flair = _load(self.inputs.flair_preproc, "FLAIR")
        brain = _load(self.inputs.brain_mask, "mask", dtype=np.uint8)
        prob = _load(self.inputs.probseg, "probseg") if _opt(self.inputs.probseg) else None
        loc = (
            _load(self.inputs.location, "location", dtype=np.uint8)
            if _opt(self.inputs.location)
            else None
        )
        res = tabulate_lesions(
            mask,
            flair=flair,
            brain_mask=brain,
            probability=prob,
            location=loc,
            lesions=dict(self.inputs.lesions),
            location_rules=dict(self.inputs.location_rules),
            n_threads=self.inputs.n_threads,
        )
        self._results["labels"] = str(
            save_image(
                res.labels.array, res.labels.affine, _out(runtime, "labels.nii.gz"), dtype=np.int32
            )
        )
        self._results["table"] = str(write_tsv(res.table, _out(runtime, "lesions.tsv")))
        self._results["t2_count"] = int(res.count)
        self._results["t2_volume_mm3"] = float(res.volume_mm3)
        self._results["brain_volume_mm3"] = float(res.brain_volume_mm3)
        return runtime


# ---------------------------------------------------------------------------- Gd+
class _SegmentGdInputSpec(_ThreadsInputSpec):
    t1ce = File(exists=True, mandatory=True, desc="post-contrast T1 on the FLAIR grid")
    flair_preproc = File(exists=True, mandatory=True)
    brain_mask = File(exists=True, mandatory=True)
    t1 = File(exists=True, desc="pre-contrast T1 on the FLAIR grid")
    wm = File(exists=True)
    gm = File(exists=True)
    csf = File(exists=True)
    location = File(exists=True)
    gd = traits.Dict(desc="[gd] protocol section")
    min_volume_mm3 = traits.Float(mandatory=True, desc="[lesions] min_volume_mm3 (inclusive)")
    location_rules = traits.Dict(desc="[location] protocol section")


class _SegmentGdOutputSpec(TraitedSpec):
    mask = File(exists=True)
    labels = File(exists=True)
    table = File(exists=True, desc="Gd+ rows of the lesion table (TSV)")
    gd_count = traits.Int()
    gd_count_confident = traits.Int(desc="Gd+ lesions with confidence >= [gd] confident_min")
    gd_volume_mm3 = traits.Float()
    gd_inputs = traits.Str(desc='"post+pre", "post+flair" or "post"')
    gd_post_shift_mm = traits.List(
        traits.Float(), desc="post- onto pre-contrast T1 translation applied, mm (array axes)"
    )


class SegmentGd(SimpleInterface):
    """Gadolinium-enhancing lesions on the FLAIR grid (:func:`lesionq.steps.gd.segment_gd_volumes`)."""

    input_spec = _SegmentGdInputSpec
    output_spec = _SegmentGdOutputSpec

    def _run_interface(self, runtime: Any) -> Any:
        priors = _load_priors(self.inputs)
        res = segment_gd_volumes(
            _load(self.inputs.t1ce, "ce-gadolinium_T1w"),
            _load(self.inputs.flair_preproc, "FLAIR"),
            _load(self.inputs.brain_mask, "mask", dtype=np.uint8),
            t1=_load(self.inputs.t1, "T1w") if _opt(self.inputs.t1) else None,
            priors=priors,
            gd=dict(self.inputs.gd),
            min_volume_mm3=self.inputs.min_volume_mm3,
            location_rules=dict(self.inputs.location_rules),
            n_threads=self.inputs.n_threads,
        )
        self._results.update(_lesion_outputs(runtime, res, "gd"))
        self._results["gd_count"] = int(res.count)
        self._results["gd_count_confident"] = int(res.count_confident)
        self._results["gd_volume_mm3"] = float(res.volume_mm3)
        self._results["gd_inputs"] = str(res.inputs)
        self._results["gd_post_shift_mm"] = [round(float(v), 3) for v in res.post_shift_mm]
        return runtime


def _lesion_outputs(runtime: Any, res: Any, stem: str) -> dict[str, str]:
    """Write a step's ``mask`` (uint8), ``labels`` (int32) and ``table`` (TSV); their paths."""
    return {
        "mask": str(
            save_image(
                res.mask.array, res.mask.affine, _out(runtime, f"{stem}_mask.nii.gz"),
                dtype=np.uint8,
            )
        ),
        "labels": str(
            save_image(
                res.labels.array, res.labels.affine, _out(runtime, f"{stem}_labels.nii.gz"),
                dtype=np.int32,
            )
        ),
        "table": str(write_tsv(res.table, _out(runtime, f"{stem}_lesions.tsv"))),
    }  # fmt: skip


# --------------------------------------------------------------------- black holes
class _SegmentBlackHolesInputSpec(BaseInterfaceInputSpec):
    t1 = File(exists=True, mandatory=True, desc="pre-contrast T1 on the FLAIR grid")
    t2_labels = File(exists=True, mandatory=True, desc="T2 lesion labels (dseg)")
    t2_table = File(exists=True, desc="T2 lesion table (TSV), for the location of each black hole")
    brain_mask = File(exists=True, mandatory=True)
    gd_mask = File(exists=True, desc="Gd+ lesion mask of the visit (never black holes)")
    wm = File(exists=True)
    gm = File(exists=True)
    csf = File(exists=True)
    location = File(exists=True)
    black_holes = traits.Dict(desc="[black_holes] protocol section")
    lesions = traits.Dict(desc="[lesions] protocol section (min_volume_mm3, connectivity)")


class _SegmentBlackHolesOutputSpec(TraitedSpec):
    mask = File(exists=True)
    labels = File(exists=True)
    table = File(exists=True, desc="T1hypo rows of the lesion table (TSV)")
    bh_count = traits.Int()
    bh_volume_mm3 = traits.Float()
    levels = traits.Dict(desc="reference levels (NAWM, CSF, GM) for the sidecar")


class SegmentBlackHoles(SimpleInterface):
    """T1 black holes inside the T2 lesions (:func:`lesionq.steps.black_holes.segment_black_hole_volumes`)."""

    input_spec = _SegmentBlackHolesInputSpec
    output_spec = _SegmentBlackHolesOutputSpec

    def _run_interface(self, runtime: Any) -> Any:
        res = segment_black_hole_volumes(
            _load(self.inputs.t1, "T1w"),
            _load(self.inputs.t2_labels, "labels", dtype=np.int32),
            _load(self.inputs.brain_mask, "mask", dtype=np.uint8),
            enhancing=(
                _load(self.inputs.gd_mask, "mask", dtype=np.uint8)
                if _opt(self.inputs.gd_mask)
                else None
            ),
            priors=_load_priors(self.inputs),
            t2_table=read_tsv(self.inputs.t2_table) if _opt(self.inputs.t2_table) else None,
            black_holes=dict(self.inputs.black_holes),
            lesions=dict(self.inputs.lesions),
        )
        self._results.update(_lesion_outputs(runtime, res, "bh"))
        self._results["bh_count"] = int(res.count)
        self._results["bh_volume_mm3"] = float(res.volume_mm3)
        self._results["levels"] = {k: float(v) for k, v in res.levels.items()}
        return runtime
