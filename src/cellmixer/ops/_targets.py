"""Three-class training targets from instance labels: background, nucleus, separation line."""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from .._errors import CellmixerError

BACKGROUND, NUCLEUS, SEPARATION = 0, 1, 2
IGNORE = 255


def three_class_targets(labels, *, ignore=None, line_radius: int = 1) -> np.ndarray:
    """Turn an instance label image into the 3-class target of Matuszewski & Ranefall.

    A pixel of an object is a *separation line* pixel when another object has a pixel in the
    (2 * ``line_radius`` + 1)-wide square around it. With the default radius 1 (the 3 x 3
    neighbourhood, diagonals included) the line is 2 pixels wide where two objects meet along a
    straight boundary, one pixel on each side; pixels next to background only stay nucleus.

    Parameters
    ----------
    labels : (H, W) array of non-negative integers
        0 background, one label per object.
    ignore : (H, W) bool array, optional
        Pixels not to be scored (e.g. the ``ignore`` mask of :func:`consensus_labels`); they get
        :data:`IGNORE` (255) whatever their class.
    line_radius : int
        Half-width of the neighbourhood that decides separation pixels (>= 1).

    Returns
    -------
    (H, W) uint8 ndarray
        0 background, 1 nucleus, 2 separation line, 255 ignored.

    Examples
    --------
    >>> labels = np.array([[1, 1, 1, 2, 2, 0, 3]])
    >>> three_class_targets(labels)
    array([[1, 1, 2, 2, 1, 0, 1]], dtype=uint8)
    >>> three_class_targets(labels, ignore=labels == 3)
    array([[  1,   1,   2,   2,   1,   0, 255]], dtype=uint8)
    """
    labels = np.asarray(labels)
    if labels.dtype == bool:
        labels = labels.astype(np.uint8)
    if labels.dtype.kind not in "iu":
        raise CellmixerError(f"labels: a label image must hold integers, not {labels.dtype}; "
                             "pass integer labels, 0 for background.")
    if labels.size and labels.min() < 0:
        raise CellmixerError("labels: negative values; use 0 for background and positive integers for objects.")
    if int(line_radius) < 1:
        raise CellmixerError(f"line_radius={line_radius}: must be at least 1.")
    size = 2 * int(line_radius) + 1
    target = (labels > 0).astype(np.uint8)
    if labels.size and labels.max() > 0:
        # Another object nearby shows as a larger maximum or, with background raised above every
        # label, a smaller minimum than the pixel's own label.
        top = int(labels.max()) + 1  # a float cval: int64's maximum would overflow
        high = ndi.maximum_filter(labels, size=size, mode="constant", cval=0)
        low = ndi.minimum_filter(np.where(labels > 0, labels, top).astype(np.int64), size=size,
                                 mode="constant", cval=top)
        target[(labels > 0) & ((high != labels) | (low != labels))] = SEPARATION
    if ignore is not None:
        ignore = np.asarray(ignore, bool)
        if ignore.shape != labels.shape:
            raise CellmixerError(f"ignore: shape {ignore.shape} differs from the labels' {labels.shape}; "
                                 "give a mask of the same image.")
        target[ignore] = IGNORE
    return target
