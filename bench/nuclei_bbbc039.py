"""Nuclei without annotation on BBBC039: classical labels -> 3-class U-Net -> instances.

    python bench/nuclei_bbbc039.py [--data ../shared/data/bbbc039] [--iterations 2000]

The rows of Matuszewski & Ranefall's Tables 1 and 2 on the official split (metadata/{training,
validation,test}.txt: 100/50/50 images):

- the classical pipeline (CellProfiler's IdentifyPrimaryObjects) in its four configurations, and
  the consensus of the three best, run on the test images;
- the U-Net trained on Shape/Intensity labels, on the consensus (disagreeing clusters ignored), and
  on the ground truth (the upper bound, the only row that sees annotations). Each is trained on the
  100 training images and keeps the weights with the lowest loss on the 50 validation images,
  labelled the same way. Each U-Net is also scored with objects under ``--min-area`` pixels dropped
  (79 by default: the classical labeller's smallest nucleus, 10 px across), the paper's
  post-processing otherwise unchanged.

Scores on the 50 test images: pixel Dice of nuclei and separation lines (3-class maps, before
post-processing), the paper's object-wise Jaccard after post-processing, F1 at IoU 0.5, F1 averaged
over IoU 0.50:0.05:0.90, AP at IoU 0.5 (tp / (tp + fp + fn)); nuclei touching the image edge are
removed from truth and prediction before the object scores, as in the paper. Also seconds per
image for labelling and for inference, and training wall time.

Writes bench/results/nuclei_bbbc039.json and overlay PNGs of the first test image; exits 0 with a
message if the data is absent.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import DEFAULT_DATA, RESULTS, Timer, git_commit, machine, peak_rss_mb, save_json  # noqa: E402

from cellmixer.io import (  # noqa: E402
    instance_overlay,  # noqa: E402
    read_image,
    read_labels,
    write_png,
)
from cellmixer.methods.nuclei import (  # noqa: E402
    format_nuclei_table,
    nucleus_scores,
    segment_nuclei,  # noqa: E402
    summarize_instance_scores,
    train_nuclei,  # noqa: E402
)
from cellmixer.ops import (  # noqa: E402
    CLASSICAL_METHODS,
    classical_labels,
    instances_from_classes,  # noqa: E402
    three_class_targets,
)

# Matuszewski & Ranefall (WSCG 2021), Table 1 (pixel Dice before post-processing) and Table 2
# (object-wise Jaccard after post-processing).
PAPER = {
    "DL trained on GT": {"dice_nuclei": 0.964, "dice_separations": 0.492, "object_jaccard": 0.892},
    "DL trained on Shape/Intensity": {"dice_nuclei": 0.958, "dice_separations": 0.355, "object_jaccard": 0.838},
    "DL trained on Consensus": {"dice_nuclei": 0.948, "dice_separations": 0.257, "object_jaccard": 0.805},
    "Classical Shape/Intensity": {"dice_nuclei": 0.939, "dice_separations": 0.29, "object_jaccard": 0.504},
    "Classical Intensity/Shape": {"object_jaccard": 0.481},
    "Classical Shape/Shape": {"object_jaccard": 0.464},
    "Classical Intensity/Intensity": {"object_jaccard": 0.251},
}
UNET_ROWS = {"shape/intensity": "DL trained on Shape/Intensity", "consensus": "DL trained on Consensus",
             "files": "DL trained on GT"}
TARGET_JACCARD = 0.84
SIZE_FILTER = 79  # pixels of a disk of 10 px diameter, the classical labeller's smallest nucleus


def row_name(method: str) -> str:
    return "Classical " + "/".join(w.capitalize() for w in method.split("/")) if method != "consensus" \
        else "Classical consensus (3 best)"


def split(root: Path, name: str) -> list[Path]:
    return [root / "images" / n for n in (root / "metadata" / f"{name}.txt").read_text().split()]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA / "bbbc039")
    parser.add_argument("--output", type=Path, default=RESULTS / "nuclei_bbbc039")
    parser.add_argument("--json", type=Path, default=RESULTS / "nuclei_bbbc039.json")
    parser.add_argument("--iterations", type=int, default=2000, help="per U-Net (default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--crop-size", type=int, default=256)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--checkpoint-every", type=int, default=250)
    parser.add_argument("--line-radius", type=int, default=1)
    parser.add_argument("--min-solidity", type=float, default=0.0,
                        help="leave classical objects less convex than this out of the loss (0: the paper's setting)")
    parser.add_argument("--unet", nargs="*", default=list(UNET_ROWS), choices=list(UNET_ROWS),
                        help="U-Net rows to train: label sources (files = ground truth)")
    parser.add_argument("--augment", action="store_true", help="test-time augmentation for the U-Nets")
    parser.add_argument("--min-area", type=int, default=SIZE_FILTER,
                        help="also score each U-Net with objects under this many pixels dropped (default: a disk of "
                             "the classical labeller's 10-px minimum diameter; 0: the paper's post-processing only)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if not (args.data / "metadata" / "test.txt").is_file():
        print(f"BBBC039 not found under {args.data} (need images/, masks/, metadata/); skipping.")
        return 0
    total = Timer()
    out = args.output
    out.mkdir(parents=True, exist_ok=True)
    test = split(args.data, "test")
    images = {p.name: read_image(p) for p in test}
    truths = {p.name: read_labels(args.data / "masks" / p.name) for p in test}
    first = test[0].name

    results, timings, notes = {}, {}, {}
    for method in CLASSICAL_METHODS:
        rows, seconds = [], []
        for name, image in images.items():
            start = time.perf_counter()
            labels, _ = classical_labels(image, method=method)
            seconds.append(time.perf_counter() - start)
            rows.append(nucleus_scores(truths[name], labels, classes=three_class_targets(labels)))
        results[row_name(method)] = summarize_instance_scores(rows)
        timings[row_name(method)] = {"label_s_per_image": round(float(np.mean(seconds)), 4)}
        print(f"{row_name(method)}: J {results[row_name(method)]['object_jaccard']:.3f}", flush=True)

    for source in args.unet:
        name = UNET_ROWS[source]
        extra = {"label_dir": args.data / "masks"} if source == "files" else {}
        t = Timer()
        model = train_nuclei(split(args.data, "training"), out / "models" / source.replace("/", "_"),
                             validation=split(args.data, "validation"), labels=source, iterations=args.iterations,
                             batch_size=args.batch_size, crop_size=args.crop_size, learning_rate=args.learning_rate,
                             model_options={"width": args.width}, checkpoint_every=args.checkpoint_every,
                             line_radius=args.line_radius, min_solidity=args.min_solidity,
                             seed=args.seed, overwrite=True, **extra)
        train_s = t()
        rows, filtered_rows, seconds = [], [], []
        for image_name, image in images.items():
            start = time.perf_counter()
            labels, classes = segment_nuclei(model, image, augment=args.augment, return_classes=True)
            seconds.append(time.perf_counter() - start)
            rows.append(nucleus_scores(truths[image_name], labels, classes=classes))
            if args.min_area:
                filtered = instances_from_classes(classes, min_area=args.min_area)
                filtered_rows.append(nucleus_scores(truths[image_name], filtered, classes=classes))
            if image_name == first:
                write_png(out / f"{source.replace('/', '_')}_{Path(first).stem}.png", instance_overlay(image, labels),
                          overwrite=True)
        results[name] = summarize_instance_scores(rows)
        if filtered_rows:
            results[f"{name}, objects >= {args.min_area} px"] = summarize_instance_scores(filtered_rows)
        info = model.config["training"]
        timings[name] = {"train_s": train_s, "infer_s_per_image": round(float(np.mean(seconds)), 4)}
        notes[name] = {"selected_iteration": info["selected_iteration"], "validation_loss": info["validation_loss"]}
        print(f"{name}: J {results[name]['object_jaccard']:.3f} (kept iteration {info['selected_iteration']}, "
              f"trained {train_s:.0f} s)", flush=True)
        write_png(out / f"truth_{Path(first).stem}.png", instance_overlay(images[first], truths[first]), overwrite=True)

    table = format_nuclei_table(results)
    print(table)
    print("\npaper (Tables 1-2):")
    for name, values in PAPER.items():
        print(f"  {name}: {values}")
    target = {}
    for row in (UNET_ROWS["shape/intensity"], f"{UNET_ROWS['shape/intensity']}, objects >= {args.min_area} px"):
        if row in results:
            jaccard = results[row]["object_jaccard"]
            target[row] = {"object_jaccard": round(jaccard, 4), "target": TARGET_JACCARD,
                           "met": bool(jaccard >= TARGET_JACCARD)}
    if target:
        print("target:", target)
    timings["total_s"] = total()
    print("timings:", timings)
    path = save_json(args.json, {
        "command": "python bench/nuclei_bbbc039.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "data": str(args.data), "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "machine": machine(), "commit": git_commit(), "results": results, "paper": PAPER, "target": target,
        "training": notes, "timings": timings, "peak_rss_mb": round(peak_rss_mb(), 1), "table": table,
    })
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
