"""Scores: per-class accuracy and IoU of cell-type maps, instance scores of label images, and ``evaluate``."""

from ._centroids import (DEFAULT_MATCH_DISTANCE, centroid_scores, detection_scores, label_centroids, match_points,
                         mean_dice, summarize_centroid_scores)
from ._coco import AREA_RANGES, LIVECELL_MAX_DETECTIONS, coco_evaluate, evaluate_typed, format_typed_table
from ._evaluate import (NOT_ANNOTATED, EvaluationImage, artificial_mixtures, evaluate, evaluation_panel,
                        load_evaluation_images, score)
from ._instances import (AP_THRESHOLDS, F1_THRESHOLDS, InstanceOverlap, average_precision, dice_per_class,
                         erode_labels, instance_overlap, instance_scores, match_instances, mean_f1, missed_objects,
                         object_jaccard, remove_border_objects, splits_and_merges)
from ._nuclei import evaluate_nuclei, format_nuclei_table, nucleus_scores, summarize_instance_scores
from ._semantic import confusion_matrix, format_table, segmentation_scores

__all__ = ["AP_THRESHOLDS", "F1_THRESHOLDS", "NOT_ANNOTATED", "EvaluationImage", "InstanceOverlap", "artificial_mixtures",
           "average_precision", "confusion_matrix", "dice_per_class", "erode_labels", "evaluate", "evaluate_nuclei", "evaluation_panel",
           "format_nuclei_table", "format_table", "instance_overlap", "instance_scores", "load_evaluation_images", "match_instances", "mean_f1",
           "missed_objects", "nucleus_scores", "object_jaccard", "remove_border_objects", "score", "segmentation_scores",
           "splits_and_merges", "summarize_instance_scores",
           "AREA_RANGES", "LIVECELL_MAX_DETECTIONS", "coco_evaluate", "evaluate_typed", "format_typed_table",
           "DEFAULT_MATCH_DISTANCE", "centroid_scores", "detection_scores", "label_centroids", "match_points", "mean_dice",
           "summarize_centroid_scores"]
