"""Training a nucleus model from classical labels (Matuszewski & Ranefall 2021): 3-class U-Net,
log-Dice loss, Adam, the 8 flips and rotations, per-tile normalization, and the checkpoint with the
lowest loss on a validation split labelled the same way."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from skimage.measure import regionprops

from ..._errors import CellmixerError
from ..._progress import progress_bar
from ..._settings import setting, setting_like, settings_from, takes_settings
from ...engine import (
    LabelledImage,
    OptimizationSettings,
    SegmentationModel,
    TileSampler,
    Training,
    stored_architecture,
    validation_loss,
    validation_tiles,
)
from ...io import check_not_constant, collect_inputs, find_mask, locks_outputs, read_image, read_labels, warn_if_mask
from ...ops import (
    CLASSICAL_METHODS,
    DICE_WEIGHTS,
    ClassicalSettings,
    classical_labels,
    log_dice_loss,
    three_class_targets,
)

TASK = "nuclei"  # the "task" of its model folders
NUCLEUS_CLASSES = ["nucleus", "separation line"]
LABEL_FILES = "files"  # labels read from label images instead of made by a classical method


@dataclass
class NucleiTrainingConfig(OptimizationSettings):
    """Settings of :func:`train_nuclei` (saved in the model's ``config.json``).

    The paper trains 50 epochs of 3200 augmented 512-pixel tiles with Adam at 1e-5 on a GPU; on a
    CPU the defaults take fewer, smaller steps at a higher rate (Adam 1e-3, poly decay), with the
    paper's L2 regularisation 1e-4 as weight decay.
    """

    iterations: int = setting_like(OptimizationSettings, "iterations", 3000)
    crop_size: int = setting_like(OptimizationSettings, "crop_size", 256, help="crops, and tiles at prediction")
    optimizer: str = setting_like(OptimizationSettings, "optimizer", "adam")
    weight_decay: float = setting_like(OptimizationSettings, "weight_decay", 1e-4)
    lr_schedule: str = setting_like(OptimizationSettings, "lr_schedule", "poly")
    augment: bool = setting_like(OptimizationSettings, "augment", True, help="flips and rotations")
    labels: str = setting(ClassicalSettings.method, "classical method, or 'files' to read label images (default: "
                          "shape/intensity, or files with --label-dir)", choices=(*CLASSICAL_METHODS, LABEL_FILES),
                          cli=False)
    dice_weights: tuple = setting(DICE_WEIGHTS, "log-Dice weights of background, nucleus and separation line",
                                  at_least=0, metavar=("BG", "N", "SL"))
    line_radius: int = setting(1, "separation-line pixels have another nucleus this close", at_least=1)
    min_solidity: float = setting(0.0, "leave classical objects less convex than this out of the loss, e.g. 0.9 "
                                       "(mostly unsplit clumps; 0 keeps all)", at_least=0, below=1)
    validation_fraction: float = setting(0.2, "share of the images held out for validation when --validation is "
                                              "not given", above=0, below=1)
    classical_options: dict = setting({}, "options of the classical labeller", cli=False)

    def validate(self) -> None:
        super().validate()
        if len(self.dice_weights) != 3 or sum(self.dice_weights) <= 0:
            self.bad("dice_weights", " ".join(map(str, self.dice_weights)), "give 3 non-negative weights "
                     "(background, nucleus, separation line), not all 0")


def nucleus_targets(paths, *, labels: str = ClassicalSettings.method, label_dir=None, label_suffix: str = "_labels",
                    channel: int | None = None, line_radius: int = 1, min_solidity: float = 0.0,
                    classical_options: dict | None = None,
                    progress: bool = True, desc: str = "labelling") -> list[LabelledImage]:
    """Read each image and make its training target, from a classical method or from label files.

    Parameters
    ----------
    paths : list of Path
    labels : str
        A method of :func:`cellmixer.ops.classical_labels`; with ``"consensus"`` the
        clusters the configurations disagree on are ignored by the loss. ``"files"`` reads label
        images instead, found by :func:`cellmixer.io.find_mask` in ``label_dir`` as
        ``<image stem><label_suffix>.<ext>`` or ``<image stem>.<ext>``.
    line_radius : int
        Width of the separation lines (see :func:`cellmixer.ops.three_class_targets`).
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
        warn_if_mask(image, path)
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
        items.append(LabelledImage(image.astype(np.float32, copy=False), target, Path(path)))
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


def _split(paths: list[Path], fraction: float, seed: int) -> tuple[list[Path], list[Path]]:
    if len(paths) < 2:
        raise CellmixerError(f"training needs at least 2 images (one for validation), found {len(paths)}; add "
                             "images or give a --validation folder.")
    order = np.random.default_rng(seed).permutation(len(paths))
    n_val = min(len(paths) - 1, max(1, round(fraction * len(paths))))
    return [paths[i] for i in sorted(order[n_val:])], [paths[i] for i in sorted(order[:n_val])]


def _image_paths(inputs, pattern: str) -> list[Path]:
    return [p for p, _ in collect_inputs(inputs, pattern=pattern)]


class NucleiTraining(Training):
    """Classical labels of each image -> 3-class targets -> log-Dice; the weights with the lowest loss
    on the validation images (labelled the same way) are kept."""

    task = TASK
    description = "training (nuclei)"
    loss_name = "log-Dice loss"
    selects_best = True

    def __init__(self, images, output, config: NucleiTrainingConfig, *, validation=None, label_dir=None,
                 label_suffix: str = "_labels", pattern: str = "*", channel: int | None = None, model: str = "unet",
                 model_options: dict | None = None, **run):
        super().__init__(config, output, **run)
        self.images, self.validation, self.pattern, self.channel = images, validation, pattern, channel
        self.label_dir, self.label_suffix = label_dir, label_suffix
        self.architecture, self.model_options = model, model_options or {}
        self.train_paths = self.val_paths = None

    def restore(self, meta):
        self.channel = meta["channel"]
        self.architecture, self.model_options = stored_architecture(meta)
        self.train_paths = [Path(p) for p in meta["train_images"]]
        self.val_paths = [Path(p) for p in meta["validation_images"]]
        self.label_dir, self.label_suffix = meta.get("label_dir"), meta.get("label_suffix", self.label_suffix)

    def prepare(self):
        config = self.config
        if self.train_paths is None:
            paths = _image_paths(self.images, self.pattern)
            if self.validation is None:
                self.train_paths, self.val_paths = _split(paths, config.validation_fraction, config.seed)
            else:
                self.train_paths, self.val_paths = paths, _image_paths(self.validation, self.pattern)
        options = dict(labels=config.labels, label_dir=self.label_dir, label_suffix=self.label_suffix,
                       channel=self.channel, line_radius=config.line_radius, min_solidity=config.min_solidity,
                       classical_options=config.classical_options, progress=self.progress)
        self.train_items = nucleus_targets(self.train_paths, **options, desc="labelling training images")
        self.val_items = nucleus_targets(self.val_paths, **options, desc="labelling validation images")

    def new_model(self):
        return SegmentationModel.new(
            NUCLEUS_CLASSES, architecture=self.architecture, channel=self.channel, seed=self.config.seed,
            normalization={"method": "tile", "tile_size": self.config.crop_size}, **self.model_options)

    def objective(self, model):
        config = self.config
        sampler = TileSampler(self.train_items, crop_size=config.crop_size, augment=config.augment)

        def loss_fn(logits, y):
            return log_dice_loss(logits, y, weights=config.dice_weights)

        validate = validation_loss(*validation_tiles(self.val_items, config.crop_size), loss_fn, config.precision,
                                    config.batch_size)
        return sampler.batch, loss_fn, validate

    def checkpoint_extras(self):
        return dict(train_images=[str(p) for p in self.train_paths],
                    validation_images=[str(p) for p in self.val_paths],
                    label_dir=None if self.label_dir is None else str(self.label_dir), label_suffix=self.label_suffix)

    def summary(self):
        return {"train_images": len(self.train_paths), "validation_images": len(self.val_paths)}

    def title(self):
        return f"nuclei ({self.config.labels} labels)"


@locks_outputs
@takes_settings(NucleiTrainingConfig)
def train_nuclei(images, output, *, validation=None, labels: str | None = None, label_dir=None,
                 label_suffix: str = "_labels", pattern: str = "*", channel: int | None = None,
                 diameter_range=ClassicalSettings.diameter_range, model: str = "unet",
                 model_options: dict | None = None, device: str = "auto", threads: int | None = None,
                 resume: bool = False, overwrite: bool = False, progress: bool = True,
                 **settings) -> SegmentationModel:
    """Train a 3-class nucleus model (background, nucleus, separation line) without annotation.

    Each image is labelled by a classical pipeline (:func:`cellmixer.ops.classical_labels`,
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
    ClassicalSettings(diameter_range=tuple(diameter_range))  # checked before any work
    if labels is None:
        labels = LABEL_FILES if label_dir is not None else ClassicalSettings.method
    elif label_dir is not None and labels != LABEL_FILES:
        raise CellmixerError(f"--labels {labels} and --label-dir: give one source of labels, a classical method "
                             "or a folder of label images.")
    config = settings_from(NucleiTrainingConfig, {**settings, "labels": labels,
                                                  "classical_options": {"diameter_range": list(diameter_range)}},
                           function="train_nuclei")
    config.dice_weights = tuple(config.dice_weights)
    if config.pretrained is not None:
        config.pretrained = str(config.pretrained)
    return NucleiTraining(images, output, config, validation=validation, label_dir=label_dir,
                          label_suffix=label_suffix, pattern=pattern, channel=channel, model=model,
                          model_options=model_options, device=device, threads=threads, resume=resume,
                          overwrite=overwrite, progress=progress).fit()
