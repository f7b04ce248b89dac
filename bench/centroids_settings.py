"""How the segmentation defaults of `cellmixer centroids` were chosen, without the evaluated fields.

    python bench/centroids_settings.py [--data ../shared/data/deepcell_vanvalen2016] [--width 16]

A detector is trained as in bench/centroids_deepcell.py (nuclear-stain centroids, no manual label),
but with five more training fields left out: training_data/3T3/set1, HeLa_joint/set1, MCF10A, BMDM
and RAW40X/set3. Their manual interior masks (feature_1; connected components grown by 2 pixels over
the edge band, so that touching cells stay apart) are the instances these settings are scored against: the
fields of bench/centroids_deepcell.py's evaluation are never looked at. Each row changes one
setting of :data:`cellmixer.centroids.DEFAULT_SEGMENTATION` (or none); the table gives detection
F-measure and mDice per field and their mean. A second table resizes each field by a ``rescale``
factor before segmenting it (RAW264.7 cells are about half the size of the others'):
the factor with which a culture's held-out field scores best (F-measure + mDice) is the one
bench/centroids_deepcell.py applies to that culture's evaluated fields.

Writes bench/results/centroids_settings.json; exits 0 with a message if the data is absent.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import DEFAULT_DATA, RESULTS, Timer, git_commit, machine, save_json  # noqa: E402
from centroids_deepcell import TRAINING  # noqa: E402

from cellmixer.io import read_image  # noqa: E402
from cellmixer.methods.centroids import DEFAULT_SEGMENTATION, segment_cells, train_centroids  # noqa: E402
from cellmixer.metrics import detection_scores, mean_dice, object_centroids  # noqa: E402

HELD_OUT = ["training_data/3T3/set1", "training_data/HeLa_joint/set1", "training_data/MCF10A", "training_data/BMDM",
            "training_data/RAW40X/set3"]
# One change at a time from the defaults (an empty dict: the defaults themselves).
VARIANTS = [{}, {"threshold": 0.4}, {"threshold": 0.5}, {"support_threshold": 0.05}, {"support_threshold": 0.02},
            {"map_smoothing": 0.0}, {"map_smoothing": 4.0}, {"saliency": "inverted"}, {"saliency": "none"},
            {"foreground_threshold": 0.1}, {"foreground_threshold": 0.3}, {"background_threshold": 0.05},
            {"data_weight": 3.0}, {"smoothness": 0.5}, {"smoothness": 5.0}, {"window": 128}]
RESCALES = (1.0, 1.5, 2.0, 2.5)


def interior_instances(folder: Path) -> np.ndarray:
    from scipy import ndimage as ndi
    from skimage.segmentation import expand_labels

    interior = read_image(next(folder.glob("feature_1.*")))
    return expand_labels(ndi.label(interior > 0)[0], 2)


def best_rescales(rows: dict) -> dict:
    """Per field, the rescale factor with the highest F-measure + mDice (the smaller factor on ties)."""
    fields = next(iter(rows.values()))

    def score(factor, name):
        return round(rows[factor][name]["f_measure"] + rows[factor][name]["mdice"], 4)

    return {name: max(sorted(rows, key=float), key=lambda f: score(f, name)) for name in fields}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA / "deepcell_vanvalen2016")
    parser.add_argument("--output", type=Path, default=RESULTS / "centroids_settings")
    parser.add_argument("--json", type=Path, default=RESULTS / "centroids_settings.json")
    parser.add_argument("--iterations", type=int, default=2000)
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--scale", type=float, default=0.5)
    args = parser.parse_args(argv)
    if not (args.data / HELD_OUT[0] / "phase.png").is_file():
        print(f"DeepCell 2016 data not found under {args.data}; skipping.")
        return 0
    total = Timer()
    nuclear = {args.data / p: args.data / n for p, n in TRAINING if not any(p.startswith(h + "/") for h in HELD_OUT)}
    model = train_centroids(list(nuclear), args.output / "detector", nuclear=nuclear, method="shape/intensity",
                            diameter_range=(10, 60), sigma=6.0, scale=args.scale, model_options={"width": args.width},
                            iterations=args.iterations, batch_size=8, crop_size=160, seed=0, overwrite=True)
    fields = {h.split("/", 1)[1]: (read_image(args.data / h / "phase.png"), interior_instances(args.data / h))
              for h in HELD_OUT}

    def scores_of(variant: dict) -> dict:
        scores = {}
        for name, (phase, truth) in fields.items():
            result = segment_cells(model, phase, **variant)
            distance = np.sqrt(np.median(np.bincount(truth.ravel())[1:]) / np.pi)  # one typical cell radius
            f = detection_scores(object_centroids(truth), result.detections, max_distance=distance)["f_measure"]
            scores[name] = {"f_measure": round(f, 4), "mdice": round(mean_dice(truth, result.labels), 4)}
        return scores

    rows = []
    for variant in VARIANTS:
        scores = scores_of(variant)
        mean = {k: round(float(np.mean([s[k] for s in scores.values()])), 4) for k in ("f_measure", "mdice")}
        rows.append({"change": variant, "fields": scores, "mean": mean})
        label = json.dumps(variant) if variant else "defaults"
        print(f"{label:38s} F {mean['f_measure']:.3f}  mDice {mean['mdice']:.3f}  (" + ", ".join(
            f"{n} {s['f_measure']:.2f}/{s['mdice']:.2f}" for n, s in scores.items()) + ")", flush=True)
    rescale_rows = {}
    for factor in RESCALES:
        rescale_rows[factor] = scores_of({"rescale": factor})
        print(f"rescale {factor}: " + ", ".join(f"{n} {s['f_measure']:.2f}/{s['mdice']:.2f}"
                                                 for n, s in rescale_rows[factor].items()), flush=True)
    best_rescale = best_rescales(rescale_rows)
    print("best rescale per field (F-measure + mDice):", best_rescale)
    path = save_json(args.json, {
        "command": "python bench/centroids_settings.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "data": str(args.data), "held_out": HELD_OUT, "defaults": DEFAULT_SEGMENTATION, "rows": rows,
        "rescale": {str(f): r for f, r in rescale_rows.items()}, "best_rescale": best_rescale,
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "machine": machine(), "commit": git_commit(), "wall_time_s": total()})
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
