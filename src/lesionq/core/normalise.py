"""Robust intensity normalisation of MR images inside a brain mask.

MR intensities have no absolute unit: scanners, coils and bias correction
change the scale from visit to visit. Everything downstream in lesionq that
compares intensities across images therefore works on intensities expressed
relative to a *reference tissue peak* and a *robust spread*, both estimated
from the image itself:

* the **reference** is the mode of the brain intensity histogram (``"peak"``,
  optionally the right-most major peak, which on a T1-weighted image is the
  white-matter peak), or a fixed percentile of the brain intensities
  (``"percentile"``);
* the **scale** is a robust standard deviation of the reference tissue (for
  ``"peak"``: the narrower half-width at half maximum of the peak / 1.1774,
  the side facing away from the neighbouring tissue; for ``"percentile"``:
  1.4826 x the median absolute deviation of the brain), so that a
  normalised value of 1.0 means "the reference tissue" and differences can
  be read in units of its spread.

Both estimators ignore the tails of the histogram (lesions, vessels,
winsorised maxima, background), so a few percent of abnormal voxels do not
move them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

from ..errors import InputError

__all__ = ["NormalisationResult", "normalise_intensity", "robust_location_scale"]

log = logging.getLogger(__name__)

#: Factor turning a median absolute deviation into a Gaussian standard deviation.
MAD_TO_SD = 1.4826

_METHODS = ("peak", "percentile")
_PEAKS = ("highest", "rightmost")


@dataclass(frozen=True)
class NormalisationResult:
    """Outcome of :func:`normalise_intensity`.

    Attributes
    ----------
    image : numpy.ndarray
        float32 array, same shape as the input: ``input / reference`` inside
        the brain mask and 0 outside it. The reference tissue maps to 1.0.
    reference : float
        Reference intensity in input units (the histogram mode or percentile).
    scale : float
        Robust standard deviation of the reference tissue, in input units.
    relative_scale : float
        ``scale / reference``: the reference tissue's spread in normalised units.
    method : str
        ``"peak"`` or ``"percentile"``.
    """

    image: np.ndarray
    reference: float
    scale: float
    relative_scale: float
    method: str


def robust_location_scale(values: np.ndarray) -> tuple[float, float]:
    """Median and robust standard deviation (1.4826 x MAD) of a sample.

    Parameters
    ----------
    values : numpy.ndarray
        Any shape; flattened. Must hold at least one finite value.

    Returns
    -------
    (float, float)
        Median and 1.4826 x median absolute deviation (equals the standard
        deviation for Gaussian data).

    Examples
    --------
    >>> robust_location_scale(np.array([1.0, 2.0, 3.0, 4.0, 100.0]))
    (3.0, 1.4826)
    """
    v = np.asarray(values, dtype=np.float64).ravel()
    v = v[np.isfinite(v)]
    if v.size == 0:
        raise InputError("robust_location_scale: no finite values in the sample")
    med = float(np.median(v))
    mad = float(np.median(np.abs(v - med)))
    return med, MAD_TO_SD * mad


def _check_image_mask(image: np.ndarray, brain_mask: np.ndarray, name: str) -> np.ndarray:
    img = np.asarray(image)
    mask = np.asarray(brain_mask)
    if img.ndim != 3:
        raise InputError(f"{name}: expected a 3-D image, got shape {img.shape}")
    if mask.shape != img.shape:
        raise InputError(
            f"{name}: brain_mask shape {mask.shape} differs from the image shape {img.shape}"
        )
    if mask.dtype != bool:
        raise InputError(f"{name}: brain_mask must be a bool array, got dtype {mask.dtype}")
    if not mask.any():
        raise InputError(f"{name}: brain_mask is empty")
    vals = img[mask]
    if not np.all(np.isfinite(vals)):
        raise InputError(f"{name}: the image has NaN or infinite values inside the brain mask")
    return vals.astype(np.float64)


def histogram_peak(
    values: np.ndarray, *, peak: str = "highest", n_bins: int = 256, min_height: float = 0.5
) -> tuple[float, float]:
    """Mode of a 1-D intensity sample and the robust spread of its peak.

    The histogram of the values between their 0.5th and 99.5th percentiles
    is smoothed with a Gaussian of 2 bins; its maxima are the candidate
    peaks. ``peak="highest"`` takes the tallest one, ``"rightmost"`` the
    right-most maximum at least ``min_height`` times as tall as the tallest
    (the white-matter peak of a T1-weighted image).

    Returns
    -------
    (float, float)
        Peak position and the peak's Gaussian-equivalent standard deviation
        (narrower half-width at half maximum / 1.1774, corrected for the
        histogram smoothing), both in input units.
    """
    if peak not in _PEAKS:
        raise InputError(f"peak must be one of {_PEAKS}, got {peak!r}")
    lo, hi = np.percentile(values, [0.5, 99.5])
    if not hi > lo:
        raise InputError(
            f"the image is constant inside the brain mask (0.5-99.5 percentiles {lo}..{hi})"
        )
    hist, edges = np.histogram(values, bins=n_bins, range=(lo, hi))
    smooth = ndi.gaussian_filter1d(hist.astype(np.float64), 2.0, mode="constant")
    centres = 0.5 * (edges[:-1] + edges[1:])
    interior = (smooth[1:-1] >= smooth[:-2]) & (smooth[1:-1] >= smooth[2:])
    maxima = np.flatnonzero(interior) + 1
    if maxima.size == 0:
        maxima = np.array([int(np.argmax(smooth))])
    top = smooth[maxima].max()
    if peak == "highest":
        k = int(maxima[np.argmax(smooth[maxima])])
    else:
        k = int(maxima[smooth[maxima] >= min_height * top].max())
    # half-width at half maximum on each side (linear interpolation between bins);
    # the narrower side is the one less contaminated by a neighbouring tissue
    half = smooth[k] / 2.0
    width = edges[1] - edges[0]

    def half_width(step: int) -> float:
        j = k
        while 0 <= j + step < n_bins and smooth[j + step] >= half:
            j += step
        if not 0 <= j + step < n_bins:
            return float("inf")
        a, b = smooth[j], smooth[j + step]
        frac = (a - half) / (a - b) if a != b else 0.0
        return (abs(j - k) + frac) * width

    left, right = half_width(-1), half_width(+1)
    # symmetric peak: average both sides; skewed by a neighbour: the narrower side
    hwhm = 0.5 * (left + right) if max(left, right) <= 1.25 * min(left, right) else min(left, right)
    mode = float(centres[k])
    if not np.isfinite(hwhm):
        return mode, robust_location_scale(values)[1]
    # Gaussian: HWHM = 1.1774 sd; remove the 2-bin smoothing of the histogram
    sd2 = (hwhm / 1.1774) ** 2 - (2.0 * width) ** 2
    spread = float(np.sqrt(max(sd2, (0.5 * width) ** 2)))
    return mode, spread


def normalise_intensity(
    image: np.ndarray,
    brain_mask: np.ndarray,
    *,
    method: str = "peak",
    peak: str = "highest",
    percentile: float = 50.0,
) -> NormalisationResult:
    """Express an image relative to a robust reference-tissue intensity.

    Parameters
    ----------
    image : numpy.ndarray
        3-D float array (any intensity unit; bias-corrected for best results).
    brain_mask : numpy.ndarray
        3-D bool array, same shape; True inside the brain.
    method : {"peak", "percentile"}
        ``"peak"`` (default): the reference is the mode of the brain
        histogram (see ``peak``). ``"percentile"``: the reference is the
        ``percentile``-th percentile of the brain intensities.
    peak : {"highest", "rightmost"}
        Which histogram maximum is the reference for ``method="peak"``:
        the tallest (FLAIR: the joint grey/white-matter peak) or the
        right-most of those at least half as tall as the tallest (T1: the
        white-matter peak).
    percentile : float
        Percentile in (0, 100) used by ``method="percentile"``.

    Returns
    -------
    NormalisationResult
        ``image / reference`` inside the mask (0 outside), the reference and
        the robust scale (see the module docstring).

    Raises
    ------
    lesionq.errors.InputError
        Wrong shapes or dtype, empty mask, NaN/inf in the brain, a constant
        image, an unknown method, or a reference <= 0.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> img = rng.normal(200.0, 10.0, (40, 40, 40))
    >>> res = normalise_intensity(img, np.ones(img.shape, bool))
    >>> round(res.reference / 200.0, 1), round(res.relative_scale, 2)
    (1.0, 0.05)
    """
    if method not in _METHODS:
        raise InputError(f"method must be one of {_METHODS}, got {method!r}")
    vals = _check_image_mask(image, brain_mask, "normalise_intensity")
    if method == "peak":
        reference, scale = histogram_peak(vals, peak=peak)
    else:
        if not 0.0 < percentile < 100.0:
            raise InputError(f"percentile must be in (0, 100), got {percentile!r}")
        reference = float(np.percentile(vals, percentile))
        scale = robust_location_scale(vals)[1]
    if not reference > 0:
        raise InputError(
            f"normalise_intensity: reference intensity must be > 0, got {reference!r} "
            f"(method={method!r}); is the image background-subtracted or signed?"
        )
    out = np.zeros(np.shape(image), dtype=np.float32)
    out[brain_mask] = (vals / reference).astype(np.float32)
    log.debug("normalised: reference=%.4g scale=%.4g (%s)", reference, scale, method)
    return NormalisationResult(
        image=out,
        reference=float(reference),
        scale=float(scale),
        relative_scale=float(scale / reference),
        method=method,
    )
