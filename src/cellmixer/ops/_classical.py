"""Classical nucleus labels: CellProfiler's IdentifyPrimaryObjects, and a consensus of several runs.

The steps and their constants follow CellProfiler 3 (the version of Matuszewski & Ranefall,
WSCG 2021), read from its sources:

* ``cellprofiler/modules/identifyprimaryobjects.py`` (module revision 13): hole filling, labelling,
  declumping (``separate_neighboring_objects``, ``smooth_image``, ``get_maxima``,
  ``calc_smoothing_filter_size``), size filter (``filter_on_size``), border filter;
* ``cellprofiler/modules/threshold.py``: the global threshold is computed on the *unsmoothed*
  image (``skimage.filters.threshold_li`` for "Minimum cross-entropy"), multiplied by the
  correction factor, clipped to the bounds, then compared with the Gaussian-smoothed image
  (``apply_threshold``);
* ``centrosome/cpmorphology.py``: ``fill_labeled_holes``, ``strel_disk``, ``binary_shrink``;
  ``is_local_maximum`` (CellProfiler's, also once in scikit-image's old watershed module).

Everything is done with numpy, scipy.ndimage and skimage.segmentation.watershed on whole arrays;
no Python loop runs over pixels or objects. Known differences from CellProfiler: a blob of tied
maxima becomes the blob pixel nearest its centroid (``binary_shrink`` keeps some other single
pixel); after declumping, a hole is filled only when it touches a single object (centrosome has
extra rules for holes between several objects); objects touching the image edge are kept unless
asked (``discard_border``; CellProfiler discards them by default).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi
from skimage.segmentation import watershed

from .._errors import CellmixerError
from .._settings import check_settings, check_value, field_of, setting
from ..io import relabel_consecutive

DECLUMP_METHODS = ("shape", "intensity", "none")
DIVIDING_LINE_METHODS = ("shape", "intensity", "none")
FILL_HOLES = ("thresholding", "declumping", "never")
# The four configurations of the paper, best first (Table 2: 0.504, 0.481, 0.464, 0.251).
CLASSICAL_CONFIGURATIONS = (("shape", "intensity"), ("intensity", "shape"), ("shape", "shape"),
                            ("intensity", "intensity"))
# Method names of the command line: "<declump>/<dividing lines>", or the consensus of the paper's
# three best configurations.
CLASSICAL_METHODS = tuple(f"{d}/{w}" for d, w in CLASSICAL_CONFIGURATIONS) + ("consensus",)

_EIGHT = np.ones((3, 3), bool)
_FOUR = ndi.generate_binary_structure(2, 1)


# ------------------------------------------------------------------------------------ threshold
def minimum_cross_entropy_threshold(values) -> float:
    """Li's minimum cross-entropy threshold, computed as ``skimage.filters.threshold_li``.

    Same iteration (start at the mean, stop when the change is at most half the smallest gap
    between two intensities), run on the histogram of the distinct values instead of on every
    pixel: a few milliseconds for a 16-bit image.

    Parameters
    ----------
    values : array_like of finite numbers

    Returns
    -------
    float
        The threshold; the value itself for a constant input, 0.0 for an empty one.

    Examples
    --------
    >>> import skimage.filters
    >>> x = np.concatenate([np.full(900, 100.0), np.full(100, 900.0)]) + np.arange(1000) % 7
    >>> round(minimum_cross_entropy_threshold(x), 6) == round(float(skimage.filters.threshold_li(x)), 6)
    True
    """
    values = np.asarray(values)
    v = values.astype(np.float64).ravel()
    if v.size == 0:
        return 0.0
    low, high = float(v.min()), float(v.max())
    if low == high:
        return low
    shifted = v - low
    if high - low <= (1 << 20) and np.array_equal(shifted, np.floor(shifted)):
        counts = np.bincount(shifted.astype(np.int64))
        levels = np.flatnonzero(counts).astype(np.float64)
        counts = counts[counts > 0].astype(np.float64)
    else:
        levels, counts = np.unique(shifted, return_counts=True)
        counts = counts.astype(np.float64)
    # scikit-image's tolerance: 0.5 for integer types, half the smallest gap for floats.
    tolerance = 0.5 if values.dtype.kind in "iub" else float(np.min(np.diff(levels))) / 2
    cum_n = np.cumsum(counts)
    cum_s = np.cumsum(counts * levels)
    total_n, total_s = cum_n[-1], cum_s[-1]
    t_next, t_curr = total_s / total_n, -2 * tolerance
    while abs(t_next - t_curr) > tolerance:
        t_curr = t_next
        k = np.searchsorted(levels, t_curr, side="right")  # levels[:k] <= t: background
        if k == 0 or k == len(levels):
            break
        mean_back = cum_s[k - 1] / cum_n[k - 1]
        mean_fore = (total_s - cum_s[k - 1]) / (total_n - cum_n[k - 1])
        if mean_back == 0.0:
            break
        t_next = (mean_back - mean_fore) / (np.log(mean_back) - np.log(mean_fore))
    return float(t_next + low)


def _check_image(image) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim != 2:
        raise CellmixerError(f"image: expected one 2-D single-channel image, got shape {image.shape}; "
                             "pick a channel first (e.g. read_image(path, channel=0)).")
    if image.dtype == bool:
        image = image.astype(np.uint8)
    if not np.issubdtype(image.dtype, np.number) or np.iscomplexobj(image):
        raise CellmixerError(f"image: pixel type {image.dtype} is not supported; pass integer or float intensities.")
    if image.dtype.kind == "f" and not np.isfinite(image).all():
        raise CellmixerError("image: contains NaN or infinite values; replace them before labelling.")
    return image


def _intensity_scale(image: np.ndarray, intensity_scale) -> float:
    """The intensity that CellProfiler's 0-1 scale maps to 1 (it divides 16-bit files by 65535)."""
    if intensity_scale is not None:
        return float(intensity_scale)
    if image.dtype.kind in "iu":
        return float(np.iinfo(image.dtype).max)
    top = float(image.max() - min(image.min(), 0)) if image.size else 1.0
    for scale in (1.0, 255.0, 65535.0):
        if top <= scale:
            return scale
    return top


def _check_threshold_options(smoothing_scale, bounds, intensity_scale) -> None:
    if intensity_scale is not None and not intensity_scale > 0:
        raise CellmixerError(f"intensity_scale={intensity_scale}: must be positive (e.g. 65535 for 16-bit images).")
    if not smoothing_scale >= 0:
        raise CellmixerError(f"threshold_smoothing_scale={smoothing_scale}: must be >= 0 (0 = no smoothing).")
    if bounds is not None and (len(bounds) != 2 or not bounds[0] <= bounds[1]):
        raise CellmixerError(f"threshold_bounds={bounds!r}: give (lower, upper) with lower <= upper, e.g. (0, 1).")


def cellprofiler_threshold(image, *, smoothing_scale: float = 1.3488, correction_factor: float = 1.0,
                           bounds=(0.0, 1.0), intensity_scale: float | None = None) -> tuple[float, np.ndarray]:
    """CellProfiler's global "Minimum cross-entropy" threshold and the foreground it gives.

    As in CellProfiler's Threshold module: the Li threshold of the unsmoothed intensities, on
    CellProfiler's 0-1 scale, times ``correction_factor``, clipped to ``bounds``; the foreground
    is where the Gaussian-smoothed image is >= that threshold.

    Parameters
    ----------
    image : (H, W) array
    smoothing_scale : float
        CellProfiler's "Threshold smoothing scale"; the Gaussian's sigma is
        ``smoothing_scale / 0.6744 / 2`` (CellProfiler ``threshold.py``, ``apply_threshold``: "1/2
        of the smoothed intensity is contributed from within the smoothing diameter"), so the
        default 1.3488 is sigma 1. 0 means no smoothing. Smoothing is normalised at the image
        edge (CellProfiler's ``smooth_with_function_and_mask``).
    correction_factor : float
        Multiplies the threshold ("Threshold correction factor").
    bounds : (float, float) or None
        "Lower and upper bounds on threshold", on the 0-1 scale; None for none.
    intensity_scale : float, optional
        Intensity that is 1.0 on the 0-1 scale. By default the dtype's maximum for integer images
        (CellProfiler divides a 16-bit file by 65535) and for float images the first of 1, 255,
        65535 that is >= the image maximum (``read_image`` keeps a 16-bit file's values). Images
        with negative values are first shifted so that their minimum is 0.

    Returns
    -------
    threshold : float
        In the image's own units.
    foreground : (H, W) bool ndarray

    Examples
    --------
    >>> img = np.zeros((20, 20), np.uint16); img[5:15, 5:15] = 1000
    >>> t, fg = cellprofiler_threshold(img)
    >>> round(t, 3), int(fg.sum())   # smoothing (sigma 1) also takes in a ring of the edge
    (250.0, 132)
    >>> cellprofiler_threshold(img, bounds=(0.5, 1.0))[0]   # 0.5 * 65535: nothing is that bright
    32767.5
    """
    image = _check_image(image)
    _check_threshold_options(smoothing_scale, bounds, intensity_scale)
    scale = _intensity_scale(image, intensity_scale)
    x, offset = _unit_scale(image, scale)
    threshold = minimum_cross_entropy_threshold(x) * correction_factor
    if bounds is not None:
        threshold = min(max(threshold, float(bounds[0])), float(bounds[1]))
    if smoothing_scale > 0:
        sigma = smoothing_scale / 0.6744 / 2.0
        blurred = ndi.gaussian_filter(x, sigma, mode="constant", cval=0.0)
        # Dividing by the smoothed all-ones image undoes the darkening by the zero padding.
        rows = ndi.gaussian_filter1d(np.ones(x.shape[0]), sigma, mode="constant", cval=0.0)
        cols = ndi.gaussian_filter1d(np.ones(x.shape[1]), sigma, mode="constant", cval=0.0)
        x = blurred / np.outer(rows, cols)
    return threshold * scale + offset, x >= threshold


def _unit_scale(image: np.ndarray, scale: float) -> tuple[np.ndarray, float]:
    """Intensities on CellProfiler's 0-1 scale; negative images are shifted up to 0 first, since
    CellProfiler's intensities never are (its seeds must be > 0)."""
    offset = min(float(image.min()), 0.0) if image.size else 0.0
    return (image.astype(np.float64) - offset) / scale, offset


# --------------------------------------------------------------------------- morphology helpers
def _strel_disk(radius: float) -> np.ndarray:
    """centrosome's ``strel_disk``: offsets with i^2 + j^2 <= radius^2 in a (2r+1)^2 square."""
    r = int(radius)
    i, j = np.mgrid[-r:r + 1, -r:r + 1]
    return i * i + j * j <= radius * radius


def _edge_mask(shape) -> np.ndarray:
    edge = np.zeros(shape, bool)
    edge[0, :] = edge[-1, :] = edge[:, 0] = edge[:, -1] = True
    return edge


def _fill_binary_holes(binary: np.ndarray, max_area: float | None) -> np.ndarray:
    """Fill background regions (4-connected) that do not reach the edge, if smaller than max_area."""
    holes, n = ndi.label(~binary, _FOUR)
    if n == 0:
        return binary
    fill = np.ones(n + 1, bool)
    fill[0] = False
    fill[np.unique(holes[_edge_mask(binary.shape)])] = False
    if max_area is not None:
        fill &= np.bincount(holes.ravel(), minlength=n + 1) < max_area
    return binary | fill[holes]


def _fill_label_holes(labels: np.ndarray) -> np.ndarray:
    """Give each background region that does not reach the edge and touches (4-connected) only
    one object that object's label (``fill_labeled_holes`` without a size limit)."""
    holes, n = ndi.label(labels == 0, _FOUR)
    if n == 0 or labels.max() == 0:
        return labels
    big = int(labels.max()) + 1  # above every label; scipy takes cval as a float
    high = ndi.maximum_filter(labels, footprint=_FOUR, mode="constant", cval=0)
    low = ndi.minimum_filter(np.where(labels > 0, labels, big).astype(np.int64), footprint=_FOUR,
                             mode="constant", cval=big)
    index = np.arange(1, n + 1)
    hi = np.asarray(ndi.maximum(high, holes, index))
    lo = np.asarray(ndi.minimum(low, holes, index))
    fill = np.zeros(n + 1, labels.dtype)
    ok = (hi > 0) & (hi == lo)
    fill[1:][ok] = hi[ok]
    fill[np.unique(holes[_edge_mask(labels.shape)])] = 0
    return np.where(holes > 0, fill[holes], labels)


def _local_maxima(values: np.ndarray, labels: np.ndarray, footprint: np.ndarray) -> np.ndarray:
    """CellProfiler's ``is_local_maximum``: labelled pixels with no strictly larger value of the
    same label within ``footprint`` (ties all count as maxima)."""
    h, w = values.shape
    r = footprint.shape[0] // 2
    fg = labels > 0
    if r == 0 or not fg.any():
        return fg
    pv = np.pad(values, r, mode="constant", constant_values=-np.inf)
    pl = np.pad(labels, r, mode="constant", constant_values=0)
    offsets = np.argwhere(footprint) - r
    offsets = offsets[(offsets != 0).any(axis=1)]
    near = np.abs(offsets).max(axis=1) <= 1
    # The 3x3 part of the footprint, with whole-array comparisons, leaves few candidates ...
    cand = fg.copy()
    for dy, dx in offsets[near]:
        same = pl[r + dy:r + dy + h, r + dx:r + dx + w] == labels
        cand &= ~(same & (pv[r + dy:r + dy + h, r + dx:r + dx + w] > values))
    far = offsets[~near]
    idx = np.flatnonzero(cand)
    if len(far) == 0 or len(idx) == 0:
        return cand
    # ... whose remaining neighbours are gathered in blocks.
    wp = w + 2 * r
    centre = (idx // w + r) * wp + idx % w + r
    shifts = far[:, 0] * wp + far[:, 1]
    pv, pl = pv.ravel(), pl.ravel()
    keep = np.empty(len(idx), bool)
    for start in range(0, len(idx), 4096):
        c = centre[start:start + 4096]
        near_idx = c[:, None] + shifts[None, :]
        beaten = (pl[near_idx] == pl[c][:, None]) & (pv[near_idx] > pv[c][:, None])
        keep[start:start + 4096] = ~beaten.any(axis=1)
    out = np.zeros(h * w, bool)
    out[idx[keep]] = True
    return out.reshape(h, w)


def _shrink_to_points(maxima: np.ndarray) -> np.ndarray:
    """One marker per 8-connected blob of maxima: the blob's pixel nearest its centroid, where
    CellProfiler's ``binary_shrink`` erodes the blob to some single pixel."""
    blobs, n = ndi.label(maxima, _EIGHT)
    markers = np.zeros(maxima.shape, np.int32)
    if n == 0:
        return markers
    idx = np.flatnonzero(blobs)
    lab = blobs.ravel()[idx]
    y, x = np.divmod(idx, maxima.shape[1])
    size = np.bincount(lab)
    cy = np.bincount(lab, y)[lab] / size[lab]
    cx = np.bincount(lab, x)[lab] / size[lab]
    order = np.lexsort((idx, (y - cy) ** 2 + (x - cx) ** 2, lab))
    first = order[np.r_[True, lab[order][1:] != lab[order][:-1]]]
    markers.ravel()[idx[first]] = lab[first]
    return markers


def _smooth_for_declumping(x: np.ndarray, filter_size: float) -> np.ndarray:
    """``smooth_image``: Gaussian of sigma filter_size / 2.35 cut at filter_size / 2, edge-normalised."""
    if filter_size == 0:
        return x
    sigma = filter_size / 2.35
    half = max(int(filter_size / 2.0), 1)
    kernel = np.exp(-0.5 * np.arange(-half, half + 1) ** 2 / sigma ** 2)

    def smooth(a):
        return ndi.convolve1d(ndi.convolve1d(a, kernel, axis=0, mode="constant"), kernel, axis=-1, mode="constant")

    rows = ndi.convolve1d(np.ones(x.shape[0]), kernel, mode="constant")
    cols = ndi.convolve1d(np.ones(x.shape[1]), kernel, mode="constant")
    return smooth(x) / np.outer(rows, cols)


def _maxima(values: np.ndarray, labels: np.ndarray, footprint: np.ndarray, factor: float) -> np.ndarray:
    """``get_maxima``: local maxima, found on an image resized by ``factor`` when it is < 1."""
    if factor < 1.0:
        shape = np.array(values.shape) * factor
        ij = np.mgrid[0:shape[0], 0:shape[1]].astype(float) / factor
        small_values = ndi.map_coordinates(values, ij)
        small_labels = ndi.map_coordinates(labels, ij, order=0).astype(labels.dtype)
    else:
        small_values, small_labels = values, labels
    maxima = _local_maxima(small_values, small_labels, footprint)
    maxima &= small_values > 0
    if factor < 1.0:
        inverse = values.shape[0] / maxima.shape[0]
        ij = np.mgrid[0:values.shape[0], 0:values.shape[1]].astype(float) / inverse
        maxima = ndi.map_coordinates(maxima.astype(float), ij) > 0.5
    return _shrink_to_points(maxima)


def _diameter_need(diameters) -> str | None:
    ok = (isinstance(diameters, (tuple, list)) and len(diameters) == 2
          and all(isinstance(d, (int, float)) and not isinstance(d, bool) and math.isfinite(d) for d in diameters))
    if not ok or not 1 <= diameters[0] <= diameters[1] <= 10_000:
        return "give the smallest and the largest diameter in pixels, 1 <= MIN <= MAX, e.g. 10 50"
    return None


@dataclass(frozen=True)
class ClassicalSettings:
    """What the commands that label nuclei classically let the user choose: the one home of these
    defaults (functions refer to them as ``ClassicalSettings.method``, ...)."""

    method: str = setting("shape/intensity", "declumping/dividing lines, or the consensus of the 3 best",
                          choices=CLASSICAL_METHODS)
    diameter_range: tuple = setting((10, 50), "typical nucleus diameter range in pixels", flag="--diameter",
                                    metavar=("MIN", "MAX"), check=_diameter_need)

    def __post_init__(self):
        check_settings(self)


# ----------------------------------------------------------------------------------- the module
def identify_primary_objects(image, *, diameter_range=ClassicalSettings.diameter_range, declump: str = "shape",
                             dividing_lines: str = "intensity", threshold_smoothing_scale: float = 1.3488,
                             threshold_correction_factor: float = 1.0, threshold_bounds=(0.0, 1.0),
                             intensity_scale: float | None = None, smoothing_filter_size: float | None = None,
                             maxima_distance: float | None = None, low_resolution_maxima: bool = True,
                             fill_holes: str = "thresholding", discard_size: bool = True,
                             discard_border: bool = False) -> np.ndarray:
    """Label bright nuclei as CellProfiler's IdentifyPrimaryObjects does (global threshold).

    1. Threshold (:func:`cellprofiler_threshold`): global minimum cross-entropy (Li).
    2. Fill background holes smaller than ``max_diameter ** 2`` pixels (``fill_holes`` "thresholding").
    3. Label the foreground (8-connected).
    4. Declump: seeds are the local maxima of the distance transform of the foreground
       (``declump="shape"``, with CellProfiler's uniform noise in [0, 0.001) to make maxima
       unique) or of the image smoothed by a Gaussian (``"intensity"``); a maximum must be the
       largest value of its object within a disk of radius ``maxima_distance - 0.5``, and a blob of
       tied maxima is one seed. The objects are divided by a watershed from the seeds on the
       inverted distance transform (``dividing_lines="shape"``) or the inverted unsmoothed image
       (``"intensity"``), 8-connected, inside the foreground. "none" for either skips it.
    5. Optionally discard objects touching the image edge (``discard_border``).
    6. Discard objects whose area is outside ``pi d^2 / 4`` for the two diameters: CellProfiler's
       diameter is the equivalent diameter, of the disk of the object's area.
    7. Fill holes inside each object (unless ``fill_holes="never"``), number objects 1..n.

    Parameters
    ----------
    image : (H, W) array
        Bright nuclei on a dark background, any integer or float type.
    diameter_range : (int, int)
        "Typical diameter of objects, in pixel units (Min,Max)"; the paper uses 10-50.
    declump, dividing_lines : {"shape", "intensity", "none"}
        "Method to distinguish clumped objects" and "Method to draw dividing lines between
        clumped objects". The paper's configurations are :data:`CLASSICAL_CONFIGURATIONS`.
    threshold_smoothing_scale, threshold_correction_factor, threshold_bounds, intensity_scale
        See :func:`cellprofiler_threshold`.
    smoothing_filter_size : float, optional
        "Size of smoothing filter" for intensity seeds; CellProfiler's automatic value is
        ``2.35 * min_diameter / 3.5`` (sigma ``min_diameter / 3.5``). 0 for no smoothing.
    maxima_distance : float, optional
        "Suppress local maxima that are closer than this minimum allowed distance"; automatic:
        ``min_diameter / 1.5``.
    low_resolution_maxima : bool
        "Speed up by using lower-resolution image to find local maxima?" (CellProfiler's default
        yes). Only has an effect when the minimum diameter is above 10: maxima are then found on
        the image resized by ``10 / min_diameter``, with distance 7 there when automatic.
    fill_holes : {"thresholding", "declumping", "never"}
        CellProfiler's "After both thresholding and declumping" (default), "After declumping
        only", "Never".
    discard_size : bool
        "Discard objects outside the diameter range?"
    discard_border : bool
        "Discard objects touching the border of the image?" CellProfiler's default is yes; it is
        off here because training labels should keep nuclei cut by the edge.

    Returns
    -------
    (H, W) int32 ndarray
        0 background, objects 1..n. An image without contrast gives no objects.

    Examples
    --------
    >>> yy, xx = np.mgrid[:60, :80]
    >>> img = np.zeros((60, 80))
    >>> for cy, cx in [(20, 20), (20, 34), (45, 60)]:     # two touching nuclei and a single one
    ...     img = np.maximum(img, 1.0 - ((yy - cy) ** 2 + (xx - cx) ** 2) / 8.0 ** 2)
    >>> img = (np.clip(img, 0, None) * 40000 + 1000).astype(np.uint16)
    >>> labels = identify_primary_objects(img, diameter_range=(8, 30))
    >>> labels.dtype, int(labels.max())
    (dtype('int32'), 3)
    """
    image = _check_image(image)
    check_value(field_of(ClassicalSettings, "diameter_range"), diameter_range)
    dmin, dmax = (float(d) for d in diameter_range)
    if declump not in DECLUMP_METHODS:
        raise CellmixerError(f"declump={declump!r}: choose one of {', '.join(DECLUMP_METHODS)}.")
    if dividing_lines not in DIVIDING_LINE_METHODS:
        raise CellmixerError(f"dividing_lines={dividing_lines!r}: choose one of {', '.join(DIVIDING_LINE_METHODS)}.")
    if fill_holes not in FILL_HOLES:
        raise CellmixerError(f"fill_holes={fill_holes!r}: choose one of {', '.join(FILL_HOLES)}.")
    if smoothing_filter_size is not None and smoothing_filter_size < 0:
        raise CellmixerError(f"smoothing_filter_size={smoothing_filter_size}: must be >= 0 (0 = no smoothing).")
    if maxima_distance is not None and maxima_distance < 0:
        raise CellmixerError(f"maxima_distance={maxima_distance}: must be >= 0.")
    _check_threshold_options(threshold_smoothing_scale, threshold_bounds, intensity_scale)

    empty = np.zeros(image.shape, np.int32)
    if image.size == 0 or image.min() == image.max():
        return empty
    scale = _intensity_scale(image, intensity_scale)
    _, binary = cellprofiler_threshold(image, smoothing_scale=threshold_smoothing_scale,
                                       correction_factor=threshold_correction_factor, bounds=threshold_bounds,
                                       intensity_scale=scale)
    if fill_holes == "thresholding":
        binary = _fill_binary_holes(binary, dmax * dmax)
    labels, count = ndi.label(binary, _EIGHT)
    if count == 0:
        return empty

    if declump != "none" and dividing_lines != "none":
        x = _unit_scale(image, scale)[0]
        if dmin > 10 and low_resolution_maxima:
            factor = 10.0 / dmin
            suppression = 7.0 if maxima_distance is None else maxima_distance * factor + 0.5
        else:
            factor = 1.0
            suppression = dmin / 1.5 if maxima_distance is None else float(maxima_distance)
        footprint = _strel_disk(max(1.0, suppression - 0.5))
        distance = None
        if declump == "intensity":
            filter_size = 2.35 * dmin / 3.5 if smoothing_filter_size is None else float(smoothing_filter_size)
            markers = _maxima(_smooth_for_declumping(x, filter_size), labels, footprint, factor)
        else:
            foreground = _fill_label_holes(labels) > 0 if fill_holes == "never" else labels > 0
            distance = ndi.distance_transform_edt(foreground)
            distance += np.random.default_rng(0).uniform(0, 0.001, distance.shape)
            markers = _maxima(distance, labels, footprint, factor)
        if dividing_lines == "intensity":
            relief = 1.0 - x
        else:
            if distance is None:
                distance = ndi.distance_transform_edt(labels > 0)
            relief = distance.max() - distance
        labels = watershed(relief, markers, connectivity=2, mask=labels > 0)

    if discard_border:
        touching = np.unique(labels[_edge_mask(labels.shape)])
        labels = np.where(np.isin(labels, touching[touching > 0]), 0, labels)
    if discard_size:
        areas = np.bincount(labels.ravel())
        areas[0] = 0
        bad = (areas < np.pi * dmin * dmin / 4) | (areas > np.pi * dmax * dmax / 4)
        bad[0] = False
        labels = np.where(bad[labels], 0, labels)
    if fill_holes != "never":
        labels = _fill_label_holes(labels)
    return relabel_consecutive(labels)


# ------------------------------------------------------------------------------------ consensus
def consensus_labels(label_images, *, reference: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Keep the clusters on which several labellings agree about the number of objects.

    A *cluster* is an 8-connected component of the union of the foregrounds of all label images.
    In each cluster every labelling has some number of objects (objects with at least one pixel
    in it). Where all labellings have the same number, the objects of ``label_images[reference]``
    are kept; elsewhere the whole cluster (every pixel that any labelling calls foreground) is
    marked to be ignored, as in Matuszewski & Ranefall's consensus of their three best
    configurations ("masking out those cell clusters that did not get the same number of
    objects after the separation").

    Parameters
    ----------
    label_images : sequence of (H, W) integer arrays
        At least one; e.g. :func:`identify_primary_objects` with several configurations.
    reference : int
        Which labelling gives the objects of the agreed clusters (the paper's best, Shape/Intensity,
        comes first in :data:`CLASSICAL_CONFIGURATIONS`).

    Returns
    -------
    labels : (H, W) int32 ndarray
        Objects 1..n of the agreed clusters; 0 elsewhere.
    ignore : (H, W) bool ndarray
        The clusters where the labellings disagree.

    Examples
    --------
    >>> a = np.array([[1, 1, 0, 2, 3]])     # cluster 1: one object; cluster 2: two objects
    >>> b = np.array([[5, 5, 0, 4, 4]])     # cluster 1: one object; cluster 2: one object
    >>> labels, ignore = consensus_labels([a, b])
    >>> labels, ignore.astype(int)
    (array([[1, 1, 0, 0, 0]], dtype=int32), array([[0, 0, 0, 1, 1]]))
    """
    images = [np.asarray(im) for im in label_images]
    if not images:
        raise CellmixerError("consensus_labels: give at least one label image.")
    shape = images[0].shape
    for i, im in enumerate(images):
        if im.shape != shape or im.ndim != 2:
            raise CellmixerError(f"label_images[{i}]: shape {im.shape} differs from {shape}; "
                                 "give label images of the same 2-D image.")
        if im.dtype.kind not in "iub":
            raise CellmixerError(f"label_images[{i}]: a label image must hold integers, not {im.dtype}.")
    if not -len(images) <= reference < len(images):
        raise CellmixerError(f"reference={reference}: there are only {len(images)} label images.")
    union = np.zeros(shape, bool)
    for im in images:
        union |= im > 0
    clusters, n = ndi.label(union, _EIGHT)
    if n == 0:
        return np.zeros(shape, np.int32), np.zeros(shape, bool)
    counts = []
    for im in images:
        # Distinct (cluster, object) pairs, counted per cluster.
        inside = im > 0
        pairs = np.unique(clusters[inside].astype(np.int64) * (int(im.max()) + 1) + im[inside])
        counts.append(np.bincount(pairs // (int(im.max()) + 1), minlength=n + 1))
    counts = np.array(counts)
    disagree = (counts != counts[0]).any(axis=0)
    disagree[0] = False
    ignore = disagree[clusters]
    labels = np.where(ignore, 0, images[reference]).astype(np.int64)
    return relabel_consecutive(labels), ignore




def classical_labels(image, *, method: str = ClassicalSettings.method, **options) -> tuple[np.ndarray, np.ndarray]:
    """Nucleus labels of one image by a named classical configuration, with the pixels to ignore.

    Parameters
    ----------
    image : (H, W) array
    method : str
        One of :data:`CLASSICAL_METHODS`: ``"<declump>/<dividing lines>"`` for
        :func:`identify_primary_objects`, or ``"consensus"``: the three best configurations
        combined by :func:`consensus_labels` (clusters where they disagree are ignored).
    **options
        Further options of :func:`identify_primary_objects` (e.g. ``diameter_range``).

    Returns
    -------
    labels : (H, W) int32 ndarray
    ignore : (H, W) bool ndarray
        All False except for the consensus.

    Examples
    --------
    >>> image = np.zeros((40, 40)); image[10:22, 10:22] = 1.0
    >>> labels, ignore = classical_labels(image, method="consensus")
    >>> int(labels.max()), bool(ignore.any())
    (1, False)
    """
    if method not in CLASSICAL_METHODS:
        raise CellmixerError(f"--method {method}: unknown; choose one of {', '.join(CLASSICAL_METHODS)}.")
    if method == "consensus":
        runs = [identify_primary_objects(image, declump=d, dividing_lines=w, **options)
                for d, w in CLASSICAL_CONFIGURATIONS[:3]]
        return consensus_labels(runs)
    declump, lines = method.split("/")
    labels = identify_primary_objects(image, declump=declump, dividing_lines=lines, **options)
    return labels.astype(np.int32, copy=False), np.zeros(labels.shape, bool)
