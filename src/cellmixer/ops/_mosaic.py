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


def territory_mosaic(images, seeds, selected) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Compose same-shape images cell by cell: each pixel comes from the image whose selected seed is nearest.

    A seed is a cell's nucleus (or any labelled core of a cell). The territory of a selected seed
    is the set of pixels nearer to it than to any other selected seed, over all images (a Voronoi
    partition); the mosaic takes each territory from the seed's own image. Cells of different
    images therefore touch along the territory borders, as in a confluent co-culture, and every
    selected seed is kept whole (where two images' selected seeds overlap, the earlier image's wins).

    Parameters
    ----------
    images : sequence of (..., H, W) arrays
        The images (channels first, if any), already brought to one intensity scale.
    seeds : sequence of (H, W) integer label images
        Seeds of each image, 0 where none.
    selected : sequence of bool arrays
        ``selected[k][l]``: whether seed ``l`` of image ``k`` takes part (index 0 is ignored).

    Returns
    -------
    mosaic : (..., H, W) float32 ndarray
    source : (H, W) int ndarray
        Which image each pixel comes from (-1 where no seed is selected at all).
    owner : (H, W) int32 ndarray
        ``k * 2**20 + l`` of the seed whose territory each pixel is in (-1 where none): the image
        and the seed label together.

    Examples
    --------
    >>> a, b = np.zeros((1, 9)), np.ones((1, 9))
    >>> sa = np.array([[1, 0, 0, 0, 0, 0, 0, 0, 2]]); sb = np.array([[0, 0, 0, 0, 3, 0, 0, 0, 0]])
    >>> mosaic, source, owner = territory_mosaic([a, b], [sa, sb], [[0, 1, 0], [0, 0, 0, 1]])
    >>> mosaic.astype(int).tolist(), source.tolist()
    ([[0, 0, 0, 1, 1, 1, 1, 1, 1]], [[0, 0, 0, 1, 1, 1, 1, 1, 1]])
    """
    images = [np.asarray(im, np.float32) for im in images]
    shape = np.shape(seeds[0])
    if any(np.shape(s) != shape for s in seeds) or any(im.shape[-2:] != shape for im in images):
        raise ValueError("territory_mosaic needs images and seed label images of one shape")
    owner = np.full(shape, -1, np.int64)
    for k, (labels, chosen) in enumerate(zip(seeds, selected)):
        labels = np.asarray(labels)
        chosen = np.asarray(chosen, bool)
        keep = np.zeros(int(labels.max(initial=0)) + 1, bool)
        keep[:len(chosen)] = chosen[:len(keep)]
        keep[0] = False
        mine = keep[labels] & (owner < 0)
        owner[mine] = k * 2**20 + labels[mine]
    if (owner < 0).all():
        return images[0].copy(), np.full(shape, -1, int), owner.astype(np.int32)
    _, (rows, cols) = ndi.distance_transform_edt(owner < 0, return_indices=True)
    owner = owner[rows, cols]
    source = owner // 2**20
    stack = np.stack(images)
    mosaic = np.take_along_axis(stack, np.broadcast_to(source, stack.shape[1:])[None], axis=0)[0]
    return mosaic.astype(np.float32), source.astype(int), owner.astype(np.int32)
