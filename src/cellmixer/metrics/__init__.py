"""Scores: per-class accuracy and IoU of cell-type maps, and the ``evaluate`` command."""

from ._evaluate import (NOT_ANNOTATED, EvaluationImage, artificial_mixtures, evaluate, evaluation_panel,
                        load_evaluation_images, score)
from ._semantic import confusion_matrix, format_table, segmentation_scores

__all__ = ["NOT_ANNOTATED", "EvaluationImage", "artificial_mixtures", "confusion_matrix", "evaluate", "evaluation_panel", "format_table",
           "load_evaluation_images", "score", "segmentation_scores"]
