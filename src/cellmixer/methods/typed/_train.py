"""Supervised typed cells: one U-Net with an instance head (background / cell / boundary, the nucleus
targets) and a cell-type head, trained from COCO annotations with the shared optimisation loop."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..._errors import CellmixerError
from ..._progress import progress_bar
from ..._settings import setting, setting_like, settings_from, takes_settings
from ...engine import (
    LabelledImage,
    OptimizationSettings,
    SegmentationModel,
    TileSampler,
    Training,
    input_statistics,
    validation_loss,
    validation_tiles,
)
from ...io import locks_outputs, read_image
from ...methods.nuclei import NucleiTrainingConfig
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

    optimizer: str = setting_like(OptimizationSettings, "optimizer", "adam")
    crop_size: int = setting_like(OptimizationSettings, "crop_size", 256, help="crops, and tiles at prediction")
    weight_decay: float = setting_like(OptimizationSettings, "weight_decay", 1e-4)
    lr_schedule: str = setting_like(OptimizationSettings, "lr_schedule", "poly")
    augment: bool = setting_like(OptimizationSettings, "augment", True, help="flips and rotations")
    dice_weights: tuple = setting_like(NucleiTrainingConfig, "dice_weights", NucleiTrainingConfig.dice_weights,
                                       help="log-Dice weights of the instance head: background, cell, boundary",
                                       metavar=("BG", "CELL", "LINE"))
    type_weight: float = setting(1.0, "weight of the type head's cross-entropy", at_least=0)
    line_radius: int = setting_like(NucleiTrainingConfig, "line_radius", 1,
                                    help="boundary pixels have another cell this close")
    normalization: str = setting("tile", "network input: each tile by its mean and std, or each image by its "
                                         "percentiles", choices=tuple(NORMALIZATIONS))
    validation_fraction: float = setting(0.2, "share of images held out when --validation is not given; 0 keeps "
                                              "the last weights", at_least=0, below=1)
    class_from: str = setting(ANNOTATION, "class of each cell", cli=False)

    def validate(self) -> None:
        super().validate()
        if len(self.dice_weights) != 3 or sum(self.dice_weights) <= 0:
            self.bad("dice_weights", " ".join(map(str, self.dice_weights)), "give 3 non-negative weights "
                     "(background, cell, boundary), not all 0")


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
        items.append(LabelledImage(pixels, target, image.path))
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


class TypedTraining(Training):
    """COCO instances -> instance targets and type targets -> log-Dice + type cross-entropy, validation-selected."""

    task = TASK
    architecture = "typed_unet"
    description = "training (typed cells)"
    loss_name = "log-Dice + type cross-entropy"
    selects_best = True
    # checkpoints written before the normalization option normalized tiles
    resume_defaults = {"normalization": "tile"}

    def __init__(self, annotations, output, config: TypedTrainingConfig, *, images=None, validation=None,
                 validation_images=None, classes=None, channel: int | None = None, model_options: dict | None = None,
                 **run):
        super().__init__(config, output, **run)
        self.annotations, self.images, self.validation, self.validation_images = (annotations, images, validation,
                                                                                  validation_images)
        self.classes, self.channel, self.model_options = classes, channel, model_options or {}

    def restore(self, meta):
        self.classes, self.channel = meta["types"], meta["channel"]
        self.model_options = {k: v for k, v in meta["architecture"].items()
                              if k not in ("name", "in_channels", "num_classes")}

    def prepare(self):
        config = self.config
        self.source = source = ClassSource(config.class_from)
        train_set = read_coco(self.annotations, image_dir=self.images)
        if not any(im.annotations for im in train_set.images):
            raise CellmixerError(f"{self.annotations}: has no annotations; training needs annotated cells.")
        val_set = None if self.validation is None else read_coco(self.validation, image_dir=self.validation_images)
        if val_set is None:
            train_set, val_set = _split_images(train_set, config.validation_fraction, config.seed)
        found = sorted(set(train_set.classes(source)) | set(val_set.classes(source) if val_set else []))
        self.classes = list(self.classes) if self.classes is not None else found
        check_known(found, self.classes, where=str(self.annotations))
        self.normalization = {**NORMALIZATIONS[config.normalization]}
        if config.normalization == "tile":
            self.normalization["tile_size"] = config.crop_size
        options = dict(line_radius=config.line_radius, normalization=self.normalization, channel=self.channel,
                       progress=self.progress)
        self.train_set, self.val_set = train_set, val_set
        self.train_items = typed_targets(train_set, source, self.classes, **options,
                                         desc="reading training annotations")
        self.val_items = None if val_set is None else typed_targets(val_set, source, self.classes, **options,
                                                                    desc="reading validation annotations")

    def new_model(self):
        model = SegmentationModel.new([*INSTANCE_CLASSES, *self.classes], architecture="typed_unet",
                                      channel=self.channel, seed=self.config.seed, normalization=self.normalization,
                                      **self.model_options)
        model.config["types"] = list(self.classes)
        return model

    def objective(self, model):
        config = self.config
        per_tile = config.normalization == "tile"
        sampler = TileSampler(self.train_items, crop_size=config.crop_size, augment=config.augment,
                                normalize_tiles=per_tile)
        loss_fn = typed_loss(config)
        validate = None
        if self.val_items is not None:
            validate = validation_loss(*validation_tiles(self.val_items, config.crop_size, normalize_tiles=per_tile),
                                        loss_fn, config.precision, config.batch_size)
        return sampler.batch, loss_fn, validate

    def summary(self):
        train_set, source = self.train_set, self.source
        return {"annotations": str(self.annotations), "train_images": len(train_set.images),
                "validation_images": len(self.val_set.images) if self.val_set else 0,
                "cells_per_type": {name: int(sum(k == name for im in train_set.images
                                                 for k in train_set.instance_classes(im, source)))
                                   for name in self.classes}}

    def title(self):
        return f"typed cells: {', '.join(self.classes)}"


@locks_outputs
@takes_settings(TypedTrainingConfig)
def train_typed(annotations, output, *, images=None, validation=None, validation_images=None,
                class_from: str = ANNOTATION, classes=None, channel: int | None = None,
                model_options: dict | None = None, device: str = "auto", threads: int | None = None,
                resume: bool = False, overwrite: bool = False, progress: bool = True,
                **settings) -> SegmentationModel:
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
    config = settings_from(TypedTrainingConfig, {**settings, "class_from": str(class_from)}, function="train_typed")
    config.dice_weights = tuple(config.dice_weights)
    return TypedTraining(annotations, output, config, images=images, validation=validation,
                         validation_images=validation_images, classes=classes, channel=channel,
                         model_options=model_options, device=device, threads=threads, resume=resume,
                         overwrite=overwrite, progress=progress).fit()
