"""The ``predict`` command: label images on disk and write label TIFFs, overlays and a summary CSV."""

from __future__ import annotations

import numpy as np
import tifffile
from scipy import ndimage as ndi

from ..._errors import CellmixerError
from ..._progress import progress_bar
from ...engine import load_model
from ...io import (
    add_legend,
    atomic_path,
    check_not_constant,
    check_overwrite,
    class_colors,
    collect_inputs,
    overlay_labels,
    prepare_output_dir,
    read_image,
    write_csv,
    write_png,
    write_tiff,
)

SUMMARY_FILE = "predictions.csv"


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
            precision: str = "fp32", augment: bool = False, device: str = "auto", overwrite: bool = False,
            progress: bool = True) -> list[dict]:
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
    device : str
        ``'auto'`` (CUDA, then MPS, then the CPU), ``'cpu'``, ``'cuda'``, ``'cuda:N'`` or ``'mps'``.
    overwrite : bool
        Replace existing result files.
    progress : bool

    Returns
    -------
    list of dict
        The rows of ``predictions.csv``.
    """
    model = load_model(model, methods=("cellmixer",), device=device)
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
