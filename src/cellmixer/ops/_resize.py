"""Resizing images and label maps."""

from __future__ import annotations

import numpy as np
from skimage.transform import resize


def rescale_image(image: np.ndarray, factor: float, *, labels: bool = False) -> np.ndarray:
    """Resize (H, W), or each channel of (C, H, W), by ``factor``: anti-aliased linear interpolation for
    images, nearest neighbour for label maps."""
    if np.ndim(image) == 3:
        return np.stack([rescale_image(channel, factor, labels=labels) for channel in image])
    shape = tuple(max(1, round(n * factor)) for n in image.shape)
    if labels:
        return resize(image, shape, order=0, anti_aliasing=False, preserve_range=True).astype(image.dtype)
    return resize(np.asarray(image, dtype=np.float32), shape, order=1, anti_aliasing=factor < 1,
                  preserve_range=True).astype(np.float32)
