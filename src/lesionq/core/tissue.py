"""Brain tissue classification: CSF, grey matter (GM), white matter (WM).

A Gaussian mixture with one component per tissue, fitted by EM inside the
brain mask, optionally with spatial atlas priors as voxel-wise mixing
proportions (the "unified segmentation" idea of SPM, without the
registration and bias parts, which lesionq does elsewhere). A fixed, small
uniform *outlier* component keeps lesions, vessels and artefacts from
dragging the tissue Gaussians.

Channel conventions: ``channels[0]`` decides which component is which
tissue, through ``primary`` (the contrast of ``channels[0]``):

* ``"t1"``: CSF < GM < WM (T1-weighted);
* ``"flair"``: CSF < WM < GM (CSF suppressed, grey matter brighter than white).

T2-weighted images (CSF brightest) can be extra channels but not the primary.

Without priors the mixture starts from a 3-class multi-level Otsu split of
``channels[0]``; with priors it starts from the priors. Everything is
deterministic: EM runs on a fixed, regular subsample of the brain voxels and
then the posteriors are evaluated on every brain voxel.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from skimage.filters import threshold_multiotsu

from ..errors import InputError, ProcessingError

__all__ = ["TissueModel", "estimate_tissues", "TISSUES"]

log = logging.getLogger(__name__)

#: Tissue order of every array axis and tuple in this module.
TISSUES = ("csf", "gm", "wm")

_ORDER = {"t1": (0, 1, 2), "flair": (0, 2, 1)}  # rank of (csf, gm, wm) on channel 0


@dataclass(frozen=True)
class TissueModel:
    """Fitted tissue mixture and its voxel-wise posteriors.

    Attributes
    ----------
    csf, gm, wm : numpy.ndarray
        float32 posterior probabilities, shape of the brain mask; they sum to 1
        inside the mask and are 0 outside.
    means, sds : numpy.ndarray
        float64, shape (3, n_channels): per-tissue (rows in :data:`TISSUES`
        order) mean and standard deviation of each channel, in input units.
    n_iterations : int
        EM iterations run.
    used_priors : bool
        Whether spatial priors were used.
    """

    csf: np.ndarray
    gm: np.ndarray
    wm: np.ndarray
    means: np.ndarray
    sds: np.ndarray
    n_iterations: int
    used_priors: bool

    def posterior(self, tissue: str) -> np.ndarray:
        """Posterior map of ``tissue`` (one of :data:`TISSUES`)."""
        if tissue not in TISSUES:
            raise InputError(f"tissue must be one of {TISSUES}, got {tissue!r}")
        return getattr(self, tissue)


def _prior_stack(
    priors: Mapping[str, np.ndarray], brain_mask: np.ndarray, floor: float
) -> np.ndarray:
    rows = []
    for name in TISSUES:
        if name not in priors:
            raise InputError(
                f"priors: missing the {name!r} map (need {TISSUES}, got {sorted(priors)})"
            )
        p = np.asarray(priors[name], dtype=np.float64)
        if p.shape != brain_mask.shape:
            raise InputError(
                f"priors[{name!r}] has shape {p.shape}, expected the image shape {brain_mask.shape}"
            )
        v = p[brain_mask]
        if not np.all(np.isfinite(v)) or v.min() < -1e-6 or v.max() > 1 + 1e-6:
            raise InputError(f"priors[{name!r}] must hold finite values in [0, 1]")
        rows.append(np.clip(v, 0.0, 1.0))
    stack = np.stack(rows, axis=1) + floor
    stack /= stack.sum(axis=1, keepdims=True)
    return stack


def _log_gauss(x: np.ndarray, means: np.ndarray, sds: np.ndarray) -> np.ndarray:
    # x (n, c); means, sds (3, c) -> (n, 3) log densities (diagonal covariance)
    z = (x[:, None, :] - means[None, :, :]) / sds[None, :, :]
    return -0.5 * (z**2).sum(axis=2) - np.log(sds).sum(axis=1)[None, :]


def estimate_tissues(
    channels: Sequence[np.ndarray],
    brain_mask: np.ndarray,
    *,
    primary: str = "t1",
    priors: Mapping[str, np.ndarray] | None = None,
    prior_floor: float = 0.05,
    n_iterations: int = 25,
    sample_step: int = 3,
    outlier_fraction: float = 0.01,
) -> TissueModel:
    """Fit a 3-tissue Gaussian mixture (CSF, GM, WM) inside a brain mask.

    Parameters
    ----------
    channels : sequence of numpy.ndarray
        One or more 3-D float images on the same grid (e.g. ``[t1]`` or
        ``[t1, flair]``); ``channels[0]`` must have the contrast ``primary``.
    brain_mask : numpy.ndarray
        3-D bool array, True inside the brain.
    primary : {"t1", "flair"}
        Contrast of ``channels[0]``; fixes the intensity order of the tissues
        used to initialise the mixture (see the module docstring).
    priors : mapping, optional
        ``{"csf": ..., "gm": ..., "wm": ...}`` atlas probability maps in
        [0, 1] on the same grid. Used as voxel-wise mixing proportions after
        adding ``prior_floor`` and renormalising, so that a misregistered
        prior can be overruled by the intensities.
    prior_floor : float
        Added to every prior before renormalising (>= 0); larger values trust
        the atlas less.
    n_iterations : int
        EM iterations (>= 1).
    sample_step : int
        EM uses every ``sample_step``-th brain voxel (C order); >= 1.
    outlier_fraction : float
        Weight in [0, 0.5) of a uniform outlier component spanning the
        intensity range.

    Returns
    -------
    TissueModel

    Raises
    ------
    lesionq.errors.InputError
        Invalid shapes, dtypes, values or parameters.
    lesionq.errors.ProcessingError
        A tissue collapsed (fewer than 0.1 % of the brain voxels).
    """
    if primary not in _ORDER:
        raise InputError(f"primary must be one of {tuple(_ORDER)}, got {primary!r}")
    mask = np.asarray(brain_mask)
    if mask.ndim != 3 or mask.dtype != bool:
        raise InputError(f"brain_mask must be a 3-D bool array, got {mask.dtype} {mask.shape}")
    if len(channels) == 0:
        raise InputError("estimate_tissues: need at least one channel")
    n_brain = int(mask.sum())
    if n_brain < 1000:
        raise InputError(f"estimate_tissues: brain_mask has only {n_brain} voxels (< 1000)")
    if n_iterations < 1 or sample_step < 1:
        raise InputError(
            f"n_iterations and sample_step must be >= 1, got {n_iterations}, {sample_step}"
        )
    if not 0.0 <= outlier_fraction < 0.5 or prior_floor < 0:
        raise InputError(
            f"outlier_fraction must be in [0, 0.5) and prior_floor >= 0, got "
            f"{outlier_fraction}, {prior_floor}"
        )
    cols = []
    for i, ch in enumerate(channels):
        a = np.asarray(ch)
        if a.shape != mask.shape:
            raise InputError(f"channel {i} has shape {a.shape}, expected {mask.shape}")
        v = a[mask].astype(np.float64)
        if not np.all(np.isfinite(v)):
            raise InputError(f"channel {i} has NaN or infinite values inside the brain mask")
        cols.append(v)
    x = np.stack(cols, axis=1)
    prior = _prior_stack(priors, mask, prior_floor) if priors is not None else None

    # standardise channels for numerical comfort (undone on the way out)
    centre = np.median(x, axis=0)
    spread = np.percentile(x, 95, axis=0) - np.percentile(x, 5, axis=0)
    if np.any(spread <= 0):
        raise InputError("estimate_tissues: a channel is constant inside the brain mask")
    xs = (x - centre) / spread
    sub = slice(None, None, sample_step)
    xe = xs[sub]
    pe = prior[sub] if prior is not None else None

    # initial responsibilities: priors when given, else the 3 classes of a
    # multi-level Otsu split of channel 0 (darkest, middle, brightest)
    if pe is not None:
        resp = pe.copy()
    else:
        try:
            cuts = threshold_multiotsu(xe[:, 0], classes=3, nbins=256)
        except ValueError as exc:
            raise ProcessingError(f"estimate_tissues: cannot split channel 0 in 3 ({exc})") from exc
        bands = np.digitize(xe[:, 0], cuts)  # band 0 darkest, 2 brightest
        order = _ORDER[primary]  # rank of csf, gm, wm
        resp = np.zeros((len(xe), 3))
        for k in range(3):
            resp[bands == order[k], k] = 1.0
    lo, hi = xe.min(axis=0), xe.max(axis=0)
    log_uniform = -np.log(np.prod(np.maximum(hi - lo, 1e-6)))
    weights = np.full(3, 1.0 / 3.0)
    means = np.zeros((3, x.shape[1]))
    sds = np.ones((3, x.shape[1]))
    for _ in range(n_iterations):
        nk = resp.sum(axis=0)
        if np.any(nk < 1e-3 * len(xe)):
            raise ProcessingError(
                f"estimate_tissues: a tissue class collapsed (sizes {np.round(nk).tolist()}); "
                "check the brain mask and the contrast given as 'primary'"
            )
        means = (resp.T @ xe) / nk[:, None]
        var = (resp.T @ xe**2) / nk[:, None] - means**2
        sds = np.sqrt(np.maximum(var, 1e-6))
        if pe is None:
            weights = nk / nk.sum()
        ll = _log_gauss(xe, means, sds)
        ll += np.log(pe) if pe is not None else np.log(weights)[None, :]
        ll += np.log1p(-outlier_fraction) if outlier_fraction > 0 else 0.0
        mx = ll.max(axis=1, keepdims=True)
        dens = np.exp(ll - mx)
        tot = dens.sum(axis=1, keepdims=True)
        if outlier_fraction > 0:
            out = np.exp(np.log(outlier_fraction) + log_uniform - mx)
            resp = dens / (tot + out)
        else:
            resp = dens / tot

    ll = _log_gauss(xs, means, sds)
    ll += np.log(prior) if prior is not None else np.log(weights)[None, :]
    ll -= ll.max(axis=1, keepdims=True)
    post = np.exp(ll)
    post /= post.sum(axis=1, keepdims=True)
    maps = []
    for k in range(3):
        m = np.zeros(mask.shape, dtype=np.float32)
        m[mask] = post[:, k]
        maps.append(m)
    means_out = means * spread + centre
    sds_out = sds * spread
    log.debug("tissue means %s sds %s", means_out.round(3).tolist(), sds_out.round(3).tolist())
    return TissueModel(
        csf=maps[0],
        gm=maps[1],
        wm=maps[2],
        means=means_out,
        sds=sds_out,
        n_iterations=n_iterations,
        used_priors=prior is not None,
    )
