"""Mosaic mixtures: cells of one culture placed beside the cells of another, without blending."""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from ._mixup import normalize_by_background


def mosaic_pair(image1: np.ndarray, labels1: np.ndarray, image2: np.ndarray, labels2: np.ndarray, *,
                margin: int = 4, normalize: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Paste whole cells (connected foreground regions) of culture 2 into the free space of culture 1.

    A region of ``labels2`` is copied, pixels and label, together with a ring of ``margin``
    background pixels, when that ring does not touch a cell of ``labels1``; regions that would
    overlap stay out. Unlike :func:`mix_pair`, every pixel comes from exactly one image, so the
    result looks like a real co-culture with cells side by side.

    Parameters
    ----------
    image1, labels1, image2, labels2 : (H, W) arrays
        Two cultures and their class maps (0 background), same shape.
    margin : int
        Background ring (pixels) copied around each pasted cell and kept free of culture 1.
    normalize : bool
        Normalize both images by their background statistics first, so pasted pixels match.

    Returns
    -------
    image : (H, W) float32 ndarray
    labels : (H, W) ndarray

    Examples
    --------
    >>> import numpy as np
    >>> l1 = np.zeros((40, 40), int); l1[2:6, 2:6] = 1
    >>> l2 = np.zeros((40, 40), int); l2[30:34, 30:34] = 2; l2[3:5, 3:5] = 2
    >>> _, labels = mosaic_pair(np.zeros((40, 40)), l1, np.ones((40, 40)), l2, normalize=False)
    >>> sorted(np.unique(labels).tolist()), int((labels == 2).sum())   # the colliding cell stays out
    ([0, 1, 2], 16)
    """
    labels1 = np.asarray(labels1)
    labels2 = np.asarray(labels2)
    image1 = np.asarray(image1, dtype=np.float32)
    image2 = np.asarray(image2, dtype=np.float32)
    if normalize:
        image1 = normalize_by_background(image1, labels1 > 0)
        image2 = normalize_by_background(image2, labels2 > 0)
    image = image1.copy()
    labels = labels1.copy()
    regions, n = ndi.label(labels2 > 0)
    if n == 0:
        return image, labels
    # Footprints dilated by `margin` must not meet culture 1's cells dilated by `margin`.
    near = ndi.binary_dilation(labels1 > 0, np.ones((3, 3), bool), iterations=2 * margin) if margin else labels1 > 0
    collides = np.zeros(n + 1, bool)
    collides[np.unique(regions[near])] = True
    collides[0] = True
    keep = ~collides[regions]
    paste = ndi.binary_dilation(keep, np.ones((3, 3), bool), iterations=margin) if margin else keep
    paste &= ~((regions > 0) & ~keep)  # never cut into a cell that stays out
    image[paste] = image2[paste]
    labels[paste] = labels2[paste]
    return image, labels
