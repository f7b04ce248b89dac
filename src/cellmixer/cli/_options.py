"""Option groups that several commands share, each built from the settings it fills."""

from __future__ import annotations

import argparse
import json
from dataclasses import fields

from ..engine import DEVICES, PRECISIONS
from ..models import ARCHITECTURES, VIT_SIZES, architecture_options
from ..ops import THRESHOLD_METHODS, ForegroundParams

FOREGROUND_HELP = {
    "sigma_pre": "Gaussian smoothing (pixels) before the Sobel operator",
    "sigma_post": "Gaussian smoothing (pixels) of the gradient magnitude",
    "erosion_size": "side (pixels) of the grey erosion's square structuring element; 1 disables it",
    "threshold": f"{', '.join(THRESHOLD_METHODS)}, or a number on the processed gradient map",
    "log_gradient": "threshold the log of the gradient map",
    "block_size": "neighbourhood (pixels) of the 'local' threshold",
    "threshold_offset": "lowers the threshold (grows the foreground) by this much",
    "min_object_area": "drop foreground objects smaller than this (pixels)",
    "max_hole_area": "fill holes up to this size (pixels)",
}


def threshold_value(value: str):
    if value in THRESHOLD_METHODS:
        return value
    try:
        return float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"use one of {', '.join(THRESHOLD_METHODS)} or a number") from None


def add_data_options(parser, *, classes: bool = True) -> None:
    group = parser.add_argument_group("input images")
    if classes:
        group.add_argument("--classes", nargs="+", metavar="NAME",
                           help="class folders to use, in this order (default: all, sorted)")
    group.add_argument("--pattern", default="*", help="only files whose name matches this glob (e.g. '*phase*')")
    group.add_argument("--channel", type=int, default=None, help="channel of multi-channel images (0-based)")


def add_foreground_options(parser) -> None:
    group = parser.add_argument_group("unsupervised foreground (pseudo-labels)")
    for f in fields(ForegroundParams):
        flag = "--" + f.name.replace("_", "-")
        if f.name == "log_gradient":
            group.add_argument("--no-log-gradient", dest="log_gradient", action="store_false",
                               help="threshold the gradient map itself, not its log")
        elif f.name == "threshold":
            group.add_argument(flag, type=threshold_value, default=f.default, help=f"{FOREGROUND_HELP[f.name]} (default: %(default)s)")
        else:
            group.add_argument(flag, type=type(f.default), default=f.default,
                               help=f"{FOREGROUND_HELP[f.name]} (default: %(default)s)")


def foreground_params(args) -> ForegroundParams:
    return ForegroundParams(**{f.name: getattr(args, f.name) for f in fields(ForegroundParams)})


def add_device_options(group, precision: str) -> None:
    """``--device`` and ``--precision``: where the network runs, and in which arithmetic."""
    group.add_argument("--device", default="auto", metavar="DEVICE",
                       help=f"{DEVICES}; auto = the first CUDA GPU, else MPS, else the CPU (default: %(default)s)")
    group.add_argument("--precision", choices=PRECISIONS, default=precision,
                       help="network arithmetic; auto = bfloat16 where the CPU supports it natively "
                            "(about 3x faster) and on GPUs that support it, float16 on other GPUs, else float32 "
                            "(default: %(default)s)")


def add_tiling_options(parser) -> None:
    group = parser.add_argument_group("sliding window")
    group.add_argument("--tile-size", type=tile_size, default="auto",
                       help="tile side in pixels; auto = the model's input size: 518 for ViT models, 512 for U-Nets "
                            "(default: %(default)s)")
    group.add_argument("--overlap", type=float, default=0.25, help="fraction of a tile shared with neighbours "
                                                                   "(default: %(default)s)")
    group.add_argument("--batch-size", type=int, default=4, help="tiles per forward pass (default: %(default)s)")
    add_device_options(group, "fp32")
    group.add_argument("--augment", action="store_true",
                       help="test-time augmentation: average over the 8 flips and rotations (8x slower)")


def add_output_options(parser, *, output_required: bool = True, default=None) -> None:
    group = parser.add_argument_group("output")
    group.add_argument("--output", "-o", required=output_required, default=default,
                       help="output folder" + (f" (default: {default})" if default else ""))
    group.add_argument("--overwrite", action="store_true", help="replace existing result files")
    group.add_argument("--quiet", "-q", action="store_true", help="no progress bars")


def add_optimisation_options(parser, config_class, *, augment_help: str, crop_help: str = ""):
    """The options every training shares, with the defaults of ``config_class``; returns the
    "optimisation" group for the method's own options."""
    d = config_class()
    group = parser.add_argument_group("optimisation")
    group.add_argument("--iterations", type=int, default=d.iterations, help="(default: %(default)s)")
    group.add_argument("--batch-size", type=int, default=d.batch_size, help="(default: %(default)s)")
    group.add_argument("--crop-size", type=int, default=d.crop_size, help=f"{crop_help} (default: %(default)s)".strip())
    group.add_argument("--optimizer", choices=("sgd", "adam"), default=d.optimizer, help="(default: %(default)s)")
    group.add_argument("--learning-rate", type=float, default=d.learning_rate, help="(default: %(default)s)")
    group.add_argument("--momentum", type=float, default=d.momentum, help="SGD momentum (default: %(default)s)")
    group.add_argument("--weight-decay", type=float, default=d.weight_decay, help="(default: %(default)s)")
    group.add_argument("--lr-schedule", choices=("constant", "poly"), default=d.lr_schedule,
                       help="(default: %(default)s)")
    group.add_argument("--no-augment", dest="augment", action="store_false", help=augment_help)
    group.add_argument("--seed", type=int, default=d.seed)
    group.add_argument("--threads", type=int, default=None, help="CPU threads (default: all cores)")
    add_device_options(group, d.precision)
    checkpoints = parser.add_argument_group("checkpoints")
    checkpoints.add_argument("--checkpoint-every", type=int, default=d.checkpoint_every,
                             help="iterations between checkpoints (default: %(default)s)")
    checkpoints.add_argument("--resume", action="store_true", help="continue the run in --output from its checkpoint")
    return group


def optimisation_kwargs(args) -> dict:
    names = ("iterations", "batch_size", "crop_size", "optimizer", "learning_rate", "momentum", "weight_decay",
             "lr_schedule", "augment", "seed", "threads", "precision", "device", "checkpoint_every", "resume", "overwrite")
    return {name: getattr(args, name) for name in names}



# Dedicated flags -> architecture option; anything else goes through --model-option KEY=VALUE.
ARCHITECTURE_FLAGS = {"width": "width", "depth": "depth", "vit_size": "size", "registers": "registers",
                      "input_size": "input_size"}


def _key_value(text: str) -> tuple[str, object]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"{text!r}: write KEY=VALUE, e.g. decoder_layers=1")
    try:
        parsed = json.loads(value)  # numbers, true/false, null
    except json.JSONDecodeError:
        parsed = value
    return key.replace("-", "_"), parsed


def tile_size(value: str):
    """``--tile-size``: a number of pixels, or ``auto`` (the model's input size)."""
    if value == "auto":
        return value
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError("give a number of pixels or 'auto'") from None


def add_network_options(parser):
    """The "network" and "pretrained encoder" option groups; returns the "network" group."""
    unet = architecture_options("unet")
    vit = architecture_options("segmenter")
    group = parser.add_argument_group("network")
    group.add_argument("--model", default="unet", metavar="NAME",
                       help=f"architecture: {', '.join(ARCHITECTURES)}; segmenter is the paper's DINOv2 ViT encoder "
                            "with a Segmenter mask-transformer decoder (default: %(default)s)")
    group.add_argument("--width", type=int, default=None,
                       help=f"U-Net channels at full resolution (default: {unet['width']})")
    group.add_argument("--depth", type=int, default=None, help=f"U-Net down-sampling steps (default: {unet['depth']})")
    group.add_argument("--vit-size", choices=tuple(VIT_SIZES), default=None,
                       help=f"ViT models: DINOv2 ViT-S/B/L/g with patch 14 (default: {vit['size']})")
    group.add_argument("--registers", type=int, default=None,
                       help=f"ViT models: register tokens, 4 for DINOv2 *_reg weights (default: {vit['registers']})")
    group.add_argument("--input-size", type=int, default=None,
                       help="ViT models: input side, a multiple of 14; prediction tiles have this size, use it as "
                            f"--crop-size too (the paper: 518) (default: {vit['input_size']})")
    group.add_argument("--model-option", dest="model_option", type=_key_value, action="append", default=[],
                       metavar="KEY=VALUE", help="any other option of the architecture, e.g. decoder_layers=1 or "
                                                 "norm=group (repeatable)")
    pretrained = parser.add_argument_group("pretrained encoder (segmenter, vit-linear)")
    pretrained.add_argument("--pretrained", default=None, metavar="FILE|NAME",
                            help="DINOv2 weights: a .pth or .safetensors file (official or Hugging Face naming), "
                                 "or a name such as dinov2_vits14 or facebook/dinov2-small (downloaded once)")
    pretrained.add_argument("--freeze-encoder", action="store_true", help="train the decoder only")
    pretrained.add_argument("--encoder-lr-scale", type=float, default=1.0,
                            help="fine-tune the encoder at this fraction of --learning-rate (default: %(default)s)")
    return group


def network_kwargs(args) -> dict:
    """Keyword arguments of :func:`cellmixer.train` / :func:`cellmixer.train_nuclei` from the options."""
    options = {option: getattr(args, flag) for flag, option in ARCHITECTURE_FLAGS.items()
               if getattr(args, flag) is not None}
    options.update(dict(args.model_option))
    return {"model": args.model, "model_options": options, "pretrained": args.pretrained,
            "freeze_encoder": args.freeze_encoder, "encoder_lr_scale": args.encoder_lr_scale}
