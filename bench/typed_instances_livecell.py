"""Typed cells on LIVECell: every cell its mask and its cell line, scored with COCO mask AP.

    python bench/typed_instances_livecell.py [--data ../shared/data/livecell_subset] [--iterations 1500]

Data (``livecell_subset``, a random 1 % of LIVECell: see its SOURCE.txt): 15 test images with the
official COCO annotations (``livecell_coco_test.json``, 3,285 cells, 7 cell lines), 37 train/val
images, 5 of them annotated (``livecell_coco_val.json``: BT474, Huh7, MCF7). The cell line is the
file-name prefix; every image is one line. Classes = cell lines.

- **Route 1 (weak labels)**: a CellMixer model learns the 8 lines from image-level labels only (the
  37 train/val images, their prefix; never a mask), then types the cells of an annotation-free
  instance source: the watershed split of its own predicted foreground (chosen beforehand; the
  connected components of the foreground are reported beside it).
- **Route 2 (supervised)**: one U-Net with an instance head and a type head, trained on the 5
  annotated images (3 lines; no validation split with 5 images: the last weights are kept). The
  other 4 test lines are unknown to it: their cells necessarily get one of the 3 known types, so
  their class-aware AP is 0; class-agnostic AP is its main figure.

Scores on the 15 test images with pycocotools and LIVECell's settings (maxDets 100/500/2000, area
ranges 18²/31²): class-agnostic and class-aware mAP/AP50/AP75, AP per line (class-aware, and
class-agnostic on the line's images), cell-count error per image, wall time. Writes
bench/results/typed_instances_livecell.json and the overlay of one test image per route; exits 0
with a message if the data is absent.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import DEFAULT_DATA, RESULTS, Timer, git_commit, machine, peak_rss_mb, save_json  # noqa: E402

import cellmixer  # noqa: E402
from cellmixer.io import ImageDataset, list_images  # noqa: E402
from cellmixer.methods.typed import prefix_class  # noqa: E402

# LIVECell (Edlund et al. 2021), fully supervised mask AP on the LIVECell test set (trained on
# thousands of annotated images): 47.9 overall, 24.9 to 65.4 for the single cell lines.
# DeepCIS (Cascade Mask R-CNN on EVICAN60, its Table I, difficulty 1): class-aware mAP 24.37.
ANCHORS = {"LIVECell mask AP overall": 47.9, "LIVECell mask AP per line (min-max)": [24.9, 65.4],
           "DeepCIS class-aware mAP (EVICAN60, difficulty 1)": 24.37}
KEYS = ("mAP", "AP50", "AP75")


def summarize(report: dict, known=None) -> dict:
    aware = report["class_aware"]
    row = {"class_agnostic": {k: report["class_agnostic"][k] for k in (*KEYS, "APs", "APm", "APl")},
           "class_aware": {k: aware[k] for k in (*KEYS, "APs", "APm", "APl")},
           "class_aware_per_line": aware["per_class"],
           "class_agnostic_per_line": {k: v["mAP"] for k, v in report["per_image_class"].items()},
           "count_error": report["count_error"], "counts": report["counts"]}
    if known:
        values = [aware["per_class"][k] for k in known if aware["per_class"].get(k) is not None]
        row["class_aware_mAP_known_lines"] = round(float(np.mean(values)), 3) if values else None
    return row


def print_row(name: str, row: dict) -> None:
    a, c = row["class_agnostic"], row["class_aware"]
    print(f"{name}: class-agnostic mAP {a['mAP']:.2f} AP50 {a['AP50']:.2f} AP75 {a['AP75']:.2f} | class-aware mAP "
          f"{c['mAP']:.2f} AP50 {c['AP50']:.2f} AP75 {c['AP75']:.2f} | count error {row['count_error']}")
    print("   per line (class-agnostic / class-aware): " + ", ".join(
        f"{k} {row['class_agnostic_per_line'][k]:.1f}/{row['class_aware_per_line'][k]:.1f}"
        for k in row["class_agnostic_per_line"]))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA / "livecell_subset")
    parser.add_argument("--iterations", type=int, default=1500, help="per route")
    parser.add_argument("--crop-size", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--min-distance", type=int, default=5)
    parser.add_argument("--line-radius", type=int, default=1, help="route 2: boundary width (pixels each side)")
    parser.add_argument("--normalization", choices=("tile", "image"), default="tile", help="route 2 network input")
    parser.add_argument("--work", type=Path, default=None, help="keep models and predictions here")
    parser.add_argument("--output", type=Path, default=RESULTS / "typed_instances_livecell.json")
    args = parser.parse_args()
    test_json, val_json = args.data / "livecell_coco_test.json", args.data / "livecell_coco_val.json"
    if not test_json.is_file():
        print(f"LIVECell subset not found at {args.data}; nothing to do.")
        return 0
    total = Timer()
    work = args.work or Path(tempfile.mkdtemp(prefix="typed_livecell_"))
    images, test_dir = args.data / "images", args.data / "images" / "livecell_test_images"
    train_paths = list_images(images / "livecell_train_val_images")
    lines = sorted({prefix_class(p.name) for p in train_paths})
    dataset = ImageDataset(classes=lines, root=images / "livecell_train_val_images", paths=train_paths,
                           labels=[lines.index(prefix_class(p.name)) + 1 for p in train_paths])
    optimisation = dict(iterations=args.iterations, batch_size=args.batch_size, crop_size=args.crop_size,
                        optimizer="adam", learning_rate=1e-3, lr_schedule="poly", seed=0, overwrite=True,
                        model_options={"width": args.width, "depth": 4})
    result = {"command": " ".join(sys.argv), "data": str(args.data), "machine": machine(), "commit": git_commit(),
              "settings": {**{k: v for k, v in optimisation.items() if k != "overwrite"},
                           "min_distance": args.min_distance, "line_radius": args.line_radius,
                           "normalization": args.normalization},
              "anchors": ANCHORS, "routes": {}, "wall_time_s": {}}

    # Route 1: image-level labels only.
    timer = Timer()
    cellmixer.train(dataset, work / "route1_model", **optimisation)
    result["wall_time_s"]["route1_training"] = timer()
    for source in ("watershed", "components"):
        timer = Timer()
        out = work / f"route1_{source}"
        cellmixer.predict_typed(work / "route1_model", test_dir, out, instances=source, coco=test_json,
                                min_distance=args.min_distance, overwrite=True)
        result["wall_time_s"][f"route1_{source}_prediction"] = timer()
        row = summarize(cellmixer.evaluate_typed(out, test_json, class_from="prefix"))
        result["routes"][f"route1_{source}"] = row
        print_row(f"route 1 ({source})", row)

    # Route 2: the 5 annotated images.
    timer = Timer()
    model = cellmixer.train_typed(val_json, work / "route2_model", images=images, class_from="prefix",
                                  validation_fraction=0, line_radius=args.line_radius,
                                  normalization=args.normalization, **optimisation)
    result["wall_time_s"]["route2_training"] = timer()
    timer = Timer()
    cellmixer.predict_typed(work / "route2_model", test_dir, work / "route2", coco=test_json, overwrite=True)
    result["wall_time_s"]["route2_prediction"] = timer()
    row = summarize(cellmixer.evaluate_typed(work / "route2", test_json, class_from="prefix"),
                    known=model.config["types"])
    row["trained_lines"] = model.config["types"]
    result["routes"]["route2"] = row
    print_row("route 2", row)
    print(f"   class-aware mAP over its {len(model.config['types'])} trained lines: "
          f"{row['class_aware_mAP_known_lines']}")

    result["wall_time_s"]["total"] = total()
    result["peak_rss_mb"] = round(peak_rss_mb(), 1)
    example = "MCF7_Phase_H4_1_03d08h00m_4_overlay.png"
    for name in ("route1_watershed", "route2"):
        if (work / name / example).is_file():
            shutil.copy(work / name / example, args.output.parent / f"typed_livecell_{name}_{example}")
    save_json(args.output, result)
    print(f"wall time {result['wall_time_s']['total']:.0f} s -> {args.output}")
    if args.work is None:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
