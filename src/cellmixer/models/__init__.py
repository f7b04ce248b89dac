"""Segmentation networks and the model folder that holds a trained one."""

from ._model import CONFIG_FILE, WEIGHTS_FILE, SegmentationModel, rescale_image
from ._normalization import input_statistics
from ._precision import PRECISIONS, autocast, bfloat16_supported, resolve_precision
from ._pretrained import dinov2_state_dict, dinov2_url, load_dinov2_weights, load_pretrained_encoder, read_weights
from ._registry import ARCHITECTURES, architecture_options, build_network
from ._segmenter import LinearDecoder, MaskTransformer, Segmenter, ViTLinear
from ._typed_unet import TypedUNet
from ._unet import UNet
from ._vit import VIT_SIZES, VisionTransformer

__all__ = ["ARCHITECTURES", "CONFIG_FILE", "PRECISIONS", "SegmentationModel", "TypedUNet", "UNet", "WEIGHTS_FILE",
           "architecture_options", "autocast", "bfloat16_supported", "build_network", "input_statistics", "rescale_image", "resolve_precision",
           # DINOv2 ViT encoder, Segmenter and linear decoders, pretrained weights
           "LinearDecoder", "MaskTransformer", "Segmenter", "VIT_SIZES", "ViTLinear", "VisionTransformer",
           "dinov2_state_dict", "dinov2_url", "load_dinov2_weights", "load_pretrained_encoder", "read_weights"]
