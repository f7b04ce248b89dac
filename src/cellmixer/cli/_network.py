"""Command-line options that choose the network of a training and its pretrained encoder."""

from __future__ import annotations

import argparse
import json

from ..models import ARCHITECTURES, VIT_SIZES, architecture_options

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
