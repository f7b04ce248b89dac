"""Segmentation networks and the model folder that holds a trained one."""

from ._folder import CONFIG_FILE, FORMAT, FORMAT_VERSION, WEIGHTS_FILE, state_dict_mismatch
from ._pretrained import dinov2_state_dict, dinov2_url, load_dinov2_weights, load_pretrained_encoder, read_weights
from ._registry import (
    ARCHITECTURES,
    MAX_PARAMETERS,
    ArchitectureOptions,
    architecture_options,
    build_network,
    check_network,
    check_options,
    parameter_count,
)
from ._segmenter import LinearDecoder, MaskTransformer, Segmenter, ViTLinear
from ._typed_unet import TypedUNet
from ._unet import UNet
from ._vit import VIT_SIZES, SwiGLUFFN, VisionTransformer

__all__ = [
    "ARCHITECTURES",
    "ArchitectureOptions",
    "MAX_PARAMETERS",
    "parameter_count",
    "CONFIG_FILE",
    "FORMAT",
    "FORMAT_VERSION",
    "state_dict_mismatch",
    "LinearDecoder",
    "MaskTransformer",
    "Segmenter",
    "SwiGLUFFN",
    "TypedUNet",
    "UNet",
    "VIT_SIZES",
    "ViTLinear",
    "VisionTransformer",
    "WEIGHTS_FILE",
    "architecture_options",
    "build_network",
    "check_network",
    "check_options",
    "dinov2_state_dict",
    "dinov2_url",
    "load_dinov2_weights",
    "load_pretrained_encoder",
    "read_weights",
]
