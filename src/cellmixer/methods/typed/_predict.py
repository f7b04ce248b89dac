"""Typed cells of new images: a type source (cell-type probabilities) and an instance source, combined."""

from __future__ import annotations

from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi
from skimage.segmentation import expand_labels

from ..._errors import CellmixerError
from ..._settings import split_settings, takes_settings
from ..._version import __version__
from ...engine import (
    ChunkedRun,
    Chunking,
    SegmentationModel,
    Tiling,
    as_tiling,
    load_model,
    method_of,
    run_images,
)
from ...io import (
    find_mask,
    locks_outputs,
    nuclear_as_json,
    read_image,
    read_labels,
    read_nuclear,
    write_csv,
    write_json,
)
from ...methods.centroids import segment_cells
from ...methods.nuclei import load_nucleus_model, segment_nuclei
from ...ops import InstanceSettings, instances_from_classes, split_foreground
from ._adapt import AdaptConfig, adapt_model
from ._assign import TypedInstances, cells_of_nuclei, typed_instances
from ._coco import read_coco
from ._nuclei import NuclearRoute, cell_source, nucleus_source
from ._write import TYPES_SUFFIX, coco_results, typed_writer, write_typed

TASK = "typed"
INSTANCE_CLASSES = ["cell", "cell boundary"]  # after background: the instance head of a typed model
INSTANCE_SOURCES = ("watershed", "components")
RESULTS_FILE, COUNTS_FILE, SETTINGS_FILE = "coco_results.json", "counts.csv", "typed.json"
FOLDER_COUNTS_FILE, ADAPTED_MODEL = "counts_per_folder.csv", "adapted_model"


def load_type_model(model, *, device=None) -> SegmentationModel:
    """A cell-type model: a CellMixer model (:func:`cellmixer.train`) or a typed model (:func:`cellmixer.train_typed`)."""
    return load_model(model, methods=("cellmixer", "typed"), device=device)


def type_names(model: SegmentationModel) -> list[str]:
    return list(model.config["types"]) if method_of(model).name == "typed" else model.classes


def _instance_source(instances, device=None):
    """``instances`` as a callable ``(image, stem, probabilities) -> labels``, or None (the model's own)."""
    if instances is None or callable(instances):
        return instances
    if isinstance(instances, np.ndarray):
        return lambda image, stem, probs: instances
    if isinstance(instances, str) and instances in INSTANCE_SOURCES:
        return instances
    if isinstance(instances, SegmentationModel) or (Path(instances) / "config.json").is_file():
        model = load_model(instances, methods=("centroids", "nuclei"), device=device, option="--instances")
        if method_of(model).name == "centroids":  # cells from a detector (`cellmixer centroids train`)
            return lambda image, stem, probs: segment_cells(model, image).labels
        nucleus_model = load_nucleus_model(model)
        return lambda image, stem, probs: segment_nuclei(nucleus_model, image)
    folder = Path(instances)
    if folder.is_dir():
        def from_files(image, stem, probs):
            path = find_mask(folder / f"{stem}.tif", masks_dir=folder, mask_suffix="_labels")
            if path is None:
                raise CellmixerError(f"--instances {folder}: no label image {stem}_labels.tif; give a folder of label "
                                     "images named like the inputs.")
            return read_labels(path)

        return from_files
    raise CellmixerError(f"--instances {instances}: give {', '.join(INSTANCE_SOURCES)}, a nucleus or cell-centre "
                         "model folder, or a folder of label images.")


def _foreground_instances(source: str, foreground: np.ndarray, *, min_distance: int, min_area: int) -> np.ndarray:

    if source == "watershed":
        return split_foreground(foreground, min_distance=min_distance, min_area=min_area)
    labels, _ = ndi.label(foreground)
    return labels


@takes_settings(Tiling, NuclearRoute)
def segment_typed(model, image: np.ndarray, *, nuclear=None, instances=None, min_distance: int = 5,
                  min_area: int = 10, stem: str = "image", tiling: Tiling | None = None,
                  probabilities: np.ndarray | None = None, **options) -> TypedInstances:
    """The cells of one image, each with its type and score.

    With a nuclear stain (``nuclear``), every nucleus becomes one cell: the nuclei of the stain
    (``nuclei``: classical by default, no training) grow into their cells (``cells``), and each cell
    is typed from the model's probabilities over its whole body.

    Parameters
    ----------
    model : SegmentationModel or path
        Type source. A CellMixer model (trained from image-level labels): its class
        probabilities type the cells of the instance source. A typed model
        (:func:`cellmixer.train_typed`): its instance head also gives the cells (separation lines
        post-processed as for nuclei, then grown back over the line pixels), and the
        probability of type ``k`` is ``(1 - p_background) * q_k`` from its two heads.
    nuclear : (H, W) array, optional
        The nuclear stain of the same field (Hoechst, DAPI): the cells are its nuclei grown into
        cells, and ``instances`` is not used.
    nuclei : str, model, array or callable
        With ``nuclear``: ``'classical'`` (:func:`cellmixer.ops.nuclei_of_stain`), a nucleus model or its
        folder, a nucleus label image, or ``f(stain) -> labels``.
    cells : str, model or callable
        With ``nuclear``: ``'nuclei'``, ``'grow'``, ``'graphcut'``
        (:func:`cellmixer.ops.cells_from_nuclei`), a cell-centre detector (the nuclei as its cell
        centres: guided backpropagation and graph cuts), or ``f(nuclei, foreground, image) -> labels``.
    diameter_range, method, cell_reach, type_falloff :
        Classical nuclei (diameters in pixels, declumping), how far a cell may reach from its
        nucleus and how fast its pixels' weight in its type falls with the distance from it (both in
        median nucleus diameters); see :class:`NuclearRoute`.
    instances : str, array, callable or path, optional
        Instance source: ``'watershed'`` (the default for CellMixer models: the predicted
        foreground split by :func:`cellmixer.instances.split_foreground`), ``'components'``
        (connected components of the foreground), a label image, a callable
        ``f(image, stem, probabilities) -> labels``, a nucleus model or a cell-centre detector
        (:func:`cellmixer.train_centroids`; folder or model), or a folder of label images
        ``<stem>_labels.tif``. ``None`` with a typed model: its own instance head.
    min_distance : int
        Watershed: smallest distance between cell centres (pixels).
    min_area : int
        Drop cells smaller than this (pixels).
    stem : str
        The image's name, for label-image instance sources.
    probabilities : (C, H, W) array, optional
        The model's probabilities of this image (``model.predict(image, nuclear=nuclear,
        probabilities=True)[1]``), where they are already at hand: the network does not run again.
    tiling : Tiling, optional
        The sliding-window settings of the type model as one object; the keyword options below
        change its fields.
    tile_size, overlap, batch_size, precision, augment :
        Sliding window and arithmetic (see :class:`cellmixer.engine.Tiling`); a model trained on
        per-tile normalized crops always uses its training crop size.

    Returns
    -------
    TypedInstances
    """
    route_options, tiling_options = split_settings(options, NuclearRoute)
    route = NuclearRoute(**route_options)
    tiling = as_tiling(tiling, **tiling_options)
    model = load_type_model(model)
    image = np.asarray(image)
    if image.ndim != 2:
        raise CellmixerError(f"image: {image.ndim}-D array of shape {image.shape}; give one 2-D channel.")
    if nuclear is not None:
        nuclear = np.asarray(nuclear)
        if nuclear.shape != image.shape:
            raise CellmixerError(f"nuclear stain of {stem}: shape {nuclear.shape} differs from the image's "
                                 f"{image.shape}; give the stain of the same field, at the same size.")
    names = type_names(model)
    source = _instance_source(instances)
    typed_model = method_of(model).name == "typed"
    if image.size == 0 or image.min() == image.max():  # a blank field has no cells
        probs = np.zeros((len(names) + 1, *image.shape), np.float32)
        probs[0] = 1
        labels = np.zeros(image.shape, np.int32)
        return typed_instances(probs, labels, type_names=names)
    if probabilities is None:
        _, raw = model.predict(image, nuclear=nuclear, probabilities=True, tiling=tiling)
    else:
        raw = np.asarray(probabilities)
        if raw.shape[1:] != image.shape:
            raise CellmixerError(f"probabilities of {stem}: shape {raw.shape} for a {image.shape} image; give the "
                                 "model's probabilities of this image, (classes, height, width).")
    if typed_model:
        n_inst = len(INSTANCE_CLASSES) + 1
        background = raw[0]
        probs = np.concatenate([background[None], (1 - background)[None] * raw[n_inst:]], axis=0)
    else:
        probs = raw
    if nuclear is not None:
        nuclei = nucleus_source(route.nuclei, route)(nuclear)
        grow = cell_source(route.cells, route)
        return cells_of_nuclei(probs, nuclei, grow(nuclei, 1 - probs[0], image), names, falloff=route.type_falloff)
    if source is None and typed_model:
        classes = raw[:len(INSTANCE_CLASSES) + 1].argmax(axis=0).astype(np.uint8)
        labels = instances_from_classes(classes, min_area=min_area)
        # The separation lines are 1-2 pixels of each touching cell: give them back to the nearest cell.
        labels = np.where(classes > 0, expand_labels(labels, distance=2), 0)
    elif source is None or isinstance(source, str):
        foreground = probs[0] < 0.5
        foreground = ndi.binary_opening(foreground, np.ones((3, 3), bool))
        labels = _foreground_instances(source or "watershed", foreground, min_distance=min_distance, min_area=min_area)
    else:
        labels = np.asarray(source(image, stem, probs))
        if labels.shape != image.shape:
            raise CellmixerError(f"instances of {stem}: {labels.shape} labels for a {image.shape} image; give label "
                                 "images of the same size.")
    return typed_instances(probs, labels, type_names=names)


@locks_outputs
@takes_settings(Tiling, NuclearRoute)
def predict_typed(model, inputs, output, *, nuclear=None, nuclear_channel=None, adapt=False, instances=None, coco=None,
                  pattern: str = "*", channel: int | str | None = None, project: str | None = None, pixel_size=None,
                  min_distance: int = 5, min_area: int = 10, overlays: bool = True, device: str = "auto",
                  overwrite: bool = False, resume: bool = False, scheduler: str | None = None, progress: bool = True,
                  tiling: Tiling | None = None, **options) -> list[dict]:
    """Find the cells of every input image with their type, and write them in every usual format.

    Per image (per plane of a z-stack or time series: ``<name>_t003_z002_...``):
    ``<name>_labels.tif`` (cells 1..n), ``<name>_types.tif`` (0 background, k = k-th type),
    ``<name>_cells.csv`` (label, type, score, objectness, shape and intensity of every channel in
    pixels and um), ``<name>_rois.zip`` (Fiji), ``<name>.geojson`` (QuPath polygons with their
    classification and measurements) and ``<name>_overlay.png`` (cells coloured by type, legend
    with counts). For all images: ``counts.csv`` (cells of each type per image),
    ``counts_per_folder.csv`` (the same summed per folder of the inputs: per well of a plate),
    ``coco_results.json`` (COCO results with RLE masks), ``coco_dataset.json`` (the COCO dataset
    of the same cells: images, categories, polygons) and ``typed.json`` (settings and
    categories).

    Parameters
    ----------
    model : str, Path or SegmentationModel
        A CellMixer model or a typed model (see :func:`segment_typed`).
    inputs : str, Path or list
        Image files and/or folders (searched recursively).
    output : str or Path
    nuclear : str, Path or (str, str), optional
        The nuclear stain of each image, a file found by name: a folder of images named like them,
        or ``(old, new)``: the image's file name with ``old`` replaced by ``new``
        (``("phase", "DAPI")``). Every nucleus then becomes one typed cell (see
        :func:`segment_typed`).
    nuclear_channel : int or str, optional
        The nuclear stain is this channel (index or name) of the image file itself.
    nuclei, cells, diameter_range, method, cell_reach, type_falloff :
        With a nuclear stain: how nuclei are found, grown into cells and typed (see :func:`segment_typed`).
    adapt : bool, AdaptConfig or dict
        Self-training first (CellMixer models): the cells of up to ``adapt_images`` inputs
        (spread over them) are typed, those typed with a mean probability of at least
        ``confidence`` become labels, and a copy of the model is fine-tuned on them for
        ``iterations`` steps; it is saved in ``<output>/adapted_model`` and types every input.
        ``True`` takes :class:`AdaptConfig`'s defaults; a dict changes them.
    instances :
        Instance source without a nuclear stain (see :func:`segment_typed`).
    coco : str or Path, optional
        A COCO file listing the images: its image ids are used in ``coco_results.json``
        (otherwise 1..n in input order); images are matched by file name.
    pattern, channel, min_distance, min_area :
        See :func:`segment_typed`; ``channel`` is an index or a name from the file's metadata.
    project : {'max', 'mean'}, optional
        Type the cells of the projection over z of z-stacks instead of each plane.
    pixel_size : float, optional
        Micrometres per pixel, for images whose files do not say.
    device : str
        ``'auto'`` (CUDA, then MPS, then the CPU), ``'cpu'``, ``'cuda'``, ``'cuda:N'`` or ``'mps'``.
    overlays, overwrite, progress : bool
    resume : bool
        Continue an interrupted run into ``output`` (same options): images done are skipped.
    scheduler : str, optional
        ``'local'`` or a ``dask.distributed`` address: the images go to the cluster's workers, one task
        each (a plate; see :func:`cellmixer.engine.run_images`). Default: one after the other here.
    tiling, tile_size, overlap, batch_size, precision, augment :
        Sliding window and arithmetic (see :func:`segment_typed`).

    Returns
    -------
    list of dict
        The rows of ``counts.csv``.
    """
    route_options, tiling_options = split_settings(options, NuclearRoute)
    route = NuclearRoute(**route_options)
    tiling = as_tiling(tiling, **tiling_options)
    chunking = Chunking(scheduler=scheduler)  # checked before any work
    model_source = None if isinstance(model, SegmentationModel) else str(model)
    model = load_type_model(model, device=device)
    names = type_names(model)
    InstanceSettings(min_distance=min_distance, min_area=min_area)  # checked before any work
    with_stain = nuclear is not None or nuclear_channel is not None
    config = None
    if adapt is not False and adapt is not None:
        if method_of(model).name != "cellmixer":
            raise CellmixerError("--adapt: adapts a CellMixer model (`cellmixer train`); a typed model learnt its "
                                 "types from annotations.")
        config = adapt if isinstance(adapt, AdaptConfig) else AdaptConfig(**(adapt if isinstance(adapt, dict) else {}))
        config.validate()
    source = _instance_source(instances, model.device)
    if with_stain:  # resolved once: a nucleus model or a detector is loaded once for all images
        route = replace(route, nuclei=nucleus_source(route.nuclei, route, device=model.device),
                        cells=cell_source(route.cells, route, device=model.device))
    out = Path(output)
    channel, channel_option = model.input_channel(channel)
    category_ids = {name: i for i, name in enumerate(names, start=1)}
    image_ids, results = {}, []
    writer = typed_writer(out, names, overlays=overlays, overwrite=overwrite)

    def number(found):
        """Refuse images of another pixel size than the model's; COCO image ids (by output stem, unique):
        those of the ``coco`` file, else 1..n in input order."""
        for item in found:
            if item.plane is not None:
                model.check_pixel_size(item.plane.image.pixel_size, item)
        image_ids.update({item.stem: i for i, item in enumerate(found, start=1)})
        if coco is not None:
            listed = {Path(im.file_name).name: im.id for im in read_coco(coco, require_images=False).images}
            missing = [item.path.name for item in found if item.path.name not in listed]
            if missing:
                raise CellmixerError(f"--coco {coco}: does not list {missing[0]} (and {len(missing) - 1} more inputs); "
                                     "give the annotation file of these images, or leave --coco out.")
            image_ids.update({item.stem: listed[item.path.name] for item in found})

    def outputs(stem):
        return [*writer.outputs(stem), f"{stem}{TYPES_SUFFIX}"]

    def read(item):
        image = read_image(item, channel=channel, option=channel_option)  # a blank field is no error: no cells
        stain = read_nuclear(item, nuclear=nuclear, nuclear_channel=nuclear_channel, shape=image.shape)
        return image, None if stain is None else stain[0]

    def segment(image, stain, stem, probabilities=None):
        return segment_typed(model, image, nuclear=stain, instances=source, min_distance=min_distance,
                             min_area=min_area, tiling=tiling, stem=stem, probabilities=probabilities,
                             **asdict(route))

    def adapt(found, out):
        nonlocal model
        chosen = [found[int(i)] for i in np.unique(np.linspace(0, len(found) - 1, min(len(found), config.adapt_images))
                                                   .round())]
        model = adapt_model(model, ((*read(item), item.stem) for item in chosen), out / ADAPTED_MODEL, config,
                            segment=segment, tiling=tiling, progress=progress, device=model.device,
                            overwrite=overwrite or resume)
        model.to(device)

    def process(item, stem):
        image, stain = read(item)
        cells = segment(image, stain, stem)
        row = write_typed(out, item, image, cells, stain=stain, writer=writer, image_id=image_ids[stem])
        # what the run gathers of this image (gather below), recorded with its row for --resume
        row["_coco_results"] = coco_results(cells, image_id=image_ids[stem],
                                            file_name=row["_coco_dataset"]["image"]["file_name"],
                                            category_ids=category_ids)
        return row

    settings = {
        "model": model_source, "cellmixer_version": __version__,
        "categories": [{"id": i, "name": n} for n, i in category_ids.items()],
        "instances": instances if isinstance(instances, str) or instances is None else type(instances).__name__,
        "instance_source": "model" if source is None and method_of(model).name == "typed" else
        (source if isinstance(source, str) else "watershed" if source is None else "given"),
        "score": "mean probability of the cell's type over its pixels; objectness: 1 - mean background probability",
        "min_distance": min_distance, "min_area": min_area, "overlap": tiling.overlap, "precision": tiling.precision,
        "augment": tiling.augment, "channel": channel, "project": project}
    if config is not None:
        settings["adapt"] = {**asdict(config), "model": ADAPTED_MODEL}
    if with_stain:
        settings.update(instance_source="nuclei of the nuclear stain",
                        nuclear=nuclear_as_json(nuclear), nuclear_channel=nuclear_channel,
                        **{k: v if isinstance(v, (str, int, float, tuple)) else type(v).__name__
                           for k, v in asdict(NuclearRoute(**route_options)).items()})

    def gather(row):  # in the order of the inputs, each image's COCO entries
        writer.gather(row)
        results.extend(row.get("_coco_results", ()))

    with ChunkedRun(chunking, chunked=False) as run:
        rows = run_images(inputs, out, pattern=pattern, project=project, pixel_size=pixel_size, outputs=outputs,
                          process=process, summary_file=COUNTS_FILE, summary_fields=["image", "cells", *names],
                          settings_file=SETTINGS_FILE, settings=settings,
                          extra_files=[RESULTS_FILE, FOLDER_COUNTS_FILE, *writer.run_outputs,
                                       *([f"{ADAPTED_MODEL}/config.json"] if config is not None else [])],
                          on_inputs=number, before_work=adapt if config is not None else None,
                          overwrite=overwrite, resume=resume, gather=gather, cluster=run, progress=progress,
                          desc="typed cells")
    write_json(out / RESULTS_FILE, results, overwrite=overwrite)
    write_csv(out / FOLDER_COUNTS_FILE, counts_per_folder(rows, names), overwrite=overwrite,
              fieldnames=["folder", "images", "cells", *names, *[f"{n}_fraction" for n in names]])
    writer.finish()
    return rows


def counts_per_folder(rows: list[dict], names) -> list[dict]:
    """The rows of ``counts.csv`` summed per folder of their ``image`` (a well of a plate), with each
    type's share of the cells.

    >>> counts_per_folder([{"image": "A1/f1.tif", "cells": 3, "a": 1, "b": 2},
    ...                    {"image": "A1/f2.tif", "cells": 1, "a": 1, "b": 0}], ["a", "b"])
    [{'folder': 'A1', 'images': 2, 'cells': 4, 'a': 2, 'b': 2, 'a_fraction': 0.5, 'b_fraction': 0.5}]
    """
    folders: dict[str, dict] = {}
    for row in rows:
        folder = Path(str(row["image"])).parent.as_posix()
        total = folders.setdefault(folder, {"folder": folder, "images": 0, "cells": 0, **{n: 0 for n in names}})
        total["images"] += 1
        total["cells"] += int(row["cells"])
        for n in names:
            total[n] += int(row[n])
    out = []
    for total in folders.values():
        cells = total["cells"]
        out.append({**total, **{f"{n}_fraction": round(total[n] / cells, 4) if cells else 0.0 for n in names}})
    return out
