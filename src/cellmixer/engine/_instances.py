"""The files of instances, written once for every command that writes them (nuclei, cells, typed cells).

Per image: the label image (with its pixel size), the table of cells (shape and intensity of every
channel, in pixels and micrometres), Fiji ROIs, QuPath GeoJSON and an overlay; per run, a COCO
dataset of all images.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..io import (
    InputImage,
    atomic_path,
    class_colors,
    coco_annotations,
    image_planes,
    instance_features,
    instance_overlay,
    instance_rois,
    object_polygons,
    write_csv,
    write_json,
    write_png,
    write_rois,
    write_text,
    write_tiff,
)
from ..ops import cell_fields, cell_measurements

COCO_DATASET_FILE = "coco_dataset.json"
ROIS_SUFFIX, GEOJSON_SUFFIX, OVERLAY_SUFFIX = "_rois.zip", ".geojson", "_overlay.png"
IMAGEJ_TYPES = (np.uint8, np.uint16, np.float32)  # what an ImageJ TIFF holds


def tiff_calibration(pixel_size, dtype) -> dict:
    """Keyword arguments of :func:`cellmixer.io.write_tiff` that store the pixel size in the file.

    As Fiji writes it (ImageJ metadata, unit ``um``; Fiji, QuPath and napari read it) for 8- and
    16-bit and float images; as standard TIFF resolution tags in pixels per centimetre for others.
    Nothing without a pixel size.
    """
    if pixel_size is None:
        return {}
    py, px = pixel_size
    if np.dtype(dtype).type in IMAGEJ_TYPES:
        return {"imagej": True, "resolution": (1 / px, 1 / py), "metadata": {"unit": "um", "axes": "YX"}}
    return {"resolution": (1e4 / px, 1e4 / py), "resolutionunit": "CENTIMETER"}


def label_dtype(labels: np.ndarray):
    """uint16 for label images of up to 65535 objects (ImageJ and QuPath open them), else int32."""
    return np.uint16 if int(labels.max(initial=0)) < 65536 else np.int32


def write_labels(path, labels: np.ndarray, *, pixel_size=None, overwrite: bool = False) -> Path:
    """Write a label image (uint16, or int32 from 65536 objects; a uint8 class map stays uint8) with its
    pixel size in the TIFF."""
    labels = np.asarray(labels)
    if labels.dtype != np.uint8:
        labels = labels.astype(label_dtype(labels))
    return write_tiff(path, labels, overwrite=overwrite, **tiff_calibration(pixel_size, labels.dtype))


class InstanceWriter:
    """Writes the instances of each image of a run in the formats people open, and the run's COCO file.

    Per image ``<stem>``: ``<stem>_labels.tif`` (0 background, 1..n; the pixel size in the TIFF),
    ``<stem><table>`` (:func:`cellmixer.ops.cell_measurements`: shape, intensity of every
    channel, pixels and micrometres; ``type`` and ``score`` of typed cells), ``<stem>_rois.zip``
    (Fiji's ROI Manager: one named polygon per cell, the type as name and group),
    ``<stem>.geojson`` (QuPath 0.4+ detections with classification and measurements, by drag and
    drop) and ``<stem>_overlay.png``; per run, ``coco_dataset.json`` (images, categories,
    polygon annotations: CVAT's "COCO 1.0" import) after :meth:`finish`, of the images whose rows
    were given to :meth:`gather`.

    :meth:`write` changes nothing in the writer: it can run on a dask worker (a plate on a
    cluster, see :func:`cellmixer.engine.run_images`), and the process that writes the run's
    files gathers its row, in the order of the inputs, whoever wrote the image.

    Parameters
    ----------
    output : Path
        The output folder (made by the command).
    category : str
        Class name of every object when untyped (``nucleus``, ``cell``).
    type_names : sequence of str, optional
        Cell types: the categories of typed cells.
    table_suffix : str
        Name of the table after the stem (``_objects.csv``, ``_cells.csv``).
    overlays, overwrite : bool

    Examples
    --------
    >>> import tempfile, pathlib
    >>> out = pathlib.Path(tempfile.mkdtemp())
    >>> labels = np.zeros((32, 32), np.int32); labels[4:12, 4:14] = 1; labels[18:28, 15:25] = 2
    >>> writer = InstanceWriter(out, category="nucleus")
    >>> row = writer.write("field", np.ones((32, 32), np.float32), labels)
    >>> row["objects"], sorted(p.name for p in out.iterdir()) == sorted(writer.outputs("field"))
    (2, True)
    >>> writer.gather(row)
    >>> len(json.loads(writer.finish().read_text())["annotations"])
    2
    """

    def __init__(self, output, *, category: str = "cell", type_names=None, table_suffix: str = "_objects.csv",
                 overlays: bool = True, overwrite: bool = False):
        self.output = Path(output)
        self.types = list(type_names) if type_names is not None else None
        self.category = category
        self.table_suffix = table_suffix
        self.overlays, self.overwrite = overlays, overwrite
        names = self.types if self.types is not None else [category]
        palette = class_colors(len(names))
        self.colors = {name: tuple(int(c) for c in palette[i]) for i, name in enumerate(names)}
        self.category_ids = {name: i for i, name in enumerate(names, start=1)}
        self.images: list[dict] = []
        self.annotations: list[dict] = []

    def outputs(self, stem: str) -> list[str]:
        """The names of the files :meth:`write` writes for ``stem``."""
        return [f"{stem}_labels.tif", f"{stem}{self.table_suffix}", f"{stem}{ROIS_SUFFIX}", f"{stem}{GEOJSON_SUFFIX}",
                *([f"{stem}{OVERLAY_SUFFIX}"] if self.overlays else [])]

    run_outputs = (COCO_DATASET_FILE,)

    def write(self, item, image: np.ndarray, labels: np.ndarray, *, types=None, scores=None, columns=None,
              overlay: np.ndarray | None = None, image_id: int | None = None) -> dict:
        """Write the files of one image's instances.

        Parameters
        ----------
        item : InputImage or str
            The input (its stem names the files; its plane gives every channel and the pixel
            size), or a stem.
        image : (H, W) array
            The channel that was segmented: overlay and ``mean_intensity``.
        labels : (H, W) int array
            0 background, objects 1..n.
        types, scores : sequences, optional
            Per object ``k`` at index ``k - 1``: its type (index into ``type_names``) and score.
        columns : dict of sequences, optional
            More per-object columns for the table (e.g. ``objectness``).
        overlay : (H, W, 3) uint8, optional
            The picture to write as the overlay (default: outlines on the image).
        image_id : int, optional
            Its id in the COCO dataset (default: 1, 2, ... in the order rows are gathered).

        Returns
        -------
        dict
            ``objects``, ``foreground_fraction``, ``mean_area``, and ``_coco_dataset``, the image's
            COCO entries for :meth:`gather`.
        """
        stem = item.stem if isinstance(item, InputImage) else str(item)
        plane = None
        if isinstance(item, InputImage):
            plane = item.plane if item.plane is not None else image_planes(item.path)[0]
        out = self.output
        (out / stem).parent.mkdir(parents=True, exist_ok=True)
        labels = np.asarray(labels)
        pixel_size = plane.image.pixel_size if plane is not None else None
        write_labels(out / f"{stem}_labels.tif", labels, pixel_size=pixel_size, overwrite=self.overwrite)

        channels = names = None
        if plane is not None:
            names = plane.image.channel_names
            channels = image[None] if len(names) == 1 else plane.channels()
        rows = cell_measurements(labels, image, channels=channels, channel_names=names, pixel_size=pixel_size)
        n = int(labels.max(initial=0))
        class_of = [self.category] * n
        added = {}
        if types is not None:
            class_of = [self.types[int(t)] for t in types]
            added["type"] = class_of
        if scores is not None:
            added["score"] = [round(float(s), 6) for s in scores]
        added.update({key: list(values) for key, values in (columns or {}).items()})
        for row in rows:
            for key, values in added.items():
                row[key] = values[row["label"] - 1]
        fields = cell_fields(names or ())
        fields[1:1] = list(added)
        rows = [{key: row[key] for key in fields} for row in rows]
        write_csv(out / f"{stem}{self.table_suffix}", rows, fieldnames=fields, overwrite=self.overwrite)

        by_label = [{}] * n
        for row in rows:
            by_label[row["label"] - 1] = row
        polygons = object_polygons(labels)  # the outlines, once for the ROIs, the GeoJSON and the COCO file
        with atomic_path(out / f"{stem}{ROIS_SUFFIX}", overwrite=self.overwrite) as tmp:
            write_rois(tmp, instance_rois(labels, names=class_of, colors=self.colors, polygons=polygons))
        key = item.key if isinstance(item, InputImage) else stem
        features = instance_features(labels, names=class_of, colors=self.colors, measurements=by_label,
                                     image_name=f"{key}{plane.suffix if plane is not None else ''}",
                                     properties={"score": added["score"]} if "score" in added else None,
                                     polygons=polygons)
        write_text(out / f"{stem}{GEOJSON_SUFFIX}", json.dumps(features) + "\n", overwrite=self.overwrite)
        if self.overlays:
            picture = overlay if overlay is not None else instance_overlay(image, labels)
            write_png(out / f"{stem}{OVERLAY_SUFFIX}", picture, overwrite=self.overwrite)

        entry = {"id": None if image_id is None else int(image_id), "file_name": _coco_name(item),
                 "height": int(labels.shape[0]), "width": int(labels.shape[1])}
        annotations = coco_annotations(labels, image_id=0, category_ids=[self.category_ids[c] for c in class_of]
                                       if n else 1, scores=scores, polygons=polygons)  # numbered by gather()
        areas = [row["area"] for row in rows]
        return {"objects": len(rows), "foreground_fraction": round(float(np.count_nonzero(labels)) / labels.size, 6),
                "mean_area": round(float(np.mean(areas)), 2) if areas else 0.0,
                "_coco_dataset": {"image": entry, "annotations": annotations}}

    def gather(self, row: dict) -> None:
        """Add the COCO entries of an image's row (made by :meth:`write` here, on a worker, or recorded by an
        interrupted run that ``--resume`` continues) to the run's dataset. Given in the order of the inputs,
        images are numbered 1, 2, ... (unless :meth:`write` was given their id) and annotations after one
        another: the COCO file is the same however and wherever its images were done."""
        done = row.get("_coco_dataset")  # (a large image predicted in chunks has its own files)
        if done is None:
            return
        image = dict(done["image"])
        if image["id"] is None:
            image["id"] = len(self.images) + 1
        first = len(self.annotations) + 1
        self.images.append(image)
        self.annotations += [{**annotation, "id": first + i, "image_id": image["id"]}
                             for i, annotation in enumerate(done["annotations"])]

    def finish(self) -> Path:
        """Write ``coco_dataset.json``: every image written, the categories, every object's polygons."""
        dataset = {"info": {"description": "cellmixer instances", "version": "1.0"}, "licenses": [],
                   "images": self.images,
                   "categories": [{"id": i, "name": name, "supercategory": "cell"}
                                  for name, i in self.category_ids.items()],
                   "annotations": self.annotations}
        return write_json(self.output / COCO_DATASET_FILE, dataset, overwrite=self.overwrite)


def _coco_name(item) -> str:
    """The image's file name in the COCO dataset: its path relative to the input folder; a plane of a
    stack names the file that plane would be, saved alone (``stack_t003_z002.tif``)."""
    if not isinstance(item, InputImage):
        return f"{item}.tif"
    if item.plane is None or not item.plane.suffix:
        return item.key
    key = Path(item.key)
    return key.with_name(f"{key.stem}{item.plane.suffix}{key.suffix}").as_posix()
