"""Cell outlines as GeoJSON polygons, as QuPath exports and imports them (napari reads them with napari-geojson)."""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi
from skimage.measure import approximate_polygon, find_contours


def _ring(contour: np.ndarray, offset: tuple[int, int], tolerance: float) -> list | None:
    """A closed, counter-clockwise (x, y) ring in pixel-corner coordinates, or None if degenerate."""
    if tolerance > 0:
        contour = approximate_polygon(contour, tolerance)
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


def instance_features(labels: np.ndarray, *, names, classes=None, colors=None, properties=None,
                      tolerance: float = 0.5) -> dict:
    """A GeoJSON FeatureCollection with one feature per object of a label image.

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
    tolerance : float
        Outlines are simplified to within this many pixels (0 keeps every vertex).

    Returns
    -------
    dict
        ``{"type": "FeatureCollection", "features": [...]}``; each feature is a ``Polygon`` (or
        ``MultiPolygon`` for an object in several pieces) in image pixel coordinates (x right,
        y down, pixel corners on integers), with QuPath's properties ``objectType``
        (``"detection"``) and ``classification`` (``name``, ``color``), plus ``label`` and the
        given ``properties``.
    """
    labels = np.asarray(labels)
    features = []
    for k, box in enumerate(ndi.find_objects(labels), start=1):
        if box is None:
            continue
        polygons = mask_polygons(labels[box] == k, offset=(box[0].start, box[1].start), tolerance=tolerance)
        if not polygons:
            continue
        geometry = ({"type": "Polygon", "coordinates": polygons[0]} if len(polygons) == 1
                    else {"type": "MultiPolygon", "coordinates": polygons})
        name = str(names[k - 1])
        classification = {"name": name}
        if colors is not None and name in colors:
            classification["color"] = [int(c) for c in colors[name]]
        props = {"objectType": "detection", "classification": classification, "label": k}
        for key, values in (properties or {}).items():
            value = values[k - 1]
            props[key] = value.item() if hasattr(value, "item") else value
        features.append({"type": "Feature", "id": str(k), "geometry": geometry, "properties": props})
    return {"type": "FeatureCollection", "features": features}
