"""Array algorithms, no files and no models: the unsupervised foreground, classical nucleus labels
and their 3-class targets, mixup and mosaics, augmentation, losses, watershed, graph cut and the
per-object table."""

from ._augment import AugmentParams, augment, random_symmetry
from ._cells import CELL_METHODS, camera_noise, cells_from_nuclei, enhance_speckles, median_diameter, nuclei_of_stain
from ._classical import (
    CLASSICAL_CONFIGURATIONS,
    CLASSICAL_METHODS,
    DECLUMP_METHODS,
    DIVIDING_LINE_METHODS,
    FILL_HOLES,
    ClassicalSettings,
    cellprofiler_threshold,
    classical_labels,
    consensus_labels,
    identify_primary_objects,
    minimum_cross_entropy_threshold,
)
from ._foreground import THRESHOLD_METHODS, ForegroundParams, extract_foreground, gradient_map
from ._graphcut import SALIENCY_METHODS, fuse_cells, graph_cut, saliency_map, smoothness_weights
from ._losses import DICE_WEIGHTS, context_weights, log_dice_loss, tversky_loss
from ._mixup import (
    background_field,
    background_stats,
    mix_labels,
    mix_pair,
    normalize_by_background,
    normalize_by_flat_field,
    normalize_nuclear_stain,
)
from ._mosaic import mosaic_pair, territory_mosaic
from ._postprocess import InstanceSettings, instances_from_classes
from ._resize import rescale_image
from ._table import OBJECT_FIELDS, cell_fields, cell_measurements, object_table
from ._targets import IGNORE, three_class_targets
from ._watershed import split_foreground

__all__ = [
    "InstanceSettings",
    "AugmentParams",
    "CELL_METHODS",
    "camera_noise",
    "cells_from_nuclei",
    "context_weights",
    "enhance_speckles",
    "median_diameter",
    "nuclei_of_stain",
    "DICE_WEIGHTS",
    "CLASSICAL_CONFIGURATIONS",
    "CLASSICAL_METHODS",
    "ClassicalSettings",
    "DECLUMP_METHODS",
    "DIVIDING_LINE_METHODS",
    "FILL_HOLES",
    "ForegroundParams",
    "IGNORE",
    "OBJECT_FIELDS",
    "SALIENCY_METHODS",
    "THRESHOLD_METHODS",
    "augment",
    "random_symmetry",
    "background_field",
    "background_stats",
    "cellprofiler_threshold",
    "classical_labels",
    "consensus_labels",
    "extract_foreground",
    "fuse_cells",
    "gradient_map",
    "graph_cut",
    "identify_primary_objects",
    "instances_from_classes",
    "log_dice_loss",
    "minimum_cross_entropy_threshold",
    "mix_labels",
    "mix_pair",
    "mosaic_pair",
    "territory_mosaic",
    "normalize_by_background",
    "normalize_by_flat_field",
    "normalize_nuclear_stain",
    "cell_fields",
    "cell_measurements",
    "object_table",
    "rescale_image",
    "saliency_map",
    "smoothness_weights",
    "split_foreground",
    "three_class_targets",
    "tversky_loss",
]
