"""Unsupervised foreground extraction from image gradients (CellMixer, section 2)."""

from __future__ import annotations

import argparse
import math
from dataclasses import asdict, dataclass

import numpy as np
from scipy import ndimage as ndi
from skimage import filters

from .._settings import check_settings, setting, takes_settings

THRESHOLD_METHODS = ("li", "otsu", "triangle", "local")


def _threshold_need(value) -> str | None:
    if isinstance(value, str):
        return None if value in THRESHOLD_METHODS else f"choose one of {', '.join(THRESHOLD_METHODS)} or a number"
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return f"choose one of {', '.join(THRESHOLD_METHODS)} or a finite number"
    return None


def _threshold_text(text: str):
    """``--threshold``: a method name or a number."""
    if text in THRESHOLD_METHODS:
        return text
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"use one of {', '.join(THRESHOLD_METHODS)} or a number") from None


@dataclass(frozen=True)
class ForegroundParams:
    """Settings of :func:`extract_foreground` (their one home: defaults, ranges, help)."""

    sigma_pre: float = setting(1.5, "Gaussian smoothing (pixels) before the Sobel operator", at_least=0)
    sigma_post: float = setting(2.0, "Gaussian smoothing (pixels) of the gradient magnitude", at_least=0)
    erosion_size: int = setting(9, "side (pixels) of the grey erosion's square structuring element; 1 disables it",
                                at_least=1)
    threshold: str | float = setting("li", f"{', '.join(THRESHOLD_METHODS)}, or a number on the processed "
                                           "gradient map", check=_threshold_need, parse=_threshold_text)
    log_gradient: bool = setting(True, "threshold the log of the gradient map (--no-log-gradient: the map itself)",
                                 flag="--no-log-gradient")
    block_size: int = setting(151, "neighbourhood (pixels) of the 'local' threshold", at_least=3)
    threshold_offset: float = setting(0.0, "lowers the threshold (grows the foreground) by this much")
    min_object_area: int = setting(100, "drop foreground objects smaller than this (pixels)", at_least=0)
    max_hole_area: int = setting(1000, "fill holes up to this size (pixels)", at_least=0)

    def __post_init__(self):
        check_settings(self)

    def to_dict(self) -> dict:
        return asdict(self)


def _normalize_unit(image: np.ndarray) -> np.ndarray:
    """Scale to roughly [0, 1] by the 1st and 99th percentiles of a subsample (fast on big images)."""
    step = max(1, int(np.sqrt(image.size / 250_000)))
    lo, hi = np.percentile(image[::step, ::step], [1, 99])
    if hi <= lo:
        hi = lo + 1.0
    return (image - np.float32(lo)) * np.float32(1.0 / (hi - lo))


def _sobel_magnitude(x: np.ndarray) -> np.ndarray:
    """sqrt(S_x^2 + S_y^2) with the 3x3 Sobel kernels (as scipy.ndimage.sobel), in numpy slices."""
    p = np.pad(x, 1, mode="symmetric")
    smooth_y = p[:-2] + 2 * p[1:-1] + p[2:]
    sx = smooth_y[:, 2:] - smooth_y[:, :-2]
    smooth_x = p[:, :-2] + 2 * p[:, 1:-1] + p[:, 2:]
    sy = smooth_x[2:] - smooth_x[:-2]
    return np.sqrt(sx * sx + sy * sy, out=sx)


def _running_min(x: np.ndarray, size: int, axis: int) -> np.ndarray:
    """Minimum over a centred window of odd ``size`` along ``axis``, edges replicated.

    Windows of doubling width (1, 2, 4, ...) take log2(size) passes of np.minimum instead of
    ``size`` comparisons per pixel: several times faster than scipy's minimum filter here.
    """
    half = size // 2
    pad = [(0, 0)] * x.ndim
    pad[axis] = (half, half)
    cur = np.pad(x, pad, mode="edge")
    n, length, width = x.shape[axis], cur.shape[axis], 1

    def take(a, start, count):
        index = [slice(None)] * a.ndim
        index[axis] = slice(start, start + count)
        return a[tuple(index)]

    while 2 * width <= size:
        cur = np.minimum(take(cur, 0, length - width), take(cur, width, length - width))
        length -= width
        width *= 2
    return np.minimum(take(cur, 0, n), take(cur, size - width, n))


def gradient_map(image: np.ndarray, *, sigma_pre: float = 1.5, sigma_post: float = 2.0,
                 erosion_size: int = 9, log_gradient: bool = True) -> np.ndarray:
    """The processed gradient magnitude that :func:`extract_foreground` thresholds.

    Smoothing (Gaussian, ``sigma_pre``), Sobel ``S_x`` and ``S_y``, ``G = sqrt(S_x^2 + S_y^2)``,
    smoothing again (``sigma_post``), then grey erosion with a square structuring element of side
    ``erosion_size`` (rounded up to odd; a separable minimum filter, which breaks thin bridges as
    the paper's erosion does). With ``log_gradient`` the result is ``log(G + 1e-3)``, which spreads the long
    tail of gradient values so that global thresholds separate faint cells from flat background.
    """
    x = _normalize_unit(np.asarray(image, dtype=np.float32))
    if sigma_pre > 0:
        x = ndi.gaussian_filter(x, sigma_pre, truncate=3.0)
    g = _sobel_magnitude(x)
    if sigma_post > 0:
        g = ndi.gaussian_filter(g, sigma_post, truncate=3.0)
    if erosion_size > 1:
        size = int(erosion_size) | 1
        g = _running_min(_running_min(g, size, 0), size, 1)
    if log_gradient:
        g = np.log(g + np.float32(1e-3), out=g)
    return g


def _threshold_value(g: np.ndarray, method: str) -> float:
    # Histogram-based thresholds on a subsample: same value to a fraction of a bin, much faster.
    step = max(1, int(np.sqrt(g.size / 250_000)))
    sample = g[::step, ::step]
    if method == "li":
        return float(filters.threshold_li(sample, initial_guess=float(filters.threshold_otsu(sample))))
    if method == "otsu":
        return float(filters.threshold_otsu(sample))
    if method == "triangle":
        return float(filters.threshold_triangle(sample))
    raise ValueError(method)


def _remove_small_components(mask: np.ndarray, min_area: int) -> np.ndarray:
    if min_area <= 1:
        return mask
    labels, n = ndi.label(mask)
    if n == 0:
        return mask
    keep = np.bincount(labels.ravel()) >= min_area
    keep[0] = False
    return keep[labels]


@takes_settings(ForegroundParams)
def extract_foreground(image: np.ndarray, **settings) -> np.ndarray:
    """Separate cells from background without any annotation.

    The CellMixer recipe: smoothing, Sobel gradient magnitude, smoothing, grey erosion and a
    threshold (see :func:`gradient_map`); then holes up to ``max_hole_area`` pixels are filled
    and objects under ``min_object_area`` pixels are dropped.

    Parameters
    ----------
    image : (H, W) array
        A grayscale image of any numeric type (brightfield, phase contrast or fluorescence).
    sigma_pre, sigma_post : float
        Gaussian smoothing (pixels) before and after the Sobel operator.
    erosion_size : int
        Side of the square structuring element of the grey erosion; larger values break more
        bridges between cells and shrink the halo that smoothing adds around them. 1 disables it.
    threshold : {'li', 'otsu', 'triangle', 'local'} or float
        Global automatic threshold, the adaptive ``'local'`` threshold (Gaussian-weighted mean over
        ``block_size`` pixels minus ``threshold_offset``), or a fixed value on the processed map.
    log_gradient : bool
        Threshold the logarithm of the gradient map (recommended for phase contrast).
    block_size : int
        Neighbourhood (odd, pixels) of the ``'local'`` threshold.
    threshold_offset : float
        Subtracted from the threshold: positive values grow the foreground.
    min_object_area, max_hole_area : int
        Area limits (pixels) for dropping specks and filling holes. 0 disables either step.

    Returns
    -------
    mask : (H, W) bool ndarray
        True on cells.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> image = rng.normal(100, 2, (128, 128)).astype(np.float32)
    >>> yy, xx = np.mgrid[:128, :128]
    >>> cell = (yy - 64) ** 2 + (xx - 64) ** 2 < 20 ** 2
    >>> image[cell] += rng.normal(0, 30, cell.sum())  # textured cell on a flat background
    >>> mask = extract_foreground(image)
    >>> iou = (mask & cell).sum() / (mask | cell).sum()
    >>> bool(iou > 0.8)
    True
    """
    p = ForegroundParams(**settings)
    image = np.asarray(image)
    if image.ndim != 2:
        raise ValueError(f"extract_foreground expects a 2-D image, got shape {image.shape}")
    if image.size == 0 or float(image.max()) == float(image.min()):
        return np.zeros(image.shape, bool)
    g = gradient_map(image, sigma_pre=p.sigma_pre, sigma_post=p.sigma_post, erosion_size=p.erosion_size,
                     log_gradient=p.log_gradient)
    if p.threshold == "local":
        block = int(p.block_size) | 1
        local_mean = ndi.gaussian_filter(g, (block - 1) / 6.0)
        mask = g > local_mean - p.threshold_offset
    elif isinstance(p.threshold, str):
        mask = g > _threshold_value(g, p.threshold) - p.threshold_offset
    else:
        mask = g > float(p.threshold) - p.threshold_offset
    if p.max_hole_area > 0:
        mask = ~_remove_small_components(~mask, p.max_hole_area + 1)
    return _remove_small_components(mask, p.min_object_area)
