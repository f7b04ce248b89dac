"""Data augmentation for training crops (numpy, one sample at a time)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy import ndimage as ndi


@dataclass(frozen=True)
class AugmentParams:
    """Random transformations applied to each training sample.

    Intensities are in units of the background's standard deviation (images are normalized by
    their background), so ``noise_std = 0.3`` adds noise at 30 % of the background's own spread.
    """

    flips: bool = True
    blur_probability: float = 0.25
    blur_sigma: tuple[float, float] = (0.5, 1.5)
    noise_probability: float = 0.25
    noise_std: tuple[float, float] = (0.05, 0.3)
    intensity_probability: float = 0.5
    brightness: float = 0.3
    contrast: tuple[float, float] = (0.75, 1.33)
    # Photometric changes of another microscope, exposure or well (off unless asked for): a smooth
    # uneven illumination (after normalization by the background, 1 % of uneven light is about one
    # background spread), and bright and dark contrast changed apart (focus, phase ring).
    illumination_probability: float = 0.0
    illumination_amplitude: float = 1.5
    contrast_split_probability: float = 0.0
    contrast_split: tuple[float, float] = (0.6, 1.6)
    # Mosaics only (the sampler applies it): the second culture's cells exposed by another gain than
    # the first's, as across the seams of stitched fields or under strong vignetting; the mixture is
    # then normalized as a whole, as prediction normalizes a field.
    exposure_split_probability: float = 0.0
    exposure_split: tuple[float, float] = (0.5, 2.0)
    # A nuclear-stain input (the sampler applies it): each culture's stain at its own gain, so that the
    # brightness of a well's stain, which another well's exposure and staining change, carries no type.
    stain_gain: tuple[float, float] = (0.5, 2.0)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def photometric(cls) -> "AugmentParams":
        """The defaults plus uneven illumination, contrast from half to twice, bright and dark
        contrast changed apart, and the two cultures of a mosaic exposed apart: for images taken on
        other days, microscopes and exposures."""
        return cls(intensity_probability=0.8, contrast=(0.5, 2.0), illumination_probability=0.5,
                   contrast_split_probability=0.5, exposure_split_probability=0.5)

    @classmethod
    def none(cls) -> "AugmentParams":
        return cls(flips=False, blur_probability=0.0, noise_probability=0.0, intensity_probability=0.0)


def augment(image: np.ndarray, labels: np.ndarray, rng: np.random.Generator,
            params: AugmentParams = AugmentParams()) -> tuple[np.ndarray, np.ndarray]:
    """Randomly flip/rotate (any of the 8 symmetries of the square), blur, add noise, change
    brightness and contrast. Geometric changes apply to ``labels`` too; intensity changes do not.

    Examples
    --------
    >>> import numpy as np
    >>> image = np.arange(16, dtype=np.float32).reshape(4, 4)
    >>> out, lab = augment(image, image.astype(int), np.random.default_rng(1))
    >>> out.shape, bool(np.array_equal(np.sort(lab.ravel()), np.arange(16)))
    ((4, 4), True)
    """
    if params.flips:
        image, labels = random_symmetry(rng, image, labels)
    image = np.ascontiguousarray(image, dtype=np.float32)
    labels = np.ascontiguousarray(labels)
    if rng.random() < params.blur_probability:
        image = ndi.gaussian_filter(image, rng.uniform(*params.blur_sigma), truncate=3.0)
    if rng.random() < params.noise_probability:
        image = image + rng.normal(0, rng.uniform(*params.noise_std), image.shape).astype(np.float32)
    # (a change with probability 0 draws no random number: the other augmentations stay as they were)
    if params.contrast_split_probability and rng.random() < params.contrast_split_probability:
        low, high = np.log(params.contrast_split)
        bright, dark = np.exp(rng.uniform(low, high, 2)).astype(np.float32)
        image = np.where(image > 0, image * bright, image * dark)
    if rng.random() < params.intensity_probability:
        contrast = np.exp(rng.uniform(np.log(params.contrast[0]), np.log(params.contrast[1])))
        image = image * np.float32(contrast) + np.float32(rng.uniform(-params.brightness, params.brightness))
    if params.illumination_probability and rng.random() < params.illumination_probability:
        image = image + np.float32(rng.uniform(0, params.illumination_amplitude)) * _smooth_field(image.shape, rng)
    return image, labels


def random_symmetry(rng: np.random.Generator, *arrays: np.ndarray) -> tuple[np.ndarray, ...]:
    """The arrays (H, W) turned and flipped alike by one of the 8 symmetries of the square, drawn from ``rng``."""
    k, flip = int(rng.integers(4)), bool(rng.integers(2))
    arrays = tuple(np.rot90(a, k) for a in arrays)
    return tuple(a[:, ::-1] for a in arrays) if flip else arrays


def _smooth_field(shape, rng: np.random.Generator) -> np.ndarray:
    """A random smooth field in [-1, 1]: a tilted plane plus a few broad bumps (uneven light, vignetting)."""
    yy, xx = np.mgrid[:shape[0], :shape[1]].astype(np.float32)
    angle = rng.uniform(0, 2 * np.pi)
    field = np.cos(angle) * (xx / shape[1] - 0.5) + np.sin(angle) * (yy / shape[0] - 0.5)
    coarse = rng.normal(size=(4, 4)).astype(np.float32)
    field = field + ndi.zoom(coarse, (shape[0] / 4, shape[1] / 4), order=1, grid_mode=True, mode="nearest")[
        :shape[0], :shape[1]] * 0.3
    return (field / max(float(np.abs(field).max()), 1e-6)).astype(np.float32)
