"""Supervised typed cells: one U-Net with an instance head (background / cell / boundary, the nucleus
targets) and a cell-type head, trained from COCO annotations with the shared optimisation loop."""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass

import numpy as np
import torch

from ..._errors import CellmixerError
from ..._progress import progress_bar
from ...engine import (
    CHECKPOINT_DIR,
    Optimization,
    OptimizationSettings,
    SegmentationModel,
    input_statistics,
    refuse_existing_model,
    resolve_device,
    resolve_precision,
    resume_settings,
    write_training_record,
)
from ...io import prepare_output_dir, read_image
from ...methods.nuclei import LabelledNuclei, NucleiSampler, validation_tiles
from ...methods.nuclei._train import _validation_loss
from ...ops import IGNORE, log_dice_loss, three_class_targets
from ._classes import ANNOTATION, ClassSource, check_known
from ._coco import CocoDataset, instance_labels, read_coco
from ._predict import INSTANCE_CLASSES, TASK

# Network input: each tile by its own mean and standard deviation (as the nucleus model), or each image by
# its 1st-99.8th percentiles (no amplified noise in empty tiles, but on LIVECell it typed cells worse:
# docs/benchmarks.md).
NORMALIZATIONS = {"image": {"method": "percentile", "low": 1.0, "high": 99.8}, "tile": {"method": "tile"}}


@dataclass
class TypedTrainingConfig(OptimizationSettings):
    """Settings of :func:`train_typed` (saved in the model's ``config.json``): the nucleus model's
    optimisation (Adam, poly decay, log-Dice on the 3 instance classes) plus the type head's
    cross-entropy, weighted by ``type_weight``."""

    iterations: int = 2000
    optimizer: str = "adam"
    learning_rate: float = 1e-3
    weight_decay: float = 1e-4
    lr_schedule: str = "poly"
    dice_weights: tuple = (0.2, 0.4, 0.4)
    type_weight: float = 1.0
    line_radius: int = 1
    normalization: str = "tile"
    validation_fraction: float = 0.2
    class_from: str = ANNOTATION

    def validate(self) -> None:
        super().validate()
        if len(self.dice_weights) != 3 or min(self.dice_weights) < 0 or sum(self.dice_weights) <= 0:
            self.bad("dice_weights", list(self.dice_weights), "give 3 non-negative weights (background, cell, "
                     "boundary), not all 0")
        if self.type_weight < 0:
            self.bad("type_weight", self.type_weight, "must be 0 or positive")
        if self.line_radius < 1:
            self.bad("line_radius", self.line_radius, "must be at least 1")
        if not 0 <= self.validation_fraction < 1:
            self.bad("validation_fraction", self.validation_fraction, "must be in [0, 1); 0 keeps the last weights")
        if self.normalization not in NORMALIZATIONS:
            self.bad("normalization", self.normalization, f"choose {' or '.join(NORMALIZATIONS)}")


def typed_targets(dataset: CocoDataset, source: ClassSource, classes: list, *, line_radius: int = 1,
                  normalization: dict | None = None, channel: int | None = None, progress: bool = True,
                  desc: str = "reading annotations"):
    """Each image (normalized as a whole by ``normalization``, a model's setting, unless that is
    per tile) with its (H, W, 2) target: plane 0 the 3 instance classes (0 background, 1 cell,
    2 boundary), plane 1 the type index of each cell pixel (255 on background)."""
    index = {name: i for i, name in enumerate(classes)}
    items = []
    for image in progress_bar(dataset.images, desc=desc, unit="image", enabled=progress):
        pixels = read_image(image.path, channel=channel)
        if pixels.shape != (image.height, image.width):
            raise CellmixerError(f"{image.path}: {pixels.shape[0]}x{pixels.shape[1]} pixels, but {dataset.path} says "
                                 f"{image.height}x{image.width}; give the images the annotations were drawn on.")
        labels = instance_labels(image)
        kinds = dataset.instance_classes(image, source)
        lut = np.full(len(kinds) + 1, IGNORE, np.uint8)
        lut[1:] = [index[k] for k in kinds]
        target = np.stack([three_class_targets(labels, line_radius=line_radius), lut[labels]], axis=-1)
        pixels = pixels.astype(np.float32, copy=False)
        if normalization and normalization["method"] != "tile":
            offset, scale = input_statistics(pixels, normalization)
            pixels = (pixels - np.float32(offset)) / np.float32(scale)
        items.append(LabelledNuclei(pixels, target, image.path))
    return items


def typed_loss(config: TypedTrainingConfig):
    """log-Dice over the instance head plus ``type_weight`` x cross-entropy over the type head (cell pixels only)."""
    n = len(INSTANCE_CLASSES) + 1

    def loss_fn(logits, y):
        loss = log_dice_loss(logits[:, :n], y[..., 0], weights=config.dice_weights)
        types = y[..., 1]
        if config.type_weight > 0 and bool((types != IGNORE).any()):
            loss = loss + config.type_weight * torch.nn.functional.cross_entropy(
                logits[:, n:].float(), types, ignore_index=IGNORE)
        return loss

    return loss_fn


def _split_images(dataset: CocoDataset, fraction: float, seed: int) -> tuple[CocoDataset, CocoDataset | None]:
    if fraction == 0:
        return dataset, None
    if len(dataset.images) < 2:
        raise CellmixerError(f"{dataset.path}: one image cannot be split into training and validation; give "
                             "--validation-fraction 0 or a --validation file.")
    order = np.random.default_rng(seed).permutation(len(dataset.images))
    n_val = min(len(order) - 1, max(1, round(fraction * len(order))))
    pick = lambda idx: CocoDataset(dataset.path, [dataset.images[i] for i in sorted(idx)], dataset.categories)  # noqa: E731
    return pick(order[n_val:]), pick(order[:n_val])


def train_typed(annotations, output, *, images=None, validation=None, validation_images=None,
                class_from: str = ANNOTATION, classes=None, channel: int | None = None, model_options: dict | None = None,
                iterations: int = 2000, batch_size: int = 8, crop_size: int = 256, optimizer: str = "adam",
                learning_rate: float = 1e-3, momentum: float = 0.9, weight_decay: float = 1e-4,
                lr_schedule: str = "poly", dice_weights=(0.2, 0.4, 0.4), type_weight: float = 1.0,
                line_radius: int = 1, normalization: str = "tile", validation_fraction: float = 0.2,
                augment: bool = True, precision: str = "auto",
                seed: int = 0, checkpoint_every: int = 250, device: str = "auto", threads: int | None = None, resume: bool = False,
                overwrite: bool = False, progress: bool = True) -> SegmentationModel:
    """Train one network that finds every cell and its type, from COCO instance annotations.

    A U-Net (:class:`cellmixer.models.TypedUNet`) has two heads on the same features: the
    instance head learns background / cell / boundary (the targets and the post-processing of
    the nucleus model, :func:`cellmixer.train_nuclei`), the type head the cell type of each cell
    pixel. Crops are flipped/rotated; the weights with the lowest loss on the validation images
    are kept.

    Parameters
    ----------
    annotations : str or Path
        COCO file (polygons or RLE; ``annotations`` a list or a dict by id).
    output : str or Path
        Model folder (``config.json``, ``weights.safetensors``, ``training_log.csv``,
        ``training_curve.png``, ``checkpoint/``).
    images : str or Path, optional
        Folder of the images (default: the COCO file's folder; searched recursively by name).
    validation, validation_images : optional
        COCO file of validation images and their folder; by default ``validation_fraction`` of
        the training images (0: no validation, the last weights are kept).
    class_from : str
        Class of each cell: ``'annotation'`` (its COCO category), ``'prefix'`` (the image file
        name up to the first underscore, e.g. LIVECell's cell line) or a CSV file (``image``,
        ``class``).
    classes : list of str, optional
        The types the model knows, in order (default: all found, sorted). A class in the data
        that is not listed is an error.
    channel, model_options :
        Channel of multi-channel images; U-Net ``width`` and ``depth``.
    iterations, batch_size, crop_size, optimizer, learning_rate, momentum, weight_decay, lr_schedule :
        Optimisation (crops are also the prediction tiles).
    dice_weights : (float, float, float)
        log-Dice weights of background, cell and boundary.
    type_weight : float
        Weight of the type head's cross-entropy.
    line_radius : int
        Boundary pixels have another cell within this distance.
    normalization : {'tile', 'image'}
        Network input: each tile by its own mean and standard deviation (as the nucleus model),
        or each image scaled by its 1st and 99.8th percentiles (empty tiles stay empty).
    validation_fraction, augment, precision, seed, checkpoint_every, threads, resume, overwrite, progress :
        As for :func:`cellmixer.train_nuclei`.

    Returns
    -------
    SegmentationModel
        ``config["task"] == "typed"``, ``config["types"]`` the cell types; :func:`cellmixer.predict_typed`
        uses it.
    """
    device = resolve_device(device)
    start_time = time.perf_counter()
    config = TypedTrainingConfig(
        iterations=iterations, batch_size=batch_size, crop_size=crop_size, optimizer=optimizer,
        learning_rate=learning_rate, momentum=momentum, weight_decay=weight_decay, lr_schedule=lr_schedule,
        augment=augment, precision=resolve_precision(precision, device), seed=seed, checkpoint_every=checkpoint_every,
        dice_weights=tuple(dice_weights), type_weight=type_weight, line_radius=line_radius,
        normalization=normalization, validation_fraction=validation_fraction, class_from=str(class_from))
    config.validate()
    out = prepare_output_dir(output)
    checkpoint_dir = out / CHECKPOINT_DIR
    meta = None
    if resume:
        # checkpoints written before the normalization option normalized tiles
        meta, config = resume_settings(checkpoint_dir, TypedTrainingConfig, task=TASK, iterations=iterations,
                                       checkpoint_every=checkpoint_every, defaults={"normalization": "tile"})
        classes, channel = meta["types"], meta["channel"]
        model_options = {k: v for k, v in meta["architecture"].items()
                         if k not in ("name", "in_channels", "num_classes")}
    elif not overwrite:
        refuse_existing_model(out, checkpoint_dir)

    source = ClassSource(config.class_from)
    train_set = read_coco(annotations, image_dir=images)
    if not any(im.annotations for im in train_set.images):
        raise CellmixerError(f"{annotations}: has no annotations; training needs annotated cells.")
    val_set = None if validation is None else read_coco(validation, image_dir=validation_images)
    if val_set is None:
        train_set, val_set = _split_images(train_set, config.validation_fraction, config.seed)
    found = sorted(set(train_set.classes(source)) | set(val_set.classes(source) if val_set else []))
    classes = list(classes) if classes is not None else found
    check_known(found, classes, where=str(annotations))

    torch.set_num_threads(threads or os.cpu_count() or 1)
    normalization = {**NORMALIZATIONS[config.normalization]}
    if config.normalization == "tile":
        normalization["tile_size"] = config.crop_size
    per_tile = config.normalization == "tile"
    options = dict(line_radius=config.line_radius, normalization=normalization, channel=channel, progress=progress)
    train_items = typed_targets(train_set, source, classes, **options, desc="reading training annotations")
    sampler = NucleiSampler(train_items, crop_size=config.crop_size, augment=config.augment, normalize_tiles=per_tile)
    loss_fn = typed_loss(config)
    validate = None
    if val_set is not None:
        val_items = typed_targets(val_set, source, classes, **options, desc="reading validation annotations")
        validate = _validation_loss(*validation_tiles(val_items, config.crop_size, normalize_tiles=per_tile), loss_fn,
                                    config.precision, config.batch_size)
    model = SegmentationModel.new([*INSTANCE_CLASSES, *classes], architecture="typed_unet", channel=channel,
                                  seed=config.seed, normalization=normalization,
                                  **(model_options or {}))
    model.config.update(task=TASK, types=list(classes))
    checkpoint_meta = {key: model.config[key] for key in ("task", "types", "classes", "architecture", "normalization",
                                                          "channel")}
    checkpoint_meta["training"] = asdict(config)
    run = Optimization(model.network, config, checkpoint_dir, checkpoint_meta, device=device)
    if meta is not None:
        run.resume(meta)
    run.run(sampler.batch, loss_fn, validate=validate, desc="training (typed cells)", progress=progress,
            start_time=start_time)
    if run.best is not None:
        model.network.load_state_dict(run.best["state"])
    model.network.eval()
    history = run.history
    model.config["training"] = {
        **asdict(config), "annotations": str(annotations),
        "train_images": len(train_set.images), "validation_images": len(val_set.images) if val_set else 0,
        "cells_per_type": {name: int(sum(k == name for im in train_set.images
                                         for k in train_set.instance_classes(im, source))) for name in classes},
        "selected_iteration": run.best["iteration"] if run.best else run.iteration,
        "validation_loss": round(run.best["validation_loss"], 6) if run.best else None,
        "final_loss": float(np.mean([h["loss"] for h in history[-50:]])) if history else None,
        "wall_time_s": round(time.perf_counter() - start_time, 1),
    }
    model.save(out, overwrite=True)
    write_training_record(out, history, ylabel="log-Dice + type cross-entropy", title=f"typed cells: {', '.join(classes)}")
    return model
