"""Training from homogeneous cultures: pseudo-labels, mixtures, augmentation, Tversky loss."""

from ._augment import AugmentParams, augment
from ._data import CropSampler, PseudoLabelledImage, load_pseudolabelled, pseudolabel_image
from ._losses import tversky_loss
from ._train import TrainingConfig, TrainingInterrupted, train

__all__ = ["AugmentParams", "CropSampler", "PseudoLabelledImage", "TrainingConfig", "TrainingInterrupted",
           "augment", "load_pseudolabelled", "pseudolabel_image", "train", "tversky_loss"]
