"""Artificial mixtures of homogeneous cultures: blended (CellMixer mixup) and mosaic."""

from ._command import mix
from ._mixup import background_stats, mix_labels, mix_pair, normalize_by_background
from ._mosaic import mosaic_pair

__all__ = ["background_stats", "mix", "mix_labels", "mix_pair", "mosaic_pair", "normalize_by_background"]
