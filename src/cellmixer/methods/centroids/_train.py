"""Training the cell-centre detector: a U-Net regressing Gaussian likelihood maps of the points (MSE)."""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..._errors import CellmixerError
from ...engine import (
    CHECKPOINT_DIR,
    Optimization,
    OptimizationSettings,
    SegmentationModel,
    refuse_existing_model,
    resolve_device,
    resolve_precision,
    resume_settings,
    stored_architecture,
    write_training_record,
)
from ...io import collect_inputs, prepare_output_dir
from ...ops import AugmentParams, augment
from ._labels import PointLabels, check_label_source, weak_labels
from ._points import likelihood_map
from ._segment import DEFAULT_SEGMENTATION, TASK, network_input

PERCENTILE_NORMALIZATION = {"method": "percentile", "low": 1.0, "high": 99.8}


def _optimization_settings():
    return OptimizationSettings


@dataclass
class CentroidTrainingConfig(_optimization_settings()):
    """Settings of :func:`train_centroids` (saved in the model's ``config.json``).

    The paper trains with MSE on 320-pixel patches; on a CPU the defaults are Adam at 1e-3 with
    poly decay, batch 8 of 256-pixel crops, all augmentations.
    """

    iterations: int = 2000
    optimizer: str = "adam"
    learning_rate: float = 1e-3
    lr_schedule: str = "poly"
    sigma: float = 6.0
    source: str = "points"
    label_options: dict = field(default_factory=dict)

    def validate(self) -> None:
        super().validate()
        if not self.sigma > 0:
            self.bad("sigma", self.sigma, "must be positive (pixels of the image)")


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


def _training_paths(images, pattern: str) -> list[Path]:
    """Image files, and the images of folders (recursively); unlike prediction, names may repeat."""
    items = [images] if isinstance(images, (str, Path)) else list(images)
    if not items:
        raise CellmixerError("no training images given.")
    paths = []
    for item in items:
        paths += [p for p, _ in collect_inputs([item], pattern=pattern)]
    return paths


def mse_loss(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared error between the one-channel output and the likelihood map."""
    return torch.mean((output[:, 0].float() - target) ** 2)


def train_centroids(images, output, *, points=None, rois=None, nuclear=None, nuclear_channel: int | None = None,
                    pattern: str = "*", channel: int | None = None, method: str = "shape/intensity",
                    diameter_range=(10, 50), sigma: float = 6.0, scale: float = 1.0, model: str = "unet",
                    model_options: dict | None = None, iterations: int = 2000, batch_size: int = 8,
                    crop_size: int = 256, optimizer: str = "adam", learning_rate: float = 1e-3,
                    momentum: float = 0.9, weight_decay: float = 0.0, lr_schedule: str = "poly",
                    augment: bool = True, precision: str = "auto", seed: int = 0, checkpoint_every: int = 250,
                    device: str = "auto", threads: int | None = None, resume: bool = False, overwrite: bool = False,
                    segmentation: dict | None = None, progress: bool = True) -> SegmentationModel:
    """Train the cell-centre detector of Nishimura et al. (2019) from one point per cell.

    The points (from a CSV, ImageJ ROIs, or the nuclei of a paired nuclear stain: see
    :func:`cellmixer.centroids.weak_labels`) become likelihood maps, a Gaussian of ``sigma`` pixels
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
        and which files to use; see :func:`cellmixer.centroids.weak_labels`.
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
        :data:`cellmixer.centroids.DEFAULT_SEGMENTATION`).

    Returns
    -------
    SegmentationModel
        One output channel (the likelihood), ``config["task"] == "centroids"``.
    """
    device = resolve_device(device)
    start_time = time.perf_counter()
    unknown = set(segmentation or {}) - set(DEFAULT_SEGMENTATION)
    if unknown:
        raise CellmixerError(f"segmentation setting {sorted(unknown)[0]!r} unknown; choose from "
                             f"{', '.join(DEFAULT_SEGMENTATION)}.")
    if not 0 < scale <= 4:
        raise CellmixerError(f"--scale {scale}: must be in (0, 4].")
    label_options = {"method": method, "diameter_range": list(diameter_range)}
    config = CentroidTrainingConfig(
        iterations=iterations, batch_size=batch_size, crop_size=crop_size, optimizer=optimizer,
        learning_rate=learning_rate, momentum=momentum, weight_decay=weight_decay, lr_schedule=lr_schedule,
        augment=augment, precision=resolve_precision(precision, device), seed=seed, checkpoint_every=checkpoint_every,
        sigma=sigma, label_options=label_options)
    out = prepare_output_dir(output)
    checkpoint_dir = out / CHECKPOINT_DIR
    meta = None
    if resume:
        meta, config = resume_settings(checkpoint_dir, CentroidTrainingConfig, task=TASK, iterations=iterations,
                                       checkpoint_every=checkpoint_every)
        model, model_options = stored_architecture(meta)
        channel, scale = meta["channel"], meta["input_scale"]
        paths = [Path(p) for p in meta["train_images"]]
        sources = meta["sources"]
        points, rois, nuclear, nuclear_channel = (sources.get(k) for k in ("points", "rois", "nuclear",
                                                                          "nuclear_channel"))
        if isinstance(nuclear, list):
            nuclear = tuple(nuclear)
        if all(v is None for v in (points, rois, nuclear, nuclear_channel)):
            raise CellmixerError("--resume: this run's points were given from Python as a dict; call "
                                 "train_centroids again with them instead of resuming.")
        segmentation = meta.get("segmentation")
    else:
        config.source = check_label_source(points, rois, nuclear, nuclear_channel)
        if not overwrite:
            refuse_existing_model(out, checkpoint_dir)
        paths = _training_paths(images, pattern)
    config.validate()
    torch.set_num_threads(threads or os.cpu_count() or 1)
    items = weak_labels(paths, points=points, rois=rois, nuclear=nuclear, nuclear_channel=nuclear_channel,
                        channel=channel, method=config.label_options.get("method", method),
                        diameter_range=tuple(config.label_options.get("diameter_range", diameter_range)),
                        progress=progress, desc="reading points")
    if sum(len(it.points) for it in items) == 0:
        raise CellmixerError("no cell points in any training image; check the points source (for a nuclear "
                             "stain: --diameter, the channel, or the file names).")
    detector = SegmentationModel.new([], architecture=model, channel=channel, seed=config.seed, input_scale=scale,
                                     normalization=dict(PERCENTILE_NORMALIZATION), **(model_options or {}))
    detector.config["task"] = TASK
    detector.config["centroids"] = {"sigma": config.sigma,
                                    "segmentation": {**DEFAULT_SEGMENTATION, **(segmentation or {})}}
    targets = detector_targets(items, detector, config.sigma)
    sampler = LikelihoodSampler(targets, crop_size=config.crop_size, augment=config.augment)

    serializable_sources = {"points": None if points is None or isinstance(points, dict) else str(points),
                            "rois": None if rois is None or isinstance(rois, dict) else str(rois),
                            "nuclear": (list(nuclear) if isinstance(nuclear, tuple) else
                                        None if nuclear is None or isinstance(nuclear, dict) else str(nuclear)),
                            "nuclear_channel": nuclear_channel}
    checkpoint_meta = {key: detector.config[key] for key in ("task", "classes", "architecture", "normalization",
                                                               "channel", "input_scale")}
    checkpoint_meta.update(train_images=[str(p) for p in paths], sources=serializable_sources,
                           segmentation=detector.config["centroids"]["segmentation"], training=asdict(config))
    run = Optimization(detector.network, config, checkpoint_dir, checkpoint_meta, device=device)
    if meta is not None:
        run.resume(meta)
    run.run(sampler.batch, mse_loss, desc="training (cell centres)", progress=progress, start_time=start_time)
    detector.network.eval()
    history = run.history
    detector.config["training"] = {
        **asdict(config), "train_images": len(paths), "points": int(sum(len(it.points) for it in items)),
        "duplicates_dropped": int(sum(it.duplicates for it in items)),
        "final_loss": float(np.mean([h["loss"] for h in history[-50:]])),
        "wall_time_s": round(time.perf_counter() - start_time, 1),
    }
    detector.save(out, overwrite=True)
    write_training_record(out, history, ylabel="MSE", title=f"cell centres ({config.source})")
    return detector
