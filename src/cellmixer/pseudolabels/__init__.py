"""Training labels without annotation: unsupervised foreground masks labelled with the culture's class."""

from ._command import pseudolabel, qc_panel
from ._foreground import THRESHOLD_METHODS, ForegroundParams, extract_foreground, gradient_map

__all__ = ["THRESHOLD_METHODS", "ForegroundParams", "extract_foreground", "gradient_map", "pseudolabel", "qc_panel"]
