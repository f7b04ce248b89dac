"""Segmentation networks and the model folder that holds a trained one."""

from ._model import CONFIG_FILE, WEIGHTS_FILE, SegmentationModel, rescale_image
from ._normalization import input_statistics
from ._precision import PRECISIONS, autocast, bfloat16_supported, resolve_precision
from ._registry import ARCHITECTURES, architecture_options, build_network
from ._unet import UNet

__all__ = ["ARCHITECTURES", "CONFIG_FILE", "PRECISIONS", "SegmentationModel", "UNet", "WEIGHTS_FILE",
           "architecture_options", "autocast", "bfloat16_supported", "build_network", "input_statistics", "rescale_image", "resolve_precision"]
