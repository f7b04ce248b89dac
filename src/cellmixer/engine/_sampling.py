"""Training crops of labelled images, and the validation loss over tiles that cover held-out images:
shared by the methods that learn per-pixel targets (nuclei, typed cells)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..ops import IGNORE, AugmentParams, augment, random_symmetry
from ._device import autocast, module_device, to_device
from ._tiling import stack_channels, tile_starts, tile_statistics

FLIPS_ONLY = AugmentParams(flips=True, blur_probability=0.0, noise_probability=0.0, intensity_probability=0.0)


@dataclass
class LabelledImage:
    """One training image, (H, W) or (C, H, W) input channels, with its target (e.g. the 3 classes of nuclei:
    0 background, 1 nucleus, 2 line, 255 ignored; more planes may follow the two image axes)."""

    image: np.ndarray
    target: np.ndarray
    path: Path | None = None


def _normalize(tile: np.ndarray) -> np.ndarray:
    mean, std = tile_statistics(tile)
    return (tile - np.float32(mean)) / np.float32(std)


def _crop_or_pad(image: np.ndarray, target: np.ndarray, y: int, x: int, size: int):
    image, target = image[..., y:y + size, x:x + size], target[y:y + size, x:x + size]
    pad = ((0, size - target.shape[0]), (0, size - target.shape[1]))
    if any(p[1] for p in pad):  # image smaller than the crop: mirror it, and do not score the mirror
        image = np.pad(image, ((0, 0),) * (image.ndim - 2) + pad, mode="symmetric")
        # targets may carry more planes after the two image axes (e.g. cell type next to the 3 classes)
        target = np.pad(target, pad + ((0, 0),) * (target.ndim - 2), constant_values=IGNORE)
    return image, target


class TileSampler:
    """Random crops of labelled images: one of the 8 flips and rotations, then normalized by the
    crop's own mean and standard deviation (the paper normalizes each augmented tile;
    ``normalize_tiles=False`` for images normalized beforehand as a whole)."""

    def __init__(self, items: list[LabelledImage], *, crop_size: int, augment: bool = True,
                 normalize_tiles: bool = True):
        self.items = items
        self.crop_size = crop_size
        self.augment = augment
        self.normalize = _normalize if normalize_tiles else np.asarray
        area = np.array([it.image.size for it in items], np.float64)
        self.weights = area / area.sum()

    def sample(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        item = self.items[rng.choice(len(self.items), p=self.weights)]
        h, w = item.image.shape[-2:]
        c = self.crop_size
        y, x = int(rng.integers(max(1, h - c + 1))), int(rng.integers(max(1, w - c + 1)))
        image, target = _crop_or_pad(item.image, item.target, y, x, c)
        if self.augment and image.ndim == 3:  # input channels turned alike
            *channels, target = random_symmetry(rng, *image, target)
            image = np.stack(channels)
        elif self.augment:
            image, target = augment(image, target, rng, FLIPS_ONLY)
        return self.normalize(np.ascontiguousarray(image, np.float32)), np.ascontiguousarray(target)

    def batch(self, rng: np.random.Generator, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
        samples = [self.sample(rng) for _ in range(batch_size)]
        return stack_channels([s[0] for s in samples]), np.stack([s[1] for s in samples]).astype(np.int64)


def validation_tiles(items: list[LabelledImage], crop_size: int, *,
                     normalize_tiles: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Every validation image cut into crop-sized tiles that cover it (the last ones overlap)."""
    normalize = _normalize if normalize_tiles else np.asarray
    images, targets = [], []
    for item in items:
        h, w = item.image.shape[-2:]
        for y in tile_starts(h, crop_size, crop_size):
            for x in tile_starts(w, crop_size, crop_size):
                image, target = _crop_or_pad(item.image, item.target, y, x, crop_size)
                images.append(normalize(np.ascontiguousarray(image, np.float32)))
                targets.append(target)
    return stack_channels(images), np.stack(targets).astype(np.int64)


def validation_loss(images: np.ndarray, targets: np.ndarray, loss_fn, precision: str, batch_size: int):
    def validate(network) -> float:
        total = 0.0
        device = module_device(network)
        with torch.inference_mode(), autocast(precision, device):
            for start in range(0, len(images), batch_size):
                x = to_device(images[start:start + batch_size], device, channels_last=True)
                y = to_device(targets[start:start + batch_size], device)
                total += float(loss_fn(network(x), y)) * len(x)
        return total / len(images)

    return validate
