"""The ``predict`` command: label images on disk and write label TIFFs, overlays and a summary CSV."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import tifffile
from scipy import ndimage as ndi

from ..._settings import takes_settings
from ..._errors import CellmixerError
from ...engine import (
    ChunkedRun,
    Chunking,
    SegmentationModel,
    Tiling,
    as_tiling,
    load_model,
    overview,
    run_images,
    semantic_task,
    write_labels,
    zarr_output,
)
from ...io import (
    add_legend,
    atomic_path,
    check_not_constant,
    class_colors,
    locks_outputs,
    nuclear_as_json,
    overlay_labels,
    read_nuclear,
    write_png,
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


@locks_outputs
@takes_settings(Tiling)
def predict(model, inputs, output, *, pattern: str = "*", channel: int | str | None = None,
            nuclear=None, nuclear_channel=None, project: str | None = None, pixel_size=None,
            probabilities: bool = False, overlays: bool = True,
            device: str = "auto", overwrite: bool = False, resume: bool = False, progress: bool = True,
            tiling: Tiling | None = None, chunking: Chunking | None = None, **tiling_options) -> list[dict]:
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
    channel : int or str, optional
        Channel of multi-channel images, an index or a name from the file's metadata (default: the
        channel the model was trained on).
    nuclear, nuclear_channel : optional
        Each image's nuclear stain, for models that read it (trained with a stain): a folder of images
        named like the inputs, ``(old, new)`` (the input's file name with ``old`` replaced by ``new``),
        or a channel of the input file (see :func:`cellmixer.io.read_nuclear`).
    project : {'max', 'mean'}, optional
        Label the projection over z of z-stacks; by default every plane of a stack is labelled
        and written as ``<name>_z002_labels.tif`` (``<name>_t003_z002_...`` for time series).
    pixel_size : float, optional
        Micrometres per pixel (written into the label TIFFs), for images whose files do not say.
    probabilities, overlays : bool
        Write the probability TIFFs; write the overlay PNGs.
    device : str
        ``'auto'`` (CUDA, then MPS, then the CPU), ``'cpu'``, ``'cuda'``, ``'cuda:N'`` or ``'mps'``.
    overwrite : bool
        Replace existing result files.
    resume : bool
        Continue an interrupted run into ``output`` (same options): images whose outputs it wrote
        completely are skipped, the others predicted again.
    progress : bool
        Progress bars: over images, or over the tiles of a single image.
    tiling : Tiling, optional
        The sliding-window settings as one object; the keyword options below change its fields.
    tile_size, overlap, batch_size, precision, augment :
        Sliding-window settings, network arithmetic and test-time augmentation (see
        :class:`cellmixer.engine.Tiling` and :meth:`SegmentationModel.predict`).
    chunking : Chunking, optional
        Large images (Zarr and OME-Zarr inputs, TIFFs larger than two chunks,
        ``2 * chunking.chunk_size``, on a side) are predicted chunk by chunk on dask, never read whole, and written as
        ``<name>.ome.zarr`` (the image and ``labels/classes``, with pyramids) instead of the label
        TIFF, equal to the pixel to the whole image's map; their ``<class>_regions`` are left
        empty (see :class:`cellmixer.engine.Chunking`).

    Returns
    -------
    list of dict
        The rows of ``predictions.csv``.
    """
    tiling = as_tiling(tiling, **tiling_options)
    model_source = None if isinstance(model, SegmentationModel) else str(model)
    model = load_model(model, methods=("cellmixer",), device=device)
    out = Path(output)
    channel, channel_option = model.input_channel(channel)
    names = model.classes
    single = False  # one input image: its bar is over tiles

    def count(found):
        nonlocal single
        single = len(found) == 1

    def outputs(stem):
        return [f"{stem}_labels.tif", *([f"{stem}_probabilities.tif"] if probabilities else []),
                *([f"{stem}_overlay.png"] if overlays else [])]

    def process(item, stem):
        lazy = run.open(item)
        if lazy is not None:
            return predict_large(item, stem, lazy)
        image = item.read(channel, option=channel_option)
        check_not_constant(image, item)
        size = item.plane.image.pixel_size
        stain = read_nuclear(item, nuclear=nuclear, nuclear_channel=nuclear_channel,
                             shape=image.shape) if model.nuclear_input else None  # read only where the model uses it
        settings = dict(nuclear=None if stain is None else stain[0], tiling=tiling, progress=progress and single)
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
        write_labels(out / f"{stem}_labels.tif", labels, pixel_size=size, overwrite=overwrite)
        if overlays:
            write_png(out / f"{stem}_overlay.png", class_overlay(image, labels, names), overwrite=overwrite)
        return {"height": image.shape[0], "width": image.shape[1],
                **region_summary(labels, names)}

    def predict_large(path, stem, lazy):
        if probabilities:
            raise CellmixerError(f"{path}: --probabilities is not written for images predicted in chunks (Zarr, or "
                                 "larger than two --chunk-size on a side); leave it out, or raise --chunk-size.")
        zarr_path = zarr_output(out, stem)
        summary = run.predict(lazy, semantic_task(model, tiling, source=model_source), zarr_path,
                              overwrite=overwrite or resume, progress=progress)  # --resume: chunked anew
        if overlays:
            small, labels = overview(zarr_path, "classes")
            write_png(out / f"{stem}_overlay.png", class_overlay(small, labels, names), overwrite=overwrite)
        pixels = np.asarray(summary["pixels"], np.float64)
        row = {"height": lazy.shape[0], "width": lazy.shape[1]}
        for k, name in enumerate(names, start=1):
            row.update({f"{name}_fraction": round(float(pixels[k] / pixels.sum()), 6), f"{name}_regions": ""})
        return row

    settings = {"model": str(model.folder), "channel": channel, "project": project, "pixel_size": pixel_size,
                "nuclear": nuclear_as_json(nuclear), "nuclear_channel": nuclear_channel,
                "probabilities": probabilities, "overlays": overlays,
                **dataclasses.asdict(tiling)}  # what the outputs depend on: --resume continues only the same run
    with ChunkedRun(chunking, channel=channel) as run:
        return run_images(inputs, out, pattern=pattern, project=project, pixel_size=pixel_size, outputs=outputs,
                          process=process, summary_file=SUMMARY_FILE, settings=settings, on_inputs=count,
                          overwrite=overwrite, resume=resume, cluster=run, progress=progress, bar_for_one=False,
                          desc="predicting")
