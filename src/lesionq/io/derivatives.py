"""BIDS-derivatives layout of lesionq outputs: the one place for output file names.

Layout (``OUT`` is the output folder given to ``lesionq run``)::

    OUT/dataset_description.json
    OUT/visits.tsv
    OUT/sub-<s>/ses-<v>/anat/sub-<s>_ses-<v>_<entities>_<suffix>.<ext>   (+ .json sidecar)

Every output file has a JSON sidecar beside it (same name, ``.json``) with the
lesionq version, the protocol name, the effective settings and their hash, and
the sha256 of each input file.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import __version__
from ..config import Settings
from .nifti import atomic_write_text, sha256_file

__all__ = [
    "OUTPUTS",
    "OutputSpec",
    "visit_prefix",
    "visit_dir",
    "output_path",
    "provenance",
    "publish_visit",
    "sidecar_path",
    "write_sidecar",
    "write_dataset_description",
    "VISITS_TSV",
]

#: Name of the per-visit counts table at the top of the output folder.
VISITS_TSV = "visits.tsv"


@dataclass(frozen=True)
class OutputSpec:
    """One kind of per-visit output file.

    Attributes
    ----------
    entities : str
        BIDS entities between the ``sub-<s>_ses-<v>_`` prefix and the suffix,
        e.g. ``"label-T2lesion"`` (may be empty).
    suffix : str
        BIDS suffix, e.g. ``"mask"``.
    ext : str
        Extension with the dot, e.g. ``".nii.gz"``.
    description : str
        Human description (written into the sidecar).
    """

    entities: str
    suffix: str
    ext: str
    description: str

    def filename(self, subject: str, session: str | None) -> str:
        """File name for one visit (``subject``/``session`` without ``sub-``/``ses-``)."""
        parts = [visit_prefix(subject, session)]
        if self.entities:
            parts.append(self.entities)
        parts.append(self.suffix)
        return "_".join(parts) + self.ext


#: Every per-visit output lesionq writes, by key.
OUTPUTS: Mapping[str, OutputSpec] = {
    "t2_mask": OutputSpec(
        "label-T2lesion",
        "mask",
        ".nii.gz",
        "T2/FLAIR hyperintense lesion mask (uint8, 1 = lesion) on the input FLAIR grid",
    ),
    "t2_probseg": OutputSpec(
        "label-T2lesion",
        "probseg",
        ".nii.gz",
        "T2/FLAIR lesion probability (float32, 0..1) on the input FLAIR grid",
    ),
    "t2_labels": OutputSpec(
        "label-T2lesion",
        "dseg",
        ".nii.gz",
        "T2 lesion label image (int32): voxel value = lesion_id of lesions.tsv, 0 = background",
    ),
    "brain_mask": OutputSpec(
        "desc-brain",
        "mask",
        ".nii.gz",
        "Brain mask (uint8) on the input FLAIR grid",
    ),
    "flair_preproc": OutputSpec(
        "desc-preproc",
        "FLAIR",
        ".nii.gz",
        "Bias-corrected FLAIR (float32) on the input FLAIR grid",
    ),
    "t1_coreg": OutputSpec(
        "space-FLAIR_desc-preproc",
        "T1w",
        ".nii.gz",
        "Bias-corrected T1w rigidly registered and resampled onto the FLAIR grid",
    ),
    "t2_coreg": OutputSpec(
        "space-FLAIR_desc-preproc",
        "T2w",
        ".nii.gz",
        "Bias-corrected T2w rigidly registered and resampled onto the FLAIR grid",
    ),
    "t1ce_coreg": OutputSpec(
        "space-FLAIR_ce-gadolinium_desc-preproc",
        "T1w",
        ".nii.gz",
        "Bias-corrected post-contrast T1w rigidly registered onto the FLAIR grid",
    ),
    "xfm_t1": OutputSpec(
        "from-T1w_to-FLAIR_mode-image",
        "xfm",
        ".txt",
        "ITK rigid transform (LPS physical space) mapping FLAIR points to T1w points",
    ),
    "xfm_t2": OutputSpec(
        "from-T2w_to-FLAIR_mode-image",
        "xfm",
        ".txt",
        "ITK rigid transform (LPS physical space) mapping FLAIR points to T2w points",
    ),
    "xfm_t1ce": OutputSpec(
        "from-ceT1w_to-FLAIR_mode-image",
        "xfm",
        ".txt",
        "ITK rigid transform (LPS physical space) mapping FLAIR points to ce-T1w points",
    ),
    "xfm_template": OutputSpec(
        "from-MNI152NLin2009aSym_to-FLAIR_mode-image",
        "xfm",
        ".txt",
        "ITK affine transform (LPS) mapping FLAIR points to atlas template points",
    ),
    "lesions": OutputSpec(
        "",
        "lesions",
        ".tsv",
        "One row per lesion of the visit (see README for columns)",
    ),
}


def visit_prefix(subject: str, session: str | None) -> str:
    """``sub-<s>_ses-<v>`` (or ``sub-<s>`` when the dataset has no sessions)."""
    return f"sub-{subject}" if session is None else f"sub-{subject}_ses-{session}"


def visit_dir(out_dir: str | os.PathLike[str], subject: str, session: str | None) -> Path:
    """``OUT/sub-<s>/ses-<v>/anat`` (``OUT/sub-<s>/anat`` without sessions)."""
    base = Path(out_dir) / f"sub-{subject}"
    if session is not None:
        base = base / f"ses-{session}"
    return base / "anat"


def output_path(
    out_dir: str | os.PathLike[str], subject: str, session: str | None, key: str
) -> Path:
    """Path of the output ``key`` (a key of :data:`OUTPUTS`) for one visit."""
    spec = OUTPUTS[key]
    return visit_dir(out_dir, subject, session) / spec.filename(subject, session)


def sidecar_path(path: str | os.PathLike[str]) -> Path:
    """JSON sidecar path for an output file (``x.nii.gz`` -> ``x.json``)."""
    p = Path(path)
    name = p.name
    for ext in (".nii.gz", ".nii", ".tsv", ".txt", ".json"):
        if name.endswith(ext):
            name = name[: -len(ext)]
            break
    return p.with_name(name + ".json")


def provenance(settings: Settings, inputs: Mapping[str, str | os.PathLike[str]]) -> dict[str, Any]:
    """Provenance block shared by every sidecar.

    Parameters
    ----------
    settings : Settings
        Effective settings of the run.
    inputs : mapping
        Role (e.g. ``"FLAIR"``) -> input file path; each is hashed (sha256).
    """
    return {
        "lesionq_version": __version__,
        "protocol": settings.name,
        "settings_sha256": settings.hash(),
        "settings": settings.dump(),
        "inputs": {
            role: {"path": str(Path(p).resolve()), "sha256": sha256_file(p)}
            for role, p in sorted(inputs.items())
        },
    }


def write_sidecar(
    path: str | os.PathLike[str],
    *,
    prov: Mapping[str, Any],
    description: str,
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """Write the JSON sidecar of output ``path`` atomically; returns its path."""
    body = {"Description": description, **prov}
    if extra:
        body.update(extra)
    dest = sidecar_path(path)
    atomic_write_text(dest, json.dumps(body, indent=2, sort_keys=False, default=str) + "\n")
    return dest


def write_dataset_description(
    out_dir: str | os.PathLike[str], *, source_dir: str | None = None
) -> Path:
    """Write ``OUT/dataset_description.json`` (BIDS derivatives, DatasetType ``derivative``)."""
    body: dict[str, Any] = {
        "Name": "lesionq derivatives",
        "BIDSVersion": "1.9.0",
        "DatasetType": "derivative",
        "GeneratedBy": [
            {
                "Name": "lesionq",
                "Version": __version__,
                "Description": "MS lesion quantification for clinical trials",
            }
        ],
    }
    if source_dir is not None:
        body["SourceDatasets"] = [{"URL": Path(source_dir).resolve().as_uri()}]
    return atomic_write_text(
        Path(out_dir) / "dataset_description.json", json.dumps(body, indent=2) + "\n"
    )


def publish_visit(
    out_dir: str | os.PathLike[str],
    subject: str,
    session: str | None,
    files: Mapping[str, str | os.PathLike[str]],
    *,
    prov: Mapping[str, Any],
    extra: Mapping[str, Mapping[str, Any]] | None = None,
) -> dict[str, Path]:
    """Publish one visit's outputs all at once.

    Every file is copied, under its derivative name, with its JSON sidecar, into
    a staging folder beside ``OUT/sub-<s>/ses-<v>/anat``; only when all are
    written is the staging folder swapped in place of ``anat`` (two renames on
    the same file system). A run killed before the swap leaves the previous
    results untouched and only a hidden ``.anat.staging-*`` folder behind, which
    the next run removes; nothing half-written ever carries a final name.

    Parameters
    ----------
    out_dir : path-like
        Derivatives folder.
    subject, session : str
        Entity values without ``sub-`` / ``ses-``; session may be None.
    files : mapping
        Output key (of :data:`OUTPUTS`) -> path of the finished file to publish.
    prov : mapping
        Provenance block (:func:`provenance`) written into every sidecar.
    extra : mapping, optional
        Output key -> extra sidecar fields.

    Returns
    -------
    dict
        Output key -> final path.
    """
    import shutil
    import tempfile

    final_dir = visit_dir(out_dir, subject, session)
    parent = final_dir.parent
    parent.mkdir(parents=True, exist_ok=True)
    for stale in parent.glob(".anat.staging-*"):
        shutil.rmtree(stale, ignore_errors=True)
    staging = Path(tempfile.mkdtemp(prefix=".anat.staging-", dir=parent))
    published: dict[str, Path] = {}
    try:
        for key, src in sorted(files.items()):
            spec = OUTPUTS[key]
            dest = staging / spec.filename(subject, session)
            shutil.copyfile(src, dest)
            write_sidecar(
                dest, prov=prov, description=spec.description, extra=(extra or {}).get(key)
            )
            published[key] = final_dir / dest.name
        old = None
        if final_dir.exists():
            old = parent / f".anat.old-{os.getpid()}"
            shutil.rmtree(old, ignore_errors=True)
            os.replace(final_dir, old)
        os.replace(staging, final_dir)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return published
