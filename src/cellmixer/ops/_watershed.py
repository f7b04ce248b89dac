"""Touching cells of a foreground mask split into instances by a distance-transform watershed."""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi
from skimage.feature import peak_local_max
from skimage.segmentation import watershed

from .._errors import CellmixerError
from ..io import relabel_consecutive
from ._postprocess import InstanceSettings


def split_foreground(mask, *, min_distance: int = 5, sigma: float = 1.0, min_area: int = 0) -> np.ndarray:
    """Label the cells of a binary foreground mask, splitting touching cells at their necks.

    1. Euclidean distance of each foreground pixel to the background, smoothed (Gaussian
       ``sigma``) so that ragged outlines do not make spurious maxima.
    2. One marker per local maximum at least ``min_distance`` pixels from any larger one
       (``skimage.feature.peak_local_max``); a connected component without a maximum is one cell.
    3. Watershed of the negated distance from the markers, inside the mask: each cell grows
       from its centre until it meets a neighbour at the narrowest place between them.

    Parameters
    ----------
    mask : (H, W) bool or integer array
        Foreground (non-zero), e.g. ``probabilities[0] < 0.5`` of a cell-type model.
    min_distance : int
        Smallest distance between two cell centres, about a third of a typical cell diameter:
        larger values split less.
    sigma : float
        Smoothing of the distance map (pixels); 0 turns it off.
    min_area : int
        Drop cells smaller than this many pixels.

    Returns
    -------
    (H, W) int32 ndarray
        0 background, cells 1..n.

    Examples
    --------
    >>> yy, xx = np.mgrid[:30, :50]
    >>> two = ((yy - 15) ** 2 + (xx - 15) ** 2 < 100) | ((yy - 15) ** 2 + (xx - 33) ** 2 < 100)
    >>> int(ndi.label(two)[1]), int(split_foreground(two).max())          # one blob, two cells
    (1, 2)
    """

    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise CellmixerError(f"mask: expected one 2-D foreground mask, got shape {mask.shape}.")
    InstanceSettings(min_distance=min_distance, min_area=min_area)  # checked
    mask = mask != 0
    components, count = ndi.label(mask)
    if count == 0:
        return np.zeros(mask.shape, np.int32)
    distance = ndi.distance_transform_edt(mask)
    if sigma > 0:
        distance = ndi.gaussian_filter(distance, sigma) * mask
    peaks = peak_local_max(distance, min_distance=int(min_distance), labels=components, exclude_border=False)
    markers = np.zeros(mask.shape, np.int32)
    markers[tuple(peaks.T)] = np.arange(1, len(peaks) + 1)
    # A component whose distance map has no strict maximum (a plateau) is one cell by itself.
    unmarked = np.setdiff1d(np.arange(1, count + 1), components[markers > 0])
    if unmarked.size:
        lone = np.isin(components, unmarked)
        markers[lone] = components[lone] + len(peaks)
    labels = watershed(-distance, markers, mask=mask)
    if min_area > 1:
        areas = np.bincount(labels.ravel())
        small = areas < min_area
        small[0] = False
        labels = np.where(small[labels], 0, labels)
    return relabel_consecutive(labels).astype(np.int32)
