"""Scores: per-class accuracy and IoU of cell-type maps, instance scores of label images, and ``evaluate``."""

from ._centroids import (
    DEFAULT_MATCH_DISTANCE,
    centroid_scores,
    detection_scores,
    match_points,
    mean_dice,
    object_centroids,
    summarize_centroid_scores,
)
from ._coco import AP_KEYS, AREA_RANGES, LIVECELL_MAX_DETECTIONS, coco_evaluate
from ._instances import (
    AP_THRESHOLDS,
    F1_THRESHOLDS,
    InstanceOverlap,
    average_precision,
    dice_per_class,
    erode_labels,
    instance_overlap,
    instance_scores,
    match_instances,
    mean_f1,
    missed_objects,
    object_jaccard,
    remove_border_objects,
    splits_and_merges,
)
from ._semantic import confusion_matrix, format_table, segmentation_scores

__all__ = [
    "AP_KEYS", "AP_THRESHOLDS", "AREA_RANGES", "DEFAULT_MATCH_DISTANCE", "F1_THRESHOLDS", "InstanceOverlap",
    "LIVECELL_MAX_DETECTIONS", "average_precision", "centroid_scores", "coco_evaluate", "confusion_matrix",
    "detection_scores", "dice_per_class", "erode_labels", "format_table", "instance_overlap", "instance_scores",
    "object_centroids", "match_instances", "match_points", "mean_dice", "mean_f1", "missed_objects",
    "object_jaccard", "remove_border_objects", "segmentation_scores", "splits_and_merges",
    "summarize_centroid_scores",
]
