"""Segmentation networks and the model folder that holds a trained one."""

from ._model import CONFIG_FILE, WEIGHTS_FILE, SegmentationModel, rescale_image
from ._normalization import input_statistics
from ._registry import ARCHITECTURES, architecture_options, build_network
from ._unet import UNet

__all__ = ["ARCHITECTURES", "CONFIG_FILE", "SegmentationModel", "UNet", "WEIGHTS_FILE",
           "architecture_options", "build_network", "input_statistics", "rescale_image"]
