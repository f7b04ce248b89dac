"""How an image is turned into network input, the same way in training and in prediction."""

from __future__ import annotations

import math

import numpy as np

from .._lazy import lazy_import
from ..ops import ForegroundParams, background_stats, extract_foreground, normalize_by_flat_field

da = lazy_import("dask.array")

# Statistics of larger images are taken on a sub-sampled copy: same values, bounded memory.
MAX_STATS_PIXELS = 16_000_000


def _foreground_of_large_image(image, params: ForegroundParams) -> tuple[np.ndarray, np.ndarray]:
    """Foreground mask of a block-averaged copy, with the matching strided sample of ``image`` (numpy
    or a lazy dask array, read chunk by chunk)."""
    f = math.ceil(math.sqrt(image.size / MAX_STATS_PIXELS))
    h, w = (image.shape[0] // f) * f, (image.shape[1] // f) * f
    if isinstance(image, da.Array):
        part = image[:h, :w].astype(np.float32)
        part = part.rechunk(tuple(max(f, c // f * f) for c in (part.chunksize[0], part.chunksize[1])))
        small = da.coarsen(np.mean, part, {0: f, 1: f}).compute()
        return extract_foreground(small, **_scaled(params, f).to_dict()), np.asarray(image[:h:f, :w:f], np.float32)
    small = image[:h, :w].reshape(h // f, f, w // f, f).mean(axis=(1, 3), dtype=np.float32)
    mask = extract_foreground(small, **_scaled(params, f).to_dict())
    return mask, image[:h:f, :w:f].astype(np.float32)


def _scaled(params: ForegroundParams, f: int) -> ForegroundParams:
    """The foreground settings for an image block-averaged by ``f``."""
    return ForegroundParams(**{
        **params.to_dict(),
        "sigma_pre": params.sigma_pre / f, "sigma_post": params.sigma_post / f,
        "erosion_size": max(1, round(params.erosion_size / f)),
        "min_object_area": round(params.min_object_area / f**2), "max_hole_area": round(params.max_hole_area / f**2),
        "block_size": max(3, round(params.block_size / f)),
    })


def input_statistics(image, normalization: dict) -> tuple[float | None, float | None]:
    """Offset and scale such that ``(image - offset) / scale`` is the network input.

    ``image`` is a numpy array or a lazy dask array (a large image, read once, chunk by chunk; the
    statistics of images above 16 Mpx come from a block-averaged copy, for both).

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
            sample = np.asarray(image, dtype=np.float32)  # a dask array of this size is read whole
            mask = extract_foreground(sample, **params.to_dict())
        return background_stats(sample, mask)
    if method == "flatfield":  # the input is normalized pixel by pixel (flat_field_input) before the tiles
        return 0.0, 1.0
    if method == "percentile":
        step = max(1, int(math.sqrt(image.size / 1_000_000)))
        lo, hi = np.percentile(np.asarray(image[::step, ::step]),
                               [normalization.get("low", 1.0), normalization.get("high", 99.8)])
        return float(lo), float(max(hi - lo, 1e-6))
    if method == "tile":
        return None, None
    raise ValueError(f"unknown normalization method {method!r}")


def flat_field_input(image, normalization: dict) -> np.ndarray:
    """Network input of a ``{"method": "flatfield", "foreground": {...}, "sigma": 64}`` model: the image
    divided by its background level (a smooth surface through the unsupervised background), centred
    and scaled by its background's mean and spread (:func:`cellmixer.ops.normalize_by_flat_field`)."""
    params = ForegroundParams(**normalization.get("foreground", {}))
    image = np.asarray(image, dtype=np.float32)
    if image.size > MAX_STATS_PIXELS:
        mask, _ = _foreground_of_large_image(image, params)
        f = math.ceil(math.sqrt(image.size / MAX_STATS_PIXELS))
        mask = np.repeat(np.repeat(mask, f, axis=0), f, axis=1)[:image.shape[0], :image.shape[1]]
        mask = np.pad(mask, ((0, image.shape[0] - mask.shape[0]), (0, image.shape[1] - mask.shape[1])), mode="edge")
    else:
        mask = extract_foreground(image, **params.to_dict())
    return normalize_by_flat_field(image, mask, sigma=float(normalization.get("sigma", 64.0)))
