"""Prediction on images of any size, and the files it writes."""

from ._predict import class_overlay, collect_inputs, predict, region_summary
from ._sliding import blend_window, predict_probabilities, tile_starts, upsample_probabilities

__all__ = ["blend_window", "class_overlay", "collect_inputs", "predict", "predict_probabilities", "region_summary",
           "tile_starts", "upsample_probabilities"]
