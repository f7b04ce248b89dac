"""Training a cell-type segmentation model from homogeneous cultures."""

from __future__ import annotations

import argparse
from dataclasses import dataclass

import numpy as np

from ..._errors import CellmixerError
from ..._settings import given_settings, setting, setting_like, settings_from, takes_settings
from ...engine import OptimizationSettings, SegmentationModel, Training, stored_architecture
from ..._progress import note
from ...io import ImageDataset, describe_images, discover_dataset, locks_outputs, open_image, read_nuclear
from ...ops import AugmentParams, ForegroundParams, context_weights, median_diameter, nuclei_of_stain, tversky_loss
from ._data import FLAT_FIELD_SIGMA, MIXINGS, NORMALIZATIONS, CropSampler, load_pseudolabelled


# scale "auto": the factor that makes the median nucleus this many pixels wide for the network (the DeepCell
# cultures' 28-pixel nuclei at 0.5, the scale docs/benchmarks.md measured).
AUTO_NUCLEUS_DIAMETER = 14.0
SCALE_RANGE = (0.05, 4.0)
# How far around a pixel --context-weight looks for cells of another type: network pixels, about two nuclei
# at --scale auto (the one radius measured, docs/benchmarks.md).
CONTEXT_RADIUS = 24


def training_loss(training: dict):
    """The loss a CellMixer model was trained with, from its saved training settings (``config["training"]``):
    the Tversky loss, with the context weight if it had one (models from before it had none). Fine-tuning
    (``typed predict --adapt``) takes it too, so that it stresses the cells training stressed."""
    alpha = training.get("tversky_alpha", TrainingConfig.tversky_alpha)
    beta = training.get("tversky_beta", TrainingConfig.tversky_beta)
    strength = training.get("context_weight", 0.0)

    def loss(logits, y):
        weight = context_weights(y, logits.shape[1], strength=strength, radius=CONTEXT_RADIUS) if strength else None
        return tversky_loss(logits, y, alpha=alpha, beta=beta, weight=weight)

    return loss


def _scale_need(value) -> str | None:
    if value == "auto":
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not SCALE_RANGE[0] <= value <= SCALE_RANGE[1]:
        return f"give auto or a factor between {SCALE_RANGE[0]:g} and {SCALE_RANGE[1]:g}"
    return None


def _scale_text(text: str):
    """``--scale``: ``auto`` or a number."""
    if text == "auto":
        return text
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError("give auto or a factor such as 0.5") from None


def auto_scale(paths, *, nuclear=None, nuclear_channel=None, sample: int = 4) -> float | None:
    """The ``scale`` that brings the median nucleus of the images' stain to :data:`AUTO_NUCLEUS_DIAMETER`
    pixels (from up to ``sample`` images spread over ``paths``); None without a stain."""
    if nuclear is None and nuclear_channel is None:
        return None
    chosen = [paths[int(i)] for i in np.unique(np.linspace(0, len(paths) - 1, min(sample, len(paths))).round())]
    diameters = []
    for path in chosen:
        stain, _ = read_nuclear(path, nuclear=nuclear, nuclear_channel=nuclear_channel)
        diameter = median_diameter(nuclei_of_stain(stain))
        if diameter > 0:
            diameters.append(diameter)
    if not diameters:
        return None
    return float(np.clip(round(AUTO_NUCLEUS_DIAMETER / float(np.median(diameters)), 2), *SCALE_RANGE))


@dataclass
class TrainingConfig(OptimizationSettings):
    """Training settings (saved in the model's ``config.json``). The loss and the mixup weight follow the
    CellMixer paper (Tversky loss, lam = 0.5); the optimisation (Adam at 1e-3 with poly decay, crops of
    192, 1300 steps) and the mixtures (blend and mosaic, photometric augmentation) were chosen on
    ``bench/typed_cocultures.py`` and fit a 2-core CPU (docs/benchmarks.md)."""

    # 1300 steps: two types train in under 30 minutes on 2 CPU cores (1.3 s per step, docs/benchmarks.md)
    iterations: int = setting_like(OptimizationSettings, "iterations", 1300)
    crop_size: int = setting_like(OptimizationSettings, "crop_size", 192)
    optimizer: str = setting_like(OptimizationSettings, "optimizer", "adam")
    lr_schedule: str = setting_like(OptimizationSettings, "lr_schedule", "poly")
    mode: str = setting("cellmixer", "train on artificial mixtures (cellmixer) or homogeneous crops (baseline)",
                        choices=("cellmixer", "baseline"))
    lam: float = setting(0.5, "mixup weight of the first culture (0.5 blends both equally)", above=0, below=1)
    mix_probability: float = setting(1.0, "share of samples that are mixtures", at_least=0, at_most=1)
    tversky_alpha: float = setting(0.3, "weight of false positives", at_least=0)
    tversky_beta: float = setting(0.7, "weight of false negatives", at_least=0)
    boundary_ignore: int = setting(0, "leave pseudo-label pixels this close to an outline out of the loss",
                                   at_least=0)
    context_weight: float = setting(2.0, "a cell pixel weighs 1 + this times the share of another type's cells "
                                         "around it in the loss, so that cells among cells of another type (what "
                                         "typing gets wrong) count more; 0 weighs every pixel alike",
                                    at_least=0, at_most=100)
    scale: float | str = setting("auto", "resize images by this factor for the network, e.g. 0.5 for large cells; "
                                      "auto: nuclei of the stain become about 14 pixels wide (1 without a stain)",
                                 check=_scale_need, parse=_scale_text)
    mixing: str = setting("both", "how two cultures are mixed: blend (CellMixer's mixup), mosaic (cells of both "
                                   "side by side and touching, as in a confluent co-culture; cut around the nuclei "
                                   "of --nuclear-replace/--nuclear-channel, or around the foreground's cells), or "
                                   "both", choices=MIXINGS)
    normalization: str = setting("background", "network input: each image centred and scaled by its background "
                                               "(background), or first divided by its background level, so that "
                                               "uneven light, vignetting and exposure cancel (flatfield)",
                                 choices=NORMALIZATIONS)
    photometric: bool = setting(True, "also augment uneven illumination, contrast from half to twice, bright "
                                       "and dark contrast apart, and the two cultures of a mosaic at exposures "
                                       "up to 2x apart (images of other days, microscopes, exposures)")
    nuclear_input: bool = setting(True, "where a nuclear stain is given (--nuclear-replace, --nuclear-channel), the "
                                         "network also reads it, each culture's at a gain from 0.5 to 2 (its nuclei's "
                                         "shape and texture, not its brightness); prediction then needs the stain too")

    def validate(self) -> None:
        super().validate()
        if self.tversky_alpha + self.tversky_beta <= 0:
            self.bad("tversky_alpha", self.tversky_alpha, "alpha and beta must not both be 0")


def training_pixel_size(paths) -> float | None:
    """The median pixel size (micrometres, along x) of the images whose files record one, or None."""
    sizes = [size[1] for size in (open_image(path).pixel_size for path in paths) if size is not None]
    return float(np.median(sizes)) if sizes else None


class CellMixerTraining(Training):
    """Pseudo-labels of each culture, artificial mixtures of two, the Tversky loss."""

    loss_name = "Tversky loss"

    def __init__(self, data, output, config: TrainingConfig, *, classes=None, pattern: str = "*",
                 channel: int | None = None, nuclear=None, nuclear_channel=None, model: str = "unet",
                 model_options: dict | None = None, foreground: ForegroundParams | dict | None = None, **run):
        super().__init__(config, output, **run)
        self.data, self.classes, self.pattern, self.channel = data, classes, pattern, channel
        self.nuclear, self.nuclear_channel = nuclear, nuclear_channel
        self.architecture, self.model_options = model, model_options or {}
        self.foreground = ForegroundParams(**foreground) if isinstance(foreground, dict) else (
            foreground or ForegroundParams())
        # the foreground settings given (a dict: its keys; settings: those not at their defaults)
        self.foreground_given = set(foreground) if isinstance(foreground, dict) else given_settings(self.foreground)
        self.stored_classes = None

    def resume_conflicts(self, meta):
        found = super().resume_conflicts(meta)
        if self.classes is not None and list(self.classes) != meta.get("classes"):
            found.append((f"--classes {' '.join(self.classes)}", " ".join(map(str, meta.get("classes") or []))))
        stored = (meta.get("normalization") or {}).get("foreground") or {}
        for name in sorted(self.foreground_given):
            value = getattr(self.foreground, name)
            if stored.get(name, value) != value:
                found.append((f"--{name.replace('_', '-')} {value}", f"{name} {stored[name]}"))
        return found

    @property
    def description(self) -> str:
        return f"training ({self.config.mode})"

    def restore(self, meta):
        nuclear = meta.get("nuclear", {})
        self.nuclear = tuple(nuclear["replace"]) if nuclear.get("replace") else nuclear.get("folder", self.nuclear)
        self.nuclear_channel = nuclear.get("channel", self.nuclear_channel)
        self.foreground = ForegroundParams(**meta["normalization"]["foreground"])
        self.classes = self.stored_classes = meta["classes"]
        self.channel = meta["channel"]
        self.config.scale = meta.get("input_scale", 1.0)
        self.architecture, self.model_options = stored_architecture(meta)

    def prepare(self):
        data = self.data
        self.dataset = data if isinstance(data, ImageDataset) else discover_dataset(
            data, classes=self.classes, min_classes=2, pattern=self.pattern, exclude=[self.output])
        if len(self.dataset.classes) < 2:
            raise CellmixerError("training needs images of at least 2 cell types; add a class folder.")
        if self.stored_classes is not None and self.dataset.classes != self.stored_classes:
            raise CellmixerError(f"--resume: the data has classes {self.dataset.classes} but the checkpoint was "
                                 f"trained on {self.stored_classes}; give the same data folder.")
        if self.progress:  # what the model will learn from, before the work starts
            by_class = {name: [p for p, k in zip(self.dataset.paths, self.dataset.labels) if k == i]
                        for i, name in enumerate(self.dataset.classes, start=1)}
            for line in describe_images(by_class):
                note(line)
        config = self.config
        if config.scale == "auto":
            found = auto_scale(self.dataset.paths, nuclear=self.nuclear, nuclear_channel=self.nuclear_channel)
            config.scale = 1.0 if found is None else found
            if found is not None and self.progress:
                note(f"--scale auto: {found:g} (nuclei of the stain become {AUTO_NUCLEUS_DIAMETER:g} pixels wide)")
        self.images = load_pseudolabelled(self.dataset, foreground=self.foreground, channel=self.channel,
                                          scale=config.scale, min_size=config.crop_size,
                                          boundary_ignore=config.boundary_ignore, normalization=config.normalization,
                                          seeds=config.mode == "cellmixer" and config.mixing != "blend",
                                          nuclear_input=self.nuclear_input, nuclear=self.nuclear,
                                          nuclear_channel=self.nuclear_channel, progress=self.progress)

    @property
    def nuclear_input(self) -> bool:
        """Whether the network reads the nuclear stain: asked for, and a stain given."""
        return self.config.nuclear_input and (self.nuclear is not None or self.nuclear_channel is not None)

    def new_model(self):
        model = SegmentationModel.new(
            self.dataset.classes, architecture=self.architecture, channel=self.channel, input_scale=self.config.scale,
            nuclear_input=self.nuclear_input, seed=self.config.seed, normalization={"method": self.config.normalization,
                                                  "foreground": self.foreground.to_dict(),
                                                  **({"sigma": FLAT_FIELD_SIGMA}
                                                     if self.config.normalization == "flatfield" else {})},
            **self.model_options)
        model.config["pixel_size"] = training_pixel_size(self.dataset.paths)
        return model

    def objective(self, model):
        config = self.config
        augment_params = (AugmentParams.photometric() if config.photometric else AugmentParams()) if config.augment \
            else None
        sampler = CropSampler(self.images, len(self.dataset.classes) + 1, crop_size=config.crop_size, mode=config.mode,
                              lam=config.lam, mix_probability=config.mix_probability, mixing=config.mixing,
                              augment_params=augment_params)

        return sampler.batch, training_loss(vars(config)), None

    def checkpoint_extras(self):
        return {"nuclear": self._nuclear_record()}

    def _nuclear_record(self) -> dict:
        if isinstance(self.nuclear, (tuple, list)):
            return {"replace": list(self.nuclear), "channel": self.nuclear_channel}
        return {"folder": None if self.nuclear is None else str(self.nuclear), "channel": self.nuclear_channel}

    def summary(self):
        dataset = self.dataset
        return {"data": str(dataset.root) if dataset.root is not None else None, "nuclear": self._nuclear_record(),
                "images_per_class": {name: int(sum(1 for k in dataset.labels if k == i + 1))
                                     for i, name in enumerate(dataset.classes)}}

    def title(self):
        return f"{self.config.mode}: {', '.join(self.dataset.classes)}"


@locks_outputs
@takes_settings(TrainingConfig)
def train(data, output, *, classes=None, pattern: str = "*", channel: int | None = None, nuclear=None,
          nuclear_channel=None, model: str = "unet",
          model_options: dict | None = None, foreground: ForegroundParams | dict | None = None, device: str = "auto",
          threads: int | None = None, resume: bool = False, overwrite: bool = False, progress: bool = True,
          **settings) -> SegmentationModel:
    """Train a model that labels each pixel as background or one of the cell types.

    Only image-level labels are used: the folder a culture is in. Each image's foreground is found
    without supervision (:func:`cellmixer.extract_foreground`) and labelled with its
    class. In ``'cellmixer'`` mode the network sees artificial mixtures of two cultures; in
    ``'baseline'`` mode homogeneous crops only.

    Parameters
    ----------
    data : str, Path or ImageDataset
        ``ROOT`` with one sub-folder of images per cell type, or a prepared dataset.
    output : str or Path
        The model folder to write: ``config.json``, ``weights.safetensors``, ``training_log.csv``,
        ``training_curve.png`` and ``checkpoint/`` (to resume or extend the training).
    classes : list of str, optional
        Class folders to use, in order (default: all, sorted by name).
    pattern : str
        Only image files whose name matches this glob pattern (e.g. ``'*phase*'``).
    channel : int or str, optional
        Channel of multi-channel images.
    nuclear : str, Path or (str, str), optional
        The nuclear stain of each image, for ``mixing='mosaic'`` or ``'both'`` (mosaics are cut
        around its nuclei): a folder of images named like them, or ``(old, new)``, the image's file
        name with ``old`` replaced by ``new`` (``("phase", "nuclear")``).
    nuclear_channel : int or str, optional
        The nuclear stain is this channel of the image file itself.
    mode : {'cellmixer', 'baseline'}
    model : str
        Architecture name: ``'unet'``, ``'segmenter'`` (DINOv2 ViT encoder + Segmenter mask
        transformer, the paper's model) or ``'vit-linear'``; ``model_options`` are its keyword options
        (U-Net: ``width``, ``depth``; ViT: ``size``, ``registers``, ``input_size``, ...; see
        :func:`cellmixer.models.architecture_options`).
    pretrained : str, optional
        DINOv2 weights for the ViT encoder: a file (official or Hugging Face naming, ``.pth`` or
        ``.safetensors``) or a name (``dinov2_vits14``, ``facebook/dinov2-small``, ...: downloaded
        once, needs the internet).
    freeze_encoder : bool
        Train the decoder only; the (pretrained) encoder stays as it is.
    encoder_lr_scale : float
        Fine-tune the encoder at ``learning_rate * encoder_lr_scale`` (e.g. 0.1).
    scale : float or 'auto'
        Resize images by this factor for the network (e.g. 0.5 for large cells at high
        magnification); pseudo-labels are found at full resolution and predictions are returned at
        it. Saved in the model as ``input_scale``. ``'auto'``: the factor that makes the median
        nucleus of the nuclear stain (``nuclear``, ``nuclear_channel``) 14 pixels wide; 1 without
        a stain.
    iterations, batch_size, crop_size : int
        Optimisation steps, crops per step, crop side in pixels.
    optimizer : {'sgd', 'adam'}
    learning_rate, momentum, weight_decay : float
    lr_schedule : {'constant', 'poly'}
    mixing : {'blend', 'mosaic', 'both'}
        How two cultures are mixed (see :class:`cellmixer.methods.cellmixer.CropSampler`).
    photometric : bool
        Augment uneven illumination and contrast changes too, and expose the two cultures of half
        the mosaics apart (gain 0.5 to 2, the mosaic then normalized as a whole): images of other
        days, microscopes, exposures.
    nuclear_input : bool
        Where a stain is given (``nuclear``, ``nuclear_channel``), the network reads it as a second
        channel (normalized by its nuclei, :func:`cellmixer.ops.normalize_nuclear_stain`; each
        culture's at its own gain from 0.5 to 2, so that its nuclei's shape and texture teach the
        type, not its brightness). The model then needs the stain to predict.
    lam : float
        Mixup weight ``I = lam * I1 + (1 - lam) * I2``.
    mix_probability : float
        Share of CellMixer samples that are mixtures (the rest stay homogeneous).
    tversky_alpha, tversky_beta : float
        Weights of false positives and false negatives in the Tversky loss.
    boundary_ignore : int
        Leave pixels within this distance (full-resolution pixels) of each pseudo-label outline out
        of the loss; 0 counts every pixel.
    context_weight : float
        A cell pixel weighs ``1 + context_weight * s`` in the loss, ``s`` the share of another type's
        cells within 24 network pixels (:func:`cellmixer.ops.context_weights`): the cells among cells
        of another type, which a model leaning on the neighbourhood gets wrong, weigh more. 0 weighs
        every pixel alike.
    augment : bool
        Flips and rotations, blur, noise, brightness and contrast.
    foreground : ForegroundParams or dict, optional
        Settings of the unsupervised foreground extraction.
    precision : {'auto', 'bf16', 'fp16', 'fp32'}
        Network arithmetic during training; ``'auto'`` is bfloat16 (weights stay float32) where the
        CPU supports it natively, about 3x faster, bfloat16 or float16 on GPUs, else float32. The
        resolved value is saved.
    seed : int
        Seeds weights, sampling and augmentation: the same call gives the same model (on the same
        kind of CPU and precision).
    checkpoint_every : int
        Iterations between checkpoints.
    device : str
        ``'auto'`` (CUDA, then MPS, then the CPU; the choice is printed), ``'cpu'``, ``'cuda'``,
        ``'cuda:N'`` or ``'mps'``.
    threads : int, optional
        CPU threads for torch (default: all cores).
    resume : bool
        Continue the interrupted (or finished) run in ``output`` from its checkpoint, with the
        settings stored there; a larger ``iterations`` extends it.
    overwrite : bool
        Replace a model already in ``output``.
    progress : bool
        Show progress bars.

    Returns
    -------
    SegmentationModel
    """
    config = settings_from(TrainingConfig, settings, function="train")
    if config.pretrained is not None:
        config.pretrained = str(config.pretrained)
    return CellMixerTraining(data, output, config, classes=classes, pattern=pattern, channel=channel, nuclear=nuclear,
                             nuclear_channel=nuclear_channel, model=model,
                             model_options=model_options, foreground=foreground, device=device, threads=threads,
                             resume=resume, overwrite=overwrite, progress=progress).fit()
