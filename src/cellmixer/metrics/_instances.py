"""Instance segmentation scores for any pair of label images (ground truth, prediction).

Self-contained: numpy and scipy only. Every score starts from one sparse overlap table of the two
label images (``np.bincount`` over joint labels), so no loop runs over objects on the whole image.
Label images may have any non-negative integer labels (0 is background; labels need not be
consecutive), different numbers of objects, or no objects at all.

Sources of the definitions:

* Object-wise Jaccard index: Matuszewski & Ranefall, "Learning cell nuclei segmentation using
  labels generated with classical image analysis methods" (WSCG 2021), section 3.1.
* IoU matching, precision, recall, F1 and ``tp / (tp + fp + fn)``: as ``stardist.matching.matching``
  (an object pair matches when IoU >= threshold; optimal one-to-one assignment).
* F1 averaged over IoU 0.50:0.05:0.90, splits and merges (IoU > 0.1) and missed objects (IoU 0.7):
  Caicedo et al., Cytometry A 95(9):952-965 (2019), evaluation code
  github.com/carpenterlab/2019_Caicedo_CytometryA, ``unet4nuclei/utils/evaluation.py``.
* Average precision over IoU 0.50:0.05:0.95: Data Science Bowl 2018 (Kaggle) evaluation.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi
from scipy.optimize import linear_sum_assignment

from .._errors import CellmixerError
from ..io import as_label_image, label_index, remove_border_objects

# Thresholds rounded to 2 decimals so that e.g. 0.55 is the double nearest 0.55, not 0.5500000000000001.
F1_THRESHOLDS = tuple(np.round(np.arange(0.50, 0.901, 0.05), 2).tolist())  # Caicedo et al. 2019
AP_THRESHOLDS = tuple(np.round(np.arange(0.50, 0.951, 0.05), 2).tolist())  # DSB 2018

_DENSE_LIMIT = 1 << 24  # joint label pairs counted with one dense bincount up to this many


def _pair(truth, prediction) -> tuple[np.ndarray, np.ndarray]:
    truth = as_label_image(truth, "truth")
    prediction = as_label_image(prediction, "prediction")
    if truth.shape != prediction.shape:
        raise CellmixerError(f"truth and prediction differ in shape: {truth.shape} vs {prediction.shape}; "
                             "compare label images of the same image.")
    return truth, prediction


@dataclass(frozen=True)
class InstanceOverlap:
    """Sparse overlap of two label images; build it with :func:`instance_overlap`.

    Attributes
    ----------
    truth_ids, prediction_ids : int ndarray
        The object labels present (background excluded), in increasing order.
    truth_areas, prediction_areas : int64 ndarray
        Pixels of each object, aligned with the ids.
    rows, cols : intp ndarray
        Overlapping object pairs as indices into ``truth_ids`` and ``prediction_ids``.
    intersections : int64 ndarray
        Shared pixels of each pair (all > 0).
    """

    truth_ids: np.ndarray
    prediction_ids: np.ndarray
    truth_areas: np.ndarray
    prediction_areas: np.ndarray
    rows: np.ndarray
    cols: np.ndarray
    intersections: np.ndarray

    @property
    def n_true(self) -> int:
        return len(self.truth_ids)

    @property
    def n_pred(self) -> int:
        return len(self.prediction_ids)

    @property
    def iou(self) -> np.ndarray:
        """Intersection over union of each overlapping pair (aligned with ``rows``, ``cols``)."""
        union = self.truth_areas[self.rows] + self.prediction_areas[self.cols] - self.intersections
        return self.intersections / union

    def dense_iou(self) -> np.ndarray:
        """The full (n_true, n_pred) IoU matrix; zeros where objects do not overlap."""
        matrix = np.zeros((self.n_true, self.n_pred))
        matrix[self.rows, self.cols] = self.iou
        return matrix


def instance_overlap(truth, prediction) -> InstanceOverlap:
    """Count the pixels shared by every pair of objects of two label images.

    Parameters
    ----------
    truth, prediction : array_like of non-negative integers, same shape
        Label images; 0 is background.

    Returns
    -------
    InstanceOverlap

    Examples
    --------
    >>> t = np.array([[1, 1, 0, 5, 5]])
    >>> p = np.array([[2, 2, 2, 0, 7]])
    >>> ov = instance_overlap(t, p)
    >>> ov.truth_ids, ov.prediction_ids, ov.intersections, ov.iou
    (array([1, 5]), array([2, 7]), array([2, 1]), array([0.66666667, 0.5       ]))
    """
    truth, prediction = _pair(truth, prediction)
    t, t_ids = label_index(truth)
    p, p_ids = label_index(prediction)
    nt, np_ = len(t_ids), len(p_ids)
    t_areas = np.bincount(t, minlength=nt)[1:].astype(np.int64)
    p_areas = np.bincount(p, minlength=np_)[1:].astype(np.int64)
    both = (t > 0) & (p > 0)
    t, p = t[both], p[both]
    if nt * np_ <= _DENSE_LIMIT:
        counts = np.bincount(t.astype(np.int64) * np_ + p, minlength=nt * np_)
        joint = np.flatnonzero(counts)
        inter = counts[joint]
    else:
        joint, inter = np.unique(t.astype(np.int64) * np_ + p, return_counts=True)
    rows, cols = np.divmod(joint, np_)
    return InstanceOverlap(truth_ids=t_ids[1:], prediction_ids=p_ids[1:], truth_areas=t_areas,
                           prediction_areas=p_areas, rows=(rows - 1).astype(np.intp),
                           cols=(cols - 1).astype(np.intp), intersections=inter.astype(np.int64))


def _overlap(truth, prediction) -> InstanceOverlap:
    return truth if isinstance(truth, InstanceOverlap) else instance_overlap(truth, prediction)


def _matched_pairs(ov: InstanceOverlap, iou: np.ndarray, threshold: float) -> tuple[int, float]:
    """Number of one-to-one matches with IoU >= threshold, and the sum of their IoUs."""
    ok = iou >= threshold
    rows, cols, scores = ov.rows[ok], ov.cols[ok], iou[ok]
    if len(rows) == 0:
        return 0, 0.0
    # Above IoU 0.5 two objects cannot both overlap a third that much, so matches are unique;
    # Hungarian assignment is only needed where candidate pairs share an object.
    if np.bincount(rows).max() == 1 and np.bincount(cols).max() == 1:
        return len(rows), float(scores.sum())
    r_ids, r = np.unique(rows, return_inverse=True)
    c_ids, c = np.unique(cols, return_inverse=True)
    # All pairs among the involved objects, as in stardist: matches first, IoU as tie-breaker.
    sub = np.zeros((len(r_ids), len(c_ids)))
    inside = np.isin(ov.rows, r_ids) & np.isin(ov.cols, c_ids)
    sub[np.searchsorted(r_ids, ov.rows[inside]), np.searchsorted(c_ids, ov.cols[inside])] = iou[inside]
    n_matched = min(ov.n_true, ov.n_pred)
    cost = -(sub >= threshold).astype(float) - sub / (2 * n_matched)
    ri, ci = linear_sum_assignment(cost)
    good = sub[ri, ci] >= threshold
    return int(good.sum()), float(sub[ri, ci][good].sum())


def _check_threshold(threshold) -> float:
    threshold = float(threshold)
    if not 0.0 < threshold <= 1.0:
        raise CellmixerError(f"IoU threshold {threshold} is outside (0, 1]; use e.g. 0.5.")
    return threshold


def _scores(tp: int, n_true: int, n_pred: int) -> dict:
    """Precision, recall, F1 and tp/(tp+fp+fn); 1.0 when both images are empty, 0.0 when one is."""
    fp, fn = n_pred - tp, n_true - tp
    if n_true == 0 and n_pred == 0:
        return dict(precision=1.0, recall=1.0, f1=1.0, average_precision=1.0)
    return dict(precision=tp / n_pred if n_pred else 0.0, recall=tp / n_true if n_true else 0.0,
                f1=2 * tp / (2 * tp + fp + fn), average_precision=tp / (tp + fp + fn))


def match_instances(truth, prediction=None, *, threshold=0.5):
    """Match objects one-to-one by IoU and count true positives, false positives and negatives.

    A ground-truth and a predicted object match when their intersection over union is at least
    ``threshold``; among all one-to-one assignments the one with most matches is taken (ties
    broken by the larger sum of IoUs), as ``stardist.matching.matching`` does. Above IoU 0.5 the
    candidate pairs are one-to-one already, so the optimal (Hungarian) assignment is only
    computed for the objects that share candidates, at low thresholds.

    Parameters
    ----------
    truth, prediction : array_like of non-negative integers, same shape
        Label images, 0 background. ``truth`` may instead be an :class:`InstanceOverlap` (then
        leave ``prediction`` out).
    threshold : float or sequence of float
        IoU threshold(s) in (0, 1].

    Returns
    -------
    dict, or list of dicts for a sequence of thresholds
        ``threshold``, ``tp``, ``fp``, ``fn``, ``n_true``, ``n_pred``, ``precision`` = tp / n_pred,
        ``recall`` = tp / n_true, ``f1`` = 2tp / (2tp + fp + fn), ``average_precision`` =
        tp / (tp + fp + fn) (the "precision" of the Data Science Bowl 2018, stardist's
        ``accuracy``) and ``mean_matched_iou``. With no object in either image every score is
        1.0 (stardist gives 0.0 there); with objects in only one of them, 0.0.

    Examples
    --------
    >>> t = np.zeros((10, 10), int); t[1:5, 1:5] = 1; t[6:9, 6:9] = 2
    >>> p = np.zeros((10, 10), int); p[1:5, 2:6] = 4
    >>> m = match_instances(t, p, threshold=0.5)
    >>> m["tp"], m["fp"], m["fn"], m["f1"], round(m["mean_matched_iou"], 3)
    (1, 0, 1, 0.6666666666666666, 0.6)
    """
    ov = _overlap(truth, prediction)
    iou = ov.iou
    many = np.ndim(threshold) > 0
    results = []
    for thr in (threshold if many else [threshold]):
        thr = _check_threshold(thr)
        tp, iou_sum = _matched_pairs(ov, iou, thr)
        results.append(dict(threshold=thr, tp=tp, fp=ov.n_pred - tp, fn=ov.n_true - tp, n_true=ov.n_true,
                            n_pred=ov.n_pred, **_scores(tp, ov.n_true, ov.n_pred),
                            mean_matched_iou=iou_sum / tp if tp else 0.0))
    return results if many else results[0]


def mean_f1(truth, prediction=None, *, thresholds=F1_THRESHOLDS) -> float:
    """F1 averaged over IoU thresholds; by default 0.50:0.05:0.90, the BBBC039 protocol.

    Caicedo et al. 2019 report this "average F1" per image (their ``measures_at`` counts a match
    at IoU > t, strictly; here IoU >= t as in stardist, which differs only at exact ties).

    Examples
    --------
    >>> t = np.zeros((10, 10), int); t[2:8, 2:8] = 1
    >>> mean_f1(t, t), mean_f1(t, np.zeros_like(t))
    (1.0, 0.0)
    """
    ov = _overlap(truth, prediction)
    return float(np.mean([m["f1"] for m in match_instances(ov, threshold=list(thresholds))]))


def average_precision(truth, prediction=None, *, thresholds=AP_THRESHOLDS) -> float:
    """Data Science Bowl 2018 score: tp / (tp + fp + fn) averaged over IoU 0.50:0.05:0.95.

    For one threshold pass ``thresholds=[0.5]`` (AP at IoU 0.5).

    Examples
    --------
    >>> t = np.zeros((10, 10), int); t[1:5, 1:5] = 1; t[6:9, 6:9] = 2
    >>> average_precision(t, np.where(t == 1, 1, 0), thresholds=[0.5])
    0.5
    """
    ov = _overlap(truth, prediction)
    return float(np.mean([m["average_precision"] for m in match_instances(ov, threshold=list(thresholds))]))


def splits_and_merges(truth, prediction=None, *, threshold: float = 0.1) -> dict:
    """Count split and merged objects as Caicedo et al. 2019 do.

    A *split* is a ground-truth object that overlaps more than one predicted object with IoU >
    ``threshold``; a *merge* is a predicted object that overlaps more than one ground-truth object
    with IoU > ``threshold``. The authors' evaluation code (``count_splits_and_merges`` in
    github.com/carpenterlab/2019_Caicedo_CytometryA) uses 0.1: at any threshold >= 0.5 an object
    can pass it with at most one partner, so both counts would always be 0. (IoU 0.7 is the
    threshold of their *missed objects*, see :func:`missed_objects`.)

    Returns
    -------
    dict
        ``splits``, ``merges``, ``split_rate`` (splits / ground-truth objects) and
        ``merge_rate`` (merges / predicted objects; rates are 0.0 when there are no objects).

    Examples
    --------
    >>> t = np.zeros((4, 8), int); t[:, :4] = 1; t[:, 4:] = 2
    >>> p = np.zeros((4, 8), int); p[:, :2] = 1; p[:, 2:4] = 2; p[:, 4:] = 3
    >>> splits_and_merges(t, p)["splits"], splits_and_merges(p, t)["merges"]
    (1, 1)
    """
    ov = _overlap(truth, prediction)
    hit = ov.iou > threshold
    splits = int((np.bincount(ov.rows[hit], minlength=ov.n_true) > 1).sum())
    merges = int((np.bincount(ov.cols[hit], minlength=ov.n_pred) > 1).sum())
    return dict(splits=splits, merges=merges, split_rate=splits / ov.n_true if ov.n_true else 0.0,
                merge_rate=merges / ov.n_pred if ov.n_pred else 0.0)


def missed_objects(truth, prediction=None, *, threshold: float = 0.7) -> int:
    """Ground-truth objects that no predicted object overlaps with IoU > ``threshold``.

    The "missed objects at IoU 0.7" of Caicedo et al. 2019 (``get_false_negatives``).

    Examples
    --------
    >>> t = np.zeros((4, 8), int); t[:, :4] = 1; t[:, 4:] = 2
    >>> missed_objects(t, np.where(t == 1, 1, 0))
    1
    """
    ov = _overlap(truth, prediction)
    hit = ov.iou > threshold
    return int(ov.n_true - np.count_nonzero(np.bincount(ov.rows[hit], minlength=ov.n_true)))


def erode_labels(labels, *, size: int = 3) -> np.ndarray:
    """Erode every object of a label image separately with a ``size`` x ``size`` square.

    A pixel keeps its label when every pixel of the square around it has that label, so touching
    objects come apart; outside the image counts as background.

    Examples
    --------
    >>> erode_labels(np.array([[1, 1, 1, 2, 2, 2]] * 3 + [[0] * 6]))
    array([[0, 0, 0, 0, 0, 0],
           [0, 1, 0, 0, 2, 0],
           [0, 0, 0, 0, 0, 0],
           [0, 0, 0, 0, 0, 0]])
    """
    labels = as_label_image(labels, "labels")
    low = ndi.minimum_filter(labels, size=size, mode="constant", cval=0)
    high = ndi.maximum_filter(labels, size=size, mode="constant", cval=0)
    return np.where((low == labels) & (high == labels), labels, 0).astype(labels.dtype)


def object_jaccard(truth, prediction, *, erosion: int = 3) -> dict:
    """The object-wise Jaccard index of Matuszewski & Ranefall (2021), equation 3.

    The paper: "J = |M| / (|G| + |R| - |M|), where |G| is the number of nuclei in the ground
    truth (GT), |R| is the number of nuclei in the result, and |M| is the number of 1-to-1-matched
    nuclei between the results and the GT. There is a results-GT nucleus match if a segmented
    nucleus has a spatial overlap with exactly one nucleus in the GT, and that corresponding GT
    nucleus overlaps with exactly one nucleus in the segmentation results. The overlaps were
    computed between eroded (with a 3x3 pixels square structuring element) masks to avoid
    confusion of objects near the separation lines."

    Here each object is eroded on its own (:func:`erode_labels`, ``erosion`` x ``erosion``
    square; 0 or 1 for no erosion); any shared pixel is an overlap. |G| and |R| count the
    objects before erosion, so an object that erosion removes stays unmatched.

    Returns
    -------
    dict
        ``jaccard``, ``matched`` (|M|), ``n_true`` (|G|), ``n_pred`` (|R|). ``jaccard`` is 1.0
        when both images are empty. Sum the counts over images for a data-set-wide J.

    Examples
    --------
    >>> t = np.zeros((8, 14), int); t[1:7, 1:6] = 1; t[1:7, 6:12] = 2   # two touching nuclei
    >>> p = np.zeros((8, 14), int); p[1:7, 1:12] = 1                      # found as one
    >>> object_jaccard(t, p)
    {'jaccard': 0.0, 'matched': 0, 'n_true': 2, 'n_pred': 1}
    >>> object_jaccard(t, t)["jaccard"]
    1.0
    """
    truth, prediction = _pair(truth, prediction)
    full = instance_overlap(truth, prediction)
    if erosion and erosion > 1:
        truth, prediction = erode_labels(truth, size=erosion), erode_labels(prediction, size=erosion)
    ov = instance_overlap(truth, prediction)
    # Partners per object, on the eroded masks; a match is a pair where both have exactly one.
    t_partners = np.bincount(ov.rows, minlength=ov.n_true)
    p_partners = np.bincount(ov.cols, minlength=ov.n_pred)
    matched = int(np.count_nonzero((t_partners[ov.rows] == 1) & (p_partners[ov.cols] == 1)))
    g, r = full.n_true, full.n_pred
    denominator = g + r - matched
    return dict(jaccard=matched / denominator if denominator else 1.0, matched=matched, n_true=g, n_pred=r)


def dice_per_class(truth, prediction, *, num_classes: int | None = None, ignore_value: int | None = 255) -> np.ndarray:
    """Pixel-wise Dice coefficient of each class of two class maps, ``2|T & P| / (|T| + |P|)``.

    Parameters
    ----------
    truth, prediction : integer arrays of one shape
        Class maps, e.g. 0 background, 1 nucleus, 2 separation line.
    num_classes : int, optional
        Number of classes, background included; by default one more than the largest class
        present (``ignore_value`` excluded).
    ignore_value : int or None
        Pixels where ``truth`` has this value are not scored.

    Returns
    -------
    (num_classes,) float ndarray; NaN for a class absent from both maps.

    Examples
    --------
    >>> dice_per_class(np.array([0, 1, 1, 2, 255]), np.array([0, 1, 2, 2, 0]))
    array([1.        , 0.66666667, 0.66666667])
    """
    truth = np.asarray(truth).ravel()
    prediction = np.asarray(prediction).ravel()
    if truth.shape != prediction.shape:
        raise CellmixerError(f"truth and prediction differ in size: {truth.size} vs {prediction.size}; "
                             "compare class maps of the same image.")
    keep = np.ones(truth.shape, bool) if ignore_value is None else truth != ignore_value
    truth, prediction = truth[keep].astype(np.int64), prediction[keep].astype(np.int64)
    if truth.size and min(truth.min(), prediction.min()) < 0:
        raise CellmixerError("class maps have negative values; use 0 for background and 1, 2, ... for classes.")
    if num_classes is None:
        num_classes = int(max(truth.max(initial=0), prediction.max(initial=0))) + 1
    inside = (truth < num_classes) & (prediction < num_classes)
    both = np.bincount(truth[inside & (truth == prediction)], minlength=num_classes)[:num_classes]
    total = (np.bincount(truth[truth < num_classes], minlength=num_classes)[:num_classes]
             + np.bincount(prediction[prediction < num_classes], minlength=num_classes)[:num_classes])
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, 2.0 * both / total, np.nan)


def instance_scores(truth, prediction, *, exclude_border: bool = False) -> dict:
    """All instance scores of one image: the paper's Jaccard, F1, average precision, errors.

    Parameters
    ----------
    truth, prediction : label images of one shape
    exclude_border : bool
        Remove objects touching the image edge from both first (as Matuszewski & Ranefall do).

    Returns
    -------
    dict
        ``object_jaccard`` (and its ``matched``, ``n_true``, ``n_pred`` counts), ``f1_50`` (F1 at
        IoU 0.5), ``mean_f1`` (0.50:0.05:0.90), ``ap_50`` (tp / (tp + fp + fn) at IoU 0.5),
        ``average_precision`` (0.50:0.05:0.95), ``precision_50``, ``recall_50``, ``splits``,
        ``merges`` (IoU > 0.1) and ``missed_70`` (missed at IoU 0.7).

    Examples
    --------
    >>> t = np.zeros((10, 10), int); t[1:5, 1:5] = 1; t[6:9, 6:9] = 2
    >>> s = instance_scores(t, t)
    >>> s["object_jaccard"], s["f1_50"], s["mean_f1"], s["average_precision"], s["splits"]
    (1.0, 1.0, 1.0, 1.0, 0)
    """
    truth, prediction = _pair(truth, prediction)
    if exclude_border:
        truth, prediction = remove_border_objects(truth), remove_border_objects(prediction)
    ov = instance_overlap(truth, prediction)
    jac = object_jaccard(truth, prediction)
    at = {m["threshold"]: m for m in match_instances(ov, threshold=sorted(set(F1_THRESHOLDS) | set(AP_THRESHOLDS)))}
    sm = splits_and_merges(ov)
    return dict(object_jaccard=jac["jaccard"], matched=jac["matched"], n_true=jac["n_true"], n_pred=jac["n_pred"],
                f1_50=at[0.5]["f1"], mean_f1=float(np.mean([at[t]["f1"] for t in F1_THRESHOLDS])),
                ap_50=at[0.5]["average_precision"],
                average_precision=float(np.mean([at[t]["average_precision"] for t in AP_THRESHOLDS])),
                precision_50=at[0.5]["precision"], recall_50=at[0.5]["recall"],
                splits=sm["splits"], merges=sm["merges"], missed_70=missed_objects(ov))
