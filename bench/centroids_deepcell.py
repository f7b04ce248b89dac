"""Cells in phase contrast with no annotation at all (Nishimura et al. 2019, "No annotation") on DeepCell 2016.

    python bench/centroids_deepcell.py [--data ../shared/data/deepcell_vanvalen2016] [--iterations 2000]

Training: phase-contrast fields paired with a nuclear stain; the cell points are the centroids of the
nuclei that the classical labeller (CellProfiler's IdentifyPrimaryObjects, shape/intensity) finds in
the nuclear channel: no manual label of any kind. The detector (U-Net, MSE on Gaussian likelihood
maps) is trained on those, then every evaluated phase image is segmented by detection, guided
backpropagation, maximum projection and per-cell graph cuts; the nuclear channel of an evaluated
field is never used by the method.

Evaluation: the manual instance ROIs (RoiSet*.zip, read with roifile) of validation_data/{3T3, HeLa,
MCF10A} and training_data/RAW40X/set4 and set5. Kept out of training: those fields and every
duplicate of them listed in SOURCE.txt (training_data/3T3/set3 = testing_data/3T3/set2, the field
behind validation_data/3T3; RAW40X/set1 = set4 and set2 = set5), and one copy of each other duplicate
(testing_data/MCF10A/set2 = training_data/MCF10A, testing_data/RAW/set1 = RAW40X/set3).

Baselines run on the same fields from the same seeds (the classical nuclei of the field's own nuclear
channel): a marker-controlled watershed on the phase image (smoothed Sobel gradient, inside the
package's unsupervised foreground), and the nuclei grown by a distance limit (each nucleus by its
field's median nuclear equivalent radius, CellProfiler's "Distance - N"), neither tuned on the
evaluated fields.

Scores: detection F-measure (one-to-one matching of detected centres to the centroids of the ROIs
within a distance: half the median equivalent diameter of the field's ROIs, i.e. a detection within
one typical cell radius of the centre; also at 10 pixels, the paper's reference code), the paper's
mDice over ground-truth cells, and the package's F1 at IoU 0.5 and AP (IoU 0.5, and 0.50:0.95). The
RAW264.7 ROIs outline only the cells with a stained nucleus, so the scores are also given in an
"annotation scope" that leaves out the detections lying on neither an ROI nor a stained nucleus of
those two fields (a PNG of crops shows each one left out).

Writes bench/results/centroids_deepcell.json and overlays under bench/results/centroids_deepcell/;
exits 0 with a message if the data is absent.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import DEFAULT_DATA, RESULTS, Timer, git_commit, machine, peak_rss_mb, save_json  # noqa: E402

from cellmixer.io import (  # noqa: E402
    instance_overlay,  # noqa: E402
    read_image,
    to_uint8,
    write_png,
)
from cellmixer.methods.centroids import (  # noqa: E402
    format_centroid_table,  # noqa: E402
    grow_seeds,
    roi_labels,
    seeded_watershed,
    segment_cells,
    train_centroids,
)
from cellmixer.metrics import (
    centroid_scores,
    detection_scores,
    instance_overlap,
    object_centroids,
    summarize_centroid_scores,
)
from cellmixer.ops import (
    classical_labels,  # noqa: E402
    object_table,  # noqa: E402
)

PAPER = {"F-measure": 0.951, "mDice": 0.625}
TARGET = {"f_measure": 0.95, "mdice": 0.65}

# (phase, nuclear stain) of every training field; duplicates of evaluated fields are absent.
TRAINING = [
    ("training_data/3T3/set1/phase.png", "training_data/3T3/set1/nuclear.png"),
    ("training_data/3T3/set2/phase.png", "training_data/3T3/set2/nuclear.png"),
    ("testing_data/3T3/set1/RawImages/img_000000000_Phase_000.png",
     "testing_data/3T3/set1/RawImages/img_000000000_DAPI_010.png"),
    *[(f"training_data/HeLa_joint/set{i}/phase.png", f"training_data/HeLa_joint/set{i}/nuclear.png")
      for i in range(1, 6)],
    ("testing_data/HeLa/set1/RawImages/img_000000000_Phase_000.png",
     "testing_data/HeLa/set1/RawImages/img_000000000_Far-red_001.png"),
    ("training_data/MCF10A/phase.png", "training_data/MCF10A/nuclear.png"),
    ("testing_data/MCF10A/set1/RawImages/img_000000000_Phase_000.png",
     "testing_data/MCF10A/set1/RawImages/img_000000000_DAPI_010.png"),
    ("training_data/BMDM/phase.png", "training_data/BMDM/nuclear.png"),
    ("testing_data/BMDM/set1/RawImages/img_000000000_Phase_000.png",
     "testing_data/BMDM/set1/RawImages/img_000000000_DAPI_010.png"),
    ("testing_data/BMDM/set2/RawImages/img_000000000_Phase_000.png",
     "testing_data/BMDM/set2/RawImages/img_000000000_DAPI_010.png"),
    ("training_data/RAW40X/set3/phase.png", "training_data/RAW40X/set3/nuclear.png"),
]
EXCLUDED = ["training_data/3T3/set3", "testing_data/3T3/set2", "training_data/RAW40X/set1", "training_data/RAW40X/set2",
            "training_data/RAW40X/set4", "training_data/RAW40X/set5", "testing_data/MCF10A/set2", "testing_data/RAW/set1"]
# name -> (phase, nuclear stain, ROIs)
EVALUATION = {
    "3T3": ("validation_data/3T3/RawImages/phase.tif", "validation_data/3T3/RawImages/dapi.tif",
            "validation_data/3T3/RoiSet_3T3.zip"),
    "HeLa": ("validation_data/HeLa/RawImages/phase.tif", "validation_data/HeLa/RawImages/farred.tif",
             "validation_data/HeLa/RoiSet_HeLa.zip"),
    "MCF10A": ("validation_data/MCF10A/RawImages/phase.tif", "validation_data/MCF10A/RawImages/dapi.tif",
               "validation_data/MCF10A/RoiSet_MCF10A.zip"),
    "RAW264.7 set4": ("training_data/RAW40X/set4/phase.png", "training_data/RAW40X/set4/nuclear.png",
                      "training_data/RAW40X/set4/RoiSet.zip"),
    "RAW264.7 set5": ("training_data/RAW40X/set5/phase.png", "training_data/RAW40X/set5/farred.png",
                      "training_data/RAW40X/set5/RoiSet.zip"),
}
# Cells of RAW264.7 are about half the size of the other cultures' (ROI radius 14 px against 27-36):
# their fields are resized by this factor before segmentation. Chosen on the held-out training field of
# the same culture (training_data/RAW40X/set3) by bench/centroids_settings.py, never on evaluated fields.
RESCALE = {"RAW264.7 set4": 2.0, "RAW264.7 set5": 2.0}
# The RAW264.7 ROIs outline only the cells whose nucleus is stained (docs/benchmarks.md); on these
# fields a detection whose point lies on neither an ROI nor a stained nucleus is outside what was
# annotated, and the "annotation scope" scores leave it out (with its cell).
PARTIAL = ("RAW264.7 set4", "RAW264.7 set5")
METHOD = "WSISPDR (ours)"
WATERSHED = "Watershed on phase from nuclei"
GROWN = "Nuclei grown by distance"


def median_diameter(labels: np.ndarray) -> float:
    areas = [r["area"] for r in object_table(labels)]
    return float(2 * np.sqrt(np.median(areas) / np.pi)) if areas else 0.0


def stained_share(cells: np.ndarray, stain: np.ndarray) -> float | None:
    """Share of the cells whose nuclear stain (90th percentile inside the cell) reaches 10 % of the
    stain's range (median to 99.5th percentile of the field); None without cells."""
    if cells.max() == 0:
        return None
    low, high = np.median(stain), np.percentile(stain, 99.5)
    level = (stain.astype(np.float64) - low) / max(high - low, 1e-12)
    ids = np.unique(cells[cells > 0])
    p90 = ndi.labeled_comprehension(level, cells, ids, lambda v: np.percentile(v, 90), float, 0.0)
    return round(float(np.mean(p90 >= 0.1)), 3)


def unmatched(truth: np.ndarray, labels: np.ndarray, *, iou: float = 0.3) -> np.ndarray:
    """The predicted cells that overlap no ROI with an IoU of ``iou`` or more."""
    ov = instance_overlap(truth, labels)
    best = np.zeros(ov.n_pred)
    np.maximum.at(best, ov.cols, ov.iou)
    return np.where(np.isin(labels, ov.prediction_ids[best < iou]), labels, 0)


def in_scope(labels: np.ndarray, detections: np.ndarray, truth: np.ndarray, nuclei: np.ndarray):
    """The detections whose point lies on an ROI or a stained nucleus, the predicted cells without
    the others, and the mask of the detections kept.

    Decided by the detection point, the unit of the F-measure: a neighbour of an ROI cell overlaps
    that ROI by a few pixels of its outline, but its centre lies outside every ROI."""
    annotated = (truth > 0) | (nuclei > 0)
    rows = np.clip(np.round(detections[:, 0]).astype(int), 0, labels.shape[0] - 1)
    cols = np.clip(np.round(detections[:, 1]).astype(int), 0, labels.shape[1] - 1)
    keep = annotated[rows, cols]
    left_out = np.setdiff1d(labels[rows[~keep], cols[~keep]], labels[rows[keep], cols[keep]])
    return np.where(np.isin(labels, left_out[left_out > 0]), 0, labels), detections[keep], keep


def crops_png(path: Path, image: np.ndarray, labels: np.ndarray, truth: np.ndarray, nuclei: np.ndarray,
              points: np.ndarray, *, size: int = 80, columns: int = 12) -> None:
    """A grid of ``size``-pixel crops centred on ``points`` (yellow): our cells outlined in red, the
    ROIs in green, the stained nuclei tinted blue; to check by eye what the left-out detections are."""
    from skimage.segmentation import find_boundaries

    rgb = np.repeat(to_uint8(image)[..., None], 3, axis=2).astype(np.float32)
    rgb[nuclei > 0] = 0.6 * rgb[nuclei > 0] + [0, 0, 100]
    rgb[find_boundaries(truth)] = [0, 255, 0]
    rgb[find_boundaries(labels)] = [255, 0, 0]
    half = size // 2
    padded = np.pad(rgb, ((half, half), (half, half), (0, 0)))
    rows = max(1, -(-len(points) // columns))
    grid = np.zeros((rows * (size + 2), columns * (size + 2), 3), np.uint8)
    for k, (r, c) in enumerate(np.round(points).astype(int)):
        crop = padded[r:r + size, c:c + size].copy()
        crop[half - 1:half + 2, half - 1:half + 2] = [255, 255, 0]
        y, x = divmod(k, columns)
        grid[y * (size + 2):y * (size + 2) + size, x * (size + 2):x * (size + 2) + size] = crop
    write_png(path, grid, overwrite=True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA / "deepcell_vanvalen2016")
    parser.add_argument("--output", type=Path, default=RESULTS / "centroids_deepcell")
    parser.add_argument("--json", type=Path, default=RESULTS / "centroids_deepcell.json")
    parser.add_argument("--iterations", type=int, default=2000)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--crop-size", type=int, default=160)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--width", type=int, default=16, help="U-Net width (default: %(default)s)")
    parser.add_argument("--scale", type=float, default=0.5, help="network input scale (default: %(default)s)")
    parser.add_argument("--sigma", type=float, default=6.0, help="likelihood peaks, full-resolution pixels")
    parser.add_argument("--diameter", type=int, nargs=2, default=(10, 60), help="nucleus diameters for the labeller")
    parser.add_argument("--threshold", type=float, default=None, help="detection threshold (default: the package's)")
    parser.add_argument("--saliency", default=None, help="graph-cut data term (default: the package's)")
    parser.add_argument("--window", type=int, default=None)
    parser.add_argument("--model", type=Path, default=None, help="use this trained detector instead of training")
    parser.add_argument("--no-rescale", dest="rescale", action="store_false",
                        help="segment the RAW264.7 fields at their own size")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if not (args.data / "validation_data" / "3T3" / "RoiSet_3T3.zip").is_file():
        print(f"DeepCell 2016 data not found under {args.data}; skipping.")
        return 0
    total = Timer()
    out = args.output
    out.mkdir(parents=True, exist_ok=True)
    timings = {}

    if args.model is None:
        t = Timer()
        nuclear = {args.data / p: args.data / n for p, n in TRAINING}
        model = train_centroids(list(nuclear), out / "detector", nuclear=nuclear, method="shape/intensity",
                                diameter_range=tuple(args.diameter), sigma=args.sigma, scale=args.scale,
                                model_options={"width": args.width}, iterations=args.iterations,
                                batch_size=args.batch_size, crop_size=args.crop_size,
                                learning_rate=args.learning_rate, seed=args.seed, overwrite=True)
        timings["train_s"] = t()
        training_info = {k: model.config["training"][k] for k in ("train_images", "points", "final_loss")}
        print(f"trained on {training_info['train_images']} fields, {training_info['points']} nucleus points "
              f"({timings['train_s']:.0f} s)", flush=True)
    else:
        model, training_info = args.model, {}

    overrides = {k: v for k, v in (("threshold", args.threshold), ("saliency", args.saliency),
                                   ("window", args.window)) if v is not None}
    rows = {METHOD: [], WATERSHED: [], GROWN: []}
    rows_10 = {METHOD: [], WATERSHED: [], GROWN: []}
    rows_scope = {METHOD: [], WATERSHED: [], GROWN: []}
    per_field, segment_s = {}, []
    for name, (phase_file, nuclear_file, roi_file) in EVALUATION.items():
        phase = read_image(args.data / phase_file)
        truth = roi_labels(args.data / roi_file, phase.shape)
        distance = median_diameter(truth) / 2
        start = time.perf_counter()
        rescale = RESCALE.get(name, 1.0) if args.rescale else 1.0
        result = segment_cells(model, phase, rescale=rescale, **overrides)
        segment_s.append(time.perf_counter() - start)
        stain = read_image(args.data / nuclear_file)
        seeds, _ = classical_labels(stain, method="shape/intensity",
                                    diameter_range=tuple(args.diameter))
        grow = median_diameter(seeds) / 2
        predictions = {METHOD: (result.labels, result.detections),
                       WATERSHED: (seeded_watershed(phase, seeds), object_centroids(seeds)),
                       GROWN: (grow_seeds(seeds, grow), object_centroids(seeds))}
        per_field[name] = {"truth_cells": int(truth.max()), "match_distance": round(distance, 2),
                           "grow_distance": round(grow, 2), "segment_s": round(segment_s[-1], 2),
                           "detections": int(len(result.detections)), "seeds": int(seeds.max()),
                           "rescale": rescale,
                           # Which cells the ROIs outline: share with a stained nucleus, of the ROI cells and of
                           # our cells that match no ROI.
                           "stained_roi_cells": stained_share(truth, stain),
                           "stained_unmatched_cells": stained_share(unmatched(truth, result.labels), stain)}
        for method, (labels, detections) in predictions.items():
            scores = centroid_scores(truth, labels, detections=detections, max_distance=distance)
            rows[method].append(scores)
            d10 = detection_scores(object_centroids(truth), detections, max_distance=10.0)
            rows_10[method].append(d10)
            per_field[name][method] = {k: round(float(v), 4) for k, v in scores.items()}
            per_field[name][method]["f_measure_10px"] = round(d10["f_measure"], 4)
            if name in PARTIAL:
                labels, detections, kept = in_scope(labels, detections, truth, seeds)
                per_field[name][method]["left_out_detections"] = int((~kept).sum())
                if method == METHOD:
                    crops_png(out / f"{name.replace(' ', '_')}_left_out.png", phase, result.labels, truth, seeds,
                              result.detections[~kept])
                scores = centroid_scores(truth, labels, detections=detections, max_distance=distance)
                per_field[name][method]["annotation_scope"] = {k: round(float(v), 4) for k, v in scores.items()}
            rows_scope[method].append(scores)
        slug = name.replace(" ", "_")
        write_png(out / f"{slug}_ours.png", instance_overlay(phase, result.labels), overwrite=True)
        write_png(out / f"{slug}_truth.png", instance_overlay(phase, truth), overwrite=True)
        print(f"{name}: {int(truth.max())} cells; ours F {per_field[name][METHOD]['f_measure']:.3f} "
              f"mDice {per_field[name][METHOD]['mdice']:.3f} ({segment_s[-1]:.1f} s); watershed mDice "
              f"{per_field[name][WATERSHED]['mdice']:.3f}; grown mDice {per_field[name][GROWN]['mdice']:.3f}",
              flush=True)

    results = {method: summarize_centroid_scores(r) for method, r in rows.items()}
    # The three validation fields alone: their ROIs outline every cell, while the RAW264.7 ROIs outline a
    # subset (docs/benchmarks.md).
    validation = {method: summarize_centroid_scores(r[:3]) for method, r in rows.items()}
    for method, r in rows_10.items():
        tp, n_true, n_pred = (sum(x[k] for x in r) for k in ("tp", "n_true", "n_pred"))
        results[method]["f_measure_10px"] = 2 * tp / (n_true + n_pred) if n_true + n_pred else 1.0
    scope = {method: summarize_centroid_scores(r) for method, r in rows_scope.items()}
    table = format_centroid_table(results)
    print(table)
    print("annotation scope (RAW264.7: detections outside ROIs and stained nuclei left out):")
    print(format_centroid_table(scope))
    print("validation_data fields only (3T3, HeLa, MCF10A):")
    print(format_centroid_table(validation))
    print("paper (No annotation):", PAPER)

    def target_of(summary: dict) -> dict:
        ours = summary[METHOD]
        return {"f_measure": round(ours["f_measure"], 4), "mdice": round(ours["mdice"], 4), "targets": TARGET,
                "met": bool(ours["f_measure"] >= TARGET["f_measure"] and ours["mdice"] >= TARGET["mdice"]),
                "ahead_of_baselines": bool(all(ours[k] > summary[b][k] for b in (WATERSHED, GROWN)
                                               for k in ("f_measure", "mdice")))}

    target = {"all_predictions": target_of(results), "annotation_scope": target_of(scope)}
    print("target:", target)
    timings["segment_s_per_field"] = round(float(np.mean(segment_s)), 2)
    timings["total_s"] = total()
    print("timings:", timings)
    path = save_json(args.json, {
        "command": "python bench/centroids_deepcell.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "data": str(args.data), "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "training_fields": [p for p, _ in TRAINING], "excluded_from_training": EXCLUDED,
        "machine": machine(), "commit": git_commit(), "results": results, "results_validation_fields": validation,
        "results_annotation_scope": scope,
        "per_field": per_field, "paper": PAPER,
        "target": target, "training": training_info, "timings": timings, "peak_rss_mb": round(peak_rss_mb(), 1),
        "table": table,
    })
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
