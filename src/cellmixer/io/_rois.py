"""Cell outlines as a Fiji/ImageJ ROI set (``RoiSet.zip``, read by the ROI Manager) and as a COCO dataset."""

from __future__ import annotations

import zipfile

import numpy as np
import roifile

from ._geojson import object_polygons


def _outlines(labels: np.ndarray, tolerance: float, polygons=None):
    """``(k, box, exterior rings of its parts, largest first)`` of each object of a label image
    (``polygons``: its :func:`object_polygons`, if already computed)."""
    for k, box, parts in object_polygons(labels, tolerance=tolerance) if polygons is None else polygons:
        rings = sorted((np.asarray(p[0], np.float64) for p in parts), key=len, reverse=True)
        yield k, box, rings


def instance_rois(labels: np.ndarray, *, names=None, colors=None, tolerance: float = 0.5, polygons=None) -> list:
    """One ImageJ polygon ROI per object of a label image (``roifile.ImagejRoi``), for the ROI Manager.

    Each ROI is named ``<class>-<label>`` (``cell-0007``; ``names[k - 1]`` gives the class of
    object ``k``), its group is the class's number (1, 2, ... in order of first use; ImageJ's
    ROI groups) and its outline takes the class's colour from ``colors`` (name -> (r, g, b)).
    An object in several pieces keeps its largest piece; holes are not drawn.

    Examples
    --------
    >>> labels = np.zeros((8, 8), np.int32); labels[2:5, 2:6] = 1
    >>> [roi] = instance_rois(labels, names=["nucleus"])
    >>> roi.name, roi.group, roi.coordinates().min(axis=0).tolist()
    ('nucleus-0001', 1, [2.0, 2.0])
    """
    labels = np.asarray(labels)
    width = max(4, len(str(int(labels.max(initial=0)))))
    groups: dict[str, int] = {}
    rois = []
    for k, _, rings in _outlines(labels, tolerance, polygons):
        name = str(names[k - 1]) if names is not None else "cell"
        group = groups.setdefault(name, len(groups) + 1)
        roi = roifile.ImagejRoi.frompoints(rings[0][:-1], name=f"{name}-{k:0{width}d}")
        roi.roitype = roifile.ROI_TYPE.POLYGON
        roi.group = min(group, 255)
        if colors is not None and name in colors:
            r, g, b = (int(c) for c in colors[name])
            roi.stroke_color = bytes((255, r, g, b))
        rois.append(roi)
    return rois


def write_rois(path, rois) -> None:
    """Write ROIs as an ImageJ ROI set (a ZIP of ``.roi`` files); ``path`` is replaced."""
    if rois:
        roifile.roiwrite(path, rois, mode="w")
    else:  # an image without objects: an empty set, which the ROI Manager opens as such
        zipfile.ZipFile(path, "w").close()


def coco_annotations(labels: np.ndarray, *, image_id: int, category_ids, first_id: int = 1, scores=None,
                     tolerance: float = 0.5, polygons=None) -> list[dict]:
    """COCO annotations (polygons, as CVAT and most annotation tools import them) of a label image.

    Parameters
    ----------
    labels : (H, W) integer array
        0 background, objects 1..n.
    image_id : int
    category_ids : int or sequence of int
        The category of every object, or of object ``k`` at index ``k - 1``.
    first_id : int
        Id of the first annotation; the others follow.
    scores : sequence of float, optional
        Adds ``score`` (object ``k`` at index ``k - 1``).
    tolerance : float
        Outlines are simplified to within this many pixels.
    polygons : list, optional
        The objects' :func:`object_polygons`, if already computed.

    Returns
    -------
    list of dict
        ``id``, ``image_id``, ``category_id``, ``segmentation`` (one ``[x1, y1, x2, y2, ...]``
        polygon per piece, pixel corners on integers as COCO's), ``area`` (pixels of the
        object), ``bbox`` (``[x, y, width, height]``) and ``iscrowd`` 0.
    """
    labels = np.asarray(labels)
    annotations = []
    for k, box, rings in _outlines(labels, tolerance, polygons):
        category = category_ids if np.ndim(category_ids) == 0 else category_ids[k - 1]
        y, x = box
        entry = {"id": first_id + len(annotations), "image_id": int(image_id), "category_id": int(category),
                 "segmentation": [np.round(r[:-1], 2).ravel().tolist() for r in rings],
                 "area": int(np.count_nonzero(labels[box] == k)),
                 "bbox": [x.start, y.start, x.stop - x.start, y.stop - y.start], "iscrowd": 0}
        if scores is not None:
            entry["score"] = round(float(scores[k - 1]), 6)
        annotations.append(entry)
    return annotations
