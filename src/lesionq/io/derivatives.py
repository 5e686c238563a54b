"""BIDS-derivatives layout of lesionq outputs: the one place for output file names.

Layout (``OUT`` is the output folder given to ``lesionq run``)::

    OUT/dataset_description.json
    OUT/visits.tsv
    OUT/sub-<s>/ses-<v>/anat/sub-<s>_ses-<v>_<entities>_<suffix>.<ext>   (+ .json sidecar)
    OUT/sub-<s>/sub-<s>_<entities>_<suffix>.<ext>     subject-level tables (+ .json sidecar)

Entities of the longitudinal outputs name sessions (``from-ses02_to-ses01``): their
:class:`OutputSpec` holds ``{session}`` / ``{reference}`` placeholders filled in by
:meth:`OutputSpec.filename`.

Every output file has a JSON sidecar beside it (same name, ``.json``) with the
lesionq version, the protocol name, the effective settings and their hash, and
the sha256 of each input file.
"""

from __future__ import annotations

import fnmatch
import json
import logging
import os
import secrets
import shutil
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .._version import __version__
from ..config import Settings
from ..errors import MissingInputError, OutputError
from .nifti import atomic_write_text, is_partial_file, sha256_file

LOGGER = logging.getLogger(__name__)

__all__ = [
    "OUTPUTS",
    "remove_stale_temporaries",
    "OutputSpec",
    "visit_prefix",
    "visit_dir",
    "output_path",
    "provenance",
    "publish_visit",
    "publish_visit_update",
    "LONGITUDINAL_OUTPUTS",
    "SUBJECT_OUTPUTS",
    "subject_output_path",
    "sidecar_path",
    "write_sidecar",
    "write_dataset_description",
    "ensure_writable_dir",
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
        e.g. ``"label-T2lesion"`` (may be empty). May hold the placeholders
        ``{session}`` (this visit's session label) and ``{reference}`` (the
        subject's reference session label), e.g. ``"space-ses{reference}"``.
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

    @property
    def templated(self) -> bool:
        """True when :attr:`entities` names sessions (``{session}`` / ``{reference}``)."""
        return "{" in self.entities

    def filename(self, subject: str, session: str | None, *, reference: str | None = None) -> str:
        """File name for one visit (``subject``/``session`` without ``sub-``/``ses-``).

        ``reference`` (a session label without ``ses-``) is required by the
        specs whose entities hold ``{reference}``.

        Examples
        --------
        >>> OUTPUTS["xfm_reference"].filename("a", "02", reference="01")
        'sub-a_ses-02_from-ses02_to-ses01_mode-image_xfm.txt'
        """
        parts = [visit_prefix(subject, session)]
        entities = self.entities
        if self.templated:
            if "{reference}" in entities and reference is None:
                raise ValueError(
                    f"output {self.entities!r}_{self.suffix}: needs the reference session label"
                )
            if "{session}" in entities and session is None:
                raise ValueError(f"output {self.entities!r}_{self.suffix}: needs a session label")
            entities = entities.format(session=session, reference=reference)
        if entities:
            parts.append(entities)
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
    "gd_mask": OutputSpec(
        "label-Gdlesion",
        "mask",
        ".nii.gz",
        "Gadolinium-enhancing lesion mask (uint8, ring cores filled) on the input FLAIR grid",
    ),
    "gd_labels": OutputSpec(
        "label-Gdlesion",
        "dseg",
        ".nii.gz",
        "Gd+ lesion label image (int32): value = lesion_id of the lesions.tsv rows with label Gd",
    ),
    "bh_mask": OutputSpec(
        "label-T1hypo",
        "mask",
        ".nii.gz",
        "T1 black holes (uint8, 1 = T2-lesion voxel hypointense on the pre-contrast T1, Gd+ "
        "voxels excluded) on the input FLAIR grid",
    ),
    "bh_labels": OutputSpec(
        "label-T1hypo",
        "dseg",
        ".nii.gz",
        "T1 black-hole label image (int32): value = lesion_id of the lesions.tsv rows with label "
        "T1hypo",
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
    # ---------------------------------------------------------------- longitudinal
    "newenlarging_mask": OutputSpec(
        "label-T2lesion_desc-newenlarging",
        "mask",
        ".nii.gz",
        "New and enlarging T2 lesions since the previous visit (uint8, 1 = lesion) on this "
        "visit's FLAIR grid; empty at the reference (baseline) visit",
    ),
    "newenlarging_labels": OutputSpec(
        "label-T2lesion_desc-newenlarging",
        "dseg",
        ".nii.gz",
        "New and enlarging T2 lesions since the previous visit (int32): voxel value = "
        "change_id of desc-newenlarging_lesions.tsv, 0 = background",
    ),
    "newenlarging_table": OutputSpec(
        "desc-newenlarging",
        "lesions",
        ".tsv",
        "One row per new or enlarging T2 lesion since the previous visit (see README)",
    ),
    "newenlarging_baseline_mask": OutputSpec(
        "label-T2lesion_desc-newenlargingbaseline",
        "mask",
        ".nii.gz",
        "New and enlarging T2 lesions since the reference (baseline) visit (uint8) on this "
        "visit's FLAIR grid; empty at the reference visit",
    ),
    "newenlarging_baseline_labels": OutputSpec(
        "label-T2lesion_desc-newenlargingbaseline",
        "dseg",
        ".nii.gz",
        "New and enlarging T2 lesions since the reference visit (int32): voxel value = "
        "change_id of desc-newenlargingbaseline_lesions.tsv",
    ),
    "newenlarging_baseline_table": OutputSpec(
        "desc-newenlargingbaseline",
        "lesions",
        ".tsv",
        "One row per new or enlarging T2 lesion since the reference (baseline) visit",
    ),
    "xfm_reference": OutputSpec(
        "from-ses{session}_to-ses{reference}_mode-image",
        "xfm",
        ".txt",
        "ITK transform (LPS physical space) mapping points of the reference session's "
        "preprocessed FLAIR to points of this session's preprocessed FLAIR",
    ),
    "flair_in_reference": OutputSpec(
        "space-ses{reference}_desc-preproc",
        "FLAIR",
        ".nii.gz",
        "This visit's bias-corrected FLAIR resampled (linear) onto the reference session's "
        "FLAIR grid, for QC of the registration",
    ),
    "previous_flair": OutputSpec(
        "desc-previous",
        "FLAIR",
        ".nii.gz",
        "The previous visit's bias-corrected FLAIR resampled onto this visit's FLAIR grid and "
        "intensity-matched to it, as compared (QC)",
    ),
}

#: Per-visit outputs written by the longitudinal step (published by
#: :func:`publish_visit_update` beside the visit's cross-sectional outputs).
LONGITUDINAL_OUTPUTS: tuple[str, ...] = (
    "newenlarging_mask",
    "newenlarging_labels",
    "newenlarging_table",
    "newenlarging_baseline_mask",
    "newenlarging_baseline_labels",
    "newenlarging_baseline_table",
    "xfm_reference",
    "flair_in_reference",
    "previous_flair",
)

#: Subject-level outputs (``OUT/sub-<s>/sub-<s>_<entities>_<suffix>``), by key.
SUBJECT_OUTPUTS: Mapping[str, OutputSpec] = {
    "tracks": OutputSpec(
        "desc-tracks",
        "lesions",
        ".tsv",
        "One row per lesion track and visit (in time order, from the track's first visit): "
        "stable lesion ids across the subject's visits (see README)",
    ),
}


def visit_prefix(subject: str, session: str | None) -> str:
    """``sub-<s>_ses-<v>`` (or ``sub-<s>`` when the dataset has no sessions)."""
    return f"sub-{subject}" if session is None else f"sub-{subject}_ses-{session}"


#: Folder of a visit's published outputs (``OUT/sub-<s>/ses-<v>/anat``).
_VISIT_FOLDER = "anat"


def visit_dir(out_dir: str | os.PathLike[str], subject: str, session: str | None) -> Path:
    """``OUT/sub-<s>/ses-<v>/anat`` (``OUT/sub-<s>/anat`` without sessions)."""
    base = Path(out_dir) / f"sub-{subject}"
    if session is not None:
        base = base / f"ses-{session}"
    return base / _VISIT_FOLDER


def output_path(
    out_dir: str | os.PathLike[str],
    subject: str,
    session: str | None,
    key: str,
    *,
    reference: str | None = None,
) -> Path:
    """Path of the output ``key`` (a key of :data:`OUTPUTS`) for one visit.

    ``reference`` is the reference session label, needed by the outputs that name
    it (``xfm_reference``, ``flair_in_reference``).
    """
    spec = OUTPUTS[key]
    return visit_dir(out_dir, subject, session) / spec.filename(
        subject, session, reference=reference
    )


def subject_output_path(out_dir: str | os.PathLike[str], subject: str, key: str) -> Path:
    """Path of the subject-level output ``key`` (of :data:`SUBJECT_OUTPUTS`).

    Examples
    --------
    >>> subject_output_path("OUT", "a", "tracks").as_posix()
    'OUT/sub-a/sub-a_desc-tracks_lesions.tsv'
    """
    spec = SUBJECT_OUTPUTS[key]
    return Path(out_dir) / f"sub-{subject}" / spec.filename(subject, None)


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

    ``settings_sha256`` covers the protocol values and the atlas manifest's
    sha256 (``atlas``: the manifest's path and sha256, see
    :attr:`lesionq.config.Settings.atlas_sha256`).

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
        "atlas": {"manifest": settings.atlas_manifest, "manifest_sha256": settings.atlas_sha256},
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


def _in_the_way(path: Path) -> Path | None:
    """The nearest existing ancestor of ``path`` (or ``path``) that is not a folder."""
    for candidate in (path, *path.parents):
        try:
            if candidate.exists():
                return None if candidate.is_dir() else candidate
        except OSError:  # cannot even look (permission): nothing known in the way
            return None
    return None


def ensure_writable_dir(path: str | os.PathLike[str], *, what: str = "output folder") -> Path:
    """Create ``path`` (and its parents) and prove it writable with a real write.

    A probe file is created in the folder and removed again: that is what fails
    on a read-only file system, in a folder without write permission, or where a
    file stands in the way, whoever runs lesionq (permission bits do not stop
    root; a read-only mount does).

    Parameters
    ----------
    path : path-like
        The folder.
    what : str
        How the folder is named in the error (e.g. ``"output folder OUT_DIR"``).

    Returns
    -------
    Path
        ``path``.

    Raises
    ------
    lesionq.errors.OutputError
        The folder cannot be created or written; the message names the folder,
        the cause and the fix.
    """
    folder = Path(path)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".lesionq-write-probe-", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        blocker = _in_the_way(folder)
        if blocker is not None:
            cause = f"{blocker} is a file, not a folder"
            fix = f"pass a folder path, or move the file {blocker} out of the way"
        else:
            cause = f"{type(exc).__name__}: {exc.strerror or exc}"
            fix = (
                "pass a folder on a writable file system where this user may create "
                "files (check its permissions and mount options)"
            )
        raise OutputError(f"{folder}: the {what} cannot be written ({cause}) (fix: {fix})") from exc
    return folder


#: Hidden folders of a visit swap in progress (see :func:`_stage_and_swap`).
_STAGING_PREFIX = ".anat.staging-"
_OLD_PREFIX = ".anat.old-"


def remove_stale_temporaries(folder: str | os.PathLike[str]) -> list[Path]:
    """Remove what killed writers leave behind under ``folder`` (recursively).

    That is the temporary files of :func:`lesionq.io.nifti.atomic_path`
    (``.<name>.<random>.part<ext>``) and the hidden staging / previous folders of
    a visit swap (``.anat.staging-*``, ``.anat.old-*``). None of them is ever a
    finished result, with one exception: a previous folder (``.anat.old-*``)
    whose ``anat`` folder is missing holds the visit's previous, complete outputs
    (the writer was killed between the two renames of the swap); it is renamed
    back to ``anat`` rather than removed. Call it only while no other process
    writes into ``folder`` (the batch runner holds the subject's lock).

    Parameters
    ----------
    folder : path-like
        A subject folder or the output root; a missing folder is fine.

    Returns
    -------
    list of Path
        What was removed, sorted.
    """
    root = Path(folder)
    if not root.is_dir():
        return []
    removed: list[Path] = []
    for path in sorted(root.rglob(".*")):
        if not path.exists() and not path.is_symlink():
            continue  # inside a folder removed just before
        if path.is_dir() and path.name.startswith(_OLD_PREFIX) and _restore_previous(path):
            continue
        if path.is_dir() and path.name.startswith((_STAGING_PREFIX, _OLD_PREFIX)):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
        elif path.is_file() and is_partial_file(path):
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def _restore_previous(old: Path) -> bool:
    """Rename a swap's previous folder back to ``anat`` when ``anat`` is missing."""
    final = old.parent / _VISIT_FOLDER
    if final.exists():
        return False
    os.replace(old, final)
    LOGGER.warning("%s: restored the previous outputs of an interrupted publication", final)
    return True


def _make_staging(parent: Path) -> Path:
    """A new, uniquely named staging folder in ``parent``, with the umask's mode.

    Not :func:`tempfile.mkdtemp`: its folders are mode 700 whatever the umask,
    and the staging folder becomes the published ``anat`` folder.
    """
    while True:
        staging = parent / f"{_STAGING_PREFIX}{secrets.token_hex(6)}"
        try:
            staging.mkdir(mode=0o777)  # the kernel applies the umask
        except FileExistsError:
            continue
        return staging


def _stage_and_swap(final_dir: Path, fill: Any) -> None:
    """Fill a staging folder beside ``final_dir`` with ``fill(staging)``, then swap it in.

    Two renames on one file system: ``final_dir`` -> a hidden ``.anat.old-*``
    folder, staging -> ``final_dir``; the old folder is then removed. Stale
    staging folders of killed runs are removed first; on any error the staging
    folder is removed and ``final_dir`` is left as it was.
    """
    parent = final_dir.parent
    parent.mkdir(parents=True, exist_ok=True)
    for stale in parent.glob(f"{_STAGING_PREFIX}*"):
        shutil.rmtree(stale, ignore_errors=True)
    staging = _make_staging(parent)
    try:
        fill(staging)
        old = None
        if final_dir.exists():
            old = parent / f"{_OLD_PREFIX}{os.getpid()}"
            shutil.rmtree(old, ignore_errors=True)
            os.replace(final_dir, old)
        try:
            os.replace(staging, final_dir)
        except BaseException:
            if old is not None and not final_dir.exists():
                os.replace(old, final_dir)  # put the previous outputs back
            raise
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _stage_files(
    staging: Path,
    final_dir: Path,
    subject: str,
    session: str | None,
    files: Mapping[str, str | os.PathLike[str]],
    *,
    prov: Mapping[str, Any],
    extra: Mapping[str, Mapping[str, Any]] | None,
    reference: str | None,
) -> dict[str, Path]:
    published: dict[str, Path] = {}
    for key, src in sorted(files.items()):
        spec = OUTPUTS[key]
        dest = staging / spec.filename(subject, session, reference=reference)
        shutil.copyfile(src, dest)
        write_sidecar(dest, prov=prov, description=spec.description, extra=(extra or {}).get(key))
        published[key] = final_dir / dest.name
    return published


def publish_visit(
    out_dir: str | os.PathLike[str],
    subject: str,
    session: str | None,
    files: Mapping[str, str | os.PathLike[str]],
    *,
    prov: Mapping[str, Any],
    extra: Mapping[str, Mapping[str, Any]] | None = None,
    reference: str | None = None,
) -> dict[str, Path]:
    """Publish one visit's outputs all at once.

    Every file is copied, under its derivative name, with its JSON sidecar, into
    a staging folder beside ``OUT/sub-<s>/ses-<v>/anat``; only when all are
    written is the staging folder swapped in place of ``anat`` (two renames on
    the same file system). A run killed before the swap leaves the previous
    results untouched and only a hidden ``.anat.staging-*`` folder behind, which
    the next run removes; nothing half-written ever carries a final name.
    Files already in ``anat`` that are not in ``files`` disappear (stale outputs
    of an earlier run); :func:`publish_visit_update` keeps them instead.

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
    reference : str, optional
        Reference session label, for outputs whose names hold ``{reference}``.

    Returns
    -------
    dict
        Output key -> final path.
    """
    final_dir = visit_dir(out_dir, subject, session)
    published: dict[str, Path] = {}

    def fill(staging: Path) -> None:
        published.update(
            _stage_files(
                staging,
                final_dir,
                subject,
                session,
                files,
                prov=prov,
                extra=extra,
                reference=reference,
            )
        )

    _stage_and_swap(final_dir, fill)
    return published


def publish_visit_update(
    out_dir: str | os.PathLike[str],
    subject: str,
    session: str | None,
    files: Mapping[str, str | os.PathLike[str]],
    *,
    prov: Mapping[str, Any],
    extra: Mapping[str, Mapping[str, Any]] | None = None,
    reference: str | None = None,
    drop: Iterable[str] = (),
) -> dict[str, Path]:
    """Add or replace outputs of an already published visit, all at once.

    The staging folder receives a copy of every file now in the visit's
    ``anat`` folder (sidecars included), except those replaced by ``files`` or
    removed by ``drop``; then the new files with their sidecars; then it is
    swapped in place of ``anat`` exactly as in :func:`publish_visit`. A reader
    sees either the old folder or the new one, never a mixture, and a failure
    before the swap leaves the published visit untouched.

    Parameters
    ----------
    out_dir, subject, session, prov, extra, reference :
        As for :func:`publish_visit`.
    files : mapping
        Output key -> finished file; a file of the same name already published
        is replaced (with its sidecar).
    drop : iterable of str
        Output keys whose published files (and sidecars) are removed when not in
        ``files`` (e.g. the longitudinal outputs of an earlier run when this run
        has none for the visit). Keys whose names hold ``{reference}`` are matched
        whatever the reference was.

    Returns
    -------
    dict
        Output key -> final path of the files in ``files``.

    Raises
    ------
    lesionq.errors.MissingInputError
        The visit has no published ``anat`` folder to update.
    """
    final_dir = visit_dir(out_dir, subject, session)
    if not final_dir.is_dir():
        raise MissingInputError(
            f"{final_dir}: no published outputs to update (the visit must be published "
            "by publish_visit first)"
        )
    new_names: set[str] = set()
    for key in files:
        name = OUTPUTS[key].filename(subject, session, reference=reference)
        new_names |= {name, sidecar_path(name).name}
    patterns: list[str] = []
    for key in drop:
        # a glob of the file name, any reference session
        pat = OUTPUTS[key].filename(subject, session, reference="*")
        patterns += [pat, sidecar_path(pat).name]
    published: dict[str, Path] = {}

    def fill(staging: Path) -> None:
        for src in sorted(final_dir.iterdir()):
            name = src.name
            if name in new_names or any(fnmatch.fnmatchcase(name, p) for p in patterns):
                continue
            if src.is_dir():
                shutil.copytree(src, staging / name)
            else:
                shutil.copy2(src, staging / name)
        published.update(
            _stage_files(
                staging,
                final_dir,
                subject,
                session,
                files,
                prov=prov,
                extra=extra,
                reference=reference,
            )
        )

    _stage_and_swap(final_dir, fill)
    return published
