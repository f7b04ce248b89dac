"""The files of one image's typed cells: label and type images, cell table, GeoJSON, overlay; and their rows."""

from __future__ import annotations

import json

import numpy as np

from ...io import (
    add_legend,
    class_colors,
    instance_features,
    overlay_labels,
    write_csv,
    write_png,
    write_text,
    write_tiff,
)
from ...ops import OBJECT_FIELDS, object_table
from ._assign import TypedInstances
from ._coco import label_annotations

CELL_FIELDS = ("label", "type", "score", "objectness", *OBJECT_FIELDS[1:], "mean_intensity")
OUTPUT_SUFFIXES = ("_labels.tif", "_types.tif", "_cells.csv", ".geojson")
OVERLAY_SUFFIX = "_overlay.png"


def cell_table(cells: TypedInstances, image=None, *, extra: dict | None = None) -> list[dict]:
    """One row per cell: label, type, score, objectness, area, centroid, bounding box, mean intensity."""
    rows = object_table(cells.labels, image, extra=extra)
    for row in rows:
        k = row["label"] - 1
        row["type"] = cells.type_names[cells.types[k]]
        row["score"] = round(float(cells.scores[k]), 6)
        row["objectness"] = round(float(cells.objectness[k]), 6)
    order = [*(extra or {}), *CELL_FIELDS]
    return [{key: row[key] for key in order if key in row} for row in rows]


def type_colors(type_names) -> dict:
    colors = class_colors(len(type_names))
    return {name: tuple(int(c) for c in colors[i]) for i, name in enumerate(type_names)}


def typed_overlay(image: np.ndarray, cells: TypedInstances) -> np.ndarray:
    """The image with each cell tinted and outlined in the colour of its type, and a legend with counts."""
    colors = class_colors(len(cells.type_names))
    rgb = overlay_labels(image, cells.type_map(), colors, regions=cells.labels)
    counts = cells.counts()
    return add_legend(rgb, [f"{name} ({counts[name]})" for name in cells.type_names], colors)


def coco_results(cells: TypedInstances, *, image_id: int, file_name: str, category_ids: dict) -> list[dict]:
    """COCO results (RLE masks) of one image; ``category_ids`` maps type names to COCO category ids.

    Besides the standard keys each result carries ``category_name``, ``objectness`` and
    ``file_name``, so that :func:`cellmixer.evaluate_typed` can match results to any annotation
    file by image name and type name.
    """
    names = [cells.type_names[t] for t in cells.types]
    return label_annotations(cells.labels, image_id=image_id, category_ids=[category_ids[n] for n in names],
                             scores=cells.scores,
                             extra={"category_name": names, "objectness": [round(float(v), 6) for v in cells.objectness],
                                    "file_name": [file_name] * len(cells)})


def write_typed(out, stem: str, image: np.ndarray, cells: TypedInstances, *, overlays: bool = True,
                overwrite: bool = False) -> dict:
    """Write ``<stem>_labels.tif`` (cells 1..n), ``<stem>_types.tif`` (0 background, k = k-th type),
    ``<stem>_cells.csv``, ``<stem>.geojson`` and ``<stem>_overlay.png`` into ``out``.

    Returns the image's row of the count table: ``cells`` and the number of each type.
    """
    (out / stem).parent.mkdir(parents=True, exist_ok=True)
    n = len(cells)
    write_tiff(out / f"{stem}_labels.tif", cells.labels.astype(np.uint16 if n < 65536 else np.int32),
               overwrite=overwrite)
    write_tiff(out / f"{stem}_types.tif", cells.type_map(), overwrite=overwrite)
    write_csv(out / f"{stem}_cells.csv", cell_table(cells, image), overwrite=overwrite, fieldnames=list(CELL_FIELDS))
    features = instance_features(cells.labels, names=[cells.type_names[t] for t in cells.types],
                                 colors=type_colors(cells.type_names),
                                 properties={"score": np.round(cells.scores, 6)})
    write_text(out / f"{stem}.geojson", json.dumps(features) + "\n", overwrite=overwrite)
    if overlays:
        write_png(out / f"{stem}{OVERLAY_SUFFIX}", typed_overlay(image, cells), overwrite=overwrite)
    return {"cells": n, **cells.counts()}
