"""The ``centroids`` method in the registry."""

import json

from ..._errors import CellmixerError
from ..._settings import check_mapping, check_value, field_of
from ...engine import Method, register_method
from ._points import PEAK_SIGMA, PeakSettings
from ._segment import TASK, CentroidSegmentation
from ._train import CentroidTrainingConfig


@register_method
class Centroids(Method):
    """Cells from one point each: a centre detector, guided backpropagation, graph cuts."""

    name = "centroids"
    task = TASK
    model_title = "cell-centre detector"
    train_command = "cellmixer centroids train"
    config = CentroidTrainingConfig

    @classmethod
    def check_config(cls, config: dict) -> None:
        """The detector's own entries: ``centroids.sigma`` and ``centroids.segmentation`` (its prediction defaults)."""
        block = config.get("centroids", {})
        if not isinstance(block, dict):
            raise CellmixerError(f"\"centroids\" is {json.dumps(block)[:40]}: give an object")
        check_value(field_of(PeakSettings, "sigma"), block.get("sigma", PEAK_SIGMA), key="centroids.sigma")
        check_mapping(CentroidSegmentation, block.get("segmentation", {}), key="centroids.segmentation")
