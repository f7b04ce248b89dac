"""The ``cellmixer`` method in the registry."""

from ...engine import Method, register_method
from ._train import TrainingConfig


@register_method
class CellMixer(Method):
    """Cell types from homogeneous cultures: pseudo-labels, artificial mixtures, a semantic model."""

    name = "cellmixer"
    task = None
    model_title = "cell-type model"
    train_command = "cellmixer train"
    config = TrainingConfig
