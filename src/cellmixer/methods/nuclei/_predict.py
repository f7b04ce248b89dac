"""Nucleus instances from a trained 3-class model: predict, post-process, write label images and tables."""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np

from ..._errors import CellmixerError
from ..._settings import takes_settings
from ..._version import __version__
from ...engine import (
    ChunkedRun,
    Chunking,
    ChunkTask,
    InstanceWriter,
    ModelRef,
    SegmentationModel,
    Tiling,
    Window,
    as_tiling,
    drop_image_border,
    load_model,
    model_context,
    object_fields,
    overview,
    run_images,
    write_labels,
    zarr_output,
)
from ...io import instance_overlay, locks_outputs, write_csv, write_png
from ...ops import InstanceSettings, instances_from_classes

SUMMARY_FILE, SETTINGS_FILE = "nuclei.csv", "nuclei.json"
# Room for the largest nucleus around each chunk of a large image (pixels): twice a large nucleus at 20x.
NUCLEUS_HALO = 96


def load_nucleus_model(model, *, device=None) -> SegmentationModel:
    """A :class:`SegmentationModel` trained by :func:`cellmixer.train_nuclei` (path or model), on ``device``."""
    return load_model(model, methods=("nuclei",), device=device)


@takes_settings(Tiling)
def segment_nuclei(model, image: np.ndarray, *, tiling: Tiling | None = None, remove_border: bool = False,
                   min_area: int = 0, return_classes: bool = False, **tiling_options):
    """Nucleus instances of one image: the model's 3-class map, post-processed.

    Parameters
    ----------
    model : SegmentationModel or path
        A nucleus model (:func:`cellmixer.train_nuclei`).
    image : (H, W) array
        Any size and numeric type; tiles of the model's training size are normalized by their own
        mean and standard deviation, and blended where they overlap.
    tiling : Tiling, optional
        The sliding-window settings as one object; the keyword options below change its fields.
    overlap, batch_size, precision, augment :
        Sliding window and arithmetic (see :class:`cellmixer.engine.Tiling`). ``tile_size`` is
        accepted but has no effect: a nucleus model predicts in tiles of its training crop size.
    remove_border : bool
        Drop nuclei touching the image edge.
    min_area : int
        Drop nuclei smaller than this many pixels.
    return_classes : bool
        Also return the 3-class map (0 background, 1 nucleus, 2 separation line).

    Returns
    -------
    labels : (H, W) int32 ndarray
        0 background, 1..n nuclei.
    classes : (H, W) uint8 ndarray, only with ``return_classes``
    """
    tiling = as_tiling(tiling, **tiling_options)
    model = load_nucleus_model(model)
    image = np.asarray(image)
    if image.ndim != 2:
        raise CellmixerError(f"image: {image.ndim}-D array of shape {image.shape}; give one 2-D channel.")
    if not np.isfinite(image).all():
        raise CellmixerError("image contains NaN or infinite values; replace them before use.")
    if image.size == 0 or image.min() == image.max():
        # An empty field (or a blank frame): per-tile normalization would amplify nothing into noise.
        classes = np.zeros(image.shape, np.uint8)
    else:
        classes = model.predict(image, tiling=tiling)
    labels = instances_from_classes(classes, remove_border=remove_border, min_area=min_area)
    return (labels, classes) if return_classes else labels


def segment_nuclei_chunk(region: np.ndarray, window: Window, statistics, *, model: ModelRef, tiling: Tiling,
                         remove_border: bool, min_area: int) -> np.ndarray:
    """:func:`segment_nuclei` on a window of a large image (the chunk task of :func:`nuclei_task`)."""
    classes = model.get(load_nucleus_model).predict(region, tiling=tiling, window=window, statistics=statistics)
    labels = instances_from_classes(classes, min_area=min_area)
    return drop_image_border(labels, window) if remove_border else labels


def nuclei_task(model: SegmentationModel, tiling: Tiling, *, source=None, remove_border: bool = False,
                min_area: int = 0) -> ChunkTask:
    """The nuclei of a large image, chunk by chunk (:func:`cellmixer.engine.predict_chunked`)."""
    segment = functools.partial(segment_nuclei_chunk, model=ModelRef.of(model, source), tiling=tiling,
                                remove_border=remove_border, min_area=min_area)
    return ChunkTask(segment, name="nuclei", instances=True, tile_context=model_context(model, tiling),
                     halo=NUCLEUS_HALO, statistics=model.input_statistics,
                     key=repr((source, tiling, remove_border, min_area)))


def write_large_instances(run: ChunkedRun, out: Path, stem: str, lazy, task: ChunkTask, *, overlays: bool,
                          overwrite: bool, progress: bool) -> dict:
    """A large image's instances: ``<stem>.ome.zarr`` (image and labels), ``<stem>_objects.csv`` and an
    overlay of a pyramid level; returns its summary row."""
    zarr_path = zarr_output(out, stem)
    summary = run.predict(lazy, task, zarr_path, overwrite=overwrite, progress=progress)
    fields = [*object_fields(), *[k for k in (summary["table"][0] if summary["table"] else {}) if
                                  k not in object_fields()]]
    write_csv(out / f"{stem}_objects.csv", summary["table"], overwrite=overwrite, fieldnames=fields)
    if overlays:
        image, labels = overview(zarr_path, task.name)
        write_png(out / f"{stem}_overlay.png", instance_overlay(image, labels), overwrite=overwrite)
    areas = [row["area"] for row in summary["table"]]
    pixels = lazy.shape[0] * lazy.shape[1]
    return {"objects": summary["objects"], "foreground_fraction": round(float(sum(areas)) / pixels, 6),
            "mean_area": round(float(np.mean(areas)), 2) if areas else 0.0}


@locks_outputs
@takes_settings(Tiling)
def predict_nuclei(model, inputs, output, *, pattern: str = "*", channel: int | str | None = None,
                   project: str | None = None, pixel_size=None, remove_border: bool = False, min_area: int = 0,
                   classes: bool = False, overlays: bool = True, device: str = "auto", overwrite: bool = False,
                   resume: bool = False, progress: bool = True, tiling: Tiling | None = None,
                   chunking: Chunking | None = None,
                   **tiling_options) -> list[dict]:
    """Segment the nuclei of every input image and write label images, tables, ROIs and overlays.

    Writes per image (per plane of a z-stack or time series: ``<name>_t003_z002_...``) the files
    of :class:`cellmixer.engine.InstanceWriter`: ``<name>_labels.tif`` (0 background, 1..n
    nuclei, with the pixel size), ``<name>_objects.csv`` (shape and intensity of every channel,
    pixels and um), ``<name>_rois.zip`` (Fiji), ``<name>.geojson`` (QuPath),
    ``<name>_overlay.png`` and, with ``classes``, ``<name>_classes.tif`` (the 3-class map before
    post-processing); plus ``coco_dataset.json``, ``nuclei.csv`` (one row per image) and
    ``nuclei.json`` (settings).

    Large images (Zarr and OME-Zarr inputs, TIFFs larger than two chunks on a side)
    are predicted chunk by chunk on dask, never read whole, nuclei stitched across chunk borders:
    ``<name>.ome.zarr`` (the image and ``labels/nuclei``, with pyramids) replaces the label TIFF.

    Parameters
    ----------
    model : str, Path or SegmentationModel
        A nucleus model folder.
    inputs : str, Path or list
        Image files and/or folders (searched recursively).
    output : str or Path
    pattern, channel :
        Which files of the folders; the channel of multi-channel images, an index or a name from
        the file's metadata (default: the model's).
    project : {'max', 'mean'}, optional
        Segment the projection over z of each z-stack instead of each plane.
    pixel_size : float, optional
        Micrometres per pixel, for images whose files do not say.
    remove_border, min_area :
        See :func:`segment_nuclei`.
    device : str
        ``'auto'`` (CUDA, then MPS, then the CPU), ``'cpu'``, ``'cuda'``, ``'cuda:N'`` or ``'mps'``.
    classes, overlays, overwrite, progress : bool
    resume : bool
        Continue an interrupted run into ``output`` (same options): images done are skipped.
    tiling, tile_size, overlap, batch_size, precision, augment :
        Sliding window and arithmetic (see :func:`segment_nuclei`).
    chunking : Chunking, optional
        Chunk size, halo and dask scheduler of large images (:class:`cellmixer.engine.Chunking`).

    Returns
    -------
    list of dict
        The rows of ``nuclei.csv``.
    """
    tiling = as_tiling(tiling, **tiling_options)
    model_source = str(model) if not isinstance(model, SegmentationModel) else None
    model = load_nucleus_model(model, device=device)
    InstanceSettings(remove_border=remove_border, min_area=min_area)  # checked before any work
    out = Path(output)
    channel, channel_option = model.input_channel(channel)

    writer = InstanceWriter(out, category="nucleus", overlays=overlays, overwrite=overwrite)

    def outputs(stem):
        return [*writer.outputs(stem), *([f"{stem}_classes.tif"] if classes else [])]

    def process(item, stem):
        lazy = run.open(item)
        if lazy is not None:
            task = nuclei_task(model, tiling, source=model_source, remove_border=remove_border, min_area=min_area)
            return write_large_instances(run, out, stem, lazy, task, overlays=overlays,
                                         overwrite=overwrite or resume, progress=progress)  # --resume: anew
        image = item.read(channel, option=channel_option)
        labels, class_map = segment_nuclei(model, image, tiling=tiling, remove_border=remove_border,
                                           min_area=min_area, return_classes=True)
        if classes:
            write_labels(out / f"{stem}_classes.tif", class_map, pixel_size=item.plane.image.pixel_size,
                         overwrite=overwrite)
        return writer.write(item, image, labels)

    settings = {"model": model_source, "training_labels": model.config.get("training", {}).get("labels"),
                "cellmixer_version": __version__, "overlap": tiling.overlap, "precision": tiling.precision,
                "augment": tiling.augment, "remove_border": remove_border, "min_area": min_area, "channel": channel,
                "project": project}
    with ChunkedRun(chunking, channel=channel) as run:
        rows = run_images(inputs, out, pattern=pattern, project=project, pixel_size=pixel_size, outputs=outputs,
                          process=process, summary_file=SUMMARY_FILE, settings_file=SETTINGS_FILE, settings=settings,
                          extra_files=writer.run_outputs, overwrite=overwrite, resume=resume,
                          gather=writer.gather, cluster=run, progress=progress, desc="segmenting nuclei")
    writer.finish()
    return rows
