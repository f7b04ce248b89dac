"""cellmixer: cell-type segmentation trained from homogeneous cultures, without drawn masks.

Each command of the ``cellmixer`` command line is a function here with the same options:
:func:`pseudolabel`, :func:`mix`, :func:`train`, :func:`predict`, :func:`evaluate`, :func:`demo`;
``cellmixer nuclei label|train|predict|evaluate`` are :func:`label_nuclei`, :func:`train_nuclei`,
:func:`predict_nuclei` and :func:`evaluate_nuclei` (:func:`segment_nuclei` for one array);
``cellmixer typed train|predict|evaluate`` are :func:`train_typed`, :func:`predict_typed` and
:func:`evaluate_typed` (:func:`segment_typed` and :func:`typed_instances` for arrays);
``cellmixer centroids label|train|predict|evaluate`` are :func:`label_centroids`, :func:`train_centroids`,
:func:`predict_centroids` and :func:`evaluate_centroids` (:func:`segment_cells` for one array).
"""

__version__ = "0.1.0"

from ._errors import CellmixerError  # noqa: E402
from .demo import demo  # noqa: E402
from .inference import predict, predict_nuclei, segment_nuclei  # noqa: E402
from .io import discover_dataset, read_image, read_labels  # noqa: E402
from .metrics import confusion_matrix, evaluate, evaluate_nuclei, instance_scores, segmentation_scores  # noqa: E402
from .mixing import mix, mix_pair, mosaic_pair, normalize_by_background  # noqa: E402
from .models import SegmentationModel, UNet  # noqa: E402
from .pseudolabels import ForegroundParams, extract_foreground, label_nuclei, pseudolabel  # noqa: E402
from .training import train, train_nuclei  # noqa: E402
from .typed import predict_typed, segment_typed, train_typed, typed_instances  # noqa: E402
from .metrics import coco_evaluate, evaluate_typed  # noqa: E402
from .centroids import (evaluate_centroids, label_centroids, predict_centroids, segment_cells,  # noqa: E402
                        train_centroids)

__all__ = [
    "CellmixerError", "ForegroundParams", "SegmentationModel", "UNet", "__version__", "confusion_matrix", "demo",
    "discover_dataset", "evaluate", "evaluate_nuclei", "extract_foreground", "instance_scores", "label_nuclei", "mix",
    "mix_pair", "mosaic_pair", "normalize_by_background", "predict", "predict_nuclei", "pseudolabel", "read_image",
    "read_labels", "segment_nuclei", "segmentation_scores", "train", "train_nuclei",
    "coco_evaluate", "evaluate_typed", "predict_typed", "segment_typed", "train_typed", "typed_instances",
    "evaluate_centroids", "label_centroids", "predict_centroids", "segment_cells", "train_centroids",
]
