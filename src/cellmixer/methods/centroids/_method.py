"""The ``centroids`` method in the registry."""

from ...engine import Method, register_method
from ._segment import TASK
from ._train import CentroidTrainingConfig


@register_method
class Centroids(Method):
    """Cells from one point each: a centre detector, guided backpropagation, graph cuts."""

    name = "centroids"
    task = TASK
    model_title = "cell-centre detector"
    train_command = "cellmixer centroids train"
    config = CentroidTrainingConfig
