"""napari reader of cellmixer's results: ``<name>_labels.tif`` with the tables written beside it."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

from ..io import read_labels
from ._layers import class_layer, instance_layer, points_layer, table_columns

LABELS_SUFFIX = "_labels.tif"
TABLE_SUFFIXES = ("_cells.csv", "_objects.csv")  # typed cells; nuclei and cells from centres


def _rows(path: Path) -> list[dict]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def _class_names(folder: Path) -> list[str] | None:
    """The classes of a CellMixer class map, from the ``<class>_fraction`` columns of ``predictions.csv``."""
    summary = folder / "predictions.csv"
    if not summary.is_file():
        return None
    with open(summary, newline="") as handle:
        header = next(csv.reader(handle), [])
    return [column[: -len("_fraction")] for column in header if column.endswith("_fraction")] or None


def _type_names(folder: Path, rows: list[dict]) -> list[str]:
    """Cell types in the model's order (``typed.json``), else in order of appearance."""
    settings = folder / "typed.json"
    if settings.is_file():
        try:
            return [c["name"] for c in json.loads(settings.read_text())["categories"]]
        except (KeyError, TypeError, ValueError):
            pass
    return list(dict.fromkeys(row["type"] for row in rows))


def read_results(path) -> list[tuple]:
    """The layers of one result: instances with their table as features (typed cells coloured by type, with
    their centres as points), detected cell centres as points, or a CellMixer class map in class colours."""
    path = Path(path)
    folder, stem = path.parent, path.name[: -len(LABELS_SUFFIX)]
    labels = read_labels(path)
    table = next((folder / f"{stem}{suffix}" for suffix in TABLE_SUFFIXES if (folder / f"{stem}{suffix}").is_file()),
                 None)
    if table is None:
        classes = _class_names(folder)
        if classes is not None:
            return [class_layer(labels, classes, f"{stem} cell types")]
        return [instance_layer(labels, f"{stem} labels")]
    rows = _rows(table)
    layers = []
    if rows and "type" in rows[0]:
        types = _type_names(folder, rows)
        layers.append(instance_layer(labels, f"{stem} cells", rows, type_names=types))
        columns = table_columns(rows)
        centres = np.stack([columns["centroid_y"], columns["centroid_x"]], axis=1)
        layers.append(points_layer(centres, f"{stem} cell centres", features=columns, type_names=types))
    else:
        layers.append(instance_layer(labels, f"{stem} objects", rows))
    detections = folder / f"{stem}_detections.csv"
    if detections.is_file():
        columns = table_columns(_rows(detections))
        yx = np.stack([columns["y"], columns["x"]], axis=1) if columns else np.zeros((0, 2))
        layers.append(points_layer(yx, f"{stem} detections"))
    return layers


def get_reader(path):
    """The reader of ``path`` if it is a cellmixer label image (``*_labels.tif``), else None."""
    if isinstance(path, list):
        if len(path) != 1:
            return None
        path = path[0]
    return read_results if str(path).endswith(LABELS_SUFFIX) else None
