"""Classical baselines that grow cells from nucleus seeds (CellProfiler's IdentifySecondaryObjects kind)."""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi
from skimage.filters import sobel
from skimage.segmentation import expand_labels, watershed

from ..._errors import CellmixerError
from ...io import as_label_image
from ...ops import extract_foreground


def _check_seeds(image_shape, seeds) -> np.ndarray:
    seeds = as_label_image(seeds, "seeds")
    if seeds.shape != tuple(image_shape):
        raise CellmixerError(f"seeds: shape {seeds.shape} differs from the image's {tuple(image_shape)}; give the "
                             "nuclei of the same field.")
    return seeds


def seeded_watershed(image, seeds, *, mask=None, sigma: float = 2.0) -> np.ndarray:
    """Marker-controlled watershed: each seed (e.g. a nucleus) floods the smoothed gradient
    magnitude of the image, inside ``mask`` (default: the unsupervised foreground of
    :func:`cellmixer.ops.extract_foreground`, plus the seeds).

    Returns an int32 label image with the seeds' labels.
    """
    image = np.asarray(image, np.float32)
    seeds = _check_seeds(image.shape, seeds)
    if mask is None:
        mask = extract_foreground(image)
    mask = np.asarray(mask, bool) | (seeds > 0)
    elevation = sobel(ndi.gaussian_filter(image, sigma)) if sigma > 0 else sobel(image)
    return watershed(elevation, seeds, mask=mask).astype(np.int32)


def grow_seeds(seeds, distance: float) -> np.ndarray:
    """Each seed grown by up to ``distance`` pixels without overlapping its neighbours
    (``skimage.segmentation.expand_labels``; CellProfiler's "Distance - N").

    >>> seeds = np.zeros((1, 9), int); seeds[0, 2] = 1; seeds[0, 5] = 2
    >>> grow_seeds(seeds, 2).tolist()
    [[1, 1, 1, 1, 2, 2, 2, 2, 0]]
    """

    if distance < 0:
        raise CellmixerError(f"distance {distance}: must be 0 or more pixels.")
    return expand_labels(as_label_image(seeds, "seeds"), distance).astype(np.int32)
