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
from dataclasses import dataclass

import numpy as np
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from .._errors import CellmixerError
from .._settings import check_settings, check_value, field_of, setting

LIVECELL_MAX_DETECTIONS = (100, 500, 2000)
AREA_RANGES = {
    "livecell": [[0, 1e10], [0, 18**2], [18**2, 31**2], [31**2, 1e10]],
    "coco": [[0, 1e10], [0, 32**2], [32**2, 96**2], [96**2, 1e10]],
}
AP_KEYS = ("mAP", "AP50", "AP75", "APs", "APm", "APl")


def _max_detections_need(limits) -> str | None:
    if (not isinstance(limits, (tuple, list)) or len(limits) != 3
            or not all(isinstance(m, int) and not isinstance(m, bool) and 1 <= m <= 100_000 for m in limits)
            or list(limits) != sorted(limits)):
        return "give 3 increasing limits from 1 to 100000, e.g. 100 500 2000 (AP is taken at the last)"
    return None


@dataclass(frozen=True)
class CocoScoring:
    """Settings of :func:`coco_evaluate` that a user chooses (their one home: defaults, ranges, help)."""

    max_detections: tuple = setting(LIVECELL_MAX_DETECTIONS, "pycocotools maxDets; AP at the last (default: "
                                    "LIVECell's)", check=_max_detections_need, metavar="N", nargs=3)
    area_ranges: str = setting("livecell", "small/medium/large limits: LIVECell's 18²/31² or COCO's 32²/96² pixels",
                               choices=tuple(AREA_RANGES))

    def __post_init__(self):
        check_settings(self)


def _coco_object(dataset: dict):
    coco = COCO()
    coco.dataset = dataset
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def _results_dataset(truth: dict, results: list) -> dict:
    """The results as a COCO dataset over the truth's images (also when there are no results, which
    ``COCO.loadRes`` refuses)."""
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
    check_value(field_of(CocoScoring, "max_detections"), tuple(max_detections))
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

