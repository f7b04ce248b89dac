"""Pixel-wise scores of semantic (cell-type) segmentation: confusion matrix, accuracy, IoU."""

from __future__ import annotations

import numpy as np


def confusion_matrix(truth: np.ndarray, prediction: np.ndarray, *, num_classes: int,
                     ignore_value: int | None = 255) -> np.ndarray:
    """Count pixels of true class i predicted as class j.

    Parameters
    ----------
    truth, prediction : integer arrays of one shape
        Class maps (0 background). Pixels where ``truth == ignore_value`` (not annotated) are
        skipped; so are truth values outside ``[0, num_classes)``.
    num_classes : int
        Background included.

    Returns
    -------
    (num_classes, num_classes) int64 ndarray, rows = truth, columns = prediction.

    Examples
    --------
    >>> confusion_matrix(np.array([0, 1, 1, 255]), np.array([0, 1, 0, 1]), num_classes=2)
    array([[1, 0],
           [1, 1]])
    """
    truth = np.asarray(truth).ravel()
    prediction = np.asarray(prediction).ravel()
    if truth.shape != prediction.shape:
        raise ValueError(f"truth and prediction differ in size: {truth.size} vs {prediction.size}")
    valid = (truth >= 0) & (truth < num_classes)
    if ignore_value is not None:
        valid &= truth != ignore_value
    t = truth[valid].astype(np.int64)
    p = np.clip(prediction[valid].astype(np.int64), 0, num_classes - 1)
    return np.bincount(t * num_classes + p, minlength=num_classes**2).reshape(num_classes, num_classes)


def segmentation_scores(matrix: np.ndarray, class_names=None) -> dict:
    """Per-class accuracy and IoU, and their means, from a confusion matrix.

    Accuracy of class c is its recall, ``TP / (TP + FN)`` (the per-class "Acc" of semantic
    segmentation benchmarks and of the CellMixer paper); ``IoU = TP / (TP + FP + FN)``. Classes
    absent from both truth and prediction get NaN and are left out of the means (mAcc, mIoU).

    Returns
    -------
    dict with ``classes`` (name -> {accuracy, iou, pixels}), ``mAcc``, ``mIoU``,
    ``pixel_accuracy`` and the ``confusion_matrix`` as nested lists.

    Examples
    --------
    >>> m = confusion_matrix(np.array([0, 0, 1, 1]), np.array([0, 1, 1, 1]), num_classes=2)
    >>> s = segmentation_scores(m, ["background", "cell"])
    >>> s["classes"]["cell"]["iou"], s["mIoU"]
    (0.6666666666666666, 0.5833333333333333)
    """
    matrix = np.asarray(matrix, dtype=np.float64)
    n = matrix.shape[0]
    names = list(class_names) if class_names is not None else [str(i) for i in range(n)]
    tp = np.diag(matrix)
    truth_total = matrix.sum(axis=1)
    predicted_total = matrix.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        accuracy = np.where(truth_total > 0, tp / truth_total, np.nan)
        union = truth_total + predicted_total - tp
        iou = np.where(union > 0, tp / union, np.nan)
    total = matrix.sum()
    return {
        "classes": {name: {"accuracy": float(a), "iou": float(i), "pixels": int(t)}
                    for name, a, i, t in zip(names, accuracy, iou, truth_total)},
        "mAcc": float(np.nanmean(accuracy)) if np.isfinite(accuracy).any() else float("nan"),
        "mIoU": float(np.nanmean(iou)) if np.isfinite(iou).any() else float("nan"),
        "pixel_accuracy": float(tp.sum() / total) if total else float("nan"),
        "confusion_matrix": matrix.astype(np.int64).tolist(),
    }


def _pct(value: float) -> str:
    return "-" if value is None or not np.isfinite(value) else f"{100 * value:.2f}"


def format_table(results: dict, *, background_name: str = "Backgr.") -> str:
    """A markdown table in the layout of the CellMixer paper's Table 1.

    Parameters
    ----------
    results : dict
        ``{model name: {evaluation set name: segmentation_scores(...)}}``. Classes are listed in
        the order of the first scores; the first class is background.

    Returns
    -------
    str
        One row per model and class (accuracy and IoU in percent per evaluation set), and a
        mean row per model (mAcc, mIoU).
    """
    models = list(results)
    sets = list(results[models[0]])
    class_names = list(results[models[0]][sets[0]]["classes"])
    header = "| Model | Class | " + " | ".join(f"{s} Acc | {s} IoU" for s in sets) + " |"
    rule = "|" + "---|" * (2 + 2 * len(sets))
    lines = [header, rule]
    for model in models:
        for i, name in enumerate(class_names):
            cells = []
            for s in sets:
                c = results[model][s]["classes"].get(name, {})
                cells += [_pct(c.get("accuracy")), _pct(c.get("iou"))]
            label = background_name if i == 0 else name
            lines.append(f"| {model if i == 0 else ''} | {label} | " + " | ".join(cells) + " |")
        means = []
        for s in sets:
            means += [_pct(results[model][s]["mAcc"]), _pct(results[model][s]["mIoU"])]
        lines.append("|  | **mean (mAcc, mIoU)** | " + " | ".join(f"**{m}**" for m in means) + " |")
    return "\n".join(lines)
