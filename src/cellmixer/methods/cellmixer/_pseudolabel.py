"""The ``pseudolabel`` command: write the unsupervised training labels, with pictures to check them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

from ..._progress import progress_bar
from ...io import (
    add_legend,
    check_not_constant,
    check_overwrite,
    class_colors,
    discover_dataset,
    locks_outputs,
    overlay_labels,
    prepare_output_dir,
    read_image,
    to_uint8,
    warn_if_mask,
    write_csv,
    write_json,
    write_png,
    write_tiff,
)
from ...ops import ForegroundParams, extract_foreground

SUMMARY_FILE = "pseudolabels.csv"
SETTINGS_FILE = "pseudolabels.json"


def qc_panel(image: np.ndarray, labels: np.ndarray, class_names) -> np.ndarray:
    """The image beside its label overlay, with a legend: what a person checks before training."""
    colors = class_colors(len(class_names))
    gray = to_uint8(image)
    side = np.concatenate([np.repeat(gray[..., None], 3, axis=-1), overlay_labels(gray, labels, colors)], axis=1)
    return add_legend(side, class_names, colors)


@locks_outputs
def pseudolabel(data, output, *, classes=None, pattern: str = "*", channel: int | None = None,
                foreground: ForegroundParams | dict | None = None, overlays: bool = True, overwrite: bool = False,
                progress: bool = True) -> list[dict]:
    """Find the cells in every image of ``ROOT/<class>/...`` without annotation, label them with the class.

    Writes, mirroring the input folders, ``<name>_masks.tif`` (uint8: 0 background, k on the
    foreground of an image of the k-th class), ``<name>_qc.png`` (image and overlay side by side),
    ``pseudolabels.csv`` (foreground fraction and number of objects per image) and
    ``pseudolabels.json`` (classes and settings used).

    Parameters
    ----------
    data : str or Path
        Folder with one sub-folder per cell type.
    output : str or Path
    classes, pattern, channel :
        Which class folders and files to use, and the channel of multi-channel images.
    foreground : ForegroundParams or dict, optional
        Settings of :func:`extract_foreground`.
    overlays, overwrite, progress : bool

    Returns
    -------
    list of dict
        The rows of ``pseudolabels.csv``.
    """
    params = ForegroundParams(**foreground) if isinstance(foreground, dict) else (foreground or ForegroundParams())
    dataset = discover_dataset(data, classes=classes, pattern=pattern, exclude=[output])
    out = prepare_output_dir(output)
    targets = []
    for path, k in zip(dataset.paths, dataset.labels):
        stem = out / path.relative_to(dataset.root).with_suffix("")
        targets.append((path, k, stem))
    planned = [out / SUMMARY_FILE, out / SETTINGS_FILE]
    for _, _, stem in targets:
        planned += [Path(f"{stem}_masks.tif")] + ([Path(f"{stem}_qc.png")] if overlays else [])
    check_overwrite(planned, overwrite=overwrite)
    rows = []
    for path, k, stem in progress_bar(targets, desc="pseudo-labelling", unit="image", enabled=progress):
        image = read_image(path, channel=channel)
        check_not_constant(image, path)
        warn_if_mask(image, path)
        mask = extract_foreground(image, **params.to_dict())
        labels = (mask * np.uint8(k)).astype(np.uint8)
        stem.parent.mkdir(parents=True, exist_ok=True)
        write_tiff(f"{stem}_masks.tif", labels, overwrite=overwrite)
        if overlays:
            write_png(f"{stem}_qc.png", qc_panel(image, labels, dataset.classes), overwrite=overwrite)
        rows.append({"image": str(path), "class": dataset.classes[k - 1],
                     "foreground_fraction": round(float(mask.mean()), 6), "objects": int(ndi.label(mask)[1])})
    write_csv(out / SUMMARY_FILE, rows, overwrite=overwrite)
    write_json(out / SETTINGS_FILE, {"classes": dataset.classes, "foreground": params.to_dict(),
                                     "channel": channel}, overwrite=overwrite)
    return rows
