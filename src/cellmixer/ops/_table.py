"""One row of measurements per object of a label image."""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage as ndi
from skimage.measure import regionprops_table

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


# Shape measurements of skimage.measure.regionprops_table, under the names of the cell table; lengths also
# in micrometres (``<name>_um``) where the pixel size is known.
SHAPE_PROPERTIES = {"area": "area", "perimeter": "perimeter", "axis_major_length": "major_axis_length",
                    "axis_minor_length": "minor_axis_length", "eccentricity": "eccentricity",
                    "solidity": "solidity", "orientation": "orientation"}
LENGTHS = ("perimeter", "major_axis_length", "minor_axis_length", "centroid_x", "centroid_y")
INTENSITY_PROPERTIES = {"intensity_mean": "mean", "intensity_min": "min", "intensity_max": "max",
                        "intensity_std": "std"}


def cell_fields(channel_names=()) -> list[str]:
    """The columns of :func:`cell_measurements`, in order, for images with these channel names."""
    fields = [*OBJECT_FIELDS, "area_um2", "centroid_y_um", "centroid_x_um"]
    for name in list(SHAPE_PROPERTIES.values())[1:]:
        fields += [name] + ([f"{name}_um"] if name in LENGTHS else [])
    fields += ["mean_intensity"]
    fields += [f"{stat}_{channel}" for channel in channel_names for stat in INTENSITY_PROPERTIES.values()]
    return fields


def cell_measurements(labels, image=None, *, channels=None, channel_names=None, pixel_size=None,
                      extra: dict | None = None) -> list[dict]:
    """Shape and intensity measurements of every object of a label image, in pixels and micrometres.

    The shape measurements are those of :func:`skimage.measure.regionprops_table`.

    Parameters
    ----------
    labels : (H, W) array of non-negative integers
        0 background.
    image : (H, W) array, optional
        The image that was segmented: ``mean_intensity``.
    channels : (C, H, W) array, optional
        Every channel of the field: ``mean_<name>``, ``min_<name>``, ``max_<name>``,
        ``std_<name>`` per channel.
    channel_names : sequence of str, optional
        Names of ``channels`` (default ``0``, ``1``, ...).
    pixel_size : (float, float) or float, optional
        Micrometres per pixel (y, x). Adds ``area_um2`` and ``<length>_um`` for the centroid,
        perimeter and axis lengths (lengths with the geometric mean of y and x for non-square
        pixels); empty when None.
    extra : dict, optional
        Columns put first in every row.

    Returns
    -------
    list of dict
        One row per object in increasing label order: ``label``, ``area`` (pixels),
        ``centroid_y``, ``centroid_x``, the bounding box, ``perimeter``, ``major_axis_length``,
        ``minor_axis_length`` (pixels), ``eccentricity``, ``solidity``, ``orientation``
        (radians, regionprops' angle between the rows axis and the major axis), their
        micrometre twins and the intensity statistics.

    Examples
    --------
    >>> labels = np.zeros((10, 10), int); labels[2:6, 3:5] = 1
    >>> [row] = cell_measurements(labels, np.ones((10, 10)), pixel_size=0.5)
    >>> row["area"], row["area_um2"], row["major_axis_length"] > row["minor_axis_length"], row["solidity"]
    (8, 2.0, True, 1.0)
    """
    rows = object_table(labels, image, extra=extra)
    if not rows:
        return []
    labels = as_label_image(labels, "labels")
    properties = ["label", *list(SHAPE_PROPERTIES)[1:]]
    names = []
    intensity = None
    if channels is not None:
        channels = np.asarray(channels, np.float64)
        if channels.ndim == 2:
            channels = channels[None]
        if channels.shape[1:] != labels.shape:
            raise CellmixerError(f"channels: shape {channels.shape} does not match the labels' {labels.shape}.")
        names = [str(n) for n in channel_names] if channel_names is not None else [
            str(i) for i in range(len(channels))]
        intensity = np.moveaxis(channels, 0, -1)
        properties += list(INTENSITY_PROPERTIES)
    table = regionprops_table(labels, intensity, properties=properties)
    if pixel_size is not None:
        py, px = (float(pixel_size),) * 2 if np.ndim(pixel_size) == 0 else (float(v) for v in pixel_size)
        length = math.sqrt(py * px)
    for i, row in enumerate(rows):
        for prop, name in list(SHAPE_PROPERTIES.items())[1:]:
            row[name] = round(float(table[prop][i]), 6)
        row["centroid_x_um"] = row["centroid_y_um"] = row["area_um2"] = ""
        for name in LENGTHS:
            row[f"{name}_um"] = ""
        if pixel_size is not None:
            row["area_um2"] = round(row["area"] * py * px, 6)
            row["centroid_x_um"], row["centroid_y_um"] = round(row["centroid_x"] * px, 6), round(row["centroid_y"] * py, 6)
            for name in LENGTHS[:3]:
                row[f"{name}_um"] = round(row[name] * length, 6)
        for c, channel in enumerate(names):
            for prop, stat in INTENSITY_PROPERTIES.items():
                row[f"{stat}_{channel}"] = round(float(table[f"{prop}-{c}"][i]), 6)
    order = [*(extra or {}), *cell_fields(names)]
    return [{key: row.get(key, "") for key in order} for row in rows]
