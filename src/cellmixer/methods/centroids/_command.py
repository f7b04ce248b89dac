"""The ``centroids predict`` and ``centroids evaluate`` commands: files in, label images, tables, scores out."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from ..._errors import CellmixerError
from ..._settings import split_settings
from ..._version import __version__
from ...engine import ChunkedRun, Chunking, InstanceWriter, run_images
from ...io import (
    IMAGE_SUFFIXES,
    check_overwrite,
    instance_overlay,
    locks_outputs,
    prepare_output_dir,
    read_labels,
    write_csv,
    write_json,
    write_text,
)
from ...metrics import PointMatching, centroid_scores, summarize_centroid_scores
from ._labels import draw_points
from ._points import roi_labels
from ._segment import (
    DEFAULT_SEGMENTATION,
    CentroidTiling,
    Rescaling,
    load_centroid_model,
    segment_cells,
    stored_settings,
)

SUMMARY_FILE = "cells.csv"
SETTINGS_FILE = "cells.json"
EVALUATION_FILE = "centroid_evaluation"


@locks_outputs
def predict_centroids(model, inputs, output, *, pattern: str = "*", channel: int | str | None = None,
                      project: str | None = None, pixel_size=None, overlays: bool = True, device: str = "auto",
                      overwrite: bool = False, resume: bool = False, scheduler: str | None = None,
                      progress: bool = True, **settings) -> list[dict]:
    """Segment the cells of every image with a cell-centre detector and write the results.

    Per image (per plane of a z-stack or time series: ``<name>_t003_z002_...``) the files of
    :class:`cellmixer.engine.InstanceWriter`: ``<name>_labels.tif`` (0 background, cells 1..n,
    with the pixel size), ``<name>_objects.csv`` (shape and intensity of every channel, pixels
    and um), ``<name>_rois.zip`` (Fiji), ``<name>.geojson`` (QuPath), ``<name>_overlay.png``
    (outlines and detections, unless ``overlays`` is False); and ``<name>_detections.csv`` (x, y
    of every detected centre); plus ``coco_dataset.json``, ``cells.csv`` (one row per image) and
    ``cells.json`` (settings).

    Parameters
    ----------
    model : str, Path or SegmentationModel
        A detector trained by :func:`cellmixer.train_centroids`.
    inputs : image files and/or folders (searched recursively)
    output : folder
    pattern, channel : which files of folders; channel of multi-channel images, an index or a name (default:
        the model's).
    project : ``'max'`` or ``'mean'``: segment the projection over z of z-stacks instead of each plane.
    pixel_size : micrometres per pixel, for images whose files do not say.
    device : str
        ``'auto'`` (CUDA, then MPS, then the CPU), ``'cpu'``, ``'cuda'``, ``'cuda:N'`` or ``'mps'``.
    overlays, overwrite, progress : bool
    resume : bool
        Continue an interrupted run into ``output`` (same options): images done are skipped.
    scheduler : str, optional
        ``'local'`` or a ``dask.distributed`` address: the images go to the cluster's workers, one task
        each (a plate; see :func:`cellmixer.engine.run_images`). Default: one after the other here.
    **settings
        Options of :func:`cellmixer.segment_cells` (``threshold``, ``min_area``, ``window``,
        ``foreground_threshold``, ``background_threshold``, ``saliency``, ``data_weight``,
        ``smoothness``, ``rescale``) and the fields of its :class:`CentroidTiling` (``batch_size``,
        ``tile_size``, ``precision``); the settings given are recorded in ``cells.json``.

    Returns
    -------
    list of dict: the rows of ``cells.csv``.
    """
    tiling_options, options = split_settings(settings, CentroidTiling)
    tiling = CentroidTiling(**tiling_options)  # checked here, before any work
    chunking = Chunking(scheduler=scheduler)
    source = None if not isinstance(model, (str, Path)) else str(model)
    model = load_centroid_model(model, device=device)
    Rescaling(options.get("rescale", 1.0))  # checked before any work, with the detection settings
    stored_settings(model, {k: v for k, v in options.items() if k in DEFAULT_SEGMENTATION})
    out = Path(output)
    channel, channel_option = model.input_channel(channel)

    writer = InstanceWriter(out, category="cell", overlays=overlays, overwrite=overwrite)

    def outputs(stem):
        return [*writer.outputs(stem), f"{stem}_detections.csv"]

    def process(item, stem):
        image = item.read(channel, option=channel_option)
        result = segment_cells(model, image, tiling=tiling, **options)
        overlay = None
        if overlays:
            overlay = draw_points(instance_overlay(image, result.labels), result.detections, color=(255, 255, 255))
        row = {"detections": len(result.detections), **writer.write(item, image, result.labels, overlay=overlay)}
        write_csv(out / f"{stem}_detections.csv",
                  [{"x": round(float(x), 2), "y": round(float(y), 2)} for y, x in result.detections],
                  fieldnames=["x", "y"], overwrite=overwrite)
        return row

    with ChunkedRun(chunking, chunked=False) as run:
        rows = run_images(inputs, out, pattern=pattern, project=project, pixel_size=pixel_size, outputs=outputs,
                          process=process, summary_file=SUMMARY_FILE, settings_file=SETTINGS_FILE,
                          extra_files=writer.run_outputs, overwrite=overwrite, resume=resume, gather=writer.gather,
                          cluster=run, progress=progress, desc="segmenting cells",
                          settings={"model": source, "cellmixer_version": __version__, "channel": channel,
                                    "project": project, "settings": dict(settings),
                                    "model_defaults": model.config.get("centroids", {})})
    writer.finish()
    return rows


def _truth_for(folder: Path, stem: str, suffix: str, shape) -> np.ndarray | None:
    for name in (f"{stem}{suffix}", stem):
        for ext in IMAGE_SUFFIXES:
            if (folder / f"{name}{ext}").is_file():
                return read_labels(folder / f"{name}{ext}")
        for ext in (".zip", ".roi"):
            if (folder / f"{name}{ext}").is_file():
                return roi_labels(folder / f"{name}{ext}", shape)
    return None


def format_centroid_table(results: dict) -> str:
    """Markdown table, one row per method: F-measure, mDice, F1 and AP at IoU 0.5, AP 0.50:0.95."""
    lines = ["| Method | F-measure | precision | recall | mDice | F1@0.5 | AP@0.5 | AP 0.50:0.95 | cells (truth) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name, s in results.items():
        lines.append(f"| {name} | {s['f_measure']:.3f} | {s['precision']:.3f} | {s['recall']:.3f} | {s['mdice']:.3f} | "
                     f"{s['f1_50']:.3f} | {s['ap_50']:.3f} | {s['average_precision']:.3f} | "
                     f"{s['detected']} ({s['n_true']}) |")
    return "\n".join(lines)


@locks_outputs
def evaluate_centroids(predictions, truth, *, truth_suffix: str = "",
                       max_distance: float = PointMatching.max_distance, output=None, overwrite: bool = False) -> dict:
    """Score the results of :func:`predict_centroids` against ground-truth cells.

    Parameters
    ----------
    predictions : folder
        Written by :func:`predict_centroids`: ``<name>_labels.tif`` and ``<name>_detections.csv``
        (the F-measure uses the detections; without them, the centroids of the labelled cells).
    truth : folder
        Ground truth of ``<name>``: a label image ``<name><truth_suffix>.tif`` / ``.png`` (see
        :func:`cellmixer.io.read_labels`) or ImageJ ROIs ``<name><truth_suffix>.zip`` / ``.roi``.
    max_distance : float
        Matching distance of the detection F-measure, in pixels.
    output : folder, optional
        For ``centroid_evaluation.csv`` (per image), ``.json`` (summary) and ``.md`` (table).

    Returns
    -------
    dict: ``summary``, ``images`` (per-image rows), ``table`` (markdown).
    """

    PointMatching(max_distance=max_distance)  # checked before any work
    predictions, truth = Path(predictions), Path(truth)
    for option, folder in (("predictions", predictions), ("--truth", truth)):
        if not folder.is_dir():
            raise CellmixerError(f"{option} {folder}: no such folder.")
    found = sorted(predictions.rglob("*_labels.tif"))
    if not found:
        raise CellmixerError(f"{predictions}: no *_labels.tif files; give the folder written by `cellmixer centroids "
                             "predict`.")
    out = None
    if output is not None:
        out = prepare_output_dir(output)
        check_overwrite([out / f"{EVALUATION_FILE}{s}" for s in (".csv", ".json", ".md")], overwrite=overwrite)
    rows = []
    for path in found:
        stem = path.name[: -len("_labels.tif")]
        labels = read_labels(path)
        true_labels = _truth_for(truth, stem, truth_suffix, labels.shape)
        if true_labels is None:
            raise CellmixerError(f"{path}: no ground truth '{stem}{truth_suffix}' (.tif, .png, .zip or .roi) in "
                                 f"{truth}; check --truth and --truth-suffix.")
        if true_labels.shape != labels.shape:
            raise CellmixerError(f"{path}: {labels.shape[1]}x{labels.shape[0]} labels but its truth is "
                                 f"{true_labels.shape[1]}x{true_labels.shape[0]}; they must be of the same image.")
        detections = None
        det_path = path.with_name(f"{stem}_detections.csv")
        if det_path.is_file():
            with det_path.open(newline="") as handle:
                detections = np.array([(float(r["y"]), float(r["x"])) for r in csv.DictReader(handle)]).reshape(-1, 2)
        scores = centroid_scores(true_labels, labels, detections=detections, max_distance=max_distance)
        rows.append({"image": str(path.relative_to(predictions))[: -len("_labels.tif")],
                     **{k: round(v, 6) if isinstance(v, float) else v for k, v in scores.items()}})
    summary = summarize_centroid_scores(rows)
    table = format_centroid_table({predictions.name: summary})
    if out is not None:
        write_csv(out / f"{EVALUATION_FILE}.csv", rows, overwrite=overwrite)
        write_json(out / f"{EVALUATION_FILE}.json", {"predictions": str(predictions), "truth": str(truth),
                                                     "max_distance": max_distance, "summary": summary},
                   overwrite=overwrite)
        write_text(out / f"{EVALUATION_FILE}.md", table + "\n", overwrite=overwrite)
    return {"summary": summary, "images": rows, "table": table}
