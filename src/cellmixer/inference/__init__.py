"""Prediction on images of any size (cell types, and nucleus instances), and the files it writes."""

from ._nuclei import load_nucleus_model, predict_nuclei, segment_nuclei
from ._predict import class_overlay, collect_inputs, predict, region_summary
from ._sliding import blend_window, predict_probabilities, tile_starts, tile_statistics, upsample_probabilities

__all__ = ["blend_window", "class_overlay", "collect_inputs", "load_nucleus_model", "predict", "predict_nuclei",
           "predict_probabilities", "region_summary", "segment_nuclei", "tile_starts", "tile_statistics",
           "upsample_probabilities"]
