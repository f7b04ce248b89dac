"""Training samples: pseudo-labelled homogeneous images, cropped and (in CellMixer mode) mixed."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

from ..._errors import CellmixerError
from ..._progress import progress_bar
from ...io import ImageDataset, check_not_constant, read_image, warn_if_mask
from ...ops import (
    IGNORE,
    AugmentParams,
    ForegroundParams,
    augment,
    extract_foreground,
    mix_pair,
    normalize_by_background,
    rescale_image,
)


@dataclass
class PseudoLabelledImage:
    """One homogeneous culture, normalized by its background, with its pseudo-label map."""

    image: np.ndarray  # float32, background mean 0 and standard deviation 1
    labels: np.ndarray  # uint8: 0 background, k on the foreground of a class-k image, 255 not counted
    class_index: int
    path: Path


def pseudolabel_image(image: np.ndarray, class_index: int, foreground: ForegroundParams, *,
                      boundary_ignore: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Normalized image and its label map: the unsupervised foreground, labelled with the image's class.

    With ``boundary_ignore`` > 0, pixels within that distance of the mask's outline (inside or
    outside) are labelled 255 and not counted by the loss: gradient-based masks are least certain
    there, and the network may then place the outline where the image says.
    """
    mask = extract_foreground(image, **foreground.to_dict())
    labels = (mask * np.uint8(class_index)).astype(np.uint8)
    if boundary_ignore > 0:
        square = np.ones((3, 3), bool)
        band = ndi.binary_dilation(mask, square, iterations=boundary_ignore) & ~ndi.binary_erosion(
            mask, square, iterations=boundary_ignore, border_value=1)
        labels[band] = IGNORE
    return normalize_by_background(image, mask), labels


def load_pseudolabelled(dataset: ImageDataset, *, foreground: ForegroundParams = ForegroundParams(),
                        channel: int | None = None, scale: float = 1.0, min_size: int = 0,
                        boundary_ignore: int = 0, progress: bool = True) -> list[PseudoLabelledImage]:
    """Read every image of ``dataset`` and label its foreground with the image's class.

    Pseudo-labels are found at the image's own resolution, then image and labels are resized by
    ``scale`` (the model's ``input_scale``). Raises a :class:`CellmixerError` naming the file for
    unreadable, constant or NaN images, and for images smaller than ``min_size`` (the training
    crop) on either side after resizing.
    """
    items = []
    for path, k in progress_bar(list(zip(dataset.paths, dataset.labels)), desc="pseudo-labelling",
                                unit="image", enabled=progress):
        image = read_image(path, channel=channel)
        check_not_constant(image, path)
        warn_if_mask(image, path)
        size = min(round(n * scale) for n in image.shape)
        if size < min_size:
            scaled = f" ({size} after --scale {scale})" if scale != 1 else ""
            raise CellmixerError(
                f"{path}: image is {image.shape[0]}x{image.shape[1]} pixels{scaled}, smaller than the crop size "
                f"{min_size}; use --crop-size {max(16, size // 16 * 16)} or less, or remove the image."
            )
        normalized, labels = pseudolabel_image(image, k, foreground, boundary_ignore=boundary_ignore)
        if scale != 1:
            normalized, labels = rescale_image(normalized, scale), rescale_image(labels, scale, labels=True)
        items.append(PseudoLabelledImage(normalized, labels, k, Path(path)))
    return items


class CropSampler:
    """Draws training batches from pseudo-labelled homogeneous cultures.

    Each sample picks a class uniformly (so rare cultures are seen as often as common ones), an
    image of that class with probability proportional to its area, and a random crop. In
    ``'cellmixer'`` mode, with probability ``mix_probability`` a crop of a *different* class is
    blended in by :func:`cellmixer.ops.mix_pair`; ``'baseline'`` mode keeps crops homogeneous.

    The images are already normalized by their background, so the mixture is rescaled by
    ``1 / sqrt(lam^2 + (1 - lam)^2)``: averaging two independent backgrounds shrinks their spread,
    and a real image's background has unit spread after normalization.
    """

    def __init__(self, images: list[PseudoLabelledImage], num_classes: int, *, crop_size: int,
                 mode: str = "cellmixer", lam: float = 0.5, mix_probability: float = 1.0,
                 augment_params: AugmentParams | None = AugmentParams()):
        if mode not in ("cellmixer", "baseline"):
            raise ValueError(f"mode must be 'cellmixer' or 'baseline', got {mode!r}")
        self.crop_size = crop_size
        self.mode = mode
        self.lam = lam
        self.mix_probability = mix_probability
        self.augment_params = augment_params
        self.images = images
        self.by_class: dict[int, list[int]] = {}
        for i, item in enumerate(images):
            self.by_class.setdefault(item.class_index, []).append(i)
        self.classes = sorted(self.by_class)
        self.area = np.array([item.image.size for item in images], dtype=np.float64)
        self.num_classes = num_classes

    def _crop(self, rng: np.random.Generator, class_index: int) -> tuple[np.ndarray, np.ndarray]:
        members = self.by_class[class_index]
        weights = self.area[members] / self.area[members].sum()
        item = self.images[members[rng.choice(len(members), p=weights)]]
        h, w = item.image.shape
        c = self.crop_size
        y, x = int(rng.integers(h - c + 1)), int(rng.integers(w - c + 1))
        return item.image[y:y + c, x:x + c], item.labels[y:y + c, x:x + c]

    def sample(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        first = self.classes[rng.integers(len(self.classes))]
        image, labels = self._crop(rng, first)
        if self.mode == "cellmixer" and len(self.classes) > 1 and rng.random() < self.mix_probability:
            others = [k for k in self.classes if k != first]
            image2, labels2 = self._crop(rng, others[rng.integers(len(others))])
            image, labels = mix_pair(image, labels, image2, labels2, lam=self.lam, normalize=False)
            image = image / np.float32(math.sqrt(self.lam**2 + (1 - self.lam) ** 2))
        if self.augment_params is not None:
            image, labels = augment(image, labels, rng, self.augment_params)
        return image, labels

    def batch(self, rng: np.random.Generator, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
        """``(images (B, 1, S, S) float32, labels (B, S, S) int64)``."""
        samples = [self.sample(rng) for _ in range(batch_size)]
        images = np.stack([s[0] for s in samples])[:, None].astype(np.float32)
        labels = np.stack([s[1] for s in samples]).astype(np.int64)
        return images, labels
