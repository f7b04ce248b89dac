"""The ``predict`` command: label images on disk and write label TIFFs, overlays and a summary CSV."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

from .._errors import CellmixerError
from .._progress import progress_bar
from ..io import (IMAGE_SUFFIXES, add_legend, check_not_constant, check_overwrite, class_colors, list_images,
                  overlay_labels, prepare_output_dir, read_image, write_csv, write_png, write_tiff)
from ..io._write import atomic_path
from ..models import SegmentationModel

SUMMARY_FILE = "predictions.csv"


def collect_inputs(inputs, *, pattern: str = "*") -> list[tuple[Path, str]]:
    """``(path, output stem)`` for image files and folders (searched recursively).

    Images found in a folder keep their sub-folder path in the stem (``sub/a`` -> ``sub__a``) so
    that files of the same name in different folders do not collide.
    """
    if isinstance(inputs, (str, Path)):
        inputs = [inputs]
    found: list[tuple[Path, str]] = []
    for item in inputs:
        item = Path(item)
        if item.is_dir():
            images = list_images(item, pattern=pattern)
            if not images:
                raise CellmixerError(f"{item}: no images (.tif, .tiff, .png, .jpg) found; check the folder or --pattern.")
            found += [(p, "__".join(p.relative_to(item).with_suffix("").parts)) for p in images]
        elif item.is_file():
            if item.suffix.lower() not in IMAGE_SUFFIXES:
                raise CellmixerError(f"{item}: not an image file (.tif, .tiff, .png, .jpg, .jpeg).")
            found.append((item, item.stem))
        else:
            raise CellmixerError(f"{item}: no such file or folder.")
    stems = [s for _, s in found]
    duplicates = sorted({s for s in stems if stems.count(s) > 1})
    if duplicates:
        raise CellmixerError(f"two inputs would both write '{duplicates[0]}_labels.tif'; rename one or predict "
                             "them into separate output folders.")
    return found


def region_summary(labels: np.ndarray, class_names) -> dict:
    """Pixel fraction and number of connected regions (8-connected) of each class."""
    counts = np.bincount(labels.ravel(), minlength=len(class_names) + 1)
    row = {}
    structure = np.ones((3, 3), bool)
    for k, name in enumerate(class_names, start=1):
        row[f"{name}_fraction"] = round(float(counts[k]) / labels.size, 6)
        row[f"{name}_regions"] = int(ndi.label(labels == k, structure)[1]) if counts[k] else 0
    return row


OVERLAY_MAX_SIDE = 4096


def class_overlay(image: np.ndarray, labels: np.ndarray, class_names) -> np.ndarray:
    """Overlay of a class map on its image, with a legend of the class colours.

    Images larger than 4096 pixels on a side are shown sub-sampled (every 2nd, 3rd, ... pixel), so
    that the picture stays viewable and its memory small; the label TIFF keeps full resolution.
    """
    step = -(-max(image.shape) // OVERLAY_MAX_SIDE)
    image, labels = image[::step, ::step], labels[::step, ::step]
    colors = class_colors(len(class_names))
    return add_legend(overlay_labels(image, labels, colors), class_names, colors)


def predict(model, inputs, output, *, pattern: str = "*", channel: int | None = None,
            tile_size: int | str | None = "auto",
            overlap: float = 0.25, batch_size: int = 4, probabilities: bool = False, overlays: bool = True,
            precision: str = "fp32", augment: bool = False, overwrite: bool = False, progress: bool = True) -> list[dict]:
    """Label every pixel of each input image with a cell type, and write the results.

    Parameters
    ----------
    model : SegmentationModel, str or Path
        A model or its folder.
    inputs : path or list of paths
        Image files and/or folders (searched recursively).
    output : str or Path
        Folder for ``<name>_labels.tif`` (uint8: 0 background, k = k-th class), optionally
        ``<name>_probabilities.tif`` (float32, one plane per class, background first),
        ``<name>_overlay.png`` (with a legend) and ``predictions.csv`` (one row per image:
        size and, per class, pixel fraction and number of connected regions).
    pattern : str
        Only files in input folders whose name matches this glob pattern.
    channel : int, optional
        Channel of multi-channel images (default: the channel the model was trained on).
    tile_size, overlap, batch_size, precision, augment :
        Sliding-window settings, network arithmetic and test-time augmentation (see
        :meth:`SegmentationModel.predict`).
    probabilities, overlays : bool
        Write the probability TIFFs; write the overlay PNGs.
    overwrite : bool
        Replace existing result files.
    progress : bool

    Returns
    -------
    list of dict
        The rows of ``predictions.csv``.
    """
    import tifffile

    if not isinstance(model, SegmentationModel):
        model = SegmentationModel.load(model)
    if tile_size not in (None, "auto") and not (isinstance(tile_size, int) and tile_size >= 16):
        raise CellmixerError(f"--tile-size {tile_size}: must be at least 16 pixels, or 'auto' (the model's input size).")
    if not 0 <= overlap <= 0.9:
        raise CellmixerError(f"--overlap {overlap}: must be between 0 and 0.9.")
    found = collect_inputs(inputs, pattern=pattern)
    out = prepare_output_dir(output)
    planned = [out / SUMMARY_FILE]
    for _, stem in found:
        planned.append(out / f"{stem}_labels.tif")
        if probabilities:
            planned.append(out / f"{stem}_probabilities.tif")
        if overlays:
            planned.append(out / f"{stem}_overlay.png")
    check_overwrite(planned, overwrite=overwrite)
    channel = model.channel if channel is None else channel
    names = model.classes
    rows = []
    for path, stem in progress_bar(found, desc="predicting", unit="image", enabled=progress and len(found) > 1):
        image = read_image(path, channel=channel)
        check_not_constant(image, path)
        settings = dict(tile_size=tile_size, overlap=overlap, batch_size=batch_size, precision=precision,
                        augment=augment, progress=progress and len(found) == 1)
        if probabilities:
            # Written straight into a memory-mapped TIFF: bounded memory for any image size.
            with atomic_path(out / f"{stem}_probabilities.tif", overwrite=overwrite) as tmp:
                probs = tifffile.memmap(tmp, shape=(model.num_classes, *image.shape), dtype=np.float32,
                                        photometric="minisblack",  # class planes, not RGB colour
                                        metadata={"axes": "CYX", "Labels": ["background", *names]})
                labels = model.predict(image, probabilities=probs, **settings)
                probs.flush()
                del probs
        else:
            labels = model.predict(image, **settings)
        write_tiff(out / f"{stem}_labels.tif", labels, overwrite=overwrite)
        if overlays:
            write_png(out / f"{stem}_overlay.png", class_overlay(image, labels, names), overwrite=overwrite)
        rows.append({"image": str(path), "height": image.shape[0], "width": image.shape[1],
                     **region_summary(labels, names)})
    write_csv(out / SUMMARY_FILE, rows, overwrite=overwrite)
    return rows
