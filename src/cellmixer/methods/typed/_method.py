"""The ``typed`` method in the registry."""

import json

from ..._errors import CellmixerError
from ...engine import Method, register_method
from ._predict import INSTANCE_CLASSES, TASK
from ._train import TypedTrainingConfig


@register_method
class Typed(Method):
    """Every cell with its type from COCO annotations: one U-Net with an instance head and a type head."""

    name = "typed"
    task = TASK
    model_title = "typed-cell model"
    train_command = "cellmixer typed train"
    config = TypedTrainingConfig

    @classmethod
    def check_config(cls, config: dict) -> None:
        """``types``: the names of the type head's outputs, after the instance classes."""
        types = config.get("types")
        if types != config["classes"][len(INSTANCE_CLASSES):]:
            raise CellmixerError(f"\"types\" is {json.dumps(types)[:60]}: give the classes after "
                                 f"{', '.join(INSTANCE_CLASSES)}")
