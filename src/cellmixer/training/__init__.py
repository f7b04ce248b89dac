"""Training: cell types from homogeneous cultures (pseudo-labels, mixtures, Tversky loss), and nuclei from
classical labels (3 classes, log-Dice loss, validation-selected weights)."""

from ._augment import AugmentParams, augment
from ._data import CropSampler, PseudoLabelledImage, load_pseudolabelled, pseudolabel_image
from ._loop import Optimization, OptimizationSettings, TrainingInterrupted
from ._losses import log_dice_loss, tversky_loss
from ._nuclei import (NUCLEUS_CLASSES, LabelledNuclei, NucleiSampler, NucleiTrainingConfig, nucleus_targets,
                      train_nuclei, validation_tiles)
from ._train import TrainingConfig, train

__all__ = ["NUCLEUS_CLASSES", "AugmentParams", "CropSampler", "LabelledNuclei", "NucleiSampler", "NucleiTrainingConfig",
           "Optimization", "OptimizationSettings", "PseudoLabelledImage", "TrainingConfig", "TrainingInterrupted",
           "augment", "load_pseudolabelled", "log_dice_loss", "nucleus_targets", "pseudolabel_image", "train",
           "train_nuclei", "tversky_loss", "validation_tiles"]
