"""How an image is turned into network input, the same way in training and in prediction."""

from __future__ import annotations

import math

import numpy as np

from ..ops import ForegroundParams, background_stats, extract_foreground

# Statistics of larger images are taken on a sub-sampled copy: same values, bounded memory.
MAX_STATS_PIXELS = 16_000_000


def _foreground_of_large_image(image: np.ndarray, params: ForegroundParams) -> tuple[np.ndarray, np.ndarray]:
    """Foreground mask of a block-averaged copy, with the matching strided sample of ``image``."""
    f = math.ceil(math.sqrt(image.size / MAX_STATS_PIXELS))
    h, w = (image.shape[0] // f) * f, (image.shape[1] // f) * f
    small = image[:h, :w].reshape(h // f, f, w // f, f).mean(axis=(1, 3), dtype=np.float32)
    scaled = ForegroundParams(**{
        **params.to_dict(),
        "sigma_pre": params.sigma_pre / f, "sigma_post": params.sigma_post / f,
        "erosion_size": max(1, round(params.erosion_size / f)),
        "min_object_area": round(params.min_object_area / f**2), "max_hole_area": round(params.max_hole_area / f**2),
        "block_size": max(3, round(params.block_size / f)),
    })
    mask = extract_foreground(small, **scaled.to_dict())
    return mask, image[:h:f, :w:f].astype(np.float32)


def input_statistics(image: np.ndarray, normalization: dict) -> tuple[float | None, float | None]:
    """Offset and scale such that ``(image - offset) / scale`` is the network input.

    ``normalization`` is the model's setting: ``{"method": "background", "foreground": {...}}``
    (mean and standard deviation of the background found by the unsupervised foreground
    extraction, as CellMixer normalizes its mixtures) or ``{"method": "percentile", "low": 1,
    "high": 99.8}`` or ``{"method": "tile", "tile_size": 256}`` (each network input tile by its own
    mean and standard deviation: returns ``(None, None)``).
    """
    method = normalization.get("method", "background")
    if method == "background":
        params = ForegroundParams(**normalization.get("foreground", {}))
        if image.size > MAX_STATS_PIXELS:
            mask, sample = _foreground_of_large_image(image, params)
        else:
            sample = np.asarray(image, dtype=np.float32)
            mask = extract_foreground(sample, **params.to_dict())
        return background_stats(sample, mask)
    if method == "percentile":
        step = max(1, int(math.sqrt(image.size / 1_000_000)))
        lo, hi = np.percentile(image[::step, ::step], [normalization.get("low", 1.0), normalization.get("high", 99.8)])
        return float(lo), float(max(hi - lo, 1e-6))
    if method == "tile":
        return None, None
    raise ValueError(f"unknown normalization method {method!r}")
