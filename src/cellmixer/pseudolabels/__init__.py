"""Training labels without annotation: unsupervised foreground masks labelled with the culture's class,
and classical nucleus labels (CellProfiler's IdentifyPrimaryObjects) with 3-class targets."""

from ._classical import (CLASSICAL_CONFIGURATIONS, CLASSICAL_METHODS, classical_labels, DECLUMP_METHODS, DIVIDING_LINE_METHODS, FILL_HOLES,
                         cellprofiler_threshold, consensus_labels, identify_primary_objects,
                         minimum_cross_entropy_threshold)
from ._command import pseudolabel, qc_panel
from ._nuclei_command import label_nuclei
from ._foreground import THRESHOLD_METHODS, ForegroundParams, extract_foreground, gradient_map
from ._targets import IGNORE, three_class_targets

__all__ = ["CLASSICAL_CONFIGURATIONS", "CLASSICAL_METHODS", "classical_labels", "DECLUMP_METHODS", "DIVIDING_LINE_METHODS", "FILL_HOLES", "IGNORE",
           "THRESHOLD_METHODS", "ForegroundParams", "cellprofiler_threshold", "consensus_labels", "extract_foreground",
           "gradient_map", "identify_primary_objects", "label_nuclei", "minimum_cross_entropy_threshold", "pseudolabel",
           "qc_panel", "three_class_targets"]
