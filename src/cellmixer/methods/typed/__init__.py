"""Typed cells: every cell its own mask and its cell type. From weak labels (a CellMixer model's type
probabilities over the cells of any instance source) or from COCO annotations (one U-Net with an
instance head and a type head); label images, tables, GeoJSON, COCO results and overlays out."""

from ._adapt import AdaptConfig, adapt_model, adaptation_target
from ._assign import TypedInstances, cells_of_nuclei, typed_instances
from ._classes import ClassSource, prefix_class, read_class_table
from ._coco import (
    CocoDataset,
    CocoImage,
    annotation_mask,
    encode_mask,
    ground_truth,
    instance_labels,
    label_annotations,
    read_coco,
)
from ._evaluate import evaluate_typed, format_typed_table
from ._method import Typed
from ._nuclei import NuclearRoute
from ._predict import predict_typed, segment_typed
from ._train import TypedTrainingConfig, train_typed, typed_targets
from ._write import cell_table, coco_results, typed_overlay, write_typed

__all__ = [
    "Typed",
    "AdaptConfig",
    "adaptation_target",
    "adapt_model",
    "NuclearRoute",
    "cells_of_nuclei",
    "ClassSource",
    "CocoDataset",
    "CocoImage",
    "TypedInstances",
    "TypedTrainingConfig",
    "annotation_mask",
    "cell_table",
    "coco_results",
    "encode_mask",
    "evaluate_typed",
    "format_typed_table",
    "ground_truth",
    "instance_labels",
    "label_annotations",
    "predict_typed",
    "prefix_class",
    "read_class_table",
    "read_coco",
    "segment_typed",
    "train_typed",
    "typed_instances",
    "typed_overlay",
    "typed_targets",
    "write_typed",
]
