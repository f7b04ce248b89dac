"""CellMixer (Naouar et al.): cell types from homogeneous cultures. The folder name is the only label;
the unsupervised foreground gives pseudo-labels; background-normalized mixtures of two cultures train
a semantic model. Commands: ``pseudolabel``, ``mix``, ``train``, ``predict``, ``evaluate``."""

from ._data import CropSampler, PseudoLabelledImage, load_pseudolabelled, pseudolabel_image
from ._evaluate import (
    NOT_ANNOTATED,
    EvaluationImage,
    EvaluationSettings,
    artificial_mixtures,
    evaluate,
    evaluation_panel,
    load_evaluation_images,
    score,
)
from ._method import CellMixer
from ._mix import MixSettings, mix
from ._predict import class_overlay, predict, region_summary
from ._pseudolabel import pseudolabel, qc_panel
from ._train import TrainingConfig, train, training_loss

__all__ = [
    "CellMixer",
    "CropSampler",
    "EvaluationImage",
    "EvaluationSettings",
    "MixSettings",
    "NOT_ANNOTATED",
    "PseudoLabelledImage",
    "TrainingConfig",
    "artificial_mixtures",
    "class_overlay",
    "evaluate",
    "evaluation_panel",
    "load_evaluation_images",
    "load_pseudolabelled",
    "mix",
    "predict",
    "pseudolabel",
    "pseudolabel_image",
    "qc_panel",
    "region_summary",
    "score",
    "train",
    "training_loss",
]
