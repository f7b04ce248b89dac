"""Instances from one point per cell, or from a nuclear stain with no annotation (Nishimura et al. 2019):
points -> Gaussian likelihood maps -> U-Net detector -> guided backpropagation from each detected cell
-> maximum projection -> one graph cut per cell -> one label image."""

from ._baselines import grow_seeds, seeded_watershed
from ._command import evaluate_centroids, format_centroid_table, predict_centroids
from ._guided import ContributionMaps, contribution_maps, guided_relu_gate, guided_relus, max_projection
from ._labels import PointLabels, label_centroids, points_overlay, weak_labels
from ._method import Centroids
from ._points import (
    check_points,
    likelihood_map,
    nuclear_centroids,
    read_points_csv,
    read_roi_points,
    roi_labels,
    write_points_csv,
)
from ._segment import (
    DEFAULT_SEGMENTATION,
    CellSegmentation,
    CentroidSegmentation,
    CentroidTiling,
    Rescaling,
    centre_regions,
    load_centroid_model,
    network_input,
    predict_likelihood,
    segment_cells,
)
from ._train import CentroidTrainingConfig, LikelihoodSampler, mse_loss, train_centroids

__all__ = [
    "Centroids",
    "CellSegmentation",
    "CentroidSegmentation",
    "CentroidTiling",
    "Rescaling",
    "CentroidTrainingConfig",
    "ContributionMaps",
    "DEFAULT_SEGMENTATION",
    "LikelihoodSampler",
    "PointLabels",
    "centre_regions",
    "check_points",
    "contribution_maps",
    "evaluate_centroids",
    "format_centroid_table",
    "grow_seeds",
    "guided_relu_gate",
    "guided_relus",
    "label_centroids",
    "likelihood_map",
    "load_centroid_model",
    "max_projection",
    "mse_loss",
    "network_input",
    "nuclear_centroids",
    "points_overlay",
    "predict_centroids",
    "predict_likelihood",
    "read_points_csv",
    "read_roi_points",
    "roi_labels",
    "seeded_watershed",
    "segment_cells",
    "train_centroids",
    "weak_labels",
    "write_points_csv",
]
