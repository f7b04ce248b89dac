"""Nucleus instances from a trained 3-class model: predict, post-process, write label images and tables."""

from __future__ import annotations

import numpy as np

from ..._errors import CellmixerError
from ..._progress import progress_bar
from ..._version import __version__
from ...engine import SegmentationModel, load_model, write_instances
from ...io import check_overwrite, collect_inputs, prepare_output_dir, read_image, write_csv, write_json
from ...ops import instances_from_classes

SUMMARY_FILE = "nuclei.csv"


def load_nucleus_model(model, *, device=None) -> SegmentationModel:
    """A :class:`SegmentationModel` trained by :func:`cellmixer.train_nuclei` (path or model), on ``device``."""
    return load_model(model, methods=("nuclei",), device=device)


def segment_nuclei(model, image: np.ndarray, *, overlap: float = 0.25, batch_size: int = 4, precision: str = "fp32",
                   augment: bool = False, remove_border: bool = False, min_area: int = 0,
                   return_classes: bool = False):
    """Nucleus instances of one image: the model's 3-class map, post-processed.

    Parameters
    ----------
    model : SegmentationModel or path
        A nucleus model (:func:`cellmixer.train_nuclei`).
    image : (H, W) array
        Any size and numeric type; tiles of the model's training size are normalized by their own
        mean and standard deviation, and blended where they overlap.
    overlap, batch_size, precision, augment :
        Sliding window and arithmetic (see :meth:`SegmentationModel.predict`).
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
        classes = model.predict(image, overlap=overlap, batch_size=batch_size, precision=precision, augment=augment)
    labels = instances_from_classes(classes, remove_border=remove_border, min_area=min_area)
    return (labels, classes) if return_classes else labels


def predict_nuclei(model, inputs, output, *, pattern: str = "*", channel: int | None = None, overlap: float = 0.25,
                   batch_size: int = 4, precision: str = "fp32", augment: bool = False, remove_border: bool = False,
                   min_area: int = 0, classes: bool = False, overlays: bool = True, device: str = "auto", overwrite: bool = False,
                   progress: bool = True) -> list[dict]:
    """Segment the nuclei of every input image and write label images, tables and overlays.

    Writes per image ``<name>_labels.tif`` (0 background, 1..n nuclei), ``<name>_objects.csv``
    (label, area, centroid, bounding box, mean intensity), ``<name>_overlay.png`` and, with
    ``classes``, ``<name>_classes.tif`` (the 3-class map before post-processing); plus
    ``nuclei.csv`` (one row per image) and ``nuclei.json`` (settings).

    Parameters
    ----------
    model : str, Path or SegmentationModel
        A nucleus model folder.
    inputs : str, Path or list
        Image files and/or folders (searched recursively).
    output : str or Path
    pattern, channel :
        Which files of the folders; the channel of multi-channel images (default: the model's).
    overlap, batch_size, precision, augment, remove_border, min_area :
        See :func:`segment_nuclei`.
    device : str
        ``'auto'`` (CUDA, then MPS, then the CPU), ``'cpu'``, ``'cuda'``, ``'cuda:N'`` or ``'mps'``.
    classes, overlays, overwrite, progress : bool

    Returns
    -------
    list of dict
        The rows of ``nuclei.csv``.
    """
    model_source = str(model) if not isinstance(model, SegmentationModel) else None
    model = load_nucleus_model(model, device=device)
    if not 0 <= overlap <= 0.9:
        raise CellmixerError(f"--overlap {overlap}: must be between 0 and 0.9.")
    if min_area < 0:
        raise CellmixerError(f"--min-area {min_area}: must be 0 or more pixels.")
    found = collect_inputs(inputs, pattern=pattern)
    out = prepare_output_dir(output)
    planned = [out / SUMMARY_FILE, out / "nuclei.json"]
    for _, stem in found:
        planned += [out / f"{stem}_labels.tif", out / f"{stem}_objects.csv"]
        planned += [out / f"{stem}_overlay.png"] if overlays else []
        planned += [out / f"{stem}_classes.tif"] if classes else []
    check_overwrite(planned, overwrite=overwrite)
    channel = model.channel if channel is None else channel
    rows = []
    for path, stem in progress_bar(found, desc="segmenting nuclei", unit="image", enabled=progress):
        image = read_image(path, channel=channel)
        labels, class_map = segment_nuclei(model, image, overlap=overlap, batch_size=batch_size, precision=precision,
                                           augment=augment, remove_border=remove_border, min_area=min_area,
                                           return_classes=True)
        rows.append({"image": str(path), **write_instances(out, stem, image, labels, overlays=overlays,
                                                           classes=class_map if classes else None,
                                                           overwrite=overwrite)})
    write_csv(out / SUMMARY_FILE, rows, overwrite=overwrite)
    write_json(out / "nuclei.json", {"model": model_source,
                                     "training_labels": model.config.get("training", {}).get("labels"),
                                     "cellmixer_version": __version__, "overlap": overlap, "precision": precision, "augment": augment,
                                     "remove_border": remove_border, "min_area": min_area}, overwrite=overwrite)
    return rows
