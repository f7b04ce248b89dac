"""Training a nucleus model from classical labels (Matuszewski & Ranefall 2021): 3-class U-Net,
log-Dice loss, Adam, the 8 flips and rotations, per-tile normalization, and the checkpoint with the
lowest loss on a validation split labelled the same way."""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from skimage.measure import regionprops

from ..._errors import CellmixerError
from ..._progress import progress_bar
from ...engine import (
    CHECKPOINT_DIR,
    Optimization,
    OptimizationSettings,
    SegmentationModel,
    autocast,
    load_pretrained,
    module_device,
    refuse_existing_model,
    resolve_device,
    resolve_precision,
    resume_settings,
    stored_architecture,
    tile_starts,
    tile_statistics,
    to_device,
    write_training_record,
)
from ...io import check_not_constant, collect_inputs, find_mask, prepare_output_dir, read_image, read_labels
from ...ops import (
    CLASSICAL_METHODS,
    IGNORE,
    AugmentParams,
    augment,
    classical_labels,
    log_dice_loss,
    three_class_targets,
)

TASK = "nuclei"  # the "task" of its model folders
NUCLEUS_CLASSES = ["nucleus", "separation line"]
LABEL_FILES = "files"  # labels read from label images instead of made by a classical method
FLIPS_ONLY = AugmentParams(flips=True, blur_probability=0.0, noise_probability=0.0, intensity_probability=0.0)


@dataclass
class NucleiTrainingConfig(OptimizationSettings):
    """Settings of :func:`train_nuclei` (saved in the model's ``config.json``).

    The paper trains 50 epochs of 3200 augmented 512-pixel tiles with Adam at 1e-5 on a GPU; on a
    CPU the defaults take fewer, smaller steps at a higher rate (Adam 1e-3, poly decay), with the
    paper's L2 regularisation 1e-4 as weight decay.
    """

    iterations: int = 3000
    optimizer: str = "adam"
    learning_rate: float = 1e-3
    weight_decay: float = 1e-4
    lr_schedule: str = "poly"
    labels: str = "shape/intensity"
    dice_weights: tuple = (0.2, 0.4, 0.4)
    line_radius: int = 1
    min_solidity: float = 0.0
    validation_fraction: float = 0.2
    classical_options: dict = field(default_factory=dict)

    def validate(self) -> None:
        super().validate()
        if self.labels not in (*CLASSICAL_METHODS, LABEL_FILES):
            self.bad("labels", self.labels, f"choose one of {', '.join(CLASSICAL_METHODS)}, or give --label-dir")
        if len(self.dice_weights) != 3 or min(self.dice_weights) < 0 or sum(self.dice_weights) <= 0:
            self.bad("dice_weights", list(self.dice_weights), "give 3 non-negative weights (background, nucleus, "
                     "separation line), not all 0")
        if self.line_radius < 1:
            self.bad("line_radius", self.line_radius, "must be at least 1")
        if not 0 <= self.min_solidity < 1:
            self.bad("min_solidity", self.min_solidity, "must be in [0, 1): 0 keeps every object, 0.9 ignores "
                     "objects less convex than 90 %")
        if not 0 < self.validation_fraction < 1:
            self.bad("validation_fraction", self.validation_fraction, "must be between 0 and 1")


@dataclass
class LabelledNuclei:
    """One training image with its 3-class target (0 background, 1 nucleus, 2 line, 255 ignored)."""

    image: np.ndarray
    target: np.ndarray
    path: Path | None = None


def nucleus_targets(paths, *, labels: str = "shape/intensity", label_dir=None, label_suffix: str = "_labels",
                    channel: int | None = None, line_radius: int = 1, min_solidity: float = 0.0,
                    classical_options: dict | None = None,
                    progress: bool = True, desc: str = "labelling") -> list[LabelledNuclei]:
    """Read each image and make its training target, from a classical method or from label files.

    Parameters
    ----------
    paths : list of Path
    labels : str
        A method of :func:`cellmixer.pseudolabels.classical_labels`; with ``"consensus"`` the
        clusters the configurations disagree on are ignored by the loss. ``"files"`` reads label
        images instead, found by :func:`cellmixer.io.find_mask` in ``label_dir`` as
        ``<image stem><label_suffix>.<ext>`` or ``<image stem>.<ext>``.
    line_radius : int
        Width of the separation lines (see :func:`cellmixer.pseudolabels.three_class_targets`).
    min_solidity : float
        Classical objects less convex than this (area / convex hull area) are left out of the
        loss: they are mostly clumps the pipeline did not split (0 keeps every object).
    """
    paths = list(paths)
    label_paths = {}
    if labels == LABEL_FILES:  # every label file is found before any work
        for path in paths:
            label_paths[path] = find_mask(path, masks_dir=label_dir, mask_suffix=label_suffix)
            if label_paths[path] is None:
                raise CellmixerError(f"{path}: no label image '{Path(path).stem}{label_suffix}.tif' (or .png) in "
                                     f"{label_dir or Path(path).parent}; give the folder with --label-dir, or its "
                                     "suffix with --label-suffix.")
    items = []
    for path in progress_bar(paths, desc=desc, unit="image", enabled=progress):
        image = read_image(path, channel=channel)
        check_not_constant(image, path)
        if labels == LABEL_FILES:
            instance = read_labels(label_paths[path])
            if instance.shape != image.shape:
                raise CellmixerError(f"{label_paths[path]}: {instance.shape[0]}x{instance.shape[1]} labels for a "
                                     f"{image.shape[0]}x{image.shape[1]} image; give the label image of {path}.")
            ignore = None
        else:
            instance, ignore = classical_labels(image, method=labels, **(classical_options or {}))
        if min_solidity > 0 and labels != LABEL_FILES:
            ignore = ignore | irregular_objects(instance, min_solidity)
        target = three_class_targets(instance, ignore=ignore, line_radius=line_radius)
        items.append(LabelledNuclei(image.astype(np.float32, copy=False), target, Path(path)))
    return items


def irregular_objects(labels: np.ndarray, min_solidity: float) -> np.ndarray:
    """Pixels of the objects whose solidity (area / area of the convex hull) is below ``min_solidity``.

    >>> labels = np.zeros((20, 20), int); labels[2:8, 2:8] = 1                  # a square nucleus
    >>> labels[10:18, 2:4] = 2; labels[16:18, 2:18] = 2                           # an L-shaped clump
    >>> [int(v) for v in np.unique(labels[irregular_objects(labels, 0.9)])]
    [2]
    """
    irregular = [r.label for r in regionprops(labels) if r.solidity < min_solidity]
    return np.isin(labels, irregular)


def _normalize(tile: np.ndarray) -> np.ndarray:
    mean, std = tile_statistics(tile)
    return (tile - np.float32(mean)) / np.float32(std)


def _crop_or_pad(image: np.ndarray, target: np.ndarray, y: int, x: int, size: int):
    image, target = image[y:y + size, x:x + size], target[y:y + size, x:x + size]
    pad = ((0, size - image.shape[0]), (0, size - image.shape[1]))
    if any(p[1] for p in pad):  # image smaller than the crop: mirror it, and do not score the mirror
        image = np.pad(image, pad, mode="symmetric")
        # targets may carry more planes after the two image axes (e.g. cell type next to the 3 classes)
        target = np.pad(target, pad + ((0, 0),) * (target.ndim - 2), constant_values=IGNORE)
    return image, target


class NucleiSampler:
    """Random crops of labelled images: one of the 8 flips and rotations, then normalized by the
    crop's own mean and standard deviation (the paper normalizes each augmented tile;
    ``normalize_tiles=False`` for images normalized beforehand as a whole)."""

    def __init__(self, items: list[LabelledNuclei], *, crop_size: int, augment: bool = True,
                 normalize_tiles: bool = True):
        self.items = items
        self.crop_size = crop_size
        self.augment = augment
        self.normalize = _normalize if normalize_tiles else np.asarray
        area = np.array([it.image.size for it in items], np.float64)
        self.weights = area / area.sum()

    def sample(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        item = self.items[rng.choice(len(self.items), p=self.weights)]
        h, w = item.image.shape
        c = self.crop_size
        y, x = int(rng.integers(max(1, h - c + 1))), int(rng.integers(max(1, w - c + 1)))
        image, target = _crop_or_pad(item.image, item.target, y, x, c)
        if self.augment:
            image, target = augment(image, target, rng, FLIPS_ONLY)
        return self.normalize(np.ascontiguousarray(image, np.float32)), np.ascontiguousarray(target)

    def batch(self, rng: np.random.Generator, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
        samples = [self.sample(rng) for _ in range(batch_size)]
        return (np.stack([s[0] for s in samples])[:, None].astype(np.float32),
                np.stack([s[1] for s in samples]).astype(np.int64))


def validation_tiles(items: list[LabelledNuclei], crop_size: int, *,
                     normalize_tiles: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Every validation image cut into crop-sized tiles that cover it (the last ones overlap)."""
    normalize = _normalize if normalize_tiles else np.asarray
    images, targets = [], []
    for item in items:
        h, w = item.image.shape
        for y in tile_starts(h, crop_size, crop_size):
            for x in tile_starts(w, crop_size, crop_size):
                image, target = _crop_or_pad(item.image, item.target, y, x, crop_size)
                images.append(normalize(np.ascontiguousarray(image, np.float32)))
                targets.append(target)
    return np.stack(images)[:, None], np.stack(targets).astype(np.int64)


def _validation_loss(images: np.ndarray, targets: np.ndarray, loss_fn, precision: str, batch_size: int):
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


def _split(paths: list[Path], fraction: float, seed: int) -> tuple[list[Path], list[Path]]:
    if len(paths) < 2:
        raise CellmixerError(f"training needs at least 2 images (one for validation), found {len(paths)}; add "
                             "images or give a --validation folder.")
    order = np.random.default_rng(seed).permutation(len(paths))
    n_val = min(len(paths) - 1, max(1, round(fraction * len(paths))))
    return [paths[i] for i in sorted(order[n_val:])], [paths[i] for i in sorted(order[:n_val])]


def _image_paths(inputs, pattern: str) -> list[Path]:
    return [p for p, _ in collect_inputs(inputs, pattern=pattern)]


def train_nuclei(images, output, *, validation=None, labels: str | None = None, label_dir=None,
                 label_suffix: str = "_labels", pattern: str = "*", channel: int | None = None,
                 diameter_range=(10, 50), model: str = "unet", model_options: dict | None = None,
                 pretrained: str | None = None, freeze_encoder: bool = False, encoder_lr_scale: float = 1.0,
                 iterations: int = 3000, batch_size: int = 8, crop_size: int = 256, optimizer: str = "adam",
                 learning_rate: float = 1e-3, momentum: float = 0.9, weight_decay: float = 1e-4,
                 lr_schedule: str = "poly", dice_weights=(0.2, 0.4, 0.4), line_radius: int = 1,
                 min_solidity: float = 0.0,
                 validation_fraction: float = 0.2, augment: bool = True, precision: str = "auto", seed: int = 0,
                 checkpoint_every: int = 250, device: str = "auto", threads: int | None = None, resume: bool = False,
                 overwrite: bool = False, progress: bool = True) -> SegmentationModel:
    """Train a 3-class nucleus model (background, nucleus, separation line) without annotation.

    Each image is labelled by a classical pipeline (:func:`cellmixer.pseudolabels.classical_labels`,
    CellProfiler's IdentifyPrimaryObjects) and turned into a 3-class target; a U-Net learns it with
    the paper's class-weighted log-Dice loss. The weights kept are those with the lowest loss on
    validation images labelled the same way: no ground truth is used for training or selection.
    :func:`cellmixer.predict_nuclei` turns the model's output into instances.

    Parameters
    ----------
    images : str, Path or list
        A folder of images (searched recursively) or image files.
    output : str or Path
        The model folder to write (``config.json``, ``weights.safetensors``, ``training_log.csv``
        with the validation loss, ``training_curve.png``, ``checkpoint/``).
    validation : str, Path or list, optional
        Validation images; by default ``validation_fraction`` of ``images`` (a seeded split).
    labels : str, optional
        Classical method (``'shape/intensity'``, the paper's best and the default,
        ``'intensity/shape'``, ``'shape/shape'``, ``'intensity/intensity'``, or ``'consensus'``),
        or ``'files'`` (the default when ``label_dir`` is given) to read label images instead
        (e.g. labels corrected by hand, or ground truth).
    label_dir, label_suffix :
        Where label images are (default: next to each image) and their name suffix.
    pattern, channel :
        Which files of the folders to use; the channel of multi-channel images (the nuclear stain).
    diameter_range : (int, int)
        Nucleus diameters in pixels for the classical labeller.
    model, model_options :
        Architecture name and options (``width``, ``depth``), as for :func:`cellmixer.train`.
    pretrained, freeze_encoder, encoder_lr_scale :
        DINOv2 weights for a ViT encoder, and how it is trained, as for :func:`cellmixer.train`.
    iterations, batch_size, crop_size, optimizer, learning_rate, momentum, weight_decay, lr_schedule :
        Optimisation; crops are also the tiles of per-tile normalization at prediction time.
    dice_weights : (float, float, float)
        Weights of background, nucleus and separation line in the log-Dice loss.
    line_radius : int
        Separation lines are pixels with another object within this distance (3x3 square for 1).
    min_solidity : float
        Leave classical objects less convex than this out of the loss (mostly unsplit clumps);
        0 keeps every object. Not applied to label files.
    validation_fraction : float
        Share of ``images`` held out for validation when ``validation`` is not given.
    augment : bool
        Random flips and 90-degree rotations.
    precision, seed, checkpoint_every, threads, resume, overwrite, progress :
        As for :func:`cellmixer.train`; the validation loss is computed at every checkpoint.

    Returns
    -------
    SegmentationModel
        With ``config["task"] == "nuclei"``; the selected iteration and its validation loss are in
        ``config["training"]``.
    """
    device = resolve_device(device)
    start_time = time.perf_counter()
    if labels is None:
        labels = LABEL_FILES if label_dir is not None else "shape/intensity"
    elif label_dir is not None and labels != LABEL_FILES:
        raise CellmixerError(f"--labels {labels} and --label-dir: give one source of labels, a classical method "
                             "or a folder of label images.")
    config = NucleiTrainingConfig(
        iterations=iterations, batch_size=batch_size, crop_size=crop_size, optimizer=optimizer,
        learning_rate=learning_rate, momentum=momentum, weight_decay=weight_decay, lr_schedule=lr_schedule,
        augment=augment, precision=resolve_precision(precision, device), seed=seed, checkpoint_every=checkpoint_every,
        labels=labels,
        dice_weights=tuple(dice_weights), line_radius=line_radius, min_solidity=min_solidity,
        validation_fraction=validation_fraction,
        classical_options={"diameter_range": list(diameter_range)},
        pretrained=None if pretrained is None else str(pretrained), freeze_encoder=freeze_encoder,
        encoder_lr_scale=encoder_lr_scale)
    config.validate()
    out = prepare_output_dir(output)
    checkpoint_dir = out / CHECKPOINT_DIR
    meta = None
    if resume:
        meta, config = resume_settings(checkpoint_dir, NucleiTrainingConfig, task=TASK, iterations=iterations,
                                       checkpoint_every=checkpoint_every)
        channel = meta["channel"]
        model, model_options = stored_architecture(meta)
        train_paths, val_paths = [Path(p) for p in meta["train_images"]], [Path(p) for p in meta["validation_images"]]
        label_dir, label_suffix = meta.get("label_dir"), meta.get("label_suffix", label_suffix)
    else:
        if not overwrite:
            refuse_existing_model(out, checkpoint_dir)
        paths = _image_paths(images, pattern)
        if validation is None:
            train_paths, val_paths = _split(paths, config.validation_fraction, config.seed)
        else:
            train_paths, val_paths = paths, _image_paths(validation, pattern)

    segmentation_model = SegmentationModel.new(
        NUCLEUS_CLASSES, architecture=model, channel=channel, seed=config.seed,
        normalization={"method": "tile", "tile_size": config.crop_size}, **(model_options or {}))
    if meta is None:  # a resumed run has its weights in the checkpoint
        load_pretrained(segmentation_model.network, config)
    torch.set_num_threads(threads or os.cpu_count() or 1)
    target_options = dict(labels=config.labels, label_dir=label_dir, label_suffix=label_suffix, channel=channel,
                          line_radius=config.line_radius, min_solidity=config.min_solidity,
                          classical_options=config.classical_options,
                          progress=progress)
    train_items = nucleus_targets(train_paths, **target_options, desc="labelling training images")
    val_items = nucleus_targets(val_paths, **target_options, desc="labelling validation images")
    sampler = NucleiSampler(train_items, crop_size=config.crop_size, augment=config.augment)

    def loss_fn(logits, y):
        return log_dice_loss(logits, y, weights=config.dice_weights)

    validate = _validation_loss(*validation_tiles(val_items, config.crop_size), loss_fn, config.precision,
                                config.batch_size)
    segmentation_model.config["task"] = TASK
    checkpoint_meta = {key: segmentation_model.config[key]
                       for key in ("task", "classes", "architecture", "normalization", "channel")}
    checkpoint_meta.update(train_images=[str(p) for p in train_paths], validation_images=[str(p) for p in val_paths],
                           label_dir=None if label_dir is None else str(label_dir), label_suffix=label_suffix,
                           training=asdict(config))
    run = Optimization(segmentation_model.network, config, checkpoint_dir, checkpoint_meta, device=device)
    if meta is not None:
        run.resume(meta)
    run.run(sampler.batch, loss_fn, validate=validate, desc="training (nuclei)", progress=progress,
            start_time=start_time)
    segmentation_model.network.load_state_dict(run.best["state"])
    segmentation_model.network.eval()

    history = run.history
    segmentation_model.config["training"] = {
        **asdict(config),
        "train_images": len(train_paths), "validation_images": len(val_paths),
        "selected_iteration": run.best["iteration"],
        "validation_loss": round(run.best["validation_loss"], 6),
        "final_loss": float(np.mean([h["loss"] for h in history[-50:]])),
        "wall_time_s": round(time.perf_counter() - start_time, 1),
    }
    segmentation_model.save(out, overwrite=True)
    write_training_record(out, history, ylabel="log-Dice loss", title=f"nuclei ({config.labels} labels)")
    return segmentation_model
