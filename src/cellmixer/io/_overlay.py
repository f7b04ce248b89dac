"""A picture of the objects of a label image: their outlines in colour on the grey image."""

from __future__ import annotations

import numpy as np
from skimage.segmentation import find_boundaries

from .._errors import CellmixerError
from ._labels import as_label_image
from ._render import to_uint8

_GOLDEN = 0.6180339887498949


def instance_colors(ids) -> np.ndarray:
    """A bright RGB colour for each label: hues a golden-ratio step apart, so that labels k and
    k + 1 differ clearly and a label has the same colour in every picture.

    Examples
    --------
    >>> instance_colors([1, 2]).dtype, instance_colors([1, 2]).shape
    (dtype('uint8'), (2, 3))
    """
    hue = (np.asarray(ids, np.float64) * _GOLDEN) % 1.0
    saturation, value = 0.85, 1.0
    h6 = hue * 6.0
    sector = np.floor(h6).astype(int) % 6
    f = h6 - np.floor(h6)
    p = value * (1 - saturation)
    q = value * (1 - saturation * f)
    t = value * (1 - saturation * (1 - f))
    v = np.full_like(hue, value)
    p = np.full_like(hue, p)
    r = np.choose(sector, [v, q, p, p, t, v])
    g = np.choose(sector, [t, v, v, q, p, p])
    b = np.choose(sector, [p, p, t, v, v, q])
    return np.round(np.stack([r, g, b], axis=-1) * 255).astype(np.uint8)


def instance_overlay(image, labels) -> np.ndarray:
    """The image in grey (contrast-stretched, :func:`cellmixer.io.to_uint8`) with the outline of
    each object drawn in its own colour (:func:`instance_colors`).

    Outline pixels are the object's own pixels next to another label or the background
    (``skimage.segmentation.find_boundaries``, mode "inner"), so touching objects show both outlines.

    Parameters
    ----------
    image : (H, W) array
    labels : (H, W) array of non-negative integers
        0 background.

    Returns
    -------
    (H, W, 3) uint8 ndarray
        Grey everywhere but on outlines; just the grey image when there are no objects.

    Examples
    --------
    >>> labels = np.zeros((8, 8), int); labels[2:6, 2:6] = 1
    >>> rgb = instance_overlay(np.ones((8, 8)), labels)
    >>> rgb.shape, rgb.dtype, bool((rgb[2, 2] != rgb[2, 2, 0]).any()), bool((rgb[3, 3] == rgb[3, 3, 0]).all())
    ((8, 8, 3), dtype('uint8'), True, True)
    """

    labels = as_label_image(labels, "labels")
    image = np.asarray(image)
    if image.ndim != 2 or image.shape != labels.shape:
        raise CellmixerError(f"image: shape {image.shape} differs from the labels' {labels.shape}; "
                             "give the 2-D image the labels were made from.")
    gray = to_uint8(image)
    rgb = np.repeat(gray[..., None], 3, axis=-1)
    if labels.size == 0 or not labels.any():
        return rgb
    edges = find_boundaries(labels, mode="inner") & (labels > 0)
    ids, which = np.unique(labels[edges], return_inverse=True)
    rgb[edges] = instance_colors(ids)[which]
    return rgb
