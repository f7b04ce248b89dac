"""The ``nuclei`` method in the registry."""

from ...engine import Method, register_method
from ._train import TASK, NucleiTrainingConfig


@register_method
class Nuclei(Method):
    """Nuclei from classical labels: a 3-class U-Net (background, nucleus, separation line)."""

    name = "nuclei"
    task = TASK
    model_title = "nucleus model"
    train_command = "cellmixer nuclei train"
    config = NucleiTrainingConfig
