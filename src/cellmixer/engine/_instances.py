"""The files of one image's instances: label image, object table, overlay."""

from __future__ import annotations

import numpy as np

from ..io import instance_overlay, write_csv, write_png, write_tiff
from ..ops import OBJECT_FIELDS, object_table


def write_instances(out, stem: str, image: np.ndarray, labels: np.ndarray, *, overlays: bool = True,
                    classes: np.ndarray | None = None, overwrite: bool = False) -> dict:
    """Write ``<stem>_labels.tif`` (uint16, or int32 from 65536 objects), ``<stem>_objects.csv``
    (:func:`object_table` with mean intensity), ``<stem>_overlay.png`` (unless ``overlays`` is
    False) and, if given, ``<stem>_classes.tif`` into ``out``; ``stem`` may hold sub-folders.

    Returns the image's summary: ``objects``, ``foreground_fraction``, ``mean_area``.
    """
    (out / stem).parent.mkdir(parents=True, exist_ok=True)
    count = int(labels.max(initial=0))
    write_tiff(out / f"{stem}_labels.tif", labels.astype(np.uint16 if count < 65536 else np.int32), overwrite=overwrite)
    table = object_table(labels, image)
    write_csv(out / f"{stem}_objects.csv", table, overwrite=overwrite,
              fieldnames=[*OBJECT_FIELDS, "mean_intensity"])
    if overlays:
        write_png(out / f"{stem}_overlay.png", instance_overlay(image, labels), overwrite=overwrite)
    if classes is not None:
        write_tiff(out / f"{stem}_classes.tif", classes, overwrite=overwrite)
    areas = [row["area"] for row in table]
    return {"objects": len(table), "foreground_fraction": round(float(np.count_nonzero(labels)) / labels.size, 6),
            "mean_area": round(float(np.mean(areas)), 2) if areas else 0.0}
