"""``cellmixer typed evaluate``: typed cells scored against COCO annotations (mask AP, counts)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

from ..._errors import CellmixerError
from ...io import locks_outputs, prepare_output_dir, write_json
from ...metrics import AP_KEYS, LIVECELL_MAX_DETECTIONS, CocoScoring, coco_evaluate
from ._classes import ClassSource
from ._coco import ground_truth, read_coco


def _read_results(predictions) -> list:
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


@locks_outputs
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
    CocoScoring(max_detections=tuple(max_detections), area_ranges=area_ranges)  # checked before any work
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
