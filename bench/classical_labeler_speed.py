"""Speed and accuracy of the classical labeler (CellProfiler's IdentifyPrimaryObjects) on BBBC039.

    python bench/classical_labeler_speed.py [--data ../shared/data/bbbc039] [--timing-images 20]

- seconds per 520 x 696 image of ``identify_primary_objects`` for each of the four declumping
  configurations of Matuszewski & Ranefall (and of the 3-configuration consensus), on one core
  (the process pins itself to one CPU and limits BLAS/OpenMP/torch to one thread); target
  <= 0.25 s per image including declumping;
- accuracy of each configuration against the ground truth of the official TEST split (50 images,
  metadata/test.txt): the paper's object-wise Jaccard (objects touching the edge removed from both,
  as in the paper; pooled over the split and mean per image), F1 at IoU 0.5, F1 averaged over IoU
  0.50:0.05:0.90, AP (tp / (tp + fp + fn)) at IoU 0.5, and the pixel Dice of nuclei and separation
  lines of the 3-class maps (before any edge removal), beside the paper's Tables 1 and 2.

Writes bench/results/classical_labeler_speed.json. Exits 0 with a message if the data is absent.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import DEFAULT_DATA, RESULTS, git_commit, machine, save_json  # noqa: E402

from cellmixer.io import read_image, read_labels  # noqa: E402
from cellmixer.metrics import dice_per_class, instance_scores  # noqa: E402
from cellmixer.ops import CLASSICAL_CONFIGURATIONS, consensus_labels, identify_primary_objects, three_class_targets

# Matuszewski & Ranefall (WSCG 2021): Table 2 (object-wise Jaccard) and Table 1 (pixel Dice).
PAPER_JACCARD = {"shape/intensity": 0.504, "intensity/shape": 0.481, "shape/shape": 0.464,
                 "intensity/intensity": 0.251}
PAPER_DICE = {"shape/intensity": {"nuclei": 0.939, "separations": 0.29}}
TARGET_SECONDS = 0.25


def label_all(image: np.ndarray) -> dict[str, np.ndarray]:
    return {f"{d}/{w}": identify_primary_objects(image, declump=d, dividing_lines=w) for d, w in CLASSICAL_CONFIGURATIONS}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA / "bbbc039")
    parser.add_argument("--timing-images", type=int, default=20, help="test images timed per configuration")
    parser.add_argument("--output", type=Path, default=RESULTS / "classical_labeler_speed.json")
    args = parser.parse_args(argv)

    split = args.data / "metadata" / "test.txt"
    if not split.is_file() or not (args.data / "images").is_dir() or not (args.data / "masks").is_dir():
        print(f"BBBC039 not found under {args.data} (need images/, masks/, metadata/test.txt); skipping.")
        return 0

    import torch

    torch.set_num_threads(1)
    core = min(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {core})
    load_before = os.getloadavg()

    names = split.read_text().split()
    images = {n: read_image(args.data / "images" / n) for n in names}
    truths = {n: read_labels(args.data / "masks" / n) for n in names}
    configs = [f"{d}/{w}" for d, w in CLASSICAL_CONFIGURATIONS]

    # --- speed: each configuration on the first --timing-images test images, one warm-up call first.
    timed = names[:args.timing_images]
    identify_primary_objects(images[timed[0]])
    seconds = {c: [] for c in configs + ["consensus (3 configurations)"]}
    for n in timed:
        for (d, w), c in zip(CLASSICAL_CONFIGURATIONS, configs):
            start = time.perf_counter()
            identify_primary_objects(images[n], declump=d, dividing_lines=w)
            seconds[c].append(time.perf_counter() - start)
        start = time.perf_counter()
        consensus_labels([identify_primary_objects(images[n], declump=d, dividing_lines=w)
                          for d, w in CLASSICAL_CONFIGURATIONS[:3]])
        seconds["consensus (3 configurations)"].append(time.perf_counter() - start)
    speed = {c: {"mean_s": float(np.mean(s)), "median_s": float(np.median(s)), "max_s": float(np.max(s)),
                 "images": len(s)} for c, s in seconds.items()}

    # --- accuracy on the whole test split.
    per_config = {c: [] for c in configs}
    dice = {c: [] for c in configs}
    for n in names:
        truth = truths[n]
        truth_3 = three_class_targets(truth)
        for c, labels in label_all(images[n]).items():
            per_config[c].append(instance_scores(truth, labels, exclude_border=True))
            dice[c].append(dice_per_class(truth_3, three_class_targets(labels), num_classes=3))
    accuracy = {}
    for c in configs:
        rows = per_config[c]
        m, g, r = (sum(s[k] for s in rows) for k in ("matched", "n_true", "n_pred"))
        d = np.array(dice[c])
        accuracy[c] = {
            "object_jaccard_pooled": m / (g + r - m),
            "object_jaccard_mean": float(np.mean([s["object_jaccard"] for s in rows])),
            "f1_50": float(np.mean([s["f1_50"] for s in rows])),
            "mean_f1_50_90": float(np.mean([s["mean_f1"] for s in rows])),
            "ap_50": float(np.mean([s["ap_50"] for s in rows])),
            "dice_nuclei": float(np.nanmean(d[:, 1])),
            "dice_separations": float(np.nanmean(d[:, 2])),
            "objects_true": g, "objects_found": r, "splits": sum(s["splits"] for s in rows),
            "merges": sum(s["merges"] for s in rows),
            "paper_object_jaccard": PAPER_JACCARD[c], "paper_dice": PAPER_DICE.get(c),
        }

    load_after = os.getloadavg()
    print(f"{'configuration':30s} {'mean s':>7s} {'max s':>7s}   {'J pool':>6s} {'J mean':>6s} {'paper J':>7s} "
          f"{'F1@.5':>6s} {'F1 .5-.9':>8s} {'AP@.5':>6s} {'Dice N':>6s} {'Dice SL':>7s}")
    for c in seconds:
        line = f"{c:30s} {speed[c]['mean_s']:7.3f} {speed[c]['max_s']:7.3f}"
        if c in accuracy:
            a = accuracy[c]
            line += (f"   {a['object_jaccard_pooled']:6.3f} {a['object_jaccard_mean']:6.3f} "
                     f"{a['paper_object_jaccard']:7.3f} {a['f1_50']:6.3f} {a['mean_f1_50_90']:8.3f} {a['ap_50']:6.3f} "
                     f"{a['dice_nuclei']:6.3f} {a['dice_separations']:7.3f}")
        print(line)
    worst = max(speed[c]["mean_s"] for c in configs)
    print(f"slowest configuration: {worst:.3f} s per image (target <= {TARGET_SECONDS} s); "
          f"load average before/after: {load_before[0]:.2f}/{load_after[0]:.2f}")

    path = save_json(args.output, {
        "benchmark": "classical_labeler_speed", "commit": git_commit(), "machine": machine(),
        "pinned_to_cpu": core, "load_average_1min_before_after": [load_before[0], load_after[0]],
        "data": str(args.data), "split": "test", "images_scored": len(names), "images_timed": len(timed),
        "image_shape": list(next(iter(images.values())).shape),
        "target_seconds_per_image": TARGET_SECONDS, "meets_target": bool(worst <= TARGET_SECONDS),
        "seconds_per_image": speed, "accuracy": accuracy,
        "notes": "Jaccard, F1 and AP with objects touching the image edge removed from truth and labels "
                 "(as the paper); Dice of 3-class maps (0 background, 1 nucleus, 2 separation line) of the "
                 "whole image. F1/AP/Jaccard_mean are means over images; Jaccard_pooled sums the counts.",
    })
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
