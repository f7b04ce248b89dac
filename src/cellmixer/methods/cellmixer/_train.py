"""Training a cell-type segmentation model from homogeneous cultures."""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass

import numpy as np
import torch

from ..._errors import CellmixerError
from ...engine import (
    CHECKPOINT_DIR,
    Optimization,
    OptimizationSettings,
    SegmentationModel,
    load_pretrained,
    refuse_existing_model,
    resolve_device,
    resolve_precision,
    resume_settings,
    stored_architecture,
    write_training_record,
)
from ...io import ImageDataset, discover_dataset, prepare_output_dir
from ...ops import AugmentParams, ForegroundParams, tversky_loss
from ._data import CropSampler, load_pseudolabelled


@dataclass
class TrainingConfig(OptimizationSettings):
    """Training settings (saved in the model's ``config.json``). Defaults follow the CellMixer paper
    (SGD, learning rate 1e-3, momentum, no weight decay, Tversky loss, lam = 0.5) at CPU-sized
    iterations, batch and crop."""

    mode: str = "cellmixer"
    lam: float = 0.5
    mix_probability: float = 1.0
    tversky_alpha: float = 0.3
    tversky_beta: float = 0.7
    boundary_ignore: int = 0

    def validate(self) -> None:
        bad = self.bad
        if self.mode not in ("cellmixer", "baseline"):
            bad("mode", self.mode, "choose 'cellmixer' (artificial mixtures) or 'baseline' (homogeneous crops)")
        super().validate()
        if not 0 < self.lam < 1:
            bad("lam", self.lam, "must be between 0 and 1 (0.5 blends both cultures equally)")
        if not 0 <= self.mix_probability <= 1:
            bad("mix_probability", self.mix_probability, "must be between 0 and 1")
        if self.boundary_ignore < 0:
            bad("boundary_ignore", self.boundary_ignore, "must be 0 (off) or a width in pixels")
        if self.tversky_alpha < 0 or self.tversky_beta < 0 or self.tversky_alpha + self.tversky_beta <= 0:
            bad("tversky_alpha", self.tversky_alpha, "alpha and beta must be >= 0 and not both 0")


def train(data, output, *, classes=None, pattern: str = "*", channel: int | None = None,
          mode: str = "cellmixer", model: str = "unet", model_options: dict | None = None,
          pretrained: str | None = None, freeze_encoder: bool = False, encoder_lr_scale: float = 1.0,
          scale: float = 1.0,
          iterations: int = 2000, batch_size: int = 8, crop_size: int = 256, optimizer: str = "sgd",
          learning_rate: float = 1e-3, momentum: float = 0.9, weight_decay: float = 0.0,
          lr_schedule: str = "constant", lam: float = 0.5, mix_probability: float = 1.0,
          tversky_alpha: float = 0.3, tversky_beta: float = 0.7, boundary_ignore: int = 0, augment: bool = True,
          foreground: ForegroundParams | dict | None = None, precision: str = "auto", seed: int = 0,
          checkpoint_every: int = 250,
          device: str = "auto", threads: int | None = None, resume: bool = False, overwrite: bool = False,
          progress: bool = True) -> SegmentationModel:
    """Train a model that labels each pixel as background or one of the cell types.

    Only image-level labels are used: the folder a culture is in. Each image's foreground is found
    without supervision (:func:`cellmixer.pseudolabels.extract_foreground`) and labelled with its
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
    channel : int, optional
        Channel of multi-channel images.
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
    scale : float
        Resize images by this factor for the network (e.g. 0.5 for large cells at high
        magnification); pseudo-labels are found at full resolution and predictions are returned at
        it. Saved in the model as ``input_scale``.
    iterations, batch_size, crop_size : int
        Optimisation steps, crops per step, crop side in pixels.
    optimizer : {'sgd', 'adam'}
    learning_rate, momentum, weight_decay : float
    lr_schedule : {'constant', 'poly'}
    lam : float
        Mixup weight ``I = lam * I1 + (1 - lam) * I2``.
    mix_probability : float
        Share of CellMixer samples that are mixtures (the rest stay homogeneous).
    tversky_alpha, tversky_beta : float
        Weights of false positives and false negatives in the Tversky loss.
    boundary_ignore : int
        Leave pixels within this distance (full-resolution pixels) of each pseudo-label outline out
        of the loss; 0 counts every pixel.
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
    device = resolve_device(device)
    start_time = time.perf_counter()
    foreground = ForegroundParams(**foreground) if isinstance(foreground, dict) else (foreground or ForegroundParams())
    config = TrainingConfig(mode=mode, iterations=iterations, batch_size=batch_size, crop_size=crop_size,
                            optimizer=optimizer, learning_rate=learning_rate, momentum=momentum,
                            weight_decay=weight_decay, lr_schedule=lr_schedule, lam=lam,
                            mix_probability=mix_probability, tversky_alpha=tversky_alpha,
                            tversky_beta=tversky_beta, boundary_ignore=boundary_ignore, augment=augment,
                            precision=resolve_precision(precision, device), seed=seed, checkpoint_every=checkpoint_every,
                            pretrained=None if pretrained is None else str(pretrained),
                            freeze_encoder=freeze_encoder, encoder_lr_scale=encoder_lr_scale)
    config.validate()
    if not 0.05 <= scale <= 4:
        raise CellmixerError(f"--scale {scale}: must be between 0.05 and 4.")
    out = prepare_output_dir(output)
    checkpoint_dir = out / CHECKPOINT_DIR
    meta = None
    if resume:
        meta, config = resume_settings(checkpoint_dir, TrainingConfig, task=None, iterations=iterations,
                                       checkpoint_every=checkpoint_every)
        foreground = ForegroundParams(**meta["normalization"]["foreground"])
        classes, channel, scale = meta["classes"], meta["channel"], meta.get("input_scale", 1.0)
        model, model_options = stored_architecture(meta)
    elif not overwrite:
        refuse_existing_model(out, checkpoint_dir)

    dataset = data if isinstance(data, ImageDataset) else discover_dataset(data, classes=classes, min_classes=2,
                                                                           pattern=pattern)
    if len(dataset.classes) < 2:
        raise CellmixerError("training needs images of at least 2 cell types; add a class folder.")
    if meta is not None and dataset.classes != meta["classes"]:
        raise CellmixerError(f"--resume: the data has classes {dataset.classes} but the checkpoint was trained on "
                             f"{meta['classes']}; give the same data folder.")

    segmentation_model = SegmentationModel.new(
        dataset.classes, architecture=model, channel=channel, input_scale=scale, seed=config.seed,
        normalization={"method": "background", "foreground": foreground.to_dict()}, **(model_options or {}))
    if meta is None:  # a resumed run has its weights in the checkpoint
        load_pretrained(segmentation_model.network, config)
    torch.set_num_threads(threads or os.cpu_count() or 1)
    images = load_pseudolabelled(dataset, foreground=foreground, channel=channel, scale=scale,
                                 min_size=config.crop_size, boundary_ignore=config.boundary_ignore, progress=progress)
    sampler = CropSampler(images, len(dataset.classes) + 1, crop_size=config.crop_size, mode=config.mode,
                          lam=config.lam, mix_probability=config.mix_probability,
                          augment_params=AugmentParams() if config.augment else None)
    checkpoint_meta = {key: segmentation_model.config[key]
                       for key in ("classes", "architecture", "normalization", "channel", "input_scale")}
    run = Optimization(segmentation_model.network, config, checkpoint_dir,
                       {**checkpoint_meta, "training": asdict(config)}, device=device)
    if meta is not None:
        run.resume(meta)
    run.run(sampler.batch, lambda logits, y: tversky_loss(logits, y, alpha=config.tversky_alpha,
                                                          beta=config.tversky_beta),
            desc=f"training ({config.mode})", progress=progress, start_time=start_time)
    history = run.history

    counts = {name: int(sum(1 for k in dataset.labels if k == i + 1)) for i, name in enumerate(dataset.classes)}
    segmentation_model.config["training"] = {
        **asdict(config),
        "data": str(dataset.root) if dataset.root is not None else None,
        "images_per_class": counts,
        "final_loss": float(np.mean([h["loss"] for h in history[-50:]])) if history else None,
        "wall_time_s": round(time.perf_counter() - start_time, 1),
    }
    segmentation_model.save(out, overwrite=True)
    write_training_record(out, history, ylabel="Tversky loss", title=f"{config.mode}: {', '.join(dataset.classes)}")
    return segmentation_model
