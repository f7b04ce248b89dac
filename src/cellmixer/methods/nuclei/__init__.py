"""Nuclei from classical labels (Matuszewski & Ranefall 2021): a CellProfiler-style pipeline labels
the images, a 3-class U-Net (background, nucleus, separation line) learns them, and its output is
post-processed into instances. Commands: ``nuclei label|train|predict|evaluate``."""

from ._evaluate import evaluate_nuclei, format_nuclei_table, nucleus_scores, summarize_instance_scores
from ._label import label_nuclei
from ._method import Nuclei
from ._predict import load_nucleus_model, predict_nuclei, segment_nuclei
from ._train import (
    NUCLEUS_CLASSES,
    NucleiTrainingConfig,
    nucleus_targets,
    train_nuclei,
)

__all__ = [
    "Nuclei",
    "NUCLEUS_CLASSES",
    "NucleiTrainingConfig",
    "evaluate_nuclei",
    "format_nuclei_table",
    "label_nuclei",
    "load_nucleus_model",
    "nucleus_scores",
    "nucleus_targets",
    "predict_nuclei",
    "segment_nuclei",
    "summarize_instance_scores",
    "train_nuclei",
]
