"""Cell outlines as GeoJSON polygons, as QuPath exports and imports them (napari reads them with napari-geojson)."""

from __future__ import annotations

import math
import uuid

import numpy as np
from scipy import ndimage as ndi
from skimage.measure import find_contours


def simplify_chain(coords: np.ndarray, tolerance: float) -> np.ndarray:
    """The Douglas-Peucker simplification of a polygonal chain, by the rule of
    ``skimage.measure.approximate_polygon`` (exact ties may pick another point), with every segment of a
    round split at once: outlines of a field's cells in a fraction of a second.

    Examples
    --------
    >>> square = np.array([[0, 0], [0, 1], [0, 2], [1, 2], [2, 2], [2, 1], [2, 0], [1, 0], [0, 0]], float)
    >>> simplify_chain(square, 0.5).tolist()
    [[0.0, 0.0], [0.0, 2.0], [2.0, 2.0], [2.0, 0.0], [0.0, 0.0]]
    """
    coords = np.asarray(coords, np.float64)
    if tolerance <= 0 or len(coords) < 3:
        return coords
    keep = np.zeros(len(coords), bool)
    keep[0] = keep[-1] = True
    starts, ends = np.array([0]), np.array([len(coords) - 1])
    while True:
        inner = ends - starts - 1
        starts, ends, inner = starts[inner > 0], ends[inner > 0], inner[inner > 0]
        if not len(starts):
            return coords[keep]
        # the points strictly between each segment's ends, segment after segment
        segment = np.repeat(np.arange(len(starts)), inner)
        first = np.cumsum(inner) - inner
        index = np.arange(len(segment)) - first[segment] + starts[segment] + 1
        (r0, c0), (r1, c1) = coords[starts][segment].T, coords[ends][segment].T
        dr, dc = r1 - r0, c1 - c0
        pr, pc = coords[index, 0] - r0, coords[index, 1] - c0
        along = pr * dr + pc * dc  # projection on the chord, times its squared length
        length2 = dr * dr + dc * dc
        inside = (along > 0) & (along < length2)  # as skimage: perpendicular distance between the ends
        ends_distance = np.minimum(np.hypot(pr, pc), np.hypot(coords[index, 0] - r1, coords[index, 1] - c1))
        with np.errstate(divide="ignore", invalid="ignore"):
            distance = np.where(inside, np.abs(pr * dc - pc * dr) / np.sqrt(length2), ends_distance)
        largest = np.maximum.reduceat(distance, first)
        # the first point at the largest distance of its segment
        farthest = np.minimum.reduceat(np.where(distance == largest[segment], index, len(coords)), first)
        split = largest > tolerance
        keep[farthest[split]] = True
        starts = np.concatenate([starts[split], farthest[split]])
        ends = np.concatenate([farthest[split], ends[split]])


def _ring(contour: np.ndarray, offset: tuple[int, int], tolerance: float) -> list | None:
    """A closed, counter-clockwise (x, y) ring in pixel-corner coordinates, or None if degenerate."""
    contour = simplify_chain(contour, tolerance)
    # find_contours runs through pixel centres' midpoints at level 0.5; pixel (r, c) covers
    # [c, c + 1] x [r, r + 1] in QuPath's and GeoJSON image coordinates, hence + 0.5.
    xy = np.stack([contour[:, 1] + offset[1] + 0.5, contour[:, 0] + offset[0] + 0.5], axis=1)
    if not np.array_equal(xy[0], xy[-1]):
        xy = np.vstack([xy, xy[:1]])
    if len(xy) < 4:
        return None
    x, y = xy[:, 0], xy[:, 1]
    if np.sum(x[:-1] * y[1:] - x[1:] * y[:-1]) < 0:  # shoelace: negative is clockwise (x right, y up)
        xy = xy[::-1]
    return np.round(xy, 3).tolist()


def mask_polygons(mask: np.ndarray, *, offset=(0, 0), tolerance: float = 0.5) -> list:
    """Polygons (GeoJSON coordinates: exterior ring, then holes) of each connected part of ``mask``."""
    parts, count = ndi.label(mask, np.ones((3, 3), bool))
    polygons = []
    for part in range(1, count + 1):
        region = np.pad(parts == part, 1)
        filled = ndi.binary_fill_holes(region)
        outer = max(find_contours(filled.astype(np.uint8), 0.5), key=len)
        exterior = _ring(outer, (offset[0] - 1, offset[1] - 1), tolerance)
        if exterior is None:
            continue
        rings = [exterior]
        holes, n_holes = ndi.label(filled & ~region)
        for hole in range(1, n_holes + 1):
            contours = find_contours((holes == hole).astype(np.uint8), 0.5)
            ring = _ring(max(contours, key=len), (offset[0] - 1, offset[1] - 1), tolerance) if contours else None
            if ring is not None:
                rings.append(ring[::-1])  # holes clockwise
        polygons.append(rings)
    return polygons


def object_polygons(labels: np.ndarray, *, tolerance: float = 0.5) -> list:
    """``(k, box, polygons)`` of each object of a label image (:func:`mask_polygons` of its mask; objects
    without a polygon left out): computed once per image, shared by every writer of outlines."""
    labels = np.asarray(labels)
    found = []
    for k, box in enumerate(ndi.find_objects(labels), start=1):
        if box is None:
            continue
        polygons = mask_polygons(labels[box] == k, offset=(box[0].start, box[1].start), tolerance=tolerance)
        if polygons:
            found.append((k, box, polygons))
    return found


def _number(value):
    """A JSON number (QuPath's measurements are numbers; NaN and None are left out)."""
    value = value.item() if hasattr(value, "item") else value
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return value if math.isfinite(value) else None


def instance_features(labels: np.ndarray, *, names, classes=None, colors=None, properties=None,
                      measurements=None, image_name: str = "", tolerance: float = 0.5, polygons=None) -> dict:
    """A GeoJSON FeatureCollection with one QuPath detection per object of a label image.

    QuPath 0.4 and later import the file by drag and drop onto the image (or File > Import
    objects): each object becomes a detection with its class (name and colour) and its
    measurements, at the same place as in the image.

    Parameters
    ----------
    labels : (H, W) integer array
        0 background, objects 1..n.
    names : sequence of str
        Class name of object ``k`` at index ``k - 1``.
    colors : dict, optional
        Class name -> (r, g, b).
    properties : dict of sequences, optional
        More properties per object (e.g. ``score``), aligned with the objects.
    measurements : sequence of dict, optional
        One row of measurements per object (label ``k`` at index ``k - 1``): the numbers of each
        row become the detection's QuPath ``measurements``.
    image_name : str
        Makes the features' ids (UUIDs, as QuPath writes them) unique across images and
        reproducible.
    tolerance : float
        Outlines are simplified to within this many pixels (0 keeps every vertex).
    polygons : list, optional
        The objects' :func:`object_polygons`, if already computed.

    Returns
    -------
    dict
        ``{"type": "FeatureCollection", "features": [...]}``; each feature has an ``id`` (a
        UUID), a ``Polygon`` (or ``MultiPolygon`` for an object in several pieces) in image pixel
        coordinates (x right, y down, pixel corners on integers), and QuPath's properties
        ``objectType`` (``"detection"``), ``name``, ``classification`` (``name``, ``color``),
        ``isLocked`` and ``measurements``, plus ``label`` and the given ``properties``.

    Examples
    --------
    >>> labels = np.zeros((6, 6), int); labels[1:4, 1:5] = 1
    >>> [cell] = instance_features(labels, names=["nucleus"], measurements=[{"area": 12}])["features"]
    >>> cell["geometry"]["type"], cell["properties"]["classification"], cell["properties"]["measurements"]
    ('Polygon', {'name': 'nucleus'}, {'area': 12})
    """
    features = []
    for k, _, parts in object_polygons(labels, tolerance=tolerance) if polygons is None else polygons:
        geometry = ({"type": "Polygon", "coordinates": parts[0]} if len(parts) == 1
                    else {"type": "MultiPolygon", "coordinates": parts})
        name = str(names[k - 1])
        classification = {"name": name}
        if colors is not None and name in colors:
            classification["color"] = [int(c) for c in colors[name]]
        values = {}
        for key, value in (measurements[k - 1] if measurements is not None else {}).items():
            if key != "label" and (number := _number(value)) is not None:
                values[key] = number
        props = {"objectType": "detection", "name": f"{name} {k}", "classification": classification,
                 "isLocked": False, "measurements": values, "label": k}
        for key, values_ in (properties or {}).items():
            value = values_[k - 1]
            props[key] = value.item() if hasattr(value, "item") else value
        features.append({"type": "Feature", "id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"cellmixer:{image_name}:{k}")),
                         "geometry": geometry, "properties": props})
    return {"type": "FeatureCollection", "features": features}
