"""Results as napari layer data ``(data, metadata, layer_type)``: no napari needed to build them.

Labels layers carry the per-cell table as ``features`` (the ``index`` column is the label), typed cells
are coloured by their type; cell centres are a points layer.
"""

from __future__ import annotations

import numpy as np

from ..io import class_colors

TRANSPARENT = (0.0, 0.0, 0.0, 0.0)
UNKNOWN = (0.5, 0.5, 0.5, 1.0)  # a type the model does not list


def rgba(color) -> tuple:
    """An RGB colour of 0-255 integers as RGBA floats."""
    return tuple(float(c) / 255 for c in color[:3]) + (1.0,)


def type_colors(type_names: list) -> dict:
    """Type name -> RGBA, the colours of the overlays and of the GeoJSON classifications."""
    return {name: rgba(c) for name, c in zip(type_names, class_colors(len(type_names)))}


def table_columns(rows: list[dict]) -> dict:
    """Rows of a table as columns (numpy arrays: numbers where every value is one)."""
    columns = {}
    for key in (rows[0] if rows else {}):
        values = [row.get(key) for row in rows]
        try:
            columns[key] = np.array([float(v) for v in values])
            if np.all(columns[key] == np.round(columns[key])) and key in ("label", "index", "area"):
                columns[key] = columns[key].astype(np.int64)
        except (TypeError, ValueError):
            columns[key] = np.array([str(v) for v in values], dtype=object)
    return columns


def instance_layer(labels: np.ndarray, name: str, rows: list[dict] | None = None, *,
                   type_names: list | None = None, metadata: dict | None = None) -> tuple:
    """A labels layer of instances with their table as features; with ``type_names`` (and a ``type``
    column), each cell in the colour of its type, as in the overlays."""
    meta = {"name": name, "metadata": dict(metadata or {})}
    if rows:
        features = table_columns(rows)
        features["index"] = features.get("label", np.arange(1, len(rows) + 1)).astype(np.int64)
        meta["features"] = features
        if type_names is not None and "type" in features:
            colors = type_colors(type_names)
            colormap = {int(k): colors.get(t, UNKNOWN) for k, t in zip(features["index"], features["type"])}
            meta["colormap"] = {None: TRANSPARENT, 0: TRANSPARENT, **colormap}
    return np.asarray(labels), meta, "labels"


def class_layer(classes: np.ndarray, class_names: list, name: str, *, metadata: dict | None = None) -> tuple:
    """A labels layer of a class map (0 background, k the k-th class) in the overlays' class colours,
    with the class names as features."""
    colors = class_colors(len(class_names))
    colormap = {None: TRANSPARENT, 0: TRANSPARENT, **{k: rgba(c) for k, c in enumerate(colors, start=1)}}
    features = {"index": np.arange(len(class_names) + 1),
                "class": np.array(["background", *class_names], dtype=object)}
    return (np.asarray(classes), {"name": name, "colormap": colormap, "features": features,
                                  "metadata": dict(metadata or {})}, "labels")


def points_layer(points_yx: np.ndarray, name: str, *, features: dict | None = None, type_names: list | None = None,
                 size: float = 5.0) -> tuple:
    """A points layer at (row, column) positions; with ``type_names`` and a ``type`` feature, coloured by type."""
    points = np.asarray(points_yx, dtype=float).reshape(-1, 2)
    meta = {"name": name, "size": size, "border_width": 0}
    if features:
        meta["features"] = features
        if type_names is not None and "type" in features:
            colors = type_colors(type_names)
            meta["face_color"] = np.array([colors.get(t, UNKNOWN) for t in features["type"]]).reshape(-1, 4)
    return points, meta, "points"
