"""cellmixer: cell-type segmentation trained from homogeneous cultures, without drawn masks.

Each command of the ``cellmixer`` command line is a function here with the same options:
:func:`pseudolabel`, :func:`mix`, :func:`train`, :func:`predict`, :func:`evaluate`, :func:`demo`;
``cellmixer nuclei label|train|predict|evaluate`` are :func:`label_nuclei`, :func:`train_nuclei`,
:func:`predict_nuclei` and :func:`evaluate_nuclei` (:func:`segment_nuclei` for one array);
``cellmixer typed train|predict|evaluate`` are :func:`train_typed`, :func:`predict_typed` and
:func:`evaluate_typed` (:func:`segment_typed` and :func:`typed_instances` for arrays);
``cellmixer centroids label|train|predict|evaluate`` are :func:`label_centroids`, :func:`train_centroids`,
:func:`predict_centroids` and :func:`evaluate_centroids` (:func:`segment_cells` for one array);
``cellmixer export --bioimageio`` is :func:`export_bioimageio`.

The package is layered; each layer imports only those below it::

    cli -> demo -> methods -> engine -> models | ops | metrics -> io
"""

from ._errors import CellmixerError
from ._version import __version__
from .demo import demo
from .engine import SegmentationModel, Tiling, resolve_device
from .export import export_bioimageio
from .io import discover_dataset, read_image, read_labels
from .methods.cellmixer import evaluate, mix, predict, pseudolabel, train
from .methods.centroids import evaluate_centroids, label_centroids, predict_centroids, segment_cells, train_centroids
from .methods.nuclei import evaluate_nuclei, label_nuclei, predict_nuclei, segment_nuclei, train_nuclei
from .methods.typed import (
    evaluate_typed,
    predict_typed,
    segment_typed,
    train_typed,
    typed_instances,
)
from .metrics import coco_evaluate, confusion_matrix, instance_scores, segmentation_scores
from .models import UNet
from .ops import ForegroundParams, extract_foreground, mix_pair, mosaic_pair, normalize_by_background, nuclei_of_stain

__all__ = [
    "CellmixerError",
    "ForegroundParams",
    "SegmentationModel",
    "Tiling",
    "UNet",
    "__version__",
    "confusion_matrix",
    "demo",
    "discover_dataset",
    "evaluate",
    "evaluate_nuclei",
    "export_bioimageio",
    "extract_foreground",
    "instance_scores",
    "label_nuclei",
    "mix",
    "mix_pair",
    "mosaic_pair",
    "normalize_by_background",
    "nuclei_of_stain",
    "predict",
    "predict_nuclei",
    "pseudolabel",
    "read_image",
    "read_labels",
    "resolve_device",
    "segment_nuclei",
    "segmentation_scores",
    "train",
    "train_nuclei",
    "coco_evaluate",
    "evaluate_typed",
    "predict_typed",
    "segment_typed",
    "train_typed",
    "typed_instances",
    "evaluate_centroids",
    "label_centroids",
    "predict_centroids",
    "segment_cells",
    "train_centroids",
]
