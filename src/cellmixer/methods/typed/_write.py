"""The files of one image's typed cells: label and type images, cell table, ROIs, GeoJSON, overlay; and their rows."""

from __future__ import annotations

import numpy as np

from ...engine import InstanceWriter, write_labels
from ...io import (
    add_legend,
    class_colors,
    overlay_labels,
)
from ...ops import OBJECT_FIELDS, cell_measurements, object_table
from ._assign import TypedInstances
from ._coco import label_annotations

# A cell whose type scores below this is marked uncertain (a cell between two types, debris): in the whole-cell
# co-cultures of docs/benchmarks.md ("Which cells to check") it marks 35-42 % of the cells typed wrong and
# 3-5 % of those typed right. A type the model was not trained on scores as high as a known one.
UNCERTAIN_SCORE = 0.7
CELL_FIELDS = ("label", "type", "score", "objectness", *OBJECT_FIELDS[1:], "mean_intensity")
TABLE_SUFFIX, TYPES_SUFFIX = "_cells.csv", "_types.tif"


def typed_writer(out, type_names, *, overlays: bool = True, overwrite: bool = False) -> InstanceWriter:
    """The writer of typed cells' files (:class:`cellmixer.engine.InstanceWriter`; the table is ``<stem>_cells.csv``)."""
    return InstanceWriter(out, type_names=type_names, table_suffix=TABLE_SUFFIX, overlays=overlays, overwrite=overwrite)


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


def write_typed(out, stem, image: np.ndarray, cells: TypedInstances, *, stain=None, overlays: bool = True,
                overwrite: bool = False, writer: InstanceWriter | None = None, image_id: int | None = None) -> dict:
    """Write the files of :class:`cellmixer.engine.InstanceWriter` for typed cells (``<stem>_labels.tif``,
    ``<stem>_cells.csv`` with type, score and objectness, ``<stem>_rois.zip``, ``<stem>.geojson``,
    ``<stem>_overlay.png`` coloured by type) and ``<stem>_types.tif`` (0 background, k = k-th type).
    Cells grown from nuclei also get their nucleus's measurements (``nucleus_area``, ...; the mean
    of ``stain``, the nuclear stain, as ``nucleus_mean_intensity``).

    ``stem`` is a name or an input (:class:`cellmixer.io.InputImage`, which gives the pixel size
    and every channel); ``writer`` is a :func:`typed_writer`. Returns the image's row of the count
    table: ``cells`` and the number of each type, and its COCO entries (``_coco_dataset``, for
    :meth:`cellmixer.engine.InstanceWriter.gather`).
    """
    writer = writer or typed_writer(out, cells.type_names, overlays=overlays, overwrite=overwrite)
    name = getattr(stem, "stem", stem)
    plane = getattr(stem, "plane", None)
    (writer.output / name).parent.mkdir(parents=True, exist_ok=True)
    write_labels(writer.output / f"{name}{TYPES_SUFFIX}", cells.type_map(),
                 pixel_size=plane.image.pixel_size if plane is not None else None, overwrite=writer.overwrite)
    columns = {"objectness": [round(float(v), 6) for v in cells.objectness],
               "uncertain": [bool(v) for v in cells.scores < UNCERTAIN_SCORE]}
    if cells.nuclei is not None:
        columns.update(nucleus_columns(cells, stain, pixel_size=plane.image.pixel_size if plane is not None else None))
    written = writer.write(stem, image, cells.labels, types=cells.types, scores=cells.scores, columns=columns,
                           overlay=typed_overlay(image, cells) if writer.overlays else None, image_id=image_id)
    return {"cells": len(cells), **cells.counts(), "_coco_dataset": written["_coco_dataset"]}


NUCLEUS_FIELDS = ("area", "area_um2", "centroid_y", "centroid_x", "eccentricity", "solidity", "major_axis_length",
                  "minor_axis_length", "mean_intensity")


def nucleus_columns(cells: TypedInstances, stain=None, *, pixel_size=None) -> dict:
    """``nucleus_<measurement>`` per cell (its nucleus's area, centroid, shape and mean stain; NaN for a
    cell without one), for the cell table."""
    rows = {row["label"]: row for row in cell_measurements(cells.nuclei, stain, pixel_size=pixel_size)}
    columns = {}
    for name in NUCLEUS_FIELDS:
        if rows and name not in next(iter(rows.values())):
            continue
        columns[f"nucleus_{name}"] = [rows[k][name] if k in rows else float("nan") for k in range(1, len(cells) + 1)]
    return columns
