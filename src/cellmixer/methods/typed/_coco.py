"""COCO instance annotations in and out: reading a COCO file (polygons or RLE), checking it, turning its
annotations into label images, and writing label images as COCO annotations or results (RLE masks)."""

from __future__ import annotations

import json
import math
import numbers
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from pycocotools import mask as mask_utils
from scipy import ndimage as ndi

from ..._errors import CellmixerError
from ...io import IMAGE_SUFFIXES
from ._classes import ClassSource, check_known

# Polygon vertices may lie this far outside the image (annotation tools round outlines outwards);
# pycocotools clips them when it rasterizes. Further out the file belongs to another image.
OUT_OF_BOUNDS_TOLERANCE = 2.0


@dataclass
class CocoImage:
    """One image of a COCO file: id, file name, size, where it is, and its annotations."""

    id: int
    file_name: str
    height: int
    width: int
    path: Path | None = None
    annotations: list = field(default_factory=list)


@dataclass
class CocoDataset:
    """A checked COCO instance-segmentation file.

    Attributes
    ----------
    path : Path
    images : list of CocoImage
        In the file's order, each with its annotations.
    categories : dict
        Category id -> name.
    """

    path: Path
    images: list
    categories: dict

    def instance_classes(self, image: CocoImage, source: ClassSource) -> list[str]:
        """The class name of each annotation of ``image``."""
        if source.per_annotation:
            return [self.categories[a["category_id"]] for a in image.annotations]
        return [source.image_class(image.file_name)] * len(image.annotations)

    def classes(self, source: ClassSource) -> list[str]:
        """Every class found, sorted (images without annotations count too with a per-image source)."""
        if source.per_annotation:
            return sorted({self.categories[a["category_id"]] for im in self.images for a in im.annotations})
        return sorted({source.image_class(im.file_name) for im in self.images})


def _load_json(path: Path) -> dict:
    if not path.is_file():
        raise CellmixerError(f"{path}: no such COCO annotation file.")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CellmixerError(f"{path}: not valid JSON ({exc}); give a COCO annotation file.") from None
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise CellmixerError(f"{path}: not a COCO annotation file (no \"images\" list).")
    return data


def rle_counts(text: str) -> list[int]:
    """The run lengths of a compressed COCO RLE (pycocotools' ``rleFrString``), checked: ValueError for
    characters outside the format, a number cut short, or a negative run."""
    counts, position, size = [], 0, len(text)
    while position < size:
        value = shift = 0
        while True:
            if position >= size:
                raise ValueError("the last run length is cut short")
            c = ord(text[position]) - 48
            if not 0 <= c < 64:
                raise ValueError(f"character {text[position]!r} is not of the format")
            value |= (c & 0x1F) << shift
            position += 1
            shift += 5
            if not c & 0x20:
                if c & 0x10:
                    value |= -1 << shift
                break
        if len(counts) > 2:
            value += counts[-2]
        if value < 0:
            raise ValueError("a run length is negative")
        counts.append(value)
    return counts


def _finite(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def _check_annotation(ann: dict, image: CocoImage, where: str) -> None:
    """Everything pycocotools and training read of an annotation: its segmentation decodes to a mask of
    the image's size, and ``area``, ``bbox`` and ``iscrowd`` are numbers where present."""
    seg = ann.get("segmentation")
    if isinstance(seg, dict):  # RLE
        size, counts = seg.get("size"), seg.get("counts")
        if counts is None or not isinstance(size, list) or len(size) != 2 or not all(
                isinstance(s, int) and not isinstance(s, bool) for s in size):
            raise CellmixerError(f"{where}: RLE segmentation without 'counts' and a 'size' of 2 whole numbers; fix "
                                 "the file.")
        if size != [image.height, image.width]:
            raise CellmixerError(f"{where}: RLE of size {size[0]}x{size[1]} for a {image.height}x{image.width} image; "
                                 "the mask belongs to another image.")
        try:
            if isinstance(counts, str):
                runs = rle_counts(counts)
            elif isinstance(counts, list) and all(isinstance(c, int) and not isinstance(c, bool) and c >= 0
                                                  for c in counts):
                runs = counts
            else:
                raise ValueError("counts must be a text or a list of whole numbers, 0 or more")
        except ValueError as exc:
            raise CellmixerError(f"{where}: RLE counts that do not decode ({exc}); fix the file.") from None
        if sum(runs) != image.height * image.width:
            raise CellmixerError(f"{where}: RLE counts cover {sum(runs)} pixels, the image has "
                                 f"{image.height * image.width}; fix the file.")
    else:
        if not isinstance(seg, list) or not seg or not all(isinstance(p, list) for p in seg):
            raise CellmixerError(f"{where}: empty or malformed segmentation (give polygons [[x1, y1, x2, y2, ...]] or "
                                 "an RLE); remove the annotation or fix it.")
        for polygon in seg:
            if len(polygon) < 6 or len(polygon) % 2:
                raise CellmixerError(f"{where}: a polygon needs at least 3 (x, y) points, got {len(polygon)} numbers; "
                                     "remove the annotation or fix it.")
            xy = np.asarray(polygon)
            if xy.ndim != 1 or xy.dtype.kind not in "iuf":
                raise CellmixerError(f"{where}: polygon coordinates that are not numbers ({str(polygon)[:40]}); fix "
                                     "the file.")
            xy = xy.astype(np.float64).reshape(-1, 2)
            if not np.isfinite(xy).all():
                raise CellmixerError(f"{where}: polygon with NaN or infinite coordinates; fix the file.")
            low, high = xy.min(axis=0), xy.max(axis=0)
            tol = OUT_OF_BOUNDS_TOLERANCE
            if low.min() < -tol or high[0] > image.width + tol or high[1] > image.height + tol:
                bad = xy[(xy[:, 0] < -tol) | (xy[:, 1] < -tol) | (xy[:, 0] > image.width + tol)
                         | (xy[:, 1] > image.height + tol)][0]
                raise CellmixerError(f"{where}: polygon point (x={bad[0]:g}, y={bad[1]:g}) is outside the "
                                     f"{image.width}x{image.height} image; the annotation belongs to another image "
                                     "or the image size in the file is wrong.")
    if "area" in ann and not (_finite(ann["area"]) and ann["area"] >= 0):
        raise CellmixerError(f"{where}: \"area\" is {json.dumps(ann['area'], default=str)[:30]}; give a number of "
                             "pixels, or leave it out.")
    bbox = ann.get("bbox")
    if bbox is not None and not (isinstance(bbox, list) and len(bbox) == 4 and all(_finite(v) for v in bbox)
                                 and bbox[2] >= 0 and bbox[3] >= 0):
        raise CellmixerError(f"{where}: \"bbox\" is {json.dumps(bbox, default=str)[:40]}; give [x, y, width, height], "
                             "or leave it out.")
    if ann.get("iscrowd", 0) not in (0, 1):
        raise CellmixerError(f"{where}: \"iscrowd\" is {json.dumps(ann.get('iscrowd'), default=str)[:20]}; give 0 "
                             "or 1.")


def read_coco(path, *, image_dir=None, require_images: bool = True) -> CocoDataset:
    """Read and check a COCO instance-segmentation file.

    Parameters
    ----------
    path : str or Path
        The JSON file (``images``, ``annotations`` as a list or, as LIVECell writes it, a dict by
        id, ``categories``).
    image_dir : str or Path, optional
        Folder holding the images (found by file name, also in sub-folders); by default the
        folder of ``path``.
    require_images : bool
        Every listed image must be found (for training and prediction); evaluation only needs
        the annotations.

    Returns
    -------
    CocoDataset

    Raises
    ------
    CellmixerError
        Naming the file and what to do for: no or invalid JSON, listed images missing from
        ``image_dir``, an annotation of an unknown image or category, an empty or malformed
        segmentation, a polygon with fewer than 3 points or reaching beyond the image (more
        than 2 pixels), an RLE of another size. An image without annotations is valid: it has
        no cells.
    """
    path = Path(path)
    data = _load_json(path)
    categories = {}
    for cat in data.get("categories") or []:
        try:
            categories[int(cat["id"])] = str(cat["name"])
        except (KeyError, TypeError, ValueError):
            raise CellmixerError(f"{path}: category {cat!r} needs an integer 'id' and a 'name'.") from None
    images, by_id = [], {}
    for entry in data["images"]:
        try:
            image = CocoImage(int(entry["id"]), str(entry["file_name"]), int(entry["height"]), int(entry["width"]))
        except (KeyError, TypeError, ValueError):
            raise CellmixerError(f"{path}: image entry {str(entry)[:80]} needs 'id', 'file_name', 'height' and "
                                 "'width'.") from None
        if image.id in by_id:
            raise CellmixerError(f"{path}: image id {image.id} is listed twice; ids must be unique.")
        images.append(image)
        by_id[image.id] = image
    annotations = data.get("annotations") or []
    if isinstance(annotations, dict):  # LIVECell: {"<id>": {...}}
        annotations = list(annotations.values())
    for number, ann in enumerate(annotations):
        if not isinstance(ann, dict):
            raise CellmixerError(f"{path}: annotation #{number + 1} is {json.dumps(ann, default=str)[:40]}, not an "
                                 "object; fix or remove it.")
        image_id, category_id = ann.get("image_id"), ann.get("category_id")
        image = by_id.get(image_id) if isinstance(image_id, int) else None
        if image is None:
            raise CellmixerError(f"{path}: annotation {ann.get('id')} refers to image id {ann.get('image_id')}, "
                                 "which is not in \"images\"; fix or remove it.")
        if not isinstance(category_id, int) or category_id not in categories:
            known = ", ".join(f"{k} ({v})" for k, v in categories.items()) or "none"
            raise CellmixerError(f"{path}: annotation {ann.get('id')} of {image.file_name} has category "
                                 f"{ann.get('category_id')}, which is not in \"categories\" (known: {known}).")
        _check_annotation(ann, image, f"{path}: annotation {ann.get('id', f'#{number + 1}')} of {image.file_name}")
        image.annotations.append(ann)
    if require_images:
        _locate_images(images, Path(image_dir) if image_dir is not None else path.parent, path)
    return CocoDataset(path, images, categories)


def _locate_images(images: list, folder: Path, path: Path) -> None:
    if not folder.is_dir():
        raise CellmixerError(f"--images {folder}: no such folder; give the folder holding the images of {path.name}.")
    found = {}
    for candidate in folder.rglob("*"):
        if candidate.suffix.lower() in IMAGE_SUFFIXES and candidate.is_file():
            found.setdefault(candidate.name, candidate)
    missing = []
    for image in images:
        direct = folder / image.file_name
        image.path = direct if direct.is_file() else found.get(Path(image.file_name).name)
        if image.path is None:
            missing.append(image.file_name)
    if missing:
        raise CellmixerError(f"{path}: {len(missing)} of its {len(images)} images are not in {folder} (first: "
                             f"{missing[0]}); give the image folder with --images.")


def annotation_mask(ann: dict, height: int, width: int) -> np.ndarray:
    """The (H, W) bool mask of one COCO annotation (polygons or RLE, compressed or not)."""
    seg = ann["segmentation"]
    if isinstance(seg, list):
        rle = mask_utils.merge(mask_utils.frPyObjects(seg, height, width))
    elif isinstance(seg["counts"], list):
        rle = mask_utils.frPyObjects(seg, height, width)
    else:
        rle = {"size": seg["size"], "counts": seg["counts"].encode() if isinstance(seg["counts"], str) else seg["counts"]}
    with warnings.catch_warnings():  # pycocotools' numpy-2 "copy keyword" deprecation notice, not ours
        warnings.simplefilter("ignore", DeprecationWarning)
        return mask_utils.decode(rle).astype(bool)


def instance_labels(image: CocoImage) -> np.ndarray:
    """A label image of the annotations of ``image``: annotation ``i`` is label ``i + 1``.

    Where annotations overlap, the smaller one is drawn on top (so that it keeps its pixels); an
    annotation completely covered by others keeps none.
    """
    labels = np.zeros((image.height, image.width), np.int32)
    masks = [annotation_mask(a, image.height, image.width) for a in image.annotations]
    for i in sorted(range(len(masks)), key=lambda i: -int(masks[i].sum())):
        labels[masks[i]] = i + 1
    return labels


# ----------------------------------------------------------------------------------- writing
def encode_mask(mask: np.ndarray) -> dict:
    """COCO RLE of a bool mask, with ``counts`` as text (JSON-ready)."""
    rle = mask_utils.encode(np.asfortranarray(mask, dtype=np.uint8))
    return {"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode("ascii")}


def label_annotations(labels: np.ndarray, *, image_id: int, category_ids, scores=None, extra=None,
                      first_id: int = 1) -> list[dict]:
    """One COCO annotation (or result, with ``scores``) per object of a label image, as RLE.

    Parameters
    ----------
    labels : (H, W) integer array
        0 background, objects 1..n (consecutive).
    image_id : int
    category_ids : sequence of int
        Category of object ``k`` at index ``k - 1``.
    scores : sequence of float, optional
        Makes the entries COCO *results* (``score``); without, ground-truth annotations
        (``id``, ``iscrowd``).
    extra : dict of sequences, optional
        More keys per object (e.g. ``category_name``), aligned with the objects.
    first_id : int
        Annotation id of the first object.

    Returns
    -------
    list of dict
        ``image_id``, ``category_id``, ``segmentation`` (RLE), ``area`` (pixels), ``bbox``
        ``[x, y, width, height]``, and ``score`` or ``id`` and ``iscrowd``.
    """
    labels = np.asarray(labels)
    n = int(labels.max(initial=0))
    if len(category_ids) != n or (scores is not None and len(scores) != n):
        raise ValueError(f"{n} objects but {len(category_ids)} categories" +
                         ("" if scores is None else f" and {len(scores)} scores"))
    boxes = ndi.find_objects(labels)
    areas = np.bincount(labels.ravel(), minlength=n + 1)
    entries = []
    for k in range(1, n + 1):
        if boxes[k - 1] is None:
            continue
        ys, xs = boxes[k - 1]
        entry = {"image_id": int(image_id), "category_id": int(category_ids[k - 1]),
                 "segmentation": encode_mask(labels == k), "area": int(areas[k]),
                 "bbox": [int(xs.start), int(ys.start), int(xs.stop - xs.start), int(ys.stop - ys.start)]}
        if scores is None:
            entry.update(id=first_id + len(entries), iscrowd=0)
        else:
            entry["score"] = round(float(scores[k - 1]), 6)
        for key, values in (extra or {}).items():
            entry[key] = values[k - 1]
        entries.append(entry)
    return entries


def ground_truth(dataset: CocoDataset, source: ClassSource | None = None, *, classes=None) -> dict:
    """A COCO dataset dict whose categories are the classes of ``source`` (``None``: one class 'cell').

    The segmentations and areas of the file are kept, so that area ranges use the annotated
    areas, as COCO and LIVECell do. ``classes`` fixes the category order (ids 1..K); classes
    found in the data but missing from it are an error.
    """
    if source is None:
        names = ["cell"]
    else:
        found = dataset.classes(source)
        names = list(classes) if classes is not None else found
        if classes is not None:
            check_known(found, names, where=str(dataset.path))
    ids = {name: i for i, name in enumerate(names, start=1)}
    annotations = []
    for image in dataset.images:
        kinds = ["cell"] * len(image.annotations) if source is None else dataset.instance_classes(image, source)
        for ann, kind in zip(image.annotations, kinds):
            entry = {k: ann[k] for k in ("segmentation", "area", "bbox", "iscrowd") if k in ann}
            if "area" not in entry:
                entry["area"] = float(annotation_mask(ann, image.height, image.width).sum())
            entry.setdefault("iscrowd", 0)
            entry.update(id=len(annotations) + 1, image_id=image.id, category_id=ids[kind])
            annotations.append(entry)
    return {"images": [{"id": im.id, "file_name": im.file_name, "height": im.height, "width": im.width}
                       for im in dataset.images],
            "categories": [{"id": i, "name": name} for name, i in ids.items()],
            "annotations": annotations}
