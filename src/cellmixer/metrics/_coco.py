"""COCO mask average precision (pycocotools), per class and class-agnostic, with LIVECell's limits
for crowded images; and ``evaluate_typed``, which scores a folder written by ``predict_typed``.

LIVECell (Edlund et al., Nat Methods 2021) evaluates with pycocotools' ``COCOeval`` changed in two
ways (github.com/sartorius-research/LIVECell, ``code/coco_evaluation.py``): up to 2000 detections
per image (``maxDets = [100, 500, 2000]``; COCO's 100 would cut crowded fields of 700+ cells), and
area ranges for small cells: small < 18², medium 18²-31², large > 31² pixels (COCO: 32², 96²).
Both are the defaults here; ``area_ranges="coco"`` restores COCO's.
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import numpy as np

from .._errors import CellmixerError

LIVECELL_MAX_DETECTIONS = (100, 500, 2000)
AREA_RANGES = {
    "livecell": [[0, 1e10], [0, 18**2], [18**2, 31**2], [31**2, 1e10]],
    "coco": [[0, 1e10], [0, 32**2], [32**2, 96**2], [96**2, 1e10]],
}
AP_KEYS = ("mAP", "AP50", "AP75", "APs", "APm", "APl")


def _coco_object(dataset: dict):
    from pycocotools.coco import COCO

    coco = COCO()
    coco.dataset = dataset
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def _results_dataset(truth: dict, results: list) -> dict:
    """The results as a COCO dataset over the truth's images (also when there are no results, which
    ``COCO.loadRes`` refuses)."""
    from pycocotools import mask as mask_utils

    annotations = []
    for i, r in enumerate(results, start=1):
        entry = dict(r, id=i, iscrowd=0)
        seg = entry["segmentation"]
        if isinstance(seg, dict) and isinstance(seg.get("counts"), str):
            seg = {"size": seg["size"], "counts": seg["counts"].encode("ascii")}
            entry["segmentation"] = seg
        if "area" not in entry or "bbox" not in entry:
            height, width = _size(truth, entry["image_id"])
            if isinstance(seg, dict):
                rle = mask_utils.frPyObjects(seg, height, width) if isinstance(seg["counts"], list) else seg
            else:
                rle = mask_utils.merge(mask_utils.frPyObjects(seg, height, width))
            entry.setdefault("area", float(mask_utils.area(rle)))
            entry.setdefault("bbox", [float(v) for v in mask_utils.toBbox(rle)])
        annotations.append(entry)
    return {"images": truth["images"], "categories": truth["categories"], "annotations": annotations}


def _size(truth: dict, image_id) -> tuple[int, int]:
    image = next(im for im in truth["images"] if im["id"] == image_id)
    return image["height"], image["width"]


def _summary(precision: np.ndarray, iou_thresholds: np.ndarray) -> dict:
    """mAP, AP50, AP75 (area 'all') and APs/m/l from pycocotools' precision array
    [IoU, recall, category, area, maxDets] at the largest detection limit; in percent, None when
    there is nothing to score (no ground truth in that range)."""
    def mean(p):
        p = p[p > -1]
        return round(float(p.mean()) * 100, 3) if p.size else None

    t50, t75 = (int(np.argmin(np.abs(iou_thresholds - t))) for t in (0.5, 0.75))
    return {"mAP": mean(precision[:, :, :, 0, -1]), "AP50": mean(precision[t50, :, :, 0, -1]),
            "AP75": mean(precision[t75, :, :, 0, -1]), "APs": mean(precision[:, :, :, 1, -1]),
            "APm": mean(precision[:, :, :, 2, -1]), "APl": mean(precision[:, :, :, 3, -1])}


def coco_evaluate(truth: dict, results: list, *, class_aware: bool = True, image_ids=None,
                  max_detections=LIVECELL_MAX_DETECTIONS, area_ranges="livecell", score_key: str = "score") -> dict:
    """Mask AP of instance results against COCO ground truth, with pycocotools.

    Parameters
    ----------
    truth : dict
        COCO dataset (``images``, ``categories``, ``annotations``).
    results : list of dict
        COCO results (``image_id``, ``category_id``, ``segmentation`` RLE or polygons,
        ``score``), e.g. ``coco_results.json`` of :func:`cellmixer.predict_typed`.
    class_aware : bool
        Match results only to ground truth of their category (per-class AP, averaged over the
        classes that have ground truth: mAP); False ignores categories (class-agnostic AP).
    image_ids : list of int, optional
        Score only these images (e.g. the images of one cell line).
    max_detections : sequence of 3 int
        pycocotools' ``maxDets``; AP is read at the last (LIVECell: 2000 per image).
    area_ranges : {'livecell', 'coco'} or list of 4 [min, max]
        All / small / medium / large object areas in pixels.
    score_key : str
        Result key that ranks the detections (e.g. ``'objectness'`` for class-agnostic AP).

    Returns
    -------
    dict
        ``mAP`` (IoU 0.50:0.95), ``AP50``, ``AP75``, ``APs``, ``APm``, ``APl`` in percent (None
        where there is no ground truth), ``per_class`` ({name: mAP}, class-aware only), and
        ``max_detections``, ``area_ranges``, ``detections``, ``instances`` (counts scored).
    """
    from pycocotools.cocoeval import COCOeval

    if len(max_detections) != 3:
        raise CellmixerError(f"max_detections={list(max_detections)}: give 3 limits, e.g. 100 500 2000.")
    ranges = AREA_RANGES[area_ranges] if isinstance(area_ranges, str) else [list(r) for r in area_ranges]
    known_images = {im["id"] for im in truth["images"]}
    known_categories = {c["id"] for c in truth["categories"]}
    for r in results:
        if r["image_id"] not in known_images:
            raise CellmixerError(f"result for image id {r['image_id']}, which is not in the ground truth; give the "
                                 "annotation file of the predicted images.")
        if class_aware and r["category_id"] not in known_categories:
            raise CellmixerError(f"result of category {r['category_id']}, which is not a category of the ground truth "
                                 f"({', '.join(c['name'] for c in truth['categories'])}).")
    ranked = [dict(r, score=r.get(score_key, r["score"])) for r in results]
    gt = _coco_object(truth)
    dt = _coco_object(_results_dataset(truth, ranked))
    evaluator = COCOeval(gt, dt, iouType="segm")
    evaluator.params.maxDets = [int(m) for m in max_detections]
    evaluator.params.areaRng = ranges
    evaluator.params.areaRngLbl = ["all", "small", "medium", "large"]
    evaluator.params.useCats = int(class_aware)
    if image_ids is not None:
        evaluator.params.imgIds = list(image_ids)
    scored_images = set(evaluator.params.imgIds)
    with contextlib.redirect_stdout(io.StringIO()):
        evaluator.evaluate()
        evaluator.accumulate()
    precision = evaluator.eval["precision"]
    summary = _summary(precision, evaluator.params.iouThrs)
    if class_aware:
        names = {c["id"]: c["name"] for c in truth["categories"]}
        per_class = {}
        for k, cat in enumerate(evaluator.params.catIds):
            p = precision[:, :, k, 0, -1]
            p = p[p > -1]
            per_class[names[cat]] = round(float(p.mean()) * 100, 3) if p.size else None
        summary["per_class"] = per_class
    summary.update(max_detections=list(evaluator.params.maxDets), area_ranges=ranges,
                   detections=sum(r["image_id"] in scored_images for r in results),
                   instances=sum(a["image_id"] in scored_images for a in truth["annotations"]))
    return summary


def _read_results(predictions) -> list:
    import json

    path = Path(predictions)
    if path.is_dir():
        path = path / "coco_results.json"
    if not path.is_file():
        raise CellmixerError(f"{predictions}: no coco_results.json; give the folder written by `cellmixer typed "
                             "predict` or a COCO results file.")
    try:
        results = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CellmixerError(f"{path}: not valid JSON ({exc}).") from None
    if not isinstance(results, list):
        raise CellmixerError(f"{path}: a COCO results file is a list of detections.")
    return results


def _predicted_images(predictions) -> set | None:
    """File names of the images of a ``predict_typed`` folder (its ``counts.csv``), or None."""
    import csv

    if isinstance(predictions, list) or not (Path(predictions) / "counts.csv").is_file():
        return None
    with open(Path(predictions) / "counts.csv", newline="") as fh:
        return {Path(row["image"]).name for row in csv.DictReader(fh)}


def _match_results(results: list, truth: dict) -> list:
    """Results re-addressed to the truth's image and category ids, by ``file_name`` and
    ``category_name`` where the results carry them (as ``predict_typed`` writes them)."""
    by_name = {Path(im["file_name"]).name: im["id"] for im in truth["images"]}
    categories = {c["name"]: c["id"] for c in truth["categories"]}
    matched = []
    for r in results:
        r = dict(r)
        if "file_name" in r:
            name = Path(r["file_name"]).name
            if name not in by_name:
                continue  # an image without annotations in this file is not scored
            r["image_id"] = by_name[name]
        if "category_name" in r:
            r["category_id"] = categories.get(r["category_name"], -1)
        matched.append(r)
    return matched


def evaluate_typed(predictions, truth, *, class_from: str = "annotation", max_detections=LIVECELL_MAX_DETECTIONS,
                   area_ranges="livecell", output=None, overwrite: bool = False) -> dict:
    """Score typed cells against COCO annotations: class-agnostic and class-aware mask AP, per class,
    per image class (e.g. cell line) and the cell count of every image.

    Parameters
    ----------
    predictions : str, Path or list
        Folder of :func:`cellmixer.predict_typed` (its ``coco_results.json``), a COCO results
        file, or the results themselves. Results are matched to the annotated images by
        ``file_name`` and to categories by ``category_name`` when they carry them, else by id.
    truth : str or Path
        COCO annotation file.
    class_from : str
        Class of each annotated cell: ``'annotation'``, ``'prefix'`` (file name up to the first
        underscore) or a CSV file (``image``, ``class``).
    max_detections, area_ranges :
        See :func:`coco_evaluate` (LIVECell's by default).
    output : str or Path, optional
        Folder for ``typed_evaluation.json``.
    overwrite : bool

    Returns
    -------
    dict
        ``class_agnostic`` (ranked by objectness where results have it), ``class_aware``
        (with ``per_class``), ``per_image_class`` ({class: class-agnostic AP summary on its
        images}), ``counts`` (per image: true and predicted cells, error), ``count_error``
        (mean absolute and mean relative error), ``table`` (markdown).
    """
    from ..io import prepare_output_dir, write_json
    from ..typed._classes import ClassSource
    from ..typed._coco import ground_truth, read_coco

    dataset = read_coco(truth, require_images=False)
    predicted = _predicted_images(predictions)
    if predicted is not None:  # a prediction folder: score the images it holds (zero cells found included)
        kept = [im for im in dataset.images if Path(im.file_name).name in predicted]
        if not kept:
            raise CellmixerError(f"{truth}: lists none of the images predicted in {predictions}; give the annotation "
                                 "file of those images.")
        dataset.images = kept
    source = ClassSource(class_from)
    gt_typed = ground_truth(dataset, source)
    gt_cells = ground_truth(dataset, None)
    raw = predictions if isinstance(predictions, list) else _read_results(predictions)
    results = _match_results(raw, gt_typed)
    unknown = sorted({r["category_name"] for r in results if r.get("category_id") == -1})
    options = dict(max_detections=max_detections, area_ranges=area_ranges)
    agnostic_results = [dict(r, category_id=1) for r in results]
    score_key = "objectness" if all("objectness" in r for r in results) else "score"
    report = {"class_agnostic": coco_evaluate(gt_cells, agnostic_results, class_aware=False, score_key=score_key,
                                              **options),
              "class_agnostic_score": score_key}
    aware = coco_evaluate(gt_typed, [r for r in results if r["category_id"] != -1], class_aware=True, **options)
    aware["types_without_ground_truth"] = unknown
    report["class_aware"] = aware
    if not source.per_annotation:
        report["per_image_class"] = {}
        for name in dataset.classes(source):
            ids = [im.id for im in dataset.images if source.image_class(im.file_name) == name]
            report["per_image_class"][name] = coco_evaluate(gt_cells, agnostic_results, class_aware=False,
                                                            image_ids=ids, score_key=score_key, **options)
    counts = []
    for im in dataset.images:
        predicted = sum(r["image_id"] == im.id for r in results)
        true = len(im.annotations)
        counts.append({"image": im.file_name, "true": true, "predicted": predicted, "error": predicted - true})
    report["counts"] = counts
    report["count_error"] = {
        "mean_absolute": round(float(np.mean([abs(c["error"]) for c in counts])), 3) if counts else None,
        "mean_relative": round(float(np.mean([abs(c["error"]) / c["true"] for c in counts if c["true"]])), 4)
        if any(c["true"] for c in counts) else None}
    report["table"] = format_typed_table(report)
    if output is not None:
        out = prepare_output_dir(output)
        write_json(out / "typed_evaluation.json", report, overwrite=overwrite)
    return report


def format_typed_table(report: dict) -> str:
    """Markdown table of the class-agnostic and class-aware AP, and AP per class."""
    fmt = lambda v: "-" if v is None else f"{v:.2f}"  # noqa: E731
    lines = ["| scoring | " + " | ".join(AP_KEYS) + " |", "|---" * (len(AP_KEYS) + 1) + "|"]
    for key in ("class_agnostic", "class_aware"):
        lines.append(f"| {key.replace('_', '-')} | " + " | ".join(fmt(report[key][k]) for k in AP_KEYS) + " |")
    per_class = report["class_aware"].get("per_class", {})
    if per_class:
        lines += ["", "| class | class-aware AP" + (" | class-agnostic AP on its images" if "per_image_class" in report
                                                     else "") + " |",
                  "|---|---|" + ("---|" if "per_image_class" in report else "")]
        for name, ap in per_class.items():
            extra = (f" | {fmt(report['per_image_class'].get(name, {}).get('mAP'))}" if "per_image_class" in report
                     else "")
            lines.append(f"| {name} | {fmt(ap)}{extra} |")
    err = report["count_error"]
    lines += ["", f"cell count error per image: mean absolute {err['mean_absolute']}, mean relative "
                  f"{err['mean_relative']}"]
    return "\n".join(lines)
