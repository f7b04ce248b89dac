"""Training the cell-centre detector: a U-Net regressing Gaussian likelihood maps of the points (MSE)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..._errors import CellmixerError
from ..._settings import setting, setting_like, settings_from, takes_settings
from ...engine import (
    OptimizationSettings,
    SegmentationModel,
    Training,
    stored_architecture,
)
from ...io import InputImage, collect_inputs, locks_outputs
from ...ops import AugmentParams, ClassicalSettings, augment
from ._labels import PointLabels, check_label_source, weak_labels
from ._points import PEAK_SIGMA, PeakSettings, likelihood_map
from ._segment import DEFAULT_SEGMENTATION, TASK, CentroidSegmentation, network_input

PERCENTILE_NORMALIZATION = {"method": "percentile", "low": 1.0, "high": 99.8}


@dataclass
class CentroidTrainingConfig(OptimizationSettings):
    """Settings of :func:`train_centroids` (saved in the model's ``config.json``).

    The paper trains with MSE on 320-pixel patches; on a CPU the defaults are Adam at 1e-3 with
    poly decay, batch 8 of 256-pixel crops, all augmentations.
    """

    optimizer: str = setting_like(OptimizationSettings, "optimizer", "adam")
    lr_schedule: str = setting_like(OptimizationSettings, "lr_schedule", "poly")
    sigma: float = setting_like(PeakSettings, "sigma", PEAK_SIGMA)
    scale: float = setting(1.0, "resize images by this factor for the network, e.g. 0.5 for large cells",
                           above=0, at_most=4)
    source: str = setting("points", "where the points came from", cli=False)
    label_options: dict = setting({}, "settings of the classical nuclei of a nuclear stain", cli=False)


@dataclass
class _Target:
    image: np.ndarray   # normalized, at the network's scale
    target: np.ndarray  # likelihood map at the network's scale


def detector_targets(items: list[PointLabels], model: SegmentationModel, sigma: float) -> list[_Target]:
    """Network input and likelihood target of each image, at the model's input scale (``sigma`` is in
    pixels of the original image)."""
    out = []
    factor = model.input_scale
    for item in items:
        x = network_input(model, item.image)
        points = (item.points + 0.5) * factor - 0.5
        out.append(_Target(x, likelihood_map(points, x.shape, sigma=sigma * factor)))
    return out


class LikelihoodSampler:
    """Random crops of (image, likelihood) pairs, area-weighted over images, with the package's augmentations."""

    def __init__(self, items: list[_Target], *, crop_size: int, augment: bool = True):
        self.items = items
        self.crop_size = crop_size
        self.params = AugmentParams() if augment else AugmentParams.none()
        area = np.array([it.image.size for it in items], np.float64)
        self.weights = area / area.sum()

    def sample(self, rng: np.random.Generator):
        item = self.items[rng.choice(len(self.items), p=self.weights)]
        h, w = item.image.shape
        c = self.crop_size
        y, x = int(rng.integers(max(1, h - c + 1))), int(rng.integers(max(1, w - c + 1)))
        image, target = item.image[y:y + c, x:x + c], item.target[y:y + c, x:x + c]
        pad = ((0, c - image.shape[0]), (0, c - image.shape[1]))
        if any(p[1] for p in pad):
            image, target = np.pad(image, pad, mode="symmetric"), np.pad(target, pad, mode="symmetric")
        return augment(image, target, rng, self.params)

    def batch(self, rng: np.random.Generator, batch_size: int):
        samples = [self.sample(rng) for _ in range(batch_size)]
        return (np.stack([s[0] for s in samples])[:, None].astype(np.float32),
                np.stack([s[1] for s in samples]).astype(np.float32))


def _training_paths(images, pattern: str) -> list[InputImage]:
    """Image files, and the images of folders (recursively); unlike prediction, names may repeat."""
    items = [images] if isinstance(images, (str, Path)) else list(images)
    if not items:
        raise CellmixerError("no training images given.")
    paths = []
    for item in items:
        paths += collect_inputs([item], pattern=pattern)
    return paths


def mse_loss(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared error between the one-channel output and the likelihood map."""
    return torch.mean((output[:, 0].float() - target) ** 2)


class CentroidTraining(Training):
    """One point per cell -> Gaussian likelihood maps -> MSE regression by a U-Net."""

    task = TASK
    description = "training (cell centres)"
    loss_name = "MSE"

    def __init__(self, images, output, config: CentroidTrainingConfig, *, points=None, rois=None, nuclear=None,
                 nuclear_channel: int | str | None = None, pattern: str = "*", channel: int | str | None = None,
                 model: str = "unet", model_options: dict | None = None, segmentation: dict | None = None, **run):
        super().__init__(config, output, **run)
        unknown = set(segmentation or {}) - set(DEFAULT_SEGMENTATION)
        if unknown:
            raise CellmixerError(f"segmentation setting {sorted(unknown)[0]!r} unknown; choose from "
                                 f"{', '.join(DEFAULT_SEGMENTATION)}.")
        CentroidSegmentation(**(segmentation or {}))  # checked before any work
        self.images, self.pattern, self.channel = images, pattern, channel
        self.points, self.rois, self.nuclear, self.nuclear_channel = points, rois, nuclear, nuclear_channel
        self.architecture, self.model_options, self.segmentation = model, model_options or {}, segmentation
        self.paths = None
        if not self.resume:
            self.config.source = check_label_source(points, rois, nuclear, nuclear_channel)

    def restore(self, meta):
        self.architecture, self.model_options = stored_architecture(meta)
        self.channel, self.config.scale = meta["channel"], meta["input_scale"]
        keys = meta.get("train_keys") or [Path(p).name for p in meta["train_images"]]
        self.paths = [InputImage(Path(p), Path(p).stem, key) for p, key in zip(meta["train_images"], keys)]
        sources = meta["sources"]
        self.points, self.rois, nuclear, self.nuclear_channel = (sources.get(k) for k in (
            "points", "rois", "nuclear", "nuclear_channel"))
        self.nuclear = tuple(nuclear) if isinstance(nuclear, list) else nuclear
        if all(v is None for v in (self.points, self.rois, self.nuclear, self.nuclear_channel)):
            raise CellmixerError("--resume: this run's points were given from Python as a dict; call "
                                 "train_centroids again with them instead of resuming.")
        self.segmentation = meta.get("segmentation")

    def prepare(self):
        if self.paths is None:
            self.paths = _training_paths(self.images, self.pattern)
        options = self.config.label_options
        self.items = weak_labels(self.paths, points=self.points, rois=self.rois, nuclear=self.nuclear,
                                 nuclear_channel=self.nuclear_channel, channel=self.channel,
                                 method=options["method"], diameter_range=tuple(options["diameter_range"]),
                                 progress=self.progress, desc="reading points")
        if sum(len(it.points) for it in self.items) == 0:
            raise CellmixerError("no cell points in any training image; check the points source (for a nuclear "
                                 "stain: --diameter, the channel, or the file names).")

    def new_model(self):
        config = self.config
        detector = SegmentationModel.new([], architecture=self.architecture, channel=self.channel, seed=config.seed,
                                         input_scale=config.scale, normalization=dict(PERCENTILE_NORMALIZATION),
                                         **self.model_options)
        detector.config["centroids"] = {"sigma": config.sigma,
                                        "segmentation": {**DEFAULT_SEGMENTATION, **(self.segmentation or {})}}
        return detector

    def objective(self, model):
        targets = detector_targets(self.items, model, self.config.sigma)
        sampler = LikelihoodSampler(targets, crop_size=self.config.crop_size, augment=self.config.augment)
        self.stored_segmentation = model.config["centroids"]["segmentation"]
        return sampler.batch, mse_loss, None

    def checkpoint_extras(self):
        def where(value):
            return None if value is None or isinstance(value, dict) else str(value)

        nuclear = self.nuclear
        sources = {"points": where(self.points), "rois": where(self.rois),
                   "nuclear": list(nuclear) if isinstance(nuclear, tuple) else where(nuclear),
                   "nuclear_channel": self.nuclear_channel}
        return dict(train_images=[str(p.path) for p in self.paths], train_keys=[p.key for p in self.paths],
                    sources=sources, segmentation=self.stored_segmentation)

    def summary(self):
        return {"train_images": len(self.paths), "points": int(sum(len(it.points) for it in self.items)),
                "duplicates_dropped": int(sum(it.duplicates for it in self.items))}

    def title(self):
        return f"cell centres ({self.config.source})"


@locks_outputs
@takes_settings(CentroidTrainingConfig)
def train_centroids(images, output, *, points=None, rois=None, nuclear=None, nuclear_channel: int | str | None = None,
                    pattern: str = "*", channel: int | None = None, method: str = ClassicalSettings.method,
                    diameter_range=ClassicalSettings.diameter_range, model: str = "unet",
                    model_options: dict | None = None, segmentation: dict | None = None, device: str = "auto",
                    threads: int | None = None, resume: bool = False, overwrite: bool = False,
                    progress: bool = True, **settings) -> SegmentationModel:
    """Train the cell-centre detector of Nishimura et al. (2019) from one point per cell.

    The points (from a CSV, ImageJ ROIs, or the nuclei of a paired nuclear stain: see
    :func:`cellmixer.methods.centroids.weak_labels`) become likelihood maps, a Gaussian of ``sigma`` pixels
    at each point combined by maximum; a U-Net learns them with the mean squared error.
    :func:`cellmixer.segment_cells` and :func:`cellmixer.predict_centroids` turn the trained
    detector into instances.

    Parameters
    ----------
    images : str, Path or list
        Images to segment later (phase contrast, DIC, brightfield): files or folders.
    output : str or Path
        The model folder (``config.json`` with ``"task": "centroids"``, ``weights.safetensors``,
        ``training_log.csv``, ``training_curve.png``, ``checkpoint/``).
    points, rois, nuclear, nuclear_channel, pattern, channel, method, diameter_range :
        Source of the points (exactly one of ``points``, ``rois``, ``nuclear``/``nuclear_channel``)
        and which files to use; see :func:`cellmixer.methods.centroids.weak_labels`.
    sigma : float
        Standard deviation of each peak, in pixels of the image.
    scale : float
        Resize images by this factor for the network (0.5 for large cells: faster, same result).
    model, model_options :
        Architecture and its options (``width``, ``depth``).
    iterations, batch_size, crop_size, optimizer, learning_rate, momentum, weight_decay, lr_schedule,
    augment, precision, seed, checkpoint_every, threads, resume, overwrite, progress :
        As for :func:`cellmixer.train`.
    segmentation : dict, optional
        Detection and graph-cut settings stored with the model as prediction defaults (keys of
        :data:`cellmixer.methods.centroids.DEFAULT_SEGMENTATION`).

    Returns
    -------
    SegmentationModel
        One output channel (the likelihood), ``config["task"] == "centroids"``.
    """
    ClassicalSettings(method=method, diameter_range=tuple(diameter_range))  # checked before any work
    label_options = {"method": method, "diameter_range": list(diameter_range)}
    config = settings_from(CentroidTrainingConfig, {**settings, "label_options": label_options},
                           function="train_centroids")
    return CentroidTraining(images, output, config, points=points, rois=rois, nuclear=nuclear,
                            nuclear_channel=nuclear_channel, pattern=pattern, channel=channel, model=model,
                            model_options=model_options, segmentation=segmentation, device=device, threads=threads,
                            resume=resume, overwrite=overwrite, progress=progress).fit()
