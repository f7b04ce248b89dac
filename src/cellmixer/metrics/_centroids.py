"""Scores of cell detection and of instances grown from detections (Nishimura et al. 2019, section 5).

* Detection F-measure: detections and ground-truth cells are matched one-to-one (Hungarian
  assignment, fewest total distance among the largest matching) when they are at most
  ``max_distance`` pixels apart; F = 2 P R / (P + R). The paper does not state the distance; its
  reference code (github.com/naivete5656/WSISPDR, ``detection_eval.py``) uses 10 pixels, our default.
* mDice: each ground-truth cell is assigned at most one predicted cell (one-to-one, largest total
  Dice), and ``mDice = 1/M sum_u 2 tp_u / (2 tp_u + fn_u + fp_u)`` over the M ground-truth cells;
  a cell assigned nothing counts 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment
from scipy.spatial import cKDTree

from .._errors import CellmixerError
from .._settings import check_settings, check_value, field_of, setting
from ..io import as_label_image, label_index
from ._instances import _pair, instance_overlap, instance_scores

DEFAULT_MATCH_DISTANCE = 10.0


@dataclass(frozen=True)
class PointMatching:
    """How detections are matched to cells (its one home: default, range, help)."""

    max_distance: float = setting(DEFAULT_MATCH_DISTANCE, "a detection matches a cell this close to its centroid, "
                                  "pixels", above=0, at_most=10_000)

    def __post_init__(self):
        check_settings(self)


def _as_points(points, name: str) -> np.ndarray:
    points = np.asarray(points, np.float64)
    if points.size == 0:
        return np.zeros((0, 2))
    if points.ndim != 2 or points.shape[1] != 2 or not np.isfinite(points).all():
        raise CellmixerError(f"{name}: expected (N, 2) finite (row, column) points, got shape {points.shape}.")
    return points


def object_centroids(labels) -> np.ndarray:
    """(row, column) centroid of every object of a label image, in increasing label order.

    >>> object_centroids(np.array([[0, 2, 2], [0, 0, 5]]))
    array([[0. , 1.5],
           [1. , 2. ]])
    """
    labels = as_label_image(labels, "labels")
    if labels.size == 0 or not labels.any():
        return np.zeros((0, 2))
    index, _ = label_index(labels)
    area = np.bincount(index)
    rows, cols = np.divmod(np.arange(labels.size), labels.shape[1])
    cy = np.bincount(index, rows)[1:] / area[1:]
    cx = np.bincount(index, cols)[1:] / area[1:]
    return np.stack([cy, cx], axis=1).astype(np.float64)


def match_points(truth, detections, *, max_distance: float = DEFAULT_MATCH_DISTANCE) -> tuple[np.ndarray, np.ndarray]:
    """One-to-one matches of detections to ground-truth points no more than ``max_distance`` apart:
    as many as possible, then the smallest total distance. Returns index arrays (truth, detection)."""
    truth, detections = _as_points(truth, "truth"), _as_points(detections, "detections")
    check_value(field_of(PointMatching, "max_distance"), max_distance)
    if len(truth) == 0 or len(detections) == 0:
        return np.zeros(0, int), np.zeros(0, int)
    pairs = cKDTree(truth).sparse_distance_matrix(cKDTree(detections), max_distance, output_type="coo_matrix")
    if pairs.nnz == 0:
        return np.zeros(0, int), np.zeros(0, int)
    rows, r = np.unique(pairs.row, return_inverse=True)
    cols, c = np.unique(pairs.col, return_inverse=True)
    # Any match beats none, whatever the distances: cost = -1 + distance / (2 * max_distance * n).
    big = len(rows) + len(cols)
    cost = np.full((len(rows), len(cols)), 1.0)
    cost[r, c] = -1.0 + pairs.data / (2 * max_distance * big)
    ri, ci = linear_sum_assignment(cost)
    ok = cost[ri, ci] < 0
    return rows[ri[ok]], cols[ci[ok]]


def detection_scores(truth, detections, *, max_distance: float = DEFAULT_MATCH_DISTANCE) -> dict:
    """Precision, recall and F-measure of cell detection.

    Parameters
    ----------
    truth : (M, 2) points or (H, W) label image
        Ground-truth cell positions (row, column), or a label image whose object centroids are used.
    detections : (N, 2) points or (H, W) label image
    max_distance : float
        A detection matches a cell at most this many pixels from it (default 10, the paper's
        reference code).

    Returns
    -------
    dict
        ``tp``, ``fp``, ``fn``, ``n_true``, ``n_pred``, ``precision``, ``recall``, ``f_measure``,
        ``max_distance``. Both empty: every score 1.0; one empty: 0.0.

    Examples
    --------
    >>> s = detection_scores([[10, 10], [50, 50]], [[12, 11], [80, 80]])
    >>> s["tp"], s["fp"], s["fn"], s["f_measure"]
    (1, 1, 1, 0.5)
    """
    truth = _points_or_centroids(truth, "truth")
    detections = _points_or_centroids(detections, "detections")
    ti, _ = match_points(truth, detections, max_distance=max_distance)
    tp, n_true, n_pred = len(ti), len(truth), len(detections)
    if n_true == 0 and n_pred == 0:
        precision = recall = f = 1.0
    else:
        precision = tp / n_pred if n_pred else 0.0
        recall = tp / n_true if n_true else 0.0
        f = 2 * tp / (n_true + n_pred)
    return {"tp": tp, "fp": n_pred - tp, "fn": n_true - tp, "n_true": n_true, "n_pred": n_pred,
            "precision": precision, "recall": recall, "f_measure": f, "max_distance": float(max_distance)}


def _points_or_centroids(value, name: str) -> np.ndarray:
    array = np.asarray(value)
    if array.ndim == 2 and array.shape[1] != 2:  # a label image (points have 2 columns)
        return object_centroids(as_label_image(array, name))
    return _as_points(array, name)


def mean_dice(truth, prediction) -> float:
    """The paper's mDice: mean over ground-truth cells of the Dice with their assigned predicted cell.

    Cells are assigned one-to-one to maximize the total Dice (only overlapping pairs); a ground-truth
    cell with no assigned prediction scores 0. No ground-truth cell: 1.0 if there is no predicted
    cell either, else 0.0.

    Examples
    --------
    >>> t = np.zeros((10, 10), int); t[0:4, 0:4] = 1; t[6:10, 6:10] = 2
    >>> p = np.zeros((10, 10), int); p[0:4, 0:2] = 5
    >>> mean_dice(t, p)                # cell 1: 2*8/(16+8) = 2/3; cell 2: missed
    0.3333333333333333
    """
    truth, prediction = _pair(truth, prediction)
    ov = instance_overlap(truth, prediction)
    if ov.n_true == 0:
        return 1.0 if ov.n_pred == 0 else 0.0
    if len(ov.rows) == 0:
        return 0.0
    dice = 2 * ov.intersections / (ov.truth_areas[ov.rows] + ov.prediction_areas[ov.cols])
    matrix = np.zeros((ov.n_true, ov.n_pred))
    matrix[ov.rows, ov.cols] = dice
    ri, ci = linear_sum_assignment(-matrix)
    return float(matrix[ri, ci].sum() / ov.n_true)


def centroid_scores(truth, prediction, *, detections=None, max_distance: float = DEFAULT_MATCH_DISTANCE) -> dict:
    """Every score of one image: detection F-measure (of ``detections``, or of the predicted cells'
    centroids), mDice, and the package's instance scores (F1 and AP at IoU 0.5, AP over 0.50:0.95 ...).

    Parameters
    ----------
    truth, prediction : (H, W) label images
    detections : (N, 2) points, optional
        The detector's cell centres; default: centroids of ``prediction``'s cells.
    max_distance : float
        Matching distance of the F-measure (pixels).
    """
    truth, prediction = _pair(truth, prediction)
    det = object_centroids(prediction) if detections is None else _as_points(detections, "detections")
    d = detection_scores(object_centroids(truth), det, max_distance=max_distance)
    inst = instance_scores(truth, prediction)
    return {"f_measure": d["f_measure"], "precision": d["precision"], "recall": d["recall"],
            "detected": d["n_pred"], "detection_tp": d["tp"], "mdice": mean_dice(truth, prediction),
            **{k: inst[k] for k in ("f1_50", "ap_50", "average_precision", "n_true", "n_pred", "splits", "merges")}}


def summarize_centroid_scores(rows: list[dict]) -> dict:
    """Scores of a set of images: F-measure from pooled counts, mDice over all ground-truth cells,
    F1/AP means over images."""
    if not rows:
        return {}
    tp = sum(r["detection_tp"] for r in rows)
    n_true = sum(r["n_true"] for r in rows)
    n_pred = sum(r["detected"] for r in rows)
    f = 1.0 if n_true + n_pred == 0 else 2 * tp / (n_true + n_pred)
    weights = np.array([r["n_true"] for r in rows], np.float64)
    mdice = float(np.average([r["mdice"] for r in rows], weights=weights)) if weights.sum() else 1.0
    return {"images": len(rows), "f_measure": f, "precision": tp / n_pred if n_pred else 0.0,
            "recall": tp / n_true if n_true else 0.0, "mdice": mdice,
            "mdice_image_mean": float(np.mean([r["mdice"] for r in rows])),
            **{k: float(np.mean([r[k] for r in rows])) for k in ("f1_50", "ap_50", "average_precision")},
            "n_true": n_true, "detected": n_pred, "detection_tp": tp}
