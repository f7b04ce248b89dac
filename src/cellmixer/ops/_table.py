"""One row of measurements per object of a label image."""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from .._errors import CellmixerError
from ..io import as_label_image, label_index

OBJECT_FIELDS = ("label", "area", "centroid_y", "centroid_x", "bbox_min_row", "bbox_min_col", "bbox_max_row",
                 "bbox_max_col")


def object_table(labels, image=None, *, extra: dict | None = None) -> list[dict]:
    """Area, centroid, bounding box (and mean intensity) of every object of a label image.

    Computed with ``np.bincount`` and ``scipy.ndimage.find_objects`` over the whole image at
    once; the values are those of ``skimage.measure.regionprops``.

    Parameters
    ----------
    labels : (H, W) array of non-negative integers
        0 background; labels need not be consecutive.
    image : (H, W) array, optional
        Intensities; adds ``mean_intensity``.
    extra : dict, optional
        Columns put first in every row, e.g. ``{"image": "a.tif"}``.

    Returns
    -------
    list of dict
        One row per object in increasing label order: ``label``, ``area`` (pixels),
        ``centroid_y``, ``centroid_x`` (mean row and column), ``bbox_min_row``, ``bbox_min_col``,
        ``bbox_max_row``, ``bbox_max_col`` (maxima exclusive, as regionprops' ``bbox``) and, with
        ``image``, ``mean_intensity``. An image without objects gives ``[]``.

    Examples
    --------
    >>> labels = np.zeros((4, 6), int); labels[1:3, 1:4] = 7
    >>> [row] = object_table(labels, np.full((4, 6), 2.0))
    >>> row["label"], row["area"], row["centroid_y"], row["centroid_x"], row["mean_intensity"]
    (7, 6, 1.5, 2.0, 2.0)
    >>> row["bbox_min_row"], row["bbox_min_col"], row["bbox_max_row"], row["bbox_max_col"]
    (1, 1, 3, 4)
    """
    labels = as_label_image(labels, "labels")
    if labels.ndim != 2:
        raise CellmixerError(f"labels: expected a 2-D label image, got shape {labels.shape}.")
    if image is not None:
        image = np.asarray(image)
        if image.shape != labels.shape:
            raise CellmixerError(f"image: shape {image.shape} differs from the labels' {labels.shape}; "
                                 "give the image the labels were made from.")
    extra = dict(extra or {})
    if labels.size == 0 or not labels.any():
        return []
    index, ids = label_index(labels)          # 0 background, 1..n objects; ids[k] = label of k
    n = len(ids)
    area = np.bincount(index, minlength=n)
    rows, cols = np.divmod(np.arange(labels.size), labels.shape[1])
    cy = np.bincount(index, rows, minlength=n)[1:] / area[1:]
    cx = np.bincount(index, cols, minlength=n)[1:] / area[1:]
    boxes = ndi.find_objects(index.reshape(labels.shape))
    if image is not None:
        mean = np.bincount(index, np.asarray(image, np.float64).ravel(), minlength=n)[1:] / area[1:]
    table = []
    for k in range(1, n):
        ys, xs = boxes[k - 1]
        row = {**extra, "label": int(ids[k]), "area": int(area[k]), "centroid_y": float(cy[k - 1]),
               "centroid_x": float(cx[k - 1]), "bbox_min_row": ys.start, "bbox_min_col": xs.start,
               "bbox_max_row": ys.stop, "bbox_max_col": xs.stop}
        if image is not None:
            row["mean_intensity"] = float(mean[k - 1])
        table.append(row)
    return table
