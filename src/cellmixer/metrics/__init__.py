"""Scores: per-class accuracy and IoU of cell-type maps, and the ``evaluate`` command."""

from ._evaluate import EvaluationImage, artificial_mixtures, evaluate, load_evaluation_images
from ._semantic import confusion_matrix, format_table, segmentation_scores

__all__ = ["EvaluationImage", "artificial_mixtures", "confusion_matrix", "evaluate", "format_table",
           "load_evaluation_images", "segmentation_scores"]
