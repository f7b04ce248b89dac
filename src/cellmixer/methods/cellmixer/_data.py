"""Training samples: pseudo-labelled homogeneous images, cropped and (in CellMixer mode) mixed."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

from ..._errors import CellmixerError
from ..._progress import progress_bar
from ...engine import stack_channels
from ...io import ImageDataset, check_not_constant, read_image, read_nuclear, warn_if_mask
from ...ops import (
    IGNORE,
    AugmentParams,
    ForegroundParams,
    augment,
    background_stats,
    extract_foreground,
    mix_pair,
    normalize_by_background,
    normalize_by_flat_field,
    normalize_nuclear_stain,
    nuclei_of_stain,
    random_symmetry,
    rescale_image,
    split_foreground,
    territory_mosaic,
)


# Flat-field normalization: the background level is a plane fitted to the background pixels within about
# this many pixels (Gaussian weights; wider than cells, narrower than the illumination's changes).
FLAT_FIELD_SIGMA = 64.0
NORMALIZATIONS = ("background", "flatfield")


@dataclass
class PseudoLabelledImage:
    """One homogeneous culture, normalized by its background, with its pseudo-label map."""

    image: np.ndarray  # float32, background mean 0 and standard deviation 1
    labels: np.ndarray  # uint8: 0 background, k on the foreground of a class-k image, 255 not counted
    class_index: int
    path: Path
    seeds: np.ndarray | None = None  # int32 cell seeds (nuclei) for mosaic mixtures, 0 elsewhere
    # the raw background's mean over its spread: a gain g of the raw image moves the normalized one
    # to g * image + (g - 1) * background_ratio (0: exposure changes are not simulated)
    background_ratio: float = 0.0
    stain: np.ndarray | None = None  # the nuclear stain as the network reads it (normalize_nuclear_stain), or None


def pseudolabel_image(image: np.ndarray, class_index: int, foreground: ForegroundParams, *,
                      boundary_ignore: int = 0,
                      normalization: str = "background") -> tuple[np.ndarray, np.ndarray, float]:
    """Normalized image, its label map (the unsupervised foreground, labelled with the image's class)
    and its ``background_ratio`` (:class:`PseudoLabelledImage`; 0 for a flat field, which cancels any gain).

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
    if normalization == "flatfield":
        return normalize_by_flat_field(image, mask, sigma=FLAT_FIELD_SIGMA), labels, 0.0
    mean, std = background_stats(image, mask)
    return normalize_by_background(image, mask), labels, mean / std


def cell_seeds(mask: np.ndarray, stain: np.ndarray | None = None, *, diameter_range=(10, 50)) -> np.ndarray:
    """Seeds of the cells of a homogeneous culture, for mosaic mixtures: the nuclei of its stain
    (:func:`cellmixer.ops.nuclei_of_stain`), or without one the cells of its unsupervised foreground
    split at their necks (:func:`cellmixer.ops.split_foreground`)."""
    if stain is not None:
        return nuclei_of_stain(stain, diameter_range=diameter_range)
    return split_foreground(mask, min_distance=max(5, int(diameter_range[1]) // 2), sigma=2.0)


def load_pseudolabelled(dataset: ImageDataset, *, foreground: ForegroundParams = ForegroundParams(),
                        channel: int | None = None, scale: float = 1.0, min_size: int = 0,
                        boundary_ignore: int = 0, normalization: str = "background", seeds: bool = False,
                        nuclear_input: bool = False, nuclear=None, nuclear_channel=None,
                        progress: bool = True) -> list[PseudoLabelledImage]:
    """Read every image of ``dataset`` and label its foreground with the image's class.

    Pseudo-labels are found at the image's own resolution, then image and labels are resized by
    ``scale`` (the model's ``input_scale``). With ``seeds``, each image also gets the seeds of its
    cells (:func:`cell_seeds`; from its nuclear stain, given as ``nuclear`` or ``nuclear_channel``
    as :func:`cellmixer.io.read_nuclear` takes them); with ``nuclear_input``, its stain as the network reads
    it (:func:`cellmixer.ops.normalize_nuclear_stain`). Raises a :class:`CellmixerError` naming the
    file for unreadable, constant or NaN images, and for images smaller than ``min_size`` (the
    training crop) on either side after resizing.
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
        normalized, labels, ratio = pseudolabel_image(image, k, foreground, boundary_ignore=boundary_ignore,
                                                      normalization=normalization)
        cells = stain = None
        if seeds or nuclear_input:
            found = read_nuclear(path, nuclear=nuclear, nuclear_channel=nuclear_channel, shape=image.shape)
            stain = None if found is None else found[0]
        if seeds:
            cells = cell_seeds(labels == k, stain)
        stain = normalize_nuclear_stain(stain) if nuclear_input and stain is not None else None
        if scale != 1:
            normalized, labels = rescale_image(normalized, scale), rescale_image(labels, scale, labels=True)
            cells = None if cells is None else rescale_image(cells, scale, labels=True)
            stain = None if stain is None else rescale_image(stain, scale)
        items.append(PseudoLabelledImage(normalized, labels, k, Path(path), cells, ratio, stain))
    return items


def _centres(seeds: np.ndarray) -> np.ndarray:
    """(row, column) of every seed label 1..max (far outside the crop for labels absent from it)."""
    n = int(seeds.max(initial=0)) + 1
    flat = seeds.ravel()
    count = np.bincount(flat, minlength=n).astype(np.float64)
    rows, cols = np.divmod(np.arange(flat.size), seeds.shape[1])
    with np.errstate(invalid="ignore", divide="ignore"):
        centres = np.stack([np.bincount(flat, rows, n) / count, np.bincount(flat, cols, n) / count], axis=1)[1:]
    return np.nan_to_num(centres, nan=-1.0)


MIXINGS = ("blend", "mosaic", "both")
MOSAIC_PATTERNS = ("scatter", "islands", "half")


class CropSampler:
    """Draws training batches from pseudo-labelled homogeneous cultures.

    Each sample picks a class uniformly (so rare cultures are seen as often as common ones), an
    image of that class with probability proportional to its area, and a random crop. In
    ``'cellmixer'`` mode, with probability ``mix_probability`` a crop of a *different* class is
    mixed in; ``'baseline'`` mode keeps crops homogeneous. ``mixing`` says how:

    * ``'blend'``: CellMixer's mixup, :func:`cellmixer.ops.mix_pair`. The images are already
      normalized by their background, so the mixture is rescaled by
      ``1 / sqrt(lam^2 + (1 - lam)^2)``: averaging two independent backgrounds shrinks their
      spread, and a real image's background has unit spread after normalization.
    * ``'mosaic'``: the two crops composed cell by cell (:func:`cellmixer.ops.territory_mosaic`
      on the images' cell seeds), so that cells of both types touch as in a confluent co-culture;
      which cells of each crop take part follows a random pattern: scattered cells, islands, or the
      two sides of a line.
    * ``'both'``: either, with equal probability.

    Images with a ``stain`` (a nuclear-stain input) give it as a second channel, mixed with the
    image; each crop's stain is first multiplied by its own gain (``augment_params.stain_gain``).
    """

    def __init__(self, images: list[PseudoLabelledImage], num_classes: int, *, crop_size: int,
                 mode: str = "cellmixer", lam: float = 0.5, mix_probability: float = 1.0, mixing: str = "blend",
                 augment_params: AugmentParams | None = AugmentParams()):
        if mode not in ("cellmixer", "baseline"):
            raise ValueError(f"mode must be 'cellmixer' or 'baseline', got {mode!r}")
        if mixing not in MIXINGS:
            raise ValueError(f"mixing must be one of {MIXINGS}, got {mixing!r}")
        if mode == "cellmixer" and mixing != "blend" and any(item.seeds is None for item in images):
            raise ValueError("mosaic mixtures need the cell seeds of every image (load_pseudolabelled(seeds=True))")
        self.crop_size = crop_size
        self.mode = mode
        self.lam = lam
        self.mix_probability = mix_probability
        self.mixing = mixing
        self.augment_params = augment_params
        self.images = images
        self.by_class: dict[int, list[int]] = {}
        for i, item in enumerate(images):
            self.by_class.setdefault(item.class_index, []).append(i)
        self.classes = sorted(self.by_class)
        self.area = np.array([item.image.size for item in images], dtype=np.float64)
        self.num_classes = num_classes

    def _crop(self, rng: np.random.Generator, class_index: int):
        """(image, labels, seeds or None, stain or None) of a random crop of a random image of the class,
        and the image's ``background_ratio``."""
        members = self.by_class[class_index]
        weights = self.area[members] / self.area[members].sum()
        item = self.images[members[rng.choice(len(members), p=weights)]]
        h, w = item.image.shape
        c = self.crop_size
        y, x = int(rng.integers(h - c + 1)), int(rng.integers(w - c + 1))
        sl = (slice(y, y + c), slice(x, x + c))
        stain = None if item.stain is None else item.stain[sl]
        if stain is not None and self.augment_params is not None:
            low, high = np.log(self.augment_params.stain_gain)
            stain = stain * np.float32(np.exp(rng.uniform(low, high)))
        seeds = None if item.seeds is None else item.seeds[sl]
        return (item.image[sl], item.labels[sl], seeds, stain), item.background_ratio

    def mosaic(self, rng, first, second, background_ratio: float = 0.0):
        """Two crops ``(image, labels, seeds, stain or None)`` of one shape composed cell by cell, in a random
        pattern: ``(image, labels, stain or None)``.

        With the augmentation's ``exposure_split_probability``, the second crop is first exposed by
        another gain (its image's ``background_ratio`` says how a gain moves its normalized pixels)
        and the mosaic normalized by its background as a whole, as prediction normalizes a field.
        """
        (image1, labels1, seeds1, stain1), (image2, labels2, seeds2, stain2) = first, second
        params = self.augment_params
        exposed = bool(params is not None and background_ratio and params.exposure_split_probability
                       and rng.random() < params.exposure_split_probability)
        if exposed:
            low, high = np.log(params.exposure_split)
            gain = np.float32(np.exp(rng.uniform(low, high)))
            image2 = image2 * gain + (gain - 1) * np.float32(background_ratio)
        h, w = image1.shape
        centres = [_centres(s) for s in (seeds1, seeds2)]
        pattern = MOSAIC_PATTERNS[rng.integers(len(MOSAIC_PATTERNS))]
        if pattern == "scatter":
            share = rng.uniform(0.2, 0.8)
            chosen = [rng.random(len(centres[0])) < share, rng.random(len(centres[1])) >= share]
        else:
            if pattern == "islands":  # smooth noise: a coarse grid of 3 to 8 cells a side, enlarged
                n = int(rng.integers(3, 9))
                noise = ndi.zoom(rng.normal(size=(n, n)), (h / n, w / n), order=1, grid_mode=True,
                                 mode="nearest")[:h, :w]
                region = noise > np.quantile(noise, rng.uniform(0.3, 0.7))
            else:  # the two sides of a line through the middle, at any angle
                angle = rng.uniform(0, 2 * np.pi)
                yy, xx = np.mgrid[:h, :w]
                region = np.cos(angle) * (xx - w / 2) + np.sin(angle) * (yy - h / 2) < rng.uniform(-0.3, 0.3) * min(h, w)
            inside = [region[np.clip(p[:, 0].astype(int), 0, h - 1), np.clip(p[:, 1].astype(int), 0, w - 1)]
                      for p in centres]
            chosen = [inside[0], ~inside[1]]
        selected = [np.concatenate([[False], k]) for k in chosen]
        if not any(k.any() for k in selected):
            return image1, labels1, stain1
        stacks = [np.stack([image, labels.astype(np.float32), *([] if stain is None else [stain])])
                  for image, labels, stain in ((image1, labels1, stain1), (image2, labels2, stain2))]
        mosaic, _, _ = territory_mosaic(stacks, [seeds1, seeds2], selected)
        image, labels = mosaic[0], np.rint(mosaic[1]).astype(labels1.dtype)
        stain = None if stain1 is None else mosaic[2]
        return (normalize_by_background(image, labels != 0) if exposed else image), labels, stain

    def sample(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """``(image, labels (S, S))``: the image (S, S) float32, or (2, S, S) with the stain input."""
        first = self.classes[rng.integers(len(self.classes))]
        crop, _ = self._crop(rng, first)
        image, labels, _, stain = crop
        if self.mode == "cellmixer" and len(self.classes) > 1 and rng.random() < self.mix_probability:
            others = [k for k in self.classes if k != first]
            crop2, ratio2 = self._crop(rng, others[rng.integers(len(others))])
            if self.mixing == "mosaic" or (self.mixing == "both" and rng.random() < 0.5):
                image, labels, stain = self.mosaic(rng, crop, crop2, ratio2)
            else:
                image, labels = mix_pair(image, labels, *crop2[:2], lam=self.lam, normalize=False)
                image = image / np.float32(math.sqrt(self.lam**2 + (1 - self.lam) ** 2))
                stain = None if stain is None else self.lam * stain + (1 - self.lam) * crop2[3]
        params = self.augment_params
        if params is not None:
            if params.flips:  # turned together; the rest of the augmentation is the image's alone
                image, labels, *rest = random_symmetry(rng, image, labels, *([] if stain is None else [stain]))
                stain = rest[0] if rest else None
            image, labels = augment(image, labels, rng, dataclasses.replace(params, flips=False))
        return (image if stain is None else np.stack([image, stain]).astype(np.float32)), labels

    def batch(self, rng: np.random.Generator, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
        """``(images (B, C, S, S) float32, labels (B, S, S) int64)``."""
        samples = [self.sample(rng) for _ in range(batch_size)]
        return stack_channels([s[0] for s in samples]), np.stack([s[1] for s in samples]).astype(np.int64)
