"""Nucleus instances: from a 3-class map (background, nucleus, separation line) to labelled
objects, a table of their measurements, and a picture of them."""

from ._graphcut import SALIENCY_METHODS, fuse_cells, graph_cut, saliency_map, smoothness_weights
from ._overlay import instance_colors, instance_overlay
from ._postprocess import instances_from_classes
from ._table import OBJECT_FIELDS, object_table
from ._watershed import split_foreground
from ._write import write_instances

__all__ = ["OBJECT_FIELDS", "instance_colors", "instance_overlay", "instances_from_classes", "object_table", "split_foreground",
           "write_instances", "SALIENCY_METHODS", "fuse_cells", "graph_cut", "saliency_map", "smoothness_weights"]
