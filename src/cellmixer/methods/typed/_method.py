"""The ``typed`` method in the registry."""

from ...engine import Method, register_method
from ._predict import TASK
from ._train import TypedTrainingConfig


@register_method
class Typed(Method):
    """Every cell with its type from COCO annotations: one U-Net with an instance head and a type head."""

    name = "typed"
    task = TASK
    model_title = "typed-cell model"
    train_command = "cellmixer typed train"
    config = TypedTrainingConfig
